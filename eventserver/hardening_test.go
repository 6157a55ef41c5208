package eventserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
)

// The hardening table runs every case against its own server with two
// agencies: agency 1 is a well-behaved agency uploading while the case runs,
// agency 2 is the id the hostile peer uses. After the case a clean agency 2
// finishes the upload, and both must get exactly their winners, with the
// store holding exactly their bets.

const hardWinning = DefaultWinningNumber

var (
	hardGoodBets = hardSynth(1, 600, 3, 11)
	hardPeerBets = hardSynth(2, 150, 1, 12)
)

func hardSynth(agencyID uint32, n, winners int, seed int64) []frame.Bet {
	bets, err := agency.SyntheticBets(agency.SynthOptions{
		Agency: agencyID, Bets: n, Winners: winners, WinningNumber: hardWinning, Seed: seed,
	})
	if err != nil {
		panic(err)
	}
	return bets
}

// hardWinnersOf is the documents of bets holding the winning number, in order.
func hardWinnersOf(bets []frame.Bet) []string {
	var docs []string
	for _, b := range bets {
		if b.Number == hardWinning {
			docs = append(docs, b.Document)
		}
	}
	return docs
}

// hardCase is one hostile behaviour.
type hardCase struct {
	name      string
	cfg       func(*Config)
	batch     int    // good agencies' batch size; 0 means 50
	peerHeld  uint64 // agency 2's bets stored by the hostile peer itself
	peerFinal bool   // the hostile peer's FINISHED is on record
	run       func(t *testing.T, h *hardHarness)
}

// hardHarness is one case's server and its well-behaved agency.
type hardHarness struct {
	ts    *testServer
	good  chan hardRun
	batch int
}

type hardRun struct {
	res agency.Result
	err error
}

func TestHardening(t *testing.T) {
	for _, tc := range hardCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hardRunCase(t, tc)
		})
	}
}

func hardRunCase(t *testing.T, tc hardCase) {
	cfg := Config{Agencies: 2, ReadTimeout: 500 * time.Millisecond, ShutdownGrace: 5 * time.Second}
	if tc.cfg != nil {
		tc.cfg(&cfg)
	}
	h := &hardHarness{ts: startServer(t, cfg), good: make(chan hardRun, 1), batch: tc.batch}
	if h.batch == 0 {
		h.batch = 50
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		res, err := h.upload(ctx, 1, hardGoodBets)
		h.good <- hardRun{res, err}
	}()

	tc.run(t, h)

	held, finished := h.ts.Hub().Status(2)
	if held != tc.peerHeld || finished != tc.peerFinal {
		t.Errorf("after the hostile peer agency 2 holds %d bets (finished %v), want %d (finished %v)",
			held, finished, tc.peerHeld, tc.peerFinal)
	}

	peer, err := h.upload(ctx, 2, hardPeerBets)
	if err != nil {
		t.Fatalf("clean agency 2 after the hostile peer: %v", err)
	}
	var good hardRun
	select {
	case good = <-h.good:
	case <-ctx.Done():
		t.Fatal("good agency did not finish within 60s")
	}
	if good.err != nil {
		t.Fatalf("good agency: %v", good.err)
	}
	hardCheckWinners(t, 1, good.res, hardGoodBets)
	hardCheckWinners(t, 2, peer, hardPeerBets)
	if err := h.ts.stop(t); err != nil {
		t.Fatalf("server stop: %v", err)
	}
	hardCheckStore(t, h.ts.store.Dir(), map[uint32][]frame.Bet{1: hardGoodBets, 2: hardPeerBets})
}

func (h *hardHarness) upload(ctx context.Context, id uint32, bets []frame.Bet) (agency.Result, error) {
	return agency.Run(ctx, agency.Config{
		Agency:         id,
		Server:         h.ts.Addr(),
		BatchMaxAmount: h.batch,
		RetryBase:      10 * time.Millisecond,
		RetryMax:       200 * time.Millisecond,
		GiveUp:         30 * time.Second,
		IOTimeout:      20 * time.Second,
	}, agency.NewSliceSource(bets))
}

func hardCheckWinners(t *testing.T, id uint32, res agency.Result, bets []frame.Bet) {
	t.Helper()
	if res.Bets != uint64(len(bets)) {
		t.Errorf("agency %d: server holds %d bets, want %d", id, res.Bets, len(bets))
	}
	if want := hardWinnersOf(bets); !slices.Equal(res.Winners, want) {
		t.Errorf("agency %d winners %v, want %v", id, res.Winners, want)
	}
}

