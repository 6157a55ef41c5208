package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

// TestScaleOutOnPostgres is bench --store temp at a tiny K with the real
// binaries: the file store behind one front end, then a throwaway
// PostgreSQL behind one and two, every run checked (winners, one
// commitment, bets stored counted once over the front ends, the export
// of the database) and measured, nothing left behind. Without PostgreSQL
// it skips, or fails with CI=true.
func TestScaleOutOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries and a PostgreSQL cluster")
	}
	const k, bets = 5, 60
	bins := buildBinaries(t)
	opts := ScaleOutOptions{
		Workload: Workload{Agencies: []int{k}, Bets: bets, Batch: 25, Distinct: 64, WinningNumber: 7574, Seed: 1},
		Setup: Setup{ServerBin: bins + "/eventserver", DataDir: t.TempDir(), Repeat: 1, DialConcurrency: 4,
			Timeout: time.Minute},
		Store: StoreTemp, Fronts: []int{1, 2}, FileStore: true,
	}
	provideKeys(t, opts.DataDir)
	rep, err := RunScaleOut(t.Context(), opts)
	switch {
	case errors.Is(err, ErrNoPostgres) && !pgtest.CI():
		t.Skipf("PostgreSQL cannot start here (with CI=true this fails): %v", err)
	case err != nil:
		t.Fatal(err)
	}
	type setup struct {
		store  string
		fronts int
		per    []int
	}
	want := []setup{{StoreFile, 1, []int{5}}, {StorePostgres, 1, []int{5}}, {StorePostgres, 2, []int{3, 2}}}
	if len(rep.Runs) != len(want) {
		t.Fatalf("%d runs, want %d: %+v", len(rep.Runs), len(want), rep.Runs)
	}
	for i, w := range want {
		r := rep.Runs[i]
		if r.Store != w.store || r.Fronts != w.fronts || r.Agencies != k || r.BetsPerAgency != bets || r.Bets != k*bets ||
			!slices.Equal(r.AgenciesPerFront, w.per) {
			t.Errorf("run %d: %s × %d, K=%d, %d bets, agencies per front end %v; want %s × %d, K=%d, %d bets, %v",
				i, r.Store, r.Fronts, r.Agencies, r.Bets, r.AgenciesPerFront, w.store, w.fronts, k, k*bets, w.per)
		}
		var stored int64
		for _, n := range r.BetsPerFront {
			if n <= 0 && r.Fronts > 1 {
				t.Errorf("run %d: bets stored per front end %v, want every front end to store some", i, r.BetsPerFront)
			}
			stored += n
		}
		if len(r.BetsPerFront) != r.Fronts || stored != k*bets {
			t.Errorf("run %d: bets stored per front end %v, want %d front ends adding up to %d", i, r.BetsPerFront, r.Fronts, k*bets)
		}
		if r.BetsPerSec <= 0 || r.AckP50Ms <= 0 || r.AckP99Ms < r.AckP50Ms || r.AckMaxMs < r.AckP99Ms || r.AckSamples != k*3 {
			t.Errorf("run %d: throughput and ACK latency out of order: %+v", i, r)
		}
		if r.Commits < 1 || r.CommitMeanMs <= 0 || r.CommitP50Ms <= 0 || r.CommitP99Ms < r.CommitP50Ms || r.BetsPerCommit <= 0 {
			t.Errorf("run %d: commits %d, mean %v ms, p50 %v ms, p99 %v ms, %v bets each; want them measured", i,
				r.Commits, r.CommitMeanMs, r.CommitP50Ms, r.CommitP99Ms, r.BetsPerCommit)
		}
		if (r.Store == StorePostgres) != (r.OverFile > 0) {
			t.Errorf("run %d: %s over the file store %v, want a ratio for PostgreSQL only", i, r.Store, r.OverFile)
		}
		if r.Security != Secure || r.Window < 1 || r.DrawToLastWinnersMs <= 0 {
			t.Errorf("run %d: security %s, window %d, draw→winners %v ms", i, r.Security, r.Window, r.DrawToLastWinnersMs)
		}
	}
	c := rep.Config
	if c.Postgres == "" || c.Settings["fsync"] != "on" || c.Settings["synchronous_commit"] != "on" || c.Store != StoreTemp {
		t.Errorf("config %+v: want the version and a durable throwaway cluster", c)
	}
	left, err := os.ReadDir(opts.DataDir)
	if err != nil || len(left) != 1 || left[0].Name() != "keys" {
		t.Errorf("the runs left %v in the data dir (%v), want only the keys", left, err)
	}
	var js, table bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil || !json.Valid(js.Bytes()) {
		t.Errorf("JSON report: %v", err)
	}
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"commit p99 ms", "postgres", "3+2", "fsync=on"} {
		if !strings.Contains(table.String(), s) {
			t.Errorf("the table lacks %q:\n%s", s, table.String())
		}
	}
}

