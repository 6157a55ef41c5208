package bench

import (
	"bytes"
	"encoding/json"
	"math"
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
