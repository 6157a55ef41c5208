package main

// The process-level tests run the real binaries: eventserver, agency,
// verify, keygen and gendata are built once, on first use, into a temporary
// directory that TestMain removes, and run as internal/proctest processes.
// This file holds what else those tests share: key directories, agency
// files, a cluster of one restartable server and its agencies, and the
// end-of-run checks.

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/internal/proctest"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/secure"
)

// hangGuard bounds waits that only run out when something hangs; it is
// never a timing assertion.
const hangGuard = 60 * time.Second

// faultWinning is the winning number of every lottery these tests run.
const faultWinning = 7574

// procBins are the commands the process tests run, built on first use.
var procBins = proctest.NewBinaries(
	"github.com/tp0/loteria/eventserver/cmd/eventserver",
	"github.com/tp0/loteria/agency/cmd/agency",
	"github.com/tp0/loteria/agency/cmd/verify",
	"github.com/tp0/loteria/agency/cmd/gendata",
	"github.com/tp0/loteria/secure/cmd/keygen")

// TestMain checks that no test leaves a goroutine behind; gnet's worker
// pool, started when the package loads, is the only one there before.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent(), goleak.Cleanup(func(code int) {
		procBins.Remove()
		os.Exit(code)
	}))
}

// binaries builds the commands once and returns their directory.
func binaries(t *testing.T) string { return procBins.Dir(t) }

func binPath(t *testing.T, name string) string {
	t.Helper()
	return filepath.Join(binaries(t), name)
}

// ---- keys

// makeKeys writes a key directory for agencies 1..n with bin/keygen.
func makeKeys(t *testing.T, n int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if out, err := exec.Command(binPath(t, "keygen"), "--dir", dir, "--agencies", strconv.Itoa(n)).CombinedOutput(); err != nil {
		t.Fatalf("bin/keygen: %v\n%s", err, out)
	}
	return dir
}

// memKeys is a key directory written with the secure package, for the
// in-process tests, and the keys loaded from it.
type memKeys struct {
	dir       string
	store     *secure.KeyStore
	sign      ed25519.PrivateKey
	verify    ed25519.PublicKey
	serverPub secure.PublicKey
	agency    map[uint32]secure.PrivateKey
}

