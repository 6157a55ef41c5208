package main

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/internal/proctest"
	"github.com/tp0/loteria/persist/filestore"
)

// TestDrainOnSigterm sends SIGTERM to a secured server process in the
// middle of five uploads over a slow link: it must drain in order and exit 0, with every
// bet it acknowledged on disk, and keep answering /readyz (503) until the
// drain is over; restarted, it recovers exactly the acknowledged bets and
// lets the agencies, which kept retrying, finish, and the store equals
// their files.
func TestDrainOnSigterm(t *testing.T) {
	t.Parallel()
	data := makeFaultData(t, []int{4000, 3000, 2500, 2000, 500}, 23)
	c := newCluster(t, data)
	c.extra = []string{"--metrics-listen", "127.0.0.1:0"}
	c.startServer()
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body, err := httpGet("http://" + c.metrics + path); err != nil || code != 200 {
			t.Errorf("GET %s before the drain: %d %q %v, want 200", path, code, body, err)
		}
	}
	// Over a slow link, as the fault tests: on loopback the whole upload
	// can end before the first lines the server buffers reach its log.
	c.dialTo = startCutProxy(t, c.addr, proxyRate).addr()
	c.startAgencies()
	c.uploading(30)

	start := time.Now()
	c.server.Signal(syscall.SIGTERM)
	code := c.server.Wait(t, c.grace+hangGuard)
	t.Logf("server drained in %v", time.Since(start).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("server exited with %d after SIGTERM:\n%s", code, proctest.Tail(c.server.Log, 20))
	}
	lines := c.server.Lines()
	checkDrainOrder(t, lines)
	if f := proctest.Find(lines, "shutdown", "fail"); len(f) > 0 {
		t.Errorf("drain did not finish within the grace: %v", f)
	}

	// Every batch the server acknowledged is on disk, as a prefix of its file.
	betsPath := filepath.Join(c.dataDir, filestore.BetsFile)
	disk := storedByAgency(t, betsPath, -1)
	logged := storedLogged(lines)
	total := 0
	for id := 1; id <= len(data.bets); id++ {
		got, want := disk[uint32(id)], data.bets[id-1]
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
			t.Errorf("agency %d: stored bets are not the start of its file (first difference at %d)", id, firstDiff(got, want))
		}
		if len(got) != logged[uint32(id)] {
			t.Errorf("agency %d: %d bets on disk, %d acknowledged", id, len(got), logged[uint32(id)])
		}
		total += len(got)
	}
	if total >= data.total() {
		t.Fatalf("SIGTERM came after the whole upload; the test exercised nothing")
	}
	closed := proctest.Find(lines, "file_store_close", "success")
	if len(closed) != 1 || closed[0].Int("committed_bytes") != fileSize(t, betsPath) {
		t.Errorf("file_store_close %v; bets.csv has %d bytes", closed, fileSize(t, betsPath))
	}

	// The agencies keep retrying while the server is down. Agency 1 is
	// stopped instead: every bet it counts as acknowledged is on disk. (It
	// may count fewer: with batches in flight, a write that fails on the
	// closed connection ends its session before it reads the last ACKs.)
	hellos := map[int]int{}
	for id, p := range c.agencies {
		if p.Exited() {
			t.Fatalf("%s exited while the server was down:\n%s", p.Name, proctest.Tail(p.Log, 10))
		}
		hellos[id] = len(proctest.Find(p.Lines(), "hello", "success"))
	}
	first := c.agencies[1]
	first.Signal(syscall.SIGTERM)
	if code := first.Wait(t, hangGuard); code != 0 {
		t.Fatalf("%s exited with %d after SIGTERM", first.Name, code)
	}
	stopped := proctest.Find(first.Lines(), "shutdown", "success")
	if len(stopped) != 1 || stopped[0].Int("bets_acknowledged") < 0 || stopped[0].Int("bets_acknowledged") > int64(len(disk[1])) {
		t.Errorf("%s: shutdown lines %v; %d of its bets are on disk", first.Name, stopped, len(disk[1]))
	} else if acked := stopped[0].Int("bets_acknowledged"); acked != int64(len(disk[1])) {
		t.Logf("%s counted %d bets acknowledged; the server acknowledged %d", first.Name, acked, len(disk[1]))
	}

	c.startServer()
	if opens := proctest.Find(c.server.Lines(), "store_open", "success"); len(opens) != 1 || opens[0].Int("bets") != int64(total) {
		t.Errorf("after the restart store_open %v, want %d bets", opens, total)
	}
	if cuts := proctest.Find(c.server.Lines(), "store_recover", ""); len(cuts) > 0 {
		t.Errorf("a clean drain left something to recover: %v", cuts)
	}
	c.startAgency(1)
	hellos[1] = 0
	roots := c.finishAgencies()
	for id := 1; id <= len(data.bets); id++ {
		p := c.agencies[id]
		h := proctest.Find(p.Lines(), "hello", "success")
		if len(h) <= hellos[id] {
			t.Errorf("%s: no hello after the restart", p.Name)
			continue
		}
		if held := h[hellos[id]].Int("held"); held != int64(len(disk[uint32(id)])) {
			t.Errorf("%s: resumed from WELCOME held %d, the drain left %d bets on disk", p.Name, held, len(disk[uint32(id)]))
		}
	}
	c.stopServer()
	c.checkStore()
	c.checkEvidence(roots)
}

