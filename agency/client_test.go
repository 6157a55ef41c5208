package agency_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
)

// hangGuard bounds every wait in these tests; it is never a timing assertion.
const hangGuard = 30 * time.Second

// noLeaks checks, after every other cleanup of the test, that the test left
// no goroutine behind. Call it first.
func noLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) (*zap.Logger, *syncBuffer) {
	t.Helper()
	var buf syncBuffer
	log, err := logging.New("debug", logging.FormatConsole, &buf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("client log:\n%s", buf.String())
		}
	})
	return log, &buf
}

// hasLine reports whether some line of log matches the pattern that follows
// "action: ".
func hasLine(log, pattern string) bool {
	return regexp.MustCompile(`(?m)^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [A-Z]+ action: ` + pattern + `$`).MatchString(log)
}

// verdict is what the fake server does with one BETS frame.
type verdict struct {
	store int         // how many of its bets to store; -1 means all
	reply frame.Frame // nil means ACK when all were stored, nothing otherwise
	close bool        // close the connection afterwards
}

var pass = verdict{store: -1}

// received is one BETS frame as the fake server saw it.
type received struct {
	conn  int
	first uint64
	count int
}

// fakeServer speaks the server side of the protocol honestly, with hooks
// for faults. It keeps what it stored across connections.
type fakeServer struct {
	t  *testing.T
	ln net.Listener
	wg sync.WaitGroup

	// Knobs, set before the client starts.
	agency    uint32
	winners   []string
	notReady  int  // NOT_READY answers before the draw is done
	poll      bool // answer one NOT_READY per FINISHED/QUERY_WINNERS (the client hangs up)
	retryHint time.Duration
	onHello   func(conn int) frame.Frame               // nil reply: WELCOME with what is held
	onBets    func(conn int, b *frame.Bets) verdict    // nil: pass
	onFinal   func(conn int, total uint64) frame.Frame // reply to FINISHED instead of the default

	mu         sync.Mutex
	conns      []net.Conn
	stored     []frame.Bet
	got        []received
	ackedUpTo  uint64 // highest stream index acknowledged
	violations []string
	finished   []uint64 // FINISHED totals
	queries    int
	gotBets    chan struct{} // one token per BETS frame received
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, agency: 1, retryHint: time.Millisecond, gotBets: make(chan struct{}, 1000)}
	t.Cleanup(s.stop)
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for n := 0; ; n++ {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(n, c)
			}()
		}
	}()
}

func (s *fakeServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.violations {
		s.t.Errorf("fake server: %s", v)
	}
}

func (s *fakeServer) violation(format string, a ...any) {
	s.violations = append(s.violations, fmt.Sprintf(format, a...))
}

func (s *fakeServer) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *fakeServer) snapshot() (stored []frame.Bet, got []received, finished []uint64, queries int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.stored), slices.Clone(s.got), slices.Clone(s.finished), s.queries
}

func (s *fakeServer) serve(n int, c net.Conn) {
	r := frame.NewReader(c)
	var dec frame.Decoder
	recv := func() (frame.Frame, error) {
		c.SetReadDeadline(time.Now().Add(hangGuard))
		return dec.Next(r)
	}
	send := func(f frame.Frame) bool {
		c.SetWriteDeadline(time.Now().Add(hangGuard))
		return frame.Write(c, f) == nil
	}
	f, err := recv()
	if err != nil {
		return
	}
	h, ok := f.(*frame.Hello)
	if !ok || h.Agency != s.agency {
		s.mu.Lock()
		s.violation("conn %d opened with %v, want HELLO for agency %d", n, f, s.agency)
		s.mu.Unlock()
		return
	}
	var reply frame.Frame
	if s.onHello != nil {
		reply = s.onHello(n)
	}
	s.mu.Lock()
	if reply == nil {
		reply = &frame.Welcome{Held: uint64(len(s.stored)), Finished: len(s.finished) > 0}
	}
	s.mu.Unlock()
	if !send(reply) {
		return
	}
	if _, isErr := reply.(*frame.Error); isErr {
		return
	}
	for {
		f, err := recv()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				var ne net.Error
				if !errors.As(err, &ne) && !strings.Contains(err.Error(), "reset") {
					s.mu.Lock()
					s.violation("conn %d: %v", n, err)
					s.mu.Unlock()
				}
			}
			return
		}
		switch f := f.(type) {
		case *frame.Bets:
			if !s.bets(n, f, send) {
				return
			}
		case *frame.Finished:
			s.mu.Lock()
			s.finished = append(s.finished, f.Total)
			if f.Total != uint64(len(s.stored)) {
				s.violation("FINISHED total %d, server holds %d", f.Total, len(s.stored))
			}
			s.mu.Unlock()
			if s.onFinal != nil {
				if r := s.onFinal(n, f.Total); r != nil {
					send(r)
					if _, isErr := r.(*frame.Error); isErr {
						return
					}
					continue
				}
			}
			if !s.answerWinners(send) {
				return
			}
		case *frame.QueryWinners:
			s.mu.Lock()
			s.queries++
			s.mu.Unlock()
			if !s.answerWinners(send) {
				return
			}
		default:
			s.mu.Lock()
			s.violation("conn %d: unexpected %s", n, f.Type())
			s.mu.Unlock()
			return
		}
	}
}

