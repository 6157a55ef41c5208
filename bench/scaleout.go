package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

// StoreTemp as ScaleOutOptions.Store starts a throwaway PostgreSQL cluster
// (fsync on) for the measurement.
const StoreTemp = "temp"

// ScaleOutOptions configure RunScaleOut: K agencies against the file store,
// then against one and more front ends (event servers) sharing one
// PostgreSQL database.
type ScaleOutOptions struct {
	// Store is the URL of a PostgreSQL database the bench may create
	// databases from (each run gets a fresh one, dropped afterwards unless
	// KeepData), or StoreTemp.
	Store          string
	Fronts         []int // front ends per PostgreSQL run, e.g. 1, 2
	FileStore      bool  // also run the file store (one server), for comparison
	Agencies       []int
	Bets           int // per agency
	Batch          int // bets per BETS frame
	Distinct       int
	WinningNumber  uint16
	Seed           int64
	ServerBin      string
	DataDir        string // where the file store's data directories go
	KeepData       bool
	ServerLogLevel string
	Timeout        time.Duration
	Log            io.Writer
}

// ScaleOutRun is one store and number of front ends at one K.
type ScaleOutRun struct {
	Store               string  `json:"store"` // "file" or "postgres"
	Fronts              int     `json:"fronts"`
	Agencies            int     `json:"agencies"`
	BetsPerAgency       int     `json:"bets_per_agency"`
	Batch               int     `json:"batch"`
	Bets                int64   `json:"bets"`
	BetsPerSec          float64 `json:"bets_per_sec"`
	AckP50Ms            float64 `json:"ack_p50_ms"`
	AckP99Ms            float64 `json:"ack_p99_ms"`
	AckMaxMs            float64 `json:"ack_max_ms"`
	Commits             int64   `json:"commits"`
	BetsPerCommit       float64 `json:"bets_per_commit"`
	CommitMeanMs        float64 `json:"commit_mean_ms"`
	CommitP50Ms         float64 `json:"commit_p50_ms"` // upper bound of the histogram bucket holding it
	CommitP99Ms         float64 `json:"commit_p99_ms"` // likewise
	UploadSec           float64 `json:"upload_sec"`
	DrawToLastWinnersMs float64 `json:"draw_to_last_winners_ms"`
}

// ScaleOutReport is what RunScaleOut measured.
type ScaleOutReport struct {
	Machine Machine       `json:"machine"`
	Runs    []ScaleOutRun `json:"runs"`
	Notes   []string      `json:"notes,omitempty"`
}

func (o *ScaleOutOptions) logf(format string, a ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", a...)
	}
}

