package main

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
)

// The fault tests run the real binaries as processes: they are built once,
// on first use, into a temporary directory that TestMain removes.

var procBins struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if procBins.dir != "" {
		os.RemoveAll(procBins.dir)
	}
	os.Exit(code)
}

// binaries builds eventserver, agency and verify once and returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	procBins.once.Do(func() {
		dir, err := os.MkdirTemp("", "loteria-fault-bins-")
		if err != nil {
			procBins.err = err
			return
		}
		procBins.dir = dir
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
			"github.com/tp0/loteria/eventserver/cmd/eventserver",
			"github.com/tp0/loteria/agency/cmd/agency",
			"github.com/tp0/loteria/agency/cmd/verify")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			procBins.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if procBins.err != nil {
		t.Fatal(procBins.err)
	}
	return procBins.dir
}

const faultWinning = 7574

// faultData is a set of agency files in the course's format.
type faultData struct {
	dir  string
	bets [][]frame.Bet // index agency-1
}

func makeFaultData(t *testing.T, sizes []int, seed int64) *faultData {
	t.Helper()
	d := &faultData{dir: t.TempDir()}
	for i, n := range sizes {
		bets, err := agency.SyntheticBets(agency.SynthOptions{
			Agency: uint32(i + 1), Bets: n, Winners: 1 + i%3, WinningNumber: faultWinning, Seed: seed,
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

// proc is one run of a binary, its stdout and stderr going to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	code int // exit status once done; -1 when killed by a signal
}

func startProc(t *testing.T, name, logPath, bin string, args ...string) *proc {
	t.Helper()
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		out.Close()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig os.Signal) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// wait waits for the process to end, failing the test after limit.
func (p *proc) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(limit):
		t.Fatalf("%s still running after %v; log tail:\n%s", p.name, limit, tail(p.log, 15))
		return 0
	}
}

func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.signal(syscall.SIGKILL)
	p.wait(t, 10*time.Second)
}

func (p *proc) lines() []logLine { return readLogLines(p.log) }

// logLine is one action line: "... action: <action> | result: <r> | k: v | ...".
type logLine struct {
	action, result string
	fields         map[string]string
}

