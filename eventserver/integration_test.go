package eventserver

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/eventserver/probe"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
)

// These tests run the real server in-process on 127.0.0.1:0, secured unless
// a test says otherwise, and talk to it over TCP with the test's own client
// (peer, runSpec) or the real agency client (agency.Run). Each test has its
// own server, keys and data directory, so they run in parallel.

func TestIntegrationAgenciesUploadConcurrently(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		agencies, bets, batch, window int
	}{
		{agencies: 5, bets: 120, batch: 25, window: 4},
		{agencies: 50, bets: 40, batch: 15, window: 2},
	} {
		t.Run(fmt.Sprintf("%d_agencies", tt.agencies), func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, Config{Agencies: tt.agencies})
			var specs []agencySpec
			for a := uint32(1); a <= uint32(tt.agencies); a++ {
				specs = append(specs, agencySpec{id: a, bets: agencyBets(a, tt.bets), batch: tt.batch, window: tt.window})
			}
			checkTestData(t, specs)

			got := runSpecs(t, ts, specs)
			checkOutcomes(t, ts, specs, got)
			ts.mustStop(t)
			checkStored(t, ts.dir, specsWant(specs))
			requireOneDraw(t, ts)
			if n, want := ts.logs.count("apuesta_almacenada", nil), tt.agencies*tt.bets; n != want {
				t.Errorf("apuesta_almacenada logged %d times, want one per bet (%d)", n, want)
			}
		})
	}
}

// checkTestData makes sure the synthetic bets still have what the
// integration tests rely on: a document winning twice at one agency, and a
// document winning at several agencies.
func checkTestData(t *testing.T, specs []agencySpec) {
	t.Helper()
	twice, shared := false, 0
	for _, s := range specs {
		seen := map[string]int{}
		for _, d := range winnersIn(s.bets) {
			seen[d]++
			twice = twice || seen[d] == 2
		}
		if seen[sharedDocument] > 0 {
			shared++
		}
	}
	if !twice || shared < 2 {
		t.Fatalf("test data lost its shape: a document winning twice at one agency %t, agencies where %s wins %d",
			twice, sharedDocument, shared)
	}
}

// TestIntegrationFraming sends the same bets three ways: whole records, one
// byte at a time, and everything in a single Write, secured and plaintext.
// The results must match. Before that, PINGs of every size are answered
// before HELLO (inside the secured transport), and a plaintext PING, the
// health check that holds no key, is answered by both servers.
func TestIntegrationFraming(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"secure", "insecure"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var opts []serverOption
			if mode == "insecure" {
				opts = append(opts, optInsecure())
			}
			ts := startServer(t, Config{Agencies: 3}, opts...)
			if err := probe.Ping(ts.Addr(), itGuard); err != nil {
				t.Errorf("health check PING: %v", err)
			}
			p := ts.mustDial(t, 1)
			for _, payload := range []string{"are you there", "", string(bytes.Repeat([]byte{0, 0xFF}, frame.MaxPayload/2))} {
				mustPing(t, p, payload)
			}
			mustWrite(t, p, &frame.Hello{Agency: 1})
			if err := checkWelcome(ts, expectFrame[*frame.Welcome](t, p), 0, receipt.Empty()); err != nil {
				t.Fatalf("after pings: %v", err)
			}
			p.close()

			bets := agencyBets(7, 30)
			specs := []agencySpec{
				{id: 1, bets: bets, batch: 7, mode: wholeFrames, window: 2},
				{id: 2, bets: bets, batch: 7, mode: byteByByte, window: 2},
				{id: 3, bets: bets, batch: 7, mode: coalesced},
			}
			got := runSpecs(t, ts, specs)
			checkOutcomes(t, ts, specs, got)
			if len(got[1].winners) == 0 {
				t.Fatal("the test bets have no winners")
			}
			for _, s := range specs[1:] {
				if !slices.Equal(got[s.id].winners, got[1].winners) {
					t.Errorf("%s agency got winners %q, whole-frame agency %q", s.mode, got[s.id].winners, got[1].winners)
				}
			}
			ts.mustStop(t)
			checkStored(t, ts.dir, specsWant(specs))
		})
	}
}

