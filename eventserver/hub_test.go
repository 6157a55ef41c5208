package eventserver

import (
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
)

// hangGuard bounds every wait in these tests; reaching it means a hang.
const hangGuard = 20 * time.Second

// recPeer is a Peer that records what the hub delivers to it.
type recPeer struct {
	name   string
	events chan Event
}

func newRecPeer(name string) *recPeer { return &recPeer{name: name, events: make(chan Event, 64)} }

// Deliver never blocks as long as a test reads what it asked for.
func (p *recPeer) Deliver(ev Event) { p.events <- ev }

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

// openTestStore opens a store in dir whose log lines are observed.
func openTestStore(t *testing.T, dir string, agencies int) (*persist.Store, *zap.Logger, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	st, err := persist.Open(dir, persist.Options{Agencies: agencies, WinningNumber: DefaultWinningNumber, Logger: log})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return st, log, logs
}

// submit hands r to the hub on behalf of p and returns the store's answer.
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

func TestHubClaimReplacesTheOlderConnection(t *testing.T) {
	st, log, _ := openTestStore(t, t.TempDir(), 3)
	defer st.Close()
	h := NewHub(st, log)
	defer h.Close()
	a, b, c := newRecPeer("a"), newRecPeer("b"), newRecPeer("c")

	h.Claim(a, 1)
	a.none(t)
	h.Claim(b, 1)
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

func TestHubLeaveRemovesOnlyItsOwnClaim(t *testing.T) {
	st, log, _ := openTestStore(t, t.TempDir(), 3)
	defer st.Close()
	h := NewHub(st, log)
	defer h.Close()
	a, b, c := newRecPeer("a"), newRecPeer("b"), newRecPeer("c")
	for _, p := range []*recPeer{a, b, c} {
		h.Join(p)
	}

	h.Claim(a, 1)
	h.Claim(b, 1)
	wantReplaced(t, a)
	h.Leave(a, 1) // a lost agency 1 to b: its leaving must not drop b's claim
	h.Claim(c, 1)
	wantReplaced(t, b)
	h.Leave(c, 1)
	h.Claim(a, 1) // c's claim is gone, so nobody is replaced
	a.none(t)
	b.none(t)
	c.none(t)
	h.Leave(b, 0) // a connection that never said HELLO

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

// lottery is the data TestHub* tests store: winners repeat inside an agency
// and across agencies, and agency 3 has none.
var lottery = map[uint32][]frame.Bet{
	1: {hubBet("11111111", 7574), hubBet("22222222", 1), hubBet("11111111", 7574)},
	2: {hubBet("11111111", 7574), hubBet("33333333", 7574), hubBet("44444444", 7575)},
	3: {hubBet("55555555", 0)},
}

var lotteryWinners = map[uint32][]string{
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
		if r := submit(t, h, p, &persist.Request{Agency: a, Bets: lottery[a]}); r.Err != nil || r.Stored != len(lottery[a]) {
			t.Fatalf("agency %d bets: %+v", a, r)
		}
	}
	for a := uint32(1); a <= 2; a++ {
		if r := submit(t, h, p, &persist.Request{Agency: a, Finish: true, Total: uint64(len(lottery[a]))}); r.Err != nil {
			t.Fatalf("agency %d finish: %v", a, r.Err)
		}
		// The hub decides on a draw inside the store's callback, before
		// Stored is read here: no draw now means none was started.
		select {
		case <-h.Drawn():
			t.Fatalf("drawn after %d of 3 agencies finished", a)
		default:
		}
		if _, drawn := h.Winners(1); drawn {
			t.Fatalf("Winners says drawn after %d of 3 agencies finished", a)
		}
	}
}

func waitDrawn(t *testing.T, h *Hub) {
	t.Helper()
	select {
	case <-h.Drawn():
	case <-time.After(hangGuard):
		t.Fatalf("no draw within %v", hangGuard)
	}
}

func checkLotteryWinners(t *testing.T, h *Hub) {
	t.Helper()
	for a := uint32(1); a <= 3; a++ {
		docs, drawn := h.Winners(a)
		if !drawn {
			t.Fatalf("agency %d: Winners says not drawn", a)
		}
		if !reflect.DeepEqual(docs, lotteryWinners[a]) {
			t.Errorf("agency %d winners %q, want %q", a, docs, lotteryWinners[a])
		}
	}
}

func TestHubDrawsOnceWhenAllFinished(t *testing.T) {
	st, log, logs := openTestStore(t, t.TempDir(), 3)
	h := NewHub(st, log)
	watcher, uploader := newRecPeer("watcher"), newRecPeer("uploader")
	h.Join(watcher)

	storeLottery(t, h, uploader)
	watcher.none(t)
	if n := logs.FilterMessage("sorteo").Len(); n != 0 {
		t.Fatalf("sorteo logged %d times before the last agency finished", n)
	}

	if r := submit(t, h, uploader, &persist.Request{Agency: 3, Finish: true, Total: 1}); r.Err != nil {
		t.Fatalf("agency 3 finish: %v", r.Err)
	}
	waitDrawn(t, h)
	if ev := watcher.next(t); ev != (Drawn{}) {
		t.Fatalf("watcher got %T, want Drawn", ev)
	}
	checkLotteryWinners(t, h)

	// FINISHED again (a reconnecting agency) is recorded but draws nothing new.
	if r := submit(t, h, uploader, &persist.Request{Agency: 1, Finish: true, Total: 3}); r.Err != nil {
		t.Fatalf("agency 1 finish again: %v", r.Err)
	}
	if err := st.Close(); err != nil { // every callback has run
		t.Fatalf("close store: %v", err)
	}
	h.Close() // any draw has ended
	watcher.none(t)
	uploader.none(t)

	draws := logLines(logs, "sorteo")
	if len(draws) != 1 {
		t.Fatalf("sorteo logged %d times, want 1", len(draws))
	}
	checkFields(t, draws[0], map[string]any{"result": "success", "bets": int64(7), "winners": int64(4),
		"winning_number": uint16(DefaultWinningNumber)})
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
		checkFields(t, line, map[string]any{"agency": a, "cant_ganadores": int64(len(lotteryWinners[a]))})
	}
}

