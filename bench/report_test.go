package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
)

func sampleReport() *Report {
	runs := []RunResult{
		{Impl: ImplGnet, Agencies: 100, BetsPerAgency: 500, BetsPerSec: 400000, AckP99Ms: 20, DrawToLastWinnersMs: 50,
			ServerPeakRSSBytes: 40 << 20, RSSPerWaitingConnBytes: 4096, CPUSecPerMillionBets: 2},
		{Impl: ImplStdlib, Agencies: 100, BetsPerAgency: 500, BetsPerSec: 200000, AckP99Ms: 40, DrawToLastWinnersMs: 25,
			ServerPeakRSSBytes: 80 << 20, RSSPerWaitingConnBytes: 16384, CPUSecPerMillionBets: 4},
		{Impl: ImplGnet, Agencies: 1000, BetsPerAgency: 50, BetsPerSec: 500000, RSSPerWaitingConnBytes: 3000},
	}
	r := &Report{Runs: runs, Limits: Limits{CeilingBetsPerSec: 1000000,
		Disk: []DiskLimit{{Agencies: 100, BlockBytes: 4096, CeilingBetsPerSec: 500000}, {Agencies: 1000, CeilingBetsPerSec: 1000000}}}}
	r.Ratios = computeRatios(r.Runs, &r.Limits)
	return r
}

func TestJSONHasTheContractKeys(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("report is not JSON: %v", err)
	}
	runs, ok := doc["runs"].([]any)
	if !ok || len(runs) != 3 {
		t.Fatalf("runs = %v, want a list of 3", doc["runs"])
	}
	run := runs[0].(map[string]any)
	for _, key := range []string{"impl", "agencies", "bets_per_agency", "bets_per_sec", "mb_per_sec", "ack_p50_ms",
		"ack_p99_ms", "ack_max_ms", "draw_to_last_winners_ms", "server_peak_rss_bytes", "rss_per_waiting_conn_bytes",
		"server_cpu_sec_per_million_bets"} {
		if _, ok := run[key]; !ok {
			t.Errorf("runs[0] has no %q", key)
		}
	}
	if run["impl"] != "gnet" || run["agencies"] != 100.0 || run["bets_per_sec"] != 400000.0 {
		t.Errorf("runs[0] = %v, want gnet, 100 agencies, 400000 bets/s", run)
	}
	limits, ok := doc["limits"].(map[string]any)
	if !ok {
		t.Fatalf("limits = %v, want an object", doc["limits"])
	}
	for _, key := range []string{"loopback_bytes_per_sec", "disk_append_fsync_bytes_per_sec", "wire_bytes_per_bet", "disk_bytes_per_bet"} {
		if _, ok := limits[key]; !ok {
			t.Errorf("limits has no %q", key)
		}
	}
}

func TestRatiosPairRunsByAgencies(t *testing.T) {
	r := sampleReport()
	if len(r.Ratios) != 2 {
		t.Fatalf("ratios = %+v, want one per K (2)", r.Ratios)
	}
	x := r.Ratios[0]
	if x.Agencies != 100 || x.BetsPerSec != 2 || x.AckP99 != 0.5 || x.DrawToLastWinners != 2 || x.PeakRSS != 0.5 ||
		x.RSSPerConn != 0.25 || x.CPUPerBet != 0.5 || x.CeilingBetsPerSec != 500000 || x.GnetOverCeiling != 0.8 || x.StdlibOverCeiling != 0.4 {
		t.Errorf("K=100 ratios = %+v", x)
	}
	// K=1000 has no stdlib run: only the ceiling ratio is there.
	y := r.Ratios[1]
	if y.Agencies != 1000 || y.BetsPerSec != 0 || y.GnetOverCeiling != 0.5 {
		t.Errorf("K=1000 ratios = %+v, want only gnet/ceiling 0.5", y)
	}
	if got := ratio(1, 0); got != 0 {
		t.Errorf("ratio(1, 0) = %v, want 0", got)
	}
	if got := ratio(math.NaN(), 1); got != 0 {
		t.Errorf("ratio(NaN, 1) = %v, want 0", got)
	}
}

