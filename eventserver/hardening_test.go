package eventserver

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/secure"
)

// The hardening table runs every case against a shared server (one per
// configuration the cases need), secured unless the case's group is
// insecure, with a pair of agencies of its own: a well-behaved agency (the
// real client) uploading while the case runs, and the identity the hostile
// peer uses (its key, or none). Once every case has run, a clean agency
// uploads for each hostile identity, and all agencies must get exactly
// their winners, with the store holding exactly their bets: no hostile peer
// stored anything (or, for a flood, at most the batch it had already handed
// to the store, the same bets the clean agency starts with, which it then
// finds held), and no case disturbed the agencies of the others.

var (
	hardGoodBets = hardSynth(1, 300, 3, 11)
	hardPeerBets = hardSynth(2, 150, 1, 12)
)

func hardSynth(id uint32, n, winners int, seed int64) []frame.Bet {
	bets, err := agency.SyntheticBets(agency.SynthOptions{
		Agency: id, Bets: n, Winners: winners, WinningNumber: DefaultWinningNumber, Seed: seed,
	})
	if err != nil {
		panic(err)
	}
	return bets
}

// hardGroup is the server configuration a case runs under.
type hardGroup int

const (
	groupSecure    hardGroup = iota // the defaults, with short read and hello timeouts
	groupInsecure                   // the same, --insecure
	groupMaxFrame                   // --max-frame 1024
	groupWindowOne                  // --window 1
)

var hardGroupNames = [...]string{"secure", "insecure", "max_frame_1024", "window_1"}

func (g hardGroup) String() string { return hardGroupNames[g] }

func (g hardGroup) config() (Config, []serverOption) {
	cfg := Config{ReadTimeout: 500 * time.Millisecond, HelloTimeout: 1500 * time.Millisecond, ShutdownGrace: 5 * time.Second}
	var opts []serverOption
	switch g {
	case groupInsecure:
		opts = append(opts, optInsecure())
	case groupMaxFrame:
		cfg.MaxFrame = 1024
	case groupWindowOne:
		cfg.Window = 1
	}
	return cfg, append(opts, optLogLevel(zapcore.InfoLevel))
}

// hardCase is one hostile behaviour.
type hardCase struct {
	name        string
	group       hardGroup
	peerMayHold uint64 // bets of the hostile identity the peer may have stored (a prefix of the clean ones)
	run         func(t *testing.T, h *hardHarness)
}

// hardHarness is what a case works with: the server and its two agencies.
type hardHarness struct {
	ts   *testServer
	good uint32 // uploads with the real client while the case runs
	id   uint32 // the identity of the hostile peer
}

func TestHardening(t *testing.T) {
	t.Parallel()
	runHardTable(t, hardCases())
}

// runHardTable runs the cases, one server per group, the groups in parallel.
func runHardTable(t *testing.T, cases []hardCase) {
	byGroup := map[hardGroup][]hardCase{}
	for _, tc := range cases {
		byGroup[tc.group] = append(byGroup[tc.group], tc)
	}
	for g := range hardGroupNames {
		if cs := byGroup[hardGroup(g)]; len(cs) > 0 {
			t.Run(hardGroup(g).String(), func(t *testing.T) {
				t.Parallel()
				runHardGroup(t, hardGroup(g), cs)
			})
		}
	}
}

func runHardGroup(t *testing.T, g hardGroup, cases []hardCase) {
	cfg, opts := g.config()
	cfg.Agencies = 2 * len(cases)
	ts := startServer(t, cfg, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // also when the test fails
	runs := make([]hardRun, cfg.Agencies)  // runs[id-1], each written by its own goroutine
	start := func(id uint32, bets []frame.Bet) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := agency.Run(ctx, ts.agencyConfig(id, zap.NewNop()), agency.NewSliceSource(bets))
			runs[id-1] = hardRun{res, err}
		}()
	}
	t.Run("cases", func(t *testing.T) {
		for i, tc := range cases {
			h := &hardHarness{ts: ts, good: uint32(2*i + 1), id: uint32(2*i + 2)}
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				start(h.good, hardGoodBets)
				tc.run(t, h)
				if held, finished, _ := ts.Hub().Status(h.id); held > tc.peerMayHold || finished {
					t.Errorf("after the hostile peer agency %d holds %d bets (finished %v), want at most %d, not finished",
						h.id, held, finished, tc.peerMayHold)
				}
			})
		}
	})
	for i := range cases {
		start(uint32(2*i+2), hardPeerBets) // the clean agency of each hostile identity
	}
	wg.Wait()
	want := map[uint32][]frame.Bet{}
	for i, tc := range cases {
		good, peer := uint32(2*i+1), uint32(2*i+2)
		want[good], want[peer] = hardGoodBets, hardPeerBets
		hardCheckRun(t, tc.name, good, runs[good-1], hardGoodBets)
		hardCheckRun(t, tc.name, peer, runs[peer-1], hardPeerBets)
	}
	ts.mustStop(t)
	checkStored(t, ts.dir, want)
}

