package eventserver

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/receipt"
)

// hangGuard bounds every wait in these tests; reaching it means a hang.
const hangGuard = 20 * time.Second

// hubWinning is the winning number of every lottery in these tests.
const hubWinning = 7574

// hubKey signs the receipts and commitments of these tests.
var hubKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func hubPub() ed25519.PublicKey { return hubKey.Public().(ed25519.PublicKey) }

// recPeer is a Peer that records what the hub delivers to it; hook, when
// set, runs inside Deliver, on the goroutine that delivers.
type recPeer struct {
	name   string
	events chan Event
	hook   func(Event)
}

func newRecPeer(name string) *recPeer { return &recPeer{name: name, events: make(chan Event, 64)} }

// Deliver never blocks as long as a test reads what it asked for.
func (p *recPeer) Deliver(ev Event) {
	if p.hook != nil {
		p.hook(ev)
	}
	p.events <- ev
}

// next waits for the next event.
func (p *recPeer) next(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-p.events:
		return ev
	case <-time.After(hangGuard):
		t.Fatalf("peer %s got no event within %v", p.name, hangGuard)
		return nil
	}
}

// none fails if an event is waiting. Callers make sure nothing can still be
// on its way, so this checks a fact rather than racing a goroutine.
func (p *recPeer) none(t *testing.T) {
	t.Helper()
	select {
	case ev := <-p.events:
		t.Errorf("peer %s got %T %+v, want nothing", p.name, ev, ev)
	default:
	}
}

// hubStoreOptions are the faults a test injects into a store.
type hubStoreOptions struct {
	sync   func(*os.File) error
	tamper func(agency uint32, first uint64, bets []frame.Bet)
}

// openHubStore opens a file store in dir whose log lines are observed.
func openHubStore(t *testing.T, dir string, agencies int, o hubStoreOptions) (*persist.Store, *zap.Logger, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	b, err := filestore.Open(dir, filestore.Options{Agencies: agencies, WinningNumber: hubWinning, Logger: log, Sync: o.sync})
	if err != nil {
		t.Fatalf("open file store: %v", err)
	}
	st, err := persist.New(b, persist.Options{Agencies: agencies, WinningNumber: hubWinning, Logger: log, Tamper: o.tamper})
	if err != nil {
		b.Close()
		t.Fatalf("open store: %v", err)
	}
	return st, log, logs
}

// closeHub closes the hub, then the store (which runs every callback left).
func closeHub(t *testing.T, h *Hub, st *persist.Store) {
	t.Helper()
	h.Close()
	if err := st.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
}

// submit hands r to the hub on behalf of p and returns the store's answer,
// failing on any other event delivered first.
func submit(t *testing.T, h *Hub, p *recPeer, r *persist.Request) persist.Result {
	t.Helper()
	if err := h.Submit(p, r); err != nil {
		t.Fatalf("submit: %v", err)
	}
	ev := p.next(t)
	st, ok := ev.(Stored)
	if !ok {
		t.Fatalf("peer %s got %T, want Stored", p.name, ev)
	}
	return st.Result
}

func wantReplaced(t *testing.T, p *recPeer) {
	t.Helper()
	if ev := p.next(t); ev != (Replaced{}) {
		t.Fatalf("peer %s got %T, want Replaced", p.name, ev)
	}
}

func isDrawn(h *Hub) bool {
	select {
	case <-h.Drawn():
		return true
	default:
		return false
	}
}

// hubLottery is the data the TestHub* tests store: winners repeat inside an
// agency and across agencies, and agency 3 has none.
var hubLottery = map[uint32][]frame.Bet{
	1: {hubBet("11111111", 7574), hubBet("22222222", 1), hubBet("11111111", 7574)},
	2: {hubBet("11111111", 7574), hubBet("33333333", 7574), hubBet("44444444", 7575)},
	3: {hubBet("55555555", 0)},
}

var hubLotteryWinners = map[uint32][]string{
	1: {"11111111", "11111111"},
	2: {"11111111", "33333333"},
}

func hubBet(doc string, number uint16) frame.Bet {
	return frame.Bet{FirstName: "Juan", LastName: "Gómez", Document: doc, Birthdate: 19700101, Number: number}
}

// storeLottery uploads the lottery's bets through the hub and finishes
// agencies 1 and 2, checking nothing is drawn yet.
func storeLottery(t *testing.T, h *Hub, p *recPeer) {
	t.Helper()
	for a := uint32(1); a <= 3; a++ {
		if r := submit(t, h, p, &persist.Request{Agency: a, Bets: hubLottery[a]}); r.Err != nil || r.Stored != len(hubLottery[a]) {
			t.Fatalf("agency %d bets: %+v", a, r)
		}
	}
	for a := uint32(1); a <= 2; a++ {
		if r := submit(t, h, p, &persist.Request{Agency: a, Finish: true, Total: uint64(len(hubLottery[a]))}); r.Err != nil {
			t.Fatalf("agency %d finish: %v", a, r.Err)
		}
		// The hub decides on a draw inside the store's callback, before
		// Stored is read here: no draw now means none was started.
		if isDrawn(h) {
			t.Fatalf("drawn after %d of 3 agencies finished", a)
		}
		if _, _, drawn := h.Winners(1); drawn {
			t.Fatalf("Winners says drawn after %d of 3 agencies finished", a)
		}
	}
}

func checkLotteryWinners(t *testing.T, h *Hub) {
	t.Helper()
	for a := uint32(1); a <= 3; a++ {
		docs, c, drawn := h.Winners(a)
		if !drawn || c == nil {
			t.Fatalf("agency %d: Winners says not drawn", a)
		}
		if !reflect.DeepEqual(docs, hubLotteryWinners[a]) {
			t.Errorf("agency %d winners %q, want %q", a, docs, hubLotteryWinners[a])
		}
	}
}