func (s *fakeServer) bets(n int, b *frame.Bets, send func(frame.Frame) bool) bool {
	s.gotBets <- struct{}{}
	v := pass
	if s.onBets != nil {
		v = s.onBets(n, b)
	}
	s.mu.Lock()
	s.got = append(s.got, received{conn: n, first: b.First, count: len(b.Bets)})
	if b.First < s.ackedUpTo {
		s.violation("BETS from %d re-sends bets acknowledged up to %d", b.First, s.ackedUpTo)
	}
	if b.First > uint64(len(s.stored)) {
		s.violation("BETS from %d leaves a gap after %d held", b.First, len(s.stored))
		s.mu.Unlock()
		return send(&frame.Reject{Code: frame.CodeIndexGap, Index: uint64(len(s.stored)), Reason: "gap"})
	}
	keep := len(b.Bets)
	if v.store >= 0 {
		keep = min(v.store, keep)
	}
	// Store what is not held yet (a batch may overlap what is held).
	for i, bet := range b.Bets[:keep] {
		if b.First+uint64(i) == uint64(len(s.stored)) {
			s.stored = append(s.stored, bet)
		}
	}
	reply := v.reply
	if reply == nil && v.store < 0 {
		reply = &frame.Ack{First: b.First, Count: uint16(len(b.Bets))}
		s.ackedUpTo = max(s.ackedUpTo, b.First+uint64(len(b.Bets)))
	}
	s.mu.Unlock()
	if reply != nil && !send(reply) {
		return false
	}
	return !v.close
}

// answerWinners sends NOT_READY while the draw is pending, then WINNERS.
func (s *fakeServer) answerWinners(send func(frame.Frame) bool) bool {
	for {
		s.mu.Lock()
		pending := s.notReady > 0
		if pending {
			s.notReady--
		}
		s.mu.Unlock()
		if !pending {
			break
		}
		if !send(&frame.NotReady{RetryAfter: s.retryHint, Finished: 1, Agencies: 5}) {
			return false
		}
		if s.poll {
			return true // the client hangs up and asks again later
		}
	}
	for _, w := range frame.WinnersFrames(s.winners) {
		if !send(w) {
			return false
		}
	}
	return true
}

// testConfig is a client configuration for the fake server with tiny delays.
func testConfig(t *testing.T, s *fakeServer) (agency.Config, *syncBuffer) {
	log, buf := testLogger(t)
	return agency.Config{
		Agency:         s.agency,
		Server:         s.addr(),
		BatchMaxAmount: 100,
		RetryBase:      time.Millisecond,
		RetryMax:       10 * time.Millisecond,
		GiveUp:         hangGuard,
		IOTimeout:      hangGuard,
		Logger:         log,
	}, buf
}

type outcome struct {
	res agency.Result
	err error
}

// runAsync starts agency.Run; wait collects it within the hang guard.
func runAsync(ctx context.Context, cfg agency.Config, src agency.Source) <-chan outcome {
	done := make(chan outcome, 1)
	go func() {
		res, err := agency.Run(ctx, cfg, src)
		done <- outcome{res, err}
	}()
	return done
}

func wait(t *testing.T, done <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-done:
		return o
	case <-time.After(hangGuard):
		t.Fatal("agency.Run did not return")
		return outcome{}
	}
}

func run(t *testing.T, cfg agency.Config, src agency.Source) outcome {
	t.Helper()
	return wait(t, runAsync(context.Background(), cfg, src))
}

func fileSource(t *testing.T, bets []frame.Bet) *agency.FileSource {
	t.Helper()
	src, _ := openFile(t, betsCSV(bets))
	return src
}

