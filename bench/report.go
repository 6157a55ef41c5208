package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// Report is everything one bench invocation measured.
type Report struct {
	Machine  Machine     `json:"machine"`
	Config   RunConfig   `json:"config"`
	Runs     []RunResult `json:"runs"`
	Limits   Limits      `json:"limits"`
	Ratios   []Ratio     `json:"ratios"`
	Warnings []string    `json:"warnings,omitempty"`
}

// Machine describes where the numbers were taken.
type Machine struct {
	CPUs          int       `json:"cpus"`
	CPUModel      string    `json:"cpu_model"`
	Kernel        string    `json:"kernel"`
	MemTotalBytes uint64    `json:"mem_total_bytes"`
	GoVersion     string    `json:"go_version"`
	DataDir       string    `json:"data_dir"`
	DataDirFS     string    `json:"data_dir_fs"`
	OpenFiles     FileLimit `json:"open_files"`
	PortRange     [2]int    `json:"ephemeral_port_range"`
	LoadAvgStart  float64   `json:"load_avg_1m_start"`
	LoadAvgEnd    float64   `json:"load_avg_1m_end"`
	Started       string    `json:"started"`
}

// RunConfig is the workload, as given.
type RunConfig struct {
	Impls         []string `json:"impls"`
	Agencies      []int    `json:"agencies"`
	Batch         int      `json:"batch"`
	Distinct      int      `json:"distinct_datasets"`
	WinningNumber uint16   `json:"winning_number"`
	Seed          int64    `json:"seed"`
	ServerLog     string   `json:"server_log_level"`
	Sources       int      `json:"client_source_addresses"`
}

// RunResult is one server at one number of agencies. The first keys are the
// fixed contract of the JSON output; the rest explain them.
type RunResult struct {
	Impl                   string  `json:"impl"`
	Agencies               int     `json:"agencies"`
	BetsPerAgency          int     `json:"bets_per_agency"`
	BetsPerSec             float64 `json:"bets_per_sec"`
	MBPerSec               float64 `json:"mb_per_sec"`
	AckP50Ms               float64 `json:"ack_p50_ms"`
	AckP99Ms               float64 `json:"ack_p99_ms"`
	AckMaxMs               float64 `json:"ack_max_ms"`
	DrawToLastWinnersMs    float64 `json:"draw_to_last_winners_ms"`
	ServerPeakRSSBytes     uint64  `json:"server_peak_rss_bytes"`
	RSSPerWaitingConnBytes float64 `json:"rss_per_waiting_conn_bytes"`
	CPUSecPerMillionBets   float64 `json:"server_cpu_sec_per_million_bets"`

	Batch                   int     `json:"batch"`
	Bets                    int64   `json:"bets"`
	WireBytes               int64   `json:"wire_bytes"`
	ConnectSec              float64 `json:"connect_sec"`
	UploadSec               float64 `json:"upload_sec"`
	AckSamples              int     `json:"ack_samples"`
	ServerBaseRSSBytes      uint64  `json:"server_base_rss_bytes"`
	ServerConnectedRSSBytes uint64  `json:"server_connected_rss_bytes"`
	ServerWaitingRSSBytes   uint64  `json:"server_waiting_rss_bytes"`
	RSSPerIdleConnBytes     float64 `json:"rss_per_idle_conn_bytes"`
	ServerCPUSec            float64 `json:"server_cpu_sec"`
	BetsCSVBytes            int64   `json:"bets_csv_bytes"`
	GroupCommits            int     `json:"group_commits"`
	MeanGroupBytes          float64 `json:"mean_group_commit_bytes"`
}

