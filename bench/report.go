package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Report is everything one bench invocation measured.
type Report struct {
	Machine    Machine          `json:"machine"`
	Config     RunConfig        `json:"config"`
	Runs       []RunResult      `json:"runs"`
	Limits     Limits           `json:"limits"`
	Ratios     []Ratio          `json:"ratios"`
	Encryption []EncryptionCost `json:"encryption,omitempty"`
	Metrics    []MetricsCost    `json:"metrics_cost,omitempty"`
	Logging    []LoggingCost    `json:"logging_cost,omitempty"`
	Hashing    *HashingCost     `json:"hashing,omitempty"`
	EndToEnd   []EndToEnd       `json:"end_to_end,omitempty"`
	Targets    []Target         `json:"targets,omitempty"`
	Warnings   []string         `json:"warnings,omitempty"`
}

// Machine describes where the numbers were taken.
type Machine struct {
	CPUs          int       `json:"cpus"`
	CPUModel      string    `json:"cpu_model"`
	Kernel        string    `json:"kernel"`
	MemTotalBytes uint64    `json:"mem_total_bytes"`
	GoVersion     string    `json:"go_version"`
	DataDir       string    `json:"data_dir"`
	DataDirFS     string    `json:"data_dir_fs"`
	OpenFiles     FileLimit `json:"open_files"`
	PortRange     [2]int    `json:"ephemeral_port_range"`
	LoadAvgStart  float64   `json:"load_avg_1m_start"`
	LoadAvgEnd    float64   `json:"load_avg_1m_end"`
	Started       string    `json:"started"`
}

// RunConfig is the workload, as given.
type RunConfig struct {
	Impls         []string `json:"impls"`
	Agencies      []int    `json:"agencies"`
	Batch         int      `json:"batch"`
	Distinct      int      `json:"distinct_datasets"`
	WinningNumber uint16   `json:"winning_number"`
	Seed          int64    `json:"seed"`
	ServerLog     string   `json:"server_log_level"`
	Security      string   `json:"security"` // of the main runs: secure or insecure
	Repeat        int      `json:"repeat"`
	Sources       int      `json:"client_source_addresses"`
	Dials         int      `json:"dial_concurrency"`  // connections opened at once in the Connected phase
	StormDials    int      `json:"storm_concurrency"` // and in a reconnect storm; 0 when there was none
}

// Security modes of a run.
const (
	Secure   = "secure"
	Insecure = "insecure"
)

// DefaultLogLevel is what a server logs at when the bench does not say.
const DefaultLogLevel = "info"

// RunResult is one server at one number of agencies. The first keys are the
// fixed contract of the JSON output; the rest explain them.
type RunResult struct {
	Impl                   string  `json:"impl"`
	Agencies               int     `json:"agencies"`
	BetsPerAgency          int     `json:"bets_per_agency"`
	BetsPerSec             float64 `json:"bets_per_sec"`
	MBPerSec               float64 `json:"mb_per_sec"`
	AckP50Ms               float64 `json:"ack_p50_ms"`
	AckP99Ms               float64 `json:"ack_p99_ms"`
	AckMaxMs               float64 `json:"ack_max_ms"`
	DrawToLastWinnersMs    float64 `json:"draw_to_last_winners_ms"`
	ServerPeakRSSBytes     uint64  `json:"server_peak_rss_bytes"`
	RSSPerWaitingConnBytes float64 `json:"rss_per_waiting_conn_bytes"`
	CPUSecPerMillionBets   float64 `json:"server_cpu_sec_per_million_bets"`

	Security              string  `json:"security"` // secure (Noise) or insecure (plaintext)
	Metrics               bool    `json:"metrics"`  // the server ran with --metrics-listen
	LogLevel              string  `json:"server_log_level"`
	VariantLogLevel       string  `json:"variant_log_level,omitempty"` // set on the runs at the compared log level
	Window                int     `json:"window"`                      // as WELCOME announced it
	HandshakesPerSec      float64 `json:"handshakes_per_sec"`
	HandshakeP50Ms        float64 `json:"handshake_p50_ms"`
	HandshakeP99Ms        float64 `json:"handshake_p99_ms"`
	StormSec              float64 `json:"storm_sec,omitempty"` // reconnect storm after a restart: first dial to the last WELCOME
	StormHandshakesPerSec float64 `json:"storm_handshakes_per_sec,omitempty"`
	StormHandshakeP99Ms   float64 `json:"storm_handshake_p99_ms,omitempty"`
	MetricsBetsStored     float64 `json:"metrics_bets_stored,omitempty"` // lottery_bets_stored_total scraped at the end
	PingsAnswered         int64   `json:"pings_answered"`
	// The server's CPU opening the connections (handshakes, HELLO: up to the
	// Connected barrier), and uploading (from there to the Waiting barrier,
	// every agency but the last waiting for the draw).
	CPUMsPerConnection   float64   `json:"server_cpu_ms_per_connection"`
	UploadCPUSecPerMBets float64   `json:"server_upload_cpu_sec_per_million_bets"`
	RepeatBetsPerSec     []float64 `json:"repeat_bets_per_sec,omitempty"` // every repetition; the run shown is the median

	Batch                   int     `json:"batch"`
	Bets                    int64   `json:"bets"`
	WireBytes               int64   `json:"wire_bytes"`
	ConnectSec              float64 `json:"connect_sec"`
	UploadSec               float64 `json:"upload_sec"`
	AckSamples              int     `json:"ack_samples"`
	ServerBaseRSSBytes      uint64  `json:"server_base_rss_bytes"`
	ServerConnectedRSSBytes uint64  `json:"server_connected_rss_bytes"`
	ServerWaitingRSSBytes   uint64  `json:"server_waiting_rss_bytes"`
	RSSPerIdleConnBytes     float64 `json:"rss_per_idle_conn_bytes"`
	ServerCPUSec            float64 `json:"server_cpu_sec"`
	BetsCSVBytes            int64   `json:"bets_csv_bytes"`
	GroupCommits            int     `json:"group_commits"`
	MeanGroupBytes          float64 `json:"mean_group_commit_bytes"`
}