func TestRunHold(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.winners = []string{"10000007", "10000042"}
	s.notReady = 2 // pushed while the client holds the connection
	s.start()
	bets := testBets(250, 10)
	cfg, log := testConfig(t, s)
	o := run(t, cfg, fileSource(t, bets))
	if o.err != nil {
		t.Fatalf("Run: %v", o.err)
	}
	if o.res.Bets != 250 || !slices.Equal(o.res.Winners, s.winners) {
		t.Errorf("Result %+v, want 250 bets and winners %v", o.res, s.winners)
	}
	stored, got, finished, queries := s.snapshot()
	sameBets(t, stored, bets)
	want := []received{{0, 0, 100}, {0, 100, 100}, {0, 200, 50}}
	if !slices.Equal(got, want) {
		t.Errorf("server got BETS %v, want %v", got, want)
	}
	if !slices.Equal(finished, []uint64{250}) || queries != 0 || s.connCount() != 1 {
		t.Errorf("FINISHED %v, %d queries, %d connections; want [250], 0, 1", finished, queries, s.connCount())
	}
	out := log.String()
	for _, p := range []string{
		`hello \| result: success \| agency: 1 \| held: 0 \| finished: false`,
		`upload \| result: success \| agency: 1 \| bets: 250`,
		`consulta_ganadores \| result: in_progress \| agency: 1 \| finished: 1 \| agencies: 5 \| wait: hold`,
		`consulta_ganadores \| result: success \| agency: 1 \| cant_ganadores: 2 \| dni: 10000007,10000042`,
	} {
		if !hasLine(out, p) {
			t.Errorf("log has no line matching %q", p)
		}
	}
	if strings.Contains(out, "apuesta_enviada") {
		t.Error("apuesta_enviada logged per bet without LogEachBet")
	}
}

func TestRunNoWinners(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.start()
	cfg, log := testConfig(t, s)
	o := run(t, cfg, agency.NewSliceSource(testBets(3, 10)))
	if o.err != nil || o.res.Bets != 3 || len(o.res.Winners) != 0 {
		t.Fatalf("Run = %+v, %v", o.res, o.err)
	}
	if !hasLine(log.String(), `consulta_ganadores \| result: success \| agency: 1 \| cant_ganadores: 0`) {
		t.Error("no consulta_ganadores line with 0 winners")
	}
}

func TestRunManyWinnersInChunks(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	for i := range 3000 { // several WINNERS frames
		s.winners = append(s.winners, fmt.Sprintf("%010d", i))
	}
	s.start()
	cfg, log := testConfig(t, s)
	o := run(t, cfg, agency.NewSliceSource(testBets(1, 10)))
	if o.err != nil || !slices.Equal(o.res.Winners, s.winners) {
		t.Fatalf("Run: %v, %d winners; want %d", o.err, len(o.res.Winners), len(s.winners))
	}
	if !hasLine(log.String(), `consulta_ganadores \| result: success \| agency: 1 \| cant_ganadores: 3000 \| dni: [0-9,]+`) {
		t.Error("no consulta_ganadores line for 3000 winners")
	}
}

func TestRunPoll(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.poll = true
	s.notReady = 3 // FINISHED and two queries are answered NOT_READY
	s.retryHint = 2 * time.Millisecond
	s.winners = []string{"10000003"}
	s.start()
	bets := testBets(120, 10)
	cfg, log := testConfig(t, s)
	cfg.Wait = agency.WaitPoll
	cfg.RetryMax = 20 * time.Millisecond
	o := run(t, cfg, fileSource(t, bets))
	if o.err != nil {
		t.Fatalf("Run: %v", o.err)
	}
	if o.res.Bets != 120 || !slices.Equal(o.res.Winners, s.winners) {
		t.Errorf("Result %+v", o.res)
	}
	stored, got, finished, queries := s.snapshot()
	sameBets(t, stored, bets)
	if len(got) != 2 || len(finished) != 1 || queries != 3 || s.connCount() != 4 {
		t.Errorf("server saw %d BETS, FINISHED %v, %d queries over %d connections; want 2, [120], 3, 4",
			len(got), finished, queries, s.connCount())
	}
	// The poll delay starts near the server's hint and doubles up to RetryMax.
	re := regexp.MustCompile(`action: consulta_ganadores \| result: in_progress \| agency: 1 \| finished: 1 \| agencies: 5 \| retry_in: (\S+)`)
	m := re.FindAllStringSubmatch(log.String(), -1)
	if len(m) != 3 {
		t.Fatalf("%d poll lines, want 3", len(m))
	}
	prev := time.Duration(0)
	for _, sub := range m {
		d, err := time.ParseDuration(sub[1])
		if err != nil {
			t.Fatal(err)
		}
		if d < prev || d < s.retryHint/2 || d > cfg.RetryMax {
			t.Errorf("poll delays %v: want non-decreasing, from %v/2 up to %v", m, s.retryHint, cfg.RetryMax)
		}
		prev = d
	}
	if !hasLine(log.String(), `hello \| result: success \| agency: 1 \| held: 120 \| finished: true`) {
		t.Error("no hello line of a poll connection")
	}
}