// checkDrainOrder checks that the server logged the drain steps in order:
// stop accepting, finish in-flight batches (when there were connections),
// close each connection, stop the engine, then flush, sync and close the
// store; and that the metrics server (/readyz) was still up through all of
// it, stopping only after the drain.
func checkDrainOrder(t *testing.T, lines []logging.Line) {
	t.Helper()
	pos := -1
	next := func(step string, match func(logging.Line) bool) {
		t.Helper()
		for i := pos + 1; i < len(lines); i++ {
			if match(lines[i]) {
				pos = i
				return
			}
		}
		t.Fatalf("drain step %q missing or out of order; steps logged:\n%s", step, drainSteps(lines))
	}
	is := func(action, result string, kv ...string) func(logging.Line) bool {
		return func(l logging.Line) bool { return l.Is(action, result, kv...) }
	}
	file := func(action, name string) func(logging.Line) bool {
		return func(l logging.Line) bool {
			return l.Is(action, "success") && filepath.Base(l.Fields["file"]) == name
		}
	}
	next("signal", is("signal", "success", "signal", "terminated"))
	next("stop accepting", is("shutdown", "in_progress", "step", "stop_accepting"))
	stop := pos
	conns := lines[stop].Int("connections")
	if conns > 0 {
		next("finish in-flight", is("shutdown", "in_progress", "step", "finish_in_flight"))
	}
	next("engine stop", is("engine_stop", "success"))
	closed, refused := 0, 0
	for _, l := range lines[stop:pos] {
		if l.Is("connection_closed", "") {
			closed++
		}
		if l.Is("session_error", "fail", "code", frame.CodeShuttingDown.String()) {
			refused++
			if l.Fields["agency"] == "0" {
				closed++ // before HELLO its connection_closed line is a debug line
			}
		}
	}
	if closed < int(conns) {
		t.Errorf("%d connections open at the drain, %d connection_closed lines before engine_stop", conns, closed)
	}
	if conns > 0 && refused == 0 {
		t.Errorf("no session was told ERROR shutting_down")
	}
	next("store drain", is("store_drain", "in_progress"))
	next("store drained", is("store_drain", "success"))
	next("sync bets.csv", file("file_sync", filestore.BetsFile))
	next("close bets.csv", file("file_close", filestore.BetsFile))
	next("sync journal", file("file_sync", filestore.JournalFile))
	next("close journal", file("file_close", filestore.JournalFile))
	next("store close", is("store_close", "success"))
	next("shutdown done", is("shutdown", "success"))
	next("exit", is("server_exit", "success"))
	for i, l := range lines {
		if l.Is("metrics_shutdown", "") && i < pos {
			t.Errorf("the metrics server (/readyz) stopped during the drain, at line %d of %d: it must answer 503 until the drain is over", i, pos)
		}
	}
	t.Logf("drain: %d connections at stop_accepting, %d connection_closed lines, %d told shutting_down", conns, closed, refused)
}

func drainSteps(lines []logging.Line) string {
	var b strings.Builder
	for _, l := range lines {
		switch l.Action {
		case "apuesta_recibida", "hello", "config", "listen", "store_open", "agency_finished", "connection_replaced":
			continue
		}
		b.WriteString("  " + l.Action + " " + l.Result + " " + l.Fields["step"] + l.Fields["file"] + "\n")
	}
	return b.String()
}

