package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func smokeOptions(t *testing.T) Options {
	return Options{
		Impls:           []string{ImplStdlib},
		Agencies:        []int{6},
		Bets:            80,
		Batch:           30,
		Distinct:        64,
		WinningNumber:   7574,
		Seed:            1,
		SelfBin:         os.Args[0], // TestMain serves "serve-stdlib"
		DataDir:         t.TempDir(),
		ServerLogLevel:  "warn",
		DialConcurrency: 4,
		Timeout:         time.Minute,
		LoopbackBytes:   1 << 20,
		DiskTime:        20 * time.Millisecond,
	}
}

// TestRunAgainstAServerProcess runs the whole bench (process start, /proc
// sampling, SIGTERM and exit status, store check, limits) against the
// stdlib server in a child process.
func TestRunAgainstAServerProcess(t *testing.T) {
	opts := smokeOptions(t)
	rep, err := Run(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 1 {
		t.Fatalf("%d runs, want 1", len(rep.Runs))
	}
	r := rep.Runs[0]
	if r.Impl != ImplStdlib || r.Agencies != 6 || r.BetsPerAgency != 80 || r.Bets != 480 || r.AckSamples != 6*3 {
		t.Errorf("run %+v: want stdlib, 6 agencies × 80 bets in 3 batches", r)
	}
	if r.BetsPerSec <= 0 || r.MBPerSec <= 0 || r.AckP50Ms <= 0 || r.AckP99Ms < r.AckP50Ms || r.AckMaxMs < r.AckP99Ms {
		t.Errorf("throughput and latency out of order: %+v", r)
	}
	if r.ServerBaseRSSBytes == 0 || r.ServerPeakRSSBytes < r.ServerWaitingRSSBytes || r.DrawToLastWinnersMs <= 0 {
		t.Errorf("server samples: %+v", r)
	}
	if r.BetsCSVBytes <= 0 || r.GroupCommits < 1 || r.MeanGroupBytes <= 0 {
		t.Errorf("store stats: %d bytes, %d commits, mean group %v", r.BetsCSVBytes, r.GroupCommits, r.MeanGroupBytes)
	}
	l := rep.Limits
	if l.LoopbackBytesPerSec <= 0 || l.DiskAppendFsyncBytesPerSec <= 0 || l.CeilingBetsPerSec <= 0 ||
		l.LoopbackStreams != 6 || l.DiskBlockBytes != int(r.MeanGroupBytes) {
		t.Errorf("limits: %+v", l)
	}
	if want := float64(r.WireBytes) / float64(r.Bets); l.WireBytesPerBet != want {
		t.Errorf("wire bytes per bet %v, want %v", l.WireBytesPerBet, want)
	}
	if want := float64(r.BetsCSVBytes) / float64(r.Bets); l.DiskBytesPerBet != want {
		t.Errorf("disk bytes per bet %v, want %v", l.DiskBytesPerBet, want)
	}
	if len(rep.Ratios) != 1 || rep.Ratios[0].StdlibOverCeiling <= 0 {
		t.Errorf("ratios %+v, want stdlib/ceiling", rep.Ratios)
	}
	left, err := os.ReadDir(opts.DataDir)
	if err != nil || len(left) != 0 {
		t.Errorf("the run left %d entries in the data dir (%v)", len(left), err)
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
		"no agencies":    func(o *Options) { o.Agencies = nil },
		"zero agencies":  func(o *Options) { o.Agencies = []int{0} },
		"zero bets":      func(o *Options) { o.Bets = 0 },
		"zero batch":     func(o *Options) { o.Batch = 0 },
		"winning number": func(o *Options) { o.WinningNumber = 10000 },
		"no data dir":    func(o *Options) { o.DataDir = "" },
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
