package eventserver

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
)

// Issue 8 §7: the behaviours PROTOCOL.md (version 2) promises, each seen on
// the wire of a secured server. Issue 10: pipelined uploads.

// TestProtocolUnsolicitedPongIsIgnored: PONG is allowed in any state and an
// unsolicited one is ignored: the session goes on.
func TestProtocolUnsolicitedPongIsIgnored(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 2})
	p := ts.mustDial(t, 1)
	pong := &frame.Pong{Payload: []byte("nobody asked")}
	mustWrite(t, p, pong) // before HELLO
	mustPing(t, p, "after a PONG before HELLO")
	mustWrite(t, p, &frame.Hello{Agency: 1})
	expectFrame[*frame.Welcome](t, p)
	bets := agencyBets(1, 10)
	mustWrite(t, p, pong, &frame.Bets{First: 0, Bets: bets}) // uploading
	if ack := expectFrame[*frame.Ack](t, p); ack.Held != 10 {
		t.Fatalf("ACK held %d, want 10", ack.Held)
	}
	mustWrite(t, p, &frame.Finished{Total: 10}, pong) // waiting for the draw
	expectFrame[*frame.Receipt](t, p)
	expectFrame[*frame.NotReady](t, p)
	mustPing(t, p, "after a PONG while waiting")
	if n := ts.logs.count("session_error", map[string]string{"remote": p.localAddr()}); n != 0 {
		t.Errorf("%d session_error lines for the peer that sent PONGs", n)
	}
}

// expectReceipt reads a RECEIPT and requires it to equal want.
func expectReceipt(t *testing.T, p *peer, want *frame.Receipt) {
	t.Helper()
	if r := expectFrame[*frame.Receipt](t, p); *r != *want {
		t.Fatalf("RECEIPT %+v, want the same as before %+v", r, want)
	}
}

// expectWinnersNow reads the COMMITMENT and WINNERS that must come at once
// (no NOT_READY) and checks them.
func expectWinnersNow(t *testing.T, ts *testServer, p *peer, leaf receipt.Leaf, want []string) {
	t.Helper()
	c := expectFrame[*frame.Commitment](t, p)
	if err := receipt.Check(c, leaf, ts.verifyKey()); err != nil {
		t.Fatal(err)
	}
	if docs := readWinners(t, p); !slices.Equal(docs, want) {
		t.Fatalf("winners %q, want %q", docs, want)
	}
}

