package eventserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
)

// Issue 8: nothing a peer does takes the server down or locks agencies out.

// floodBound is how much a flooding test peer sends before concluding the
// server will never cut it off.
const floodBound = 32 << 20

// flood sends the encoded frames in b again and again, never reading, until
// the connection fails (the server cut it off) or floodBound bytes went out.
func flood(p *peer, b []byte) error {
	for sent := 0; sent < floodBound; sent += len(b) {
		if err := p.sendEncoded(b); err != nil {
			return nil
		}
	}
	return fmt.Errorf("still connected after sending %d bytes without reading", floodBound)
}

// smallReceiveBuffer is a dialer whose sockets advertise a 4 KiB receive
// buffer, so that answers a peer does not read pile up at the server, not
// in the kernel.
func smallReceiveBuffer() *net.Dialer {
	return &net.Dialer{Timeout: itGuard, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
}

// TestLimitsPeerThatNeverReads is issue 8 §1: peers that send 8 KiB PINGs
// (a plaintext one before any handshake, a secured one before HELLO) and
// never read their PONGs are stopped and cut off with ERROR flood while five
// agencies finish with their winners; after the draw, an agency that floods
// QUERY_WINNERS (each answered with some 14 KiB) is cut off too, both when
// it keeps sending (its unread input passes 64 KiB) and when it sends a
// burst and then neither reads nor sends (stuck past the read timeout).
func TestLimitsPeerThatNeverReads(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 5, ReadTimeout: 600 * time.Millisecond}, optLogLevel(zapcore.InfoLevel))
	bets := map[uint32][]frame.Bet{1: synthBets(t, 1, 3000, 1500, 1)} // big answers to QUERY_WINNERS
	for a := uint32(2); a <= 5; a++ {
		bets[a] = synthBets(t, a, 300, int(a), int64(a))
	}

	ping, err := frame.Encode(&frame.Ping{Payload: make([]byte, frame.MaxPayload)})
	if err != nil {
		t.Fatal(err)
	}
	flooders := []*peer{ts.mustDialPlain(t), ts.mustDial(t, 5)}
	errs := make(chan error, len(flooders))
	for _, p := range flooders {
		go func() { errs <- flood(p, ping) }()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*itGuard)
	defer cancel()
	runs := runAgencies(ctx, ts, bets, nil)
	for range flooders {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	checkRuns(t, ts, bets, runs)
	for i, p := range flooders {
		line := ts.logs.wait(t, "session_error", failLine("remote", p.localAddr(), "code", frame.CodeFlood.String()))
		t.Logf("PING flooder %d: %v", i, line["reason"])
	}

	// After the draw: QUERY_WINNERS again and again, never read.
	query, err := frame.Encode(&frame.QueryWinners{})
	if err != nil {
		t.Fatal(err)
	}
	q := ts.mustDial(t, 1)
	mustWrite(t, q, &frame.Hello{Agency: 1})
	if w := expectFrame[*frame.Welcome](t, q); !w.Finished {
		t.Fatalf("WELCOME %+v after the draw, want finished", w)
	}
	if err := flood(q, []byte(strings.Repeat(string(query), 100))); err != nil {
		t.Fatal(err)
	}
	ts.logs.wait(t, "session_error", failLine("remote", q.localAddr(), "code", frame.CodeFlood.String()))

	// A burst whose answers cannot all be queued, then silence: the server
	// stops reading, and cuts the peer off once it stays stuck past the read
	// timeout, though the unread queries stay under 64 KiB.
	stuck, err := dialPeer(ts.Addr(), ts.keys.agency(1), ts.keys.server, smallReceiveBuffer())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stuck.close)
	mustWrite(t, stuck, &frame.Hello{Agency: 1})
	expectFrame[*frame.Welcome](t, stuck)
	burst := []byte(strings.Repeat(string(query), 2000))
	if err := stuck.sendEncoded(burst); err != nil {
		t.Fatal(err)
	}
	line := ts.logs.wait(t, "session_error", failLine("remote", stuck.localAddr(), "code", frame.CodeFlood.String()))
	if reason := fmt.Sprint(line["reason"]); !strings.Contains(reason, "did not read") {
		t.Errorf("stuck peer cut off with %q, want the answers it did not read named", reason)
	}
	ts.logs.wait(t, "connection_closed", map[string]string{"remote": stuck.localAddr()})
	ts.mustStop(t)
	checkStored(t, ts.dir, bets)
}