func TestTableShowsRunsAndRatios(t *testing.T) {
	var buf bytes.Buffer
	r := sampleReport()
	r.Warnings = []string{"machine busy"}
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"400,000", "200,000", "gnet/stdlib: bets/s 2.00", "gnet/ceiling 0.80", "4096-byte blocks", "K=1000", "warning: machine busy"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if lines := strings.Count(out, "\n"); lines < 5 {
		t.Errorf("table has %d lines:\n%s", lines, out)
	}
}

func TestGroupThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", 100000.4: "100,000"} {
		if got := group(v); got != want {
			t.Errorf("group(%v) = %q, want %q", v, got, want)
		}
	}
}

// comparisonRuns are two servers at 2,000 agencies, secured and not, gnet
// with metrics too, and gnet at 10,000 with a storm.
func comparisonRuns() []RunResult {
	return []RunResult{
		{Impl: ImplGnet, Security: Secure, LogLevel: "info", Agencies: 2000, BetsPerSec: 1.8e6, CPUSecPerMillionBets: 0.4, RSSPerWaitingConnBytes: 3000,
			HandshakesPerSec: 9000, StormSec: 0.4},
		{Impl: ImplStdlib, Security: Secure, Agencies: 2000, BetsPerSec: 1.2e6, CPUSecPerMillionBets: 0.8, RSSPerWaitingConnBytes: 9000},
		{Impl: ImplGnet, Security: Secure, Metrics: true, Agencies: 2000, BetsPerSec: 1.764e6, CPUSecPerMillionBets: 0.41, MetricsBetsStored: 2e6},
		{Impl: ImplGnet, Security: Secure, LogLevel: "warn", VariantLogLevel: "warn", Agencies: 2000, BetsPerSec: 2.1e6,
			CPUSecPerMillionBets: 0.35},
		{Impl: ImplGnet, Security: Insecure, Agencies: 2000, BetsPerSec: 1.9e6, CPUSecPerMillionBets: 0.3, HandshakesPerSec: 20000},
		{Impl: ImplStdlib, Security: Insecure, Agencies: 2000, BetsPerSec: 1.5e6, CPUSecPerMillionBets: 0.6},
		{Impl: ImplGnet, Security: Secure, Agencies: 10000, BetsPerSec: 1e6, CPUSecPerMillionBets: 0.6, ServerCPUSec: 3,
			DrawToLastWinnersMs: 80, RSSPerWaitingConnBytes: 5000, StormSec: 4.2},
	}
}

