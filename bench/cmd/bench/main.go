// Command bench measures the gnet event server and a goroutine-per-connection
// baseline with thousands of concurrent agencies on loopback, next to the
// machine's own limits, and checks every run's result before reporting it.
//
//	bench [flags]                 run the benchmark (see --help)
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
	agencies := fs.String("agencies", "2000", "concurrent agencies (connections); a comma list runs each, e.g. 10,100,1000")
	bets := fs.Int("bets", 1000, "bets per agency")
	totalBets := fs.Int("total-bets", 0, "if set, bets per agency is this divided by the agencies, so every K moves the same bets")
	batch := fs.Int("batch", 100, "bets per BETS frame")
	impls := fs.String("impl", "gnet,stdlib", "servers to measure, in order: gnet, stdlib")
	jsonOut := fs.String("json", "", "write the report as JSON to this file")
	tableOut := fs.String("table", "", "also write the table to this file")
	svgOut := fs.String("svg", "", "write a chart (SVG) of throughput, memory per connection and draw latency vs agencies")
	serverBin := fs.String("server-bin", "bin/eventserver", "the gnet event server binary")
	dataDir := fs.String("data-dir", filepath.Join("bench", "results", "tmp"), "base directory for each run's fresh data directory (must be a real disk for fsync to count)")
	keep := fs.Bool("keep-data", false, "keep each run's data directory and server log")
	logLevel := fs.String("server-log-level", "warn", "log level of the servers under test (their logs go to server.log in the run directory)")
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
	store := fs.String("store", "", "measure the PostgreSQL store instead: postgres://... of a database bench may CREATE DATABASE next to "+
		"(a fresh one per run), or \"temp\" for a throwaway cluster; runs K agencies against the file store, then against --fronts event servers on one database")
	fronts := fs.String("fronts", "1,2", "with --store: front ends (event servers) sharing the database, a comma list runs each")
	fileToo := fs.Bool("file-store", true, "with --store: also run the file store, for comparison")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: bench [flags]\n"+
			"Starts each server as a child process on 127.0.0.1 with a fresh data directory, drives the agencies,\n"+
			"checks the stored bets and the winners, and prints a table (--json, --svg for files).\n"+
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
	ks, err := parseInts(*agencies)
	if err != nil {
		fmt.Fprintf(stderr, "bench: --agencies: %v\n", err)
		return 2
	}
	if *winning < 0 || *winning > frame.MaxNumber {
		fmt.Fprintf(stderr, "bench: --winning-number must be from 0 to %d, got %d\n", frame.MaxNumber, *winning)
		return 2
	}
	if *store != "" {
		ns, err := parseInts(*fronts)
		if err != nil {
			fmt.Fprintf(stderr, "bench: --fronts: %v\n", err)
			return 2
		}
		return runScaleOut(bench.ScaleOutOptions{
			Store: *store, Fronts: ns, FileStore: *fileToo, Agencies: ks, Bets: *bets, Batch: *batch, Distinct: *distinct,
			WinningNumber: uint16(*winning), Seed: *seed, ServerBin: *serverBin, DataDir: *dataDir, KeepData: *keep,
			ServerLogLevel: *logLevel, Timeout: *timeout,
		}, *quiet, *jsonOut, *tableOut, stdout, stderr, sigs)
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "bench: find own binary: %v\n", err)
		return 1
	}
	opts := bench.Options{
		Impls:           splitList(*impls),
		Agencies:        ks,
		Bets:            *bets,
		TotalBets:       *totalBets,
		Batch:           *batch,
		Distinct:        *distinct,
		WinningNumber:   uint16(*winning),
		Seed:            *seed,
		ServerBin:       *serverBin,
		SelfBin:         self,
		DataDir:         *dataDir,
		KeepData:        *keep,
		ServerLogLevel:  *logLevel,
		DialConcurrency: *dialConc,
		Timeout:         *timeout,
		LoopbackBytes:   *loopback,
		DiskBlock:       *diskBlock,
		DiskTime:        *diskTime,
		SkipLimits:      *skipLimits,
	}
	if !*quiet {
		opts.Log = stderr
		if f, ok := stderr.(*os.File); ok {
			opts.TTY = bench.IsTerminal(f)
		}
	}
	if _, err := logging.ParseLevel(*logLevel); err != nil {
		fmt.Fprintf(stderr, "bench: --server-log-level: %v\n", err)
		return 2
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case sig := <-sigs:
			signal.Reset(syscall.SIGTERM, syscall.SIGINT)
			fmt.Fprintf(stderr, "bench: %s: stopping\n", sig)
			cancel()
		case <-ctx.Done():
		}
	}()
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

// runScaleOut is bench --store: the file store and PostgreSQL behind one
// and more front ends, at each K.
func runScaleOut(opts bench.ScaleOutOptions, quiet bool, jsonOut, tableOut string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	if !quiet {
		opts.Log = stderr
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case sig := <-sigs:
			signal.Reset(syscall.SIGTERM, syscall.SIGINT)
			fmt.Fprintf(stderr, "bench: %s: stopping\n", sig)
			cancel()
		case <-ctx.Done():
		}
	}()
	rep, err := bench.RunScaleOut(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		if rep == nil {
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
	for _, o := range []struct {
		path  string
		write func(io.Writer) error
	}{
		{jsonOut, rep.WriteJSON},
		{tableOut, func(w io.Writer) error { _, err := w.Write(table.Bytes()); return err }},
	} {
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
