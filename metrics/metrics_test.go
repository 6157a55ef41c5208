package metrics

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
)

// TestMethodsChangeTheirSeries calls each method on a fresh registry and
// checks, through a /metrics scrape, that exactly the expected lottery_*
// series moved, by exactly the expected amounts.
func TestMethodsChangeTheirSeries(t *testing.T) {
	tests := []struct {
		name string
		call func(m *Lottery)
		want map[string]float64 // series → change
	}{
		{"Committed", func(m *Lottery) { m.Committed(3*time.Millisecond, 250, 4096) }, map[string]float64{
			"lottery_commit_duration_seconds_count": 1, "lottery_commit_duration_seconds_sum": 0.003,
			"lottery_commit_bets_count": 1, "lottery_commit_bets_sum": 250,
			"lottery_bets_stored_total": 250, "lottery_store_bytes": 4096,
		}},
		{"Batch stored", func(m *Lottery) { m.Batch(batchStored, 10) }, map[string]float64{
			`lottery_batches_total{result="stored"}`: 1, `lottery_batch_bets_total{result="stored"}`: 10,
		}},
		{"Batch replay", func(m *Lottery) { m.Batch(batchReplay, 4) }, map[string]float64{
			`lottery_batches_total{result="replay"}`: 1, `lottery_batch_bets_total{result="replay"}`: 4,
		}},
		{"Batch rejected, no bets", func(m *Lottery) { m.Batch(batchRejected, 0) }, map[string]float64{
			`lottery_batches_total{result="rejected"}`: 1,
		}},
		{"Batch unknown result", func(m *Lottery) { m.Batch("Stored", 2) }, map[string]float64{
			`lottery_batches_total{result="other"}`: 1, `lottery_batch_bets_total{result="other"}`: 2,
		}},
		{"FrameRejected invalid_bet", func(m *Lottery) { m.FrameRejected(frame.CodeInvalidBet) }, map[string]float64{
			`lottery_frames_rejected_total{code="invalid_bet"}`: 1,
		}},
		{"FrameRejected flood", func(m *Lottery) { m.FrameRejected(frame.CodeFlood) }, map[string]float64{
			`lottery_frames_rejected_total{code="flood"}`: 1,
		}},
		{"FrameRejected zero", func(m *Lottery) { m.FrameRejected(0) }, map[string]float64{
			`lottery_frames_rejected_total{code="other"}`: 1,
		}},
		{"FrameRejected out of range", func(m *Lottery) { m.FrameRejected(math.MaxUint16) }, map[string]float64{
			`lottery_frames_rejected_total{code="other"}`: 1,
		}},
		{"ErrorSent timeout", func(m *Lottery) { m.ErrorSent(frame.CodeTimeout) }, map[string]float64{
			`lottery_errors_sent_total{code="timeout"}`: 1,
		}},
		{"ErrorSent malformed", func(m *Lottery) { m.ErrorSent(frame.CodeMalformed) }, map[string]float64{
			`lottery_errors_sent_total{code="malformed"}`: 1,
		}},
		{"ErrorSent out of range", func(m *Lottery) { m.ErrorSent(1000) }, map[string]float64{
			`lottery_errors_sent_total{code="other"}`: 1,
		}},
		{"ConnectionMoved open", func(m *Lottery) { m.ConnectionMoved("", stateAwaitingHello) }, map[string]float64{
			`lottery_connections{state="awaiting_hello"}`: 1,
		}},
		{"ConnectionMoved between states", func(m *Lottery) { m.ConnectionMoved(stateUploading, stateWaiting) }, map[string]float64{
			`lottery_connections{state="uploading"}`: -1, `lottery_connections{state="waiting"}`: 1,
		}},
		{"ConnectionMoved close", func(m *Lottery) { m.ConnectionMoved(stateWinnersSent, "") }, map[string]float64{
			`lottery_connections{state="winners_sent"}`: -1,
		}},
		{"ConnectionMoved from unknown", func(m *Lottery) { m.ConnectionMoved("closed", stateAwaitingHello) }, map[string]float64{
			`lottery_connections{state="awaiting_hello"}`: 1,
		}},
		{"ConnectionMoved to unknown", func(m *Lottery) { m.ConnectionMoved(stateWaiting, "closed") }, map[string]float64{
			`lottery_connections{state="waiting"}`: -1,
		}},
		{"ConnectionMoved same state", func(m *Lottery) { m.ConnectionMoved(stateWaiting, stateWaiting) }, nil},
		{"ConnectionMoved none to none", func(m *Lottery) { m.ConnectionMoved("", "") }, nil},
		{"ConnectionRefused too many", func(m *Lottery) { m.ConnectionRefused(refusedTooManyConns) }, map[string]float64{
			`lottery_connections_refused_total{reason="too_many_connections"}`: 1,
		}},
		{"ConnectionRefused shutting down", func(m *Lottery) { m.ConnectionRefused(refusedShuttingDown) }, map[string]float64{
			`lottery_connections_refused_total{reason="shutting_down"}`: 1,
		}},
		{"ConnectionRefused unknown key", func(m *Lottery) { m.ConnectionRefused(refusedUnknownKey) }, map[string]float64{
			`lottery_connections_refused_total{reason="unknown_key"}`: 1,
		}},
		{"ConnectionRefused handshake", func(m *Lottery) { m.ConnectionRefused(refusedHandshake) }, map[string]float64{
			`lottery_connections_refused_total{reason="handshake"}`: 1,
		}},
		{"ConnectionRefused other", func(m *Lottery) { m.ConnectionRefused(other) }, map[string]float64{
			`lottery_connections_refused_total{reason="other"}`: 1,
		}},
		{"ConnectionRefused unknown reason", func(m *Lottery) { m.ConnectionRefused("peer said so") }, map[string]float64{
			`lottery_connections_refused_total{reason="other"}`: 1,
		}},
		{"Handshake ok", func(m *Lottery) { m.Handshake(true, 2*time.Millisecond) }, map[string]float64{
			`lottery_handshakes_total{result="success"}`: 1,
			"lottery_handshake_duration_seconds_count":   1,
			"lottery_handshake_duration_seconds_sum":     0.002,
		}},
		{"Handshake failed", func(m *Lottery) { m.Handshake(false, time.Second) }, map[string]float64{
			`lottery_handshakes_total{result="fail"}`:  1,
			"lottery_handshake_duration_seconds_count": 1,
			"lottery_handshake_duration_seconds_sum":   1,
		}},
		{"AgenciesFinished", func(m *Lottery) { m.AgenciesFinished(3) }, map[string]float64{
			"lottery_agencies_finished": 3,
		}},
		{"Drawn", func(m *Lottery) { m.Drawn(1500 * time.Millisecond) }, map[string]float64{
			"lottery_draw_duration_seconds": 1.5,
		}},
		{"WinnersSent", func(m *Lottery) { m.WinnersSent(7) }, map[string]float64{
			"lottery_winners_sent_total": 7,
		}},
		{"WinnersSent none", func(m *Lottery) { m.WinnersSent(0) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(5)
			h := Handler(m.Registry(), Health{})
			before := flatten(scrape(t, h), "lottery_")
			tt.call(m)
			after := flatten(scrape(t, h), "lottery_")
			for series, v := range after {
				got := v - before[series]
				if _, ok := before[series]; !ok {
					t.Errorf("series %s appeared only after the call", series)
				}
				if want := tt.want[series]; math.Abs(got-want) > 1e-9 {
					t.Errorf("%s changed by %v, want %v", series, got, want)
				}
			}
			for series := range tt.want {
				if _, ok := after[series]; !ok {
					t.Errorf("series %s missing from /metrics", series)
				}
			}
		})
	}
}