func TestRunLogEachBet(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.start()
	bets := testBets(3, 10)
	cfg, log := testConfig(t, s)
	cfg.LogEachBet = true
	if o := run(t, cfg, agency.NewSliceSource(bets)); o.err != nil {
		t.Fatal(o.err)
	}
	for _, b := range bets {
		if !hasLine(log.String(), fmt.Sprintf(`apuesta_enviada \| result: success \| dni: %s \| numero: %d`, b.Document, b.Number)) {
			t.Errorf("no apuesta_enviada line for %s", b.Document)
		}
	}
}

// After a fault the client resumes from what the server says it holds:
// nothing acknowledged is sent again and nothing is skipped (the fake server
// records both as violations).
func TestRunReconnectResumes(t *testing.T) {
	tests := []struct {
		name  string
		fault verdict
		// resume is the First of the BETS on the second connection.
		resume uint64
	}{
		{"closed before storing", verdict{store: 0, close: true}, 100},
		{"stored, closed before ACK", verdict{store: -1, reply: &frame.Pong{}, close: true}, 200},
		{"stored part, closed", verdict{store: 30, close: true}, 130},
		{"storage error", verdict{store: 0, reply: &frame.Error{Code: frame.CodeStorage, Reason: "disk"}, close: true}, 100},
		{"busy", verdict{store: 0, reply: &frame.Error{Code: frame.CodeBusy, Reason: "queue full"}, close: true}, 100},
		{"index gap", verdict{store: 0, reply: &frame.Reject{Code: frame.CodeIndexGap, Index: 100, Reason: "gap"}, close: true}, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			s := newFakeServer(t)
			faulted := false
			s.onBets = func(conn int, b *frame.Bets) verdict {
				if conn == 0 && b.First == 100 && !faulted {
					faulted = true
					v := tc.fault
					if _, pong := v.reply.(*frame.Pong); pong {
						v.reply = nil // store everything, say nothing
					}
					return v
				}
				return pass
			}
			s.start()
			bets := testBets(250, 10)
			cfg, log := testConfig(t, s)
			o := run(t, cfg, fileSource(t, bets))
			if o.err != nil {
				t.Fatalf("Run: %v", o.err)
			}
			stored, got, finished, _ := s.snapshot()
			sameBets(t, stored, bets)
			if o.res.Bets != 250 || !slices.Equal(finished, []uint64{250}) {
				t.Errorf("Result %+v, FINISHED %v", o.res, finished)
			}
			var second []received
			for _, g := range got {
				if g.conn == 1 {
					second = append(second, g)
				}
			}
			if len(second) == 0 || second[0].first != tc.resume {
				t.Errorf("second connection's BETS %v, want the first at %d (all: %v)", second, tc.resume, got)
			}
			if s.connCount() != 2 {
				t.Errorf("%d connections, want 2", s.connCount())
			}
			if !hasLine(log.String(), `connect \| result: in_progress \| server: \S+ \| attempt: 1 \| retry_in: \S+ \| error: .*`) {
				t.Error("no connect in_progress line for the retry")
			}
		})
	}
}

// A server that lost acknowledged bets (restored from an older copy) gets
// them again from where it says it is: the source is rewound.
func TestRunServerBehindRewinds(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.onBets = func(conn int, b *frame.Bets) verdict {
		if conn == 0 && b.First == 200 {
			return verdict{store: 0, close: true}
		}
		return pass
	}
	s.onHello = func(conn int) frame.Frame {
		if conn == 1 {
			s.mu.Lock()
			s.stored = s.stored[:50]
			s.ackedUpTo = 50
			s.mu.Unlock()
		}
		return nil
	}
	s.start()
	bets := testBets(250, 10)
	cfg, _ := testConfig(t, s)
	o := run(t, cfg, fileSource(t, bets))
	if o.err != nil {
		t.Fatal(o.err)
	}
	stored, got, _, _ := s.snapshot()
	sameBets(t, stored, bets)
	if i := slices.IndexFunc(got, func(r received) bool { return r.conn == 1 }); i < 0 || got[i].first != 50 {
		t.Errorf("BETS %v: the second connection should start at 50", got)
	}
}