// TestLimitsPlaceHoldersCannotLockOutAnAgency is issue 8 §2: with room for
// five connections before HELLO and five sockets holding those places with
// a 4-byte PING every 400 ms, a real agency gets in at once (the oldest
// place-holder is evicted with ERROR too_many_connections) and finishes;
// the other place-holders are closed at their hello deadline, which their
// PINGs do not extend.
func TestLimitsPlaceHoldersCannotLockOutAnAgency(t *testing.T) {
	t.Parallel()
	const helloTimeout = 1500 * time.Millisecond
	ts := startServer(t, Config{Agencies: 1, MaxPending: 5, HelloTimeout: helloTimeout})

	type ending struct {
		holder int
		code   frame.Code
		after  time.Duration
		pongs  int
	}
	ends := make(chan ending, 5)
	aged := make(chan struct{}, 5) // a holder has had its second PONG: it is at least 400 ms old
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range 5 {
		p := ts.mustDialPlain(t)
		opened := time.Now()
		mustPing(t, p, "") // the server has this holder before the next one connects
		done := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer close(done)
			pongs := 1
			for {
				if time.Since(opened) > helloTimeout+3*time.Second {
					ends <- ending{holder: i, after: time.Since(opened), pongs: pongs} // still open: PINGs kept it
					return
				}
				f, err := p.read()
				if err != nil {
					ends <- ending{holder: i, after: time.Since(opened), pongs: pongs}
					return
				}
				switch f := f.(type) {
				case *frame.Pong:
					if pongs++; pongs == 2 {
						aged <- struct{}{}
					}
				case *frame.Error:
					ends <- ending{holder: i, code: f.Code, after: time.Since(opened), pongs: pongs}
					_ = p.waitClosed()
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			tick := time.NewTicker(400 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				if err := p.write(&frame.Ping{}); err != nil {
					return
				}
			}
		}()
	}
	for range 5 {
		<-aged
	}

	bets := map[uint32][]frame.Bet{1: synthBets(t, 1, 200, 3, 7)}
	ctx, cancel := context.WithTimeout(context.Background(), itGuard)
	defer cancel()
	started := time.Now()
	runs := runAgencies(ctx, ts, bets, func(c *agency.Config) { c.GiveUp = helloTimeout })
	took := time.Since(started)
	checkRuns(t, ts, bets, runs)
	if n := runs[1].logs.count("connect", map[string]string{"result": "in_progress"}); n != 0 {
		t.Errorf("the agency retried %d times; it must get in at once", n)
	}
	t.Logf("agency finished in %v", took)

	timeouts := 0
	for range 5 {
		e := <-ends
		switch e.code {
		case frame.CodeTooManyConns:
			if e.holder != 0 {
				t.Errorf("holder %d was evicted, want the oldest (0)", e.holder)
			}
		case frame.CodeTimeout:
			timeouts++
			// The deadline counts from the connection's start: PINGs every
			// 400 ms would otherwise keep it open for ever.
			if e.after < helloTimeout-100*time.Millisecond || e.after > helloTimeout+3*time.Second {
				t.Errorf("holder %d closed after %v, want at its hello deadline (%v)", e.holder, e.after, helloTimeout)
			}
			if e.pongs < 3 {
				t.Errorf("holder %d got %d PONGs, want it to have kept PINGing", e.holder, e.pongs)
			}
		default:
			t.Errorf("holder %d ended after %v with %v (%d PONGs), want ERROR too_many_connections or timeout",
				e.holder, e.after, e.code, e.pongs)
		}
	}
	if timeouts != 4 {
		t.Errorf("%d holders timed out, want 4", timeouts)
	}
	ts.logs.wait(t, "session_error", failLine("code", frame.CodeTimeout.String(), "reason", "no HELLO within the hello timeout"))
}

// TestLimitsWaitingAgencyMustAnswerPings is issue 8 §2's liveness check: a
// session waiting for the draw is PINGed after the ping interval; one that
// does not answer within the read timeout is closed with ERROR timeout,
// while one that answers stays and gets its winners pushed.
func TestLimitsWaitingAgencyMustAnswerPings(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 3, PingInterval: 200 * time.Millisecond, ReadTimeout: 800 * time.Millisecond})
	silent := ts.mustDial(t, 1)
	finishHeld(t, ts, silent, 1, agencyBets(1, 20))
	answering := ts.mustDial(t, 2)
	bets2 := agencyBets(2, 20)
	finishHeld(t, ts, answering, 2, bets2)

	type result struct {
		docs []string
		err  error
	}
	pongs := make(chan int, 100)
	done := make(chan result, 1)
	go func() {
		n := 0
		for {
			f, err := answering.read()
			if err != nil {
				done <- result{err: err}
				return
			}
			switch f := f.(type) {
			case *frame.Ping:
				if err := answering.write(&frame.Pong{Payload: f.Payload}); err != nil {
					done <- result{err: err}
					return
				}
				n++
				select {
				case pongs <- n:
				default: // the test has seen enough
				}
			case *frame.Commitment:
				if err := receipt.Check(f, receipt.Leaf{Agency: 2, Bets: 20, Chain: receipt.ChainOf(bets2)}, ts.keys.verify); err != nil {
					done <- result{err: err}
					return
				}
				docs, err := readWinnersErr(answering)
				done <- result{docs: docs, err: err}
				return
			default:
				done <- result{err: fmt.Errorf("waiting agency got %s %s", f.Type(), brief(f))}
				return
			}
		}
	}()

	expectFrame[*frame.Ping](t, silent) // and never answered
	expectError(t, silent, frame.CodeTimeout)
	line := ts.logs.wait(t, "session_error", failLine("agency", "1", "code", frame.CodeTimeout.String()))
	if line["state"] != Waiting.String() || !strings.Contains(fmt.Sprint(line["reason"]), "PONG") {
		t.Errorf("silent agency cut off with %v, want a timeout waiting for its PONG", line)
	}
	// The answering agency outlives several more rounds.
	for n := 0; n < 3; {
		select {
		case n = <-pongs:
		case r := <-done:
			t.Fatalf("answering agency ended early: %v", r.err)
		}
	}
	if _, err := runSpec(ts, agencySpec{id: 3, bets: agencyBets(3, 20), batch: 10}); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(itGuard):
		t.Fatal("the answering agency did not get its winners pushed")
	}
	if r.err != nil {
		t.Fatalf("answering agency: %v", r.err)
	}
	if want := winnersIn(bets2); !slices.Equal(r.docs, want) {
		t.Errorf("answering agency winners %q, want %q", r.docs, want)
	}
	if n := ts.logs.count("session_error", failLine("agency", "2")); n != 0 {
		t.Errorf("the answering agency's session ended with an error %d times", n)
	}
}

