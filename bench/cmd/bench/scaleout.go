package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/tp0/loteria/bench"
)

// notWithStore are the flags of the main benchmark that a --store
// invocation does not run: giving one is a mistake worth saying.
var notWithStore = []string{"impl", "compare-insecure", "compare-metrics", "storm", "storm-concurrency", "course-reps",
	"big-bets", "big-reps", "svg", "agency-bin", "gendata-bin", "loopback-bytes", "disk-block", "disk-time", "skip-limits"}

// runScaleOut is bench --store: at each K, the file store behind one front
// end, then PostgreSQL behind each number of front ends.
func runScaleOut(fs *pflag.FlagSet, opts bench.ScaleOutOptions, jsonOut, tableOut string, stdout, stderr io.Writer,
	sigs <-chan os.Signal) int {
	if opts.Store == "" {
		fmt.Fprintln(stderr, "bench: --fronts and --file-store go with --store")
		return 2
	}
	for _, name := range notWithStore {
		if fs.Changed(name) {
			fmt.Fprintf(stderr, "bench: --%s does not apply with --store\n", name)
			return 2
		}
	}
	ctx, cancel := stopOnSignal(sigs, stderr)
	defer cancel()
	rep, err := bench.RunScaleOut(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		if errors.Is(err, bench.ErrCapacity) || errors.Is(err, bench.ErrNoPostgres) || rep == nil {
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