func TestRunEverythingHeld(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	bets := testBets(150, 10)
	s.stored = slices.Clone(bets)
	s.ackedUpTo = 150
	s.winners = []string{"10000001"}
	s.start()
	cfg, log := testConfig(t, s)
	o := run(t, cfg, fileSource(t, bets))
	if o.err != nil || o.res.Bets != 150 || !slices.Equal(o.res.Winners, s.winners) {
		t.Fatalf("Run = %+v, %v", o.res, o.err)
	}
	_, got, finished, _ := s.snapshot()
	if len(got) != 0 || !slices.Equal(finished, []uint64{150}) {
		t.Errorf("server got BETS %v and FINISHED %v; want none and [150]", got, finished)
	}
	if !hasLine(log.String(), `upload \| result: success \| agency: 1 \| bets: 150`) {
		t.Error("no upload success line")
	}
}

func TestRunHeldMoreThanSource(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.stored = testBets(20, 10)
	s.ackedUpTo = 20
	s.start()
	cfg, _ := testConfig(t, s)
	o := run(t, cfg, agency.NewSliceSource(testBets(10, 10)))
	if o.err == nil || !strings.Contains(o.err.Error(), "20") {
		t.Fatalf("Run with a source shorter than the server's holdings: %v", o.err)
	}
}

func TestRunRejectInvalidBet(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.onBets = func(conn int, b *frame.Bets) verdict {
		if b.First == 100 {
			return verdict{store: 0, reply: &frame.Reject{Code: frame.CodeInvalidBet, Index: 117, Reason: "bet 17: field document"}}
		}
		return pass
	}
	s.start()
	cfg, log := testConfig(t, s)
	o := run(t, cfg, agency.NewSliceSource(testBets(250, 10)))
	var re *agency.RejectError
	if !errors.As(o.err, &re) || re.Reject.Code != frame.CodeInvalidBet || re.Reject.Index != 117 {
		t.Fatalf("Run error %v, want a RejectError invalid_bet at 117", o.err)
	}
	for _, want := range []string{"invalid_bet", "117", "field document"} {
		if !strings.Contains(o.err.Error(), want) {
			t.Errorf("error %q does not mention %q", o.err, want)
		}
	}
	if o.res.Bets != 100 || s.connCount() != 1 {
		t.Errorf("Result %+v over %d connections; want 100 bets, 1 connection (no retry)", o.res, s.connCount())
	}
	if !hasLine(log.String(), `apuesta_enviada \| result: fail \| cantidad: 100 \| code: invalid_bet \| index: 117 \| reason: bet 17: field document`) {
		t.Error("no apuesta_enviada fail line")
	}
}

func TestRunServerErrors(t *testing.T) {
	tests := []struct {
		code   frame.Code
		retry  bool
		atBets bool
	}{
		{frame.CodeShuttingDown, true, false},
		{frame.CodeTooManyConns, true, false},
		{frame.CodeTimeout, true, true},
		{frame.CodeUnknownAgency, false, false},
		{frame.CodeReplaced, false, true},
		{frame.CodeUnexpected, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			noLeaks(t)
			s := newFakeServer(t)
			e := &frame.Error{Code: tc.code, Reason: "because " + tc.code.String()}
			if tc.atBets {
				s.onBets = func(conn int, b *frame.Bets) verdict {
					if conn == 0 {
						return verdict{store: 0, reply: e, close: true}
					}
					return pass
				}
			} else {
				s.onHello = func(conn int) frame.Frame {
					if conn == 0 {
						return e
					}
					return nil
				}
			}
			s.start()
			bets := testBets(30, 10)
			cfg, _ := testConfig(t, s)
			o := run(t, cfg, agency.NewSliceSource(bets))
			if tc.retry {
				if o.err != nil || o.res.Bets != 30 || s.connCount() != 2 {
					t.Fatalf("Run = %+v, %v over %d connections; want success on the second", o.res, o.err, s.connCount())
				}
				stored, _, _, _ := s.snapshot()
				sameBets(t, stored, bets)
				return
			}
			var se *agency.ServerError
			if !errors.As(o.err, &se) || se.Err.Code != tc.code || se.Temporary() {
				t.Fatalf("Run error %v, want a permanent ServerError %s", o.err, tc.code)
			}
			if !strings.Contains(o.err.Error(), tc.code.String()) || !strings.Contains(o.err.Error(), e.Reason) {
				t.Errorf("error %q does not name the code and reason", o.err)
			}
			if s.connCount() != 1 {
				t.Errorf("%d connections, want 1 (no retry)", s.connCount())
			}
		})
	}
}