// readWinnersErr reads WINNERS chunks up to the last one.
func readWinnersErr(p *peer) ([]string, error) {
	var docs []string
	for {
		w, err := readAs[*frame.Winners](p)
		if err != nil {
			return nil, err
		}
		docs = append(docs, w.Documents...)
		if w.Last {
			return docs, nil
		}
	}
}

// TestLimitsMaxFrameReachesAgencies is issue 8 §5: a server with
// --max-frame 2048 tells agencies in WELCOME, and the real agencies, whose
// batches of 100 bets would not fit, cut them to fit and finish.
func TestLimitsMaxFrameReachesAgencies(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 5, MaxFrame: 2048}, optLogLevel(zapcore.InfoLevel))
	p := ts.mustDial(t, 1)
	mustWrite(t, p, &frame.Hello{Agency: 1})
	if w := expectFrame[*frame.Welcome](t, p); w.MaxFrame != 2048 {
		t.Fatalf("WELCOME max_frame %d, want 2048", w.MaxFrame)
	}
	p.close()
	bets := map[uint32][]frame.Bet{}
	for a := uint32(1); a <= 5; a++ {
		bets[a] = synthBets(t, a, 400, 2, int64(a))
		if frame.BetsFrameSize(bets[a][:100]) <= 2048 {
			t.Fatal("test bets too small: 100 of them fit in 2048 bytes")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*itGuard)
	defer cancel()
	runs := runAgencies(ctx, ts, bets, func(c *agency.Config) { c.BatchMaxAmount = 100 })
	checkRuns(t, ts, bets, runs)
	if n := ts.logs.count("session_error", nil); n != 0 {
		t.Errorf("%d sessions ended with an ERROR; want none", n)
	}
	ts.mustStop(t)
	checkStored(t, ts.dir, bets)
}

