// Package e2e_test runs several event servers on one PostgreSQL database
// as processes, with the course-shaped agency files, and breaks things
// mid-upload: a front end SIGKILLed, PostgreSQL stopped as in a crash.
package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/internal/proctest"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	bins.Remove()
	if shared.root != "" {
		os.RemoveAll(shared.root)
	}
	os.Exit(code)
}

const (
	agencies = 5
	winning  = 7574
	batch    = "10" // bets per BETS frame: small, so that the upload lasts long enough to break mid-way
)

// lottery is the agencies' files and keys, shared by every test.
type lottery struct {
	dir, keys string
	bets      [agencies]int      // bets per agency
	winners   [agencies][]string // winning documents per agency, in file order
	total     int
	fileCSV   []byte // bets.csv the file store wrote for them, agencies one after another
}

var shared struct {
	once sync.Once
	root string // temporary directory of the files and keys
	l    *lottery
	err  error
}

// theLottery writes the course-shaped files (bin/gendata) and the keys
// (bin/keygen) once, and runs them once through a file-store server.
func theLottery(t *testing.T) *lottery {
	t.Helper()
	pgtest.Shared(t)
	bin := binaries(t)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "loteria-e2e-data-")
		if err != nil {
			shared.err = err
			return
		}
		shared.root = dir
		l := &lottery{dir: filepath.Join(dir, "agencies"), keys: filepath.Join(dir, "keys")}
		if out, err := runErr(filepath.Join(bin, "gendata"), "--dir", l.dir, "--agencies", itoa(agencies)); err != nil {
			shared.err = fmt.Errorf("gendata: %w\n%s", err, out)
			return
		}
		if out, err := runErr(filepath.Join(bin, "keygen"), "--dir", l.keys, "--agencies", itoa(agencies)); err != nil {
			shared.err = fmt.Errorf("keygen: %w\n%s", err, out)
			return
		}
		for i := range agencies {
			src, err := agency.OpenFile(l.file(i + 1))
			if err != nil {
				shared.err = err
				return
			}
			for {
				b, err := src.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					shared.err = err
					return
				}
				l.bets[i]++
				if b.Number == winning {
					l.winners[i] = append(l.winners[i], b.Document)
				}
			}
			src.Close()
			l.total += l.bets[i]
		}
		shared.l = l
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	if shared.l.fileCSV == nil {
		start := time.Now()
		shared.l.fileCSV = fileStoreRun(t, shared.l)
		t.Logf("file-store reference run: %v", time.Since(start).Round(time.Millisecond))
	}
	return shared.l
}

func runErr(bin string, args ...string) ([]byte, error) {
	return exec.Command(bin, args...).CombinedOutput()
}

func (l *lottery) file(id int) string { return filepath.Join(l.dir, fmt.Sprintf("agency-%d.csv", id)) }

// front is one event server process on a fixed address, restartable.
type front struct {
	name, addr, store, dataDir string
	runs                       int
	p                          *proctest.Proc
}

// deployment is the servers and agencies of one test.
type deployment struct {
	t      *testing.T
	bin    string
	l      *lottery
	logs   string
	fronts []*front
	ag     [agencies]*proctest.Proc
}

func newDeployment(t *testing.T, l *lottery) *deployment {
	d := &deployment{t: t, bin: binaries(t), l: l, logs: t.TempDir()}
	t.Cleanup(func() {
		if keep := os.Getenv("LOTERIA_E2E_LOGS"); keep != "" { // keep every process's log, to read them
			dst := filepath.Join(keep, t.Name())
			if err := os.MkdirAll(dst, 0o755); err == nil {
				_ = os.CopyFS(dst, os.DirFS(d.logs))
			}
		}
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(d.logs, "*.log"))
		for _, path := range logs {
			t.Logf("%s:\n%s", filepath.Base(path), proctest.Tail(path, 15))
		}
	})
	return d
}

// addFront adds a server on the PostgreSQL store at url, or on a data
// directory of its own when url is "".
func (d *deployment) addFront(url string) *front {
	f := &front{name: fmt.Sprintf("server-%c", 'a'+len(d.fronts)), addr: freeAddr(d.t), store: url}
	if url == "" {
		f.dataDir = filepath.Join(d.t.TempDir(), "data")
	}
	d.fronts = append(d.fronts, f)
	return f
}

// start starts a new incarnation of f and waits until it listens.
func (d *deployment) start(f *front) {
	d.t.Helper()
	f.runs++
	name := fmt.Sprintf("%s-run-%d", f.name, f.runs)
	args := []string{"--listen", f.addr, "--agencies", itoa(agencies), "--winning-number", itoa(winning),
		"--keys", d.l.keys, "--read-timeout", "10s", "--retry-after", "100ms", "--shutdown-grace", "5s"}
	if f.store != "" {
		args = append(args, "--store", f.store)
	} else {
		args = append(args, "--data-dir", f.dataDir)
	}
	f.p = proctest.Start(d.t, name, filepath.Join(d.logs, name+".log"), filepath.Join(d.bin, "eventserver"), args...)
	proctest.WaitFor(d.t, 30*time.Second, name+" to listen", func() bool {
		if f.p.Exited() {
			d.t.Fatalf("%s exited with %d:\n%s", name, f.p.Code(), proctest.Tail(f.p.Log, 20))
		}
		return len(proctest.Find(f.p.Lines(), "listen", "success")) > 0
	})
}

