package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/internal/proctest"
	"github.com/tp0/loteria/metrics"
	"github.com/tp0/loteria/secure"
)

// mountTmpfs mounts a tmpfs of the given size on dir, which it creates,
// and unmounts it when the test ends. Without the right to mount, the
// test is skipped, except in CI (CI=true), where it must run.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot mount a %s tmpfs on %s for a real full disk (needs root or CAP_SYS_ADMIN): %v: %s",
			size, dir, err, strings.TrimSpace(string(out)))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI=true, where this test must run: give the job the right to mount")
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
}

// supervisor restarts the cluster's server whenever it exits non-zero, as
// Compose's restart policy does; tick does one step of that and is called
// from the test's own waits, so nothing runs behind the test's back.
type supervisor struct {
	c        *cluster
	stopped  bool
	failures []*proctest.Proc // incarnations that exited non-zero, in order
	handled  int              // the incarnation whose exit was dealt with last
}

func (s *supervisor) tick() {
	p := s.c.server
	if s.stopped || !p.Exited() || s.handled == s.c.runs {
		return
	}
	s.handled = s.c.runs
	if p.Code() == 0 {
		return
	}
	s.failures = append(s.failures, p)
	time.Sleep(100 * time.Millisecond) // a supervisor's restart delay
	s.c.spawnServer()
}

// waitFor is proctest.WaitFor with the supervisor at work.
func (s *supervisor) waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	proctest.WaitFor(t, limit, what, func() bool {
		s.tick()
		return cond()
	})
}

