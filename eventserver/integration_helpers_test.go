package eventserver

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/receipt"
)

// sharedDocument is bet by someone at every agency; it wins at several.
const sharedDocument = "4242"

// agencyBets returns agency a's n synthetic bets, the same on every call.
// About one in five wins; some bets are an earlier bet of the agency again
// (the same document winning twice there), some carry sharedDocument, and
// some last names need CSV quoting.
func agencyBets(a uint32, n int) []frame.Bet {
	lastNames := []string{"Gómez", "Pérez, Jr.", `O"Neil`, "Ruiz Díaz"}
	bets := make([]frame.Bet, n)
	for i := range bets {
		if i >= 6 && i%13 == 6 {
			bets[i] = bets[i-6]
			continue
		}
		b := frame.Bet{
			FirstName: "Nombre" + strconv.Itoa(i),
			LastName:  lastNames[i%len(lastNames)],
			Document:  strconv.Itoa(int(a)*1_000_000 + i),
			Birthdate: frame.NewDate(1940+i%60, 1+i%12, 1+i%28),
		}
		if i%11 == 5 {
			b.Document = sharedDocument
		}
		if (i+int(a))%5 == 0 {
			b.Number = DefaultWinningNumber
		} else if b.Number = uint16((i*31 + int(a)*7) % 10000); b.Number == DefaultWinningNumber {
			b.Number++
		}
		bets[i] = b
	}
	return bets
}

// synthBets is agency.SyntheticBets with exactly winners winning bets.
func synthBets(t testing.TB, a uint32, n, winners int, seed int64) []frame.Bet {
	t.Helper()
	bets, err := agency.SyntheticBets(agency.SynthOptions{
		Agency: a, Bets: n, Winners: winners, WinningNumber: DefaultWinningNumber, Seed: seed,
	})
	if err != nil {
		t.Fatal(err)
	}
	return bets
}

// winnersIn is what the draw must give an agency that stored bets: the
// documents of its winning bets, in order, repeats kept.
func winnersIn(bets []frame.Bet) []string {
	var docs []string
	for _, b := range bets {
		if b.Number == DefaultWinningNumber {
			docs = append(docs, b.Document)
		}
	}
	return docs
}

// agencySpec is one agency driven by the test's own protocol client.
type agencySpec struct {
	id     uint32
	bets   []frame.Bet
	batch  int
	mode   writeMode
	window int // BETS frames in flight at once, at most WELCOME's window; 0 means 1
}

func (s agencySpec) batches() []*frame.Bets {
	var out []*frame.Bets
	for first := 0; first < len(s.bets); first += s.batch {
		end := min(first+s.batch, len(s.bets))
		out = append(out, &frame.Bets{First: uint64(first), Bets: s.bets[first:end]})
	}
	return out
}

// chainsAt returns the chain over bets[:n] for every n in ends, in order.
func chainsAt(bets []frame.Bet, ends []uint64) []frame.Hash {
	c := receipt.NewChain()
	out := make([]frame.Hash, 0, len(ends))
	for _, end := range ends {
		for c.Len() < end {
			c.Add(&bets[c.Len()])
		}
		out = append(out, c.Sum())
	}
	return out
}

// outcome is what an agency run by the test learned from the server.
type outcome struct {
	winners []string
	receipt *frame.Receipt
	root    frame.Hash
}

// checkWelcome requires WELCOME to report held bets with their chain and
// the server's limits.
func checkWelcome(ts *testServer, w *frame.Welcome, held uint64, chain frame.Hash) error {
	cfg := ts.Server.cfg
	switch {
	case w.Held != held || w.Chain != chain:
		return fmt.Errorf("WELCOME held %d chain %x, want %d chain %x", w.Held, w.Chain[:4], held, chain[:4])
	case int(w.Window) > cfg.Window || int(w.Window) < fairWindow(ts) || int(w.MaxFrame) != cfg.MaxFrame:
		return fmt.Errorf("WELCOME window %d max_frame %d, server has %d (at least %d a share) and %d",
			w.Window, w.MaxFrame, cfg.Window, fairWindow(ts), cfg.MaxFrame)
	case w.ReadTimeout != cfg.ReadTimeout.Truncate(time.Millisecond) || w.PingInterval != cfg.PingInterval.Truncate(time.Millisecond):
		return fmt.Errorf("WELCOME read_timeout %v ping_interval %v, server has %v and %v",
			w.ReadTimeout, w.PingInterval, cfg.ReadTimeout, cfg.PingInterval)
	}
	return nil
}

