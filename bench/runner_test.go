package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/internal/proctest"
)

func smokeOptions(t *testing.T) Options {
	return Options{
		Workload:         Workload{Agencies: []int{6}, Bets: 80, Batch: 30, Distinct: 64, WinningNumber: 7574, Seed: 1},
		Setup:            Setup{DataDir: t.TempDir(), DialConcurrency: 4, Repeat: 1, Timeout: time.Minute},
		Impls:            []string{ImplStdlib},
		SelfBin:          os.Args[0], // TestMain serves "serve-stdlib"
		Storm:            true,
		StormConcurrency: 4,
		LoopbackBytes:    1 << 20,
		DiskTime:         20 * time.Millisecond,
	}
}

// provideKeys puts the shared test keys where an invocation without
// keygen looks for them.
func provideKeys(t *testing.T, dataDir string) {
	t.Helper()
	k := testKeys(t)
	if err := os.Symlink(k.Dir, keysDir(dataDir)); err != nil {
		t.Fatal(err)
	}
}

// TestRunAgainstAServerProcess runs the whole bench (process start, /proc
// sampling, SIGTERM and exit status, store check, storm, limits) against the
// stdlib server in a child process, secured and --insecure.
func TestRunAgainstAServerProcess(t *testing.T) {
	opts := smokeOptions(t)
	opts.CompareInsecure = true
	opts.Repeat = 2
	provideKeys(t, opts.DataDir)
	rep, err := Run(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 2 {
		t.Fatalf("%d runs, want 2 (secure, insecure; repetitions folded)", len(rep.Runs))
	}
	for i, sec := range []string{Secure, Insecure} {
		r := rep.Runs[i]
		if r.Impl != ImplStdlib || r.Security != sec || r.Agencies != 6 || r.BetsPerAgency != 80 || r.Bets != 480 || r.AckSamples != 6*3 {
			t.Errorf("run %d %+v: want stdlib %s, 6 agencies × 80 bets in 3 batches", i, r, sec)
		}
		if len(r.RepeatBetsPerSec) != 2 || r.BetsPerSec != min(r.RepeatBetsPerSec[0], r.RepeatBetsPerSec[1]) {
			t.Errorf("run %d: repetitions %v, shown %v; want 2 and the lower median", i, r.RepeatBetsPerSec, r.BetsPerSec)
		}
		if r.BetsPerSec <= 0 || r.MBPerSec <= 0 || r.AckP50Ms <= 0 || r.AckP99Ms < r.AckP50Ms || r.AckMaxMs < r.AckP99Ms {
			t.Errorf("throughput and latency out of order: %+v", r)
		}
		if r.Window != eventserver.DefaultWindow || r.LogLevel != DefaultLogLevel || r.HandshakesPerSec <= 0 || r.HandshakeP99Ms < r.HandshakeP50Ms {
			t.Errorf("run %d: window %d, log %q, %v handshakes/s; want the defaults and a rate", i, r.Window, r.LogLevel, r.HandshakesPerSec)
		}
		if r.StormSec <= 0 || r.StormHandshakesPerSec <= 0 {
			t.Errorf("run %d: no reconnect storm measured: %v s", i, r.StormSec)
		}
		if r.ServerBaseRSSBytes == 0 || r.ServerPeakRSSBytes < r.ServerWaitingRSSBytes || r.DrawToLastWinnersMs <= 0 {
			t.Errorf("server samples: %+v", r)
		}
		if r.BetsCSVBytes <= 0 || r.GroupCommits < 1 || r.MeanGroupBytes <= 0 {
			t.Errorf("store stats: %d bytes, %d commits, mean group %v", r.BetsCSVBytes, r.GroupCommits, r.MeanGroupBytes)
		}
	}
	l := rep.Limits
	if l.LoopbackBytesPerSec <= 0 || l.DiskAppendFsyncBytesPerSec <= 0 || l.CeilingBetsPerSec <= 0 || l.LoopbackStreams != 6 {
		t.Errorf("limits: %+v", l)
	}
	if len(rep.Ratios) != 1 || rep.Ratios[0].StdlibOverCeiling <= 0 || rep.Ratios[0].Security != Secure {
		t.Errorf("ratios %+v, want stdlib/ceiling of the secured run", rep.Ratios)
	}
	if len(rep.Encryption) != 1 || rep.Encryption[0].Ratio <= 0 {
		t.Errorf("encryption %+v, want one secured/insecure comparison", rep.Encryption)
	}
	if h := rep.Hashing; h == nil || h.ChainNsPerBet <= 0 || h.Share <= 0 {
		t.Errorf("hashing %+v, want an estimate", h)
	}
	left, err := os.ReadDir(opts.DataDir)
	if err != nil || len(left) != 1 || left[0].Name() != "keys" {
		t.Errorf("the run left %v in the data dir (%v), want only the keys", left, err)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil || !json.Valid(buf.Bytes()) {
		t.Errorf("JSON report: %v", err)
	}
}

func TestRunRefusesBadOptions(t *testing.T) {
	for name, change := range map[string]func(*Options){
		"no impl":      func(o *Options) { o.Impls = nil },
		"unknown impl": func(o *Options) { o.Impls = []string{"nginx"} },
		"gnet binary gone": func(o *Options) {
			o.Impls = []string{ImplGnet}
			o.ServerBin = "/nonexistent/eventserver"
		},
		"nothing to run":   func(o *Options) { o.Agencies = nil },
		"zero agencies":    func(o *Options) { o.Agencies = []int{0} },
		"zero bets":        func(o *Options) { o.Bets = 0 },
		"zero batch":       func(o *Options) { o.Batch = 0 },
		"winning number":   func(o *Options) { o.WinningNumber = 10000 },
		"no data dir":      func(o *Options) { o.DataDir = "" },
		"zero repeat":      func(o *Options) { o.Repeat = 0 },
		"keygen gone":      func(o *Options) { o.KeygenBin = "/nonexistent/keygen" },
		"course, no agent": func(o *Options) { o.CourseReps = 1 },
		"no keys at all":   func(o *Options) {}, // secured, no keygen, no key files
	} {
		t.Run(name, func(t *testing.T) {
			opts := smokeOptions(t)
			change(&opts)
			if _, err := Run(t.Context(), opts); err == nil {
				t.Error("Run accepted the options")
			}
		})
	}
}

func TestRunReportsAServerThatDiesAtStart(t *testing.T) {
	opts := smokeOptions(t)
	opts.Impls = []string{ImplGnet}
	opts.ServerBin = "/bin/false"
	opts.Insecure = true
	_, err := Run(t.Context(), opts)
	if err == nil || !strings.Contains(err.Error(), "exited at start") {
		t.Fatalf("Run with a server that exits at once = %v, want 'exited at start'", err)
	}
}

func TestRunRefusesMoreAgenciesThanFiles(t *testing.T) {
	lim, err := RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	opts := smokeOptions(t)
	// Beyond the files (or, with an unlimited file limit, the ports) available;
	// the check comes before anything is generated.
	opts.Agencies = []int{int(min(lim.Soft, 1<<40))}
	if _, err := Run(t.Context(), opts); !errors.Is(err, ErrCapacity) {
		t.Fatalf("K = the open files limit: %v, want ErrCapacity", err)
	}
}

func TestVariantsInOrder(t *testing.T) {
	o := Options{Impls: []string{ImplGnet, ImplStdlib}, CompareInsecure: true, CompareMetrics: true, CompareLogLevel: "warn"}
	var got []string
	for _, v := range o.variants() {
		got = append(got, v.String())
	}
	if want := "gnet,stdlib,gnet +metrics,gnet at warn,gnet insecure,stdlib insecure"; strings.Join(got, ",") != want {
		t.Errorf("variants %q, want %q", strings.Join(got, ","), want)
	}
	o.Insecure = true // everything plaintext: nothing to compare with
	got = nil
	for _, v := range o.variants() {
		got = append(got, v.slug())
	}
	if want := "gnet-insecure,stdlib-insecure,gnet-insecure-metrics,gnet-insecure-at-warn"; strings.Join(got, ",") != want {
		t.Errorf("insecure variants %q, want %q", strings.Join(got, ","), want)
	}
}

// smokeBins are the real binaries, built once for the smoke test.
var smokeBins = proctest.NewBinaries(
	"github.com/tp0/loteria/eventserver/cmd/eventserver",
	"github.com/tp0/loteria/agency/cmd/agency",
	"github.com/tp0/loteria/agency/cmd/gendata",
	"github.com/tp0/loteria/secure/cmd/keygen",
	"github.com/tp0/loteria/bench/cmd/bench")

func buildBinaries(t *testing.T) string { return smokeBins.Dir(t) }

// TestSmokeWithTheRealBinaries is make bench-smoke with freshly built
// binaries: both servers secured, keys from keygen, the course-shaped run
// with real agencies, every check; exit 0 and a complete report.
func TestSmokeWithTheRealBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries")
	}
	bins := buildBinaries(t)
	out := t.TempDir()
	bin := func(name string) string { return filepath.Join(bins, name) }
	cmd := exec.Command(bin("bench"), "--agencies", "8", "--bets", "60", "--batch", "25", "--course-reps", "1",
		"--compare-insecure", "--compare-metrics", "--compare-log-level", "warn", "--loopback-bytes", "1048576", "--disk-time", "20ms", "--quiet",
		"--server-bin", bin("eventserver"), "--agency-bin", bin("agency"), "--keygen-bin", bin("keygen"),
		"--gendata-bin", bin("gendata"), "--data-dir", filepath.Join(out, "tmp"), "--json", filepath.Join(out, "smoke.json"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "smoke.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rep.Runs {
		got = append(got, r.variant().String())
		if r.Bets != 8*60 || r.Window < 1 || r.HandshakesPerSec <= 0 {
			t.Errorf("%s: %d bets, window %d, %v handshakes/s", r.variant(), r.Bets, r.Window, r.HandshakesPerSec)
		}
		if r.Metrics != (r.MetricsBetsStored == 8*60) {
			t.Errorf("%s: scraped %v bets stored", r.variant(), r.MetricsBetsStored)
		}
		if want := map[bool]string{false: DefaultLogLevel, true: "warn"}[r.VariantLogLevel != ""]; r.LogLevel != want {
			t.Errorf("%s: server log level %q, want %q", r.variant(), r.LogLevel, want)
		}
	}
	if want := "gnet,stdlib,gnet +metrics,gnet at warn,gnet insecure,stdlib insecure"; strings.Join(got, ",") != want {
		t.Errorf("runs %q, want %q", strings.Join(got, ","), want)
	}
	if len(rep.EndToEnd) != 2 {
		t.Fatalf("end to end %+v, want the course run against both servers", rep.EndToEnd)
	}
	for _, e := range rep.EndToEnd {
		if e.Name != e2eCourse || e.Agencies != 5 || e.Bets != 78697 || e.Reps != 1 || e.MedianSec <= 0 || e.Security != Secure {
			t.Errorf("end to end %+v, want the course's 5 agencies and 78,697 bets, secured", e)
		}
	}
	if len(rep.Encryption) != 2 || len(rep.Metrics) != 1 || len(rep.Logging) != 1 || len(rep.Targets) == 0 {
		t.Errorf("comparisons: encryption %d, metrics %d, logging %d, targets %d", len(rep.Encryption), len(rep.Metrics),
			len(rep.Logging), len(rep.Targets))
	}
	if h := rep.Hashing; h == nil || h.ChainNsPerBet <= 0 {
		t.Errorf("hashing %+v, want an estimate", h)
	}
	if !strings.Contains(stdout.String(), "end to end") || !strings.Contains(stdout.String(), "targets:") {
		t.Errorf("the table lacks the end-to-end runs or the targets:\n%s", stdout.String())
	}
}

// With --repeat every variant takes each place in the order in turn.
func TestRotateVariants(t *testing.T) {
	opts := Options{Impls: []string{ImplGnet, ImplStdlib}, CompareInsecure: true, CompareMetrics: true}
	vs := opts.variants()
	for r := range 2 * len(vs) {
		got := rotate(vs, r)
		if len(got) != len(vs) || got[0] != vs[r%len(vs)] {
			t.Fatalf("round %d starts with %v, want %v", r, got[0], vs[r%len(vs)])
		}
		for i := range got {
			if got[i] != vs[(r+i)%len(vs)] {
				t.Errorf("round %d: place %d holds %v, want %v", r, i, got[i], vs[(r+i)%len(vs)])
			}
		}
	}
}

// The disk test's block must be the mean group commit of the main gnet run
// (main security mode, no metrics, main log level), as meanGroup's comment
// and the README say. Runs are in the order Run appends them: variants()
// puts the --compare-insecure runs last.
func TestMeanGroupIsTheMainGnetRuns(t *testing.T) {
	o := Options{Impls: []string{ImplGnet, ImplStdlib}, CompareInsecure: true, CompareMetrics: true, CompareLogLevel: "warn"}
	group := map[variant]float64{}
	var runs []RunResult
	for i, v := range o.variants() {
		r := RunResult{Impl: v.Impl, Security: v.security(), Metrics: v.Metrics, VariantLogLevel: v.LogLevel, Agencies: 2000,
			MeanGroupBytes: float64(1_000_000 + 100_000*i)}
		group[v] = r.MeanGroupBytes
		runs = append(runs, r)
	}
	want := int(group[variant{Impl: ImplGnet, Secure: true}])
	if got := meanGroup(runs, 2000); got != want {
		t.Errorf("meanGroup = %d bytes, want %d (the main, secured gnet run's); the gnet --insecure run's is %d",
			got, want, int(group[variant{Impl: ImplGnet}]))
	}
}

// runOne samples "RSS per waiting connection" waitingSettle after the
// upload, on the premise that the server has by then given the burst's
// memory back (eventserver.Server.releaseMemory: runtime.GC and
// debug.FreeOSMemory once the store has been idle for a second). Both
// servers run in this process here, so a forced collection between the
// end of the upload and the sample is the server's release.
func TestBothServersGiveMemoryBackBeforeTheWaitingSample(t *testing.T) {
	const k, bets = 8, 20000
	sets, err := buildDatasets(datasetPlan{Distinct: 2, Bets: bets, Batch: 50, WinningNumber: 7574, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range starters {
		t.Run(st.impl, func(t *testing.T) {
			srv := st.start(t, testConfig(t, k))
			var before, after runtime.MemStats
			_, err := drive(t.Context(), driveConfig{Addr: srv.addr, Agencies: k, Sets: sets, DialConcurrency: k, Timeout: time.Minute,
				Connected: func() error { runtime.ReadMemStats(&before); return nil },
				Waiting: func() error {
					time.Sleep(waitingSettle) // as runOne does before readMemory
					runtime.ReadMemStats(&after)
					return nil
				}})
			if err != nil {
				t.Fatal(err)
			}
			if n := after.NumForcedGC - before.NumForcedGC; n == 0 {
				t.Errorf("%s: no forced collection between the upload's start and the waiting RSS sample (%v after its end): the burst's memory is still counted per waiting connection",
					st.impl, waitingSettle)
			}
		})
	}
}