// TestSeriesExistFromTheStart checks that New resolves every labelled series,
// at zero, and sets the agencies gauge.
func TestSeriesExistFromTheStart(t *testing.T) {
	m := New(7)
	got := flatten(gather(t, m), "lottery_")
	want := map[string]float64{"lottery_agencies": 7, "lottery_agencies_finished": 0}
	for _, r := range []string{"stored", "replay", "rejected", "other"} {
		want[fmt.Sprintf("lottery_batches_total{result=%q}", r)] = 0
		want[fmt.Sprintf("lottery_batch_bets_total{result=%q}", r)] = 0
	}
	for _, s := range []string{"awaiting_hello", "uploading", "waiting", "winners_sent"} {
		want[fmt.Sprintf("lottery_connections{state=%q}", s)] = 0
	}
	for _, r := range []string{"too_many_connections", "shutting_down", "unknown_key", "handshake", "other"} {
		want[fmt.Sprintf("lottery_connections_refused_total{reason=%q}", r)] = 0
	}
	for _, r := range []string{"success", "fail"} {
		want[fmt.Sprintf("lottery_handshakes_total{result=%q}", r)] = 0
	}
	codes := []string{"other"}
	for c := frame.Code(1); c <= frame.CodeFlood; c++ {
		codes = append(codes, c.String())
	}
	for _, c := range codes {
		want[fmt.Sprintf("lottery_frames_rejected_total{code=%q}", c)] = 0
		want[fmt.Sprintf("lottery_errors_sent_total{code=%q}", c)] = 0
	}
	for series, v := range want {
		if g, ok := got[series]; !ok {
			t.Errorf("series %s missing", series)
		} else if g != v {
			t.Errorf("%s = %v, want %v", series, g, v)
		}
	}
	// One code series per named code plus other: the label set is bounded.
	var codeSeries int
	for series := range got {
		if strings.HasPrefix(series, "lottery_frames_rejected_total{") {
			codeSeries++
		}
	}
	if named := len(m.rejected) - 1; codeSeries != named+1 || named < int(frame.CodeFlood) {
		t.Errorf("%d code series for %d named codes, want one per named code (at least %d) plus other",
			codeSeries, named, frame.CodeFlood)
	}
	for c := 1; c < len(m.rejected); c++ {
		if name := frame.Code(c).String(); name == fmt.Sprintf("code_%d", c) {
			t.Errorf("code %d resolved without a name", c)
		}
	}
}