// Limits are the machine's own ceilings, measured in the same invocation.
type Limits struct {
	LoopbackBytesPerSec        float64 `json:"loopback_bytes_per_sec"`
	DiskAppendFsyncBytesPerSec float64 `json:"disk_append_fsync_bytes_per_sec"`
	WireBytesPerBet            float64 `json:"wire_bytes_per_bet"`
	DiskBytesPerBet            float64 `json:"disk_bytes_per_bet"`

	LoopbackOneStreamBytesPerSec  float64 `json:"loopback_one_stream_bytes_per_sec"`
	LoopbackManyStreamBytesPerSec float64 `json:"loopback_many_streams_bytes_per_sec"`
	LoopbackStreams               int     `json:"loopback_streams"`
	LoopbackBytesMoved            int64   `json:"loopback_bytes_moved"`
	DiskFsyncsPerSec              float64 `json:"disk_fsyncs_per_sec"`
	DiskBlockBytes                int     `json:"disk_block_bytes"`
	LoopbackCeilingBetsPerSec     float64 `json:"loopback_ceiling_bets_per_sec"`
	DiskCeilingBetsPerSec         float64 `json:"disk_ceiling_bets_per_sec"`
	CeilingBetsPerSec             float64 `json:"ceiling_bets_per_sec"`
	// Disk is the append+fsync test once per number of agencies, with
	// blocks the size of that run's mean group commit; the disk fields
	// above are the largest K's.
	Disk []DiskLimit `json:"disk_by_agencies"`
}

// DiskLimit is the append+fsync test at one block size, and the bets/s
// ceiling it implies for the runs with that many agencies.
type DiskLimit struct {
	Agencies          int     `json:"agencies"`
	BlockBytes        int     `json:"block_bytes"`
	BytesPerSec       float64 `json:"bytes_per_sec"`
	FsyncsPerSec      float64 `json:"fsyncs_per_sec"`
	CeilingBetsPerSec float64 `json:"ceiling_bets_per_sec"` // min of the loopback and this disk ceiling
}

// ceiling is the bets/s ceiling for runs with k agencies.
func (l *Limits) ceiling(k int) float64 {
	for _, d := range l.Disk {
		if d.Agencies == k {
			return d.CeilingBetsPerSec
		}
	}
	return l.CeilingBetsPerSec
}

// Ratio compares the servers at one number of agencies: gnet over stdlib
// (above 1 means gnet has more of it), and each server over the ceiling.
type Ratio struct {
	Agencies          int     `json:"agencies"`
	CeilingBetsPerSec float64 `json:"ceiling_bets_per_sec,omitempty"`
	BetsPerSec        float64 `json:"gnet_over_stdlib_bets_per_sec,omitempty"`
	AckP99            float64 `json:"gnet_over_stdlib_ack_p99,omitempty"`
	DrawToLastWinners float64 `json:"gnet_over_stdlib_draw_to_last_winners,omitempty"`
	PeakRSS           float64 `json:"gnet_over_stdlib_peak_rss,omitempty"`
	RSSPerConn        float64 `json:"gnet_over_stdlib_rss_per_waiting_conn,omitempty"`
	CPUPerBet         float64 `json:"gnet_over_stdlib_cpu_per_bet,omitempty"`
	GnetOverCeiling   float64 `json:"gnet_over_ceiling_bets_per_sec,omitempty"`
	StdlibOverCeiling float64 `json:"stdlib_over_ceiling_bets_per_sec,omitempty"`
}

// Impl names.
const (
	ImplGnet   = "gnet"
	ImplStdlib = "stdlib"
)

func ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return 0
	}
	return a / b
}

// computeRatios pairs the runs by number of agencies.
func computeRatios(runs []RunResult, limits *Limits) []Ratio {
	var out []Ratio
	index := map[int]int{}
	for _, r := range runs {
		i, ok := index[r.Agencies]
		if !ok {
			i = len(out)
			index[r.Agencies] = i
			out = append(out, Ratio{Agencies: r.Agencies, CeilingBetsPerSec: limits.ceiling(r.Agencies)})
		}
		ceiling := out[i].CeilingBetsPerSec
		switch r.Impl {
		case ImplGnet:
			out[i].GnetOverCeiling = ratio(r.BetsPerSec, ceiling)
		case ImplStdlib:
			out[i].StdlibOverCeiling = ratio(r.BetsPerSec, ceiling)
		}
	}
	for i := range out {
		g, gok := findRun(runs, ImplGnet, out[i].Agencies)
		s, sok := findRun(runs, ImplStdlib, out[i].Agencies)
		if !gok || !sok {
			continue
		}
		out[i].BetsPerSec = ratio(g.BetsPerSec, s.BetsPerSec)
		out[i].AckP99 = ratio(g.AckP99Ms, s.AckP99Ms)
		out[i].DrawToLastWinners = ratio(g.DrawToLastWinnersMs, s.DrawToLastWinnersMs)
		out[i].PeakRSS = ratio(float64(g.ServerPeakRSSBytes), float64(s.ServerPeakRSSBytes))
		out[i].RSSPerConn = ratio(g.RSSPerWaitingConnBytes, s.RSSPerWaitingConnBytes)
		out[i].CPUPerBet = ratio(g.CPUSecPerMillionBets, s.CPUSecPerMillionBets)
	}
	return out
}