func TestHubRestartAfterTheDrawDrawsAgain(t *testing.T) {
	dir := t.TempDir()
	st, log, _ := openTestStore(t, dir, 3)
	h := NewHub(st, log)
	p := newRecPeer("p")
	storeLottery(t, h, p)
	submit(t, h, p, &persist.Request{Agency: 3, Finish: true, Total: 1})
	waitDrawn(t, h)
	checkLotteryWinners(t, h)
	if err := st.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	h.Close()

	st2, log2, logs2 := openTestStore(t, dir, 3)
	h2 := NewHub(st2, log2)
	waitDrawn(t, h2)
	checkLotteryWinners(t, h2)
	if err := st2.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	h2.Close() // the draw has logged
	if n := logs2.FilterMessage("sorteo").Len(); n != 1 {
		t.Errorf("sorteo logged %d times after the restart, want 1", n)
	}
}

func TestHubRestartBeforeTheDrawWaits(t *testing.T) {
	dir := t.TempDir()
	st, log, _ := openTestStore(t, dir, 3)
	h := NewHub(st, log)
	storeLottery(t, h, newRecPeer("p"))
	if err := st.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	h.Close()

	st2, log2, _ := openTestStore(t, dir, 3)
	defer st2.Close()
	h2 := NewHub(st2, log2)
	defer h2.Close()
	select { // NewHub decides synchronously
	case <-h2.Drawn():
		t.Fatal("a hub over 2 of 3 finished agencies drew")
	default:
	}
	p := newRecPeer("p2")
	submit(t, h2, p, &persist.Request{Agency: 3, Finish: true, Total: 1})
	waitDrawn(t, h2)
	checkLotteryWinners(t, h2)
}