func TestServerErrorTemporary(t *testing.T) {
	temporary := map[frame.Code]bool{
		frame.CodeShuttingDown: true, frame.CodeBusy: true, frame.CodeTimeout: true,
		frame.CodeStorage: true, frame.CodeTooManyConns: true,
	}
	for c := frame.Code(0); c <= frame.CodeFlood+1; c++ {
		e := &agency.ServerError{Err: frame.Error{Code: c}}
		if e.Temporary() != temporary[c] {
			t.Errorf("%s: Temporary() = %v", c, e.Temporary())
		}
	}
}

func TestRunProtocolViolations(t *testing.T) {
	tests := map[string]func(s *fakeServer){
		"ACK to HELLO": func(s *fakeServer) {
			s.onHello = func(int) frame.Frame { return &frame.Ack{} }
		},
		"ACK of other bets": func(s *fakeServer) {
			s.onBets = func(_ int, b *frame.Bets) verdict {
				return verdict{store: -1, reply: &frame.Ack{First: b.First + 1, Count: uint16(len(b.Bets))}}
			}
		},
		"WELCOME to BETS": func(s *fakeServer) {
			s.onBets = func(int, *frame.Bets) verdict { return verdict{store: 0, reply: &frame.Welcome{}} }
		},
		"ACK to FINISHED": func(s *fakeServer) {
			s.onFinal = func(int, uint64) frame.Frame { return &frame.Ack{} }
		},
	}
	for name, setup := range tests {
		t.Run(name, func(t *testing.T) {
			noLeaks(t)
			s := newFakeServer(t)
			setup(s)
			s.start()
			cfg, _ := testConfig(t, s)
			o := run(t, cfg, agency.NewSliceSource(testBets(5, 10)))
			if !errors.Is(o.err, agency.ErrProtocol) {
				t.Fatalf("Run error %v, want ErrProtocol", o.err)
			}
			if s.connCount() != 1 {
				t.Errorf("%d connections, want 1 (no retry)", s.connCount())
			}
		})
	}
}

func TestRunFinishedRefused(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.onFinal = func(int, uint64) frame.Frame {
		return &frame.Error{Code: frame.CodeTotalMismatch, Reason: "total 5, held 4"}
	}
	s.start()
	cfg, _ := testConfig(t, s)
	o := run(t, cfg, agency.NewSliceSource(testBets(5, 10)))
	var se *agency.ServerError
	if !errors.As(o.err, &se) || se.Err.Code != frame.CodeTotalMismatch || s.connCount() != 1 {
		t.Fatalf("Run error %v over %d connections, want total_mismatch and no retry", o.err, s.connCount())
	}
}

// refusedAddr returns a loopback address nobody listens on.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestRunGivesUp(t *testing.T) {
	noLeaks(t)
	log, buf := testLogger(t)
	var mu sync.Mutex
	attempts := 0
	d := net.Dialer{}
	cfg := agency.Config{
		Agency:    2,
		Server:    refusedAddr(t),
		RetryBase: time.Millisecond,
		RetryMax:  4 * time.Millisecond,
		GiveUp:    50 * time.Millisecond,
		Logger:    log,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			mu.Lock()
			attempts++
			mu.Unlock()
			return d.DialContext(ctx, "tcp", addr)
		},
	}
	o := run(t, cfg, agency.NewSliceSource(testBets(3, 10)))
	if !errors.Is(o.err, agency.ErrGaveUp) {
		t.Fatalf("Run error %v, want ErrGaveUp", o.err)
	}
	var op *net.OpError
	if !errors.As(o.err, &op) || !strings.Contains(o.err.Error(), "refused") {
		t.Errorf("error %v does not carry the dial error", o.err)
	}
	mu.Lock()
	n := attempts
	mu.Unlock()
	if n < 2 {
		t.Errorf("%d dial attempts, want retries before giving up", n)
	}
	out := buf.String()
	if !hasLine(out, `connect \| result: in_progress \| server: \S+ \| attempt: 1 \| retry_in: \S+ \| error: .*refused`) ||
		!hasLine(out, `connect \| result: fail \| server: \S+ \| attempts: \d+ \| error: .*refused`) {
		t.Errorf("connect lines missing:\n%s", out)
	}
	// The backoff grows: each retry_in is within [base/2, max).
	re := regexp.MustCompile(`attempt: (\d+) \| retry_in: (\S+)`)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		d, err := time.ParseDuration(m[2])
		if err != nil || d < cfg.RetryBase/2 || d > cfg.RetryMax {
			t.Errorf("attempt %s waits %s, want [%v, %v]", m[1], m[2], cfg.RetryBase/2, cfg.RetryMax)
		}
	}
}