// TestDriveFailsOverToTheNextFrontEnd gives the agencies two front ends of
// which the first refuses connections: the agencies assigned to it move to
// the other, as bin/agency --server a,b does, and the run completes.
func TestDriveFailsOverToTheNextFrontEnd(t *testing.T) {
	const k = 3
	srv := startGnet(t, testConfig(t, k))
	port, err := freePort() // nobody listens there
	if err != nil {
		t.Fatal(err)
	}
	dead := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	sets, err := buildDatasets(datasetPlan{Distinct: 2, Bets: 30, Batch: 10, WinningNumber: 7574, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	res, err := drive(context.Background(), driveConfig{Addrs: []string{dead, srv.addr}, Agencies: k, Sets: sets,
		DialConcurrency: 2, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.PerFront, []int{0, k}) || res.Bets != k*30 {
		t.Errorf("agencies per front end %v, %d bets; want [0 %d], %d", res.PerFront, res.Bets, k, k*30)
	}
	if _, err := drive(context.Background(), driveConfig{Addrs: []string{dead}, Agencies: 1, Sets: sets, Timeout: time.Minute}); err == nil ||
		!strings.Contains(err.Error(), dead) {
		t.Errorf("every front end refusing: %v, want an error naming the address", err)
	}
}

func TestRouteStartsAtTheAgencysFrontEnd(t *testing.T) {
	d := newDriver(driveConfig{Addrs: []string{"a", "b", "c"}, Agencies: 1, Sets: []*dataset{{}}})
	for id, want := range map[uint32]string{1: "a,b,c", 2: "b,c,a", 3: "c,a,b", 4: "a,b,c"} {
		got, first := d.route(id)
		if strings.Join(got, ",") != want || got[0] != d.cfg.Addrs[first] {
			t.Errorf("agency %d tries %v (first %d), want %s", id, got, first, want)
		}
	}
	d = newDriver(driveConfig{Addr: "x", Agencies: 1, Sets: []*dataset{{}}})
	if got, first := d.route(7); !slices.Equal(got, []string{"x"}) || first != 0 {
		t.Errorf("one server: %v %d", got, first)
	}
}

const metricsPage = `# HELP lottery_commit_duration_seconds Time one group commit of the store took.
# TYPE lottery_commit_duration_seconds histogram
lottery_commit_duration_seconds_bucket{le="0.001"} 2
lottery_commit_duration_seconds_bucket{le="0.01"} 6
lottery_commit_duration_seconds_bucket{le="0.1"} 10
lottery_commit_duration_seconds_bucket{le="+Inf"} 10
lottery_commit_duration_seconds_sum 0.25
lottery_commit_duration_seconds_count 10
lottery_commit_bets_bucket{le="1"} 1
lottery_commit_bets_bucket{le="+Inf"} 4 1700000000000
lottery_commit_bets_sum 300
lottery_commit_bets_count 4
lottery_bets_stored_total 300
`

func TestHistogramQuantiles(t *testing.T) {
	h, err := parseHistogram([]byte(metricsPage), commitSecondsMetric)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.Counts, []float64{2, 6, 10, 10}) || h.Sum != 0.25 || h.Count != 10 || !math.IsInf(h.Bounds[3], 1) {
		t.Fatalf("parsed %+v", h)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-12 }
	for q, want := range map[float64]float64{0.1: 0.0005, 0.5: 0.001 + 0.009*3/4, 0.99: 0.01 + 0.09*3.9/4} {
		if got := h.quantile(q); !near(got, want) {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
	var sum histogram
	for range 2 {
		if err := sum.merge(h); err != nil {
			t.Fatal(err)
		}
	}
	if sum.Count != 20 || sum.Sum != 0.5 || !near(sum.quantile(0.5), h.quantile(0.5)) {
		t.Errorf("two merged: %+v", sum)
	}
	bets, err := parseHistogram([]byte(metricsPage), commitBetsMetric) // a timestamp after a value
	if err != nil {
		t.Fatal(err)
	}
	if got := bets.quantile(0.99); got != 1 {
		t.Errorf("a quantile in the +Inf bucket = %v, want the largest finite bound", got)
	}
	if err := sum.merge(bets); err == nil {
		t.Error("merged histograms of different buckets")
	}
	if (&histogram{}).quantile(0.5) != 0 {
		t.Error("an empty histogram has a quantile")
	}
	for name, page := range map[string]string{
		"missing":       "lottery_bets_stored_total 3\n",
		"no +Inf":       strings.ReplaceAll(metricsPage, `le="+Inf"} 10`, `le="1"} 10`),
		"count differs": strings.ReplaceAll(metricsPage, "seconds_count 10", "seconds_count 11"),
		"not a number":  strings.ReplaceAll(metricsPage, "seconds_sum 0.25", "seconds_sum x"),
	} {
		if _, err := parseHistogram([]byte(page), commitSecondsMetric); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestRunScaleOutRefusesBadOptions(t *testing.T) {
	good := func(t *testing.T) ScaleOutOptions {
		return ScaleOutOptions{Workload: Workload{Agencies: []int{2}, Bets: 10, Batch: 5, Distinct: 1},
			Setup: Setup{ServerBin: os.Args[0], DataDir: t.TempDir(), Repeat: 1, Timeout: time.Minute, Insecure: true},
			Store: StoreTemp, Fronts: []int{1, 2}}
	}
	for name, change := range map[string]func(*ScaleOutOptions){
		"no store":           func(o *ScaleOutOptions) { o.Store = "" },
		"not a postgres URL": func(o *ScaleOutOptions) { o.Store = "mysql://db/x" },
		"no front ends":      func(o *ScaleOutOptions) { o.Fronts = nil },
		"zero front ends":    func(o *ScaleOutOptions) { o.Fronts = []int{0} },
		"no agencies":        func(o *ScaleOutOptions) { o.Agencies = nil },
		"zero bets":          func(o *ScaleOutOptions) { o.Bets = 0 },
		"zero batch":         func(o *ScaleOutOptions) { o.Batch = 0 },
		"no data dir":        func(o *ScaleOutOptions) { o.DataDir = "" },
		"zero repeat":        func(o *ScaleOutOptions) { o.Repeat = 0 },
		"server binary gone": func(o *ScaleOutOptions) { o.ServerBin = "/nonexistent/eventserver" },
	} {
		t.Run(name, func(t *testing.T) {
			opts := good(t)
			change(&opts)
			if rep, err := RunScaleOut(t.Context(), opts); err == nil || rep != nil {
				t.Errorf("RunScaleOut accepted the options (report %v, error %v)", rep, err)
			}
		})
	}
	if got := redactStore("postgres://bench:secret@db.example:5433/lottery?sslmode=disable"); strings.Contains(got, "secret") ||
		got != "postgres://db.example:5433/lottery" {
		t.Errorf("the report names the store %q", got)
	}
}