// startAgency starts agency id, given the servers' addresses in order.
func (d *deployment) startAgency(id int, servers ...*front) {
	d.t.Helper()
	addrs := make([]string, len(servers))
	for i, f := range servers {
		addrs[i] = f.addr
	}
	name := fmt.Sprintf("agency-%d", id)
	d.ag[id-1] = proctest.Start(d.t, name, filepath.Join(d.logs, name+".log"), filepath.Join(d.bin, "agency"),
		"--id", itoa(id), "--server", strings.Join(addrs, ","), "--bets", d.l.file(id),
		"--key", filepath.Join(d.l.keys, fmt.Sprintf("agency-%d.key", id)), "--server-pub", filepath.Join(d.l.keys, "server.pub"),
		"--receipt", filepath.Join(d.logs, name+".receipt.json"),
		"--batch-max-amount", batch, "--retry-base", "20ms", "--retry-max", "300ms", "--give-up", "60s", "--io-timeout", "10s")
}

// finish waits for every agency to exit 0 with exactly its winners, all
// under one commitment root, which it returns.
func (d *deployment) finish(supervise func()) string {
	d.t.Helper()
	root := ""
	for id := 1; id <= agencies; id++ {
		p := d.ag[id-1]
		deadline := time.Now().Add(90 * time.Second)
		for !p.Exited() {
			if time.Now().After(deadline) {
				d.t.Fatalf("%s still running after 90s:\n%s", p.Name, proctest.Tail(p.Log, 20))
			}
			if supervise != nil {
				supervise()
			}
			time.Sleep(50 * time.Millisecond)
		}
		if p.Code() != 0 {
			d.t.Fatalf("%s exited with %d:\n%s", p.Name, p.Code(), proctest.Tail(p.Log, 20))
		}
		lines := p.Lines()
		got := proctest.Find(lines, "consulta_ganadores", "success", "agency", itoa(id))
		if len(got) != 1 {
			d.t.Fatalf("%s: %d consulta_ganadores success lines, want 1:\n%s", p.Name, len(got), proctest.Tail(p.Log, 10))
		}
		want := d.l.winners[id-1]
		if got[0].Fields["cant_ganadores"] != itoa(len(want)) || got[0].Fields["dni"] != strings.Join(want, ",") {
			d.t.Errorf("%s got winners %q (%s), want %q", p.Name, got[0].Fields["dni"], got[0].Fields["cant_ganadores"], strings.Join(want, ","))
		}
		if len(proctest.Find(lines, "exit", "success", "bets", itoa(d.l.bets[id-1]))) != 1 {
			d.t.Errorf("%s: no `exit | result: success | bets: %d` line", p.Name, d.l.bets[id-1])
		}
		switch r := got[0].Fields["root"]; {
		case r == "":
			d.t.Errorf("%s: no commitment root logged", p.Name)
		case root == "":
			root = r
		case r != root:
			d.t.Errorf("%s got root %s, agency 1 got %s: the servers published different draws", p.Name, r, root)
		}
	}
	return root
}

// sameDraw checks that every running server published the draw, with the
// root the agencies got, whether it drew itself or learnt of it.
func (d *deployment) sameDraw(root string) {
	d.t.Helper()
	for _, f := range d.fronts {
		proctest.WaitFor(d.t, 10*time.Second, f.p.Name+" to publish the draw with root "+root, func() bool {
			return len(proctest.Find(f.p.Lines(), "sorteo", "success", "root", root)) == 1
		})
		if n := len(proctest.Find(f.p.Lines(), "sorteo", "success")); n != 1 {
			d.t.Errorf("%s logged %d sorteo success lines, want 1", f.p.Name, n)
		}
	}
}

// stopFronts stops every server with SIGTERM and expects clean exits.
func (d *deployment) stopFronts() {
	d.t.Helper()
	for _, f := range d.fronts {
		if f.p.Exited() {
			continue
		}
		f.p.Signal(syscall.SIGTERM)
		if code := f.p.Wait(d.t, 30*time.Second); code != 0 {
			d.t.Errorf("%s exited with %d after SIGTERM:\n%s", f.p.Name, code, proctest.Tail(f.p.Log, 15))
		}
	}
}