// hardCheckStore compares the data directory's bets.csv with what each agency
// sent: the same bets, in order, each once.
func hardCheckStore(t *testing.T, dir string, want map[uint32][]frame.Bet) {
	t.Helper()
	got := map[uint32][]frame.Bet{}
	for b, err := range persist.LoadBetsFile(dir + "/" + persist.BetsFile) {
		if err != nil {
			t.Fatalf("read store: %v", err)
		}
		got[b.Agency] = append(got[b.Agency], b.Bet)
	}
	for id, bets := range want {
		if !slices.Equal(got[id], bets) {
			t.Errorf("store holds %d bets of agency %d, want its %d bets in order", len(got[id]), id, len(bets))
		}
		delete(got, id)
	}
	for id, bets := range got {
		t.Errorf("store holds %d bets of unexpected agency %d", len(bets), id)
	}
}

// peer is a hostile client connection.
func (h *hardHarness) peer(t *testing.T) *rawConn { return dial(t, h.ts.Addr()) }

// hardHello opens agency 2's session on c.
func hardHello(t *testing.T, c *rawConn) {
	t.Helper()
	c.send(&frame.Hello{Agency: 2})
	if w := expect[*frame.Welcome](c); w.Held != 0 || w.Finished {
		t.Fatalf("WELCOME %+v, want a fresh agency", w)
	}
}

// hardExpectError reads the next frame, which must be an ERROR with code, and
// then the end of the connection.
func hardExpectError(t *testing.T, c *rawConn, code frame.Code) {
	t.Helper()
	e := expect[*frame.Error](c)
	if e.Code != code {
		t.Fatalf("ERROR %s (%q), want %s", e.Code, e.Reason, code)
	}
	hardExpectClosed(t, c)
}

// hardExpectClosed reads until the server's close: EOF, or a reset when the
// server closed with bytes of ours unread.
func hardExpectClosed(t *testing.T, c *rawConn) {
	t.Helper()
	f, err := c.recv(10 * time.Second)
	if err == nil {
		t.Fatalf("expected the connection closed, got %s %+v", f.Type(), f)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("expected the connection closed, got %v", err)
	}
}

