package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
)

// Options configure a bench invocation.
type Options struct {
	Impls    []string // ImplGnet, ImplStdlib, in the order to run them
	Agencies []int    // K values; every impl runs at each
	Bets     int      // per agency
	// TotalBets, when positive, replaces Bets with TotalBets/K per agency so
	// every K moves the same work.
	TotalBets       int
	Batch           int // bets per BETS frame
	Distinct        int // distinct synthetic agencies (datasets) at most
	WinningNumber   uint16
	Seed            int64
	ServerBin       string // the gnet server binary
	SelfBin         string // this binary, re-executed as "serve-stdlib"
	DataDir         string // base directory for the runs' data directories
	KeepData        bool   // keep each run's data directory and server log
	ServerLogLevel  string
	DialConcurrency int
	Timeout         time.Duration // longest a run may take
	LoopbackBytes   int64         // moved by each loopback test
	DiskBlock       int           // bytes per fsync in the disk test; 0 means the mean group commit observed
	DiskTime        time.Duration // how long the disk test runs
	SkipLimits      bool
	Log             io.Writer // progress and notes; nil for none
	TTY             bool      // Log is a terminal: one updating line
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
	if len(o.Agencies) == 0 {
		return errors.New("--agencies: no value")
	}
	for _, k := range o.Agencies {
		if k < 1 {
			return fmt.Errorf("--agencies: %d is not a positive number", k)
		}
	}
	switch {
	case o.TotalBets <= 0 && o.Bets < 1:
		return fmt.Errorf("--bets must be at least 1, got %d", o.Bets)
	case o.Batch < 1 || o.Batch > 0xFFFF:
		return fmt.Errorf("--batch must be from 1 to 65535 bets, got %d", o.Batch)
	case o.Distinct < 1:
		return fmt.Errorf("--distinct must be at least 1, got %d", o.Distinct)
	case o.WinningNumber > frame.MaxNumber:
		return fmt.Errorf("--winning-number must be from 0 to %d, got %d", frame.MaxNumber, o.WinningNumber)
	case o.DataDir == "":
		return errors.New("--data-dir must not be empty")
	}
	return nil
}

// betsPerAgency is B for a run with k agencies.
func (o *Options) betsPerAgency(k int) int {
	if o.TotalBets > 0 {
		return max(o.TotalBets/k, 1)
	}
	return o.Bets
}

func (o *Options) logf(format string, a ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", a...)
	}
}

// Run measures every impl at every number of agencies, then the machine's
// limits, and returns the report. Any run that loses or corrupts a bet,
// delivers wrong winners or exits badly fails the whole invocation.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	lim, err := RaiseFileLimit()
	if err != nil {
		return nil, err
	}
	ports, err := ReadPortRange()
	if err != nil {
		return nil, err
	}
	maxK := slices.Max(opts.Agencies)
	if err := CheckCapacity(maxK, lim, ports); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	rep := &Report{
		Machine: describeMachine(opts.DataDir),
		Config: RunConfig{Impls: opts.Impls, Agencies: opts.Agencies, Batch: opts.Batch, Distinct: opts.Distinct,
			WinningNumber: opts.WinningNumber, Seed: opts.Seed, ServerLog: opts.ServerLogLevel,
			Sources: max(len(SourceAddrs(maxK, ports)), 1)},
	}
	rep.Machine.Started = time.Now().UTC().Format(time.RFC3339)
	rep.Machine.OpenFiles = lim
	rep.Machine.PortRange = [2]int{ports.Low, ports.High}
	opts.logf("open files: soft %d at start (Go raises it at start), now %d, hard %d; ephemeral ports %d-%d (%d per source address)",
		lim.SoftBefore, lim.Soft, lim.Hard, ports.Low, ports.High, ports.Size())
	if fs := rep.Machine.DataDirFS; fs == "tmpfs" {
		rep.Warnings = append(rep.Warnings, "the data directory is on tmpfs: fsync costs nothing there, so durability is not measured")
	}
	if la := rep.Machine.LoadAvgStart; la > 0.5*float64(rep.Machine.CPUs) {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("load average %.1f on %d CPUs at start: the machine was busy, numbers are not reference quality",
			la, rep.Machine.CPUs))
	}

	for _, k := range opts.Agencies {
		b := opts.betsPerAgency(k)
		sets, err := buildDatasets(datasetPlan{Distinct: min(opts.Distinct, k), Bets: b, Batch: opts.Batch,
			WinningNumber: opts.WinningNumber, Seed: opts.Seed})
		if err != nil {
			return rep, err
		}
		for _, impl := range opts.Impls {
			res, err := runOne(ctx, &opts, impl, k, b, sets, SourceAddrs(k, ports))
			if err != nil {
				return rep, fmt.Errorf("%s with %d agencies: %w", impl, k, err)
			}
			rep.Runs = append(rep.Runs, res)
		}
		if !opts.SkipLimits {
			// Right after the runs it is compared with, so a disk whose
			// speed drifts (a shared machine) drifts less in between.
			if err := measureDiskFor(&opts, rep, k); err != nil {
				return rep, err
			}
		}
	}

	if !opts.SkipLimits {
		opts.logf("measuring loopback throughput")
		if err := measureLimits(ctx, &opts, rep); err != nil {
			return rep, err
		}
	}
	rep.Ratios = computeRatios(rep.Runs, &rep.Limits)
	rep.Machine.LoadAvgEnd = loadAvg()
	return rep, nil
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