type hardRun struct {
	res agency.Result
	err error
}

func hardCheckRun(t *testing.T, name string, id uint32, r hardRun, bets []frame.Bet) {
	t.Helper()
	switch {
	case r.err != nil:
		t.Errorf("%s: agency %d: %v", name, id, r.err)
	case r.res.Bets != uint64(len(bets)):
		t.Errorf("%s: agency %d: server holds %d bets, want %d", name, id, r.res.Bets, len(bets))
	case !slices.Equal(r.res.Winners, winnersIn(bets)):
		t.Errorf("%s: agency %d winners %v, want %v", name, id, r.res.Winners, winnersIn(bets))
	}
}

// peer opens the hostile peer's connection (with its identity's key when secured).
func (h *hardHarness) peer(t *testing.T) *peer { return h.ts.mustDial(t, h.id) }

// hello opens the hostile identity's session on p.
func (h *hardHarness) hello(t *testing.T, p *peer) {
	t.Helper()
	mustWrite(t, p, &frame.Hello{Agency: h.id})
	if w := expectFrame[*frame.Welcome](t, p); w.Held != 0 || w.Finished {
		t.Fatalf("WELCOME %+v, want a fresh agency", w)
	}
}

// expectFailLog waits for a `result: fail` line of action about the
// connection from local address remote whose fields include kv.
func (h *hardHarness) expectFailLog(t *testing.T, remote, action string, kv ...string) {
	t.Helper()
	h.ts.logs.wait(t, action, failLine(append([]string{"remote", remote}, kv...)...))
}

// hardErrorCase sends encoded frames (through the secured transport, after
// HELLO when afterHello) and expects an ERROR with code, a session_error
// fail line, and the connection closed.
func hardErrorCase(name string, afterHello bool, code frame.Code, payload func(t *testing.T, h *hardHarness) []byte) hardCase {
	return hardCase{name: name, run: func(t *testing.T, h *hardHarness) {
		p := h.peer(t)
		if afterHello {
			h.hello(t, p)
		}
		if err := p.sendEncoded(payload(t, h)); err != nil {
			t.Fatal(err)
		}
		expectError(t, p, code)
		h.expectFailLog(t, p.localAddr(), "session_error", "code", code.String())
	}}
}