// hardExpectFailLog waits for a `result: fail` line of action about c whose
// fields include want.
func hardExpectFailLog(t *testing.T, ts *testServer, c *rawConn, action string, want map[string]string) {
	t.Helper()
	remote := c.conn.LocalAddr().String()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n := hardCountFail(ts.logs, action, remote, want); n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no `%s | result: fail` line for %s with %v; logs:\n%s", action, remote, want, hardDumpLogs(ts.logs, remote))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hardCountFail counts fail lines of action (about remote, when not empty)
// carrying the fields of want.
func hardCountFail(logs *observer.ObservedLogs, action, remote string, want map[string]string) int {
	n := 0
next:
	for _, e := range logs.FilterMessage(action).All() {
		ctx := e.ContextMap()
		if ctx["result"] != "fail" || (remote != "" && ctx["remote"] != remote) {
			continue
		}
		for k, v := range want {
			if fmt.Sprint(ctx[k]) != v {
				continue next
			}
		}
		n++
	}
	return n
}

func hardDumpLogs(logs *observer.ObservedLogs, remote string) string {
	out := ""
	for _, e := range logs.All() {
		if ctx := e.ContextMap(); remote == "" || ctx["remote"] == remote {
			out += fmt.Sprintf("  %s %v\n", e.Message, ctx)
		}
	}
	return out
}

func hardCode(code frame.Code) map[string]string { return map[string]string{"code": code.String()} }

// hardRejectCase sends a batch of agency 2's first bets with bet 2 spoiled by
// spoil; the server must refuse the whole batch with REJECT invalid_bet at
// stream index 2 and keep the connection open.
func hardRejectCase(name string, spoil func(*frame.Bet)) hardCase {
	return hardCase{name: name, run: func(t *testing.T, h *hardHarness) {
		c := h.peer(t)
		hardHello(t, c)
		batch := slices.Clone(hardPeerBets[:4])
		spoil(&batch[2])
		c.send(&frame.Bets{First: 0, Bets: batch})
		r := expect[*frame.Reject](c)
		if r.Code != frame.CodeInvalidBet || r.Index != 2 {
			t.Fatalf("REJECT %s at %d (%q), want invalid_bet at 2", r.Code, r.Index, r.Reason)
		}
		hardExpectFailLog(t, h.ts, c, "apuesta_recibida", map[string]string{"cantidad": "4"})
		c.send(&frame.Ping{Payload: []byte("still here")})
		if p := expect[*frame.Pong](c); string(p.Payload) != "still here" {
			t.Fatalf("PONG %q", p.Payload)
		}
	}}
}

// hardErrorCase sends raw bytes (after HELLO when afterHello) and expects an
// ERROR with code, a session_error fail line, and the connection closed.
func hardErrorCase(name string, afterHello bool, code frame.Code, payload func(t *testing.T) []byte) hardCase {
	return hardCase{name: name, run: func(t *testing.T, h *hardHarness) {
		c := h.peer(t)
		if afterHello {
			hardHello(t, c)
		}
		c.sendRaw(payload(t))
		hardExpectError(t, c, code)
		hardExpectFailLog(t, h.ts, c, "session_error", hardCode(code))
	}}
}

func hardEncode(t *testing.T, frames ...frame.Frame) []byte {
	t.Helper()
	var b []byte
	for _, f := range frames {
		var err error
		if b, err = frame.Append(b, f); err != nil {
			t.Fatalf("encode %s: %v", f.Type(), err)
		}
	}
	return b
}

// hardPeerFrame is a BETS frame holding as many of agency 2's bets as fit.
func hardPeerFrame() *frame.Bets {
	n := 0
	for n < len(hardPeerBets) && frame.BetsFrameSize(hardPeerBets[:n+1]) <= frame.MaxSize {
		n++
	}
	return &frame.Bets{First: 0, Bets: hardPeerBets[:n]}
}

func hardCases() []hardCase {
	future := frame.DateOf(time.Now().AddDate(1, 0, 0))
	cases := []hardCase{
		hardErrorCase("wrong_version", false, frame.CodeVersion, func(t *testing.T) []byte {
			b := hardEncode(t, &frame.Hello{Agency: 2})
			b[0] = frame.Version + 1
			return b
		}),
		hardErrorCase("length_over_8192", true, frame.CodeTooLarge, func(*testing.T) []byte {
			// A header announcing 8190 payload bytes: 8194 with the header.
			return []byte{frame.Version, byte(frame.TypeBets), 0x1F, 0xFE}
		}),
		// 20 bets of at most 46 bytes fit in 1024.
		{name: "length_over_max_frame", batch: 20, cfg: func(c *Config) { c.MaxFrame = 1024 }, run: func(t *testing.T, h *hardHarness) {
			c := h.peer(t)
			hardHello(t, c)
			f := hardPeerFrame()
			if frame.BetsFrameSize(f.Bets) <= 1024 {
				t.Fatalf("test frame of %d bytes is not over the limit", frame.BetsFrameSize(f.Bets))
			}
			c.send(f)
			hardExpectError(t, c, frame.CodeTooLarge)
			hardExpectFailLog(t, h.ts, c, "session_error", hardCode(frame.CodeTooLarge))
		}},
		{name: "truncated_frame_then_close", run: func(t *testing.T, h *hardHarness) {
			c := h.peer(t)
			hardHello(t, c)
			b := hardEncode(t, hardPeerFrame())
			c.sendRaw(b[:len(b)/2])
			if err := c.conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			hardExpectClosed(t, c)
			hardExpectFailLog(t, h.ts, c, "connection_closed", map[string]string{"unread_bytes": fmt.Sprint(len(b) / 2)})
		}},
		hardRejectCase("invalid_utf8_name", func(b *frame.Bet) { b.FirstName = "Ju\xffan" }),
		hardRejectCase("date_2023_02_30", func(b *frame.Bet) { b.Birthdate = frame.NewDate(2023, 2, 30) }),
		hardRejectCase("date_1899_12_31", func(b *frame.Bet) { b.Birthdate = frame.NewDate(1899, 12, 31) }),
		hardRejectCase("date_in_the_future", func(b *frame.Bet) { b.Birthdate = future }),
		hardRejectCase("document_not_numeric", func(b *frame.Bet) { b.Document = "30A45678" }),
		hardRejectCase("number_10000", func(b *frame.Bet) { b.Number = 10000 }),
		{name: "unknown_agency_0_and_3", run: func(t *testing.T, h *hardHarness) {
			for _, id := range []uint32{0, 3} {
				c := h.peer(t)
				c.send(&frame.Hello{Agency: id})
				hardExpectError(t, c, frame.CodeUnknownAgency)
				hardExpectFailLog(t, h.ts, c, "hello", map[string]string{"agency": fmt.Sprint(id)})
				hardExpectFailLog(t, h.ts, c, "session_error", hardCode(frame.CodeUnknownAgency))
			}
		}},
		hardErrorCase("bets_before_hello", false, frame.CodeUnexpected, func(t *testing.T) []byte {
			return hardEncode(t, &frame.Bets{First: 0, Bets: hardPeerBets[:3]})
		}),
		hardErrorCase("welcome_from_client", false, frame.CodeUnexpected, func(t *testing.T) []byte {
			return hardEncode(t, &frame.Welcome{Held: 5})
		}),
		hardErrorCase("ack_from_client", true, frame.CodeUnexpected, func(t *testing.T) []byte {
			return hardEncode(t, &frame.Ack{First: 0, Count: 3})
		}),
		hardErrorCase("hello_twice", true, frame.CodeUnexpected, func(t *testing.T) []byte {
			return hardEncode(t, &frame.Hello{Agency: 2})
		}),
		{name: "finished_twice", peerHeld: uint64(len(hardPeerBets)), peerFinal: true, run: func(t *testing.T, h *hardHarness) {
			c := h.peer(t)
			hardHello(t, c)
			c.send(&frame.Bets{First: 0, Bets: hardPeerBets})
			if a := expect[*frame.Ack](c); a.First != 0 || int(a.Count) != len(hardPeerBets) {
				t.Fatalf("ACK %+v", a)
			}
			c.send(&frame.Finished{Total: uint64(len(hardPeerBets))})
			// NOT_READY, or WINNERS if agency 1 finished first.
			if f := hardExpectOneOf(t, c, frame.TypeNotReady, frame.TypeWinners); f.Type() == frame.TypeWinners {
				for !f.(*frame.Winners).Last {
					f = hardExpectOneOf(t, c, frame.TypeWinners)
				}
			}
			c.send(&frame.Finished{Total: uint64(len(hardPeerBets))})
			for {
				// The draw may push WINNERS before the answer to the second FINISHED.
				f := hardExpectOneOf(t, c, frame.TypeWinners, frame.TypeError)
				if e, ok := f.(*frame.Error); ok {
					if e.Code != frame.CodeAlreadyFinished {
						t.Fatalf("ERROR %s (%q), want already_finished", e.Code, e.Reason)
					}
					break
				}
			}
			hardExpectClosed(t, c)
			hardExpectFailLog(t, h.ts, c, "session_error", hardCode(frame.CodeAlreadyFinished))
		}},
		{name: "late_hello_from_older_connection", run: func(t *testing.T, h *hardHarness) {
			// older's HELLO arrives after newer's, as when an agency gave up on
			// a stalled connection and its bytes were delivered late: the
			// older connection must lose, never the agency's live one.
			older := h.peer(t)
			older.send(&frame.Ping{Payload: []byte("open")})
			expect[*frame.Pong](older)
			newer := h.peer(t)
			hardHello(t, newer)
			older.send(&frame.Hello{Agency: 2})
			hardExpectError(t, older, frame.CodeReplaced)
			hardExpectFailLog(t, h.ts, older, "session_error", hardCode(frame.CodeReplaced))
			newer.send(&frame.Ping{Payload: []byte("still mine")})
			if p := expect[*frame.Pong](newer); string(p.Payload) != "still mine" {
				t.Fatalf("PONG %q", p.Payload)
			}
		}},
		{name: "trickle_one_byte_at_a_time", run: func(t *testing.T, h *hardHarness) {
			c := h.peer(t)
			hardHello(t, c)
			b := hardEncode(t, hardPeerFrame())
			interval := h.ts.cfg.ReadTimeout / 5
			var sent int
			var wg sync.WaitGroup
			stop := make(chan struct{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(interval)
				defer tick.Stop()
				for sent < len(b) {
					c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.conn.Write(b[sent : sent+1]); err != nil {
						return
					}
					sent++
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			e := expect[*frame.Error](c)
			close(stop)
			wg.Wait()
			if e.Code != frame.CodeTimeout {
				t.Fatalf("ERROR %s (%q), want timeout", e.Code, e.Reason)
			}
			if sent < 3 || sent >= len(b) {
				t.Errorf("trickler sent %d of %d bytes before the cut; want bytes still arriving", sent, len(b))
			}
			hardExpectClosed(t, c)
			hardExpectFailLog(t, h.ts, c, "session_error", hardCode(frame.CodeTimeout))
		}},
		{name: "300_idle_connections", cfg: func(c *Config) { c.ReadTimeout = time.Second }, run: func(t *testing.T, h *hardHarness) {
			conns := make([]*rawConn, 300)
			for i := range conns {
				conns[i] = h.peer(t)
			}
			for i, c := range conns {
				f, err := c.recv(15 * time.Second)
				if err != nil {
					t.Fatalf("idle connection %d: %v", i, err)
				}
				if e, ok := f.(*frame.Error); !ok || e.Code != frame.CodeTimeout {
					t.Fatalf("idle connection %d got %s %+v, want ERROR timeout", i, f.Type(), f)
				}
				hardExpectClosed(t, c)
			}
			if n := hardCountFail(h.ts.logs, "session_error", "", hardCode(frame.CodeTimeout)); n < len(conns) {
				t.Errorf("%d session_error timeout lines, want at least %d", n, len(conns))
			}
		}},
		{name: "beyond_max_conns", cfg: func(c *Config) { c.MaxConns = 4; c.ReadTimeout = 10 * time.Second },
			run: func(t *testing.T, h *hardHarness) {
				var admitted []*rawConn
				for range 5 { // the good agency may hold one of the 4 slots
					c := h.peer(t)
					c.send(&frame.Ping{Payload: []byte{1}})
					f, err := c.recv(10 * time.Second)
					if err != nil {
						t.Fatalf("connection %d: %v", len(admitted)+1, err)
					}
					if _, ok := f.(*frame.Pong); ok {
						admitted = append(admitted, c)
						continue
					}
					e, ok := f.(*frame.Error)
					if !ok || e.Code != frame.CodeTooManyConns {
						t.Fatalf("connection %d got %s %+v, want PONG or ERROR too_many_connections", len(admitted)+1, f.Type(), f)
					}
					hardExpectClosed(t, c)
					hardExpectFailLog(t, h.ts, c, "connection_open", hardCode(frame.CodeTooManyConns))
					if len(admitted) < 3 {
						t.Errorf("refused after %d connections, limit is 4", len(admitted))
					}
					for _, a := range admitted {
						a.conn.Close()
					}
					return
				}
				t.Fatalf("%d connections admitted, limit is 4", len(admitted))
			}},
		{name: "flood_while_in_flight", peerHeld: uint64(len(hardPeerFrame().Bets)), run: func(t *testing.T, h *hardHarness) {
			c := h.peer(t)
			hardHello(t, c)
			one := hardEncode(t, hardPeerFrame())
			var b []byte
			for len(b) <= FloodLimit+3*len(one) {
				b = append(b, one...) // the same batch again and again, never waiting for its ACK
			}
			c.sendRaw(b)
			for {
				f, err := c.recv(10 * time.Second)
				if errors.Is(err, syscall.ECONNRESET) {
					// The server closed with some of our bytes unread, so the
					// kernel reset the connection; the log must still say why.
					t.Logf("connection reset before the ERROR frame was read")
					break
				}
				if err != nil {
					t.Fatalf("waiting for ERROR flood: %v", err)
				}
				if _, ok := f.(*frame.Ack); ok {
					continue
				}
				e, ok := f.(*frame.Error)
				if !ok || e.Code != frame.CodeFlood {
					t.Fatalf("got %s %+v, want ERROR flood", f.Type(), f)
				}
				hardExpectClosed(t, c)
				break
			}
			hardExpectFailLog(t, h.ts, c, "session_error", hardCode(frame.CodeFlood))
			// The batch in flight at the cut may still land; wait for it.
			hardWaitHeld(t, h.ts, 2, uint64(len(hardPeerFrame().Bets)))
		}},
	}
	for seed := range uint64(4) {
		cases = append(cases, hardCase{name: fmt.Sprintf("random_bytes_%d", seed), run: func(t *testing.T, h *hardHarness) {
			r := rand.New(rand.NewPCG(seed, 7))
			b := make([]byte, 256)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			c := h.peer(t)
			c.sendRaw(b)
			e := expect[*frame.Error](c)
			hardExpectClosed(t, c)
			hardExpectFailLog(t, h.ts, c, "session_error", hardCode(e.Code))
		}})
	}
	return cases
}

// hardExpectOneOf reads the next frame and fails unless its type is one of types.
func hardExpectOneOf(t *testing.T, c *rawConn, types ...frame.Type) frame.Frame {
	t.Helper()
	f, err := c.recv(10 * time.Second)
	if err != nil {
		t.Fatalf("expected one of %v: %v", types, err)
	}
	if !slices.Contains(types, f.Type()) {
		t.Fatalf("expected one of %v, got %s %+v", types, f.Type(), f)
	}
	return f
}

// hardWaitHeld waits until the store holds want bets of the agency, then checks
// it holds no more.
func hardWaitHeld(t *testing.T, ts *testServer, id uint32, want uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		held, _ := ts.Hub().Status(id)
		if held == want {
			return
		}
		if held > want || time.Now().After(deadline) {
			t.Fatalf("agency %d holds %d bets, want %d", id, held, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