// variant is what tells runs at the same number of agencies apart.
func (r *RunResult) variant() variant {
	return variant{Impl: r.Impl, Secure: r.Security != Insecure, Metrics: r.Metrics, LogLevel: r.VariantLogLevel}
}

// Limits are the machine's own ceilings, measured in the same invocation.
type Limits struct {
	LoopbackBytesPerSec        float64 `json:"loopback_bytes_per_sec"`
	DiskAppendFsyncBytesPerSec float64 `json:"disk_append_fsync_bytes_per_sec"`
	WireBytesPerBet            float64 `json:"wire_bytes_per_bet"`
	DiskBytesPerBet            float64 `json:"disk_bytes_per_bet"`

	LoopbackOneStreamBytesPerSec  float64 `json:"loopback_one_stream_bytes_per_sec"`
	LoopbackManyStreamBytesPerSec float64 `json:"loopback_many_streams_bytes_per_sec"`
	LoopbackStreams               int     `json:"loopback_streams"`
	LoopbackBytesMoved            int64   `json:"loopback_bytes_moved"`
	DiskFsyncsPerSec              float64 `json:"disk_fsyncs_per_sec"`
	DiskBlockBytes                int     `json:"disk_block_bytes"`
	LoopbackCeilingBetsPerSec     float64 `json:"loopback_ceiling_bets_per_sec"`
	DiskCeilingBetsPerSec         float64 `json:"disk_ceiling_bets_per_sec"`
	CeilingBetsPerSec             float64 `json:"ceiling_bets_per_sec"`
	// FanOut is the push of one message to every connection of the largest
	// K, the floor under last FINISHED → last WINNERS.
	FanOut *FanOutLimit `json:"fan_out,omitempty"`
	// Disk is the append+fsync test once per number of agencies, with
	// blocks the size of that run's mean group commit; the disk fields
	// above are the largest K's.
	Disk []DiskLimit `json:"disk_by_agencies"`
}

// FanOutLimit is the loopback fan-out test: one message written to each of
// Connections connections, until every reader holds it (the fastest of a
// few rounds), and that time scaled to Agencies connections when the open
// files limit kept the test below them.
type FanOutLimit struct {
	Agencies     int     `json:"agencies"`
	Connections  int     `json:"connections"`
	MessageBytes int     `json:"message_bytes"`
	Writers      int     `json:"writers"`
	TookMs       float64 `json:"took_ms"`
	FloorMs      float64 `json:"floor_ms"`
}

// DiskLimit is the append+fsync test at one block size, and the bets/s
// ceiling it implies for the runs with that many agencies.
type DiskLimit struct {
	Agencies          int     `json:"agencies"`
	BlockBytes        int     `json:"block_bytes"`
	BytesPerSec       float64 `json:"bytes_per_sec"`
	FsyncsPerSec      float64 `json:"fsyncs_per_sec"`
	CeilingBetsPerSec float64 `json:"ceiling_bets_per_sec"` // min of the loopback and this disk ceiling
}

// ceiling is the bets/s ceiling for runs with k agencies.
func (l *Limits) ceiling(k int) float64 {
	for _, d := range l.Disk {
		if d.Agencies == k {
			return d.CeilingBetsPerSec
		}
	}
	return l.CeilingBetsPerSec
}

// Ratio compares the servers at one number of agencies, both in the
// security mode of the main runs and without metrics: gnet over stdlib
// (above 1 means gnet has more of it), and each server over the ceiling.
type Ratio struct {
	Agencies          int     `json:"agencies"`
	Security          string  `json:"security"`
	CeilingBetsPerSec float64 `json:"ceiling_bets_per_sec,omitempty"`
	BetsPerSec        float64 `json:"gnet_over_stdlib_bets_per_sec,omitempty"`
	BetsPerSecRounds  Spread  `json:"gnet_over_stdlib_bets_per_sec_per_round,omitzero"`
	AckP99            float64 `json:"gnet_over_stdlib_ack_p99,omitempty"`
	DrawToLastWinners float64 `json:"gnet_over_stdlib_draw_to_last_winners,omitempty"`
	PeakRSS           float64 `json:"gnet_over_stdlib_peak_rss,omitempty"`
	RSSPerConn        float64 `json:"gnet_over_stdlib_rss_per_waiting_conn,omitempty"`
	CPUPerBet         float64 `json:"gnet_over_stdlib_cpu_per_bet,omitempty"`
	GnetOverCeiling   float64 `json:"gnet_over_ceiling_bets_per_sec,omitempty"`
	StdlibOverCeiling float64 `json:"stdlib_over_ceiling_bets_per_sec,omitempty"`
}