// hardRejectCase sends a batch of the hostile identity's first bets with
// bet 2 spoiled by spoil; the server must refuse the whole batch with REJECT
// invalid_bet at stream index 2 and keep the connection open.
func hardRejectCase(name string, group hardGroup, spoil func(*frame.Bet)) hardCase {
	return hardCase{name: name, group: group, run: func(t *testing.T, h *hardHarness) {
		p := h.peer(t)
		h.hello(t, p)
		batch := slices.Clone(hardPeerBets[:4])
		spoil(&batch[2])
		mustWrite(t, p, &frame.Bets{First: 0, Bets: batch})
		r := expectFrame[*frame.Reject](t, p)
		if r.Code != frame.CodeInvalidBet || r.Index != 2 {
			t.Fatalf("REJECT %s at %d (%q), want invalid_bet at 2", r.Code, r.Index, r.Reason)
		}
		h.expectFailLog(t, p.localAddr(), "apuesta_recibida", "cantidad", "4")
		mustPing(t, p, "still here")
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

// hardPeerFrame is a BETS frame holding as many of the hostile identity's bets as fit.
func hardPeerFrame() *frame.Bets {
	n := 0
	for n < len(hardPeerBets) && frame.BetsFrameSize(hardPeerBets[:n+1]) <= frame.MaxSize {
		n++
	}
	return &frame.Bets{First: 0, Bets: hardPeerBets[:n]}
}

// randomBytes is n bytes from a seeded generator.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// trickle writes b one byte every interval until it is all sent or stop
// closes, and returns how many bytes it sent.
func trickle(p *peer, b []byte, interval time.Duration, stop <-chan struct{}) int {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	sent := 0
	for sent < len(b) {
		if err := p.sendRaw(b[sent : sent+1]); err != nil {
			return sent
		}
		sent++
		select {
		case <-stop:
			return sent
		case <-tick.C:
		}
	}
	return sent
}

func hardCases() []hardCase {
	future := frame.DateOf(time.Now().AddDate(1, 0, 0))
	cases := []hardCase{
		hardErrorCase("wrong_version", false, frame.CodeVersion, func(t *testing.T, h *hardHarness) []byte {
			b := hardEncode(t, &frame.Hello{Agency: h.id})
			b[0] = frame.Version + 1
			return b
		}),
		hardErrorCase("unknown_type", true, frame.CodeUnknownType, func(t *testing.T, h *hardHarness) []byte {
			return []byte{frame.Version, 0x7F, 0, 0}
		}),
		hardErrorCase("truncated_payload", false, frame.CodeMalformed, func(t *testing.T, h *hardHarness) []byte {
			return []byte{frame.Version, byte(frame.TypeHello), 0, 2, 0, 0} // HELLO needs 4 payload bytes
		}),
		hardErrorCase("count_not_backed_by_bytes", true, frame.CodeMalformed, func(t *testing.T, h *hardHarness) []byte {
			b := hardEncode(t, &frame.Bets{First: 0, Bets: hardPeerBets[:1]})
			binary.BigEndian.PutUint16(b[12:14], 5) // says 5 bets, holds 1
			return b
		}),
		// The group's real agencies cut their batches to WELCOME's max_frame;
		// this peer sends a frame of 8 KiB.
		{name: "frame_over_max_frame", group: groupMaxFrame, run: func(t *testing.T, h *hardHarness) {
			p := h.peer(t)
			h.hello(t, p)
			f := hardPeerFrame()
			if frame.BetsFrameSize(f.Bets) <= 1024 {
				t.Fatalf("test frame of %d bytes is not over the limit", frame.BetsFrameSize(f.Bets))
			}
			mustWrite(t, p, f)
			expectError(t, p, frame.CodeTooLarge)
			h.expectFailLog(t, p.localAddr(), "session_error", "code", frame.CodeTooLarge.String())
		}},
		{name: "length_over_8192", group: groupInsecure, run: func(t *testing.T, h *hardHarness) {
			p := h.peer(t)
			h.hello(t, p)
			// A header announcing 8190 payload bytes: 8194 with the header.
			if err := p.sendRaw([]byte{frame.Version, byte(frame.TypeBets), 0x1F, 0xFE}); err != nil {
				t.Fatal(err)
			}
			expectError(t, p, frame.CodeTooLarge)
			h.expectFailLog(t, p.localAddr(), "session_error", "code", frame.CodeTooLarge.String())
		}},
		{name: "record_over_8211", run: func(t *testing.T, h *hardHarness) {
			// A transport record announcing a 65535-byte body: the stream is
			// lost, so the server closes with no answer.
			p := h.peer(t)
			h.hello(t, p)
			if err := p.sendRaw([]byte{secure.KindTransport, 0xFF, 0xFF}); err != nil {
				t.Fatal(err)
			}
			if err := p.waitClosed(); err != nil {
				t.Fatal(err)
			}
			h.expectFailLog(t, p.localAddr(), "connection_lost", "agency", fmt.Sprint(h.id))
		}},
		{name: "truncated_record_then_close", run: func(t *testing.T, h *hardHarness) {
			p := h.peer(t)
			h.hello(t, p)
			b, err := p.wire(hardEncode(t, hardPeerFrame()))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.sendRaw(b[:len(b)/2]); err != nil {
				t.Fatal(err)
			}
			if err := p.tap.Conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if err := p.waitClosed(); err != nil {
				t.Fatal(err)
			}
			h.expectFailLog(t, p.localAddr(), "connection_closed", "unread_bytes", fmt.Sprint(len(b)/2))
		}},
		{name: "truncated_frame_then_close", group: groupInsecure, run: func(t *testing.T, h *hardHarness) {
			p := h.peer(t)
			h.hello(t, p)
			b := hardEncode(t, hardPeerFrame())
			if err := p.sendRaw(b[:len(b)/2]); err != nil {
				t.Fatal(err)
			}
			if err := p.tap.Conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if err := p.waitClosed(); err != nil {
				t.Fatal(err)
			}
			h.expectFailLog(t, p.localAddr(), "connection_closed", "unread_bytes", fmt.Sprint(len(b)/2))
		}},
		hardRejectCase("invalid_utf8_name", groupSecure, func(b *frame.Bet) { b.FirstName = "Ju\xffan" }),
		hardRejectCase("invalid_utf8_name", groupInsecure, func(b *frame.Bet) { b.LastName = "P\xc3rez" }),
		hardRejectCase("date_2023_02_30", groupSecure, func(b *frame.Bet) { b.Birthdate = frame.NewDate(2023, 2, 30) }),
		hardRejectCase("date_1899_12_31", groupSecure, func(b *frame.Bet) { b.Birthdate = frame.NewDate(1899, 12, 31) }),
		hardRejectCase("date_in_the_future", groupSecure, func(b *frame.Bet) { b.Birthdate = future }),
		hardRejectCase("document_not_numeric", groupSecure, func(b *frame.Bet) { b.Document = "30A45678" }),
		hardRejectCase("number_10000", groupSecure, func(b *frame.Bet) { b.Number = 10000 }),
		{name: "unknown_agency_0_and_n_plus_1", run: func(t *testing.T, h *hardHarness) {
			for _, id := range []uint32{0, uint32(h.ts.Hub().Agencies() + 1)} {
				p := h.peer(t)
				mustWrite(t, p, &frame.Hello{Agency: id})
				expectError(t, p, frame.CodeUnknownAgency)
				h.expectFailLog(t, p.localAddr(), "hello", "agency", fmt.Sprint(id))
				h.expectFailLog(t, p.localAddr(), "session_error", "code", frame.CodeUnknownAgency.String())
			}
		}},
		hardErrorCase("bets_before_hello", false, frame.CodeUnexpected, func(t *testing.T, h *hardHarness) []byte {
			return hardEncode(t, &frame.Bets{First: 0, Bets: hardPeerBets[:3]})
		}),
		hardErrorCase("welcome_from_client", false, frame.CodeUnexpected, func(t *testing.T, h *hardHarness) []byte {
			return hardEncode(t, &frame.Welcome{Held: 5, Window: 1, MaxFrame: 100})
		}),
		hardErrorCase("ack_from_client", true, frame.CodeUnexpected, func(t *testing.T, h *hardHarness) []byte {
			return hardEncode(t, &frame.Ack{First: 0, Count: 3})
		}),
		hardErrorCase("hello_twice", true, frame.CodeUnexpected, func(t *testing.T, h *hardHarness) []byte {
			return hardEncode(t, &frame.Hello{Agency: h.id})
		}),
		hardErrorCase("finished_with_a_wrong_total", true, frame.CodeTotalMismatch, func(t *testing.T, h *hardHarness) []byte {
			return hardEncode(t, &frame.Finished{Total: 5})
		}),
		{name: "late_hello_from_older_connection", run: func(t *testing.T, h *hardHarness) {
			// older's HELLO arrives after newer's, as when an agency gave up on
			// a stalled connection and its bytes were delivered late: the
			// older connection must lose, never the agency's live one. Both
			// have proven the key (a PING decrypted) before either says HELLO.
			older := h.peer(t)
			mustPing(t, older, "open")
			newer := h.peer(t)
			h.hello(t, newer)
			mustWrite(t, older, &frame.Hello{Agency: h.id})
			expectError(t, older, frame.CodeReplaced)
			h.expectFailLog(t, older.localAddr(), "session_error", "code", frame.CodeReplaced.String())
			mustPing(t, newer, "still mine")
		}},
		hardTrickleCase("trickle_one_byte_at_a_time", groupSecure),
		hardTrickleCase("trickle_one_byte_at_a_time", groupInsecure),
		{name: "300_idle_connections", run: func(t *testing.T, h *hardHarness) {
			conns := make([]*peer, 300)
			for i := range conns {
				conns[i] = h.ts.mustDialPlain(t) // not even a handshake
			}
			for i, p := range conns {
				if err := p.readError(frame.CodeTimeout); err != nil {
					t.Fatalf("idle connection %d: %v", i, err)
				}
			}
			n := h.ts.logs.count("session_error", failLine("code", frame.CodeTimeout.String(), "state", AwaitingHello.String()))
			if n < len(conns) {
				t.Errorf("%d session_error timeout lines, want at least %d", n, len(conns))
			}
		}},
		{name: "flood_while_in_flight", group: groupWindowOne, peerMayHold: uint64(len(hardPeerFrame().Bets)),
			run: func(t *testing.T, h *hardHarness) {
				p := h.peer(t)
				h.hello(t, p)
				one := hardEncode(t, hardPeerFrame())
				var frames []byte
				for len(frames) <= 2*FloodLimit {
					frames = append(frames, one...) // the same batch again and again, never waiting for its ACK
				}
				wire, err := p.wire(frames)
				if err != nil {
					t.Fatal(err)
				}
				if err := p.sendRaw(wire); err != nil && !isClosed(err) {
					t.Fatal(err)
				}
				for {
					f, err := p.read()
					if isClosed(err) {
						// The server closed with some of our bytes unread, so the
						// kernel may reset the connection before the ERROR is read;
						// the log must still say why.
						break
					}
					if err != nil {
						t.Fatalf("waiting for ERROR flood: %v", err)
					}
					if _, ok := f.(*frame.Ack); ok {
						continue
					}
					if e, ok := f.(*frame.Error); !ok || e.Code != frame.CodeFlood {
						t.Fatalf("got %s %s, want ERROR flood", f.Type(), brief(f))
					}
					if err := p.waitClosed(); err != nil {
						t.Fatal(err)
					}
					break
				}
				h.expectFailLog(t, p.localAddr(), "session_error", "code", frame.CodeFlood.String())
			}},
	}
	for seed := range uint64(3) {
		for _, group := range []hardGroup{groupSecure, groupInsecure} {
			cases = append(cases, hardCase{name: fmt.Sprintf("random_bytes_%d", seed), group: group, run: func(t *testing.T, h *hardHarness) {
				p := h.ts.mustDialPlain(t)
				if err := p.sendRaw(randomBytes(seed, 256)); err != nil {
					t.Fatal(err)
				}
				e := expectFrame[*frame.Error](t, p)
				if err := p.waitClosed(); err != nil {
					t.Fatal(err)
				}
				h.expectFailLog(t, p.localAddr(), "session_error", "code", e.Code.String())
			}})
		}
		// Random frames inside the secured transport: the record decrypts,
		// the frame inside it is garbage with a consistent length.
		cases = append(cases, hardCase{name: fmt.Sprintf("random_frame_in_transport_%d", seed), run: func(t *testing.T, h *hardHarness) {
			p := h.peer(t)
			b := randomBytes(seed, 200)
			binary.BigEndian.PutUint16(b[2:4], uint16(len(b)-frame.HeaderSize))
			if err := p.sendEncoded(b); err != nil {
				t.Fatal(err)
			}
			e := expectFrame[*frame.Error](t, p)
			if err := p.waitClosed(); err != nil {
				t.Fatal(err)
			}
			h.expectFailLog(t, p.localAddr(), "session_error", "code", e.Code.String())
		}})
	}
	return cases
}

// hardTrickleCase sends a BETS frame (its sealed record when secured) one
// byte every fifth of the read timeout: the server must cut it off with
// ERROR timeout while bytes are still arriving.
func hardTrickleCase(name string, group hardGroup) hardCase {
	return hardCase{name: name, group: group, run: func(t *testing.T, h *hardHarness) {
		p := h.peer(t)
		h.hello(t, p)
		b, err := p.wire(hardEncode(t, hardPeerFrame()))
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		sent := make(chan int, 1)
		go func() { sent <- trickle(p, b, h.ts.Server.cfg.ReadTimeout/5, stop) }()
		e, err := readAs[*frame.Error](p)
		close(stop)
		n := <-sent
		if err != nil {
			t.Fatal(err)
		}
		if e.Code != frame.CodeTimeout {
			t.Fatalf("ERROR %s (%q), want timeout", e.Code, e.Reason)
		}
		if n < 3 || n >= len(b) {
			t.Errorf("trickler sent %d of %d bytes before the cut; want bytes still arriving", n, len(b))
		}
		if err := p.waitClosed(); err != nil {
			t.Fatal(err)
		}
		h.expectFailLog(t, p.localAddr(), "session_error", "code", frame.CodeTimeout.String())
	}}
}

// wakeCounter is a connection that only counts its wakes.
type wakeCounter struct {
	gnet.Conn
	woken atomic.Int32
}

func (w *wakeCounter) Wake(gnet.AsyncCallback) error {
	w.woken.Add(1)
	return nil
}

// TestFeedWakesWhatWasParkedWhileItWasAway: connections parked on a full
// budget are woken even when the room signal that concerned them came and
// went while the feeder was busy (here: before it started). Nothing else
// happens afterwards, as at the end of an upload, so a feeder waiting for
// the next signal would leave them parked until the read timeout.
func TestFeedWakesWhatWasParkedWhileItWasAway(t *testing.T) {
	h := &Hub{budget: 4, room: make(chan struct{})}
	s := &Server{hub: h, starved: map[*conn]struct{}{}}
	x, y := &wakeCounter{}, &wakeCounter{}

	h.inflight.Store(4)
	s.starve(&conn{c: x}) // saturated: parked
	h.answered()
	h.answered() // half the budget: room
	h.inflight.Add(2)
	s.starve(&conn{c: y}) // saturated again: parked
	for range 3 {
		h.answered() // through half the budget again, then below
	}
	if x.woken.Load() != 0 || y.woken.Load() != 0 {
		t.Fatal("a connection parked on a full budget was woken before the feeder ran")
	}

	done := make(chan struct{})
	defer close(done)
	go s.feed(done)
	deadline := time.Now().Add(5 * time.Second)
	for (x.woken.Load() == 0 || y.woken.Load() == 0) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if x.woken.Load() == 0 || y.woken.Load() == 0 {
		t.Fatalf("parked connections woken %d and %d times with the budget no longer full, want both", x.woken.Load(), y.woken.Load())
	}
}

// TestDeliverWakesOncePerMailbox: events delivered before the event loop
// takes the mailbox share one wake, and the next event after it took them
// wakes the loop again.
func TestDeliverWakesOncePerMailbox(t *testing.T) {
	w := &wakeCounter{}
	cs := &conn{c: w}
	for range 3 {
		cs.Deliver(Stored{})
	}
	if got := w.woken.Load(); got != 1 {
		t.Fatalf("3 events delivered before the loop ran: %d wakes, want 1", got)
	}
	if got := len(cs.takeMailbox()); got != 3 {
		t.Fatalf("the loop took %d events, want 3", got)
	}
	cs.Deliver(Stored{})
	if got := w.woken.Load(); got != 2 {
		t.Fatalf("an event after the loop took the mailbox: %d wakes in all, want 2", got)
	}
	cs.closed.Store(true)
	cs.Deliver(Stored{})
	if got, left := w.woken.Load(), len(cs.takeMailbox()); got != 2 || left != 1 {
		t.Fatalf("an event for a closed connection: %d wakes, %d events queued; want 2 and only the earlier one", got, left)
	}
}

// stallingSync is a store fsync that, once armed, waits until release is
// closed: a disk that stalls. The test's cleanup releases it.
func stallingSync(t *testing.T) (storeSync func(*os.File) error, arm func(), release func()) {
	var armed atomic.Bool
	released := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(released) }) }
	t.Cleanup(release)
	storeSync = func(f *os.File) error {
		if armed.Load() {
			<-released
		}
		return f.Sync()
	}
	return storeSync, func() { armed.Store(true) }, release
}