// fairWindow is the smallest window an agency may get: the server's budget
// of requests in flight shared among all its agencies, at most --window.
func fairWindow(ts *testServer) int {
	return int(min(max(ts.Server.hub.budget/int64(ts.Server.cfg.Agencies), 1), int64(ts.Server.cfg.Window)))
}

// runSpec is a whole agency over the test's client: handshake (secured
// servers), HELLO, its batches with up to s.window in flight, each ACK's
// count and chain checked, FINISHED, the RECEIPT checked, then the winners
// under a COMMITMENT that proves the agency's leaf. A coalesced agency sends
// all of that in one Write and reads the answers afterwards.
func runSpec(ts *testServer, s agencySpec) (outcome, error) {
	p, err := ts.dial(s.id)
	if err != nil {
		return outcome{}, fmt.Errorf("agency %d: %w", s.id, err)
	}
	defer p.close()
	p.mode = s.mode
	batches := s.batches()
	ends := make([]uint64, len(batches))
	for i, b := range batches {
		ends[i] = b.First + uint64(len(b.Bets))
	}
	chains := chainsAt(s.bets, ends)
	final := receipt.ChainOf(s.bets)
	fin := &frame.Finished{Total: uint64(len(s.bets))}
	fail := func(err error) (outcome, error) { return outcome{}, fmt.Errorf("agency %d: %w", s.id, err) }

	if s.mode == coalesced {
		all := []frame.Frame{&frame.Hello{Agency: s.id}}
		for _, b := range batches {
			all = append(all, b)
		}
		if err := p.write(append(all, fin)...); err != nil {
			return fail(err)
		}
		w, err := readAs[*frame.Welcome](p)
		if err == nil {
			err = checkWelcome(ts, w, 0, receipt.Empty())
		}
		if err != nil {
			return fail(err)
		}
		for i, b := range batches {
			if err := checkAck(p, b, ends[i], chains[i]); err != nil {
				return fail(err)
			}
		}
	} else {
		if err := p.write(&frame.Hello{Agency: s.id}); err != nil {
			return fail(err)
		}
		w, err := readAs[*frame.Welcome](p)
		if err == nil {
			err = checkWelcome(ts, w, 0, receipt.Empty())
		}
		if err != nil {
			return fail(err)
		}
		window := max(1, min(s.window, int(w.Window)))
		if err := uploadWindow(p, batches, window, ends, chains); err != nil {
			return fail(err)
		}
		if err := p.write(fin); err != nil {
			return fail(err)
		}
	}
	r, err := readAs[*frame.Receipt](p)
	if err != nil {
		return fail(fmt.Errorf("answer to FINISHED: %w", err))
	}
	if err := checkReceipt(r, s.id, uint64(len(s.bets)), final, ts.verifyKey()); err != nil {
		return fail(err)
	}
	leaf := receipt.Leaf{Agency: s.id, Bets: uint64(len(s.bets)), Chain: final}
	docs, root, err := awaitWinners(p, leaf, ts.verifyKey())
	if err != nil {
		return fail(err)
	}
	return outcome{winners: docs, receipt: r, root: root}, nil
}

// uploadWindow sends batches keeping up to window of them unanswered, and
// checks every ACK, which must come in order.
func uploadWindow(p *peer, batches []*frame.Bets, window int, ends []uint64, chains []frame.Hash) error {
	sent := 0
	for acked := range batches {
		var out []frame.Frame
		for ; sent < len(batches) && sent-acked < window; sent++ {
			out = append(out, batches[sent])
		}
		if err := p.write(out...); err != nil {
			return err
		}
		if err := checkAck(p, batches[acked], ends[acked], chains[acked]); err != nil {
			return err
		}
	}
	return nil
}