// TestLimitsRefusalsAreSummarised is issue 8 §5: a burst of connections
// refused (no room before HELLO) is logged as a few connection_refused
// lines, one per code and second with a count, not a line per refusal.
func TestLimitsRefusalsAreSummarised(t *testing.T) {
	t.Parallel()
	errs := &errorsSent{}
	ts := startServer(t, Config{Agencies: 1, MaxPending: 1, HelloTimeout: 10 * time.Second, Observer: errs})
	holder := ts.mustDialPlain(t)
	mustPing(t, holder, "holding the only place")

	const burst = 100
	started := time.Now()
	refused := 0
	for i := range burst {
		p := ts.mustDialPlain(t)
		if err := p.write(&frame.Ping{}); err != nil && !isClosed(err) {
			t.Fatal(err)
		}
		f, err := p.read()
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		switch f := f.(type) {
		case *frame.Error:
			if f.Code != frame.CodeTooManyConns {
				t.Fatalf("connection %d: ERROR %s, want too_many_connections", i, f.Code)
			}
			refused++
		case *frame.Pong:
			// Admitted: the holder had held its place for long enough, and was
			// evicted, which counts as a refusal too.
		default:
			t.Fatalf("connection %d got %s", i, f.Type())
		}
		p.close()
	}
	elapsed := time.Since(started)
	if refused < burst/2 {
		t.Fatalf("only %d of %d connections refused; the test needs a burst", refused, burst)
	}
	// Every connection of the burst was refused or evicted an older one.
	total := 0
	var lines []logFields
	ts.logs.waitFor(t, fmt.Sprintf("connection_refused counts adding up to %d", burst), func() bool {
		lines = ts.logs.lines("connection_refused", failLine("code", frame.CodeTooManyConns.String()))
		total = 0
		for _, l := range lines {
			n, _ := l["count"].(int64)
			total += int(n)
		}
		return total >= burst
	})
	if total != burst {
		t.Errorf("connection_refused lines count %d refusals, want %d", total, burst)
	}
	// Every refusal was an ERROR frame sent, refused at open or evicted.
	if n := errs.count(frame.CodeTooManyConns); n != burst {
		t.Errorf("the observer saw %d ERROR too_many_connections sent, want %d", n, burst)
	}
	// And every one is a refused connection (lottery_connections_refused_total).
	if n := errs.refusals(frame.CodeTooManyConns.String()); n != burst {
		t.Errorf("the observer saw %d connections refused as too_many_connections, want %d (refused at open or evicted)", n, burst)
	}
	if most := int(elapsed/time.Second) + 2; len(lines) > most {
		t.Errorf("%d connection_refused lines for a burst of %v, want at most one a second (%d)", len(lines), elapsed, most)
	}
	for _, l := range lines {
		if _, ok := l["per_second"]; !ok {
			t.Errorf("connection_refused line %v has no rate", l)
		}
	}
}

// TestLimitsEvictionsAreSummarised is issue 8 §5 for the other way a
// connection is refused: a loop of connections that never say HELLO, paced
// so that each finds the budget full of place-holders old enough to evict.
// Every eviction is a refusal (the evicted peer gets ERROR
// too_many_connections) and must be counted in the connection_refused
// summary, not logged as a WARN line of its own.
func TestLimitsEvictionsAreSummarised(t *testing.T) {
	t.Parallel()
	errs := &errorsSent{}
	ts := startServer(t, Config{Agencies: 1, MaxPending: 5, HelloTimeout: time.Second, Observer: errs}) // evicts after 100 ms
	const loop = 40
	var peers []*peer
	for range loop {
		p := ts.mustDialPlain(t)
		if err := p.write(&frame.Ping{}); err != nil && !isClosed(err) { // refused at once when the server lags
			t.Fatal(err)
		}
		peers = append(peers, p)
		time.Sleep(30 * time.Millisecond) // the attacker's pace: slower than the eviction age per place
	}
	evicted := 0
	for i, p := range peers[:loop-5] { // the last five may still hold their places
		f, err := p.read()
		for err == nil && f.Type() == frame.TypePong {
			f, err = p.read()
		}
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if e, ok := f.(*frame.Error); ok && e.Code == frame.CodeTooManyConns {
			evicted++
		}
	}
	if evicted < loop/2 {
		t.Fatalf("only %d of %d place-holders evicted; the test needs evictions", evicted, loop)
	}
	// Each eviction is a connection refused (lottery_connections_refused_total).
	if n := errs.refusals(frame.CodeTooManyConns.String()); n < evicted {
		t.Errorf("the observer saw %d connections refused as too_many_connections, want at least the %d evicted", n, evicted)
	}
	ts.logs.waitFor(t, fmt.Sprintf("connection_refused counts adding up to %d evictions", evicted), func() bool {
		total := 0
		for _, l := range ts.logs.lines("connection_refused", failLine("code", frame.CodeTooManyConns.String())) {
			n, _ := l["count"].(int64)
			total += int(n)
		}
		return total >= evicted
	})
	loud := 0
	for _, e := range ts.logs.All() {
		if e.Level >= zapcore.WarnLevel && e.Message != "connection_refused" &&
			fmt.Sprint(e.ContextMap()["code"]) == frame.CodeTooManyConns.String() {
			loud++
		}
	}
	if loud > 0 {
		t.Errorf("%d WARN lines for %d evicted place-holders; each eviction must only be counted in connection_refused", loud, evicted)
	}
}