// Spread is the lowest and highest of a comparison's per-round ratios:
// with --repeat every round runs each variant once, so the ratio of the two
// runs of one round shows how far the VM's noise moves it. Zero when the
// run was not repeated.
type Spread struct {
	Low  float64 `json:"low,omitempty"`
	High float64 `json:"high,omitempty"`
}

// roundSpread is the Spread of a[i]/b[i], the repetitions of two variants
// in round order.
func roundSpread(a, b []float64) Spread {
	if len(a) < 2 || len(a) != len(b) {
		return Spread{}
	}
	var sp Spread
	for i := range a {
		r := ratio(a[i], b[i])
		if r <= 0 {
			return Spread{}
		}
		if i == 0 || r < sp.Low {
			sp.Low = r
		}
		if i == 0 || r > sp.High {
			sp.High = r
		}
	}
	return sp
}

// format is " (per round LOW–HIGH)" at the given precision, or nothing.
func (sp Spread) format(prec int) string {
	if sp.High <= 0 {
		return ""
	}
	return fmt.Sprintf(" (per round %.*f–%.*f)", prec, sp.Low, prec, sp.High)
}

// EncryptionCost compares one server secured and --insecure at one K.
type EncryptionCost struct {
	Impl                 string  `json:"impl"`
	Agencies             int     `json:"agencies"`
	SecureBetsPerSec     float64 `json:"secure_bets_per_sec"`
	InsecureBetsPerSec   float64 `json:"insecure_bets_per_sec"`
	Ratio                float64 `json:"secure_over_insecure_bets_per_sec"`
	RatioRounds          Spread  `json:"secure_over_insecure_bets_per_sec_per_round,omitzero"`
	SecureCPUPerM        float64 `json:"secure_server_cpu_sec_per_million_bets"`
	InsecureCPUPerM      float64 `json:"insecure_server_cpu_sec_per_million_bets"`
	SecureHandshakes     float64 `json:"secure_handshakes_per_sec"`
	InsecureHandshakes   float64 `json:"insecure_hellos_per_sec"`
	SecureCPUMsPerConn   float64 `json:"secure_server_cpu_ms_per_connection"`
	InsecureCPUMsPerConn float64 `json:"insecure_server_cpu_ms_per_connection"`
}

// MetricsCost compares the gnet server with and without --metrics-listen.
type MetricsCost struct {
	Agencies          int     `json:"agencies"`
	Security          string  `json:"security"`
	OffBetsPerSec     float64 `json:"off_bets_per_sec"`
	OnBetsPerSec      float64 `json:"on_bets_per_sec"`
	Ratio             float64 `json:"on_over_off_bets_per_sec"`
	RatioRounds       Spread  `json:"on_over_off_bets_per_sec_per_round,omitzero"`
	OffCPUPerM        float64 `json:"off_server_cpu_sec_per_million_bets"`
	OnCPUPerM         float64 `json:"on_server_cpu_sec_per_million_bets"`
	ScrapedBetsStored float64 `json:"scraped_bets_stored"`
}

// LoggingCost compares gnet at its main log level with gnet at another
// (--compare-log-level), in the same security mode, both without metrics.
type LoggingCost struct {
	Agencies        int     `json:"agencies"`
	Security        string  `json:"security"`
	Level           string  `json:"level"`        // the main runs' level
	OtherLevel      string  `json:"other_level"`  // the compared one
	BetsPerSec      float64 `json:"bets_per_sec"` // at Level
	OtherBetsPerSec float64 `json:"other_bets_per_sec"`
	Ratio           float64 `json:"level_over_other_bets_per_sec"`
	RatioRounds     Spread  `json:"level_over_other_bets_per_sec_per_round,omitzero"`
	CPUPerM         float64 `json:"server_cpu_sec_per_million_bets"`
	OtherCPUPerM    float64 `json:"other_server_cpu_sec_per_million_bets"`
}

// HashingCost estimates what the per-agency chain costs the server: the
// chain cannot be turned off, so it is a microbenchmark of receipt.Chain
// over the run's own bets, in this process, against the server's measured
// CPU per bet.
type HashingCost struct {
	Impl              string  `json:"impl"`
	Agencies          int     `json:"agencies"`
	ChainNsPerBet     float64 `json:"chain_ns_per_bet"`
	ServerCPUNsPerBet float64 `json:"server_cpu_ns_per_bet"`
	Share             float64 `json:"share_of_server_cpu"`
	Method            string  `json:"method"`
	// CPUResolved is false when the run used too little CPU for the 10 ms
	// clock to resolve (a smoke run): the share is then not judged.
	CPUResolved bool `json:"cpu_resolved"`
}

