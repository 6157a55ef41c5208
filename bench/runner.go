package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/eventserver/probe"
	"github.com/tp0/loteria/frame"
)

// Options configure a bench invocation.
type Options struct {
	Workload
	Setup
	Impls []string // ImplGnet, ImplStdlib, in the order to run them; Agencies none runs only the end-to-end workloads

	SelfBin    string // this binary, re-executed as "serve-stdlib"
	AgencyBin  string // bin/agency, for the end-to-end workloads
	GendataBin string // bin/gendata, for the end-to-end workloads

	CompareInsecure  bool   // also run each server --insecure at each K
	CompareMetrics   bool   // also run gnet with --metrics-listen at each K
	CompareLogLevel  string // also run gnet at this log level at each K ("": no)
	Storm            bool   // after each run, restart the server and reconnect every agency at once
	StormConcurrency int    // connections being opened at once in a storm

	CourseReps int // repetitions of the course-shaped end-to-end run; 0: none
	BigBets    int // bets of each of the two agencies of the big end-to-end run; 0: none
	BigReps    int

	LoopbackBytes int64         // moved by each loopback test
	DiskBlock     int           // bytes per fsync in the disk test; 0 means the mean group commit observed
	DiskTime      time.Duration // how long the disk test runs
	SkipLimits    bool
}

// variant is one way of running a server: which, secured or not, with
// metrics or not, at the main runs' log level or another.
type variant struct {
	Impl     string
	Secure   bool
	Metrics  bool
	LogLevel string // the server's log level when it is not the main runs' ("" for those)
}

func (v variant) String() string {
	s := v.Impl
	if !v.Secure {
		s += " insecure"
	}
	if v.Metrics {
		s += " +metrics"
	}
	if v.LogLevel != "" {
		s += " at " + v.LogLevel
	}
	return s
}

func (v variant) security() string {
	if v.Secure {
		return Secure
	}
	return Insecure
}

// slug names the variant in a directory name.
func (v variant) slug() string { return strings.NewReplacer(" +", "-", " ", "-").Replace(v.String()) }

// variants lists the runs made at each K, in order: every server in the
// main mode, then gnet with metrics, gnet at the compared log level, then
// every server --insecure.
func (o *Options) variants() []variant {
	var out []variant
	for _, impl := range o.Impls {
		out = append(out, variant{Impl: impl, Secure: !o.Insecure})
	}
	if o.CompareMetrics && slices.Contains(o.Impls, ImplGnet) {
		out = append(out, variant{Impl: ImplGnet, Secure: !o.Insecure, Metrics: true})
	}
	if o.CompareLogLevel != "" && slices.Contains(o.Impls, ImplGnet) {
		out = append(out, variant{Impl: ImplGnet, Secure: !o.Insecure, LogLevel: o.CompareLogLevel})
	}
	if o.CompareInsecure && !o.Insecure {
		for _, impl := range o.Impls {
			out = append(out, variant{Impl: impl})
		}
	}
	return out
}

// rotate starts round r at the r-th variant, so that with --repeat no
// variant always runs first or right after the same other one: the machine
// (the disk still writing back the last run, the load it left) is not the
// same for the first run of a round as for the others.
func rotate(vs []variant, r int) []variant {
	r %= len(vs)
	return append(slices.Clone(vs[r:]), vs[:r]...)
}

// e2eSpecs lists the end-to-end workloads asked for.
func (o *Options) e2eSpecs() []e2eSpec {
	var out []e2eSpec
	if o.CourseReps > 0 {
		out = append(out, e2eSpec{Name: e2eCourse, Reps: o.CourseReps})
	}
	if o.BigBets > 0 {
		out = append(out, e2eSpec{Name: e2eBig, Sizes: []int{o.BigBets, o.BigBets}, Reps: max(o.BigReps, 1)})
	}
	return out
}