// TestFullDiskCrashOnly runs the server on a real full disk (a 1 MiB tmpfs)
// under a supervisor loop, while five secured agencies whose bets do not
// fit upload (issue 8 §4): the server tells the agencies ERROR storage,
// logs `store | result: fail` and exits 1 promptly (crash-only), its
// restarts fail as long as the disk is full, and the agencies retry; an
// agency run with --give-up 3s gives up within a bounded time, as nothing
// it sends gets acknowledged. Then the tmpfs grows: the agencies that
// kept trying finish by themselves, the one that gave up finishes once
// started again, and the store equals their files exactly.
func TestFullDiskCrashOnly(t *testing.T) {
	t.Parallel()
	data := makeFaultData(t, []int{9000, 8000, 7000, 6000, 2000}, 26) // about 1.6 MB of rows
	c := newCluster(t, data)
	mountTmpfs(t, c.dataDir, "1m")
	c.batch = "20"
	c.extra = []string{"--metrics-listen", "127.0.0.1:0"}
	sup := &supervisor{c: c}
	first := c.startServer()
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body, err := httpGet("http://" + c.metrics + path); err != nil || code != http.StatusOK {
			t.Errorf("GET %s while the store is writable: %d %q %v", path, code, body, err)
		}
	}
	for id := 1; id <= len(data.bets); id++ {
		if id == 4 {
			c.startAgency(id, "--give-up", "3s")
		} else {
			c.startAgency(id)
		}
	}

	// The store fails; the server says so and exits 1, without waiting for anyone.
	var failedAt time.Time
	readyz := map[int]int{}
	var unready []string // the bodies of 503 answers
	poll := func() {
		code, body, err := httpGet("http://" + c.metrics + "/readyz")
		if err != nil {
			return
		}
		readyz[code]++
		if code != http.StatusOK {
			unready = append(unready, body)
		}
	}
	proctest.WaitFor(t, 2*hangGuard, "the disk to fill and the store to fail", func() bool {
		poll()
		if len(proctest.Find(first.Lines(), "store", "fail")) > 0 {
			failedAt = time.Now()
			return true
		}
		if first.Exited() {
			t.Fatalf("%s exited with %d before its store failed:\n%s", first.Name, first.Code(), proctest.Tail(first.Log, 20))
		}
		return false
	})
	for !first.Exited() && time.Since(failedAt) < 5*time.Second {
		poll()
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("/readyz answers while server-1 ran: %v (503 is seen only if a poll lands in the short drain)", readyz)
	for _, body := range unready {
		if !strings.Contains(body, "store failed") {
			t.Errorf("/readyz while the store fails: 503 %q, want it to name the failed store", body)
			break
		}
	}
	code := first.Wait(t, hangGuard)
	took := first.End().Sub(failedAt)
	t.Logf("%s exited %v after its store failed", first.Name, took.Round(time.Millisecond))
	lines := first.Lines()
	if code != 1 || took > 20*time.Second {
		t.Errorf("%s exited with %d, %v after its store failed; want 1, promptly", first.Name, code, took.Round(time.Millisecond))
	}
	if f := proctest.Find(lines, "store_commit", "fail"); len(f) == 0 || !strings.Contains(f[0].Fields["error"], "no space left on device") {
		t.Errorf("%s: want a store_commit fail line naming the full disk, got %v", first.Name, f)
	}
	for _, action := range []string{"store", "server_exit"} {
		if len(proctest.Find(lines, action, "fail")) != 1 {
			t.Errorf("%s: want one `%s | result: fail` line:\n%s", first.Name, action, proctest.Tail(first.Log, 15))
		}
	}
	if len(proctest.Find(lines, "session_error", "fail", "code", frame.CodeStorage.String())) == 0 {
		t.Errorf("%s: no session was told ERROR storage", first.Name)
	}

	// Restarts fail while the disk is full; the agencies keep trying, and
	// agency 4 gives up once nothing it sent was acknowledged for 3s.
	sup.waitFor(t, 2*hangGuard, "agency 4 to give up", func() bool { return c.agencies[4].Exited() })
	gaveUp := c.agencies[4]
	if after := gaveUp.End().Sub(failedAt); gaveUp.Code() != 1 || after > 30*time.Second {
		t.Errorf("%s exited with %d, %v after the store failed; want 1 within 3s (--give-up) and some retries",
			gaveUp.Name, gaveUp.Code(), after.Round(time.Millisecond))
	} else {
		t.Logf("%s gave up %v after the store failed", gaveUp.Name, after.Round(time.Millisecond))
	}
	if e := proctest.Find(gaveUp.Lines(), "exit", "fail"); len(e) != 1 || !strings.Contains(e[0].Fields["error"], "gave up") {
		t.Errorf("%s: want an `exit | result: fail` line saying it gave up, got %v", gaveUp.Name, e)
	}
	sup.waitFor(t, 2*hangGuard, "a failed restart on the full disk", func() bool { return len(sup.failures) >= 2 })
	storage := 0
	for _, id := range []int{1, 2, 3, 5} {
		p := c.agencies[id]
		if p.Exited() {
			t.Fatalf("%s exited (%d) while the server was failing; it should keep retrying:\n%s", p.Name, p.Code(), proctest.Tail(p.Log, 10))
		}
	}
	for _, p := range c.agencies {
		for _, l := range append(proctest.Find(p.Lines(), "connect", "in_progress"), proctest.Find(p.Lines(), "exit", "fail")...) {
			if strings.Contains(l.Fields["error"], "(storage)") {
				storage++
			}
		}
	}
	if storage == 0 {
		t.Errorf("no agency logged the server's ERROR storage")
	}
	t.Logf("%d server incarnations failed on the full disk; agencies logged ERROR storage %d times", len(sup.failures), storage)

	// More room: the next restart recovers and the agencies finish.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", c.dataDir).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v: %s", err, out)
	}
	c.startAgency(4, "--give-up", "60s")
	sup.waitFor(t, 3*hangGuard, "the agencies to finish after the disk grew", func() bool {
		for _, p := range c.agencies {
			if !p.Exited() {
				return false
			}
		}
		return true
	})
	roots := c.finishAgencies()
	sup.stopped = true
	c.stopServer()
	c.checkStore()
	c.checkEvidence(roots)
}