// TestInProcessDrainResumeNoLeak runs agency.Run and a secured server in
// this process: the server is drained mid-upload and started again on the
// same address and data, one agency's upload is cancelled (as if the
// process died) and run again, and afterwards no goroutine of either is
// left.
func TestInProcessDrainResumeNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	data := makeFaultData(t, []int{1200, 900, 300}, 24)
	keys := writeKeys(t, len(data.bets))
	addr, dir := pickPort(t), t.TempDir()

	srv, stop := serveInProcess(t, addr, dir, len(data.bets), keys)
	cfg := func(id int) agency.Config {
		key := keys.agency[uint32(id)]
		return agency.Config{
			Agency: uint32(id), Servers: []string{addr}, BatchMaxAmount: 5, Wait: agency.WaitHold,
			RetryBase: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond,
			GiveUp: 30 * time.Second, Logger: zap.NewNop(),
			Key: &key, ServerPub: keys.serverPub, SignPub: keys.verify,
			// gnet can accept a connection while its loops stop and then never
			// serve nor close it; a short timeout lets the agency move on.
			IOTimeout: 3 * time.Second,
		}
	}
	type outcome struct {
		res agency.Result
		err error
	}
	// start runs agency id's upload from its file, as the agency binary does.
	start := func(ctx context.Context, id int) <-chan outcome {
		out := make(chan outcome, 1)
		go func() {
			src, err := agency.OpenFile(data.file(id))
			if err != nil {
				out <- outcome{err: err}
				return
			}
			defer src.Close()
			res, err := agency.Run(ctx, cfg(id), src)
			out <- outcome{res, err}
		}()
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*hangGuard)
	defer cancel()
	killCtx, kill := context.WithCancel(ctx)
	runs := make([]<-chan outcome, len(data.bets)+1)
	runs[1] = start(killCtx, 1)
	for id := 2; id <= len(data.bets); id++ {
		runs[id] = start(ctx, id)
	}

	proctest.WaitFor(t, hangGuard, "agency 1 to store some bets", func() bool {
		held, _, _ := srv.Hub().Status(1)
		return held > 0
	})
	kill()
	killed := <-runs[1]
	if !errors.Is(killed.err, context.Canceled) {
		t.Fatalf("cancelled upload returned %v, want context.Canceled", killed.err)
	}
	held, _, _ := srv.Hub().Status(1)
	if killed.res.Bets > held {
		t.Fatalf("agency 1 counted %d bets acknowledged, server holds %d", killed.res.Bets, held)
	}
	runs[1] = start(ctx, 1)

	if err := stop(); err != nil {
		t.Fatalf("drain: %v", err)
	}
	_, stop = serveInProcess(t, addr, dir, len(data.bets), keys)
	var root frame.Hash
	for id := 1; id <= len(data.bets); id++ {
		r := <-runs[id]
		if r.err != nil {
			t.Fatalf("agency %d: %v", id, r.err)
		}
		if r.res.Bets != uint64(len(data.bets[id-1])) || len(r.res.Winners) != data.winners(id) {
			t.Errorf("agency %d: %d bets and %d winners, want %d and %d", id, r.res.Bets, len(r.res.Winners),
				len(data.bets[id-1]), data.winners(id))
		}
		if r.res.Receipt == nil || r.res.Receipt.Bets != uint64(len(data.bets[id-1])) || r.res.Receipt.Verify(keys.verify) != nil {
			t.Errorf("agency %d: receipt %+v does not verify for its %d bets", id, r.res.Receipt, len(data.bets[id-1]))
		}
		if id == 1 {
			root = r.res.Root
		} else if r.res.Root != root {
			t.Errorf("agency %d got root %x, agency 1 got %x", id, r.res.Root, root)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("final drain: %v", err)
	}
	got := storedByAgency(t, filepath.Join(dir, filestore.BetsFile), -1)
	for id := 1; id <= len(data.bets); id++ {
		if !slices.Equal(got[uint32(id)], data.bets[id-1]) {
			t.Errorf("store holds %d bets of agency %d, want its %d in order", len(got[uint32(id)]), id, len(data.bets[id-1]))
		}
	}
}

// serveInProcess runs a secured eventserver.Server until stop is called
// (or the test ends); stop returns Serve's result.
func serveInProcess(t *testing.T, addr, dir string, agencies int, keys *memKeys) (*eventserver.Server, func() error) {
	t.Helper()
	srv, err := eventserver.New(eventserver.Config{
		Listen: addr, Agencies: agencies, DataDir: dir, WinningNumber: faultWinning,
		ReadTimeout: 10 * time.Second, ShutdownGrace: 10 * time.Second, RetryAfter: 50 * time.Millisecond,
		Keys: keys.store, SignKey: keys.sign, Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv, serve(t, srv)
}

// serve runs srv until the returned stop is called (or the test ends).
func serve(t *testing.T, srv *eventserver.Server) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("server did not start: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("server did not start")
	}
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(hangGuard):
				result = errors.New("server did not stop")
			}
		})
		return result
	}
	t.Cleanup(func() { stop() })
	return stop
}