// meanGroup is the mean group commit, in bytes, of the gnet run with k
// agencies (or of another run with k agencies if gnet did not run).
func meanGroup(runs []RunResult, k int) int {
	block := 0
	for _, r := range runs {
		if r.Agencies == k && r.MeanGroupBytes > 0 && (block == 0 || r.Impl == ImplGnet) {
			block = int(r.MeanGroupBytes)
		}
	}
	if block == 0 {
		return defaultDiskBlock
	}
	return block
}

// runOne starts one server on a fresh data directory, drives k agencies
// with b bets each against it, stops it and checks what it stored.
func runOne(ctx context.Context, opts *Options, impl string, k, b int, sets []*dataset, sources []net.IP) (RunResult, error) {
	dir, err := os.MkdirTemp(opts.DataDir, fmt.Sprintf("%s-k%d-", impl, k))
	if err != nil {
		return RunResult{}, fmt.Errorf("data dir: %w", err)
	}
	dataDir := filepath.Join(dir, "data")
	srv, err := startServer(ctx, opts, impl, k, dataDir, filepath.Join(dir, "server.log"))
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

	var connected, waiting, end memory
	var cpu1 time.Duration
	prog := &progress{phase: "connect"}
	total := int64(k) * int64(b)
	disp := startDisplay(opts.Log, opts.TTY, fmt.Sprintf("%-6s K=%d", impl, k), k, total, prog)
	runCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	dres, err := drive(runCtx, driveConfig{
		Addr: srv.addr, Agencies: k, Sets: sets, Sources: sources, DialConcurrency: opts.DialConcurrency,
		Timeout: opts.Timeout, Progress: prog,
		Connected: func() (err error) { connected, err = readMemory(srv.pid); return err },
		Waiting:   func() (err error) { waiting, err = readMemory(srv.pid); return err },
		Delivered: func() error {
			var err error
			if end, err = readMemory(srv.pid); err != nil {
				return err
			}
			cpu1, err = readCPU(srv.pid)
			return err
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
	st, err := checkStore(dataDir, k, b)
	if err != nil {
		return fail(err)
	}
	if dres.Upload <= 0 || dres.Bets == 0 {
		return fail(fmt.Errorf("%w: %d bets in %v", ErrBrokenRun, dres.Bets, dres.Upload))
	}
	lat := summarize(dres.Latencies)
	upload := dres.Upload.Seconds()
	cpu := (cpu1 - cpu0).Seconds()
	res := RunResult{
		Impl: impl, Agencies: k, BetsPerAgency: b, Batch: opts.Batch,
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
	if st.BetCommits > 0 {
		res.MeanGroupBytes = float64(st.CSVBytes) / float64(st.BetCommits)
	}
	if opts.KeepData {
		opts.logf("kept %s", dir)
	} else if err := os.RemoveAll(dir); err != nil {
		return res, fmt.Errorf("remove %s: %w", dir, err)
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

// serverArgs is the command line of impl's server.
func serverArgs(opts *Options, impl, addr string, k int, dataDir string) (string, []string) {
	args := []string{
		"--listen", addr,
		"--agencies", strconv.Itoa(k),
		"--data-dir", dataDir,
		"--max-conns", strconv.Itoa(k + FDMargin),
		"--winning-number", strconv.Itoa(int(opts.WinningNumber)),
		"--log-level", opts.ServerLogLevel,
		"--read-timeout", opts.Timeout.String(),
		"--shutdown-grace", "10s",
	}
	if impl == ImplStdlib {
		return opts.SelfBin, append([]string{"serve-stdlib"}, args...)
	}
	return opts.ServerBin, args
}

// startServer starts impl's server on a free loopback port and waits until
// it answers a PING.
func startServer(ctx context.Context, opts *Options, impl string, k int, dataDir, logPath string) (*serverProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("server log: %w", err)
	}
	bin, args := serverArgs(opts, impl, addr, k, dataDir)
	cmd := exec.Command(bin, args...)
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
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := eventserver.Ping(addr, 2*time.Second); err == nil {
			return s, nil
		} else if time.Now().After(deadline) {
			s.kill()
			return nil, fmt.Errorf("%s server did not answer on %s within 20s: %w\n%s", impl, addr, err, s.tail())
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

// ping checks that a server at addr answers PING with the same PONG.

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