func TestHubClaimReplacesTheOlderConnection(t *testing.T) {
	st, log, _ := openHubStore(t, t.TempDir(), 3, hubStoreOptions{})
	h := NewHub(st, log, nil, nil)
	defer closeHub(t, h, st)
	a, b, c := newRecPeer("a"), newRecPeer("b"), newRecPeer("c")

	if !h.Claim(a, 1) {
		t.Fatal("first claim refused")
	}
	a.none(t)
	if !h.Claim(b, 1) {
		t.Fatal("a newer claim refused")
	}
	wantReplaced(t, a)
	b.none(t)
	h.Claim(b, 1) // the same connection again: nobody to replace
	b.none(t)
	a.none(t)
	h.Claim(c, 2) // another agency
	a.none(t)
	b.none(t)
	c.none(t)
}

// TestHubLateHelloFromAnOlderConnection checks the order connections joined
// in decides a takeover: an older connection's late HELLO changes nothing.
func TestHubLateHelloFromAnOlderConnection(t *testing.T) {
	st, log, _ := openHubStore(t, t.TempDir(), 3, hubStoreOptions{})
	h := NewHub(st, log, nil, nil)
	defer closeHub(t, h, st)
	older, newer, newest := newRecPeer("older"), newRecPeer("newer"), newRecPeer("newest")
	for _, p := range []*recPeer{older, newer, newest} {
		h.Join(p)
	}

	if !h.Claim(newer, 1) {
		t.Fatal("claim of the newer connection refused")
	}
	if h.Claim(older, 1) {
		t.Fatal("a late HELLO from an older connection took the agency over")
	}
	older.none(t)
	newer.none(t) // still the agency's connection
	if !h.Claim(newest, 1) {
		t.Fatal("claim of the newest connection refused")
	}
	wantReplaced(t, newer)
	h.Leave(newest, 1)
	if !h.Claim(older, 1) { // nobody holds the agency now
		t.Fatal("claim of a free agency refused")
	}
	older.none(t)
	newest.none(t)
}

func TestHubLeaveRemovesOnlyItsOwnClaim(t *testing.T) {
	st, log, _ := openHubStore(t, t.TempDir(), 3, hubStoreOptions{})
	h := NewHub(st, log, nil, nil)
	defer closeHub(t, h, st)
	a, b, c := newRecPeer("a"), newRecPeer("b"), newRecPeer("c")
	for _, p := range []*recPeer{a, b, c} {
		h.Join(p)
	}

	h.Claim(b, 1)
	h.Claim(c, 1)
	wantReplaced(t, b)
	h.Leave(b, 1) // b lost agency 1 to c: its leaving must not drop c's claim
	h.Claim(a, 1) // a joined before c: c still holds the agency
	c.none(t)
	h.Leave(c, 1)
	h.Leave(a, 0) // a connection that never said HELLO
	h.Leave(b, 0)

	if peers := h.Peers(); len(peers) != 0 {
		t.Fatalf("Peers after every connection left = %v, want none", peers)
	}
	d := newRecPeer("d")
	h.Join(d)
	if peers := h.Peers(); len(peers) != 1 || peers[0] != Peer(d) {
		t.Fatalf("Peers = %v, want only d", peers)
	}
	h.Broadcast(ShuttingDown{})
	if ev := d.next(t); ev != (ShuttingDown{}) {
		t.Errorf("d got %T, want ShuttingDown", ev)
	}
	a.none(t)
	b.none(t)
	c.none(t)
}

// hubConn is a connection without a socket: a session over the hub, a peer
// for the hub to deliver to, and the frames it has sent, decoded.
type hubConn struct {
	*recPeer
	s *Session
	h *Hub
}

func newHubConn(h *Hub, name string) *hubConn {
	c := &hubConn{recPeer: newRecPeer(name), h: h,
		s: NewSession(h, zap.NewNop(), nil, Limits{Window: 4, MaxFrame: frame.MaxSize, RetryAfter: time.Second})}
	h.Join(c.recPeer)
	return c
}

// do steps ev and carries the output through the hub as a connection would,
// returning the frames written and whether the connection must close.
func (c *hubConn) do(t *testing.T, ev Event) ([]frame.Frame, bool) {
	t.Helper()
	wire, closing, err := c.h.Carry(c.recPeer, c.s, c.s.Step(ev), nil, frame.Append)
	if err != nil {
		t.Fatalf("%s: carry: %v", c.name, err)
	}
	return decodeWire(t, wire), closing
}

// send steps a frame from the agency.
func (c *hubConn) send(t *testing.T, f frame.Frame) ([]frame.Frame, bool) {
	t.Helper()
	return c.do(t, received(t, f))
}

// untilStored steps every event delivered until a Stored, returning what
// was sent and the kinds of the events stepped.
func (c *hubConn) untilStored(t *testing.T) ([]frame.Frame, []string) {
	t.Helper()
	var sent []frame.Frame
	var kinds []string
	for {
		ev := c.next(t)
		kinds = append(kinds, fmt.Sprintf("%T", ev))
		out, _ := c.do(t, ev)
		sent = append(sent, out...)
		if _, ok := ev.(Stored); ok {
			return sent, kinds
		}
	}
}

func decodeWire(t *testing.T, wire []byte) []frame.Frame {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(wire))
	var d frame.Decoder
	var out []frame.Frame
	for {
		f, err := d.Next(r)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decode what was sent: %v", err)
		}
		out = append(out, f)
	}
}

// errorCode is the code of an ERROR frame, 0 for any other frame.
func errorCode(f frame.Frame) frame.Code {
	if e, ok := f.(*frame.Error); ok {
		return e.Code
	}
	return 0
}

func describeFrames(fs []frame.Frame) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.Type().String()
	}
	return strings.Join(parts, " ")
}