// TestReadyzFollowsStoreAndDrain checks main's readiness rule on a server
// whose store is driven by an fsync hook (issue 11 §Tests, issue 8 §4):
// /readyz is 503 while the store recovers, 200 while it can write, 503
// during a SIGTERM drain held open by a batch whose fsync has not
// returned, and 503 naming the failed store once an fsync fails.
// /healthz stays 200 while the server runs.
func TestReadyzFollowsStoreAndDrain(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	keys := writeKeys(t, 2)
	const (
		syncOK = iota
		syncBlock
		syncFail
	)
	var mode atomic.Int32
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	hook := func(f *os.File) error {
		switch mode.Load() {
		case syncBlock:
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		case syncFail:
			return fmt.Errorf("injected fsync failure: %w", syscall.EIO)
		}
		return f.Sync()
	}
	newServer := func() (*eventserver.Server, http.Handler) {
		srv, err := eventserver.New(eventserver.Config{
			Listen: "127.0.0.1:0", Agencies: 2, DataDir: t.TempDir(), WinningNumber: faultWinning,
			ShutdownGrace: hangGuard, Keys: keys.store, SignKey: keys.sign, Logger: zap.NewNop(), StoreSync: hook,
		})
		if err != nil {
			t.Fatal(err)
		}
		h := metrics.Handler(metrics.New(2).Registry(), metrics.Health{
			Live:  func() error { return nil },
			Ready: func() error { return ready(srv) },
		})
		return srv, h
	}
	get := func(h http.Handler, path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	expect := func(h http.Handler, path string, code int, body string) {
		t.Helper()
		if got, text := get(h, path); got != code || !strings.Contains(text, body) {
			t.Errorf("GET %s: %d %q, want %d with %q", path, got, text, code, body)
		}
	}
	if err := ready(nil); err == nil || !strings.Contains(err.Error(), "recovering") {
		t.Errorf("ready before the store is open: %v", err)
	}

	// A SIGTERM drain, held open by a batch whose fsync has not returned.
	srv, h := newServer()
	expect(h, "/readyz", http.StatusServiceUnavailable, "not listening")
	stop := serve(t, srv)
	expect(h, "/readyz", http.StatusOK, "ok")
	expect(h, "/healthz", http.StatusOK, "ok")
	mode.Store(syncBlock)
	ag := dialAgency(t, srv.Addr(), keys, 1)
	ag.send(t, &frame.Bets{First: 0, Bets: oneBet()})
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	proctest.WaitFor(t, hangGuard, "the drain to start", srv.Draining)
	expect(h, "/readyz", http.StatusServiceUnavailable, "draining")
	expect(h, "/healthz", http.StatusOK, "ok")
	mode.Store(syncOK)
	close(release)
	if err := <-stopped; err != nil {
		t.Errorf("drain: %v", err)
	}
	if ack, ok := ag.next(t).(*frame.Ack); !ok || ack.Held != 1 {
		t.Errorf("the batch in flight at the drain was not acknowledged: %v", ack)
	}
	if e, ok := ag.next(t).(*frame.Error); !ok || e.Code != frame.CodeShuttingDown {
		t.Errorf("after the last ACK of a drain: %v, want ERROR shutting_down", e)
	}

	// An fsync that fails: the agency is told, the server stops, and
	// /readyz says why.
	srv, h = newServer()
	stop = serve(t, srv)
	expect(h, "/readyz", http.StatusOK, "ok")
	ag = dialAgency(t, srv.Addr(), keys, 1)
	mode.Store(syncFail)
	ag.send(t, &frame.Bets{First: 0, Bets: oneBet()})
	if e, ok := ag.next(t).(*frame.Error); !ok || e.Code != frame.CodeStorage {
		t.Errorf("answer to a batch the store could not write: %v, want ERROR storage", e)
	}
	if err := stop(); !errors.Is(err, eventserver.ErrStoreFailed) {
		t.Errorf("Serve after a failed fsync returned %v, want ErrStoreFailed", err)
	}
	expect(h, "/readyz", http.StatusServiceUnavailable, "store failed")
}

func oneBet() []frame.Bet {
	return []frame.Bet{{FirstName: "Ana", LastName: "Paz", Document: "30111222", Birthdate: frame.Date(19800101), Number: 1}}
}

// agencyConn is a hand-driven secured agency connection, past WELCOME.
type agencyConn struct {
	sc  *secure.ClientConn
	dec frame.Decoder
}

func dialAgency(t *testing.T, addr string, keys *memKeys, id uint32) *agencyConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(hangGuard))
	sc, err := secure.Client(c, keys.agency[id], keys.serverPub, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	a := &agencyConn{sc: sc}
	a.send(t, &frame.Hello{Agency: id})
	if w, ok := a.next(t).(*frame.Welcome); !ok {
		t.Fatalf("answer to HELLO %d: %v", id, w)
	}
	return a
}