// EndToEnd is a workload of real bin/agency processes over CSV files, run
// Reps times: wall time from starting the agencies to the last one's exit
// (first connect to last WINNERS).
type EndToEnd struct {
	Name       string    `json:"name"` // course, big
	Impl       string    `json:"impl"`
	Security   string    `json:"security"`
	Agencies   int       `json:"agencies"`
	Bets       int64     `json:"bets"`
	Reps       int       `json:"reps"`
	WallSec    []float64 `json:"wall_sec"`
	MedianSec  float64   `json:"median_sec"`
	MinSec     float64   `json:"min_sec"`
	MaxSec     float64   `json:"max_sec"`
	BetsPerSec float64   `json:"bets_per_sec"` // at the median
}

// Target is one goal an issue sets, and what this invocation reached.
type Target struct {
	Issue int    `json:"issue"`
	Name  string `json:"name"`
	Want  string `json:"want"`
	Got   string `json:"got"`
	Met   bool   `json:"met"`
}

// Impl names.
const (
	ImplGnet   = "gnet"
	ImplStdlib = "stdlib"
)

func ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return 0
	}
	return a / b
}

// mainSecurity is the security mode of the main runs: secure unless only
// insecure runs were made.
func mainSecurity(runs []RunResult) string {
	for _, r := range runs {
		if r.Security != Insecure {
			return Secure
		}
	}
	if len(runs) == 0 {
		return Secure
	}
	return Insecure
}

// findRun returns the run of impl at k agencies in the given security mode,
// without metrics.
func findRun(runs []RunResult, impl string, k int, security string) (RunResult, bool) {
	return findVariant(runs, k, variant{Impl: impl, Secure: security != Insecure})
}

func findVariant(runs []RunResult, k int, v variant) (RunResult, bool) {
	for _, r := range runs {
		if r.Agencies == k && r.variant() == v {
			return r, true
		}
	}
	return RunResult{}, false
}

// agencyCounts lists the numbers of agencies of the runs, in order of appearance.
func agencyCounts(runs []RunResult) []int {
	var ks []int
	for _, r := range runs {
		if !slices.Contains(ks, r.Agencies) {
			ks = append(ks, r.Agencies)
		}
	}
	return ks
}

// computeRatios pairs the main runs (main security mode, no metrics) by
// number of agencies.
func computeRatios(runs []RunResult, limits *Limits) []Ratio {
	sec := mainSecurity(runs)
	out := []Ratio{} // an empty list, not null, in the JSON
	for _, k := range agencyCounts(runs) {
		x := Ratio{Agencies: k, Security: sec, CeilingBetsPerSec: limits.ceiling(k)}
		g, gok := findRun(runs, ImplGnet, k, sec)
		s, sok := findRun(runs, ImplStdlib, k, sec)
		if !gok && !sok {
			continue
		}
		if gok {
			x.GnetOverCeiling = ratio(g.BetsPerSec, x.CeilingBetsPerSec)
		}
		if sok {
			x.StdlibOverCeiling = ratio(s.BetsPerSec, x.CeilingBetsPerSec)
		}
		if gok && sok {
			x.BetsPerSec = ratio(g.BetsPerSec, s.BetsPerSec)
			x.BetsPerSecRounds = roundSpread(g.RepeatBetsPerSec, s.RepeatBetsPerSec)
			x.AckP99 = ratio(g.AckP99Ms, s.AckP99Ms)
			x.DrawToLastWinners = ratio(g.DrawToLastWinnersMs, s.DrawToLastWinnersMs)
			x.PeakRSS = ratio(float64(g.ServerPeakRSSBytes), float64(s.ServerPeakRSSBytes))
			x.RSSPerConn = ratio(g.RSSPerWaitingConnBytes, s.RSSPerWaitingConnBytes)
			x.CPUPerBet = ratio(g.CPUSecPerMillionBets, s.CPUSecPerMillionBets)
		}
		out = append(out, x)
	}
	return out
}

// computeEncryption pairs each server's secured and insecure runs.
func computeEncryption(runs []RunResult) []EncryptionCost {
	var out []EncryptionCost
	for _, k := range agencyCounts(runs) {
		for _, impl := range []string{ImplGnet, ImplStdlib} {
			s, sok := findRun(runs, impl, k, Secure)
			p, pok := findRun(runs, impl, k, Insecure)
			if !sok || !pok {
				continue
			}
			out = append(out, EncryptionCost{Impl: impl, Agencies: k,
				SecureBetsPerSec: s.BetsPerSec, InsecureBetsPerSec: p.BetsPerSec, Ratio: ratio(s.BetsPerSec, p.BetsPerSec),
				RatioRounds:   roundSpread(s.RepeatBetsPerSec, p.RepeatBetsPerSec),
				SecureCPUPerM: s.CPUSecPerMillionBets, InsecureCPUPerM: p.CPUSecPerMillionBets,
				SecureHandshakes: s.HandshakesPerSec, InsecureHandshakes: p.HandshakesPerSec,
				SecureCPUMsPerConn: s.CPUMsPerConnection, InsecureCPUMsPerConn: p.CPUMsPerConnection})
		}
	}
	return out
}