// connOf finds the server's side of p's connection.
func connOf(t *testing.T, ts *testServer, p *peer) *conn {
	t.Helper()
	for _, pc := range ts.Hub().Peers() {
		if cs, ok := pc.(*conn); ok && cs.remote == p.localAddr() {
			return cs
		}
	}
	t.Fatalf("the server has no connection from %s", p.localAddr())
	return nil
}

// TestLimitsQueuedTimeoutsDoNotCutAWaitingAgency: the tick's sweep hands a
// connection whose deadline has passed a TimedOut on every tick until the
// connection's event loop runs, so a busy loop can find two queued. For an
// agency waiting for the draw, the first one sends the liveness PING; the
// second must be judged against the PONG deadline that PING armed, not
// against the one that passed, or the agency is cut off with ERROR timeout
// before it could answer. The test queues the two itself, holding the
// mailbox so that neither runs before both are there, as a busy loop
// would find them.
func TestLimitsQueuedTimeoutsDoNotCutAWaitingAgency(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 2, PingInterval: 300 * time.Millisecond, ReadTimeout: 2 * time.Second})
	p := ts.mustDial(t, 1)
	finishHeld(t, ts, p, 1, agencyBets(1, 10))
	cs := connOf(t, ts, p)
	cs.mu.Lock()
	time.Sleep(time.Until(time.Unix(0, cs.deadline.Load())) + time.Millisecond) // the ping interval passes
	cs.mailbox = append(cs.mailbox, TimedOut{}, TimedOut{})
	cs.mu.Unlock()
	_ = cs.c.Wake(nil)

	ping := expectFrame[*frame.Ping](t, p)
	mustWrite(t, p, &frame.Pong{Payload: ping.Payload})
	mustPing(t, p, "still waiting")
	if n := ts.logs.count("session_error", failLine("agency", "1")); n != 0 {
		t.Errorf("the waiting agency's session ended with an error: %v", ts.logs.lines("session_error", nil))
	}
}

// TestFloodLimitFollowsTheGrantedWindow: before HELLO a peer may leave one
// frame plus FloodLimit unread; after it, the window its WELCOME granted
// (a share of the budget, below --window when many agencies are connected)
// times the frame limit, plus FloodLimit: never the configured maximum.
func TestFloodLimitFollowsTheGrantedWindow(t *testing.T) {
	s := &Server{cfg: Config{Window: 64, MaxFrame: 4096}}
	view := &shareView{fakeView: newFakeView(5), share: 9}
	sess, _, _ := newTestSession(view, Limits{Window: s.cfg.Window, MaxFrame: s.cfg.MaxFrame})
	cs := &conn{sess: sess}
	if got, want := s.floodLimit(cs), 4096+FloodLimit; got != want {
		t.Errorf("before HELLO: flood limit %d, want one frame plus FloodLimit (%d)", got, want)
	}
	sess.Step(received(t, &frame.Hello{Agency: 1}))
	if got, want := s.floodLimit(cs), 9*4096+FloodLimit; got != want {
		t.Errorf("after a WELCOME granting 9: flood limit %d, want %d (not --window's 64 frames)", got, want)
	}
}

// shareView grants every agency a fixed share of the budget as its window.
type shareView struct {
	*fakeView
	share int
}

func (v *shareView) Window(limit int) int { return min(v.share, limit) }

// errorsSent is an Observer that counts the ERROR frames sent, by code.
type errorsSent struct {
	nopObserver
	mu      sync.Mutex
	n       map[frame.Code]int
	refused map[string]int // ConnectionRefused, by reason
}

func (o *errorsSent) ConnectionRefused(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.refused == nil {
		o.refused = map[string]int{}
	}
	o.refused[reason]++
}

func (o *errorsSent) refusals(reason string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.refused[reason]
}

func (o *errorsSent) ErrorSent(code frame.Code) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[frame.Code]int{}
	}
	o.n[code]++
}

func (o *errorsSent) count(code frame.Code) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[code]
}