// TestDrainingRefusesAnUndecodableHeader: while a session drains (SIGTERM
// came with a batch of it in flight), a frame header that does not parse
// ends it with the decode error, as before the drain. The draining session
// used to drop such a frame without consuming it, and its event loop then
// decoded the same four bytes forever, serving no other connection.
func TestDrainingRefusesAnUndecodableHeader(t *testing.T) {
	ts, p, release := drainingWithABatchInFlight(t)
	// A header of protocol version 0x63.
	if err := p.sendRaw([]byte{0x63, byte(frame.TypePing), 0, 0}); err != nil {
		t.Fatal(err)
	}
	if e := expectFrame[*frame.Error](t, p); e.Code != frame.CodeVersion {
		t.Errorf("ERROR %s (%s), want %s", e.Code, e.Reason, frame.CodeVersion)
	}
	if err := ts.Stuck(time.Now(), time.Second); err != nil {
		t.Errorf("Stuck: %v", err)
	}
	release()
}

// TestDrainingDropsAMalformedPayload: while a session drains, a frame read
// whole but malformed is dropped like any new frame: the batch handed to the
// writer is still ACKed, then the connection gets ERROR shutting_down.
func TestDrainingDropsAMalformedPayload(t *testing.T) {
	_, p, release := drainingWithABatchInFlight(t)
	// A HELLO whose 2-byte payload is truncated.
	if err := p.sendRaw([]byte{frame.Version, byte(frame.TypeHello), 0, 2, 0, 1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	release()
	if a := expectFrame[*frame.Ack](t, p); a.First != 0 || a.Count != 3 {
		t.Errorf("ACK %+v, want the 3 bets handed to the writer", a)
	}
	if e := expectFrame[*frame.Error](t, p); e.Code != frame.CodeShuttingDown {
		t.Errorf("ERROR %s (%s), want %s", e.Code, e.Reason, frame.CodeShuttingDown)
	}
}

// TestStarvedConnectionIsNotCutForAFrameItSent: while the store's budget
// of requests is spent (a disk stalled for longer than the read timeout)
// the server reads no connection, so an agency waiting for the draw whose
// PONG sits unread must not be cut for "no PONG": its timeout is judged once
// the server reads what it sent.
func TestStarvedConnectionIsNotCutForAFrameItSent(t *testing.T) {
	storeSync, arm, release := stallingSync(t)
	ts := startServer(t, Config{Agencies: 2, StoreSync: storeSync, MaxInFlight: 1, PingInterval: 300 * time.Millisecond,
		ReadTimeout: time.Second, HelloTimeout: 4 * time.Second}, optInsecure())
	waiting := waitingAgency(t, ts, 2)

	spendBudget(t, ts, arm) // a disk that stalls, under a budget of 1 batch

	f, err := waiting.readWithin(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ping, ok := f.(*frame.Ping)
	if !ok {
		t.Fatalf("want the server's PING, got %s %s", f.Type(), brief(f))
	}
	mustWrite(t, waiting, &frame.Pong{Payload: ping.Payload}) // answered at once
	if f, err := waiting.readWithin(2500 * time.Millisecond); err == nil {
		t.Fatalf("the waiting agency answered its PING at once, yet got %s %s", f.Type(), brief(f))
	}
	release() // the disk recovers
	mustPing(t, waiting, "still here")
}

// TestPartialHandshakeHitsTheHelloTimeout: a peer that sends only the start
// of a Noise message 1 and goes quiet is cut off by the hello timeout (the
// deadline put off while unread bytes wait must still be judged when no
// frame can be read from them).
func TestPartialHandshakeHitsTheHelloTimeout(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 1, HelloTimeout: 300 * time.Millisecond})
	p, err := dialPeer(ts.Addr(), nil, secure.PublicKey{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	if err := p.sendRaw([]byte{secure.KindHandshake1, 0, secure.Handshake1Size, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	expectTimedOut(t, p, "hello timeout 300 ms")
}

// TestStarvedPartialFrameStillTimesOut: while the store's budget is spent
// (a disk that stalls), a connection holding only part of a frame is not
// a peer that answered: it is cut by its timeout (here the hello timeout)
// as ever, not kept for as long as the stall lasts.
func TestStarvedPartialFrameStillTimesOut(t *testing.T) {
	storeSync, arm, release := stallingSync(t)
	ts := startServer(t, Config{Agencies: 2, StoreSync: storeSync, MaxInFlight: 1, PingInterval: 300 * time.Millisecond,
		ReadTimeout: time.Second, HelloTimeout: 500 * time.Millisecond}, optInsecure())
	spendBudget(t, ts, arm) // a disk that stalls, under a budget of 1 batch
	lurker := ts.mustDialPlain(t)
	if err := lurker.sendRaw([]byte{frame.Version}); err != nil { // one byte of a header, then silence
		t.Fatal(err)
	}
	expectTimedOut(t, lurker, "hello timeout 500 ms, while the store stalls")
	release()
}

// TestStarvedWholeFrameIsPutOff: while the store's budget is spent, an
// agency whose whole frame waits unread is not timed out, secured (where
// a peek decrypts the frame out of gnet's buffer) as in plaintext.
func TestStarvedWholeFrameIsPutOff(t *testing.T) {
	for _, mode := range []string{"insecure", "secure"} {
		t.Run(mode, func(t *testing.T) {
			_, good, release := pingUnreadInAStall(t, mode == "secure", 500*time.Millisecond)
			time.Sleep(2 * time.Second) // four read timeouts of stall
			release()
			f, err := good.readWithin(5 * time.Second)
			if err != nil {
				t.Fatalf("no answer after the stall: %v", err)
			}
			if p, ok := f.(*frame.Pong); !ok || string(p.Payload) != "alive" {
				t.Fatalf("got %s, want PONG: an agency with a whole frame waiting was timed out during the stall", brief(f))
			}
		})
	}
}

// TestStarvedUndecryptableRecordIsLost: a transport record that does not
// decrypt loses the stream: the connection closes without an answer and a
// connection_lost line (transport.fatal, closeLost). When it is met by
// frameWaiting's Peek, while the budget is spent and a deadline passed, the
// error is swallowed and the session is instead sent ERROR timeout.
// TestStarvedUndecryptableRecordIsLost: while the store's budget is
// spent, a record that does not decrypt still loses the connection without
// an answer (connection_lost), not a sealed ERROR timeout.
func TestStarvedUndecryptableRecordIsLost(t *testing.T) {
	storeSync, arm, release := stallingSync(t)
	ts := startServer(t, Config{Agencies: 2, StoreSync: storeSync, MaxInFlight: 1,
		PingInterval: time.Minute, ReadTimeout: 500 * time.Millisecond, HelloTimeout: 5 * time.Second})
	bad := ts.mustDial(t, 2)
	mustWrite(t, bad, &frame.Hello{Agency: 2})
	expectFrame[*frame.Welcome](t, bad)
	spendBudget(t, ts, arm) // a disk that stalls, under a budget of 1 batch
	// A transport record of a PING-sized body whose tag does not verify.
	rec := append([]byte{0xE3, 0, 20}, make([]byte, 20)...)
	if err := bad.sendRaw(rec); err != nil {
		t.Fatal(err)
	}
	f, err := bad.readWithin(5 * time.Second)
	defer release()
	if err == nil {
		t.Fatalf("got %s after a record that does not decrypt, want the connection closed without an answer", brief(f))
	}
	ts.logs.wait(t, "connection_lost", nil)
}

// spendBudget arms the stalling disk and has agency 1 hand it a batch, so
// that the store's budget of one request (MaxInFlight: 1) is spent.
func spendBudget(t *testing.T, ts *testServer, arm func()) {
	t.Helper()
	arm()
	up := ts.mustDial(t, 1)
	mustWrite(t, up, &frame.Hello{Agency: 1})
	expectFrame[*frame.Welcome](t, up)
	mustWrite(t, up, &frame.Bets{First: 0, Bets: agencyBets(1, 3)})
	for deadline := time.Now().Add(hangGuard); !ts.Hub().Saturated(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the batch never reached the store")
		}
	}
}

// TestStarvedHangupReportsUnreadFrame: an agency that leaves while a whole
// frame of it waits unread (the store stalled) is logged as having lost
// bytes, secured (where a peek has decrypted the frame out of gnet's
// buffer) as in plaintext.
func TestStarvedHangupReportsUnreadFrame(t *testing.T) {
	for _, mode := range []string{"insecure", "secure"} {
		t.Run(mode, func(t *testing.T) {
			ts, good, release := pingUnreadInAStall(t, mode == "secure", 300*time.Millisecond)
			defer release()
			time.Sleep(time.Second) // past the read timeout: the sweep's TimedOut peeks the frame
			good.close()
			f := ts.logs.wait(t, "connection_closed", map[string]string{"agency": "2"})
			if f["result"] != "fail" || f["unread_bytes"] == nil {
				t.Errorf("connection_closed %v: a whole PING was never read, want result fail with unread_bytes", f)
			}
		})
	}
}

// drainingWithABatchInFlight starts a plaintext server whose disk stalls,
// has agency 1 hand it a batch and sends the server SIGTERM: agency 1's
// session drains with its batch in flight. release lets the disk go on.
func drainingWithABatchInFlight(t *testing.T) (*testServer, *peer, func()) {
	t.Helper()
	storeSync, arm, release := stallingSync(t)
	ts := startServer(t, Config{Agencies: 1, StoreSync: storeSync, ShutdownGrace: 20 * time.Second}, optInsecure())
	p := ts.mustDial(t, 1)
	mustWrite(t, p, &frame.Hello{Agency: 1})
	expectFrame[*frame.Welcome](t, p)
	arm()
	mustWrite(t, p, &frame.Bets{First: 0, Bets: agencyBets(1, 3)})
	for deadline := time.Now().Add(hangGuard); ts.Hub().InFlight() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the batch never reached the store")
		}
	}
	ts.cancel() // SIGTERM with the batch in flight: the session drains
	ts.logs.wait(t, "shutdown", map[string]string{"step": "finish_in_flight"})
	time.Sleep(300 * time.Millisecond) // the session takes ShuttingDown on its loop
	return ts, p, release
}

// pingUnreadInAStall starts a server (secured or not) with the given read
// timeout whose disk stalls under a budget of one batch, and has agency 2,
// connected, send a whole PING the server cannot read while the budget is
// spent. release lets the disk go on.
func pingUnreadInAStall(t *testing.T, secured bool, readTimeout time.Duration) (*testServer, *peer, func()) {
	t.Helper()
	storeSync, arm, release := stallingSync(t)
	var opts []serverOption
	if !secured {
		opts = append(opts, optInsecure())
	}
	ts := startServer(t, Config{Agencies: 2, StoreSync: storeSync, MaxInFlight: 1,
		PingInterval: time.Minute, ReadTimeout: readTimeout, HelloTimeout: 5 * time.Second}, opts...)
	good := ts.mustDial(t, 2)
	mustWrite(t, good, &frame.Hello{Agency: 2})
	expectFrame[*frame.Welcome](t, good)
	spendBudget(t, ts, arm)
	mustWrite(t, good, &frame.Ping{Payload: []byte("alive")})
	return ts, good, release
}

// expectTimedOut fails unless p gets ERROR timeout within 5 s; why says
// which timeout should have fired.
func expectTimedOut(t *testing.T, p *peer, why string) {
	t.Helper()
	f, err := p.readWithin(5 * time.Second)
	if err != nil {
		t.Fatalf("no ERROR timeout within 5 s (%s): %v", why, err)
	}
	if e, ok := f.(*frame.Error); !ok || e.Code != frame.CodeTimeout {
		t.Fatalf("got %s, want ERROR timeout (%s)", brief(f), why)
	}
}