// A server that always greets and then refuses (draining forever) is no
// progress: the client still gives up.
func TestRunGivesUpOnEndlessRefusals(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.onHello = func(int) frame.Frame { return &frame.Error{Code: frame.CodeShuttingDown, Reason: "draining"} }
	s.start()
	cfg, _ := testConfig(t, s)
	cfg.RetryMax = 4 * time.Millisecond
	cfg.GiveUp = 50 * time.Millisecond
	o := run(t, cfg, agency.NewSliceSource(testBets(3, 10)))
	var se *agency.ServerError
	if !errors.Is(o.err, agency.ErrGaveUp) || !errors.As(o.err, &se) || se.Err.Code != frame.CodeShuttingDown {
		t.Fatalf("Run error %v, want ErrGaveUp wrapping shutting_down", o.err)
	}
	if s.connCount() < 2 {
		t.Errorf("%d connections, want retries", s.connCount())
	}
}

func TestRunCancel(t *testing.T) {
	t.Run("waiting for ACK", func(t *testing.T) {
		noLeaks(t)
		s := newFakeServer(t)
		release := make(chan struct{})
		s.onBets = func(int, *frame.Bets) verdict {
			<-release // never answer until the test ends
			return verdict{store: 0, close: true}
		}
		s.start()
		t.Cleanup(func() { close(release) })
		cfg, log := testConfig(t, s)
		cfg.IOTimeout = time.Hour // only the cancel can end the wait
		ctx, cancel := context.WithCancel(context.Background())
		done := runAsync(ctx, cfg, agency.NewSliceSource(testBets(10, 10)))
		select {
		case <-s.gotBets:
		case <-time.After(hangGuard):
			t.Fatal("no BETS reached the server")
		}
		cancel()
		o := wait(t, done)
		if !errors.Is(o.err, context.Canceled) || o.res.Bets != 0 {
			t.Fatalf("Run = %+v, %v; want context.Canceled with 0 bets", o.res, o.err)
		}
		if !hasLine(log.String(), `close_socket \| result: success \| server: \S+`) {
			t.Error("no close_socket line")
		}
	})
	t.Run("holding for winners", func(t *testing.T) {
		noLeaks(t)
		s := newFakeServer(t)
		s.notReady = 1
		s.onFinal = func(int, uint64) frame.Frame { return &frame.NotReady{Finished: 1, Agencies: 2} }
		s.start()
		cfg, log := testConfig(t, s)
		ctx, cancel := context.WithCancel(context.Background())
		done := runAsync(ctx, cfg, agency.NewSliceSource(testBets(10, 10)))
		deadline := time.Now().Add(hangGuard)
		for !hasLine(log.String(), `consulta_ganadores \| result: in_progress .*`) {
			if time.Now().After(deadline) {
				t.Fatal("the client never waited for the draw")
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		o := wait(t, done)
		if !errors.Is(o.err, context.Canceled) || o.res.Bets != 10 {
			t.Fatalf("Run = %+v, %v; want context.Canceled with 10 bets", o.res, o.err)
		}
	})
	t.Run("backing off", func(t *testing.T) {
		noLeaks(t)
		log, buf := testLogger(t)
		cfg := agency.Config{Agency: 1, Server: refusedAddr(t), RetryBase: time.Hour, RetryMax: time.Hour, Logger: log}
		ctx, cancel := context.WithCancel(context.Background())
		done := runAsync(ctx, cfg, agency.NewSliceSource(testBets(1, 10)))
		deadline := time.Now().Add(hangGuard)
		for !hasLine(buf.String(), `connect \| result: in_progress .*`) {
			if time.Now().After(deadline) {
				t.Fatal("the client never backed off")
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if o := wait(t, done); !errors.Is(o.err, context.Canceled) {
			t.Fatalf("Run error %v, want context.Canceled", o.err)
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		noLeaks(t)
		s := newFakeServer(t)
		s.start()
		cfg, _ := testConfig(t, s)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if o := wait(t, runAsync(ctx, cfg, agency.NewSliceSource(testBets(1, 10)))); !errors.Is(o.err, context.Canceled) {
			t.Fatalf("Run error %v, want context.Canceled", o.err)
		}
	})
}

// A bad row fails the upload with its RowError before any bet of its batch
// leaves, and is not retried.
func TestRunBadRow(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.start()
	bets := testBets(300, 10)
	content := betsCSV(bets[:149]) + "Ana,Gómez,12a,1990-01-01,1\n" + betsCSV(bets[150:])
	src, path := openFile(t, content)
	cfg, log := testConfig(t, s)
	o := run(t, cfg, src)
	var re *agency.RowError
	if !errors.As(o.err, &re) || re.Line != 150 || re.File != path {
		t.Fatalf("Run error %v, want a RowError at %s:150", o.err, path)
	}
	if o.res.Bets != 100 {
		t.Errorf("Result.Bets = %d, want the 100 acknowledged", o.res.Bets)
	}
	stored, got, finished, _ := s.snapshot()
	if want := []received{{0, 0, 100}}; !slices.Equal(got, want) {
		t.Errorf("server got BETS %v, want only %v (nothing of the bad row's batch)", got, want)
	}
	sameBets(t, stored, bets[:100])
	if len(finished) != 0 || s.connCount() != 1 {
		t.Errorf("FINISHED %v over %d connections; want none, 1", finished, s.connCount())
	}
	if !hasLine(log.String(), fmt.Sprintf(`upload \| result: fail \| bets: 100 \| error: %s:150: .*document.*`, regexp.QuoteMeta(path))) {
		t.Error("no upload fail line naming the row")
	}
}

func TestRunFrameLimitBatches(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.start()
	bets := testBets(100, frame.MaxNameLen)
	cfg, _ := testConfig(t, s)
	cfg.BatchMaxAmount = 1000
	if o := run(t, cfg, agency.NewSliceSource(bets)); o.err != nil {
		t.Fatal(o.err)
	}
	stored, got, _, _ := s.snapshot()
	sameBets(t, stored, bets)
	if want := []received{{0, 0, 37}, {0, 37, 37}, {0, 74, 26}}; !slices.Equal(got, want) {
		t.Errorf("BETS %v, want %v", got, want)
	}
}

func TestRejectErrorMessage(t *testing.T) {
	e := &agency.RejectError{Reject: frame.Reject{Code: frame.CodeInvalidBet, Index: 7, Reason: "bad"}}
	if got, want := e.Error(), "batch rejected (invalid_bet) at bet 7: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// The in_progress line reports acknowledged bets and the share of the file
// read, growing, and never more often than Config.Progress allows.
func TestRunProgressLines(t *testing.T) {
	noLeaks(t)
	s := newFakeServer(t)
	s.start()
	bets := testBets(250, 10)
	cfg, log := testConfig(t, s)
	cfg.Progress = time.Nanosecond
	if o := run(t, cfg, fileSource(t, bets)); o.err != nil {
		t.Fatalf("Run: %v", o.err)
	}
	re := regexp.MustCompile(`action: upload \| result: in_progress \| agency: 1 \| bets: (\d+) \| percent: (\d+\.\d)`)
	matches := re.FindAllStringSubmatch(log.String(), -1)
	// The first ACK only starts the clock; the next two are reported.
	if len(matches) != 2 {
		t.Fatalf("%d in_progress lines, want 2:\n%s", len(matches), log.String())
	}
	prevBets, prevPct := 0, 0.0
	for i, m := range matches {
		n, _ := strconv.Atoi(m[1])
		pct, _ := strconv.ParseFloat(m[2], 64)
		if n <= prevBets || pct < prevPct || pct > 100 {
			t.Errorf("line %d: bets %d percent %.1f after bets %d percent %.1f", i, n, pct, prevBets, prevPct)
		}
		prevBets, prevPct = n, pct
	}
	if prevBets != 250 {
		t.Errorf("last in_progress line says %d bets, want 250", prevBets)
	}

}
