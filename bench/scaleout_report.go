package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes r as indented JSON.
func (r *ScaleOutReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write json report: %w", err)
	}
	return nil
}

// WriteTable writes the runs as aligned text, each K's file store run
// first, then PostgreSQL behind each number of front ends.
func (r *ScaleOutReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "PostgreSQL %s at %s", c.Postgres, c.Store)
	if len(c.Settings) > 0 {
		names := make([]string, 0, len(c.Settings))
		for n := range c.Settings {
			names = append(names, n)
		}
		slices.Sort(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = n + "=" + c.Settings[n]
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	if c.PGDataFS != "" {
		fmt.Fprintf(&b, ", its data on %s", c.PGDataFS)
	}
	fmt.Fprintf(&b, "\nfront ends: gnet event servers, %s, log level %s, window from WELCOME, --metrics-listen; "+
		"%d bets per BETS frame; %d connections opened at a time; agency i starts at front end (i-1) mod n",
		c.Security, c.ServerLog, c.Batch, c.Dials)
	if c.Repeat > 1 {
		fmt.Fprintf(&b, "; each run %d times, the median shown", c.Repeat)
	}
	b.WriteString("\ncommit latency: each front end's lottery_commit_duration_seconds, merged; mean exact, " +
		"p50/p99 interpolated within the histogram's buckets (as histogram_quantile does)\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "store\tfront ends\tagencies\tbets/agency\tbets/s\tvs file\tACK p50 ms\tACK p99 ms\tACK max ms\t"+
		"commit mean ms\tcommit p50 ms\tcommit p99 ms\tcommits\tbets/commit\tdraw→winners ms\tagencies per front end\t")
	for _, x := range r.Runs {
		vs := "-"
		if x.OverFile > 0 {
			vs = fmt.Sprintf("%.2f", x.OverFile)
		}
		per := make([]string, len(x.AgenciesPerFront))
		for i, n := range x.AgenciesPerFront {
			per[i] = fmt.Sprint(n)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%.1f\t%.1f\t%s\t\n",
			x.Store, x.Fronts, x.Agencies, x.BetsPerAgency, group(x.BetsPerSec), vs, x.AckP50Ms, x.AckP99Ms, x.AckMaxMs,
			x.CommitMeanMs, x.CommitP50Ms, x.CommitP99Ms, group(float64(x.Commits)), x.BetsPerCommit, x.DrawToLastWinnersMs,
			strings.Join(per, "+"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	for _, x := range r.Runs {
		if len(x.RepeatBetsPerSec) > 1 {
			parts := make([]string, len(x.RepeatBetsPerSec))
			for i, v := range x.RepeatBetsPerSec {
				parts[i] = group(v)
			}
			fmt.Fprintf(&b, "%s × %d K=%d repetitions (median shown): %s bets/s\n", x.Store, x.Fronts, x.Agencies, strings.Join(parts, ", "))
		}
	}
	m := r.Machine
	fmt.Fprintf(&b, "\nmachine: %d CPUs %s, %s; data dir on %s; load average (1 min) %.2f at start, %.2f at end\n",
		m.CPUs, m.CPUModel, m.Kernel, m.DataDirFS, m.LoadAvgStart, m.LoadAvgEnd)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}