// TestHubCarryRefusesALateHello runs the takeover through sessions: an
// older connection's HELLO after a newer one's is answered ERROR replaced,
// and a newest connection's HELLO replaces the holder.
func TestHubCarryRefusesALateHello(t *testing.T) {
	st, log, _ := openHubStore(t, t.TempDir(), 3, hubStoreOptions{})
	h := NewHub(st, log, nil, nil)
	defer closeHub(t, h, st)
	older, newer := newHubConn(h, "older"), newHubConn(h, "newer")

	if sent, closing := newer.send(t, &frame.Hello{Agency: 2}); describeFrames(sent) != "WELCOME" || closing {
		t.Fatalf("newer HELLO: %s close=%t", describeFrames(sent), closing)
	}
	sent, closing := older.send(t, &frame.Hello{Agency: 2})
	if len(sent) != 1 || !closing || errorCode(sent[0]) != frame.CodeReplaced {
		t.Fatalf("older HELLO: %s close=%t, want ERROR replaced and close", describeFrames(sent), closing)
	}
	newer.none(t)

	newest := newHubConn(h, "newest")
	if sent, _ := newest.send(t, &frame.Hello{Agency: 2}); describeFrames(sent) != "WELCOME" {
		t.Fatalf("newest HELLO: %s", describeFrames(sent))
	}
	ev := newer.next(t)
	if sent, closing := newer.do(t, ev); len(sent) != 1 || !closing || errorCode(sent[0]) != frame.CodeReplaced {
		t.Fatalf("newer after the takeover (%T): %s close=%t", ev, describeFrames(sent), closing)
	}
}

// TestHubDrawsOnceWhenAllFinished checks the draw runs once, when the last
// agency's FINISHED is recorded and before that FINISHED is answered, and
// what it logs and tells the observer.
func TestHubDrawsOnceWhenAllFinished(t *testing.T) {
	st, log, logs := openHubStore(t, t.TempDir(), 3, hubStoreOptions{})
	obs := &recObserver{}
	h := NewHub(st, log, obs, hubKey)
	watcher, uploader := newRecPeer("watcher"), newRecPeer("uploader")
	h.Join(watcher)

	storeLottery(t, h, uploader)
	watcher.none(t)
	if n := logs.FilterMessage("sorteo").Len(); n != 0 {
		t.Fatalf("sorteo logged %d times before the last agency finished", n)
	}
	if got, want := obs.take(), []string{"finished(0)", "finished(1)", "finished(2)"}; !reflect.DeepEqual(got, want) {
		t.Errorf("observer %q, want %q", got, want)
	}

	if r := submit(t, h, uploader, &persist.Request{Agency: 3, Finish: true, Total: 1}); r.Err != nil {
		t.Fatalf("agency 3 finish: %v", r.Err)
	}
	if !isDrawn(h) {
		t.Fatal("the last FINISHED was answered before the draw")
	}
	if ev := watcher.next(t); ev != (Drawn{}) {
		t.Fatalf("watcher got %T, want Drawn", ev)
	}
	checkLotteryWinners(t, h)
	if got, want := obs.take(), []string{"finished(3)", "drawn"}; !reflect.DeepEqual(got, want) {
		t.Errorf("observer %q, want %q", got, want)
	}
	c, ok := h.Commitment()
	if !ok {
		t.Fatal("Commitment says not drawn")
	}

	// FINISHED again (a reconnecting agency) is recorded but draws nothing new.
	if r := submit(t, h, uploader, &persist.Request{Agency: 1, Finish: true, Total: 3}); r.Err != nil {
		t.Fatalf("agency 1 finish again: %v", r.Err)
	}
	closeHub(t, h, st)
	watcher.none(t)
	uploader.none(t)

	draws := logLines(logs, "sorteo")
	if len(draws) != 1 {
		t.Fatalf("sorteo logged %d times, want 1", len(draws))
	}
	checkFields(t, draws[0], map[string]any{"result": "success", "agencies": int64(3), "bets": uint64(7),
		"winners": int64(4), "winning_number": uint16(hubWinning), "signed": true,
		"root": hex.EncodeToString(c.Root[:])})
	// agency_finished lines: one per recorded FINISHED, counting up, all
	// before the draw; the repeated FINISHED is logged after it.
	var finishedCounts []int64
	drawSeen := false
	for _, e := range logs.All() {
		switch e.Message {
		case "agency_finished":
			if e.ContextMap()["result"] != "success" {
				t.Errorf("agency_finished %v, want success", e.ContextMap())
			}
			finishedCounts = append(finishedCounts, e.ContextMap()["finished"].(int64))
			if !drawSeen && len(finishedCounts) == 4 {
				t.Error("the repeated FINISHED was logged before the draw")
			}
		case "sorteo":
			drawSeen = true
			if len(finishedCounts) != 3 {
				t.Errorf("sorteo logged after %d agency_finished lines, want 3", len(finishedCounts))
			}
		}
	}
	if want := []int64{1, 2, 3, 3}; !reflect.DeepEqual(finishedCounts, want) {
		t.Errorf("agency_finished counts %v, want %v", finishedCounts, want)
	}
	per := logLines(logs, "ganadores")
	if len(per) != 3 {
		t.Fatalf("ganadores logged %d times, want one per agency", len(per))
	}
	for i, line := range per {
		a := uint32(i + 1)
		checkFields(t, line, map[string]any{"agency": a, "cant_ganadores": int64(len(hubLotteryWinners[a]))})
	}
}

// TestHubPushesInAgencyOrder: the draw wakes the agencies' connections in
// agency order, whatever order they joined in, then the connections that
// speak for no agency.
func TestHubPushesInAgencyOrder(t *testing.T) {
	st, log, _ := openHubStore(t, t.TempDir(), 3, hubStoreOptions{})
	h := NewHub(st, log, nil, hubKey)
	var mu sync.Mutex
	var woken []string
	join := func(name string, agency uint32) {
		p := newRecPeer(name)
		p.hook = func(ev Event) {
			if ev == (Drawn{}) {
				mu.Lock()
				woken = append(woken, p.name)
				mu.Unlock()
			}
		}
		h.Join(p)
		if agency != 0 && !h.Claim(p, agency) {
			t.Fatalf("%s could not claim agency %d", name, agency)
		}
	}
	join("no agency", 0)
	for _, a := range []uint32{3, 1, 2} {
		join(fmt.Sprintf("agency %d", a), a)
	}
	uploader := newRecPeer("uploader")
	storeLottery(t, h, uploader)
	if r := submit(t, h, uploader, &persist.Request{Agency: 3, Finish: true, Total: 1}); r.Err != nil {
		t.Fatalf("agency 3 finish: %v", r.Err)
	}
	closeHub(t, h, st)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"agency 1", "agency 2", "agency 3", "no agency"}; !slices.Equal(woken, want) {
		t.Errorf("Drawn delivered to %q, want %q", woken, want)
	}
}

