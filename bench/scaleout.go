package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/persist/pgstore"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

// Stores a scale-out run puts the bets in.
const (
	StoreFile     = "file"
	StorePostgres = "postgres"
)

// StoreTemp as ScaleOutOptions.Store starts a throwaway PostgreSQL cluster
// on this machine for the invocation (fsync and synchronous_commit on) and
// removes it at the end.
const StoreTemp = "temp"

// ErrNoPostgres is the cause of the error RunScaleOut returns when it
// cannot start its throwaway cluster (PostgreSQL is not installed, say).
var ErrNoPostgres = errors.New("no PostgreSQL to measure")

// ScaleOutOptions configure RunScaleOut: at each K, the gnet server on the
// file store, then one, two... gnet servers (front ends) sharing one
// PostgreSQL database, each at its defaults (secured, default log level
// and window) with --metrics-listen, the agencies split across them.
type ScaleOutOptions struct {
	Workload
	Setup
	// Store is StoreTemp, or the postgres:// URL of a server where the
	// bench may CREATE DATABASE: each run gets a fresh database next to
	// the one named, dropped afterwards unless KeepData.
	Store     string
	Fronts    []int // front ends of the PostgreSQL runs, e.g. 1, 2
	FileStore bool  // also run one front end on the file store at each K, to compare with
}