func (a *agencyConn) send(t *testing.T, f frame.Frame) {
	t.Helper()
	if err := a.sc.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
}

func (a *agencyConn) next(t *testing.T) frame.Frame {
	t.Helper()
	f, err := a.dec.Next(a.sc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return f
}

// TestUnreachableDatabaseExitsAtStart runs a server whose --store names a
// database nobody listens on: it exits 1 with a fail line that names the
// database, for its supervisor to restart, and never listens.
func TestUnreachableDatabaseExitsAtStart(t *testing.T) {
	t.Parallel()
	c := newInsecureCluster(t, makeFaultData(t, []int{10}, 3))
	nobody := pickPort(t)
	p := c.spawnServer("--store", "postgres://loteria@"+nobody+"/lottery?connect_timeout=2")
	if code := p.Wait(t, hangGuard); code != 1 {
		t.Fatalf("a server with an unreachable database: exit %d, want 1\n%s", code, proctest.Tail(p.Log, 20))
	}
	var named bool
	for _, action := range []string{"pg_store_open", "server_start"} {
		for _, l := range proctest.Find(p.Lines(), action, "fail") {
			named = named || strings.Contains(l.Fields["database"]+l.Fields["error"], nobody)
		}
	}
	if !named {
		t.Errorf("no fail line names the database at %s:\n%s", nobody, proctest.Tail(p.Log, 20))
	}
	if len(proctest.Find(p.Lines(), "listen", "success")) != 0 {
		t.Error("the server listened without its database")
	}
}

// TestPeerCannotForgeServerLogFields: a bet whose document holds the log
// line's separator is refused, and the refusal's line, which quotes the
// document, still reads back as agency 1's failure, not as a success of
// agency 2.
func TestPeerCannotForgeServerLogFields(t *testing.T) {
	dir := t.TempDir()
	addr, r := startRun(t, []string{"--listen", "127.0.0.1:0", "--agencies", "2", "--insecure"},
		cfgEnv{"SERVER_DATA_DIR": dir})
	c := dialT(t, addr)
	if err := frame.Write(c, &frame.Hello{Agency: 1}); err != nil {
		t.Fatal(err)
	}
	if f := nextFrame(t, c); f.Type() != frame.TypeWelcome {
		t.Fatalf("HELLO answered %v", f)
	}
	bad := []frame.Bet{{FirstName: "Ana", LastName: "Paz", Document: "1 | result: success | agency: 2 | x: ",
		Birthdate: frame.Date(19800101), Number: 1}}
	if err := frame.Write(c, &frame.Bets{First: 0, Bets: bad}); err != nil {
		t.Fatal(err)
	}
	if f := nextFrame(t, c); f.Type() != frame.TypeReject {
		t.Fatalf("the bad bet was answered %v, want REJECT", f)
	}
	r.sigs <- syscall.SIGTERM
	waitExit(t, r.done, r.stdout)
	for _, s := range strings.Split(r.stdout.String(), "\n") {
		l, ok := logging.ParseLine(s)
		if !ok || l.Action != "apuesta_recibida" {
			continue
		}
		if l.Result != "fail" || l.Fields["agency"] != "1" || !strings.Contains(l.Fields["error"], bad[0].Document) {
			t.Errorf("agency 1's rejected batch %q reads back as result %q, agency %q, error %q", s, l.Result, l.Fields["agency"], l.Fields["error"])
		}
		return
	}
	t.Fatalf("no apuesta_recibida line:\n%s", r.stdout.String())
}