// finishHeld uploads an agency's bets on p and sends FINISHED, which must be
// answered RECEIPT and NOT_READY; it returns both.
func finishHeld(t *testing.T, ts *testServer, p *peer, id uint32, bets []frame.Bet) (*frame.Receipt, *frame.NotReady) {
	t.Helper()
	mustWrite(t, p, &frame.Hello{Agency: id})
	if err := checkWelcome(ts, expectFrame[*frame.Welcome](t, p), 0, receipt.Empty()); err != nil {
		t.Fatal(err)
	}
	s := agencySpec{id: id, bets: bets, batch: 8}
	batches := s.batches()
	ends := make([]uint64, len(batches))
	for i, b := range batches {
		ends[i] = b.First + uint64(len(b.Bets))
	}
	if err := uploadWindow(p, batches, 1, ends, chainsAt(bets, ends)); err != nil {
		t.Fatalf("agency %d: %v", id, err)
	}
	mustWrite(t, p, &frame.Finished{Total: uint64(len(bets))})
	r := expectFrame[*frame.Receipt](t, p)
	if err := checkReceipt(r, id, uint64(len(bets)), receipt.ChainOf(bets), ts.verifyKey()); err != nil {
		t.Fatal(err)
	}
	return r, expectFrame[*frame.NotReady](t, p)
}

// TestIntegrationDrawWaitsForTheLastAgency holds four finished agencies
// connected and checks nothing is drawn until the fifth finishes, whose
// FINISHED is answered with its winners at once; the others get theirs
// pushed.
func TestIntegrationDrawWaitsForTheLastAgency(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 5})
	var held []*peer
	for a := uint32(1); a <= 4; a++ {
		p := ts.mustDial(t, a)
		_, nr := finishHeld(t, ts, p, a, agencyBets(a, 20))
		if nr.Finished != a || nr.Agencies != 5 {
			t.Errorf("agency %d NOT_READY says %d of %d finished, want %d of 5", a, nr.Finished, nr.Agencies, a)
		}
		held = append(held, p)
	}
	last := ts.mustDial(t, 5)
	lastBets := agencyBets(5, 20)
	mustWrite(t, last, &frame.Hello{Agency: 5})
	expectFrame[*frame.Welcome](t, last)
	mustWrite(t, last, &frame.Bets{First: 0, Bets: lastBets})
	expectFrame[*frame.Ack](t, last)

	// Everyone but agency 5 has finished: a PING on each held connection must
	// come back before anything else, so no WINNERS is queued for them.
	for i, p := range held {
		mustPing(t, p, fmt.Sprintf("hold-%d", i+1))
	}
	select {
	case <-ts.Hub().Drawn():
		t.Fatal("drawn before the last agency finished")
	default:
	}
	if n := ts.logs.count("sorteo", nil); n != 0 {
		t.Fatalf("sorteo logged %d times before the last agency finished", n)
	}

	mustWrite(t, last, &frame.Finished{Total: 20})
	expectFrame[*frame.Receipt](t, last)
	// The FINISHED that completes the set is answered with the winners, never NOT_READY.
	expectFrame[*frame.Commitment](t, last)
	docs := readWinners(t, last)
	if want := winnersIn(lastBets); !slices.Equal(docs, want) {
		t.Errorf("agency 5 winners %q, want %q", docs, want)
	}
	for i, p := range held {
		a := uint32(i + 1)
		bets := agencyBets(a, 20)
		docs, _, err := awaitWinners(p, receipt.Leaf{Agency: a, Bets: 20, Chain: receipt.ChainOf(bets)}, ts.verifyKey())
		if err != nil {
			t.Fatalf("agency %d: %v", a, err)
		}
		if want := winnersIn(bets); !slices.Equal(docs, want) {
			t.Errorf("agency %d winners %q, want %q", a, docs, want)
		}
	}

	ts.mustStop(t)
	requireOneDraw(t, ts)
	// In the log, the draw comes after the fifth agency_finished line.
	finished, drawAt := 0, -1
	for i, e := range ts.logs.All() {
		switch {
		case e.Message == "agency_finished" && e.ContextMap()["result"] == "success":
			finished++
		case e.Message == "sorteo":
			drawAt = i
			if finished != 5 {
				t.Errorf("sorteo logged after %d agency_finished lines, want 5", finished)
			}
		}
	}
	if drawAt < 0 || finished != 5 {
		t.Errorf("log has %d agency_finished lines and sorteo at %d", finished, drawAt)
	}
}

// readWinners reads WINNERS chunks up to the last one.
func readWinners(t testing.TB, p *peer) []string {
	t.Helper()
	var docs []string
	for {
		w := expectFrame[*frame.Winners](t, p)
		docs = append(docs, w.Documents...)
		if w.Last {
			return docs
		}
	}
}