// fileStoreRun uploads the agencies one after another to a file-store
// server and returns the bets.csv it wrote: the reference for bin/export.
func fileStoreRun(t *testing.T, l *lottery) []byte {
	t.Helper()
	d := newDeployment(t, l)
	f := d.addFront("")
	d.start(f)
	for id := 1; id <= agencies; id++ {
		d.startAgency(id, f)
		proctest.WaitFor(t, 60*time.Second, fmt.Sprintf("agency %d to finish on the file store", id), func() bool {
			return len(proctest.Find(f.p.Lines(), "agency_finished", "success", "agency", itoa(id))) > 0
		})
	}
	d.finish(nil)
	d.stopFronts()
	data, err := os.ReadFile(filepath.Join(f.dataDir, filestore.BetsFile))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// heldIn is how many bets the database holds, all agencies together.
func heldIn(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return -1
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT coalesce(sum(held), 0) FROM agencies").Scan(&n); err != nil {
		return -1
	}
	return n
}

// waitMidUpload waits until the database holds between a quarter and
// three quarters of the bets, failing if the upload got past that first.
func waitMidUpload(t *testing.T, url string, total int) int {
	t.Helper()
	var held int
	proctest.WaitFor(t, 60*time.Second, "a quarter of the bets to be stored", func() bool {
		held = heldIn(t, url)
		return held >= total/4
	})
	if held > total*3/4 {
		t.Fatalf("the upload went too fast to break it mid-way: %d of %d bets already stored", held, total)
	}
	return held
}

// checkExport runs bin/export and compares its file with the file store's.
func (d *deployment) checkExport(url string) {
	d.t.Helper()
	out := filepath.Join(d.t.TempDir(), "bets.csv")
	log := run(d.t, filepath.Join(d.bin, "export"), "--store", url, "--output", out)
	if !strings.Contains(log, "action: export | result: success") {
		d.t.Errorf("export logged no success line:\n%s", log)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		d.t.Fatal(err)
	}
	if !bytes.Equal(got, d.l.fileCSV) {
		i := 0
		for i < min(len(got), len(d.l.fileCSV)) && got[i] == d.l.fileCSV[i] {
			i++
		}
		d.t.Fatalf("bin/export wrote %d bytes, the file store %d; first difference at byte %d", len(got), len(d.l.fileCSV), i)
	}
}

// Two servers on one database, the agencies split between them and given
// both addresses; one server is SIGKILLed mid-upload and restarted: its
// agencies finish through the other, and the result is the file store's.
func TestFrontEndKilledMidUpload(t *testing.T) {
	l := theLottery(t)
	url := pgtest.NewDatabase(t)
	d := newDeployment(t, l)
	a, b := d.addFront(url), d.addFront(url)
	d.start(a)
	d.start(b)
	for id := 1; id <= agencies; id++ {
		if id%2 == 1 {
			d.startAgency(id, a, b)
		} else {
			d.startAgency(id, b, a)
		}
	}
	held := waitMidUpload(t, url, l.total)
	a.p.Signal(syscall.SIGKILL)
	a.p.Wait(t, 10*time.Second)
	t.Logf("killed %s with %d of %d bets stored", a.p.Name, held, l.total)
	time.Sleep(300 * time.Millisecond)
	d.start(a)
	start := time.Now()
	root := d.finish(nil)
	t.Logf("agencies finished %v after the restart", time.Since(start).Round(time.Millisecond))
	d.sameDraw(root)
	// The agencies that started on the killed server went on through the other one.
	for id := 1; id <= agencies; id += 2 {
		if len(proctest.Find(d.ag[id-1].Lines(), "connect", "in_progress", "next", b.addr)) == 0 {
			t.Errorf("agency %d never moved to %s after %s was killed", id, b.addr, a.name)
		}
	}
	d.stopFronts()
	d.checkExport(url)
}

// PostgreSQL stopped as in a crash (pg_ctl stop -m immediate) mid-upload
// and started again: the agencies get ERROR storage, retry, and finish once
// it is back, with nothing lost or stored twice. A server that exits
// meanwhile is restarted, as a supervisor would.
func TestDatabaseCrashMidUpload(t *testing.T) {
	l := theLottery(t)
	cluster := pgtest.Shared(t)
	url := pgtest.NewDatabase(t)
	d := newDeployment(t, l)
	a, b := d.addFront(url), d.addFront(url)
	d.start(a)
	d.start(b)
	for id := 1; id <= agencies; id++ {
		if id%2 == 1 {
			d.startAgency(id, a, b)
		} else {
			d.startAgency(id, b, a)
		}
	}
	held := waitMidUpload(t, url, l.total)
	if err := cluster.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped PostgreSQL with %d of %d bets stored", held, l.total)
	time.Sleep(time.Second)
	if err := cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	restarts := 0
	root := d.finish(func() {
		for _, f := range d.fronts {
			if f.p.Exited() {
				restarts++
				d.start(f)
			}
		}
	})
	t.Logf("servers restarted by the test: %d", restarts)
	d.sameDraw(root)
	storage := 0
	for _, p := range d.ag {
		for _, l := range proctest.Find(p.Lines(), "connect", "in_progress") {
			if strings.Contains(l.Fields["error"], "(storage)") {
				storage++
			}
		}
	}
	if storage == 0 {
		t.Error("no agency got ERROR storage while PostgreSQL was down: the fault missed the upload")
	}
	d.stopFronts()
	d.checkExport(url)
}