func (l logLine) is(action, result string, kv ...string) bool {
	if l.action != action || (result != "" && l.result != result) {
		return false
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if l.fields[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}

func (l logLine) int(key string) int64 {
	n, err := strconv.ParseInt(l.fields[key], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func readLogLines(path string) []logLine {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "action: ")
		if i < 0 {
			continue
		}
		parts := strings.Split(line[i+len("action: "):], " | ")
		l := logLine{action: parts[0], fields: map[string]string{}}
		for _, p := range parts[1:] {
			k, v, _ := strings.Cut(p, ": ")
			if k == "result" {
				l.result = v
			} else {
				l.fields[k] = v
			}
		}
		out = append(out, l)
	}
	return out
}

func find(lines []logLine, action, result string, kv ...string) []logLine {
	var out []logLine
	for _, l := range lines {
		if l.is(action, result, kv...) {
			out = append(out, l)
		}
	}
	return out
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// waitFor polls until cond holds, failing the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cluster is a server process on a fixed address and data directory,
// restartable, plus the agency processes talking to it.
type cluster struct {
	t       *testing.T
	bins    string
	data    *faultData
	addr    string
	dialTo  string // where agencies connect: addr, or a proxy in front of it
	ioWait  string // the agencies' --io-timeout
	dataDir string
	logs    string
	grace   time.Duration

	server   *proc
	runs     int // server incarnations so far
	agencies map[int]*proc
	agRuns   map[int]int
	poll     map[int]bool // agencies that wait with --wait poll
}

func newCluster(t *testing.T, data *faultData) *cluster {
	c := &cluster{
		t: t, bins: binaries(t), data: data, addr: pickPort(t), ioWait: "10s",
		dataDir: filepath.Join(t.TempDir(), "data"), logs: t.TempDir(), grace: 10 * time.Second,
		agencies: map[int]*proc{}, agRuns: map[int]int{}, poll: map[int]bool{5: true},
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(c.logs, "*.log"))
		for _, path := range logs {
			t.Logf("%s:\n%s", filepath.Base(path), tail(path, 12))
		}
	})
	return c
}

// startServer starts a new server incarnation and waits until it listens.
func (c *cluster) startServer() *proc {
	c.t.Helper()
	c.runs++
	name := fmt.Sprintf("server-%d", c.runs)
	p := startProc(c.t, name, filepath.Join(c.logs, name+".log"), filepath.Join(c.bins, "eventserver"),
		"--listen", c.addr, "--agencies", strconv.Itoa(len(c.data.bets)), "--data-dir", c.dataDir,
		"--winning-number", strconv.Itoa(faultWinning), "--read-timeout", "10s",
		"--shutdown-grace", c.grace.String(), "--retry-after", "100ms")
	c.server = p
	waitFor(c.t, 20*time.Second, name+" to listen", func() bool {
		if p.exited() {
			c.t.Fatalf("%s exited with %d:\n%s", name, p.code, tail(p.log, 20))
		}
		return len(find(p.lines(), "listen", "success")) > 0
	})
	return p
}

// startAgency starts a new process for agency id.
func (c *cluster) startAgency(id int) *proc {
	c.t.Helper()
	c.agRuns[id]++
	name := fmt.Sprintf("agency-%d-run-%d", id, c.agRuns[id])
	wait := agency.WaitHold
	if c.poll[id] {
		wait = agency.WaitPoll
	}
	p := startProc(c.t, name, filepath.Join(c.logs, name+".log"), filepath.Join(c.bins, "agency"),
		"--id", strconv.Itoa(id), "--server", cmp.Or(c.dialTo, c.addr), "--bets", c.data.file(id),
		"--batch-max-amount", "5", "--wait", wait, "--retry-base", "20ms", "--retry-max", "300ms",
		"--give-up", "60s", "--io-timeout", c.ioWait)
	c.agencies[id] = p
	return p
}

func (c *cluster) startAgencies() {
	for id := 1; id <= len(c.data.bets); id++ {
		c.startAgency(id)
	}
}

// finishAgencies waits for every agency's current process to exit 0 with
// its winners logged.
func (c *cluster) finishAgencies() {
	c.t.Helper()
	for id := 1; id <= len(c.data.bets); id++ {
		p := c.agencies[id]
		if code := p.wait(c.t, 90*time.Second); code != 0 {
			c.t.Fatalf("%s exited with %d:\n%s", p.name, code, tail(p.log, 20))
		}
		want := strconv.Itoa(c.data.winners(id))
		lines := p.lines()
		if len(find(lines, "consulta_ganadores", "success", "agency", strconv.Itoa(id), "cant_ganadores", want)) != 1 {
			c.t.Errorf("%s: no `consulta_ganadores | result: success | cant_ganadores: %s` line:\n%s", p.name, want, tail(p.log, 10))
		}
		if len(find(lines, "exit", "success", "bets", strconv.Itoa(len(c.data.bets[id-1])), "cant_ganadores", want)) != 1 {
			c.t.Errorf("%s: no `exit | result: success` line with all bets and %s winners", p.name, want)
		}
	}
}

// stopServer sends SIGTERM and expects a clean exit.
func (c *cluster) stopServer() {
	c.t.Helper()
	c.server.signal(syscall.SIGTERM)
	if code := c.server.wait(c.t, c.grace+20*time.Second); code != 0 {
		c.t.Fatalf("%s exited with %d after SIGTERM:\n%s", c.server.name, code, tail(c.server.log, 20))
	}
}

// checkStore compares bets.csv with the agency files, exactly and in order,
// and runs bin/verify on them too.
func (c *cluster) checkStore() {
	c.t.Helper()
	path := filepath.Join(c.dataDir, persist.BetsFile)
	got := storedByAgency(c.t, path, -1)
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
	out, err := exec.Command(filepath.Join(c.bins, "verify"), "--store", path,
		"--agency-files", filepath.Join(c.data.dir, "agency-%d.csv"),
		"--agencies", strconv.Itoa(len(c.data.bets)), "--winning-number", strconv.Itoa(faultWinning)).CombinedOutput()
	if err != nil {
		c.t.Errorf("bin/verify: %v\n%s", err, out)
	}
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
	for b, err := range persist.LoadBets(r) {
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
func storedLogged(lines []logLine) map[uint32]int {
	out := map[uint32]int{}
	for _, l := range find(lines, "apuesta_recibida", "success") {
		id, _ := strconv.Atoi(l.fields["agency"])
		out[uint32(id)] += int(l.int("stored"))
	}
	return out
}

// checkRecovery checks a new server run's recovery: the store_open line
// names the bets in the committed prefix of bets.csv, that prefix is, per
// agency, the start of the agency's file, and it keeps at least held plus
// what the killed run logged as stored. sizeBefore is bets.csv's size when
// the server was down; a longer file must have been cut, with store_recover.
// It returns the bets held per agency.
func (c *cluster) checkRecovery(held map[uint32]int, logged map[uint32]int, sizeBefore int64) map[uint32]int {
	c.t.Helper()
	lines := c.server.lines()
	opens := find(lines, "store_open", "success")
	if len(opens) != 1 {
		c.t.Fatalf("%s: %d store_open success lines", c.server.name, len(opens))
	}
	committed, bets := opens[0].int("committed_bytes"), opens[0].int("bets")
	cuts := find(lines, "store_recover", "success", "file", persist.BetsFile)
	switch {
	case sizeBefore > committed:
		if len(cuts) != 1 || cuts[0].int("cut_bytes") != sizeBefore-committed {
			c.t.Errorf("%s: bets.csv had %d bytes, %d committed; want one store_recover line cutting %d bytes, got %v",
				c.server.name, sizeBefore, committed, sizeBefore-committed, cuts)
		}
	case sizeBefore == committed:
		if len(cuts) != 0 {
			c.t.Errorf("%s: store_recover %v but bets.csv had no torn tail", c.server.name, cuts)
		}
	default:
		c.t.Fatalf("%s: committed %d bytes but bets.csv had only %d", c.server.name, committed, sizeBefore)
	}
	prefix := storedByAgency(c.t, filepath.Join(c.dataDir, persist.BetsFile), committed)
	now := map[uint32]int{}
	sum := 0
	for id := uint32(1); id <= uint32(len(c.data.bets)); id++ {
		got := prefix[id]
		want := c.data.bets[id-1]
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
			c.t.Errorf("%s: recovered bets of agency %d are not the start of its file (first difference at %d)",
				c.server.name, id, firstDiff(got, want))
		}
		if len(got) < held[id]+logged[id] {
			c.t.Errorf("%s: agency %d has %d bets after recovery; %d were held and %d more acknowledged: acknowledged bets lost",
				c.server.name, id, len(got), held[id], logged[id])
		}
		now[id] = len(got)
		sum += len(got)
	}
	if int64(sum) != bets {
		c.t.Errorf("%s: store_open says %d bets, committed prefix holds %d", c.server.name, bets, sum)
	}
	c.t.Logf("%s: recovered %d bets (%d bytes committed, %d cut)", c.server.name, bets, committed, sizeBefore-committed)
	return now
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

func faultRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, 1))
}