// TestHubSessionsGetReceiptsAndWinners runs three agencies' sessions over a
// hub and a real store: the first two get RECEIPT and NOT_READY, then the
// push; the last gets RECEIPT, COMMITMENT and WINNERS as the answer to its
// own FINISHED, because the draw is broadcast before that answer. Every
// receipt and every commitment checks, as an agency checks them.
func TestHubSessionsGetReceiptsAndWinners(t *testing.T) {
	st, log, _ := openHubStore(t, t.TempDir(), 3, hubStoreOptions{})
	h := NewHub(st, log, nil, hubKey)
	defer closeHub(t, h, st)
	conns := map[uint32]*hubConn{}
	receipts := map[uint32]receipt.Receipt{}
	for a := uint32(1); a <= 3; a++ {
		c := newHubConn(h, fmt.Sprint("agency ", a))
		conns[a] = c
		if sent, _ := c.send(t, &frame.Hello{Agency: a}); describeFrames(sent) != "WELCOME" {
			t.Fatalf("agency %d HELLO: %s", a, describeFrames(sent))
		}
		c.send(t, &frame.Bets{First: 0, Bets: hubLottery[a]})
		sent, _ := c.untilStored(t)
		ack, ok := sent[0].(*frame.Ack)
		if !ok || ack.Held != uint64(len(hubLottery[a])) || ack.Chain != receipt.ChainOf(hubLottery[a]) {
			t.Fatalf("agency %d BETS answered %s, want ACK with the chain over its bets", a, describeFrames(sent))
		}
	}
	for a := uint32(1); a <= 3; a++ {
		conns[a].send(t, &frame.Finished{Total: uint64(len(hubLottery[a]))})
		sent, events := conns[a].untilStored(t)
		want := "RECEIPT NOT_READY"
		if a == 3 {
			want = "RECEIPT COMMITMENT WINNERS"
			if w := []string{"eventserver.Drawn", "eventserver.Stored"}; !reflect.DeepEqual(events, w) {
				t.Errorf("the last agency stepped %q, want %q", events, w)
			}
		}
		if describeFrames(sent) != want {
			t.Fatalf("agency %d FINISHED answered %s, want %s", a, describeFrames(sent), want)
		}
		r := receipt.Receipt(*sent[0].(*frame.Receipt))
		if err := r.Verify(hubPub()); err != nil {
			t.Errorf("agency %d receipt: %v", a, err)
		}
		if r.Agency != a || r.Bets != uint64(len(hubLottery[a])) || r.Chain != receipt.ChainOf(hubLottery[a]) ||
			r.Lottery != st.Lottery() {
			t.Errorf("agency %d receipt %+v does not describe its bets", a, r)
		}
		receipts[a] = r
		if a == 3 {
			checkWinnersSent(t, a, sent[1:], r)
		}
	}
	for a := uint32(1); a <= 2; a++ {
		ev := conns[a].next(t)
		sent, _ := conns[a].do(t, ev)
		if describeFrames(sent) != "COMMITMENT WINNERS" {
			t.Fatalf("agency %d got %s on %T, want the push", a, describeFrames(sent), ev)
		}
		checkWinnersSent(t, a, sent, receipts[a])
		if conns[a].s.State() != WinnersSent {
			t.Errorf("agency %d in %s after the push", a, conns[a].s.State())
		}
	}
}

// checkWinnersSent checks a COMMITMENT and WINNERS as agency a does with
// its receipt r, and the documents against the lottery's.
func checkWinnersSent(t *testing.T, a uint32, sent []frame.Frame, r receipt.Receipt) {
	t.Helper()
	c := sent[0].(*frame.Commitment)
	if err := receipt.Check(c, receipt.Leaf{Agency: a, Bets: r.Bets, Chain: r.Chain}, hubPub()); err != nil {
		t.Errorf("agency %d commitment: %v", a, err)
	}
	w := sent[1].(*frame.Winners)
	if !w.Last || !slices.Equal(w.Documents, hubLotteryWinners[a]) {
		t.Errorf("agency %d winners %+v, want %q in one last chunk", a, w, hubLotteryWinners[a])
	}
}