// TestProtocolFinishedAgain: FINISHED is idempotent on the same connection
// and on a new one, answered RECEIPT and NOT_READY before the draw and
// RECEIPT, COMMITMENT and WINNERS after it; a pure replay after FINISHED is
// ACKed and a batch adding bets is refused; NOT_READY subscribes an open
// connection to the push; a different total ends the session.
func TestProtocolFinishedAgain(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 2})
	bets := agencyBets(1, 20)
	leaf := receipt.Leaf{Agency: 1, Bets: 20, Chain: receipt.ChainOf(bets)}
	first := ts.mustDial(t, 1)
	r1, _ := finishHeld(t, ts, first, 1, bets)

	mustWrite(t, first, &frame.Finished{Total: 20}) // the same connection
	expectReceipt(t, first, r1)
	expectFrame[*frame.NotReady](t, first)

	mustWrite(t, first, &frame.Bets{First: 0, Bets: bets[:8]}) // a pure replay after FINISHED
	if ack := expectFrame[*frame.Ack](t, first); ack.First != 0 || ack.Count != 8 || ack.Held != 20 || ack.Chain != leaf.Chain {
		t.Errorf("replay after FINISHED: ACK %d+%d held %d, want 0+8 held 20 with the full chain", ack.First, ack.Count, ack.Held)
	}
	mustWrite(t, first, &frame.Bets{First: 15, Bets: agencyBets(1, 21)[15:]}) // adds bet 20
	if rej := expectFrame[*frame.Reject](t, first); rej.Code != frame.CodeAlreadyFinished || rej.Index != 20 {
		t.Errorf("bets after FINISHED: REJECT %s at %d, want already_finished at 20", rej.Code, rej.Index)
	}

	second := ts.mustDial(t, 1) // a new connection takes over
	mustWrite(t, second, &frame.Hello{Agency: 1})
	if w := expectFrame[*frame.Welcome](t, second); !w.Finished || w.Held != 20 || w.Chain != leaf.Chain {
		t.Fatalf("WELCOME %+v, want finished with 20 bets", w)
	}
	expectError(t, first, frame.CodeReplaced)
	mustWrite(t, second, &frame.Finished{Total: 20})
	expectReceipt(t, second, r1)
	expectFrame[*frame.NotReady](t, second)

	// Agency 2 finishes last: RECEIPT, COMMITMENT, WINNERS, never NOT_READY.
	last := ts.mustDial(t, 2)
	bets2 := agencyBets(2, 10)
	mustWrite(t, last, &frame.Hello{Agency: 2}, &frame.Bets{First: 0, Bets: bets2}, &frame.Finished{Total: 10})
	expectFrame[*frame.Welcome](t, last)
	expectFrame[*frame.Ack](t, last)
	expectFrame[*frame.Receipt](t, last)
	expectWinnersNow(t, ts, last, receipt.Leaf{Agency: 2, Bets: 10, Chain: receipt.ChainOf(bets2)}, winnersIn(bets2))

	// The connection that got NOT_READY and stayed open gets the push.
	expectWinnersNow(t, ts, second, leaf, winnersIn(bets))
	// FINISHED again after the draw, on the same connection and a new one.
	mustWrite(t, second, &frame.Finished{Total: 20})
	expectReceipt(t, second, r1)
	expectWinnersNow(t, ts, second, leaf, winnersIn(bets))
	third := ts.mustDial(t, 1)
	mustWrite(t, third, &frame.Hello{Agency: 1}, &frame.Finished{Total: 20})
	expectFrame[*frame.Welcome](t, third)
	expectReceipt(t, third, r1)
	expectWinnersNow(t, ts, third, leaf, winnersIn(bets))
	mustWrite(t, third, &frame.QueryWinners{})
	expectWinnersNow(t, ts, third, leaf, winnersIn(bets))

	mismatch := ts.mustDial(t, 1)
	mustWrite(t, mismatch, &frame.Hello{Agency: 1}, &frame.Finished{Total: 21})
	expectFrame[*frame.Welcome](t, mismatch)
	expectError(t, mismatch, frame.CodeTotalMismatch)
	ts.mustStop(t)
	checkStored(t, ts.dir, map[uint32][]frame.Bet{1: bets, 2: bets2})
	requireOneDraw(t, ts)
}

// TestProtocolQueryWinnersBeforeFinished: QUERY_WINNERS is allowed after
// HELLO, also before FINISHED, and answered NOT_READY; the session goes on,
// and the agency that then finishes last gets its winners once.
func TestProtocolQueryWinnersBeforeFinished(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 1})
	p := ts.mustDial(t, 1)
	mustWrite(t, p, &frame.Hello{Agency: 1}, &frame.QueryWinners{})
	expectFrame[*frame.Welcome](t, p)
	if nr := expectFrame[*frame.NotReady](t, p); nr.Finished != 0 || nr.Agencies != 1 {
		t.Errorf("NOT_READY %+v, want 0 of 1 finished", nr)
	}
	bets := agencyBets(1, 15)
	mustWrite(t, p, &frame.Bets{First: 0, Bets: bets}, &frame.Finished{Total: 15})
	expectFrame[*frame.Ack](t, p)
	expectFrame[*frame.Receipt](t, p)
	expectWinnersNow(t, ts, p, receipt.Leaf{Agency: 1, Bets: 15, Chain: receipt.ChainOf(bets)}, winnersIn(bets))
	mustPing(t, p, "nothing else queued") // the early QUERY_WINNERS did not push the winners twice
}

