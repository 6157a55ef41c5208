// Command bench measures the gnet event server and a goroutine-per-connection
// baseline with thousands of concurrent agencies on loopback, both at their
// defaults (secured, default log level and window), next to the machine's
// own limits; it also times real bin/agency processes end to end, and
// checks every run's result before reporting it.
//
//	bench [flags]                 run the benchmark (see --help)
//	bench --store temp|URL [flags] the file store against PostgreSQL behind one and two front ends
//	bench serve-stdlib [flags]    run the baseline server (started by bench itself)
//
// Exit status: 0 on success, 1 when a run fails or is wrong, 2 for bad
// flags or a workload the machine cannot hold.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/tp0/loteria/bench"
	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "serve-stdlib" {
		os.Exit(bench.ServeStdlib(args[1:], os.Stdout, os.Stderr, sigs))
	}
	os.Exit(runBench(args, os.Stdout, os.Stderr, sigs))
}

// runBench is the benchmark; the first signal on sigs stops it (the
// servers it started are killed).
func runBench(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	agencies := fs.String("agencies", "2000", "concurrent agencies (connections); a comma list runs each, e.g. 10,100,1000; "+
		"the word none runs only the end-to-end workloads")
	bets := fs.Int("bets", 1000, "bets per agency")
	totalBets := fs.Int("total-bets", 0, "if set, bets per agency is this divided by the agencies, so every K moves the same bets")
	batch := fs.Int("batch", 100, "bets per BETS frame")
	impls := fs.String("impl", "gnet,stdlib", "servers to measure, in order: gnet, stdlib")
	insecure := fs.Bool("insecure", false, "run the servers --insecure and the agencies in plaintext (default: secured, with keys)")
	compareInsecure := fs.Bool("compare-insecure", false, "also run every server --insecure at each K, to measure what encryption costs")
	compareMetrics := fs.Bool("compare-metrics", false, "also run gnet with --metrics-listen at each K, and check /metrics at the end")
	compareLog := fs.String("compare-log-level", "", "also run gnet at this log level (e.g. warn) at each K, to measure what its default level's logging costs")
	stormOn := fs.Bool("storm", true, "after each run, restart the server on its data and reconnect every agency at once")
	stormConc := fs.Int("storm-concurrency", 512, "connections opened at once in a reconnect storm (the server admits 1024 before HELLO by default)")
	repeat := fs.Int("repeat", 1, "runs of each server at each K, taking turns; the median by bets/s is reported, and each comparison's lowest and highest per-round ratio")
	courseReps := fs.Int("course-reps", 0, "repetitions of the course-shaped end-to-end run (5 real bin/agency processes); 0: none")
	bigBets := fs.Int("big-bets", 0, "bets of each agency of the two-agency end-to-end run (e.g. 2000000); 0: none")
	bigReps := fs.Int("big-reps", 1, "repetitions of the two-agency end-to-end run")
	jsonOut := fs.String("json", "", "write the report as JSON to this file")
	tableOut := fs.String("table", "", "also write the table to this file")
	svgOut := fs.String("svg", "", "write a chart (SVG) of throughput, memory per connection, draw latency and reconnect storm vs agencies")
	serverBin := fs.String("server-bin", "bin/eventserver", "the gnet event server binary")
	agencyBin := fs.String("agency-bin", "bin/agency", "the agency binary, for the end-to-end runs")
	keygenBin := fs.String("keygen-bin", "bin/keygen", "the key generator; empty: the keys must already be in DATA_DIR/keys")
	gendataBin := fs.String("gendata-bin", "bin/gendata", "the synthetic data generator, for the end-to-end runs")
	dataDir := fs.String("data-dir", filepath.Join("bench", "results", "tmp"), "base directory for each run's fresh data directory, "+
		"the keys and the end-to-end files (must be a real disk for fsync to count)")
	keep := fs.Bool("keep-data", false, "keep each run's data directory and logs")
	logLevel := fs.String("server-log-level", "", "log level of the servers under test (default: theirs, info); their logs go to the run directory")
	distinct := fs.Int("distinct", 64, "distinct synthetic agencies generated; agencies beyond share their bets")
	seed := fs.Int64("seed", 1, "seed of the synthetic bets")
	winning := fs.Int("winning-number", eventserver.DefaultWinningNumber, "the draw's winning number")
	dialConc := fs.Int("dial-concurrency", 128, "connections opened at once")
	timeout := fs.Duration("timeout", 10*time.Minute, "longest a single run may take")
	loopback := fs.Int64("loopback-bytes", 512<<20, "bytes moved by each loopback throughput test")
	diskBlock := fs.Int("disk-block", 0, "bytes appended per fsync in the disk test (default: the mean group commit the runs saw)")
	diskTime := fs.Duration("disk-time", 2*time.Second, "how long the disk test runs")
	skipLimits := fs.Bool("skip-limits", false, "do not measure loopback and disk limits")
	quiet := fs.Bool("quiet", false, "no progress display")
	store := fs.String("store", "", "instead: gnet front ends sharing PostgreSQL next to the file store at each K; temp starts a "+
		"throwaway cluster (fsync on), postgres://... names a server where bench may CREATE DATABASE (a fresh one per run)")
	fronts := fs.String("fronts", "1,2", "with --store: front ends sharing the database, a comma list runs each")
	fileStore := fs.Bool("file-store", true, "with --store: also run one front end on the file store at each K, to compare with")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: bench [flags]\n"+
			"Starts each server as a child process on 127.0.0.1 with a fresh data directory, at its defaults (secured with\n"+
			"keys bin/keygen writes, default log level and window), drives the agencies, checks the stored bets and the\n"+
			"winners, restarts the server for a reconnect storm, and prints a table (--json, --svg for files). With\n"+
			"--course-reps or --big-bets it also times real bin/agency processes end to end. With --store it compares\n"+
			"the file store with PostgreSQL behind --fronts front ends instead, at each K.\n"+
			"(bench serve-stdlib [flags] runs the baseline server; bench starts it itself.)\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var ks []int
	var err error
	if *agencies != "none" {
		ks, err = parseInts(*agencies)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: --agencies: %v\n", err)
		return 2
	}
	if *winning < 0 || *winning > frame.MaxNumber {
		fmt.Fprintf(stderr, "bench: --winning-number must be from 0 to %d, got %d\n", frame.MaxNumber, *winning)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "bench: find own binary: %v\n", err)
		return 1
	}
	work := bench.Workload{Agencies: ks, Bets: *bets, TotalBets: *totalBets, Batch: *batch, Distinct: *distinct,
		WinningNumber: uint16(*winning), Seed: *seed}
	setup := bench.Setup{ServerBin: *serverBin, KeygenBin: *keygenBin, DataDir: *dataDir, KeepData: *keep,
		ServerLogLevel: *logLevel, Insecure: *insecure, Repeat: *repeat, DialConcurrency: *dialConc, Timeout: *timeout}
	if !*quiet {
		setup.Log = stderr
		if f, ok := stderr.(*os.File); ok {
			setup.TTY = bench.IsTerminal(f)
		}
	}
	if _, err := logging.ParseLevel(*logLevel); *logLevel != "" && err != nil {
		fmt.Fprintf(stderr, "bench: --server-log-level: %v\n", err)
		return 2
	}
	if _, err := logging.ParseLevel(*compareLog); *compareLog != "" && err != nil {
		fmt.Fprintf(stderr, "bench: --compare-log-level: %v\n", err)
		return 2
	}
	if *store != "" || fs.Changed("fronts") || fs.Changed("file-store") {
		ns, err := parseInts(*fronts)
		if err != nil {
			fmt.Fprintf(stderr, "bench: --fronts: %v\n", err)
			return 2
		}
		return runScaleOut(fs, bench.ScaleOutOptions{Workload: work, Setup: setup, Store: *store, Fronts: ns, FileStore: *fileStore},
			*jsonOut, *tableOut, stdout, stderr, sigs)
	}
	opts := bench.Options{
		Workload:         work,
		Setup:            setup,
		Impls:            splitList(*impls),
		SelfBin:          self,
		AgencyBin:        *agencyBin,
		GendataBin:       *gendataBin,
		CompareInsecure:  *compareInsecure,
		CompareMetrics:   *compareMetrics,
		CompareLogLevel:  *compareLog,
		Storm:            *stormOn,
		StormConcurrency: *stormConc,
		CourseReps:       *courseReps,
		BigBets:          *bigBets,
		BigReps:          *bigReps,
		LoopbackBytes:    *loopback,
		DiskBlock:        *diskBlock,
		DiskTime:         *diskTime,
		SkipLimits:       *skipLimits,
	}

	ctx, cancel := stopOnSignal(sigs, stderr)
	defer cancel()
	rep, err := bench.Run(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		if errors.Is(err, bench.ErrCapacity) || rep == nil {
			return 2
		}
		return 1
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	stdout.Write(table.Bytes())
	outputs := []struct {
		path  string
		write func(io.Writer) error
	}{
		{*jsonOut, rep.WriteJSON},
		{*tableOut, func(w io.Writer) error { _, err := w.Write(table.Bytes()); return err }},
		{*svgOut, rep.WriteSVG},
	}
	for _, o := range outputs {
		if o.path == "" {
			continue
		}
		if err := writeFile(o.path, o.write); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
	}
	return 0
}

// stopOnSignal returns a context cancelled at the first signal on sigs, which
// it reports; a second signal gets the default action (the process ends).
func stopOnSignal(sigs <-chan os.Signal, stderr io.Writer) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case sig := <-sigs:
			signal.Reset(syscall.SIGTERM, syscall.SIGINT)
			fmt.Fprintf(stderr, "bench: %s: stopping\n", sig)
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// writeFile writes a file through write, creating its directory.
func writeFile(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseInts parses a comma list of numbers; "1,000" style grouping is not
// accepted, but underscores are (10_000).
func parseInts(s string) ([]int, error) {
	var out []int
	for _, p := range splitList(s) {
		n, err := strconv.ParseInt(strings.ReplaceAll(p, "_", ""), 10, 0)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive whole number", p)
		}
		out = append(out, int(n))
	}
	if len(out) == 0 {
		return nil, errors.New("no value")
	}
	return out, nil
}