func (o *Options) check() error {
	if len(o.Impls) == 0 {
		return errors.New("no server to run (--impl)")
	}
	for _, impl := range o.Impls {
		switch impl {
		case ImplGnet:
			if o.ServerBin == "" {
				return errors.New("gnet needs --server-bin")
			}
			if _, err := os.Stat(o.ServerBin); err != nil {
				return fmt.Errorf("--server-bin: %w (run make build)", err)
			}
		case ImplStdlib:
			if o.SelfBin == "" {
				return errors.New("stdlib needs the bench binary's own path")
			}
		default:
			return fmt.Errorf("--impl: unknown server %q (want gnet or stdlib)", impl)
		}
	}
	if len(o.Agencies) == 0 && len(o.e2eSpecs()) == 0 {
		return errors.New("nothing to run: no --agencies and no end-to-end workload")
	}
	bins := []struct{ flag, path string }{}
	if !o.Insecure {
		bins = append(bins, struct{ flag, path string }{"--keygen-bin", o.KeygenBin})
	}
	if len(o.e2eSpecs()) > 0 {
		bins = append(bins, struct{ flag, path string }{"--agency-bin", o.AgencyBin}, struct{ flag, path string }{"--gendata-bin", o.GendataBin})
	}
	for _, b := range bins {
		if b.path == "" {
			if b.flag == "--keygen-bin" {
				continue // the keys must exist; loading them says so if not
			}
			return fmt.Errorf("%s is needed", b.flag)
		}
		if _, err := os.Stat(b.path); err != nil {
			return fmt.Errorf("%s: %w (run make build)", b.flag, err)
		}
	}
	if err := o.Workload.check(len(o.Agencies) > 0); err != nil {
		return err
	}
	if o.CourseReps < 0 || o.BigBets < 0 || o.BigReps < 0 {
		return errors.New("--course-reps, --big-bets and --big-reps must not be negative")
	}
	return o.Setup.check()
}

// hashingSample is how long each round of the chain microbenchmark runs.
const hashingSample = 200 * time.Millisecond

// Run measures every server variant at every number of agencies, then the
// end-to-end workloads, then the machine's limits, and returns the report.
// Any run that loses or corrupts a bet, delivers wrong winners or exits
// badly fails the whole invocation.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	pre, err := opts.prepare(opts.Agencies)
	if err != nil {
		return nil, err
	}
	maxK, ports := pre.MaxK, pre.Ports
	rep := &Report{
		Machine:  pre.Machine,
		Warnings: pre.Warnings,
		Config: RunConfig{Impls: opts.Impls, Agencies: opts.Agencies, Batch: opts.Batch, Distinct: opts.Distinct,
			WinningNumber: opts.WinningNumber, Seed: opts.Seed, ServerLog: pre.ServerLog, Security: pre.Security, Repeat: opts.Repeat,
			Sources: max(len(SourceAddrs(maxK, ports)), 1), Dials: opts.DialConcurrency},
	}
	rep.Runs = []RunResult{} // an empty list, not null, in the JSON
	if opts.Storm {
		rep.Config.StormDials = opts.StormConcurrency
	}

	var keys *keyring
	if !opts.Insecure {
		n := maxK
		for _, s := range opts.e2eSpecs() {
			n = max(n, s.agencies())
		}
		dir := keysDir(opts.DataDir)
		opts.logf("keys for %d agencies in %s (bin/keygen adds the missing ones)", n, dir)
		var took time.Duration
		if keys, took, err = provisionKeys(ctx, opts.KeygenBin, dir, n); err != nil {
			return rep, err
		}
		if took > time.Second {
			opts.logf("keygen took %v; the keys stay in %s for later invocations", took.Round(time.Millisecond), dir)
		}
	}

	chainNs := 0.0
	for _, k := range opts.Agencies {
		b := opts.betsPerAgency(k)
		sets, err := buildDatasets(datasetPlan{Distinct: min(opts.Distinct, k), Bets: b, Batch: opts.Batch,
			WinningNumber: opts.WinningNumber, Seed: opts.Seed})
		if err != nil {
			return rep, err
		}
		var runs []RunResult
		for round := range opts.Repeat {
			for _, v := range rotate(opts.variants(), round) {
				if opts.Repeat > 1 {
					opts.logf("%s K=%d, repetition %d of %d", v, k, round+1, opts.Repeat)
				}
				res, err := runOne(ctx, &opts, v, k, b, sets, SourceAddrs(k, ports), keys)
				if err != nil {
					return rep, fmt.Errorf("%s with %d agencies: %w", v, k, err)
				}
				runs = append(runs, res)
			}
		}
		rep.Runs = append(rep.Runs, medianRuns(runs)...)
		if chainNs == 0 {
			chainNs = chainCost(sets[0].sample, hashingSample)
		}
		if !opts.SkipLimits {
			// Right after the runs it is compared with, so a disk whose
			// speed drifts (a shared machine) drifts less in between.
			if err := measureDiskFor(&opts, rep, k); err != nil {
				return rep, err
			}
		}
	}

	for _, spec := range opts.e2eSpecs() {
		es, err := runE2E(ctx, &opts, spec, keys)
		if err != nil {
			return rep, err
		}
		rep.EndToEnd = append(rep.EndToEnd, es...)
	}

	if !opts.SkipLimits && len(rep.Runs) > 0 {
		opts.logf("measuring loopback throughput")
		if err := measureLimits(ctx, &opts, rep); err != nil {
			return rep, err
		}
	}
	rep.Ratios = computeRatios(rep.Runs, &rep.Limits)
	rep.Encryption = computeEncryption(rep.Runs)
	rep.Metrics = computeMetricsCost(rep.Runs)
	rep.Logging = computeLoggingCost(rep.Runs)
	rep.Hashing = hashingCost(rep.Runs, chainNs)
	rep.Targets = computeTargets(rep)
	rep.Machine.LoadAvgEnd = loadAvg()
	return rep, nil
}