// checkAck reads the ACK of batch b, after which the server must hold held
// bets with chain.
func checkAck(p *peer, b *frame.Bets, held uint64, chain frame.Hash) error {
	ack, err := readAs[*frame.Ack](p)
	if err != nil {
		return fmt.Errorf("batch at %d: %w", b.First, err)
	}
	if ack.First != b.First || int(ack.Count) != len(b.Bets) || ack.Held != held || ack.Chain != chain {
		return fmt.Errorf("ACK first %d count %d held %d chain %x for batch %d+%d, want held %d chain %x",
			ack.First, ack.Count, ack.Held, ack.Chain[:4], b.First, len(b.Bets), held, chain[:4])
	}
	return nil
}

// checkReceipt requires a receipt for the agency's bets, signed by the
// server when pub is given (unsigned otherwise).
func checkReceipt(f *frame.Receipt, id uint32, bets uint64, chain frame.Hash, pub ed25519.PublicKey) error {
	r := receipt.Receipt(*f)
	if r.Agency != id || r.Bets != bets || r.Chain != chain {
		return fmt.Errorf("RECEIPT for agency %d, %d bets, chain %x; want agency %d, %d bets, chain %x",
			r.Agency, r.Bets, r.Chain[:4], id, bets, chain[:4])
	}
	if pub == nil {
		if r.Signature != (frame.Signature{}) {
			return errors.New("an --insecure server signed a receipt")
		}
		return nil
	}
	return r.Verify(pub)
}

// awaitWinners reads the answer to FINISHED or QUERY_WINNERS after its
// receipt: NOT_READY (waiting for the push), then the COMMITMENT, which
// must prove leaf (and be signed when pub is given), then every WINNERS
// chunk. It answers the server's PINGs.
func awaitWinners(p *peer, leaf receipt.Leaf, pub ed25519.PublicKey) ([]string, frame.Hash, error) {
	var docs []string
	var root frame.Hash
	committed := false
	for {
		f, err := p.read()
		if err != nil {
			return nil, root, fmt.Errorf("waiting for winners: %w", err)
		}
		switch f := f.(type) {
		case *frame.NotReady:
			if committed {
				return nil, root, errors.New("NOT_READY after the COMMITMENT")
			}
		case *frame.Ping:
			if err := p.write(&frame.Pong{Payload: f.Payload}); err != nil {
				return nil, root, err
			}
		case *frame.Commitment:
			if err := receipt.Check(f, leaf, pub); err != nil {
				return nil, root, fmt.Errorf("COMMITMENT: %w", err)
			}
			root, committed = f.Root, true
		case *frame.Winners:
			if !committed {
				return nil, root, errors.New("WINNERS before the COMMITMENT")
			}
			docs = append(docs, f.Documents...)
			if f.Last {
				return docs, root, nil
			}
		default:
			return nil, root, fmt.Errorf("waiting for winners, got %s %s", f.Type(), brief(f))
		}
	}
}

// runSpecs runs every agency at once and returns each one's outcome.
func runSpecs(t *testing.T, ts *testServer, specs []agencySpec) map[uint32]outcome {
	t.Helper()
	var (
		mu   sync.Mutex
		got  = map[uint32]outcome{}
		errs []error
		wg   sync.WaitGroup
	)
	for _, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := runSpec(ts, s)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			got[s.id] = o
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("agencies failed:\n%v", err)
	}
	return got
}

// checkOutcomes requires every agency to get exactly the documents of its
// own winning bets, and all of them the server's commitment root.
func checkOutcomes(t *testing.T, ts *testServer, specs []agencySpec, got map[uint32]outcome) {
	t.Helper()
	c, drawn := ts.Hub().Commitment()
	if !drawn {
		t.Fatal("agencies got winners but the hub has no commitment")
	}
	for _, s := range specs {
		if want := winnersIn(s.bets); !slices.Equal(got[s.id].winners, want) {
			t.Errorf("agency %d winners %q, want %q", s.id, got[s.id].winners, want)
		}
		if root := got[s.id].root; root != c.Root {
			t.Errorf("agency %d got root %x, the draw's is %x", s.id, root[:4], c.Root[:4])
		}
	}
}

func specsWant(specs []agencySpec) map[uint32][]frame.Bet {
	want := map[uint32][]frame.Bet{}
	for _, s := range specs {
		want[s.id] = s.bets
	}
	return want
}