// ScaleOutReport is what RunScaleOut measured.
type ScaleOutReport struct {
	Machine  Machine        `json:"machine"`
	Config   ScaleOutConfig `json:"config"`
	Runs     []ScaleOutRun  `json:"runs"`
	Notes    []string       `json:"notes,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
}

// ScaleOutConfig is the workload and the database, as found.
type ScaleOutConfig struct {
	Store     string            `json:"store"` // "temp" or the URL given, without its password
	Postgres  string            `json:"postgres_version"`
	Settings  map[string]string `json:"postgres_settings"` // as the server reports them
	PGDataFS  string            `json:"postgres_data_fs,omitempty"`
	Fronts    []int             `json:"front_ends"`
	Agencies  []int             `json:"agencies"`
	Batch     int               `json:"batch"`
	Security  string            `json:"security"`
	ServerLog string            `json:"server_log_level"`
	Repeat    int               `json:"repeat"`
	Dials     int               `json:"dial_concurrency"`
}

// ScaleOutRun is one store behind some front ends at one K. Commit
// latencies come from the front ends' lottery_commit_duration_seconds
// histograms, merged: the mean is exact, the quantiles are interpolated
// within the histogram's buckets, as PromQL's histogram_quantile does.
type ScaleOutRun struct {
	Store               string  `json:"store"` // file or postgres
	Fronts              int     `json:"front_ends"`
	Agencies            int     `json:"agencies"`
	BetsPerAgency       int     `json:"bets_per_agency"`
	BetsPerSec          float64 `json:"bets_per_sec"`
	OverFile            float64 `json:"bets_per_sec_over_file,omitempty"` // this run's bets/s over the file store's at the same K
	AckP50Ms            float64 `json:"ack_p50_ms"`
	AckP99Ms            float64 `json:"ack_p99_ms"`
	AckMaxMs            float64 `json:"ack_max_ms"`
	CommitMeanMs        float64 `json:"commit_mean_ms"`
	CommitP50Ms         float64 `json:"commit_p50_ms"`
	CommitP99Ms         float64 `json:"commit_p99_ms"`
	Commits             int64   `json:"commits"`         // group commits, every front end's
	BetsPerCommit       float64 `json:"bets_per_commit"` // mean, FINISHED-only commits included
	DrawToLastWinnersMs float64 `json:"draw_to_last_winners_ms"`

	Security         string    `json:"security"`
	Window           int       `json:"window"`
	AgenciesPerFront []int     `json:"agencies_per_front_end"`
	BetsPerFront     []int64   `json:"bets_stored_per_front_end"` // lottery_bets_stored_total of each
	Batch            int       `json:"batch"`
	Bets             int64     `json:"bets"`
	UploadSec        float64   `json:"upload_sec"`
	ConnectSec       float64   `json:"connect_sec"`
	AckSamples       int       `json:"ack_samples"`
	RepeatBetsPerSec []float64 `json:"repeat_bets_per_sec,omitempty"`
}

func (o *ScaleOutOptions) check() error {
	switch {
	case o.Store == "":
		return errors.New("no store: give --store temp, or --store with a postgres:// URL")
	case len(o.Fronts) == 0:
		return errors.New("--fronts: no number of front ends")
	case len(o.Agencies) == 0:
		return errors.New("--agencies: no number of agencies")
	}
	if err := o.Workload.check(true); err != nil {
		return err
	}
	if err := o.Setup.check(); err != nil {
		return err
	}
	if o.Store != StoreTemp {
		if _, err := pgstore.ParseURL(o.Store); err != nil {
			return fmt.Errorf("--store: %w (or temp, for a throwaway cluster)", err)
		}
	}
	for _, n := range o.Fronts {
		if n < 1 || n > 16 {
			return fmt.Errorf("--fronts: %d front ends; from 1 to 16", n)
		}
	}
	if _, err := os.Stat(o.ServerBin); err != nil {
		return fmt.Errorf("--server-bin: %w (run make build)", err)
	}
	if !o.Insecure && o.KeygenBin != "" {
		if _, err := os.Stat(o.KeygenBin); err != nil {
			return fmt.Errorf("--keygen-bin: %w (run make build)", err)
		}
	}
	return nil
}

// RunScaleOut measures, at each K, the file store behind one front end and
// PostgreSQL behind each number of front ends: bets/s, ACK latency and
// commit latency. A run counts only once every agency got its exact
// winners and the same commitment from whichever front end it was on, the
// front ends' lottery_bets_stored_total add up to the bets sent (none
// stored twice), they exit cleanly, and the store holds exactly the bets
// sent (PostgreSQL's read back through pgstore.Export).
func RunScaleOut(ctx context.Context, opts ScaleOutOptions) (rep *ScaleOutReport, err error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	pre, err := opts.prepare(opts.Agencies)
	if err != nil {
		return nil, err
	}
	maxK, ports := pre.MaxK, pre.Ports
	rep = &ScaleOutReport{
		Machine:  pre.Machine,
		Warnings: pre.Warnings,
		Config: ScaleOutConfig{Store: redactStore(opts.Store), Fronts: opts.Fronts, Agencies: opts.Agencies, Batch: opts.Batch,
			Security: pre.Security, ServerLog: pre.ServerLog, Repeat: opts.Repeat, Dials: opts.DialConcurrency},
		Runs: []ScaleOutRun{},
	}

	admin := opts.Store
	if opts.Store == StoreTemp {
		opts.logf("starting a throwaway PostgreSQL cluster (fsync on)")
		c, err := pgtest.Start(pgtest.Options{Durable: true})
		if err != nil {
			return rep, fmt.Errorf("%w: %w", ErrNoPostgres, err)
		}
		defer func() {
			if rerr := c.Remove(); rerr != nil && err == nil {
				err = fmt.Errorf("remove the throwaway cluster: %w", rerr)
			}
		}()
		admin = c.URL("postgres")
		rep.Config.PGDataFS = fsType(os.TempDir())
		rep.Notes = append(rep.Notes, "PostgreSQL: a throwaway cluster on this machine (initdb defaults but shared_buffers 64MB, "+
			"max_connections 200), sharing its CPUs with the front ends and the agencies")
		if rep.Config.PGDataFS == "tmpfs" {
			rep.Warnings = append(rep.Warnings, "the throwaway cluster's data is on tmpfs ($TMPDIR): its fsyncs cost nothing there")
		}
	}
	if err := describePostgres(ctx, admin, &rep.Config); err != nil {
		return rep, err
	}
	for _, name := range []string{"fsync", "synchronous_commit"} {
		if v := rep.Config.Settings[name]; v != "on" {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("PostgreSQL runs with %s=%s: its commits are not durable the way the file store's are", name, v))
		}
	}

	var keys *keyring
	if !opts.Insecure {
		dir := keysDir(opts.DataDir)
		opts.logf("keys for %d agencies in %s", maxK, dir)
		if keys, _, err = provisionKeys(ctx, opts.KeygenBin, dir, maxK); err != nil {
			return rep, err
		}
	}

	for _, k := range opts.Agencies {
		b := opts.betsPerAgency(k)
		sets, err := buildDatasets(datasetPlan{Distinct: min(opts.Distinct, k), Bets: b, Batch: opts.Batch,
			WinningNumber: opts.WinningNumber, Seed: opts.Seed})
		if err != nil {
			return rep, err
		}
		type setup struct {
			store  string
			fronts int
		}
		var setups []setup
		if opts.FileStore {
			setups = append(setups, setup{StoreFile, 1})
		}
		for _, n := range opts.Fronts {
			setups = append(setups, setup{StorePostgres, n})
		}
		var runs []ScaleOutRun
		for round := range opts.Repeat {
			for _, su := range setups {
				if opts.Repeat > 1 {
					opts.logf("%s × %d K=%d, repetition %d of %d", su.store, su.fronts, k, round+1, opts.Repeat)
				}
				res, err := scaleOutOne(ctx, &opts, admin, su.store, su.fronts, k, b, sets, SourceAddrs(k, ports), keys)
				if err != nil {
					return rep, fmt.Errorf("%s store behind %d front end(s) with %d agencies: %w", su.store, su.fronts, k, err)
				}
				runs = append(runs, res)
			}
		}
		rep.Runs = append(rep.Runs, medianScaleOut(runs)...)
	}
	compareWithFile(rep.Runs)
	rep.Machine.LoadAvgEnd = loadAvg()
	return rep, nil
}

// redactStore is the store as the report names it: no password.
func redactStore(store string) string {
	if store == StoreTemp {
		return store
	}
	cfg, err := pgstore.ParseURL(store)
	if err != nil {
		return "postgres://..."
	}
	return "postgres://" + pgstore.Target(cfg)
}

// medianScaleOut keeps, of the repetitions of each store and front-end
// count, the run with the median bets/s (the lower of the middle two),
// noting every repetition's bets/s; the order of first appearance stays.
func medianScaleOut(runs []ScaleOutRun) []ScaleOutRun {
	type key struct {
		store  string
		fronts int
	}
	return medianOf(runs, func(r ScaleOutRun) key { return key{r.Store, r.Fronts} },
		func(r ScaleOutRun) float64 { return r.BetsPerSec }, func(r *ScaleOutRun, all []float64) { r.RepeatBetsPerSec = all })
}

// compareWithFile sets each PostgreSQL run's bets/s over the file store's
// at the same K.
func compareWithFile(runs []ScaleOutRun) {
	for i := range runs {
		r := &runs[i]
		if r.Store == StoreFile {
			continue
		}
		for _, f := range runs {
			if f.Store == StoreFile && f.Agencies == r.Agencies {
				r.OverFile = ratio(r.BetsPerSec, f.BetsPerSec)
			}
		}
	}
}

// front is one event server under test and where its /metrics is.
type front struct {
	srv     *serverProc
	metrics string
}

// databases numbers the databases this process creates.
var databases atomic.Int64

// scaleOutOne starts n front ends on a store (the file store in a fresh
// directory, or a fresh database on the PostgreSQL server at admin),
// drives k agencies with b bets each across them, scrapes their metrics,
// stops them and checks what the store holds.
func scaleOutOne(ctx context.Context, opts *ScaleOutOptions, admin, store string, n, k, b int, sets []*dataset,
	sources []net.IP, keys *keyring) (ScaleOutRun, error) {
	dir, err := os.MkdirTemp(opts.DataDir, fmt.Sprintf("%s-f%d-k%d-", store, n, k))
	if err != nil {
		return ScaleOutRun{}, fmt.Errorf("data dir: %w", err)
	}
	dataDir := filepath.Join(dir, "data")
	var dbURL string
	if store == StorePostgres {
		name := fmt.Sprintf("loteria_bench_%d_%d", os.Getpid(), databases.Add(1))
		if dbURL, err = createDatabase(ctx, admin, name); err != nil {
			return ScaleOutRun{}, err
		}
		if !opts.KeepData {
			defer dropDatabase(admin, name)
		} else {
			opts.logf("keeping database %s", name)
		}
	}
	args := []string{"--agencies", strconv.Itoa(k), "--metrics-listen", "127.0.0.1:0"}
	if store == StorePostgres {
		args = append(args, "--store", dbURL)
	} else {
		args = append(args, "--data-dir", dataDir)
	}
	if keys != nil {
		args = append(args, "--keys", keys.Dir)
	} else {
		args = append(args, "--insecure")
	}
	if opts.WinningNumber != eventserver.DefaultWinningNumber {
		args = append(args, "--winning-number", strconv.Itoa(int(opts.WinningNumber)))
	}
	if opts.ServerLogLevel != "" {
		args = append(args, "--log-level", opts.ServerLogLevel)
	}
	starter := &Options{Setup: Setup{ServerBin: opts.ServerBin}}
	fronts := make([]*front, 0, n)
	defer func() {
		for _, f := range fronts {
			f.srv.kill()
		}
	}()
	fail := func(err error) (ScaleOutRun, error) {
		var tails []string
		for _, f := range fronts {
			f.srv.kill()
			tails = append(tails, f.srv.tail())
		}
		return ScaleOutRun{}, fmt.Errorf("%w\n%s", err, strings.Join(tails, "\n"))
	}
	for i := range n {
		srv, err := startServer(ctx, ImplGnet, starter, args, filepath.Join(dir, fmt.Sprintf("server-%d.log", i+1)))
		if err != nil {
			return fail(err)
		}
		f := &front{srv: srv}
		fronts = append(fronts, f)
		if f.metrics, err = metricsAddr(ctx, srv); err != nil {
			return fail(err)
		}
	}
	addrs := make([]string, n)
	for i, f := range fronts {
		addrs[i] = f.srv.addr
	}

	label := fmt.Sprintf("%s × %d", store, n)
	prog := &progress{phase: "connect"}
	disp := startDisplay(opts.Log, opts.TTY, fmt.Sprintf("%-12s K=%d", label, k), k, int64(k)*int64(b), prog)
	runCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	dres, err := drive(runCtx, driveConfig{Addrs: addrs, Agencies: k, Sets: sets, Keys: keys, Sources: sources,
		DialConcurrency: opts.DialConcurrency, Timeout: opts.Timeout, Progress: prog})
	prog.setPhase("done")
	disp.Stop()
	if err != nil {
		return fail(err)
	}
	if dres.Upload <= 0 || dres.Bets == 0 {
		return fail(fmt.Errorf("%w: %d bets in %v", ErrBrokenRun, dres.Bets, dres.Upload))
	}
	if k >= n {
		for i, c := range dres.PerFront {
			if c == 0 {
				return fail(fmt.Errorf("%w: front end %d (%s) served none of the %d agencies", ErrBrokenRun, i+1, addrs[i], k))
			}
		}
	}

	var commits, commitBets histogram
	perFront := make([]int64, n)
	var stored int64
	for i, f := range fronts {
		page, err := fetchMetrics(ctx, f.metrics)
		if err != nil {
			return fail(err)
		}
		h, err := parseHistogram(page, commitSecondsMetric)
		if err == nil {
			err = commits.merge(h)
		}
		if err != nil {
			return fail(fmt.Errorf("front end %d: %w", i+1, err))
		}
		if h, err = parseHistogram(page, commitBetsMetric); err == nil {
			err = commitBets.merge(h)
		}
		if err != nil {
			return fail(fmt.Errorf("front end %d: %w", i+1, err))
		}
		v, err := findSample(bytes.NewReader(page), betsStoredMetric)
		if err != nil {
			return fail(fmt.Errorf("front end %d: %w", i+1, err))
		}
		perFront[i] = int64(v)
		stored += int64(v)
	}
	if stored != dres.Bets {
		return fail(fmt.Errorf("%w: the front ends' %s add up to %d (%v), the agencies sent %d bets",
			ErrBrokenRun, betsStoredMetric, stored, perFront, dres.Bets))
	}
	for _, f := range fronts {
		if err := f.srv.stop(); err != nil {
			return fail(err)
		}
	}

	want := wantFromSets(sets, k)
	if store == StorePostgres {
		err = checkExport(ctx, dbURL, filepath.Join(dir, "export"), want)
	} else {
		_, err = checkStore(dataDir, want)
	}
	if err != nil {
		return fail(err)
	}

	lat := summarize(dres.Latencies)
	res := ScaleOutRun{
		Store: store, Fronts: n, Agencies: k, BetsPerAgency: b,
		BetsPerSec:          float64(dres.Bets) / dres.Upload.Seconds(),
		AckP50Ms:            ms(lat.P50),
		AckP99Ms:            ms(lat.P99),
		AckMaxMs:            ms(lat.Max),
		CommitMeanMs:        1e3 * ratio(commits.Sum, commits.Count),
		CommitP50Ms:         1e3 * commits.quantile(0.50),
		CommitP99Ms:         1e3 * commits.quantile(0.99),
		Commits:             int64(commits.Count),
		BetsPerCommit:       ratio(commitBets.Sum, commitBets.Count),
		DrawToLastWinnersMs: ms(dres.DrawToLastWinners),
		Security:            Secure,
		Window:              dres.Window,
		AgenciesPerFront:    dres.PerFront,
		BetsPerFront:        perFront,
		Batch:               opts.Batch,
		Bets:                dres.Bets,
		UploadSec:           dres.Upload.Seconds(),
		ConnectSec:          dres.Connect.Seconds(),
		AckSamples:          lat.Count,
	}
	if keys == nil {
		res.Security = Insecure
	}
	if opts.KeepData {
		opts.logf("kept %s", dir)
	} else if err := os.RemoveAll(dir); err != nil {
		return res, fmt.Errorf("remove %s: %w", dir, err)
	}
	return res, nil
}

// metricsAddr waits for the server's log to say where it serves /metrics
// (it was given port 0); the log is flushed every 100 ms or so.
func metricsAddr(ctx context.Context, srv *serverProc) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := findLine(srv.logPath, "metrics_listen", "success")
		if err == nil && f["address"] != "" {
			return f["address"], nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the server's log does not say where /metrics is: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-srv.exited:
			return "", fmt.Errorf("%w: server exited: %v", ErrBrokenRun, srv.waitErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkExport writes the database's bets as bets.csv into dir, through
// pgstore.Export (which checks every agency's rows against its chain on
// record), and checks that file as the file store's is checked.
func checkExport(ctx context.Context, dbURL, dir string, want []agencyWant) error {
	if err := ensureDir(dir); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, filestore.BetsFile))
	if err != nil {
		return fmt.Errorf("check store: %w", err)
	}
	_, err = pgstore.Export(ctx, dbURL, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: export the database: %w", ErrBrokenRun, err)
	}
	_, err = checkStore(dir, want)
	return err
}
