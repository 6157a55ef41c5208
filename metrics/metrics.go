// Package metrics holds the server's Prometheus collectors and serves them,
// with liveness and readiness checks, over HTTP off the event loops.
//
// Every labelled series is resolved once in New, so the methods the core
// packages call on the hot path are a switch or an index plus atomic
// operations: no map lookup, no lock, no allocation. Resolving them early
// also makes every series visible at zero from the first scrape.
package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tp0/loteria/frame"
)

// other is the label value that stands for any value outside a bounded set,
// so neither a peer nor a new caller can grow a label set.
const other = "other"

// resultLabel is the label of the batch and handshake counters.
const resultLabel = "result"

// Batch results accepted by Lottery.Batch.
const (
	batchStored   = "stored"
	batchReplay   = "replay"
	batchRejected = "rejected"
)

// Connection states accepted by Lottery.ConnectionMoved; "" means none.
const (
	stateAwaitingHello = "awaiting_hello"
	stateUploading     = "uploading"
	stateWaiting       = "waiting"
	stateWinnersSent   = "winners_sent"
)

// Refusal reasons accepted by Lottery.ConnectionRefused.
const (
	refusedTooManyConns = "too_many_connections"
	refusedShuttingDown = "shutting_down"
	refusedUnknownKey   = "unknown_key"
	refusedHandshake    = "handshake"
)

// Label values in the order of the arrays in Lottery.
var (
	batchResults   = [...]string{batchStored, batchReplay, batchRejected, other}
	connStates     = [...]string{stateAwaitingHello, stateUploading, stateWaiting, stateWinnersSent}
	refusalReasons = [...]string{refusedTooManyConns, refusedShuttingDown, refusedUnknownKey, refusedHandshake, other}
)

// Histogram buckets: fsyncs from 0.1 ms to seconds, group sizes from one bet
// to about a million, handshakes from half a millisecond to a slow peer.
var (
	commitSecondsBuckets    = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	commitBetsBuckets       = prometheus.ExponentialBuckets(1, 4, 11) // 1 … 1,048,576
	handshakeSecondsBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
)

// Lottery holds every collector of the server; its methods are safe for
// concurrent use and do not allocate.
type Lottery struct {
	reg *prometheus.Registry

	commitSeconds prometheus.Histogram
	commitBets    prometheus.Histogram
	betsStored    prometheus.Counter
	storeBytes    prometheus.Gauge

	batches   [len(batchResults)]prometheus.Counter
	batchBets [len(batchResults)]prometheus.Counter

	// Indexed by code; index 0 is the other child, used for every code
	// without a name.
	rejected   []prometheus.Counter
	errorsSent []prometheus.Counter

	connections [len(connStates)]prometheus.Gauge
	refused     [len(refusalReasons)]prometheus.Counter

	handshakeOK      prometheus.Counter
	handshakeFail    prometheus.Counter
	handshakeSeconds prometheus.Histogram

	agenciesFinished prometheus.Gauge
	drawSeconds      prometheus.Gauge
	winnersSent      prometheus.Counter
}

// New builds a registry holding the lottery's collectors, the Go runtime
// collector and the process collector, with the agencies gauge set to agencies.
func New(agencies int) *Lottery {
	reg := prometheus.NewRegistry()
	m := &Lottery{reg: reg}

	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "lottery_commit_duration_seconds",
		Help:    "Time one group commit of the store took, write and fsyncs included.",
		Buckets: commitSecondsBuckets,
	})
	m.commitBets = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "lottery_commit_bets",
		Help:    "Bets written by one group commit of the store.",
		Buckets: commitBetsBuckets,
	})
	m.betsStored = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lottery_bets_stored_total",
		Help: "Bets written to the store; replayed batches are not counted.",
	})
	m.storeBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lottery_store_bytes",
		Help: "Size of the bet store after the last group commit.",
	})

	batches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lottery_batches_total",
		Help: "BETS batches answered, by result: stored, replay (already held, acknowledged again), rejected, other.",
	}, []string{resultLabel})
	batchBets := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lottery_batch_bets_total",
		Help: "Bets carried by answered BETS batches, by the batch's result.",
	}, []string{resultLabel})
	for i, r := range batchResults {
		m.batches[i] = batches.WithLabelValues(r)
		m.batchBets[i] = batchBets.WithLabelValues(r)
	}

	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lottery_frames_rejected_total",
		Help: "REJECT frames sent, by code.",
	}, []string{"code"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lottery_errors_sent_total",
		Help: "ERROR frames sent, by code.",
	}, []string{"code"})
	m.rejected = byCode(rejected)
	m.errorsSent = byCode(errs)

	conns := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lottery_connections",
		Help: "Open agency connections, by session state.",
	}, []string{"state"})
	for i, s := range connStates {
		m.connections[i] = conns.WithLabelValues(s)
	}

	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lottery_connections_refused_total",
		Help: "Connections closed before a session started, by reason.",
	}, []string{"reason"})
	for i, r := range refusalReasons {
		m.refused[i] = refused.WithLabelValues(r)
	}

	handshakes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lottery_handshakes_total",
		Help: "Secure handshakes finished, by result: success or fail.",
	}, []string{resultLabel})
	m.handshakeOK = handshakes.WithLabelValues("success")
	m.handshakeFail = handshakes.WithLabelValues("fail")
	m.handshakeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "lottery_handshake_duration_seconds",
		Help:    "Time one secure handshake took, successful or not.",
		Buckets: handshakeSecondsBuckets,
	})

	agenciesGauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lottery_agencies",
		Help: "Agencies the draw waits for.",
	})
	agenciesGauge.Set(float64(agencies))
	m.agenciesFinished = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lottery_agencies_finished",
		Help: "Agencies that have sent FINISHED and had their total confirmed.",
	})
	m.drawSeconds = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lottery_draw_duration_seconds",
		Help: "Time the last draw took to read the store and pick the winners.",
	})
	m.winnersSent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lottery_winners_sent_total",
		Help: "Winner documents sent in WINNERS frames.",
	})

	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.commitSeconds, m.commitBets, m.betsStored, m.storeBytes,
		batches, batchBets, rejected, errs, conns, refused,
		handshakes, m.handshakeSeconds,
		agenciesGauge, m.agenciesFinished, m.drawSeconds, m.winnersSent,
	)
	return m
}