// medianRuns keeps, of the repetitions of each variant, the run with the
// median bets/s (the lower of the middle two), noting every repetition's
// bets/s in it; variants keep their order.
func medianRuns(runs []RunResult) []RunResult {
	return medianOf(runs, func(r RunResult) variant { return r.variant() }, func(r RunResult) float64 { return r.BetsPerSec },
		func(r *RunResult, all []float64) { r.RepeatBetsPerSec = all })
}

// medianOf groups runs by key, in the order keys first appear, and keeps of
// each group the run with the median rate (the lower of the middle two),
// handing note every rate of the group when it has more than one.
func medianOf[R any, K comparable](runs []R, key func(R) K, rate func(R) float64, note func(*R, []float64)) []R {
	var order []K
	by := map[K][]R{}
	for _, r := range runs {
		k := key(r)
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], r)
	}
	out := make([]R, 0, len(order))
	for _, k := range order {
		rs := by[k]
		if len(rs) == 1 {
			out = append(out, rs[0])
			continue
		}
		all := make([]float64, len(rs))
		for i, r := range rs {
			all[i] = rate(r)
		}
		sorted := slices.Clone(rs)
		slices.SortStableFunc(sorted, func(a, b R) int { return cmpFloat(rate(a), rate(b)) })
		m := sorted[(len(sorted)-1)/2]
		note(&m, all)
		out = append(out, m)
	}
	return out
}

// measureDiskFor runs the append+fsync test with blocks the size of the
// mean group commit of the runs with k agencies (or --disk-block).
func measureDiskFor(opts *Options, rep *Report, k int) error {
	block := opts.DiskBlock
	if block <= 0 {
		block = meanGroup(rep.Runs, k)
	}
	opts.logf("measuring append+fsync of %d-byte blocks for %s", block, opts.DiskTime)
	d, err := measureDisk(opts.DataDir, block, opts.DiskTime, 1<<30)
	if err != nil {
		return err
	}
	rep.Limits.Disk = append(rep.Limits.Disk, DiskLimit{Agencies: k, BlockBytes: block, BytesPerSec: d.BytesPerSec, FsyncsPerSec: d.FsyncsPerSec})
	return nil
}

// fanOutMessage is the fan-out test's message: about a sealed WINNERS
// frame at 10,000 agencies (a commitment with a 14-hash proof, a few documents).
const fanOutMessage = 640