func writeKeys(t *testing.T, n int) *memKeys {
	t.Helper()
	k := &memKeys{dir: filepath.Join(t.TempDir(), "keys"), agency: map[uint32]secure.PrivateKey{}}
	if err := os.Mkdir(k.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	server, err := secure.GenerateKey(rand.Reader)
	must(err)
	must(secure.WritePrivateKey(filepath.Join(k.dir, secure.ServerKeyFile), "server", server))
	must(secure.WritePublicKey(filepath.Join(k.dir, secure.ServerPubFile), "server", server.Public()))
	k.verify, k.sign, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	must(secure.WriteSigningKey(filepath.Join(k.dir, secure.SignKeyFile), "server", k.sign))
	must(secure.WriteVerifyKey(filepath.Join(k.dir, secure.VerifyKeyFile), "server", k.verify))
	for id := uint32(1); id <= uint32(n); id++ {
		a, err := secure.GenerateKey(rand.Reader)
		must(err)
		owner := fmt.Sprintf("agency %d", id)
		must(secure.WritePrivateKey(filepath.Join(k.dir, secure.AgencyKeyFile(id)), owner, a))
		must(secure.WritePublicKey(filepath.Join(k.dir, secure.AgencyPubFile(id)), owner, a.Public()))
		k.agency[id] = a
	}
	k.store, err = secure.OpenKeyStore(k.dir, n)
	must(err)
	k.serverPub = server.Public()
	return k
}

// ---- agency files

// faultData is a set of agency files in the course's format.
type faultData struct {
	dir  string
	bets [][]frame.Bet // index agency-1
}

// makeFaultData writes synthetic course-shaped files of the given sizes.
func makeFaultData(t *testing.T, sizes []int, seed int64) *faultData {
	t.Helper()
	d := &faultData{dir: t.TempDir()}
	for i, n := range sizes {
		bets, err := agency.SyntheticBets(agency.SynthOptions{
			Agency: uint32(i + 1), Bets: n, Winners: min(n, 1+i%3), WinningNumber: faultWinning, Seed: seed,
		})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := agency.WriteBetsCSV(&buf, bets); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.file(i+1), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		d.bets = append(d.bets, bets)
	}
	return d
}

// gendata writes files with bin/gendata (its flags in args) and reads them back.
func gendata(t *testing.T, agencies int, args ...string) *faultData {
	t.Helper()
	d := &faultData{dir: t.TempDir()}
	args = append([]string{"--dir", d.dir, "--agencies", strconv.Itoa(agencies), "--winning-number", strconv.Itoa(faultWinning)}, args...)
	if out, err := exec.Command(binPath(t, "gendata"), args...).CombinedOutput(); err != nil {
		t.Fatalf("bin/gendata: %v\n%s", err, out)
	}
	for id := 1; id <= agencies; id++ {
		src, err := agency.OpenFile(d.file(id))
		if err != nil {
			t.Fatal(err)
		}
		var bets []frame.Bet
		for {
			b, err := src.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			bets = append(bets, b)
		}
		src.Close()
		d.bets = append(d.bets, bets)
	}
	return d
}

func (d *faultData) file(id int) string {
	return filepath.Join(d.dir, fmt.Sprintf("agency-%d.csv", id))
}

func (d *faultData) winners(id int) int {
	n := 0
	for _, b := range d.bets[id-1] {
		if b.Number == faultWinning {
			n++
		}
	}
	return n
}

func (d *faultData) total() int {
	n := 0
	for _, b := range d.bets {
		n += len(b)
	}
	return n
}

func (d *faultData) allWinners() int {
	n := 0
	for id := 1; id <= len(d.bets); id++ {
		n += d.winners(id)
	}
	return n
}

// pickPort returns a loopback address with a port that was free a moment ago.
func pickPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ---- processes

// readLogLines is the action lines of a log file written so far.
func readLogLines(path string) []logging.Line {
	lines, _ := logging.ReadFile(path) // a half-written last line is skipped, and read on the next call
	return lines
}

// ---- HTTP

// httpGet fetches url once, with no connection kept for later.
func httpGet(url string) (int, string, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// ---- a server and its agencies

// cluster is a server process on a fixed address and data directory,
// restartable, plus the agency processes talking to it.
type cluster struct {
	t       *testing.T
	bins    string
	data    *faultData
	keys    string // bin/keygen directory; "" runs everything --insecure
	addr    string
	dialTo  string // where agencies connect: addr, or a proxy in front of it
	ioWait  string // the agencies' --io-timeout
	giveUp  string // the agencies' --give-up
	batch   string // the agencies' --batch-max-amount
	dataDir string
	logs    string
	grace   time.Duration
	extra   []string // more server flags, for every incarnation

	server   *proctest.Proc
	runs     int // server incarnations so far
	metrics  string
	agencies map[int]*proctest.Proc
	agRuns   map[int]int
	poll     map[int]bool // agencies that wait with --wait poll
}

// newCluster prepares a secured cluster (keys from bin/keygen).
func newCluster(t *testing.T, data *faultData) *cluster {
	c := newInsecureCluster(t, data)
	c.keys = makeKeys(t, len(data.bets))
	return c
}

func newInsecureCluster(t *testing.T, data *faultData) *cluster {
	c := &cluster{
		t: t, bins: binaries(t), data: data, addr: pickPort(t), ioWait: "10s", giveUp: "60s", batch: "5",
		dataDir: filepath.Join(t.TempDir(), "data"), logs: t.TempDir(), grace: 10 * time.Second,
		agencies: map[int]*proctest.Proc{}, agRuns: map[int]int{}, poll: map[int]bool{5: true},
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// LOTERIA_TEST_LOGS=DIR keeps a failed test's process logs there.
		if keep := os.Getenv("LOTERIA_TEST_LOGS"); keep != "" {
			_ = exec.Command("cp", "-r", c.logs, keep).Run()
		}
		logs, _ := filepath.Glob(filepath.Join(c.logs, "*.log"))
		for _, path := range logs {
			t.Logf("%s:\n%s", filepath.Base(path), proctest.Tail(path, 12))
		}
	})
	return c
}

func (c *cluster) secured() bool { return c.keys != "" }

// serverArgs are the flags of a server incarnation.
func (c *cluster) serverArgs(more ...string) []string {
	args := []string{"--listen", c.addr, "--agencies", strconv.Itoa(len(c.data.bets)), "--data-dir", c.dataDir,
		"--winning-number", strconv.Itoa(faultWinning), "--read-timeout", "10s",
		"--shutdown-grace", c.grace.String(), "--retry-after", "100ms"}
	if c.secured() {
		args = append(args, "--keys", c.keys)
	} else {
		args = append(args, "--insecure")
	}
	return append(append(args, c.extra...), more...)
}

// spawnServer starts a server incarnation without waiting for it.
func (c *cluster) spawnServer(more ...string) *proctest.Proc {
	c.t.Helper()
	c.runs++
	name := fmt.Sprintf("server-%d", c.runs)
	p := proctest.Start(c.t, name, filepath.Join(c.logs, name+".log"), filepath.Join(c.bins, "eventserver"), c.serverArgs(more...)...)
	c.server = p
	return p
}

// startServer starts a server incarnation and waits until it listens.
func (c *cluster) startServer(more ...string) *proctest.Proc {
	c.t.Helper()
	p := c.spawnServer(more...)
	proctest.WaitFor(c.t, hangGuard, p.Name+" to listen", func() bool {
		if p.Exited() {
			c.t.Fatalf("%s exited with %d:\n%s", p.Name, p.Code(), proctest.Tail(p.Log, 20))
		}
		return len(proctest.Find(p.Lines(), "listen", "success")) > 0
	})
	if l := proctest.Find(p.Lines(), "metrics_listen", "success"); len(l) > 0 {
		c.metrics = l[0].Fields["address"]
	}
	return p
}

func (c *cluster) receipt(id int) string {
	return filepath.Join(c.logs, fmt.Sprintf("receipt-%d.json", id))
}

// agencyArgs are the flags of agency id's process; more come last and win.
func (c *cluster) agencyArgs(id int, more ...string) []string {
	wait := agency.WaitHold
	if c.poll[id] {
		wait = agency.WaitPoll
	}
	args := []string{"--id", strconv.Itoa(id), "--server", cmp.Or(c.dialTo, c.addr), "--bets", c.data.file(id),
		"--batch-max-amount", c.batch, "--wait", wait, "--retry-base", "20ms", "--retry-max", "300ms",
		"--give-up", c.giveUp, "--io-timeout", c.ioWait, "--receipt", c.receipt(id)}
	if c.secured() {
		args = append(args, "--key", filepath.Join(c.keys, secure.AgencyKeyFile(uint32(id))),
			"--server-pub", filepath.Join(c.keys, secure.ServerPubFile))
	} else {
		args = append(args, "--insecure")
	}
	return append(args, more...)
}

// startAgency starts a new process for agency id.
func (c *cluster) startAgency(id int, more ...string) *proctest.Proc {
	c.t.Helper()
	c.agRuns[id]++
	name := fmt.Sprintf("agency-%d-run-%d", id, c.agRuns[id])
	p := proctest.Start(c.t, name, filepath.Join(c.logs, name+".log"), filepath.Join(c.bins, "agency"), c.agencyArgs(id, more...)...)
	c.agencies[id] = p
	return p
}

func (c *cluster) startAgencies() {
	for id := 1; id <= len(c.data.bets); id++ {
		c.startAgency(id)
	}
}

// finishAgencies waits for every agency's current process to exit 0 with
// its winners and the draw's root logged, and returns the roots.
func (c *cluster) finishAgencies() map[int]string {
	c.t.Helper()
	roots := map[int]string{}
	for id := 1; id <= len(c.data.bets); id++ {
		p := c.agencies[id]
		if code := p.Wait(c.t, 2*hangGuard); code != 0 {
			c.t.Fatalf("%s exited with %d:\n%s", p.Name, code, proctest.Tail(p.Log, 20))
		}
		want := strconv.Itoa(c.data.winners(id))
		lines := p.Lines()
		got := proctest.Find(lines, "consulta_ganadores", "success", "agency", strconv.Itoa(id), "cant_ganadores", want)
		if len(got) != 1 {
			c.t.Errorf("%s: no `consulta_ganadores | result: success | cant_ganadores: %s` line:\n%s", p.Name, want, proctest.Tail(p.Log, 10))
		} else {
			roots[id] = got[0].Fields["root"]
		}
		if len(proctest.Find(lines, "exit", "success", "bets", strconv.Itoa(len(c.data.bets[id-1])), "cant_ganadores", want)) != 1 {
			c.t.Errorf("%s: no `exit | result: success` line with all bets and %s winners", p.Name, want)
		}
	}
	return roots
}

// stopServer sends SIGTERM and expects a clean exit.
func (c *cluster) stopServer() {
	c.t.Helper()
	c.server.Signal(syscall.SIGTERM)
	if code := c.server.Wait(c.t, c.grace+hangGuard); code != 0 {
		c.t.Fatalf("%s exited with %d after SIGTERM:\n%s", c.server.Name, code, proctest.Tail(c.server.Log, 20))
	}
}

// checkStore compares bets.csv with the agency files, exactly and in order,
// and has bin/verify compare them too.
func (c *cluster) checkStore() {
	c.t.Helper()
	got := storedByAgency(c.t, filepath.Join(c.dataDir, filestore.BetsFile), -1)
	for id := 1; id <= len(c.data.bets); id++ {
		if !slices.Equal(got[uint32(id)], c.data.bets[id-1]) {
			c.t.Errorf("store holds %d bets of agency %d; want exactly its %d bets, in order (first difference at %d)",
				len(got[uint32(id)]), id, len(c.data.bets[id-1]), firstDiff(got[uint32(id)], c.data.bets[id-1]))
		}
		delete(got, uint32(id))
	}
	for id, bets := range got {
		c.t.Errorf("store holds %d bets of unknown agency %d", len(bets), id)
	}
	c.verify(true, "--store", c.dataDir, "--agency-files", filepath.Join(c.data.dir, "agency-%d.csv"),
		"--agencies", strconv.Itoa(len(c.data.bets)))
}

// checkEvidence checks issue 13's promises after a finished run: every
// agency's receipt verifies against its own file; the store verifies
// against the signed commitment and every receipt; every agency logged
// the same root, which is the one of every sorteo line the server logged
// and the one of commitment.json.
func (c *cluster) checkEvidence(roots map[int]string) {
	c.t.Helper()
	var receipts []string
	for id := 1; id <= len(c.data.bets); id++ {
		args := []string{"--receipt", c.receipt(id), "--bets", c.data.file(id)}
		c.verify(true, append(args, c.signPub()...)...)
		receipts = append(receipts, c.receipt(id))
	}
	if len(c.data.bets) > 1 { // a control: a receipt does not describe another agency's file
		c.verify(false, append([]string{"--receipt", c.receipt(1), "--bets", c.data.file(2)}, c.signPub()...)...)
	}
	args := append([]string{"--store", c.dataDir, "--receipts", strings.Join(receipts, ",")}, c.signPub()...)
	out := c.verify(true, args...)
	if c.secured() && !strings.Contains(out, "signature: valid") {
		c.t.Errorf("bin/verify --store did not check the commitment's signature:\n%s", out)
	}

	data, err := os.ReadFile(filepath.Join(c.dataDir, filestore.DrawFile))
	if err != nil {
		c.t.Fatalf("the draw's commitment: %v", err)
	}
	var statement struct {
		Root string `json:"root"`
	}
	if err := json.Unmarshal(data, &statement); err != nil || len(statement.Root) != 64 {
		c.t.Fatalf("commitment.json has no root: %v\n%s", err, data)
	}
	for id := 1; id <= len(c.data.bets); id++ {
		if roots[id] != statement.Root {
			c.t.Errorf("agency %d logged root %q; commitment.json says %s", id, roots[id], statement.Root)
		}
	}
	draws := 0
	for run := 1; run <= c.runs; run++ {
		for _, l := range proctest.Find(readLogLines(filepath.Join(c.logs, fmt.Sprintf("server-%d.log", run))), "sorteo", "success") {
			draws++
			if l.Fields["root"] != statement.Root {
				c.t.Errorf("server-%d logged sorteo with root %s; commitment.json says %s", run, l.Fields["root"], statement.Root)
			}
			if want := strconv.FormatBool(c.secured()); l.Fields["signed"] != want {
				c.t.Errorf("server-%d: sorteo signed: %s, want %s", run, l.Fields["signed"], want)
			}
		}
	}
	if draws == 0 {
		c.t.Errorf("no server incarnation logged `sorteo | result: success`")
	}
}

func (c *cluster) signPub() []string {
	if !c.secured() {
		return nil
	}
	return []string{"--sign-pub", filepath.Join(c.keys, secure.VerifyKeyFile)}
}

// verify runs bin/verify and checks that it passes (or fails).
func (c *cluster) verify(pass bool, args ...string) string {
	c.t.Helper()
	out, err := exec.Command(filepath.Join(c.bins, "verify"), args...).CombinedOutput()
	if pass && err != nil {
		c.t.Errorf("bin/verify %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if !pass && err == nil {
		c.t.Errorf("bin/verify %s passed; want a failure\n%s", strings.Join(args, " "), out)
	}
	return string(out)
}

// storedByAgency loads the first limit bytes of a bets.csv (all when limit < 0).
func storedByAgency(t *testing.T, path string, limit int64) map[uint32][]frame.Bet {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if limit >= 0 {
		r = io.LimitReader(f, limit)
	}
	got := map[uint32][]frame.Bet{}
	for b, err := range filestore.LoadBets(r) {
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		got[b.Agency] = append(got[b.Agency], b.Bet)
	}
	return got
}

func firstDiff(a, b []frame.Bet) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// storedLogged sums, per agency, the bets a server run logged as stored:
// it logs apuesta_recibida only once the batch is on disk, before the ACK.
// Its log is buffered, so a killed run may have lost its last lines: this
// is a lower bound of what it acknowledged.
func storedLogged(lines []logging.Line) map[uint32]int {
	out := map[uint32]int{}
	for _, l := range proctest.Find(lines, "apuesta_recibida", "success") {
		id, _ := strconv.Atoi(l.Fields["agency"])
		out[uint32(id)] += int(l.Int("stored"))
	}
	return out
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func faultRand(t *testing.T) *mrand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return mrand.New(mrand.NewPCG(seed, 1))
}

func pause(r *mrand.Rand) { time.Sleep(time.Duration(50+r.IntN(351)) * time.Millisecond) }

// uploading waits until the server has stored at least n batches.
func (c *cluster) uploading(n int) {
	c.t.Helper()
	proctest.WaitFor(c.t, hangGuard, "the upload to start", func() bool {
		return len(proctest.Find(c.server.Lines(), "apuesta_recibida", "success")) >= n
	})
}

func sum(m map[uint32]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
