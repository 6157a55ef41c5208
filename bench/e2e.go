package bench

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/receipt"
	"github.com/tp0/loteria/secure"
)

// Names of the end-to-end workloads.
const (
	e2eCourse = "course" // the course's five files: 26,936 / 25,518 / 16,014 / 9,238 / 991 rows
	e2eBig    = "big"    // two agencies with millions of bets each
)

// e2eSpec is an end-to-end workload: real bin/agency processes at their
// defaults, each uploading a CSV file that bin/gendata writes.
type e2eSpec struct {
	Name  string
	Sizes []int // rows per agency; nil: gendata's defaults, the course's files
	Reps  int
}

// sizes is how many bets each agency's file holds.
func (s e2eSpec) sizes() []int {
	if s.Sizes == nil {
		return agency.CourseSizes
	}
	return s.Sizes
}

// agencies is how many agencies the workload runs.
func (s e2eSpec) agencies() int { return len(s.sizes()) }

// e2eFiles are a workload's CSV files and what each agency must end with.
type e2eFiles struct {
	Dir     string
	Paths   []string
	Want    []agencyWant
	Winners [][]string
	Bets    int64
}

// prepareE2E writes the workload's files with gendata, into a directory of
// the data directory kept between invocations (gendata never rewrites a
// file, and the same flags always write the same bytes), then reads them
// as an agency does to know the bets, chain and winners of each.
func prepareE2E(ctx context.Context, opts *Options, spec e2eSpec) (*e2eFiles, error) {
	name := "e2e-" + spec.Name
	args := []string{"--winning-number", strconv.Itoa(int(opts.WinningNumber))}
	if spec.Sizes != nil {
		sizes := make([]string, len(spec.Sizes))
		for i, n := range spec.Sizes {
			sizes[i] = strconv.Itoa(n)
		}
		name += "-" + strings.Join(sizes, "-")
		args = append(args, "--agencies", strconv.Itoa(len(sizes)), "--sizes", strings.Join(sizes, ","))
	}
	if opts.WinningNumber != eventserver.DefaultWinningNumber {
		name += "-w" + strconv.Itoa(int(opts.WinningNumber))
	}
	files := &e2eFiles{Dir: filepath.Join(opts.DataDir, name)}
	args = append(args, "--dir", files.Dir)
	cmd := exec.CommandContext(ctx, opts.GendataBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("gendata %s: %w\n%s", strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	for i := range spec.agencies() {
		path := filepath.Join(files.Dir, fmt.Sprintf("agency-%d.csv", i+1))
		want, winners, err := readAgencyFile(path, opts.WinningNumber)
		if err != nil {
			return nil, err
		}
		if n := spec.sizes()[i]; want.Bets != int64(n) {
			return nil, fmt.Errorf("%s holds %d bets, want %d (remove %s to write it again)", path, want.Bets, n, files.Dir)
		}
		files.Paths = append(files.Paths, path)
		files.Want = append(files.Want, want)
		files.Winners = append(files.Winners, winners)
		files.Bets += want.Bets
	}
	return files, nil
}

// readAgencyFile reads an agency's CSV file as the agency does: its bets'
// count and chain, and the documents of the winning ones.
func readAgencyFile(path string, winning uint16) (agencyWant, []string, error) {
	src, err := agency.OpenFile(path)
	if err != nil {
		return agencyWant{}, nil, err
	}
	defer src.Close()
	chain := receipt.NewChain()
	var winners []string
	for {
		b, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return agencyWant{}, nil, err
		}
		chain.Add(&b)
		if b.Number == winning {
			winners = append(winners, b.Document)
		}
	}
	return agencyWant{Bets: int64(chain.Len()), Chain: chain.Sum()}, winners, nil
}

// runE2E runs the workload spec.Reps times against each server, the
// servers taking turns, and summarizes each server's wall times.
func runE2E(ctx context.Context, opts *Options, spec e2eSpec, keys *keyring) ([]EndToEnd, error) {
	files, err := prepareE2E(ctx, opts, spec)
	if err != nil {
		return nil, err
	}
	security := Secure
	if opts.Insecure {
		security = Insecure
	}
	walls := make(map[string][]float64)
	for rep := range spec.Reps {
		for _, impl := range opts.Impls {
			opts.logf("%s end to end, %s %s, repetition %d of %d", spec.Name, impl, security, rep+1, spec.Reps)
			wall, err := e2eOnce(ctx, opts, spec, files, impl, keys)
			if err != nil {
				return nil, fmt.Errorf("%s end to end against %s: %w", spec.Name, impl, err)
			}
			walls[impl] = append(walls[impl], wall.Seconds())
		}
	}
	var out []EndToEnd
	for _, impl := range opts.Impls {
		w := walls[impl]
		sorted := slices.Sorted(slices.Values(w))
		e := EndToEnd{Name: spec.Name, Impl: impl, Security: security, Agencies: len(files.Paths), Bets: files.Bets,
			Reps: len(w), WallSec: w, MedianSec: median(sorted), MinSec: sorted[0], MaxSec: sorted[len(sorted)-1]}
		e.BetsPerSec = ratio(float64(e.Bets), e.MedianSec)
		out = append(out, e)
	}
	return out, nil
}

// median of sorted values; the mean of the middle two for an even count.
func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// e2eOnce starts impl's server at its defaults on a fresh data directory,
// runs one bin/agency process per file, and returns the time from starting
// the first agency to the last one's exit. Every agency must exit 0 with
// its exact winners and a receipt that matches its file and the root every
// other agency logged; the server must drain and exit 0 holding exactly
// the files' bets.
func e2eOnce(ctx context.Context, opts *Options, spec e2eSpec, files *e2eFiles, impl string, keys *keyring) (time.Duration, error) {
	dir, err := os.MkdirTemp(opts.DataDir, fmt.Sprintf("e2e-%s-%s-", spec.Name, impl))
	if err != nil {
		return 0, fmt.Errorf("data dir: %w", err)
	}
	dataDir := filepath.Join(dir, "data")
	n := len(files.Paths)
	args := []string{"--data-dir", dataDir}
	if n != eventserver.DefaultAgencies {
		args = append(args, "--agencies", strconv.Itoa(n))
	}
	if opts.WinningNumber != eventserver.DefaultWinningNumber {
		args = append(args, "--winning-number", strconv.Itoa(int(opts.WinningNumber)))
	}
	if opts.ServerLogLevel != "" {
		args = append(args, "--log-level", opts.ServerLogLevel)
	}
	if opts.Insecure {
		args = append(args, "--insecure")
	} else {
		args = append(args, "--keys", keys.Dir)
	}
	srv, err := startServer(ctx, impl, opts, args, filepath.Join(dir, "server.log"))
	if err != nil {
		return 0, err
	}
	defer srv.kill()
	fail := func(err error) (time.Duration, error) {
		srv.kill()
		return 0, fmt.Errorf("%w\n%s (kept %s)", err, srv.tail(), dir)
	}
	runCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	cmds := make([]*exec.Cmd, n)
	logs := make([]*os.File, n)
	for i := range cmds {
		id := strconv.Itoa(i + 1)
		a := []string{"--id", id, "--server", srv.addr, "--bets", files.Paths[i],
			"--receipt", filepath.Join(dir, "agency-"+id+".receipt.json")}
		if opts.Insecure {
			a = append(a, "--insecure")
		} else {
			a = append(a, "--key", filepath.Join(keys.Dir, secure.AgencyKeyFile(uint32(i+1))),
				"--server-pub", filepath.Join(keys.Dir, secure.ServerPubFile))
		}
		f, err := os.Create(filepath.Join(dir, "agency-"+id+".log"))
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		logs[i] = f
		cmds[i] = exec.CommandContext(runCtx, opts.AgencyBin, a...)
		cmds[i].Stdout, cmds[i].Stderr = f, f
	}
	exits := make([]error, n)
	ends := make([]time.Time, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			cancel()
			wg.Wait()
			return fail(fmt.Errorf("start agency %d: %w", i+1, err))
		}
		wg.Go(func() {
			exits[i] = cmd.Wait()
			ends[i] = time.Now()
		})
	}
	wg.Wait()
	wall := slices.MaxFunc(ends, func(a, b time.Time) int { return a.Compare(b) }).Sub(start)
	for i, err := range exits {
		if err != nil {
			return fail(fmt.Errorf("%w: agency %d: %v\n%s", ErrBrokenRun, i+1, err, fileTail(logs[i].Name())))
		}
	}
	if err := checkAgencies(dir, files, keys, opts.Insecure); err != nil {
		return fail(err)
	}
	if err := srv.stop(); err != nil {
		return fail(err)
	}
	if _, err := checkStore(dataDir, files.Want); err != nil {
		return fail(err)
	}
	if opts.KeepData {
		opts.logf("kept %s", dir)
	} else if err := os.RemoveAll(dir); err != nil {
		return wall, fmt.Errorf("remove %s: %w", dir, err)
	}
	settle()
	return wall, nil
}