// TestIntegrationTakeover opens a second connection with the agency's key
// midway: the first is told it was replaced and closed, the second carries
// on from what the first stored.
func TestIntegrationTakeover(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 1})
	s := agencySpec{id: 1, bets: agencyBets(1, 30), batch: 10}
	batches := s.batches()
	ends := []uint64{10, 20, 30}
	chains := chainsAt(s.bets, ends)

	first := ts.mustDial(t, 1)
	mustWrite(t, first, &frame.Hello{Agency: 1})
	expectFrame[*frame.Welcome](t, first)
	if err := uploadWindow(first, batches[:2], 2, ends, chains); err != nil {
		t.Fatal(err)
	}

	second := ts.mustDial(t, 1)
	mustWrite(t, second, &frame.Hello{Agency: 1})
	if err := checkWelcome(ts, expectFrame[*frame.Welcome](t, second), 20, chains[1]); err != nil {
		t.Fatal(err)
	}
	expectError(t, first, frame.CodeReplaced)

	if err := uploadWindow(second, batches[2:], 1, ends[2:], chains[2:]); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, second, &frame.Finished{Total: 30})
	expectFrame[*frame.Receipt](t, second)
	docs, _, err := awaitWinners(second, receipt.Leaf{Agency: 1, Bets: 30, Chain: chains[2]}, ts.verifyKey())
	if err != nil {
		t.Fatal(err)
	}
	if want := winnersIn(s.bets); !slices.Equal(docs, want) {
		t.Errorf("winners %q, want %q", docs, want)
	}
	ts.mustStop(t)
	checkStored(t, ts.dir, specsWant([]agencySpec{s}))
	if n := ts.logs.count("connection_replaced", nil); n != 1 {
		t.Errorf("connection_replaced logged %d times, want 1", n)
	}
}

// TestIntegrationResume drops a connection in the middle of a record and
// reconnects: WELCOME says what was acknowledged, with its chain; a replay is
// acknowledged without being stored again, and a batch past the end is
// refused with the index to resume from.
func TestIntegrationResume(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 1})
	s := agencySpec{id: 1, bets: agencyBets(1, 30), batch: 10}
	batches := s.batches()
	ends := []uint64{10, 20, 30}
	chains := chainsAt(s.bets, ends)

	p := ts.mustDial(t, 1)
	mustWrite(t, p, &frame.Hello{Agency: 1})
	expectFrame[*frame.Welcome](t, p)
	if err := uploadWindow(p, batches[:2], 1, ends, chains); err != nil {
		t.Fatal(err)
	}
	enc, err := frame.Encode(batches[2])
	if err != nil {
		t.Fatal(err)
	}
	record, err := p.wire(enc)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.sendRaw(record[:len(record)/2]); err != nil {
		t.Fatal(err)
	}
	cut := p.localAddr()
	p.close()
	ts.logs.wait(t, "connection_closed", failLine("remote", cut, "unread_bytes", fmt.Sprint(len(record)/2)))

	p = ts.mustDial(t, 1)
	mustWrite(t, p, &frame.Hello{Agency: 1})
	if err := checkWelcome(ts, expectFrame[*frame.Welcome](t, p), 20, chains[1]); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, p, batches[0]) // a replay of bets 0..9
	if ack := expectFrame[*frame.Ack](t, p); ack.First != 0 || ack.Count != 10 || ack.Held != 20 || ack.Chain != chains[1] {
		t.Errorf("replay: ACK %d+%d held %d, want 0+10 held 20 with the chain over 20", ack.First, ack.Count, ack.Held)
	}
	mustWrite(t, p, &frame.Bets{First: 25, Bets: s.bets[25:]})
	if rej := expectFrame[*frame.Reject](t, p); rej.Code != frame.CodeIndexGap || rej.Index != 20 {
		t.Errorf("batch past the end: REJECT %s at %d, want index_gap at 20 (where the server's bets end)", rej.Code, rej.Index)
	}
	if err := uploadWindow(p, batches[2:], 1, ends[2:], chains[2:]); err != nil {
		t.Fatalf("after the gap: %v", err)
	}
	mustWrite(t, p, &frame.Finished{Total: 30})
	expectFrame[*frame.Receipt](t, p)
	docs, _, err := awaitWinners(p, receipt.Leaf{Agency: 1, Bets: 30, Chain: chains[2]}, ts.verifyKey())
	if err != nil {
		t.Fatal(err)
	}
	if want := winnersIn(s.bets); !slices.Equal(docs, want) {
		t.Errorf("winners %q, want %q", docs, want)
	}
	ts.mustStop(t)
	checkStored(t, ts.dir, specsWant([]agencySpec{s}))
	if n := ts.logs.count("apuesta_almacenada", nil); n != 30 {
		t.Errorf("apuesta_almacenada logged %d times, want 30 (the replay stores nothing)", n)
	}
}