// computeMetricsCost pairs the gnet runs with and without metrics.
func computeMetricsCost(runs []RunResult) []MetricsCost {
	var out []MetricsCost
	for _, k := range agencyCounts(runs) {
		for _, sec := range []string{Secure, Insecure} {
			v := variant{Impl: ImplGnet, Secure: sec == Secure}
			off, ook := findVariant(runs, k, v)
			v.Metrics = true
			on, nok := findVariant(runs, k, v)
			if !ook || !nok {
				continue
			}
			out = append(out, MetricsCost{Agencies: k, Security: sec, OffBetsPerSec: off.BetsPerSec, OnBetsPerSec: on.BetsPerSec,
				Ratio: ratio(on.BetsPerSec, off.BetsPerSec), RatioRounds: roundSpread(on.RepeatBetsPerSec, off.RepeatBetsPerSec), OffCPUPerM: off.CPUSecPerMillionBets, OnCPUPerM: on.CPUSecPerMillionBets,
				ScrapedBetsStored: on.MetricsBetsStored})
		}
	}
	return out
}

// computeLoggingCost pairs the main gnet runs with the gnet runs at the
// compared log level.
func computeLoggingCost(runs []RunResult) []LoggingCost {
	var out []LoggingCost
	for _, k := range agencyCounts(runs) {
		for _, other := range runs {
			if other.Agencies != k || other.Impl != ImplGnet || other.VariantLogLevel == "" || other.Metrics {
				continue
			}
			main, ok := findVariant(runs, k, variant{Impl: ImplGnet, Secure: other.Security != Insecure})
			if !ok {
				continue
			}
			out = append(out, LoggingCost{Agencies: k, Security: other.Security, Level: main.LogLevel, OtherLevel: other.LogLevel,
				BetsPerSec: main.BetsPerSec, OtherBetsPerSec: other.BetsPerSec, Ratio: ratio(main.BetsPerSec, other.BetsPerSec),
				RatioRounds: roundSpread(main.RepeatBetsPerSec, other.RepeatBetsPerSec),
				CPUPerM:     main.CPUSecPerMillionBets, OtherCPUPerM: other.CPUSecPerMillionBets})
		}
	}
	return out
}

// hashingCost sets the chain's cost against the CPU per bet of the main
// gnet run at the largest K (or of any main run when gnet did not run).
func hashingCost(runs []RunResult, chainNs float64) *HashingCost {
	if chainNs <= 0 {
		return nil
	}
	sec := mainSecurity(runs)
	var best *RunResult
	for i := range runs {
		r := &runs[i]
		if r.Metrics || r.VariantLogLevel != "" || r.Security != sec || r.CPUSecPerMillionBets <= 0 {
			continue
		}
		if best == nil || (r.Impl == ImplGnet && best.Impl != ImplGnet) ||
			(r.Impl == best.Impl && r.Agencies > best.Agencies) {
			best = r
		}
	}
	if best == nil {
		return nil
	}
	cpuNs := best.CPUSecPerMillionBets * 1e3 // s per 1e6 bets = 1e3 ns per bet
	return &HashingCost{Impl: best.Impl, Agencies: best.Agencies, ChainNsPerBet: chainNs, ServerCPUNsPerBet: cpuNs,
		Share: ratio(chainNs, cpuNs), CPUResolved: cpuResolved(best),
		Method: "estimate: receipt.Chain.Add over the run's own bets timed in the bench process (best of 3), " +
			"against the server's measured CPU per bet; the server cannot run without its chain"}
}

// minResolvedCPUSec is the least server CPU a run must use for its CPU per
// bet to be judged: /proc counts CPU in 10 ms ticks, so a smaller total (a
// smoke run's) is mostly rounding.
const minResolvedCPUSec = 0.25

// cpuResolved reports whether r used enough CPU for its CPU per bet to mean
// something; targets built on it leave unresolved runs out.
func cpuResolved(r *RunResult) bool {
	return r.CPUSecPerMillionBets > 0 && r.ServerCPUSec >= minResolvedCPUSec
}

// Targets of issues 9, 10, 11 and 13.
const (
	targetCourseSec        = 0.1
	targetBigSec           = 5.0
	targetGnetOverStdlib   = 1.2
	targetMemoryVsStdlib   = 0.5
	targetCeilingShare     = 0.3
	targetDrawMs           = 100
	targetWaitingConnBytes = 4 << 10
	targetCPUPerM          = 0.5
	targetSecureShare      = 0.9
	targetStormSec         = 5.0
	targetStormAgencies    = 10000
	targetMetricsSpread    = 0.03
	targetLogSpread        = 0.10
	targetHashShare        = 0.05
	targetMainAgencies     = 2000
)