// byCode resolves one child of vec for every named frame.Code, at the code's
// index, and the other child at index 0. Codes are numbered from 1 without
// gaps, so the first code whose String is the numeric fallback ends the range.
func byCode(vec *prometheus.CounterVec) []prometheus.Counter {
	children := []prometheus.Counter{vec.WithLabelValues(other)}
	for c := frame.Code(1); c != 0; c++ {
		name := c.String()
		if name == fmt.Sprintf("code_%d", uint16(c)) {
			break
		}
		children = append(children, vec.WithLabelValues(name))
	}
	return children
}

// Registry is the registry holding every collector, for Handler.
func (m *Lottery) Registry() *prometheus.Registry { return m.reg }

// Committed records one group commit of the store: how long it took, how
// many bets it wrote and the store's size after it.
func (m *Lottery) Committed(took time.Duration, bets int, storeBytes int64) {
	m.commitSeconds.Observe(took.Seconds())
	m.commitBets.Observe(float64(bets))
	if bets > 0 {
		m.betsStored.Add(float64(bets))
	}
	m.storeBytes.Set(float64(storeBytes))
}

// Batch counts one answered BETS batch carrying bets bets; result is
// "stored", "replay" or "rejected", and any other string is counted as
// "other".
func (m *Lottery) Batch(result string, bets int) {
	i := len(batchResults) - 1 // other
	switch result {
	case batchStored:
		i = 0
	case batchReplay:
		i = 1
	case batchRejected:
		i = 2
	}
	m.batches[i].Inc()
	if bets > 0 {
		m.batchBets[i].Add(float64(bets))
	}
}

// FrameRejected counts one REJECT frame sent with code; a code without a
// name is counted as "other".
func (m *Lottery) FrameRejected(code frame.Code) { countCode(m.rejected, code) }

// ErrorSent counts one ERROR frame sent with code; a code without a name is
// counted as "other".
func (m *Lottery) ErrorSent(code frame.Code) { countCode(m.errorsSent, code) }

func countCode(children []prometheus.Counter, code frame.Code) {
	if int(code) >= len(children) {
		code = 0
	}
	children[code].Inc()
}

// ConnectionMoved moves one connection from state from to state to. States
// are "awaiting_hello" (a secured connection's handshake included), "uploading", "waiting" and
// "winners_sent"; "" is none (a new connection comes from "", a closed one
// goes to ""), and any other name is ignored on its side only, so "closed"
// works like "".
func (m *Lottery) ConnectionMoved(from, to string) {
	if from == to {
		return
	}
	if i := stateIndex(from); i >= 0 {
		m.connections[i].Dec()
	}
	if i := stateIndex(to); i >= 0 {
		m.connections[i].Inc()
	}
}

func stateIndex(s string) int {
	switch s {
	case stateAwaitingHello:
		return 0
	case stateUploading:
		return 1
	case stateWaiting:
		return 2
	case stateWinnersSent:
		return 3
	}
	return -1
}

// ConnectionRefused counts one connection closed before a session started;
// reason is "too_many_connections", "shutting_down", "unknown_key",
// "handshake" (a failed one, or one sent to an --insecure server) or
// "other", and any other string counts as "other".
func (m *Lottery) ConnectionRefused(reason string) {
	i := len(refusalReasons) - 1 // other
	switch reason {
	case refusedTooManyConns:
		i = 0
	case refusedShuttingDown:
		i = 1
	case refusedUnknownKey:
		i = 2
	case refusedHandshake:
		i = 3
	}
	m.refused[i].Inc()
}

// Handshake records one finished secure handshake, its result and its
// duration.
func (m *Lottery) Handshake(ok bool, took time.Duration) {
	if ok {
		m.handshakeOK.Inc()
	} else {
		m.handshakeFail.Inc()
	}
	m.handshakeSeconds.Observe(took.Seconds())
}

// AgenciesFinished sets how many agencies have finished.
func (m *Lottery) AgenciesFinished(n int) { m.agenciesFinished.Set(float64(n)) }

// Drawn records how long the draw took.
func (m *Lottery) Drawn(took time.Duration) { m.drawSeconds.Set(took.Seconds()) }

// WinnersSent counts documents sent in one WINNERS frame.
func (m *Lottery) WinnersSent(documents int) {
	if documents > 0 {
		m.winnersSent.Add(float64(documents))
	}
}
