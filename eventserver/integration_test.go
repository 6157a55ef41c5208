package eventserver

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
)

// These tests run the real server in-process on 127.0.0.1:0 and talk to it
// over TCP. Every read has a deadline that only guards against hangs; no
// test depends on how long anything takes. Each test has its own server and
// data directory, so they run in parallel (a gnet Stop polls every 500ms).

func stopServer(t *testing.T, ts *testServer) {
	t.Helper()
	if err := ts.stop(t); err != nil {
		t.Fatalf("Serve returned %v, want nil after a clean drain", err)
	}
}

func requireOneDraw(t *testing.T, ts *testServer) {
	t.Helper()
	draws := logLines(ts.logs, "sorteo")
	if len(draws) != 1 {
		t.Fatalf("sorteo logged %d times, want exactly once", len(draws))
	}
	checkFields(t, draws[0], map[string]any{"result": "success"})
}

func TestIntegrationAgenciesUploadConcurrently(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		agencies, bets, batch int
	}{
		{agencies: 5, bets: 120, batch: 25},
		{agencies: 50, bets: 40, batch: 15},
	} {
		t.Run(fmt.Sprintf("%d_agencies", tt.agencies), func(t *testing.T) {
			dir := t.TempDir()
			ts := startServer(t, Config{Agencies: tt.agencies, DataDir: dir})
			var specs []agencySpec
			for a := uint32(1); a <= uint32(tt.agencies); a++ {
				specs = append(specs, agencySpec{id: a, bets: agencyBets(a, tt.bets), batch: tt.batch})
			}
			checkTestData(t, specs)

			winners := runAgencies(t, ts.Addr(), specs)
			checkAgencyWinners(t, specs, winners)
			stopServer(t, ts)
			checkStored(t, dir, specsWant(specs))
			requireOneDraw(t, ts)
			if n, want := ts.logs.FilterMessage("apuesta_almacenada").Len(), tt.agencies*tt.bets; n != want {
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

// TestIntegrationFraming sends the same bets three ways: whole frames, one
// byte at a time, and everything in a single Write. The results must match.
func TestIntegrationFraming(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := startServer(t, Config{Agencies: 3, DataDir: dir})
	bets := agencyBets(7, 30)
	specs := []agencySpec{
		{id: 1, bets: bets, batch: 7, mode: wholeFrames},
		{id: 2, bets: bets, batch: 7, mode: byteByByte},
		{id: 3, bets: bets, batch: 7, mode: coalesced},
	}
	winners := runAgencies(t, ts.Addr(), specs)
	checkAgencyWinners(t, specs, winners)
	if len(winners[1]) == 0 {
		t.Fatal("the test bets have no winners")
	}
	for _, s := range specs[1:] {
		if !reflect.DeepEqual(winners[s.id], winners[1]) {
			t.Errorf("%s agency got winners %q, whole-frame agency %q", s.mode, winners[s.id], winners[1])
		}
	}
	stopServer(t, ts)
	checkStored(t, dir, specsWant(specs))
}

// TestIntegrationDrawWaitsForTheLastAgency holds four finished agencies
// connected and checks nothing is drawn until the fifth finishes.
func TestIntegrationDrawWaitsForTheLastAgency(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 5})
	var held []*client
	for a := uint32(1); a <= 4; a++ {
		c, err := openAgency(ts.Addr(), a, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.conn.Close()
		s := agencySpec{id: a, bets: agencyBets(a, 20), batch: 8}
		if err := uploadBatches(c, wholeFrames, s.batches()); err != nil {
			t.Fatalf("agency %d: %v", a, err)
		}
		if err := c.write(wholeFrames, &frame.Finished{Total: 20}); err != nil {
			t.Fatal(err)
		}
		nr, err := readAs[*frame.NotReady](c)
		if err != nil {
			t.Fatalf("agency %d FINISHED: %v", a, err)
		}
		if nr.Finished != a || nr.Agencies != 5 {
			t.Errorf("agency %d NOT_READY says %d of %d finished, want %d of 5", a, nr.Finished, nr.Agencies, a)
		}
		held = append(held, c)
	}
	last, err := openAgency(ts.Addr(), 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer last.conn.Close()
	lastSpec := agencySpec{id: 5, bets: agencyBets(5, 20), batch: 8}
	if err := uploadBatches(last, wholeFrames, lastSpec.batches()); err != nil {
		t.Fatalf("agency 5: %v", err)
	}

	// Everyone but agency 5 has finished: a PING on each held connection must
	// come back before anything else, so no WINNERS is queued for them.
	for i, c := range held {
		payload := []byte(fmt.Sprintf("hold-%d", i+1))
		if err := c.write(wholeFrames, &frame.Ping{Payload: payload}); err != nil {
			t.Fatal(err)
		}
		pong, err := readAs[*frame.Pong](c)
		if err != nil {
			t.Fatalf("agency %d while holding: %v", i+1, err)
		}
		if !bytes.Equal(pong.Payload, payload) {
			t.Errorf("PONG payload %q, want %q", pong.Payload, payload)
		}
	}
	select {
	case <-ts.Hub().Drawn():
		t.Fatal("drawn before the last agency finished")
	default:
	}
	if n := ts.logs.FilterMessage("sorteo").Len(); n != 0 {
		t.Fatalf("sorteo logged %d times before the last agency finished", n)
	}

	if err := last.write(wholeFrames, &frame.Finished{Total: 20}); err != nil {
		t.Fatal(err)
	}
	docs, err := last.awaitWinners()
	if err != nil {
		t.Fatalf("agency 5: %v", err)
	}
	if want := winnersIn(lastSpec.bets); !reflect.DeepEqual(docs, want) {
		t.Errorf("agency 5 winners %q, want %q", docs, want)
	}
	for i, c := range held {
		docs, err := c.awaitWinners()
		if err != nil {
			t.Fatalf("agency %d: %v", i+1, err)
		}
		if want := winnersIn(agencyBets(uint32(i+1), 20)); !reflect.DeepEqual(docs, want) {
			t.Errorf("agency %d winners %q, want %q", i+1, docs, want)
		}
	}

	stopServer(t, ts)
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

// TestIntegrationTakeover opens a second connection for an agency midway:
// the first is told it was replaced and closed, the second carries on.
func TestIntegrationTakeover(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := startServer(t, Config{Agencies: 1, DataDir: dir})
	s := agencySpec{id: 1, bets: agencyBets(1, 30), batch: 10}
	batches := s.batches()

	first, err := openAgency(ts.Addr(), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer first.conn.Close()
	if err := uploadBatches(first, wholeFrames, batches[:2]); err != nil {
		t.Fatal(err)
	}

	second, err := openAgency(ts.Addr(), 1, 20) // continues from what the first stored
	if err != nil {
		t.Fatal(err)
	}
	defer second.conn.Close()
	e, err := first.readError()
	if err != nil {
		t.Fatalf("replaced connection: %v", err)
	}
	if e.Code != frame.CodeReplaced {
		t.Errorf("replaced connection got ERROR %s, want replaced", e.Code)
	}

	if err := uploadBatches(second, wholeFrames, batches[2:]); err != nil {
		t.Fatal(err)
	}
	if err := second.write(wholeFrames, &frame.Finished{Total: 30}); err != nil {
		t.Fatal(err)
	}
	docs, err := second.awaitWinners()
	if err != nil {
		t.Fatal(err)
	}
	if want := winnersIn(s.bets); !reflect.DeepEqual(docs, want) {
		t.Errorf("winners %q, want %q", docs, want)
	}
	stopServer(t, ts)
	checkStored(t, dir, specsWant([]agencySpec{s}))
	if n := ts.logs.FilterMessage("connection_replaced").Len(); n != 1 {
		t.Errorf("connection_replaced logged %d times, want 1", n)
	}
}

// TestIntegrationResume drops a connection in the middle of a batch and
// reconnects: WELCOME says what was acknowledged, a replay is acknowledged
// without being stored again, and a batch past the end is refused with the
// index to resume from.
func TestIntegrationResume(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := startServer(t, Config{Agencies: 1, DataDir: dir})
	s := agencySpec{id: 1, bets: agencyBets(1, 30), batch: 10}
	batches := s.batches()

	c, err := openAgency(ts.Addr(), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := uploadBatches(c, wholeFrames, batches[:2]); err != nil {
		t.Fatal(err)
	}
	partial, err := frame.Encode(batches[2])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.put(wholeFrames, partial[:len(partial)/2]); err != nil {
		t.Fatal(err)
	}
	c.conn.Close()

	c, err = openAgency(ts.Addr(), 1, 20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if err := uploadBatches(c, wholeFrames, batches[:1]); err != nil { // replay of bets 0..9
		t.Fatalf("replay: %v", err)
	}
	gap := &frame.Bets{First: 25, Bets: s.bets[25:]}
	if err := c.write(wholeFrames, gap); err != nil {
		t.Fatal(err)
	}
	rej, err := readAs[*frame.Reject](c)
	if err != nil {
		t.Fatalf("batch past the end: %v", err)
	}
	if rej.Code != frame.CodeIndexGap || rej.Index != 20 {
		t.Errorf("batch past the end: REJECT %s at %d, want index_gap at 20 (where the server's bets end)", rej.Code, rej.Index)
	}
	if err := uploadBatches(c, wholeFrames, batches[2:]); err != nil {
		t.Fatalf("after the gap: %v", err)
	}
	if err := c.write(wholeFrames, &frame.Finished{Total: 30}); err != nil {
		t.Fatal(err)
	}
	docs, err := c.awaitWinners()
	if err != nil {
		t.Fatal(err)
	}
	if want := winnersIn(s.bets); !reflect.DeepEqual(docs, want) {
		t.Errorf("winners %q, want %q", docs, want)
	}
	stopServer(t, ts)
	checkStored(t, dir, specsWant([]agencySpec{s}))
	if n := ts.logs.FilterMessage("apuesta_almacenada").Len(); n != 30 {
		t.Errorf("apuesta_almacenada logged %d times, want 30 (the replay stores nothing)", n)
	}
}

// TestIntegrationRestartAfterTheDraw stops a server after its draw and
// starts another on the same data: it answers the same winners at once.
func TestIntegrationRestartAfterTheDraw(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := startServer(t, Config{Agencies: 2, DataDir: dir})
	specs := []agencySpec{
		{id: 1, bets: agencyBets(1, 40), batch: 9},
		{id: 2, bets: agencyBets(2, 40), batch: 9},
	}
	winners := runAgencies(t, ts.Addr(), specs)
	checkAgencyWinners(t, specs, winners)
	stopServer(t, ts)

	ts = startServer(t, Config{Agencies: 2, DataDir: dir})
	select {
	case <-ts.Hub().Drawn():
	case <-time.After(hangGuard):
		t.Fatal("the restarted server did not draw")
	}
	for _, s := range specs {
		c, err := dialAgency(ts.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.conn.Close()
		if err := c.write(wholeFrames, &frame.Hello{Agency: s.id}); err != nil {
			t.Fatal(err)
		}
		w, err := readAs[*frame.Welcome](c)
		if err != nil {
			t.Fatal(err)
		}
		if w.Held != 40 || !w.Finished {
			t.Errorf("agency %d WELCOME %+v, want held 40 and finished", s.id, w)
		}
		// Agency 1 asks; agency 2 repeats its FINISHED, which is accepted.
		var ask frame.Frame = &frame.QueryWinners{}
		if s.id == 2 {
			ask = &frame.Finished{Total: 40}
		}
		if err := c.write(wholeFrames, ask); err != nil {
			t.Fatal(err)
		}
		var docs []string
		for {
			chunk, err := readAs[*frame.Winners](c) // no NOT_READY: the answer is immediate
			if err != nil {
				t.Fatalf("agency %d after the restart: %v", s.id, err)
			}
			docs = append(docs, chunk.Documents...)
			if chunk.Last {
				break
			}
		}
		if !reflect.DeepEqual(docs, winners[s.id]) {
			t.Errorf("agency %d winners after the restart %q, before %q", s.id, docs, winners[s.id])
		}
	}
	stopServer(t, ts)
	requireOneDraw(t, ts)
	checkStored(t, dir, specsWant(specs))
}

func TestIntegrationPingBeforeHello(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 2})
	c := dial(t, ts.Addr())
	for _, payload := range [][]byte{[]byte("are you there"), nil, bytes.Repeat([]byte{0, 0xFF}, 100)} {
		c.send(&frame.Ping{Payload: payload})
		pong := expect[*frame.Pong](c)
		if !bytes.Equal(pong.Payload, payload) {
			t.Errorf("PONG payload %q, want %q", pong.Payload, payload)
		}
	}
	c.send(&frame.Hello{Agency: 2})
	if w := expect[*frame.Welcome](c); w.Held != 0 || w.Finished {
		t.Errorf("WELCOME %+v after pings, want a fresh agency", w)
	}
}

// TestIntegrationGracefulStop stops a server with idle connections in every
// state: Serve returns nil and each client is told the server is shutting down.
func TestIntegrationGracefulStop(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 2})
	silent, err := dialAgency(ts.Addr()) // no HELLO yet
	if err != nil {
		t.Fatal(err)
	}
	defer silent.conn.Close()
	uploading, err := openAgency(ts.Addr(), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer uploading.conn.Close()
	waiting, err := openAgency(ts.Addr(), 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.conn.Close()
	if err := waiting.write(wholeFrames, &frame.Finished{Total: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := readAs[*frame.NotReady](waiting); err != nil {
		t.Fatal(err)
	}
	// The silent connection is known to the server once it answers a PING.
	if err := silent.write(wholeFrames, &frame.Ping{}); err != nil {
		t.Fatal(err)
	}
	if _, err := readAs[*frame.Pong](silent); err != nil {
		t.Fatal(err)
	}

	stopServer(t, ts)
	for name, c := range map[string]*client{"silent": silent, "uploading": uploading, "waiting": waiting} {
		e, err := c.readError()
		if err != nil {
			t.Errorf("%s client: %v", name, err)
			continue
		}
		if e.Code != frame.CodeShuttingDown {
			t.Errorf("%s client got ERROR %s, want shutting_down", name, e.Code)
		}
	}
	lines := logLines(ts.logs, "shutdown")
	if len(lines) == 0 || lines[len(lines)-1].fields["result"] != "success" {
		t.Errorf("shutdown lines %v, want the last one a success", lines)
	}
}

// TestIntegrationAgencyClients runs the real agency client against the
// server, all agencies holding their connection or all polling.
func TestIntegrationAgencyClients(t *testing.T) {
	t.Parallel()
	for _, wait := range []string{agency.WaitHold, agency.WaitPoll} {
		t.Run(wait, func(t *testing.T) {
			dir := t.TempDir()
			ts := startServer(t, Config{Agencies: 5, DataDir: dir, RetryAfter: 20 * time.Millisecond})
			bets := map[uint32][]frame.Bet{}
			for a := uint32(1); a <= 5; a++ {
				b, err := agency.SyntheticBets(agency.SynthOptions{
					Agency: a, Bets: 150 + 10*int(a), Winners: int(a % 4), WinningNumber: DefaultWinningNumber, Seed: 42,
				})
				if err != nil {
					t.Fatal(err)
				}
				bets[a] = b
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*hangGuard)
			defer cancel()
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				results = map[uint32]agency.Result{}
				errs    = map[uint32]error{}
			)
			for a := uint32(1); a <= 5; a++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := agency.Run(ctx, agency.Config{
						Agency:         a,
						Server:         ts.Addr(),
						BatchMaxAmount: 32,
						Wait:           wait,
						RetryBase:      10 * time.Millisecond,
						RetryMax:       50 * time.Millisecond,
						GiveUp:         hangGuard,
						IOTimeout:      hangGuard,
						Logger:         zap.NewNop(),
					}, agency.NewSliceSource(bets[a]))
					mu.Lock()
					results[a], errs[a] = res, err
					mu.Unlock()
				}()
			}
			wg.Wait()
			for a := uint32(1); a <= 5; a++ {
				if errs[a] != nil {
					t.Errorf("agency %d: %v", a, errs[a])
					continue
				}
				want := winnersIn(bets[a])
				if len(want) != int(a%4) {
					t.Fatalf("agency %d: synthetic data has %d winners, asked for %d", a, len(want), a%4)
				}
				got := results[a].Winners
				if !slices.Equal(got, want) {
					t.Errorf("agency %d winners %q, want %q", a, got, want)
				}
				if results[a].Bets != uint64(len(bets[a])) {
					t.Errorf("agency %d: result says %d bets, sent %d", a, results[a].Bets, len(bets[a]))
				}
			}
			stopServer(t, ts)
			requireOneDraw(t, ts)
			checkStored(t, dir, bets)
		})
	}
}