// fanOutFloor runs the fan-out test for k connections, or for as many as
// this process's open files allow (each costs two here) scaled up to k, with
// one writer per CPU as the event server has one event loop per CPU.
func fanOutFloor(ctx context.Context, k int) (*FanOutLimit, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("fan-out test: %w", err)
	}
	conns := min(k, int(min(lim.Cur, 1<<30)-FDMargin)/2)
	if conns < 1 {
		return nil, fmt.Errorf("fan-out test: an open files limit of %d leaves no connection", lim.Cur)
	}
	writers := runtime.GOMAXPROCS(0)
	took, err := measureFanOut(ctx, conns, fanOutMessage, writers)
	if err != nil {
		return nil, err
	}
	ms := took.Seconds() * 1e3
	floor := ms
	if conns < k {
		floor = ms * float64(k) / float64(conns)
	}
	return &FanOutLimit{Agencies: k, Connections: conns, MessageBytes: fanOutMessage, Writers: writers,
		TookMs: ms, FloorMs: floor}, nil
}

// measureLimits measures loopback throughput and derives the bets/s
// ceilings from it, from the disk tests and from the bytes per bet the
// runs observed.
func measureLimits(ctx context.Context, opts *Options, rep *Report) error {
	l := &rep.Limits
	var bets, wire, disk int64
	for _, r := range rep.Runs {
		bets += r.Bets
		wire += r.WireBytes
		disk += r.BetsCSVBytes
	}
	if bets == 0 || disk == 0 {
		return errors.New("limits: no run to take bytes per bet from")
	}
	l.WireBytesPerBet = float64(wire) / float64(bets)
	l.DiskBytesPerBet = float64(disk) / float64(bets)

	var err error
	maxK := slices.Max(opts.Agencies)
	l.LoopbackBytesMoved = opts.LoopbackBytes
	if l.LoopbackOneStreamBytesPerSec, err = measureLoopback(ctx, 1, opts.LoopbackBytes); err != nil {
		return err
	}
	l.LoopbackStreams = min(maxK, 64)
	l.LoopbackManyStreamBytesPerSec = l.LoopbackOneStreamBytesPerSec
	if l.LoopbackStreams > 1 {
		if l.LoopbackManyStreamBytesPerSec, err = measureLoopback(ctx, l.LoopbackStreams, opts.LoopbackBytes); err != nil {
			return err
		}
	}
	l.LoopbackBytesPerSec = max(l.LoopbackOneStreamBytesPerSec, l.LoopbackManyStreamBytesPerSec)
	l.LoopbackCeilingBetsPerSec = l.LoopbackBytesPerSec / l.WireBytesPerBet

	if l.FanOut, err = fanOutFloor(ctx, maxK); err != nil {
		return err
	}

	for i := range l.Disk {
		d := &l.Disk[i]
		d.CeilingBetsPerSec = min(l.LoopbackCeilingBetsPerSec, d.BytesPerSec/l.DiskBytesPerBet)
		if d.Agencies == maxK {
			l.DiskAppendFsyncBytesPerSec, l.DiskFsyncsPerSec, l.DiskBlockBytes = d.BytesPerSec, d.FsyncsPerSec, d.BlockBytes
			l.DiskCeilingBetsPerSec = d.BytesPerSec / l.DiskBytesPerBet
			l.CeilingBetsPerSec = d.CeilingBetsPerSec
		}
	}
	return nil
}

// defaultDiskBlock is the disk test's block when no run saw a group commit.
const defaultDiskBlock = 256 << 10

// meanGroup is the mean group commit, in bytes, of the main gnet run with k
// agencies (the main security mode, no metrics, the default log level), or
// of the first run with k agencies if gnet did not run.
func meanGroup(runs []RunResult, k int) int {
	block, sec := 0, mainSecurity(runs)
	for _, r := range runs {
		if r.Agencies != k || r.MeanGroupBytes <= 0 {
			continue
		}
		if r.Impl == ImplGnet && r.Security == sec && !r.Metrics && r.VariantLogLevel == "" {
			return int(r.MeanGroupBytes)
		}
		if block == 0 {
			block = int(r.MeanGroupBytes)
		}
	}
	if block == 0 {
		return defaultDiskBlock
	}
	return block
}