func TestComparisonsPairTheRightRuns(t *testing.T) {
	runs := comparisonRuns()
	limits := &Limits{CeilingBetsPerSec: 5e6}
	ratios := computeRatios(runs, limits)
	if len(ratios) != 2 || ratios[0].Agencies != 2000 || ratios[0].Security != Secure || ratios[0].BetsPerSec != 1.5 ||
		ratios[0].CPUPerBet != 0.5 || ratios[0].GnetOverCeiling != 0.36 {
		t.Errorf("ratios %+v: want the secured, metrics-off runs paired (1.5, CPU 0.5, 0.36 of the ceiling)", ratios)
	}
	enc := computeEncryption(runs)
	if len(enc) != 2 || enc[0].Impl != ImplGnet || math.Abs(enc[0].Ratio-1.8/1.9) > 1e-9 || enc[1].Impl != ImplStdlib ||
		enc[1].Ratio != 0.8 || enc[0].SecureHandshakes != 9000 || enc[0].InsecureHandshakes != 20000 {
		t.Errorf("encryption %+v", enc)
	}
	m := computeMetricsCost(runs)
	if len(m) != 1 || math.Abs(m[0].Ratio-0.98) > 1e-9 || m[0].ScrapedBetsStored != 2e6 || m[0].OnCPUPerM != 0.41 {
		t.Errorf("metrics %+v, want on/off 0.98", m)
	}
	lc := computeLoggingCost(runs)
	if len(lc) != 1 || lc[0].Agencies != 2000 || lc[0].Level != "info" || lc[0].OtherLevel != "warn" ||
		math.Abs(lc[0].Ratio-1.8/2.1) > 1e-9 || lc[0].OtherCPUPerM != 0.35 {
		t.Errorf("logging %+v, want info over warn 1.8/2.1 at 2,000", lc)
	}
	h := hashingCost(runs, 12)
	if h == nil || h.Impl != ImplGnet || h.Agencies != 10000 || h.ServerCPUNsPerBet != 600 || h.Share != 0.02 {
		t.Errorf("hashing %+v, want gnet at the largest K: 12 of 600 ns", h)
	}
	if hashingCost(runs, 0) != nil || hashingCost(nil, 12) != nil {
		t.Error("a hashing estimate without a measurement")
	}
	// A run whose CPU total is a few clock ticks is not a measurement.
	smoke := []RunResult{{Impl: ImplGnet, Security: Secure, Agencies: 20, CPUSecPerMillionBets: 10, ServerCPUSec: 0.04}}
	if h := hashingCost(smoke, 12); h == nil || h.CPUResolved {
		t.Errorf("hashing %+v, want an estimate marked unresolved (40 ms of CPU)", h)
	}
	if h := hashingCost(runs, 12); !h.CPUResolved {
		t.Errorf("hashing %+v, want 3 s of CPU resolved", h)
	}
	if tg := computeTargets(&Report{Runs: smoke, Hashing: hashingCost(smoke, 12)}); len(tg) != 0 {
		t.Errorf("targets %+v judged from 40 ms of CPU", tg)
	}
	// Only insecure runs: they are the main ones.
	plain := []RunResult{runs[4], runs[5]}
	if r := computeRatios(plain, limits); len(r) != 1 || r[0].Security != Insecure || math.Abs(r[0].BetsPerSec-1.9/1.5) > 1e-9 {
		t.Errorf("insecure-only ratios %+v", r)
	}
	if computeEncryption(plain) != nil {
		t.Error("an encryption cost without secured runs")
	}
}