// TestProtocolLastFinishedGetsWinnersAtOnce: agencies that finish at the
// same moment race to complete the set; whichever FINISHED completes it (the
// agency_finished line counting all of them) is answered RECEIPT,
// COMMITMENT and WINNERS, never NOT_READY, and every other agency gets its
// winners too.
func TestProtocolLastFinishedGetsWinnersAtOnce(t *testing.T) {
	t.Parallel()
	const agencies = 8
	for round := range 2 {
		t.Run(fmt.Sprintf("round_%d", round), func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, Config{Agencies: agencies})
			peers := make([]*peer, agencies)
			for i := range peers {
				id := uint32(i + 1)
				peers[i] = ts.mustDial(t, id)
				mustWrite(t, peers[i], &frame.Hello{Agency: id}, &frame.Bets{First: 0, Bets: agencyBets(id, 12)})
				expectFrame[*frame.Welcome](t, peers[i])
				expectFrame[*frame.Ack](t, peers[i])
			}
			answers := make([][]frame.Type, agencies)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, p := range peers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if err := p.write(&frame.Finished{Total: 12}); err != nil {
						return
					}
					for {
						f, err := p.read()
						if err != nil {
							return
						}
						answers[i] = append(answers[i], f.Type())
						if w, ok := f.(*frame.Winners); ok && w.Last {
							return
						}
					}
				}()
			}
			close(start)
			wg.Wait()
			completing := ts.logs.lines("agency_finished", map[string]string{"result": "success", "finished": fmt.Sprint(agencies)})
			if len(completing) != 1 {
				t.Fatalf("%d agency_finished lines complete the set, want 1", len(completing))
			}
			last := completing[0]["agency"].(uint32)
			for i, a := range answers {
				if len(a) < 3 || a[0] != frame.TypeReceipt || a[len(a)-1] != frame.TypeWinners {
					t.Errorf("agency %d answered %v, want RECEIPT … WINNERS", i+1, a)
				}
				if uint32(i+1) == last && (len(a) < 2 || a[1] != frame.TypeCommitment) {
					t.Errorf("agency %d completed the set and got %v, want RECEIPT, COMMITMENT, WINNERS", last, a)
				}
			}
		})
	}
}

// TestPipelineWindowsInFlight is issue 10: agencies keep several batches in
// flight (up to WELCOME's window), whole, byte by byte and all at once (more
// than the window, which waits unread in the buffer); every ACK comes in
// order with its chain and the store holds every bet once.
func TestPipelineWindowsInFlight(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 4, Window: 8})
	specs := []agencySpec{
		{id: 1, bets: agencyBets(1, 200), batch: 10, window: 8},
		{id: 2, bets: agencyBets(2, 200), batch: 7, window: 8},
		{id: 3, bets: agencyBets(3, 30), batch: 5, window: 4, mode: byteByByte},
		{id: 4, bets: agencyBets(4, 200), batch: 10, mode: coalesced}, // 20 batches at once
	}
	got := runSpecs(t, ts, specs)
	checkOutcomes(t, ts, specs, got)
	ts.mustStop(t)
	checkStored(t, ts.dir, specsWant(specs))
}