// TestHubDrawFollowsEveryFinishLine queues every agency's FINISHED at once,
// so the store may commit them as one group, and checks the draw still waits
// for the last agency_finished line. A wrong total is logged as a failure
// and does not count.
func TestHubDrawFollowsEveryFinishLine(t *testing.T) {
	const agencies = 6
	st, log, logs := openTestStore(t, t.TempDir(), agencies)
	h := NewHub(st, log)
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
	waitDrawn(t, h)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	h.Close()

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

func TestHubSubmitToAClosedStore(t *testing.T) {
	st, log, _ := openTestStore(t, t.TempDir(), 1)
	h := NewHub(st, log)
	defer h.Close()
	if err := st.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	p := newRecPeer("p")
	if err := h.Submit(p, &persist.Request{Agency: 1, Finish: true}); !errors.Is(err, persist.ErrClosed) {
		t.Fatalf("Submit to a closed store: %v, want ErrClosed", err)
	}
	p.none(t) // Done never runs for a request that was not queued
}

// TestHubCloseStopsARetryingDraw makes the draw's read fail (bets.csv is
// gone) and checks Close ends the retry loop instead of hanging.
func TestHubCloseStopsARetryingDraw(t *testing.T) {
	dir := t.TempDir()
	st, log, logs := openTestStore(t, dir, 1)
	defer st.Close()
	if err := os.Remove(filepath.Join(dir, persist.BetsFile)); err != nil {
		t.Fatal(err)
	}
	h := NewHub(st, log)
	submit(t, h, newRecPeer("p"), &persist.Request{Agency: 1, Finish: true, Total: 0})
	deadline := time.Now().Add(hangGuard)
	for logs.FilterMessage("sorteo").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the draw never ran")
		}
		time.Sleep(5 * time.Millisecond)
	}
	failed := logLines(logs, "sorteo")[0]
	checkFields(t, failed, map[string]any{"result": "fail", "attempt": int64(1)})

	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(hangGuard):
		t.Fatal("Close did not stop the retrying draw")
	}
	if _, drawn := h.Winners(1); drawn {
		t.Error("Winners says drawn after every read failed")
	}
}

// seqOf yields bets, or err in place of the bet at errAt (if errAt >= 0),
// and counts how many items it was asked for.
func seqOf(bets []persist.Bet, errAt int, err error, pulled *int) iter.Seq2[persist.Bet, error] {
	return func(yield func(persist.Bet, error) bool) {
		for i, b := range bets {
			*pulled++
			if i == errAt {
				if !yield(persist.Bet{}, err) {
					return
				}
				continue
			}
			if !yield(b, nil) {
				return
			}
		}
	}
}

func storedBet(agency uint32, doc string, number uint16) persist.Bet {
	return persist.Bet{Agency: agency, Bet: hubBet(doc, number)}
}

func TestDraw(t *testing.T) {
	bets := []persist.Bet{
		storedBet(1, "100", 42),
		storedBet(2, "200", 41),
		storedBet(1, "300", 42),
		storedBet(3, "100", 42), // the same person won at agency 1 too
		storedBet(1, "100", 42), // and again at agency 1
		storedBet(4, "400", 0),
		storedBet(1, "500", 4200),
	}
	var pulled int
	winners, n, err := Draw(seqOf(bets, -1, nil, &pulled), 42)
	if err != nil {
		t.Fatalf("Draw: %v", err)
	}
	if n != len(bets) {
		t.Errorf("Draw counted %d bets, want %d", n, len(bets))
	}
	want := map[uint32][]string{1: {"100", "300", "100"}, 3: {"100"}}
	if !reflect.DeepEqual(winners, want) {
		t.Errorf("winners %v, want %v", winners, want)
	}
	for _, a := range []uint32{2, 4} {
		if _, ok := winners[a]; ok {
			t.Errorf("agency %d has no winners but is in the map", a)
		}
	}

	winners, n, err = Draw(seqOf(nil, -1, nil, &pulled), 42)
	if err != nil || n != 0 || len(winners) != 0 {
		t.Errorf("Draw of nothing = %v, %d, %v; want empty, 0, nil", winners, n, err)
	}
}

func TestDrawPropagatesErrors(t *testing.T) {
	bets := []persist.Bet{storedBet(1, "1", 7), storedBet(1, "2", 7), storedBet(1, "3", 7), storedBet(1, "4", 7)}
	cause := errors.New("row 3: bad quoting")
	pulled := 0
	winners, n, err := Draw(seqOf(bets, 2, cause, &pulled), 7)
	if !errors.Is(err, cause) {
		t.Fatalf("Draw error %v, want it to wrap %v", err, cause)
	}
	if winners != nil {
		t.Errorf("Draw returned winners %v along with an error", winners)
	}
	if n != 2 {
		t.Errorf("Draw counted %d bets before the error, want 2", n)
	}
	if pulled != 3 {
		t.Errorf("Draw pulled %d items, want it to stop at the error (3)", pulled)
	}
}