func TestTargets(t *testing.T) {
	r := &Report{Runs: comparisonRuns()}
	r.Ratios = computeRatios(r.Runs, &Limits{CeilingBetsPerSec: 5e6})
	r.Encryption = computeEncryption(r.Runs)
	r.Metrics = computeMetricsCost(r.Runs)
	r.Logging = computeLoggingCost(r.Runs)
	r.Hashing = hashingCost(r.Runs, 12)
	r.EndToEnd = []EndToEnd{
		{Name: e2eCourse, Impl: ImplGnet, Security: Secure, Agencies: 5, Bets: 78697, Reps: 5, MedianSec: 0.09},
		{Name: e2eCourse, Impl: ImplStdlib, Security: Secure, Agencies: 5, Bets: 78697, Reps: 5, MedianSec: 0.5},
		{Name: e2eBig, Impl: ImplGnet, Security: Secure, Agencies: 2, Bets: 4e6, Reps: 1, MedianSec: 6},
	}
	got := map[string]Target{}
	for _, x := range computeTargets(r) {
		got[x.Name] = x
	}
	for name, met := range map[string]bool{
		"course-shaped end to end, 5 agencies (gnet)":           true,
		"2 agencies × 2,000,000 bets (gnet)":                    false,
		"gnet/stdlib bets/s at 2,000 agencies":                  true,
		"gnet/stdlib RSS per waiting connection at 2,000":       true, // 3000/9000
		"gnet share of the machine ceiling at 2,000":            true, // 0.36
		"last FINISHED → last WINNERS at 10,000 (gnet)":         true,
		"RSS per waiting connection at 10,000 (gnet)":           false, // 4.9 KiB
		"reconnect storm of 10,000 agencies (gnet)":             true,
		"server CPU per million bets at 10,000 agencies (gnet)": false,
		"secured/insecure bets/s at 2,000 agencies (gnet)":      true,
		"metrics on/off bets/s at 2,000 agencies (gnet)":        true,
		"log level info/warn bets/s at 2,000 agencies (gnet)":   false, // 1.8 against 2.1
		"hashing share of server CPU per bet (estimate)":        true,
	} {
		x, ok := got[name]
		if !ok {
			t.Errorf("no target %q", name)
			continue
		}
		if x.Met != met {
			t.Errorf("%s: met %v (%s against %s), want %v", name, x.Met, x.Got, x.Want, met)
		}
	}
	if len(got) != 13 {
		t.Errorf("%d targets, want 13 (the baseline's cost of encryption is not one): %v", len(got), got)
	}
	if d := got["last FINISHED → last WINNERS at 10,000 (gnet)"]; d.Got != "80 ms" {
		t.Errorf("draw target shows %q without a fan-out test, want 80 ms", d.Got)
	}
	r.Limits.FanOut = &FanOutLimit{Agencies: 10000, Connections: 9000, MessageBytes: 640, Writers: 2, TookMs: 90, FloorMs: 100}
	for _, x := range computeTargets(r) {
		if x.Name == "last FINISHED → last WINNERS at 10,000 (gnet)" && x.Got != "80 ms (fan-out floor 100 ms)" {
			t.Errorf("draw target shows %q, want the fan-out floor beside the measurement", x.Got)
		}
	}
	r.Limits.CeilingBetsPerSec = 5e6
	var text strings.Builder
	if err := r.WriteTable(&text); err != nil {
		t.Fatal(err)
	}
	if want := "K=2000 secure: info 1,800,000 bets/s, warn 2,100,000 bets/s, info/warn 0.857"; !strings.Contains(text.String(), want) {
		t.Errorf("the text report does not say %q:\n%s", want, text.String())
	}
	if want := "loopback fan-out: one 640-byte write to each of 9,000 connections, 2 writers, until every reader holds it: 90.0 ms, " +
		"so 100 ms for 10,000"; !strings.Contains(text.String(), want) {
		t.Errorf("the text report does not say %q:\n%s", want, text.String())
	}
	if n := len(computeTargets(&Report{})); n != 0 {
		t.Errorf("%d targets with nothing measured", n)
	}
}

func TestMedianRunsKeepsTheMiddleRepetition(t *testing.T) {
	runs := []RunResult{
		{Impl: ImplGnet, Security: Secure, BetsPerSec: 3, AckP99Ms: 30},
		{Impl: ImplStdlib, Security: Secure, BetsPerSec: 9},
		{Impl: ImplGnet, Security: Secure, BetsPerSec: 1, AckP99Ms: 10},
		{Impl: ImplGnet, Security: Secure, BetsPerSec: 2, AckP99Ms: 20},
	}
	got := medianRuns(runs)
	if len(got) != 2 || got[0].Impl != ImplGnet || got[0].BetsPerSec != 2 || got[0].AckP99Ms != 20 ||
		!slices.Equal(got[0].RepeatBetsPerSec, []float64{3, 1, 2}) {
		t.Errorf("gnet = %+v, want the 2 bets/s run with every repetition noted", got[0])
	}
	if got[1].Impl != ImplStdlib || got[1].RepeatBetsPerSec != nil {
		t.Errorf("stdlib = %+v, want its one run as is", got[1])
	}
	if m := median([]float64{1, 2, 3, 10}); m != 2.5 {
		t.Errorf("median of 4 = %v, want 2.5", m)
	}
	if m := median([]float64{4}); m != 4 {
		t.Errorf("median of 1 = %v", m)
	}
}