// runOne starts one server on a fresh data directory, drives k agencies
// with b bets each against it, stops it and checks what it stored; then,
// for a storm, starts it again on the same data and reconnects every agency
// at once.
func runOne(ctx context.Context, opts *Options, v variant, k, b int, sets []*dataset, sources []net.IP, keys *keyring) (RunResult, error) {
	dir, err := os.MkdirTemp(opts.DataDir, fmt.Sprintf("%s-k%d-", v.slug(), k))
	if err != nil {
		return RunResult{}, fmt.Errorf("data dir: %w", err)
	}
	dataDir := filepath.Join(dir, "data")
	var metricsAddr string
	if v.Metrics {
		port, err := freePort()
		if err != nil {
			return RunResult{}, err
		}
		metricsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	args := serverArgs(opts, v, k, dataDir, keys, metricsAddr)
	srv, err := startServer(ctx, v.Impl, opts, args, filepath.Join(dir, "server.log"))
	if err != nil {
		return RunResult{}, err
	}
	defer srv.kill()
	fail := func(err error) (RunResult, error) {
		srv.kill()
		return RunResult{}, fmt.Errorf("%w\n%s", err, srv.tail())
	}
	if n, err := readOpenFilesLimit(srv.pid); err != nil {
		return fail(err)
	} else if need := uint64(k) + FDMargin; n < need {
		return fail(fmt.Errorf("%w: the server's open files limit is %d, %d agencies need %d", ErrCapacity, n, k, need))
	}
	base, err := readMemory(srv.pid)
	if err != nil {
		return fail(err)
	}
	cpu0, err := readCPU(srv.pid)
	if err != nil {
		return fail(err)
	}

	var agencyKeys *keyring
	if v.Secure {
		agencyKeys = keys
	}
	var connected, waiting, end memory
	var cpuConnected, cpuWaiting, cpu1 time.Duration
	var scraped float64
	prog := &progress{phase: "connect"}
	total := int64(k) * int64(b)
	disp := startDisplay(opts.Log, opts.TTY, fmt.Sprintf("%-16s K=%d", v, k), k, total, prog)
	runCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	dres, err := drive(runCtx, driveConfig{
		Addr: srv.addr, Agencies: k, Sets: sets, Keys: agencyKeys, Sources: sources, DialConcurrency: opts.DialConcurrency,
		Timeout: opts.Timeout, Progress: prog,
		Connected: func() (err error) {
			if connected, err = readMemory(srv.pid); err != nil {
				return err
			}
			cpuConnected, err = readCPU(srv.pid)
			return err
		},
		Waiting: func() (err error) {
			if cpuWaiting, err = readCPU(srv.pid); err != nil { // the upload's end
				return err
			}
			// Agencies wait for the draw for as long as it takes: read the
			// server's memory once it has settled, not mid-burst.
			time.Sleep(waitingSettle)
			waiting, err = readMemory(srv.pid)
			return err
		},
		Delivered: func() error {
			var err error
			if end, err = readMemory(srv.pid); err != nil {
				return err
			}
			if cpu1, err = readCPU(srv.pid); err != nil {
				return err
			}
			if metricsAddr != "" {
				if scraped, err = scrapeMetric(runCtx, metricsAddr, betsStoredMetric); err != nil {
					return err
				}
				if scraped != float64(total) {
					return fmt.Errorf("%w: /metrics says %s %v, the agencies stored %d bets", ErrBrokenRun, betsStoredMetric, scraped, total)
				}
			}
			return nil
		},
	})
	prog.setPhase("done")
	disp.Stop()
	if err != nil {
		return fail(err)
	}
	if err := srv.stop(); err != nil {
		return fail(err)
	}
	st, err := checkStore(dataDir, wantFromSets(sets, k))
	if err != nil {
		return fail(err)
	}
	if dres.Upload <= 0 || dres.Bets == 0 {
		return fail(fmt.Errorf("%w: %d bets in %v", ErrBrokenRun, dres.Bets, dres.Upload))
	}

	var sres stormResult
	if opts.Storm && !v.Metrics && v.LogLevel == "" {
		if sres, err = reconnectStorm(ctx, opts, v, k, sets, sources, agencyKeys, args, dir, dres.Root); err != nil {
			return RunResult{}, err
		}
	}

	lat := summarize(dres.Latencies)
	hs := summarize(dres.Handshakes)
	upload := dres.Upload.Seconds()
	cpu := (cpu1 - cpu0).Seconds()
	logLevel := cmp.Or(v.LogLevel, opts.ServerLogLevel, DefaultLogLevel)
	res := RunResult{
		Impl: v.Impl, Agencies: k, BetsPerAgency: b, Batch: opts.Batch,
		BetsPerSec:              float64(dres.Bets) / upload,
		MBPerSec:                float64(dres.WireBytes) / upload / 1e6,
		AckP50Ms:                ms(lat.P50),
		AckP99Ms:                ms(lat.P99),
		AckMaxMs:                ms(lat.Max),
		DrawToLastWinnersMs:     ms(dres.DrawToLastWinners),
		ServerPeakRSSBytes:      end.Peak,
		RSSPerWaitingConnBytes:  (float64(waiting.RSS) - float64(base.RSS)) / float64(k),
		RSSPerIdleConnBytes:     (float64(connected.RSS) - float64(base.RSS)) / float64(k),
		CPUSecPerMillionBets:    cpu / (float64(dres.Bets) / 1e6),
		UploadCPUSecPerMBets:    (cpuWaiting - cpuConnected).Seconds() / (float64(dres.Bets) / 1e6),
		CPUMsPerConnection:      (cpuConnected - cpu0).Seconds() * 1e3 / float64(k),
		Security:                v.security(),
		Metrics:                 v.Metrics,
		LogLevel:                logLevel,
		VariantLogLevel:         v.LogLevel,
		Window:                  dres.Window,
		HandshakesPerSec:        float64(k) / dres.Connect.Seconds(),
		HandshakeP50Ms:          ms(hs.P50),
		HandshakeP99Ms:          ms(hs.P99),
		MetricsBetsStored:       scraped,
		PingsAnswered:           dres.Pings,
		Bets:                    dres.Bets,
		WireBytes:               dres.WireBytes,
		ConnectSec:              dres.Connect.Seconds(),
		UploadSec:               upload,
		AckSamples:              lat.Count,
		ServerBaseRSSBytes:      base.RSS,
		ServerConnectedRSSBytes: connected.RSS,
		ServerWaitingRSSBytes:   waiting.RSS,
		ServerCPUSec:            cpu,
		BetsCSVBytes:            st.CSVBytes,
		GroupCommits:            st.Commits,
	}
	if sres.Took > 0 {
		res.StormSec = sres.Took.Seconds()
		res.StormHandshakesPerSec = float64(k) / sres.Took.Seconds()
		res.StormHandshakeP99Ms = ms(summarize(sres.Handshakes).P99)
	}
	if st.BetCommits > 0 {
		res.MeanGroupBytes = float64(st.CSVBytes) / float64(st.BetCommits)
	}
	if opts.KeepData {
		opts.logf("kept %s", dir)
	} else if err := os.RemoveAll(dir); err != nil {
		return res, fmt.Errorf("remove %s: %w", dir, err)
	}
	settle()
	return res, nil
}

// settle leaves the machine as the next run should find it: what this run
// wrote or removed on disk flushed (or the next run's first fsyncs would
// wait for it), and the bench's own garbage from it collected.
func settle() {
	syscall.Sync()
	runtime.GC()
}

// serverArgs is the command line of a server under test, but for
// --listen: only what differs from its defaults for this run.
func serverArgs(opts *Options, v variant, k int, dataDir string, keys *keyring, metricsAddr string) []string {
	args := []string{"--agencies", strconv.Itoa(k), "--data-dir", dataDir}
	if v.Secure {
		args = append(args, "--keys", keys.Dir)
	} else {
		args = append(args, "--insecure")
	}
	if opts.WinningNumber != eventserver.DefaultWinningNumber {
		args = append(args, "--winning-number", strconv.Itoa(int(opts.WinningNumber)))
	}
	if level := cmp.Or(v.LogLevel, opts.ServerLogLevel); level != "" {
		args = append(args, "--log-level", level)
	}
	if metricsAddr != "" {
		args = append(args, "--metrics-listen", metricsAddr)
	}
	return args
}

// reconnectStorm starts the server of a finished run again on its data and
// reconnects its k agencies at once.
func reconnectStorm(ctx context.Context, opts *Options, v variant, k int, sets []*dataset, sources []net.IP, keys *keyring,
	args []string, dir string, root frame.Hash) (stormResult, error) {
	srv, err := startServer(ctx, v.Impl, opts, args, filepath.Join(dir, "server-restart.log"))
	if err != nil {
		return stormResult{}, fmt.Errorf("restart for the reconnect storm: %w", err)
	}
	defer srv.kill()
	opts.logf("%-16s K=%d reconnect storm: %d agencies at once after a restart (%d connecting at a time)",
		v, k, k, opts.StormConcurrency)
	stormCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	res, err := storm(stormCtx, stormConfig{Addr: srv.addr, Agencies: k, Sets: sets, Keys: keys, Sources: sources,
		Concurrency: opts.StormConcurrency, Timeout: opts.Timeout, Root: root})
	if err == nil {
		err = srv.stop()
	}
	if err != nil {
		srv.kill()
		return stormResult{}, fmt.Errorf("reconnect storm: %w\n%s", err, srv.tail())
	}
	return res, nil
}

// serverProc is a server under test running as a child process.
type serverProc struct {
	cmd     *exec.Cmd
	pid     int
	addr    string
	logPath string
	logFile *os.File
	exited  chan struct{}
	waitErr error
}

// serverCommand is the program and first arguments of impl's server.
func serverCommand(opts *Options, impl string) (string, []string) {
	if impl == ImplStdlib {
		return opts.SelfBin, []string{"serve-stdlib"}
	}
	return opts.ServerBin, nil
}

// startServer starts impl's server with args on a free loopback port and
// waits until it answers a PING (a plaintext PING, which a secured server
// answers too).
func startServer(ctx context.Context, impl string, opts *Options, args []string, logPath string) (*serverProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("server log: %w", err)
	}
	bin, first := serverCommand(opts, impl)
	cmd := exec.Command(bin, append(append(first, "--listen", addr), args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s server: %w", impl, err)
	}
	s := &serverProc{cmd: cmd, pid: cmd.Process.Pid, addr: addr, logPath: logPath, logFile: logFile, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	const startTimeout = time.Minute // recovery re-reads the store
	deadline := time.Now().Add(startTimeout)
	for {
		if err := probe.Ping(addr, 2*time.Second); err == nil {
			return s, nil
		} else if time.Now().After(deadline) {
			s.kill()
			return nil, fmt.Errorf("%s server did not answer on %s within %v: %w\n%s", impl, addr, startTimeout, err, s.tail())
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("%s server exited at start: %v\n%s", impl, s.waitErr, s.tail())
		case <-ctx.Done():
			s.kill()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePort asks the kernel for a loopback port nobody listens on.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// stop sends SIGTERM and waits for a clean exit: status 0 within a minute.
func (s *serverProc) stop() error {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop server: %w", err)
	}
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		s.kill()
		return fmt.Errorf("%w: server still running a minute after SIGTERM", ErrBrokenRun)
	}
	if s.waitErr != nil {
		return fmt.Errorf("%w: server exit after SIGTERM: %w", ErrBrokenRun, s.waitErr)
	}
	return nil
}

// kill ends the process if it still runs and waits for it.
func (s *serverProc) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// tail is the end of the server's log, for error messages.
func (s *serverProc) tail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return fmt.Sprintf("last lines of %s:\n%s", s.logPath, bytes.Join(lines, []byte("\n")))
}