// TestHubCommitmentProofs checks, over a lottery of 5 agencies (an odd
// level in the tree) with 0 to 4 bets each, that every agency's proof leads
// to the signed root and nothing else does, also after the wire.
func TestHubCommitmentProofs(t *testing.T) {
	const agencies = 5
	st, log, _ := openHubStore(t, t.TempDir(), agencies, hubStoreOptions{})
	h := NewHub(st, log, nil, hubKey)
	defer closeHub(t, h, st)
	p := newRecPeer("p")
	for a := uint32(1); a <= agencies; a++ {
		bets := make([]frame.Bet, a-1)
		for i := range bets {
			bets[i] = hubBet(fmt.Sprint(a*1000+uint32(i)), uint16(hubWinning-i%2))
		}
		if len(bets) > 0 {
			submit(t, h, p, &persist.Request{Agency: a, Bets: bets})
		}
		if r := submit(t, h, p, &persist.Request{Agency: a, Finish: true, Total: uint64(len(bets))}); r.Err != nil {
			t.Fatalf("agency %d finish: %v", a, r.Err)
		}
	}
	if !isDrawn(h) {
		t.Fatal("not drawn after every agency finished")
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	commitment, _ := h.Commitment()
	for a := uint32(1); a <= agencies; a++ {
		held, finished, chain := st.Status(a)
		leaf := receipt.Leaf{Agency: a, Bets: held, Chain: chain}
		docs, c, drawn := h.Winners(a)
		if !drawn || !finished {
			t.Fatalf("agency %d: drawn %t finished %t", a, drawn, finished)
		}
		if len(docs) != int(a)/2 {
			t.Errorf("agency %d has %d winners, want %d", a, len(docs), a/2)
		}
		if c.Root != commitment.Root || c.Signature != commitment.Signature || c.Lottery != st.Lottery() ||
			c.Agencies != agencies {
			t.Errorf("agency %d commitment %+v differs from the draw's %+v", a, c, commitment)
		}
		if err := receipt.Check(c, leaf, hubPub()); err != nil {
			t.Errorf("agency %d: %v", a, err)
		}
		b, err := frame.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		wired := receivedRaw(t, b).Frame.(*frame.Commitment)
		if err := receipt.Check(wired, leaf, hubPub()); err != nil {
			t.Errorf("agency %d after the wire: %v", a, err)
		}
		if err := receipt.Check(c, receipt.Leaf{Agency: a, Bets: held + 1, Chain: chain}, nil); !errors.Is(err, receipt.ErrProof) {
			t.Errorf("agency %d with one bet more: %v, want ErrProof", a, err)
		}
		if err := receipt.Check(c, leaf, other); !errors.Is(err, receipt.ErrSignature) {
			t.Errorf("agency %d with another key: %v, want ErrSignature", a, err)
		}
		next := a%agencies + 1
		nheld, _, nchain := st.Status(next)
		if err := receipt.Check(c, receipt.Leaf{Agency: next, Bets: nheld, Chain: nchain}, nil); err == nil {
			t.Errorf("agency %d's proof also proves agency %d", a, next)
		}
		r := receipt.Receipt(*h.Receipt(a, held, chain))
		if err := r.Verify(hubPub()); err != nil || r.Lottery != st.Lottery() {
			t.Errorf("agency %d receipt %+v: %v", a, r, err)
		}
	}
	for _, a := range []uint32{0, agencies + 1} {
		docs, c, drawn := h.Winners(a)
		if !drawn || len(docs) != 0 || len(c.Proof) != 0 {
			t.Errorf("Winners(%d) = %q, proof of %d, drawn %t; want none, no proof, drawn", a, docs, len(c.Proof), drawn)
		}
	}
}

// TestHubUnsigned checks a hub without a key still commits, unsigned, and
// the proofs still check without one.
func TestHubUnsigned(t *testing.T) {
	st, log, logs := openHubStore(t, t.TempDir(), 1, hubStoreOptions{})
	h := NewHub(st, log, nil, nil)
	submit(t, h, newRecPeer("p"), &persist.Request{Agency: 1, Finish: true})
	docs, c, drawn := h.Winners(1)
	if !drawn || len(docs) != 0 || c.Signature != (frame.Signature{}) {
		t.Fatalf("Winners = %q, %+v, %t; want none, unsigned, drawn", docs, c, drawn)
	}
	if err := receipt.Check(c, receipt.Leaf{Agency: 1, Chain: receipt.Empty()}, nil); err != nil {
		t.Errorf("check without a key: %v", err)
	}
	if r := h.Receipt(1, 0, receipt.Empty()); r.Signature != (frame.Signature{}) {
		t.Errorf("receipt signed without a key: %+v", r)
	}
	closeHub(t, h, st)
	draws := logLines(logs, "sorteo")
	if len(draws) != 1 {
		t.Fatalf("sorteo logged %d times, want 1", len(draws))
	}
	checkFields(t, draws[0], map[string]any{"signed": false, "result": "success"})
}

// TestHubSavesTheStatementBeforeTheBroadcast checks commitment.json is in
// the data directory, whole and checking, when Drawn reaches a connection.
func TestHubSavesTheStatementBeforeTheBroadcast(t *testing.T) {
	dir := t.TempDir()
	st, log, _ := openHubStore(t, dir, 3, hubStoreOptions{})
	h := NewHub(st, log, nil, hubKey)
	defer closeHub(t, h, st)
	var seen error = errors.New("Drawn never delivered")
	var mu sync.Mutex
	watcher := newRecPeer("watcher")
	watcher.hook = func(ev Event) {
		if ev != (Drawn{}) {
			return
		}
		var s receipt.Statement
		data, err := os.ReadFile(filepath.Join(dir, filestore.DrawFile))
		if err == nil {
			err = s.UnmarshalJSON(data)
		}
		if err == nil {
			err = s.Check(hubPub())
		}
		if c, _ := h.Commitment(); err == nil && s.Commitment != c {
			err = fmt.Errorf("statement %+v, commitment %+v", s.Commitment, c)
		}
		for i, l := range s.Leaves {
			held, _, chain := st.Status(uint32(i + 1))
			if err == nil && (l.Bets != held || l.Chain != chain) {
				err = fmt.Errorf("leaf %d is %+v, the store holds %d bets, chain %x", i, l, held, chain)
			}
		}
		mu.Lock()
		seen = err
		mu.Unlock()
	}
	h.Join(watcher)
	storeLottery(t, h, newRecPeer("p"))
	if _, err := os.Stat(filepath.Join(dir, filestore.DrawFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s before the draw: %v", filestore.DrawFile, err)
	}
	submit(t, h, newRecPeer("last"), &persist.Request{Agency: 3, Finish: true, Total: 1})
	if ev := watcher.next(t); ev != (Drawn{}) {
		t.Fatalf("watcher got %T, want Drawn", ev)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen != nil {
		t.Errorf("when Drawn was delivered: %v", seen)
	}
}

// TestHubFailedSaveDrawsNothing makes saving the statement fail: nothing is
// published or pushed, the failure is logged, Close stops the retries, and
// a restart with a working disk draws.
func TestHubFailedSaveDrawsNothing(t *testing.T) {
	dir := t.TempDir()
	failSave := func(f *os.File) error {
		if strings.HasPrefix(filepath.Base(f.Name()), filestore.DrawFile) {
			return errors.New("injected: no space left on device")
		}
		return f.Sync()
	}
	st, log, logs := openHubStore(t, dir, 3, hubStoreOptions{sync: failSave})
	h := NewHub(st, log, nil, hubKey)
	watcher := newRecPeer("watcher")
	h.Join(watcher)
	storeLottery(t, h, newRecPeer("p"))
	if r := submit(t, h, newRecPeer("last"), &persist.Request{Agency: 3, Finish: true, Total: 1}); r.Err != nil {
		t.Fatalf("last FINISHED: %v", r.Err)
	}
	// The first attempt ran before Stored was delivered.
	failed := logLines(logs, "sorteo")
	if len(failed) != 1 {
		t.Fatalf("sorteo logged %d times, want the failed attempt", len(failed))
	}
	checkFields(t, failed[0], map[string]any{"result": "fail", "attempt": int64(1)})
	if isDrawn(h) {
		t.Error("drawn although the statement was not saved")
	}
	if _, _, drawn := h.Winners(1); drawn {
		t.Error("Winners says drawn although the statement was not saved")
	}

	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(hangGuard):
		t.Fatal("Close did not stop the retrying draw")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	watcher.none(t)
	if _, err := os.Stat(filepath.Join(dir, filestore.DrawFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after a failed save: %v", filestore.DrawFile, err)
	}

	st2, log2, _ := openHubStore(t, dir, 3, hubStoreOptions{})
	h2 := NewHub(st2, log2, nil, hubKey)
	defer closeHub(t, h2, st2)
	if !isDrawn(h2) {
		t.Fatal("the restart did not draw")
	}
	checkLotteryWinners(t, h2)
}

// TestHubDrawUsesTheStoreIndex takes bets.csv away before the draw: the
// winners come from the store's index, not from reading the file again.
func TestHubDrawUsesTheStoreIndex(t *testing.T) {
	dir := t.TempDir()
	st, log, _ := openHubStore(t, dir, 3, hubStoreOptions{})
	h := NewHub(st, log, nil, nil)
	defer closeHub(t, h, st)
	storeLottery(t, h, newRecPeer("p"))
	if err := os.Remove(filepath.Join(dir, filestore.BetsFile)); err != nil {
		t.Fatal(err)
	}
	submit(t, h, newRecPeer("last"), &persist.Request{Agency: 3, Finish: true, Total: 1})
	if !isDrawn(h) {
		t.Fatal("no draw")
	}
	checkLotteryWinners(t, h)
}

// TestHubRestartAfterTheDrawDrawsAgain checks a hub over a store where
// every agency finished draws at once, with the same winners, root,
// signature and statement.
func TestHubRestartAfterTheDrawDrawsAgain(t *testing.T) {
	dir := t.TempDir()
	h, st, first := drawnHub(t, dir)
	statement, err := os.ReadFile(filepath.Join(dir, filestore.DrawFile))
	if err != nil {
		t.Fatal(err)
	}
	closeHub(t, h, st)

	st2, log2, logs2 := openHubStore(t, dir, 3, hubStoreOptions{})
	h2 := NewHub(st2, log2, nil, hubKey)
	if !isDrawn(h2) { // NewHub draws synchronously
		t.Fatal("the restart did not draw")
	}
	checkLotteryWinners(t, h2)
	if again, _ := h2.Commitment(); again != first {
		t.Errorf("commitment after the restart %+v, want %+v", again, first)
	}
	if again, err := os.ReadFile(filepath.Join(dir, filestore.DrawFile)); err != nil || !bytes.Equal(again, statement) {
		t.Errorf("statement after the restart differs (%v)", err)
	}
	closeHub(t, h2, st2)
	draws := logLines(logs2, "sorteo")
	if len(draws) != 1 {
		t.Fatalf("sorteo logged %d times after the restart, want 1", len(draws))
	}
	checkFields(t, draws[0], map[string]any{"result": "success", "root": hex.EncodeToString(first.Root[:])})
}

func TestHubRestartBeforeTheDrawWaits(t *testing.T) {
	dir := t.TempDir()
	st, log, _ := openHubStore(t, dir, 3, hubStoreOptions{})
	h := NewHub(st, log, nil, nil)
	storeLottery(t, h, newRecPeer("p"))
	closeHub(t, h, st)

	st2, log2, _ := openHubStore(t, dir, 3, hubStoreOptions{})
	h2 := NewHub(st2, log2, nil, nil)
	defer closeHub(t, h2, st2)
	if isDrawn(h2) { // NewHub decides synchronously
		t.Fatal("a hub over 2 of 3 finished agencies drew")
	}
	submit(t, h2, newRecPeer("p2"), &persist.Request{Agency: 3, Finish: true, Total: 1})
	if !isDrawn(h2) {
		t.Fatal("no draw after the last agency finished")
	}
	checkLotteryWinners(t, h2)
}

// TestHubCloseStopsTheDraw checks no draw starts after Close, whether the
// last FINISHED comes after it or was already queued in the store (the old
// bug: that draw ran after the shutdown had logged its success), and that
// the next server over the store draws.
func TestHubCloseStopsTheDraw(t *testing.T) {
	for _, queued := range []bool{false, true} {
		t.Run(fmt.Sprintf("queued=%t", queued), func(t *testing.T) {
			dir := t.TempDir()
			var armed atomic.Bool
			entered, release := make(chan struct{}), make(chan struct{})
			hold := func(agency uint32, _ uint64, _ []frame.Bet) {
				if armed.CompareAndSwap(true, false) {
					close(entered) // the writer is busy with this batch
					<-release
				}
			}
			st, log, logs := openHubStore(t, dir, 3, hubStoreOptions{tamper: hold})
			h := NewHub(st, log, nil, hubKey)
			watcher, p := newRecPeer("watcher"), newRecPeer("p")
			h.Join(watcher)
			for a := uint32(1); a <= 2; a++ {
				submit(t, h, p, &persist.Request{Agency: a, Bets: hubLottery[a]})
				submit(t, h, p, &persist.Request{Agency: a, Finish: true, Total: uint64(len(hubLottery[a]))})
			}
			last := newRecPeer("last")
			if queued {
				armed.Store(true)
				if err := h.Submit(last, &persist.Request{Agency: 3, Bets: hubLottery[3]}); err != nil {
					t.Fatal(err)
				}
				<-entered
				if err := h.Submit(last, &persist.Request{Agency: 3, Finish: true, Total: 1}); err != nil {
					t.Fatal(err)
				}
				h.Close()
				close(release)
				for i := range 2 {
					if ev, ok := last.next(t).(Stored); !ok || ev.Result.Err != nil {
						t.Fatalf("answer %d: %+v", i, ev)
					}
				}
			} else {
				submit(t, h, last, &persist.Request{Agency: 3, Bets: hubLottery[3]})
				h.Close()
				if r := submit(t, h, last, &persist.Request{Agency: 3, Finish: true, Total: 1}); r.Err != nil {
					t.Fatalf("last FINISHED: %v", r.Err)
				}
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if isDrawn(h) {
				t.Error("drawn after Close")
			}
			watcher.none(t)
			last.none(t)
			if n := logs.FilterMessage("sorteo").Len(); n != 0 {
				t.Errorf("sorteo logged %d times after Close", n)
			}
			if _, err := os.Stat(filepath.Join(dir, filestore.DrawFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s after Close: %v", filestore.DrawFile, err)
			}

			st2, log2, logs2 := openHubStore(t, dir, 3, hubStoreOptions{})
			h2 := NewHub(st2, log2, nil, hubKey)
			if !isDrawn(h2) {
				t.Fatal("the next server did not draw")
			}
			checkLotteryWinners(t, h2)
			closeHub(t, h2, st2)
			if n := logs2.FilterMessage("sorteo").Len(); n != 1 {
				t.Errorf("the next server logged sorteo %d times, want 1", n)
			}
		})
	}
}

// TestHubDrawFollowsEveryFinishLine queues every agency's FINISHED at once,
// so the store may commit them as one group, and checks the draw still waits
// for the last agency_finished line. A wrong total is logged as a failure
// and does not count.
func TestHubDrawFollowsEveryFinishLine(t *testing.T) {
	const agencies = 6
	st, log, logs := openHubStore(t, t.TempDir(), agencies, hubStoreOptions{})
	h := NewHub(st, log, nil, nil)
	peers := make([]*recPeer, agencies+1)
	for a := uint32(1); a <= agencies; a++ {
		peers[a] = newRecPeer(fmt.Sprint("agency ", a))
	}
	if r := submit(t, h, peers[1], &persist.Request{Agency: 1, Finish: true, Total: 5}); !errors.Is(r.Err, persist.ErrTotalMismatch) {
		t.Fatalf("FINISHED with a wrong total: %v, want ErrTotalMismatch", r.Err)
	}
	for a := uint32(1); a <= agencies; a++ {
		if err := h.Submit(peers[a], &persist.Request{Agency: a, Finish: true, Total: 0}); err != nil {
			t.Fatal(err)
		}
	}
	for a := uint32(1); a <= agencies; a++ {
		if ev, ok := peers[a].next(t).(Stored); !ok || ev.Result.Err != nil {
			t.Fatalf("agency %d FINISHED: %+v", a, ev)
		}
	}
	if !isDrawn(h) {
		t.Fatal("no draw after every agency finished")
	}
	closeHub(t, h, st)

	var lines []string
	for _, e := range logs.All() {
		if e.Message == "agency_finished" || e.Message == "sorteo" {
			lines = append(lines, fmt.Sprint(e.Message, " ", e.ContextMap()["result"], " ", e.ContextMap()["finished"]))
		}
	}
	want := []string{"agency_finished fail <nil>"}
	for n := 1; n <= agencies; n++ {
		want = append(want, fmt.Sprint("agency_finished success ", n))
	}
	want = append(want, "sorteo success <nil>")
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("log lines\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// TestHubSubmitToAClosedStore checks a request the store refuses to queue
// never calls back, and a session told so ends with shutting_down.
func TestHubSubmitToAClosedStore(t *testing.T) {
	st, log, _ := openHubStore(t, t.TempDir(), 1, hubStoreOptions{})
	h := NewHub(st, log, nil, nil)
	defer h.Close()
	c := newHubConn(h, "c")
	c.send(t, &frame.Hello{Agency: 1})
	if err := st.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	p := newRecPeer("p")
	if err := h.Submit(p, &persist.Request{Agency: 1, Finish: true}); !errors.Is(err, persist.ErrClosed) {
		t.Fatalf("Submit to a closed store: %v, want ErrClosed", err)
	}
	sent, closing := c.send(t, &frame.Finished{Total: 0})
	if len(sent) != 1 || !closing || errorCode(sent[0]) != frame.CodeShuttingDown {
		t.Errorf("FINISHED to a closed store: %s close=%t, want ERROR shutting_down", describeFrames(sent), closing)
	}
	p.none(t) // Done never runs for a request that was not queued
	c.none(t)
}

// TestHubRebuiltJournalAfterTheDrawKeepsTheStatement: a journal lost after
// the draw and rebuilt (--rebuild-journal, as the server advises) forgets
// every FINISHED; the draw's statement restores them, so the restarted
// server has drawn, with the same root and winners, takes no new bet and
// keeps commitment.json as it was.
func TestHubRebuiltJournalAfterTheDrawKeepsTheStatement(t *testing.T) {
	dir := t.TempDir()
	h, st, first := drawnHub(t, dir)
	w3, _, _ := h.Winners(3)
	statement, err := os.ReadFile(filepath.Join(dir, filestore.DrawFile))
	if err != nil {
		t.Fatal(err)
	}
	closeHub(t, h, st)

	// The journal is lost (a disk fault); the operator follows the
	// server's advice and starts once with --rebuild-journal.
	if err := os.Remove(filepath.Join(dir, filestore.JournalFile)); err != nil {
		t.Fatal(err)
	}
	b, err := filestore.Open(dir, filestore.Options{Agencies: 3, WinningNumber: hubWinning, RebuildJournal: true})
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	st2, err := persist.New(b, persist.Options{Agencies: 3, WinningNumber: hubWinning})
	if err != nil {
		t.Fatal(err)
	}
	h2 := NewHub(st2, zap.NewNop(), nil, hubKey)
	defer closeHub(t, h2, st2)
	if !isDrawn(h2) {
		t.Errorf("commitment.json holds the draw of every agency, yet the rebuilt server has not drawn (finished %d of 3)",
			h2.FinishedCount())
	}
	// Agency 3, which won nothing, adds a winning bet after the winners were
	// published, then every agency finishes again.
	p := newRecPeer("p")
	if r := submit(t, h2, p, &persist.Request{Agency: 3, First: 1, Bets: []frame.Bet{hubBet("99999999", hubWinning)}}); r.Err == nil {
		t.Errorf("agency 3 stored a bet after the draw: %+v", r)
	}
	for a, n := range map[uint32]uint64{1: 3, 2: 3, 3: 2} {
		submit(t, h2, p, &persist.Request{Agency: a, Finish: true, Total: n})
	}
	if again, ok := h2.Commitment(); ok && again != first {
		t.Errorf("second draw pushes root %x, agencies already got %x", again.Root[:4], first.Root[:4])
	}
	if w, _, ok := h2.Winners(3); ok && len(w) != len(w3) {
		t.Errorf("agency 3 winners now %q, the first draw gave %q", w, w3)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, filestore.DrawFile)); !bytes.Equal(again, statement) {
		t.Errorf("commitment.json was replaced by a different statement")
	}
}

// drawnHub runs the test lottery to its draw over a file store in dir and
// returns the hub, its store and the draw's commitment.
func drawnHub(t *testing.T, dir string) (*Hub, *persist.Store, receipt.Commitment) {
	t.Helper()
	st, log, _ := openHubStore(t, dir, 3, hubStoreOptions{})
	h := NewHub(st, log, nil, hubKey)
	storeLottery(t, h, newRecPeer("p"))
	submit(t, h, newRecPeer("p"), &persist.Request{Agency: 3, Finish: true, Total: 1})
	first, ok := h.Commitment()
	if !ok {
		t.Fatal("no draw")
	}
	return h, st, first
}

// TestHubSigningKeyChangedAfterTheDraw: a server restarted after the draw
// with another signing key, or none, pushes the same draw (same root) with a
// commitment that the agencies' current key checks, and its sorteo line
// says whether that commitment is signed. A new key signs the draw again
// (commitment.json is replaced, with the same leaves and root); without a
// key, the signed statement kept is pushed as it is.
func TestHubSigningKeyChangedAfterTheDraw(t *testing.T) {
	newKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	for _, tc := range []struct {
		name       string
		first, now ed25519.PrivateKey
		signed     bool
	}{
		{"another key", hubKey, newKey, true},
		{"a key after none", nil, newKey, true},
		{"no key after one", hubKey, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st, log, _ := openHubStore(t, dir, 3, hubStoreOptions{})
			h := NewHub(st, log, nil, tc.first)
			storeLottery(t, h, newRecPeer("p"))
			submit(t, h, newRecPeer("p"), &persist.Request{Agency: 3, Finish: true, Total: 1})
			first, ok := h.Commitment()
			if !ok {
				t.Fatal("no draw")
			}
			closeHub(t, h, st)

			st2, log2, logs2 := openHubStore(t, dir, 3, hubStoreOptions{})
			h2 := NewHub(st2, log2, nil, tc.now)
			defer closeHub(t, h2, st2)
			_, c, ok := h2.Winners(1)
			if !ok {
				t.Fatal("the restarted hub has not drawn")
			}
			if c.Root != first.Root {
				t.Fatalf("root %x after the restart, %x before", c.Root[:4], first.Root[:4])
			}
			held, _, chain := st2.Status(1)
			if tc.now != nil {
				if err := receipt.Check(c, receipt.Leaf{Agency: 1, Bets: held, Chain: chain}, tc.now.Public().(ed25519.PublicKey)); err != nil {
					t.Errorf("agency 1 checking the pushed commitment with the server's current key: %v", err)
				}
			}
			if signed := c.Signature != (frame.Signature{}); signed != tc.signed {
				t.Errorf("pushed commitment signed %v, want %v", signed, tc.signed)
			}
			draws := logLines(logs2, "sorteo")
			if len(draws) != 1 {
				t.Fatalf("%d sorteo lines, want 1", len(draws))
			}
			checkFields(t, draws[0], map[string]any{"signed": tc.signed, "root": hex.EncodeToString(first.Root[:])})
		})
	}
}

// keepFirst is the file store with the shared store's SaveDraw: the first
// statement saved is the statement of record, whatever signs a later one
// (PostgreSQL's insert-if-absent).
type keepFirst struct {
	*filestore.Store
	dir string
}

func (s keepFirst) SaveDraw(statement []byte) ([]byte, error) {
	if kept, err := os.ReadFile(filepath.Join(s.dir, filestore.DrawFile)); err == nil {
		return kept, nil
	}
	return s.Store.SaveDraw(statement)
}

// TestHubWarnsOfAStatementSignedWithAnotherKey: a server whose store hands
// back a statement of record signed with another key pushes it (every
// server pushes the same commitment) but says, with a fail line, that the
// agencies checking with its own key will refuse it.
func TestHubWarnsOfAStatementSignedWithAnotherKey(t *testing.T) {
	dir := t.TempDir()
	h, st, first := drawnHub(t, dir)
	closeHub(t, h, st)

	newKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	b, err := filestore.Open(dir, filestore.Options{Agencies: 3, WinningNumber: hubWinning, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	st2, err := persist.New(keepFirst{b, dir}, persist.Options{Agencies: 3, WinningNumber: hubWinning, Logger: log})
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	h2 := NewHub(st2, log, nil, newKey)
	defer closeHub(t, h2, st2)
	if c, ok := h2.Commitment(); !ok || c != first {
		t.Fatalf("pushed %+v, want the statement of record %+v", c, first)
	}
	var warned bool
	for _, l := range logLines(logs, "sorteo") {
		if l.level == zapcore.WarnLevel && l.fields["result"] == "fail" && l.fields["signature"] != nil {
			warned = true
		}
	}
	if !warned {
		t.Error("no sorteo fail line saying the statement of record is signed with another key")
	}
}