// RunScaleOut measures bets/s, ACK latency and commit latency for each K:
// the file store, then PostgreSQL behind each number of front ends, the
// agencies spread over the front ends in turn. Every run's stored bets and
// every agency's winners are checked before its numbers count.
func RunScaleOut(ctx context.Context, opts ScaleOutOptions) (*ScaleOutReport, error) {
	switch {
	case opts.Store == "":
		return nil, errors.New("scale-out bench: no --store")
	case len(opts.Agencies) == 0 || opts.Bets < 1 || opts.Batch < 1:
		return nil, errors.New("scale-out bench: needs agencies, bets and a batch size")
	}
	if _, err := os.Stat(opts.ServerBin); err != nil {
		return nil, fmt.Errorf("--server-bin: %w (run make build)", err)
	}
	if _, err := RaiseFileLimit(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	rep := &ScaleOutReport{Machine: describeMachine(opts.DataDir)}
	rep.Machine.Started = time.Now().UTC().Format(time.RFC3339)
	admin := opts.Store
	if opts.Store == StoreTemp {
		opts.logf("starting a throwaway PostgreSQL cluster (fsync on)")
		c, err := pgtest.Start(pgtest.Options{Durable: true})
		if err != nil {
			return nil, err
		}
		defer c.Remove()
		admin = c.URL("postgres")
		rep.Notes = append(rep.Notes, "PostgreSQL: a throwaway cluster on this machine, fsync and synchronous_commit on, shared_buffers 64 MB, default settings otherwise")
	}
	for _, k := range opts.Agencies {
		sets, err := buildDatasets(datasetPlan{Distinct: min(opts.Distinct, k), Bets: opts.Bets, Batch: opts.Batch,
			WinningNumber: opts.WinningNumber, Seed: opts.Seed})
		if err != nil {
			return rep, err
		}
		if opts.FileStore {
			res, err := scaleOutOne(ctx, &opts, "", 1, k, sets)
			if err != nil {
				return rep, fmt.Errorf("file store with %d agencies: %w", k, err)
			}
			rep.Runs = append(rep.Runs, res)
		}
		for _, n := range opts.Fronts {
			db, drop, err := freshDatabase(ctx, admin, fmt.Sprintf("bench_k%d_f%d_%d", k, n, os.Getpid()))
			if err != nil {
				return rep, err
			}
			res, err := scaleOutOne(ctx, &opts, db, n, k, sets)
			if !opts.KeepData {
				drop()
			}
			if err != nil {
				return rep, fmt.Errorf("PostgreSQL behind %d front ends with %d agencies: %w", n, k, err)
			}
			rep.Runs = append(rep.Runs, res)
		}
	}
	rep.Machine.LoadAvgEnd = loadAvg()
	return rep, nil
}

// freshDatabase creates database name next to the one at admin and returns
// its URL and a func that drops it.
func freshDatabase(ctx context.Context, admin, name string) (string, func(), error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", nil, fmt.Errorf("--store: %w", err)
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, fmt.Errorf("connect to %s: %w", u.Redacted(), err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	u.Path = "/" + name
	drop := func() {
		c, err := pgx.Connect(context.Background(), admin)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)")
	}
	return u.String(), drop, nil
}

// scaleOutOne starts n servers on store (the file store when ""), drives k
// agencies over them, checks what was stored and stops them.
func scaleOutOne(ctx context.Context, opts *ScaleOutOptions, store string, n, k int, sets []*dataset) (ScaleOutRun, error) {
	label := "file"
	if store != "" {
		label = "postgres"
	}
	dir, err := os.MkdirTemp(opts.DataDir, fmt.Sprintf("%s-f%d-k%d-", label, n, k))
	if err != nil {
		return ScaleOutRun{}, fmt.Errorf("data dir: %w", err)
	}
	if !opts.KeepData {
		defer os.RemoveAll(dir)
	}
	dataDir := filepath.Join(dir, "data")
	fronts := make([]*front, n)
	for i := range fronts {
		f, err := startFront(ctx, opts, store, dataDir, k, filepath.Join(dir, fmt.Sprintf("server-%d.log", i+1)))
		if err != nil {
			for _, g := range fronts[:i] {
				g.proc.kill()
			}
			return ScaleOutRun{}, err
		}
		fronts[i] = f
	}
	fail := func(err error) (ScaleOutRun, error) {
		var tails []string
		for _, f := range fronts {
			f.proc.kill()
			tails = append(tails, f.proc.tail())
		}
		return ScaleOutRun{}, fmt.Errorf("%w\n%s", err, strings.Join(tails, "\n"))
	}
	addrs := make([]string, n)
	for i, f := range fronts {
		addrs[i] = f.proc.addr
	}
	opts.logf("%s store, %d front end(s), %d agencies × %d bets", label, n, k, opts.Bets)
	runCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	dres, err := drive(runCtx, driveConfig{Addrs: addrs, Agencies: k, Sets: sets, DialConcurrency: 64, Timeout: opts.Timeout})
	if err != nil {
		return fail(err)
	}
	var commits histogram
	for _, f := range fronts {
		h, err := scrapeHistogram(f.metrics, "lottery_commit_duration_seconds")
		if err != nil {
			return fail(err)
		}
		commits.add(h)
	}
	committedBets, err := scrapeCounter(fronts, "lottery_bets_stored_total")
	if err != nil {
		return fail(err)
	}
	for _, f := range fronts {
		if err := f.proc.stop(); err != nil {
			return fail(err)
		}
	}
	if store != "" {
		err = checkPostgres(ctx, store, k, opts.Bets)
	} else {
		_, err = checkStore(dataDir, k, opts.Bets)
	}
	if err != nil {
		return fail(err)
	}
	lat := summarize(dres.Latencies)
	res := ScaleOutRun{
		Store: label, Fronts: n, Agencies: k, BetsPerAgency: opts.Bets, Batch: opts.Batch, Bets: dres.Bets,
		BetsPerSec: float64(dres.Bets) / dres.Upload.Seconds(),
		AckP50Ms:   ms(lat.P50), AckP99Ms: ms(lat.P99), AckMaxMs: ms(lat.Max),
		Commits:   int64(commits.count),
		UploadSec: dres.Upload.Seconds(), DrawToLastWinnersMs: ms(dres.DrawToLastWinners),
	}
	if commits.count > 0 {
		res.CommitMeanMs = commits.sum / commits.count * 1000
		res.CommitP50Ms = commits.quantile(0.50) * 1000
		res.CommitP99Ms = commits.quantile(0.99) * 1000
		res.BetsPerCommit = committedBets / commits.count
	}
	return res, nil
}

// front is one event server under test and its metrics address.
type front struct {
	proc    *serverProc
	metrics string
}

// startFront starts an event server (plaintext, as the bench's agencies
// speak) on free loopback ports and waits until it answers a PING.
func startFront(ctx context.Context, opts *ScaleOutOptions, store, dataDir string, k int, logPath string) (*front, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	mport, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	maddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(mport))
	args := []string{"--listen", addr, "--agencies", strconv.Itoa(k), "--insecure",
		"--winning-number", strconv.Itoa(int(opts.WinningNumber)), "--log-level", opts.ServerLogLevel,
		"--read-timeout", opts.Timeout.String(), "--shutdown-grace", "10s", "--metrics-listen", maddr,
		"--max-pending", strconv.Itoa(max(k+64, eventserver.DefaultMaxPending))}
	if store != "" {
		args = append(args, "--store", store)
	} else {
		args = append(args, "--data-dir", dataDir)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("server log: %w", err)
	}
	cmd := exec.Command(opts.ServerBin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start server: %w", err)
	}
	s := &serverProc{cmd: cmd, pid: cmd.Process.Pid, addr: addr, logPath: logPath, logFile: logFile, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := eventserver.Ping(addr, 2*time.Second); err == nil {
			return &front{proc: s, metrics: maddr}, nil
		} else if time.Now().After(deadline) {
			s.kill()
			return nil, fmt.Errorf("server did not answer on %s within 30s: %w\n%s", addr, err, s.tail())
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("server exited at start: %v\n%s", s.waitErr, s.tail())
		case <-ctx.Done():
			s.kill()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkPostgres fails with ErrBrokenRun unless every agency holds exactly
// bets rows, indexes 0..bets-1, and its progress row says so.
func checkPostgres(ctx context.Context, store string, agencies, bets int) error {
	conn, err := pgx.Connect(ctx, store)
	if err != nil {
		return fmt.Errorf("check store: %w", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT a.agency, a.held, a.finished, count(b.idx), coalesce(max(b.idx), -1)
		FROM agencies a LEFT JOIN bets b ON b.agency = a.agency GROUP BY a.agency ORDER BY a.agency`)
	if err != nil {
		return fmt.Errorf("check store: %w", err)
	}
	seen := 0
	var agency int32
	var held, count, maxIdx int64
	var finished bool
	_, err = pgx.ForEachRow(rows, []any{&agency, &held, &finished, &count, &maxIdx}, func() error {
		seen++
		if held != int64(bets) || count != int64(bets) || maxIdx != int64(bets)-1 || !finished {
			return fmt.Errorf("%w: agency %d holds %d rows (last index %d), its row says %d held, finished %v; want %d",
				ErrBrokenRun, agency, count, maxIdx, held, finished, bets)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if seen != agencies {
		return fmt.Errorf("%w: %d agency rows, want %d", ErrBrokenRun, seen, agencies)
	}
	return nil
}

// histogram is a Prometheus histogram read back from /metrics.
type histogram struct {
	bounds []float64 // upper bounds, ascending, +Inf last
	counts []float64 // cumulative
	sum    float64
	count  float64
}

func (h *histogram) add(o histogram) {
	if h.bounds == nil {
		h.bounds, h.counts = o.bounds, make([]float64, len(o.counts))
	}
	for i := range h.counts {
		if i < len(o.counts) {
			h.counts[i] += o.counts[i]
		}
	}
	h.sum += o.sum
	h.count += o.count
}

// quantile is the upper bound of the bucket holding the q-th quantile.
func (h *histogram) quantile(q float64) float64 {
	want := q * h.count
	for i, c := range h.counts {
		if c >= want {
			return h.bounds[i]
		}
	}
	return math.Inf(1)
}

// scrapeHistogram reads histogram name from the /metrics page at addr.
func scrapeHistogram(addr, name string) (histogram, error) {
	var h histogram
	err := scrape(addr, func(metric, labels string, v float64) {
		switch metric {
		case name + "_bucket":
			le := strings.TrimSuffix(strings.TrimPrefix(labels, `le="`), `"`)
			bound, err := strconv.ParseFloat(le, 64)
			if le == "+Inf" {
				bound, err = math.Inf(1), nil
			}
			if err == nil {
				h.bounds = append(h.bounds, bound)
				h.counts = append(h.counts, v)
			}
		case name + "_sum":
			h.sum = v
		case name + "_count":
			h.count = v
		}
	})
	if err == nil && h.bounds == nil {
		err = fmt.Errorf("metrics at %s: no %s", addr, name)
	}
	return h, err
}

// scrapeCounter adds up counter name over every front end.
func scrapeCounter(fronts []*front, name string) (float64, error) {
	total := 0.0
	for _, f := range fronts {
		err := scrape(f.metrics, func(metric, _ string, v float64) {
			if metric == name {
				total += v
			}
		})
		if err != nil {
			return 0, err
		}
	}
	return total, nil
}

// scrape calls fn for every sample of the text exposition at addr.
func scrape(addr string, fn func(metric, labels string, v float64)) error {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		metric, labels := line[:sp], ""
		if i := strings.IndexByte(metric, '{'); i >= 0 {
			metric, labels = metric[:i], strings.TrimSuffix(metric[i+1:], "}")
		}
		fn(metric, labels, v)
	}
	return sc.Err()
}

// WriteJSON writes the report as indented JSON.
func (r *ScaleOutReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write json report: %w", err)
	}
	return nil
}

// WriteTable writes the runs as aligned text.
func (r *ScaleOutReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "store\tfronts\tagencies\tbets/agency\tbets/s\tACK p50 ms\tACK p99 ms\tcommits\tbets/commit\tcommit mean ms\tcommit p50 ≤ ms\tcommit p99 ≤ ms\tdraw→winners ms\t")
	for _, x := range r.Runs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%.2f\t%.2f\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.1f\t\n",
			x.Store, x.Fronts, x.Agencies, x.BetsPerAgency, group(x.BetsPerSec), x.AckP50Ms, x.AckP99Ms, x.Commits,
			x.BetsPerCommit, x.CommitMeanMs, x.CommitP50Ms, x.CommitP99Ms, x.DrawToLastWinnersMs)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	m := r.Machine
	var b strings.Builder
	fmt.Fprintf(&b, "\nmachine: %d CPUs %s, %s, data dir on %s; load %.1f → %.1f\n", m.CPUs, m.CPUModel, m.Kernel, m.DataDirFS,
		m.LoadAvgStart, m.LoadAvgEnd)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