func pause(r *rand.Rand) { time.Sleep(time.Duration(50+r.IntN(351)) * time.Millisecond) }

// uploading waits until the server has stored at least n batches.
func (c *cluster) uploading(n int) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, "the upload to start", func() bool {
		return len(find(c.server.lines(), "apuesta_recibida", "success")) >= n
	})
}

// TestServerKilledMidUpload SIGKILLs the server several times while five
// agency processes upload, restarting it each time on the same data
// directory and port. The agencies must finish on their own with their
// winners, and the store must hold each agency's file exactly.
func TestServerKilledMidUpload(t *testing.T) {
	data := makeFaultData(t, []int{3000, 2500, 2000, 1500, 400}, 21)
	c := newCluster(t, data)
	r := faultRand(t)
	c.startServer()
	c.startAgencies()
	c.uploading(1)

	held := map[uint32]int{}
	betsPath := filepath.Join(c.dataDir, persist.BetsFile)
	journalPath := filepath.Join(c.dataDir, persist.JournalFile)
	kills := 4 + r.IntN(3)
	for k := range kills {
		if k == 0 {
			time.Sleep(time.Duration(50+r.IntN(101)) * time.Millisecond) // early enough to land mid-upload
		} else {
			pause(r)
		}
		c.server.kill(t)
		logged := storedLogged(c.server.lines())
		if k == 1 {
			// A row written without its journal record, and half a journal
			// record: what a crash inside a commit leaves behind.
			appendFile(t, betsPath, []byte("3,Torn,Row,3012"))
			appendFile(t, journalPath, []byte{0, 0, 0, 40, 0xAB})
		}
		size := fileSize(t, betsPath)
		c.startServer()
		held = c.checkRecovery(held, logged, size)
		if k == 0 && sum(held) >= data.total() {
			t.Fatalf("the first kill came after the whole upload; the test exercised nothing")
		}
		if k == 1 {
			lines := c.server.lines()
			if j := find(lines, "store_recover", "success", "file", persist.JournalFile); len(j) != 1 || j[0].int("cut_bytes") < 5 {
				t.Errorf("%s: want a store_recover line cutting the torn journal record, got %v", c.server.name, j)
			}
		}
	}
	c.finishAgencies()
	reconnects := 0
	for id := 1; id <= len(data.bets); id++ {
		reconnects += len(find(c.agencies[id].lines(), "connect", "in_progress"))
	}
	if reconnects == 0 {
		t.Errorf("no agency logged a reconnect; the kills went unnoticed")
	}
	c.stopServer()
	c.checkStore()
	t.Logf("%d kills, %d reconnect attempts logged by agencies", kills, reconnects)
}