// storedBets reads the data directory's bets.csv, per agency in file order.
func storedBets(t testing.TB, dir string) map[uint32][]frame.Bet {
	t.Helper()
	got := map[uint32][]frame.Bet{}
	for b, err := range filestore.LoadBetsFile(filepath.Join(dir, filestore.BetsFile)) {
		if err != nil {
			t.Fatalf("read bets.csv: %v", err)
		}
		got[b.Agency] = append(got[b.Agency], b.Bet)
	}
	return got
}

// checkStored requires each agency's stored sequence to equal what it sent,
// every bet once, in order, and no other agency's bets.
func checkStored(t testing.TB, dir string, want map[uint32][]frame.Bet) {
	t.Helper()
	got := storedBets(t, dir)
	for a, bets := range want {
		if !slices.Equal(got[a], bets) {
			t.Errorf("agency %d: bets.csv holds %d bets that differ from the %d it sent", a, len(got[a]), len(bets))
		}
	}
	for a := range got {
		if _, ok := want[a]; !ok {
			t.Errorf("bets.csv holds %d bets of agency %d, which sent none", len(got[a]), a)
		}
	}
}

// requireOneDraw requires exactly one successful sorteo line.
func requireOneDraw(t *testing.T, ts *testServer) logFields {
	t.Helper()
	draws := ts.logs.lines("sorteo", nil)
	if len(draws) != 1 || draws[0]["result"] != "success" {
		t.Fatalf("sorteo lines %v, want exactly one success", draws)
	}
	return draws[0]
}

// agencyRun is agency.Run's result.
type agencyRun struct {
	res  agency.Result
	err  error
	logs *watchedLogs
}

// runAgencies runs agency.Run for each id with the bets of bets[id] at once,
// configured by ts.agencyConfig and then edit (which may be nil).
func runAgencies(ctx context.Context, ts *testServer, bets map[uint32][]frame.Bet,
	edit func(*agency.Config)) map[uint32]*agencyRun {
	var (
		mu  sync.Mutex
		out = map[uint32]*agencyRun{}
		wg  sync.WaitGroup
	)
	for id, b := range bets {
		log, logs := newWatchedLogger(zap.InfoLevel)
		cfg := ts.agencyConfig(id, log)
		if edit != nil {
			edit(&cfg)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := agency.Run(ctx, cfg, agency.NewSliceSource(b))
			mu.Lock()
			out[id] = &agencyRun{res: res, err: err, logs: logs}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// checkRuns requires every agency run to have succeeded with exactly its
// winners, its bets held and the draw's root.
func checkRuns(t *testing.T, ts *testServer, bets map[uint32][]frame.Bet, runs map[uint32]*agencyRun) {
	t.Helper()
	c, drawn := ts.Hub().Commitment()
	for id, b := range bets {
		r := runs[id]
		if r == nil {
			t.Errorf("agency %d did not run", id)
			continue
		}
		if r.err != nil {
			t.Errorf("agency %d: %v", id, r.err)
			continue
		}
		if want := winnersIn(b); !slices.Equal(r.res.Winners, want) {
			t.Errorf("agency %d winners %q, want %q", id, r.res.Winners, want)
		}
		if r.res.Bets != uint64(len(b)) {
			t.Errorf("agency %d: result says %d bets, it sent %d", id, r.res.Bets, len(b))
		}
		if root := r.res.Root; !drawn || root != c.Root {
			t.Errorf("agency %d root %x, the draw's %x (drawn %t)", id, root[:4], c.Root[:4], drawn)
		}
	}
}

// waitingAgency connects agency a, which says FINISHED with no bets and
// gets its RECEIPT and NOT_READY: an agency waiting for the draw.
func waitingAgency(t *testing.T, ts *testServer, a uint32) *peer {
	t.Helper()
	p := ts.mustDial(t, a)
	mustWrite(t, p, &frame.Hello{Agency: a})
	expectFrame[*frame.Welcome](t, p)
	mustWrite(t, p, &frame.Finished{Total: 0})
	expectFrame[*frame.Receipt](t, p)
	expectFrame[*frame.NotReady](t, p)
	return p
}