// checkAgencies checks what each agency of an end-to-end run reported:
// its consulta_ganadores line (the winners, up to the 50 it shows, and the
// commitment root) and its receipt file (its bets, its chain, the root, the
// server's signature). Every agency must log the same root.
func checkAgencies(dir string, files *e2eFiles, keys *keyring, insecure bool) error {
	var root string
	for i := range files.Paths {
		id := i + 1
		logPath := filepath.Join(dir, fmt.Sprintf("agency-%d.log", id))
		line, err := findLine(logPath, "consulta_ganadores", "success")
		if err != nil {
			return fmt.Errorf("%w: agency %d: %w", ErrBrokenRun, id, err)
		}
		want := files.Winners[i]
		if got := line["cant_ganadores"]; got != strconv.Itoa(len(want)) {
			return fmt.Errorf("%w: agency %d logged cant_ganadores %q, its file has %d winners", ErrBrokenRun, id, got, len(want))
		}
		shown := want[:min(len(want), 50)]
		if got := line["dni"]; got != strings.Join(shown, ",") {
			return fmt.Errorf("%w: agency %d logged winners %q, its file's are %q", ErrBrokenRun, id, got, strings.Join(shown, ","))
		}
		if root == "" {
			root = line["root"]
		}
		if line["root"] != root || len(root) != 64 {
			return fmt.Errorf("%w: agency %d logged root %q, agency 1 %q", ErrBrokenRun, id, line["root"], root)
		}
		rf, err := receipt.ReadFile(filepath.Join(dir, fmt.Sprintf("agency-%d.receipt.json", id)))
		if err != nil {
			return fmt.Errorf("%w: agency %d: %w", ErrBrokenRun, id, err)
		}
		r := rf.Receipt
		w := files.Want[i]
		switch {
		case r.Agency != uint32(id) || r.Bets != uint64(w.Bets) || r.Chain != w.Chain:
			return fmt.Errorf("%w: agency %d's receipt says agency %d, %d bets, chain %x; its file: %d bets, chain %x",
				ErrBrokenRun, id, r.Agency, r.Bets, r.Chain, w.Bets, w.Chain)
		case rf.Root == nil || hex.EncodeToString(rf.Root[:]) != root:
			return fmt.Errorf("%w: agency %d's receipt file does not hold the root it logged", ErrBrokenRun, id)
		}
		if !insecure {
			if err := r.Verify(keys.Sign); err != nil {
				return fmt.Errorf("%w: agency %d: %w", ErrBrokenRun, id, err)
			}
		}
	}
	return nil
}

// findLine returns the fields of the last log line of action with result.
func findLine(path, action, result string) (map[string]string, error) {
	lines, err := logging.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, l := range slices.Backward(lines) {
		if l.Is(action, result) {
			return l.Fields, nil
		}
	}
	return nil, fmt.Errorf("no %q line with result %s in %s\n%s", action, result, path, fileTail(path))
}

// fileTail is the last lines of a file, for error messages.
func fileTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return fmt.Sprintf("last lines of %s:\n%s", path, bytes.Join(lines, []byte("\n")))
}