func findRun(runs []RunResult, impl string, k int) (RunResult, bool) {
	for _, r := range runs {
		if r.Impl == impl && r.Agencies == k {
			return r, true
		}
	}
	return RunResult{}, false
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write json report: %w", err)
	}
	return nil
}

// WriteTable writes the runs, the limits and the ratios as aligned text.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "impl\tagencies\tbets/agency\tbets/s\tMB/s\tACK p50 ms\tACK p99 ms\tACK max ms\tdraw→winners ms\tpeak RSS MiB\tRSS/waiting conn KiB\tCPU s/M bets\t")
	for _, x := range r.Runs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.1f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%.2f\t\n",
			x.Impl, x.Agencies, x.BetsPerAgency, group(x.BetsPerSec), x.MBPerSec, x.AckP50Ms, x.AckP99Ms, x.AckMaxMs,
			x.DrawToLastWinnersMs, float64(x.ServerPeakRSSBytes)/(1<<20), x.RSSPerWaitingConnBytes/1024, x.CPUSecPerMillionBets)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	l := r.Limits
	var b strings.Builder
	if l.CeilingBetsPerSec > 0 {
		fmt.Fprintf(&b, "\nloopback TCP: %.0f MB/s one stream, %.0f MB/s over %d streams; %.1f wire bytes per bet -> %s bets/s\n",
			l.LoopbackOneStreamBytesPerSec/1e6, l.LoopbackManyStreamBytesPerSec/1e6, l.LoopbackStreams, l.WireBytesPerBet,
			group(l.LoopbackCeilingBetsPerSec))
		for _, d := range l.Disk {
			fmt.Fprintf(&b, "K=%d disk append+fsync of %d-byte blocks (the mean group commit): %.1f MB/s, %.0f fsyncs/s; %.1f bytes per bet -> %s bets/s; ceiling %s bets/s\n",
				d.Agencies, d.BlockBytes, d.BytesPerSec/1e6, d.FsyncsPerSec, l.DiskBytesPerBet,
				group(d.BytesPerSec/l.DiskBytesPerBet), group(d.CeilingBetsPerSec))
		}
	}
	for _, x := range r.Ratios {
		var parts []string
		if x.BetsPerSec > 0 {
			parts = append(parts, fmt.Sprintf("gnet/stdlib: bets/s %.2f, ACK p99 %.2f, draw→winners %.2f, peak RSS %.2f, RSS/conn %.2f, CPU/bet %.2f",
				x.BetsPerSec, x.AckP99, x.DrawToLastWinners, x.PeakRSS, x.RSSPerConn, x.CPUPerBet))
		}
		if x.GnetOverCeiling > 0 {
			parts = append(parts, fmt.Sprintf("gnet/ceiling %.2f", x.GnetOverCeiling))
		}
		if x.StdlibOverCeiling > 0 {
			parts = append(parts, fmt.Sprintf("stdlib/ceiling %.2f", x.StdlibOverCeiling))
		}
		if len(parts) > 0 {
			fmt.Fprintf(&b, "K=%d  %s\n", x.Agencies, strings.Join(parts, "; "))
		}
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// group formats a non-negative number with thousands separators.
func group(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	if len(s) <= 3 || strings.ContainsAny(s, "eEn+-") {
		return s
	}
	var b strings.Builder
	lead := len(s) % 3
	if lead > 0 {
		b.WriteString(s[:lead])
	}
	for i := lead; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}