// TestComparisonsShowTheirPerRoundSpread checks that each comparison of
// repeated runs reports the lowest and highest ratio of one round's pair,
// and that the table prints it; unrepeated runs print no spread.
func TestComparisonsShowTheirPerRoundSpread(t *testing.T) {
	runs := comparisonRuns()
	runs[0].RepeatBetsPerSec = []float64{1.8e6, 1.5e6, 2.0e6} // gnet secured, rounds 1-3
	runs[1].RepeatBetsPerSec = []float64{1.2e6, 1.5e6, 1.0e6} // stdlib secured
	runs[2].RepeatBetsPerSec = []float64{1.8e6, 1.2e6, 2.0e6} // gnet with metrics
	runs[3].RepeatBetsPerSec = []float64{2.0e6, 1.5e6, 2.5e6} // gnet at warn
	runs[4].RepeatBetsPerSec = []float64{2.0e6, 1.5e6, 1.6e6} // gnet insecure
	enc := computeEncryption(runs)
	if got, want := enc[0].RatioRounds, (Spread{Low: 0.9, High: 1.25}); math.Abs(got.Low-want.Low) > 1e-9 || math.Abs(got.High-want.High) > 1e-9 {
		t.Errorf("gnet secured/insecure per round %+v, want %+v", got, want)
	}
	if enc[1].RatioRounds != (Spread{}) {
		t.Errorf("stdlib, not repeated: per round %+v, want none", enc[1].RatioRounds)
	}
	if m := computeMetricsCost(runs); math.Abs(m[0].RatioRounds.Low-0.8) > 1e-9 || m[0].RatioRounds.High != 1 {
		t.Errorf("metrics on/off per round %+v, want 0.8–1", m[0].RatioRounds)
	}
	if lc := computeLoggingCost(runs); lc[0].RatioRounds.Low != 0.8 || lc[0].RatioRounds.High != 1 {
		t.Errorf("info/warn per round %+v, want 0.8–1", lc[0].RatioRounds)
	}
	if r := computeRatios(runs, &Limits{}); r[0].BetsPerSecRounds.Low != 1 || r[0].BetsPerSecRounds.High != 2 {
		t.Errorf("gnet/stdlib per round %+v, want 1–2", r[0].BetsPerSecRounds)
	}
	if s := roundSpread([]float64{1, 2}, []float64{1}); s != (Spread{}) {
		t.Errorf("rounds of different counts paired: %+v", s)
	}
	rep := &Report{Runs: runs, Ratios: computeRatios(runs, &Limits{}), Encryption: enc}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ratio 0.95 (per round 0.90–1.25)", "gnet/stdlib: bets/s 1.50 (per round 1.00–2.00)"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestTableShowsComparisonsAndTargets(t *testing.T) {
	r := &Report{Runs: comparisonRuns(), Machine: Machine{CPUs: 2, LoadAvgStart: 1.5, LoadAvgEnd: 2}}
	r.Ratios = computeRatios(r.Runs, &r.Limits)
	r.Encryption = computeEncryption(r.Runs)
	r.Metrics = computeMetricsCost(r.Runs)
	r.Hashing = hashingCost(r.Runs, 12)
	r.EndToEnd = []EndToEnd{
		{Name: e2eCourse, Impl: ImplGnet, Security: Secure, Agencies: 5, Bets: 78697, Reps: 3, WallSec: []float64{0.1, 0.08, 0.12}, MedianSec: 0.1,
			MinSec: 0.08, MaxSec: 0.12, BetsPerSec: 786970},
		{Name: e2eCourse, Impl: ImplStdlib, Security: Secure, Agencies: 5, Bets: 78697, Reps: 3, MedianSec: 0.25},
	}
	r.Targets = computeTargets(r)
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"insecure", "4.20", // a storm's seconds
		"course: stdlib/gnet wall time 2.50", "786,970",
		"gnet K=2000: secured 1,800,000 bets/s, insecure 1,900,000 bets/s, ratio 0.95",
		"ratio 0.980", "lottery_bets_stored_total scraped 2,000,000",
		"chain 12 ns per bet against 600 ns", "2.0%",
		"targets:", "issue 13", "met", "missed",
		"load average (1 min) 1.50 at start, 2.00 at end, 2 CPUs",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