// TestBuckets checks that observations land in the buckets the dashboard's
// quantiles are computed from.
func TestBuckets(t *testing.T) {
	m := New(1)
	m.Committed(300*time.Microsecond, 1000, 1)
	fam := gather(t, m)
	check := func(name string, le, want float64) {
		t.Helper()
		for _, b := range fam[name].GetMetric()[0].GetHistogram().GetBucket() {
			if b.GetUpperBound() == le {
				if got := float64(b.GetCumulativeCount()); got != want {
					t.Errorf("%s{le=%v} = %v, want %v", name, le, got, want)
				}
				return
			}
		}
		t.Errorf("%s has no bucket le=%v", name, le)
	}
	check("lottery_commit_duration_seconds", 0.0001, 0)
	check("lottery_commit_duration_seconds", 0.0005, 1)
	check("lottery_commit_bets", 256, 0)
	check("lottery_commit_bets", 1024, 1)
	check("lottery_commit_bets", 1<<20, 1)
}

// TestConcurrentUse drives the hot-path methods from several goroutines; run
// with -race it also checks that they need no lock.
func TestConcurrentUse(t *testing.T) {
	const workers, rounds = 8, 1000
	m := New(workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range rounds {
				m.ConnectionMoved("", stateUploading)
				m.Batch(batchStored, 2)
				m.FrameRejected(frame.CodeIndexGap)
				m.Committed(time.Millisecond, 2, 0)
				m.ConnectionMoved(stateUploading, stateWaiting)
			}
		})
	}
	wg.Wait()
	got := flatten(gather(t, m), "lottery_")
	for series, want := range map[string]float64{
		`lottery_batches_total{result="stored"}`:            workers * rounds,
		`lottery_batch_bets_total{result="stored"}`:         2 * workers * rounds,
		`lottery_frames_rejected_total{code="index_gap"}`:   workers * rounds,
		`lottery_bets_stored_total`:                         2 * workers * rounds,
		`lottery_commit_duration_seconds_count`:             workers * rounds,
		`lottery_connections{state="uploading"}`:            0,
		`lottery_connections{state="waiting"}`:              workers * rounds,
		`lottery_frames_rejected_total{code="invalid_bet"}`: 0,
	} {
		if got[series] != want {
			t.Errorf("%s = %v, want %v", series, got[series], want)
		}
	}
}

// TestHotPathDoesNotAllocate checks every method the core packages call.
func TestHotPathDoesNotAllocate(t *testing.T) {
	m := New(5)
	allocs := testing.AllocsPerRun(1000, func() {
		m.Committed(time.Millisecond, 100, 1<<20)
		m.Batch(batchStored, 100)
		m.Batch("unknown", 1)
		m.FrameRejected(frame.CodeInvalidBet)
		m.FrameRejected(9999)
		m.ErrorSent(frame.CodeFlood)
		m.ConnectionMoved("", stateAwaitingHello)
		m.ConnectionMoved(stateAwaitingHello, stateUploading)
		m.ConnectionMoved(stateUploading, "")
		m.ConnectionRefused(refusedHandshake)
		m.ConnectionRefused("unknown")
		m.Handshake(true, time.Millisecond)
		m.AgenciesFinished(2)
		m.Drawn(time.Second)
		m.WinnersSent(3)
	})
	if allocs != 0 {
		t.Errorf("hot path allocates %v times per round, want 0", allocs)
	}
}

func BenchmarkBatch(b *testing.B) {
	m := New(5)
	b.ReportAllocs()
	for b.Loop() {
		m.Batch(batchStored, 100)
	}
}

func BenchmarkFrameRejected(b *testing.B) {
	m := New(5)
	b.ReportAllocs()
	for b.Loop() {
		m.FrameRejected(frame.CodeInvalidBet)
	}
}

func BenchmarkConnectionMoved(b *testing.B) {
	m := New(5)
	b.ReportAllocs()
	for b.Loop() {
		m.ConnectionMoved(stateUploading, stateWaiting)
	}
}

func BenchmarkCommitted(b *testing.B) {
	m := New(5)
	b.ReportAllocs()
	for b.Loop() {
		m.Committed(time.Millisecond, 512, 1<<30)
	}
}

// BenchmarkBatchParallel shows the cost when every event loop counts at once.
func BenchmarkBatchParallel(b *testing.B) {
	m := New(5)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Batch(batchStored, 100)
		}
	})
}