func sum(m map[uint32]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestAgencyKilledMidUpload SIGKILLs agency processes at random moments of
// their upload and starts them again: each new process must resume where the
// server's WELCOME says, and the store must end up holding every file once.
func TestAgencyKilledMidUpload(t *testing.T) {
	data := makeFaultData(t, []int{3000, 2500, 2000, 1500, 400}, 22)
	c := newCluster(t, data)
	r := faultRand(t)
	c.startServer()
	c.startAgencies()
	c.uploading(1)

	resumed := 0
	for range 5 + r.IntN(2) {
		pause(r)
		var running []int
		for id, p := range c.agencies {
			if !p.exited() {
				running = append(running, id)
			}
		}
		if len(running) == 0 {
			break
		}
		slices.Sort(running)
		id := running[r.IntN(len(running))]
		c.agencies[id].kill(t)
		acked := storedLogged(c.server.lines())[uint32(id)]
		p := c.startAgency(id)
		var hello logLine
		waitFor(t, 30*time.Second, p.name+" to say hello", func() bool {
			h := find(p.lines(), "hello", "success")
			if len(h) > 0 {
				hello = h[0]
			}
			return len(h) > 0
		})
		got := int(hello.int("held"))
		if got < acked || got > len(data.bets[id-1]) {
			t.Errorf("%s: WELCOME held %d; the server had acknowledged %d of %d bets", p.name, got, acked, len(data.bets[id-1]))
		}
		if got > 0 {
			resumed++
		}
	}
	if resumed == 0 {
		t.Errorf("no restarted agency resumed from a nonzero WELCOME; the kills exercised nothing")
	}
	c.finishAgencies()
	c.stopServer()
	c.checkStore()
}

// TestNetworkCutMidUpload puts a proxy between the agency processes and the
// server and, at random moments, either resets every connection or stops
// forwarding for a while (so the agencies' ACK waits time out) and then
// resets or resumes. Late bytes of a dead connection may still reach the
// server after the agency reconnected. The agencies must finish and the
// store must hold each file exactly once.
func TestNetworkCutMidUpload(t *testing.T) {
	data := makeFaultData(t, []int{3000, 2500, 2000, 1500, 400}, 25)
	c := newCluster(t, data)
	c.ioWait = "500ms"
	r := faultRand(t)
	c.startServer()
	px := startCutProxy(t, c.addr)
	c.dialTo = px.addr()
	c.startAgencies()
	c.uploading(1)

	faults := []int{0, 1, 2, r.IntN(3)} // each kind at least once
	r.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
	for _, fault := range faults {
		pause(r)
		switch fault {
		case 0:
			t.Logf("reset %d connections", px.cutAll())
		case 1:
			px.freeze()
			time.Sleep(1200 * time.Millisecond)
			t.Logf("stalled, then reset %d connections", px.cutAll())
			px.thaw()
		case 2:
			px.freeze()
			time.Sleep(1200 * time.Millisecond)
			px.thaw()
			t.Logf("stalled, then resumed")
		}
	}
	c.finishAgencies()
	timeouts := 0
	for id := 1; id <= len(data.bets); id++ {
		for _, l := range find(c.agencies[id].lines(), "connect", "in_progress") {
			if strings.Contains(l.fields["error"], "timeout") {
				timeouts++
			}
		}
	}
	t.Logf("%d reconnects after a timed-out wait", timeouts)
	c.stopServer()
	c.checkStore()
}

// cutProxy forwards TCP connections to a target and can stall or reset them.
type cutProxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	gate   sync.RWMutex // held for writing while forwarding is stalled
	mu     sync.Mutex
	links  map[net.Conn]net.Conn
	wg     sync.WaitGroup
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, ln: ln, target: target, links: map[net.Conn]net.Conn{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cutAll()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.links[in] = out
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

// pipe copies src to dst, waiting at the gate before each write; when
// either side ends, both are closed.
func (p *cutProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.gate.RLock()
			_, werr := dst.Write(buf[:n])
			p.gate.RUnlock()
			if werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	src.Close()
	dst.Close()
	p.mu.Lock()
	delete(p.links, src)
	delete(p.links, dst)
	p.mu.Unlock()
}

func (p *cutProxy) freeze() { p.gate.Lock() }
func (p *cutProxy) thaw()   { p.gate.Unlock() }

// cutAll closes every forwarded connection on both sides.
func (p *cutProxy) cutAll() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for in, out := range p.links {
		in.Close()
		out.Close()
		n++
	}
	return n
}