// computeTargets checks what this invocation measured against the issues'
// targets; a target whose measurement was not made is left out.
func computeTargets(r *Report) []Target {
	var out []Target
	add := func(issue int, name, want, got string, met bool) {
		out = append(out, Target{Issue: issue, Name: name, Want: want, Got: got, Met: met})
	}
	for _, e := range r.EndToEnd {
		if e.Impl != ImplGnet || e.Security != Secure {
			continue
		}
		switch e.Name {
		case e2eCourse:
			add(10, "course-shaped end to end, 5 agencies (gnet)", fmt.Sprintf("≤ %.1f s", targetCourseSec),
				fmt.Sprintf("%.3f s (median of %d)", e.MedianSec, e.Reps), e.MedianSec <= targetCourseSec)
		case e2eBig:
			add(10, fmt.Sprintf("%d agencies × %s bets (gnet)", e.Agencies, group(float64(e.Bets)/float64(e.Agencies))),
				fmt.Sprintf("< %.0f s", targetBigSec), fmt.Sprintf("%.2f s", e.MedianSec), e.MedianSec < targetBigSec)
		}
	}
	sec := mainSecurity(r.Runs)
	for _, x := range r.Ratios {
		if x.Agencies != targetMainAgencies {
			continue
		}
		if x.BetsPerSec > 0 {
			add(10, "gnet/stdlib bets/s at 2,000 agencies", fmt.Sprintf("≥ %.1f", targetGnetOverStdlib),
				fmt.Sprintf("%.2f", x.BetsPerSec), x.BetsPerSec >= targetGnetOverStdlib)
		}
		if x.RSSPerConn > 0 {
			add(10, "gnet/stdlib RSS per waiting connection at 2,000", fmt.Sprintf("≤ %.1f", targetMemoryVsStdlib),
				fmt.Sprintf("%.2f", x.RSSPerConn), x.RSSPerConn <= targetMemoryVsStdlib)
		}
		if x.GnetOverCeiling > 0 {
			add(10, "gnet share of the machine ceiling at 2,000", fmt.Sprintf("≥ %.0f%%", 100*targetCeilingShare),
				fmt.Sprintf("%.0f%%", 100*x.GnetOverCeiling), x.GnetOverCeiling >= targetCeilingShare)
		}
	}
	if g, ok := findRun(r.Runs, ImplGnet, targetStormAgencies, sec); ok {
		got := fmt.Sprintf("%.0f ms", g.DrawToLastWinnersMs)
		if f := r.Limits.FanOut; f != nil && f.Agencies == targetStormAgencies {
			got += fmt.Sprintf(" (fan-out floor %.0f ms)", f.FloorMs)
		}
		add(10, "last FINISHED → last WINNERS at 10,000 (gnet)", fmt.Sprintf("≤ %d ms", targetDrawMs),
			got, g.DrawToLastWinnersMs <= targetDrawMs)
		add(10, "RSS per waiting connection at 10,000 (gnet)", fmt.Sprintf("≤ %d KiB", targetWaitingConnBytes>>10),
			fmt.Sprintf("%.1f KiB", g.RSSPerWaitingConnBytes/1024), g.RSSPerWaitingConnBytes <= targetWaitingConnBytes)
		if g.StormSec > 0 {
			add(9, "reconnect storm of 10,000 agencies (gnet)", fmt.Sprintf("≤ %.0f s", targetStormSec),
				fmt.Sprintf("%.2f s", g.StormSec), g.StormSec <= targetStormSec)
		}
	}
	if ks := agencyCounts(r.Runs); len(ks) > 0 {
		k := slices.Max(ks)
		if g, ok := findRun(r.Runs, ImplGnet, k, sec); ok && cpuResolved(&g) {
			add(10, fmt.Sprintf("server CPU per million bets at %s agencies (gnet)", group(float64(k))),
				fmt.Sprintf("≤ %.1f s", targetCPUPerM), fmt.Sprintf("%.2f s", g.CPUSecPerMillionBets),
				g.CPUSecPerMillionBets <= targetCPUPerM)
		}
	}
	for _, e := range r.Encryption {
		if e.Impl != ImplGnet {
			continue // the baseline's cost of encryption is printed with the rest; the target is the event server's
		}
		add(9, fmt.Sprintf("secured/insecure bets/s at %s agencies (%s)", group(float64(e.Agencies)), e.Impl),
			fmt.Sprintf("≥ %.1f", targetSecureShare), fmt.Sprintf("%.2f", e.Ratio), e.Ratio >= targetSecureShare)
	}
	for _, l := range r.Logging {
		if l.Agencies != targetMainAgencies {
			continue
		}
		add(10, fmt.Sprintf("log level %s/%s bets/s at 2,000 agencies (gnet)", l.Level, l.OtherLevel),
			fmt.Sprintf("within %.0f%%", 100*targetLogSpread), fmt.Sprintf("%.3f", l.Ratio), math.Abs(l.Ratio-1) <= targetLogSpread)
	}
	for _, m := range r.Metrics {
		add(11, fmt.Sprintf("metrics on/off bets/s at %s agencies (gnet)", group(float64(m.Agencies))),
			fmt.Sprintf("within %.0f%%", 100*targetMetricsSpread), fmt.Sprintf("%.3f", m.Ratio),
			math.Abs(m.Ratio-1) <= targetMetricsSpread)
	}
	if h := r.Hashing; h != nil && h.CPUResolved {
		add(13, "hashing share of server CPU per bet (estimate)", fmt.Sprintf("≤ %.0f%%", 100*targetHashShare),
			fmt.Sprintf("%.1f%%", 100*h.Share), h.Share <= targetHashShare)
	}
	return out
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write json report: %w", err)
	}
	return nil
}