// TestIntegrationRestartAfterTheDraw stops a server after its draw and
// starts another on the same data and keys: it answers the same winners
// under the same root at once, and a FINISHED again gets the same receipt.
func TestIntegrationRestartAfterTheDraw(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 2})
	specs := []agencySpec{
		{id: 1, bets: agencyBets(1, 40), batch: 9, window: 3},
		{id: 2, bets: agencyBets(2, 40), batch: 9, window: 3},
	}
	before := runSpecs(t, ts, specs)
	checkOutcomes(t, ts, specs, before)
	ts.mustStop(t)

	ts2 := startServer(t, Config{Agencies: 2, DataDir: ts.dir}, optKeys(ts.keys))
	select {
	case <-ts2.Hub().Drawn():
	case <-time.After(itGuard):
		t.Fatal("the restarted server did not draw")
	}
	for _, s := range specs {
		p := ts2.mustDial(t, s.id)
		mustWrite(t, p, &frame.Hello{Agency: s.id})
		w := expectFrame[*frame.Welcome](t, p)
		if w.Held != 40 || !w.Finished || w.Chain != receipt.ChainOf(s.bets) {
			t.Errorf("agency %d WELCOME held %d finished %t, want held 40 and finished, with its chain", s.id, w.Held, w.Finished)
		}
		// Agency 1 asks; agency 2 repeats its FINISHED, which gets its receipt again.
		if s.id == 1 {
			mustWrite(t, p, &frame.QueryWinners{})
		} else {
			mustWrite(t, p, &frame.Finished{Total: 40})
			if r := expectFrame[*frame.Receipt](t, p); *r != *before[2].receipt {
				t.Errorf("receipt after the restart %+v, before %+v", r, before[2].receipt)
			}
		}
		c := expectFrame[*frame.Commitment](t, p) // no NOT_READY: the answer is immediate
		if root := before[s.id].root; c.Root != root {
			t.Errorf("agency %d root after the restart %x, before %x", s.id, c.Root[:4], root[:4])
		}
		if docs := readWinners(t, p); !slices.Equal(docs, before[s.id].winners) {
			t.Errorf("agency %d winners after the restart %q, before %q", s.id, docs, before[s.id].winners)
		}
	}
	ts2.mustStop(t)
	requireOneDraw(t, ts2)
	checkStored(t, ts.dir, specsWant(specs))
}

// TestIntegrationGracefulStop stops a server with idle connections in every
// state: Serve returns nil and each client is told the server is shutting down.
func TestIntegrationGracefulStop(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 2})
	silent := ts.mustDial(t, 1) // handshake done, no HELLO yet
	mustPing(t, silent, "known to the server")
	plain := ts.mustDialPlain(t) // a health check that stays
	mustPing(t, plain, "probe")
	uploading := ts.mustDial(t, 1)
	mustWrite(t, uploading, &frame.Hello{Agency: 1})
	expectFrame[*frame.Welcome](t, uploading)
	waiting := waitingAgency(t, ts, 2)

	ts.mustStop(t)
	for name, p := range map[string]*peer{"silent": silent, "plaintext": plain, "uploading": uploading, "waiting": waiting} {
		if err := p.readError(frame.CodeShuttingDown); err != nil {
			t.Errorf("%s client: %v", name, err)
		}
	}
	lines := ts.logs.lines("shutdown", nil)
	if len(lines) == 0 || lines[len(lines)-1]["result"] != "success" {
		t.Errorf("shutdown lines %v, want the last one a success", lines)
	}
}

// TestIntegrationAgencyClients runs the real agency client against the
// server, secured with some agencies holding their connection and the
// others polling, and once --insecure.
func TestIntegrationAgencyClients(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"secure", "insecure"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var opts []serverOption
			if mode == "insecure" {
				opts = append(opts, optInsecure())
			}
			ts := startServer(t, Config{Agencies: 5, RetryAfter: 20 * time.Millisecond}, opts...)
			bets := map[uint32][]frame.Bet{}
			for a := uint32(1); a <= 5; a++ {
				bets[a] = synthBets(t, a, 150+10*int(a), int(a%4), 42)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*itGuard)
			defer cancel()
			runs := runAgencies(ctx, ts, bets, func(c *agency.Config) {
				c.Wait, c.BatchMaxAmount = agency.WaitHold, 32
				if c.Agency%2 == 0 {
					c.Wait = agency.WaitPoll
				}
			})
			checkRuns(t, ts, bets, runs)
			for a, r := range runs {
				if r.err != nil {
					continue
				}
				if got := len(r.res.Winners); got != int(a%4) {
					t.Errorf("agency %d: %d winners, the synthetic data has %d", a, got, a%4)
				}
				if r.res.Receipt == nil || r.res.Receipt.Bets != uint64(len(bets[a])) {
					t.Errorf("agency %d: receipt %+v, want one for its %d bets", a, r.res.Receipt, len(bets[a]))
				} else if err := checkReceipt((*frame.Receipt)(r.res.Receipt), a, uint64(len(bets[a])),
					receipt.ChainOf(bets[a]), ts.verifyKey()); err != nil {
					t.Errorf("agency %d: %v", a, err)
				}
			}
			ts.mustStop(t)
			requireOneDraw(t, ts)
			checkStored(t, ts.dir, bets)
		})
	}
}