// TestPipelineRejectInTheMiddleOfAWindow: a batch with an invalid bet in the
// middle of a window is refused in its turn: the batches before it are
// ACKed first, the ones after it get index_gap (they start past what the
// server holds), nothing after the invalid batch is stored, and the agency
// resumes from where the server's bets end.
func TestPipelineRejectInTheMiddleOfAWindow(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 1, Window: 8})
	bets := agencyBets(1, 50)
	spoiled := slices.Clone(bets[20:30])
	spoiled[3].Birthdate = frame.NewDate(2023, 2, 30)
	window := []frame.Frame{
		&frame.Bets{First: 0, Bets: bets[0:10]},
		&frame.Bets{First: 10, Bets: bets[10:20]},
		&frame.Bets{First: 20, Bets: spoiled},
		&frame.Bets{First: 30, Bets: bets[30:40]},
		&frame.Bets{First: 40, Bets: bets[40:50]},
	}
	p := ts.mustDial(t, 1)
	p.mode = coalesced
	mustWrite(t, p, append([]frame.Frame{&frame.Hello{Agency: 1}}, window...)...)
	expectFrame[*frame.Welcome](t, p)
	chains := chainsAt(bets, []uint64{10, 20})
	for i, held := range []uint64{10, 20} {
		if ack := expectFrame[*frame.Ack](t, p); ack.Held != held || ack.Chain != chains[i] {
			t.Fatalf("ACK %d+%d held %d, want held %d", ack.First, ack.Count, ack.Held, held)
		}
	}
	if rej := expectFrame[*frame.Reject](t, p); rej.Code != frame.CodeInvalidBet || rej.Index != 23 {
		t.Fatalf("REJECT %s at %d, want invalid_bet at 23", rej.Code, rej.Index)
	}
	for range 2 {
		if rej := expectFrame[*frame.Reject](t, p); rej.Code != frame.CodeIndexGap || rej.Index != 20 {
			t.Fatalf("REJECT %s at %d, want index_gap at 20", rej.Code, rej.Index)
		}
	}
	if held, _, _ := ts.Hub().Status(1); held != 20 {
		t.Fatalf("server holds %d bets after the REJECT, want 20", held)
	}
	ts.logs.wait(t, "apuesta_recibida", failLine("remote", p.localAddr(), "cantidad", "10"))

	// The agency resumes at 20 with the corrected batch.
	p.mode = wholeFrames
	ends := []uint64{30, 40, 50}
	fixed := []*frame.Bets{{First: 20, Bets: bets[20:30]}, {First: 30, Bets: bets[30:40]}, {First: 40, Bets: bets[40:50]}}
	if err := uploadWindow(p, fixed, 3, ends, chainsAt(bets, ends)); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, p, &frame.Finished{Total: 50})
	expectFrame[*frame.Receipt](t, p)
	expectWinnersNow(t, ts, p, receipt.Leaf{Agency: 1, Bets: 50, Chain: receipt.ChainOf(bets)}, winnersIn(bets))
	ts.mustStop(t)
	checkStored(t, ts.dir, map[uint32][]frame.Bet{1: bets})
}

// TestPipelineWindowOne: a server with --window 1 says so in WELCOME; frames
// sent beyond it wait and are answered in order, and real agencies work.
func TestPipelineWindowOne(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 4, Window: 1})
	specs := []agencySpec{{id: 4, bets: agencyBets(4, 90), batch: 10, mode: coalesced}}
	bets := map[uint32][]frame.Bet{}
	for a := uint32(1); a <= 3; a++ {
		bets[a] = synthBets(t, a, 300, int(a), int64(a))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*itGuard)
	defer cancel()
	var runs map[uint32]*agencyRun
	var got map[uint32]outcome
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // also when the test fails
	wg.Add(1)
	go func() {
		defer wg.Done()
		runs = runAgencies(ctx, ts, bets, func(c *agency.Config) { c.BatchMaxAmount = 40 })
	}()
	got = runSpecs(t, ts, specs)
	wg.Wait()
	checkRuns(t, ts, bets, runs)
	checkOutcomes(t, ts, specs, got)
	for _, r := range runs {
		if n := r.logs.count("hello", map[string]string{"window": "1"}); n == 0 {
			t.Errorf("the agency's hello lines %v do not show window 1", r.logs.lines("hello", nil))
		}
	}
	ts.mustStop(t)
	want := specsWant(specs)
	for a, b := range bets {
		want[a] = b
	}
	checkStored(t, ts.dir, want)
}