// WriteTable writes the runs, the comparisons, the end-to-end runs, the
// limits, the ratios and the targets as aligned text.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	if c := r.Config; len(c.Impls) > 0 {
		fmt.Fprintf(&b, "servers %s, %s, log level %s, window from WELCOME; %d bets per BETS frame; %d connections opened at a time",
			strings.Join(c.Impls, " and "), c.Security, c.ServerLog, c.Batch, c.Dials)
		if c.StormDials > 0 {
			fmt.Fprintf(&b, " (%d in a reconnect storm)", c.StormDials)
		}
		if c.Repeat > 1 {
			fmt.Fprintf(&b, "; each run %d times, the median shown", c.Repeat)
		}
		b.WriteString("\n\n")
	}
	if len(r.Runs) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "impl\tsecurity\tmetrics\tlog\tagencies\tbets/agency\tbets/s\tMB/s\tACK p50 ms\tACK p99 ms\tACK max ms\t"+
			"handshakes/s\tstorm s\tdraw→winners ms\tpeak RSS MiB\tRSS/waiting conn KiB\tRSS/idle conn KiB\tCPU s/M bets\t"+
			"upload CPU s/M bets\tCPU ms/conn\t")
		for _, x := range r.Runs {
			metrics := "off"
			if x.Metrics {
				metrics = "on"
			}
			storm := "-"
			if x.StormSec > 0 {
				storm = fmt.Sprintf("%.2f", x.StormSec)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%.1f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.3f\t\n",
				x.Impl, x.Security, metrics, x.LogLevel, x.Agencies, x.BetsPerAgency, group(x.BetsPerSec), x.MBPerSec, x.AckP50Ms, x.AckP99Ms,
				x.AckMaxMs, group(x.HandshakesPerSec), storm, x.DrawToLastWinnersMs, float64(x.ServerPeakRSSBytes)/(1<<20),
				x.RSSPerWaitingConnBytes/1024, x.RSSPerIdleConnBytes/1024, x.CPUSecPerMillionBets, x.UploadCPUSecPerMBets,
				x.CPUMsPerConnection)
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}
	for _, x := range r.Runs {
		if len(x.RepeatBetsPerSec) > 1 {
			parts := make([]string, len(x.RepeatBetsPerSec))
			for i, v := range x.RepeatBetsPerSec {
				parts[i] = group(v)
			}
			fmt.Fprintf(&b, "%s K=%d repetitions (median shown): %s bets/s\n", x.variant(), x.Agencies, strings.Join(parts, ", "))
		}
	}
	if len(r.EndToEnd) > 0 {
		fmt.Fprintln(&b, "\nend to end (real bin/agency processes at their defaults; agencies' start to the last exit):")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "run\timpl\tsecurity\tagencies\tbets\treps\tmedian s\tmin s\tmax s\tbets/s at median\t")
		for _, e := range r.EndToEnd {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%.3f\t%.3f\t%.3f\t%s\t\n", e.Name, e.Impl, e.Security, e.Agencies,
				group(float64(e.Bets)), e.Reps, e.MedianSec, e.MinSec, e.MaxSec, group(e.BetsPerSec))
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
		for _, name := range []string{e2eCourse, e2eBig} {
			g, gok := findE2E(r.EndToEnd, name, ImplGnet)
			s, sok := findE2E(r.EndToEnd, name, ImplStdlib)
			if gok && sok && g.MedianSec > 0 {
				fmt.Fprintf(&b, "%s: stdlib/gnet wall time %.2f\n", name, s.MedianSec/g.MedianSec)
			}
		}
	}
	if len(r.Encryption) > 0 {
		fmt.Fprintln(&b, "\ncost of encryption (same run):")
		for _, e := range r.Encryption {
			fmt.Fprintf(&b, "%s K=%d: secured %s bets/s, insecure %s bets/s, ratio %.2f%s; CPU s/M bets %.2f vs %.2f; "+
				"handshakes/s %s (HELLOs/s insecure %s); server CPU ms per connection %.3f vs %.3f\n", e.Impl, e.Agencies,
				group(e.SecureBetsPerSec), group(e.InsecureBetsPerSec), e.Ratio, e.RatioRounds.format(2), e.SecureCPUPerM, e.InsecureCPUPerM,
				group(e.SecureHandshakes), group(e.InsecureHandshakes), e.SecureCPUMsPerConn, e.InsecureCPUMsPerConn)
		}
	}
	if len(r.Metrics) > 0 {
		fmt.Fprintln(&b, "\ncost of metrics (gnet, same run):")
		for _, m := range r.Metrics {
			fmt.Fprintf(&b, "K=%d %s: off %s bets/s, on %s bets/s, ratio %.3f%s; CPU s/M bets %.2f vs %.2f; "+
				"lottery_bets_stored_total scraped %s\n", m.Agencies, m.Security, group(m.OffBetsPerSec), group(m.OnBetsPerSec),
				m.Ratio, m.RatioRounds.format(3), m.OffCPUPerM, m.OnCPUPerM, group(m.ScrapedBetsStored))
		}
	}
	if len(r.Logging) > 0 {
		fmt.Fprintln(&b, "\ncost of logging (gnet, same run):")
		for _, l := range r.Logging {
			fmt.Fprintf(&b, "K=%d %s: %s %s bets/s, %s %s bets/s, %s/%s %.3f%s; CPU s/M bets %.2f vs %.2f\n", l.Agencies, l.Security,
				l.Level, group(l.BetsPerSec), l.OtherLevel, group(l.OtherBetsPerSec), l.Level, l.OtherLevel, l.Ratio, l.RatioRounds.format(3),
				l.CPUPerM, l.OtherCPUPerM)
		}
	}
	if h := r.Hashing; h != nil {
		fmt.Fprintf(&b, "\ncost of hashing (%s): chain %.0f ns per bet against %.0f ns of server CPU per bet (%s K=%d): %.1f%%\n",
			h.Method, h.ChainNsPerBet, h.ServerCPUNsPerBet, h.Impl, h.Agencies, 100*h.Share)
		if !h.CPUResolved {
			fmt.Fprintf(&b, "  (not judged: the run's server CPU is under %.0f ms, a few ticks of the 10 ms clock)\n", 1e3*minResolvedCPUSec)
		}
	}
	l := r.Limits
	if l.CeilingBetsPerSec > 0 {
		fmt.Fprintf(&b, "\nloopback TCP: %.0f MB/s one stream, %.0f MB/s over %d streams; %.1f wire bytes per bet -> %s bets/s\n",
			l.LoopbackOneStreamBytesPerSec/1e6, l.LoopbackManyStreamBytesPerSec/1e6, l.LoopbackStreams, l.WireBytesPerBet,
			group(l.LoopbackCeilingBetsPerSec))
		if f := l.FanOut; f != nil {
			fmt.Fprintf(&b, "loopback fan-out: one %d-byte write to each of %s connections, %d writers, until every reader holds it: %.1f ms",
				f.MessageBytes, group(float64(f.Connections)), f.Writers, f.TookMs)
			if f.Connections != f.Agencies {
				fmt.Fprintf(&b, ", so %.0f ms for %s (the open files limit allows fewer in one process)", f.FloorMs, group(float64(f.Agencies)))
			}
			fmt.Fprintf(&b, "; the floor under draw→winners at K=%d\n", f.Agencies)
		}
		for _, d := range l.Disk {
			fmt.Fprintf(&b, "K=%d disk append+fsync of %d-byte blocks (the mean group commit): %.1f MB/s, %.0f fsyncs/s; %.1f bytes per bet -> %s bets/s; ceiling %s bets/s\n",
				d.Agencies, d.BlockBytes, d.BytesPerSec/1e6, d.FsyncsPerSec, l.DiskBytesPerBet,
				group(d.BytesPerSec/l.DiskBytesPerBet), group(d.CeilingBetsPerSec))
		}
	}
	for _, x := range r.Ratios {
		var parts []string
		if x.BetsPerSec > 0 {
			parts = append(parts, fmt.Sprintf("gnet/stdlib: bets/s %.2f%s, ACK p99 %.2f, draw→winners %.2f, peak RSS %.2f, RSS/conn %.2f, CPU/bet %.2f",
				x.BetsPerSec, x.BetsPerSecRounds.format(2), x.AckP99, x.DrawToLastWinners, x.PeakRSS, x.RSSPerConn, x.CPUPerBet))
		}
		if x.GnetOverCeiling > 0 {
			parts = append(parts, fmt.Sprintf("gnet/ceiling %.2f", x.GnetOverCeiling))
		}
		if x.StdlibOverCeiling > 0 {
			parts = append(parts, fmt.Sprintf("stdlib/ceiling %.2f", x.StdlibOverCeiling))
		}
		if len(parts) > 0 {
			fmt.Fprintf(&b, "K=%d %s  %s\n", x.Agencies, x.Security, strings.Join(parts, "; "))
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(&b, "\ntargets:")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, t := range r.Targets {
			met := "missed"
			if t.Met {
				met = "met"
			}
			fmt.Fprintf(tw, "issue %d\t%s\t%s\t%s\t%s\n", t.Issue, t.Name, t.Want, t.Got, met)
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}
	if r.Machine.LoadAvgEnd > 0 || r.Machine.LoadAvgStart > 0 {
		fmt.Fprintf(&b, "\nload average (1 min) %.2f at start, %.2f at end, %d CPUs\n", r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd, r.Machine.CPUs)
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

func findE2E(es []EndToEnd, name, impl string) (EndToEnd, bool) {
	for _, e := range es {
		if e.Name == name && e.Impl == impl {
			return e, true
		}
	}
	return EndToEnd{}, false
}

// group formats a non-negative number with thousands separators.
func group(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	if len(s) <= 3 || strings.ContainsAny(s, "eEn+-") {
		return s
	}
	var b strings.Builder
	lead := len(s) % 3
	if lead > 0 {
		b.WriteString(s[:lead])
	}
	for i := lead; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}
