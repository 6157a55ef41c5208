package persist_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/persisttest"
	"github.com/tp0/loteria/receipt"
)

// step is one request and how it must end.
type step struct {
	name   string
	req    persist.Request
	stored int
	held   uint64
	err    error // nil: must succeed
}

// checkResult fails the test unless res is how st must end. A successful
// result must carry the chain over the agency's first Held bets.
func checkResult(t *testing.T, st step, res persist.Result) {
	t.Helper()
	if !errors.Is(res.Err, st.err) { // errors.Is(err, nil) is err == nil
		t.Errorf("%s: error %v, want %v", st.name, res.Err, st.err)
	}
	if res.Stored != st.stored || res.Held != st.held {
		t.Errorf("%s: Stored %d Held %d, want Stored %d Held %d", st.name, res.Stored, res.Held, st.stored, st.held)
	}
	if st.err == nil {
		if w := receipt.ChainOf(persisttest.Bets(st.req.Agency, 0, int(st.held))); res.Chain != w {
			t.Errorf("%s: chain %x, want the chain over bets 0..%d %x", st.name, res.Chain[:4], st.held, w[:4])
		}
	}
}

// run submits each step on its own and checks how it ends.
func run(t *testing.T, s *persist.Store, steps []step) {
	t.Helper()
	for _, st := range steps {
		checkResult(t, st, do(t, s, st.req))
	}
}

func TestNew(t *testing.T) {
	forEachBackend(t, func(t *testing.T, bk backend) {
		b, reopen := bk.open(t, 2, 1234)
		if _, err := persist.New(b, persist.Options{Agencies: 0}); err == nil {
			t.Error("New with 0 agencies succeeded")
		}
		if _, err := persist.New(b, persist.Options{Agencies: 3}); err == nil {
			t.Error("New with 3 agencies over a backend of 2 succeeded")
		}
		s := newStore(t, b, persist.Options{Agencies: 2, WinningNumber: 1234})
		if s.Agencies() != 2 || s.WinningNumber() != 1234 {
			t.Errorf("Agencies %d WinningNumber %d, want 2 and 1234", s.Agencies(), s.WinningNumber())
		}
		lottery := s.Lottery()
		if lottery == (frame.Hash{}) {
			t.Error("Lottery is the zero hash")
		}
		checkStatus(t, s, []agencyState{want(1, 0, false), want(2, 0, false)})
		if held, _, chain := s.Status(1); held != 0 || chain != receipt.Empty() {
			t.Errorf("a new agency: held %d chain %x, want 0 and the empty chain", held, chain)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = newStore(t, reopen(), persist.Options{Agencies: 2, WinningNumber: 1234})
		if s.Lottery() != lottery {
			t.Errorf("Lottery changed across a reopen: %x, was %x", s.Lottery(), lottery)
		}
	})
}

func TestExactlyOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, bk backend) {
		b, reopen := bk.open(t, 3, winning)
		opts := persist.Options{Agencies: 3, WinningNumber: winning}
		s := newStore(t, b, opts)
		run(t, s, []step{
			{"first batch", batch(1, 0, 5), 5, 5, nil},
			{"replay", batch(1, 0, 5), 0, 5, nil},
			{"replay with other content", persist.Request{Agency: 1, First: 0, Bets: persisttest.Bets(3, 50, 5)}, 0, 5, nil},
			{"replay of a middle slice", batch(1, 2, 3), 0, 5, nil},
			{"overlap stores only the new bets", batch(1, 3, 4), 2, 7, nil},
			{"gap", batch(1, 8, 2), 0, 7, persist.ErrIndexGap},
			{"empty batch at held", batch(1, 7, 0), 0, 7, nil},
			{"empty batch past held", batch(1, 9, 0), 0, 7, persist.ErrIndexGap},
			{"other agency", batch(2, 0, 3), 3, 3, nil},
			{"finish below held", finish(1, 6), 0, 7, persist.ErrTotalMismatch},
			{"finish above held", finish(1, 8), 0, 7, persist.ErrTotalMismatch},
			{"finish", finish(1, 7), 0, 7, nil},
			{"finish again, same total", finish(1, 7), 0, 7, nil},
			{"finish again, other total", finish(1, 6), 0, 7, persist.ErrTotalMismatch},
			{"new bets after finish", batch(1, 7, 1), 0, 7, persist.ErrAlreadyFinished},
			{"overlap after finish", batch(1, 5, 3), 0, 7, persist.ErrAlreadyFinished},
			{"replay after finish", batch(1, 0, 7), 0, 7, nil},
			{"gap after finish is a gap", batch(1, 9, 1), 0, 7, persist.ErrIndexGap},
			{"agency 0", batch(0, 0, 1), 0, 0, persist.ErrUnknownAgency},
			{"agency past the last", batch(4, 0, 1), 0, 0, persist.ErrUnknownAgency},
			{"finish of an unknown agency", finish(4, 0), 0, 0, persist.ErrUnknownAgency},
			{"finish with no bets", finish(3, 0), 0, 0, nil},
			{"second batch of agency 2", batch(2, 3, 2), 2, 5, nil},
		})
		wantState := []agencyState{want(1, 7, true), want(2, 5, false), want(3, 0, true)}
		checkStatus(t, s, wantState)
		for _, a := range []uint32{0, 4} {
			if held, fin, chain := s.Status(a); held != 0 || fin || chain != (frame.Hash{}) {
				t.Errorf("Status(%d) = %d, %t, %x; want zero values", a, held, fin, chain)
			}
		}
		checkWinners(t, s, map[uint32]uint64{1: 7, 2: 5})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		// Everything above, FINISHED included, survives a reopen.
		s = newStore(t, reopen(), opts)
		checkStatus(t, s, wantState)
		checkWinners(t, s, map[uint32]uint64{1: 7, 2: 5})
		run(t, s, []step{
			{"finish again after reopen", finish(1, 7), 0, 7, nil},
			{"finish with another total after reopen", finish(1, 9), 0, 7, persist.ErrTotalMismatch},
			{"new bets after finish and reopen", batch(1, 7, 1), 0, 7, persist.ErrAlreadyFinished},
			{"replay after reopen", batch(2, 0, 5), 0, 5, nil},
			{"overlap after reopen", batch(2, 2, 4), 1, 6, nil},
			{"gap after reopen", batch(2, 7, 1), 0, 6, persist.ErrIndexGap},
		})
		checkStatus(t, s, []agencyState{want(1, 7, true), want(2, 6, false), want(3, 0, true)})
	})
}

// TestBatchesInOneGroup queues requests that depend on each other while
// the writer is busy, so they are planned and committed as one group, and
// checks that each gets the Held and chain after itself, not the group's.
func TestBatchesInOneGroup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, bk backend) {
		b, reopen := bk.open(t, 3, winning)
		p := &probe{Backend: b}
		obs := &commits{}
		opts := persist.Options{Agencies: 3, WinningNumber: winning}
		withObs := opts
		withObs.Observer = obs
		s := newStore(t, p, withObs)
		entered, release := p.holdNext(t)
		starter := submit(t, s, batch(3, 0, 1))
		waitFor(t, entered, "the first commit")

		steps := []step{
			{"batch", batch(1, 0, 4), 4, 4, nil},
			{"replay of the group's own batch", batch(1, 0, 4), 0, 4, nil},
			{"overlap of the group's own batch", batch(1, 2, 4), 2, 6, nil},
			{"gap", batch(1, 7, 1), 0, 6, persist.ErrIndexGap},
			{"finish of an agency with nothing held yet", finish(2, 1), 0, 0, persist.ErrTotalMismatch},
			{"next batch", batch(1, 6, 3), 3, 9, nil},
			{"finish after the group's batches", finish(1, 9), 0, 9, nil},
			{"bets after that finish", batch(1, 9, 1), 0, 9, persist.ErrAlreadyFinished},
			{"finish again", finish(1, 9), 0, 9, nil},
			{"replay after the finish", batch(1, 0, 9), 0, 9, nil},
			{"other agency", batch(2, 0, 2), 2, 2, nil},
			{"other agency again", batch(2, 2, 2), 2, 4, nil},
		}
		calls := make([]*call, len(steps))
		for i, st := range steps {
			calls[i] = submit(t, s, st.req)
		}
		release()
		checkResult(t, step{"starter", batch(3, 0, 1), 1, 1, nil}, starter.wait(t))
		for i, st := range steps {
			checkResult(t, st, calls[i].wait(t))
		}
		if got, want := obs.groups(), []int{1, 4 + 2 + 3 + 2 + 2}; !slices.Equal(got, want) {
			t.Errorf("commits of %v bets, want %v: one for the starter, one for everything queued", got, want)
		}
		wantState := []agencyState{want(1, 9, true), want(2, 4, false), want(3, 1, false)}
		checkStatus(t, s, wantState)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = newStore(t, reopen(), opts)
		checkStatus(t, s, wantState)
		checkWinners(t, s, map[uint32]uint64{1: 9, 2: 4, 3: 1})
	})
}

func TestGroupCommit(t *testing.T) {
	const (
		agencies  = 16
		batches   = 40
		batchSize = 5
	)
	forEachBackend(t, func(t *testing.T, bk backend) {
		b, reopen := bk.open(t, agencies+1, winning)
		p := &probe{Backend: b}
		obs := &commits{}
		opts := persist.Options{Agencies: agencies + 1, WinningNumber: winning}
		withObs := opts
		withObs.Observer = obs
		s := newStore(t, p, withObs)
		// The last agency's request keeps the writer busy while the
		// others all queue theirs, pipelined, from their own goroutines.
		entered, release := p.holdNext(t)
		starter := submit(t, s, batch(agencies+1, 0, 1))
		waitFor(t, entered, "the first commit")

		type outcome struct {
			calls atomic.Int32
			res   persist.Result
		}
		out := make([][]outcome, agencies)
		var done, submitters sync.WaitGroup
		done.Add(agencies * batches)
		for a := range agencies {
			agency := uint32(a + 1)
			out[a] = make([]outcome, batches)
			submitters.Go(func() {
				for k := range batches {
					o := &out[agency-1][k]
					r := batch(agency, uint64(k*batchSize), batchSize)
					r.Done = func(res persist.Result) {
						o.res = res
						if o.calls.Add(1) == 1 {
							done.Done()
						}
					}
					if err := s.Submit(&r); err != nil {
						t.Errorf("agency %d batch %d: Submit: %v", agency, k, err)
						done.Done()
					}
				}
			})
		}
		submitters.Wait()
		release()
		done.Wait()
		if res := starter.wait(t); res.Err != nil || res.Stored != 1 {
			t.Fatalf("starter: %+v", res)
		}
		for a := range out {
			for k := range out[a] {
				o := &out[a][k]
				if n := o.calls.Load(); n != 1 {
					t.Fatalf("agency %d batch %d: Done called %d times", a+1, k, n)
				}
				wantHeld := uint64((k + 1) * batchSize)
				if o.res.Err != nil || o.res.Stored != batchSize || o.res.Held != wantHeld ||
					o.res.Chain != receipt.ChainOf(persisttest.Bets(uint32(a+1), 0, int(wantHeld))) {
					t.Fatalf("agency %d batch %d: %+v, want Stored %d Held %d and its chain", a+1, k, o.res, batchSize, wantHeld)
				}
			}
		}
		requests := agencies*batches + 1
		groups := obs.groups()
		if want := []int{1, agencies * batches * batchSize}; !slices.Equal(groups, want) {
			t.Errorf("%d requests committed in groups of %v bets, want %v", requests, groups, want)
		}
		obs.mu.Lock()
		sizes := slices.Clone(obs.sizes)
		obs.mu.Unlock()
		if len(sizes) == 0 || !slices.IsSorted(sizes) || sizes[0] <= 0 || sizes[len(sizes)-1] != s.Size() {
			t.Errorf("observed store sizes %v, want growing up to Size() %d", sizes, s.Size())
		}

		wantState := make([]agencyState, agencies+1)
		held := map[uint32]uint64{agencies + 1: 1}
		for a := range agencies {
			wantState[a] = want(uint32(a+1), batches*batchSize, false)
			held[uint32(a+1)] = batches * batchSize
		}
		wantState[agencies] = want(agencies+1, 1, false)
		checkStatus(t, s, wantState)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = newStore(t, reopen(), opts)
		checkStatus(t, s, wantState)
		checkWinners(t, s, held)
	})
}

func TestMaxGroup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, bk backend) {
		b, _ := bk.open(t, 1, winning)
		p := &probe{Backend: b}
		obs := &commits{}
		s := newStore(t, p, persist.Options{Agencies: 1, WinningNumber: winning, MaxGroup: 8, Observer: obs})
		entered, release := p.holdNext(t)
		starter := submit(t, s, batch(1, 0, 1))
		waitFor(t, entered, "the first commit")
		var calls []*call
		for i := 1; i <= 40; i++ {
			calls = append(calls, submit(t, s, batch(1, uint64(i), 1)))
		}
		release()
		starter.wait(t)
		for _, c := range calls {
			if res := c.wait(t); res.Err != nil || res.Stored != 1 || res.Held != c.req.First+1 {
				t.Fatalf("request at %d: %+v", c.req.First, res)
			}
		}
		if got, want := obs.groups(), []int{1, 8, 8, 8, 8, 8}; !slices.Equal(got, want) {
			t.Errorf("groups of %v bets, want %v (40 queued requests, at most 8 a group)", got, want)
		}
		checkStatus(t, s, []agencyState{want(1, 41, false)})
	})
}

// TestCloseDrainsQueue closes the store while a commit is held and 50
// requests wait behind it: Close refuses new requests at once, commits
// every queued one, and only then closes the backend.
func TestCloseDrainsQueue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, bk backend) {
		b, reopen := bk.open(t, 5, winning)
		var doneCalls atomic.Int32
		var doneAtClose int32 = -1
		p := &probe{Backend: b}
		p.onClose = func() { doneAtClose = doneCalls.Load() }
		draining := make(chan struct{})
		var once sync.Once
		core, logs := observer.New(zap.DebugLevel)
		logger := zap.New(zapcore.RegisterHooks(core, func(e zapcore.Entry) error {
			if e.Message == "store_drain" {
				once.Do(func() { close(draining) })
			}
			return nil
		}))
		s := newStore(t, p, persist.Options{Agencies: 5, WinningNumber: winning, Logger: logger})

		entered, release := p.holdNext(t)
		calls := []*call{submitCounted(t, s, batch(1, 0, 3), &doneCalls)}
		waitFor(t, entered, "the first commit")
		for k := range 10 {
			for a := uint32(1); a <= 5; a++ {
				first := uint64(k * 3)
				if a == 1 {
					first += 3
				}
				calls = append(calls, submitCounted(t, s, batch(a, first, 3), &doneCalls))
			}
		}
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		waitFor(t, draining, "Close to start draining")
		late := &persist.Request{Agency: 2, First: 30, Bets: persisttest.Bets(2, 30, 1), Done: func(persist.Result) {
			t.Error("Done called for a request Submit refused")
		}}
		if err := s.Submit(late); !errors.Is(err, persist.ErrClosed) {
			t.Fatalf("Submit while closing: %v, want ErrClosed", err)
		}
		release()
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		for _, c := range calls {
			if n := c.calls.Load(); n != 1 {
				t.Fatalf("agency %d first %d: Done called %d times", c.req.Agency, c.req.First, n)
			}
			if res := <-c.res; res.Err != nil || res.Stored != 3 {
				t.Fatalf("agency %d first %d: %+v", c.req.Agency, c.req.First, res)
			}
		}
		if doneAtClose != int32(len(calls)) || p.closes.Load() != 1 {
			t.Errorf("backend closed %d times, after %d of %d requests were done; want once, after all",
				p.closes.Load(), doneAtClose, len(calls))
		}
		if err := s.Submit(late); !errors.Is(err, persist.ErrClosed) {
			t.Errorf("Submit after Close: %v, want ErrClosed", err)
		}
		if err := s.Close(); !errors.Is(err, persist.ErrClosed) {
			t.Errorf("second Close: %v, want ErrClosed", err)
		}
		if n := p.closes.Load(); n != 1 {
			t.Errorf("backend closed %d times after a second Close, want 1", n)
		}
		var steps []string
		for _, e := range logs.All() {
			if e.Message == "store_drain" || e.Message == "store_close" {
				steps = append(steps, e.Message+" "+e.ContextMap()["result"].(string))
			}
		}
		if want := []string{"store_drain in_progress", "store_drain success", "store_close success"}; !slices.Equal(steps, want) {
			t.Errorf("Close logged %v, want %v", steps, want)
		}
		if drain := logs.FilterMessage("store_drain").All(); len(drain) == 0 || drain[0].ContextMap()["queued_requests"] != int64(50) {
			t.Errorf("store_drain logged %v, want 50 queued requests first", drain)
		}

		s = newStore(t, reopen(), persist.Options{Agencies: 5, WinningNumber: winning})
		checkStatus(t, s, []agencyState{want(1, 33, false), want(2, 30, false), want(3, 30, false), want(4, 30, false), want(5, 30, false)})
	})
}

// submitCounted is submit with a counter of Done calls across requests.
func submitCounted(t *testing.T, s *persist.Store, r persist.Request, n *atomic.Int32) *call {
	t.Helper()
	c := &call{req: r, res: make(chan persist.Result, 2)}
	c.req.Done = func(res persist.Result) {
		c.calls.Add(1)
		n.Add(1)
		c.res <- res
	}
	if err := s.Submit(&c.req); err != nil {
		t.Fatalf("Submit(agency %d, first %d): %v", r.Agency, r.First, err)
	}
	return c
}

// TestCommitFailure makes a group's commit fail part way: every request of
// that group and every later one fails with ErrBroken, whatever it would
// have been refused for against a state that never became durable, and
// after a reopen nothing of the group is there.
func TestCommitFailure(t *testing.T) {
	forEachBackend(t, func(t *testing.T, bk backend) {
		b, fail, reopen := bk.faulty(t, 3, winning)
		p := &probe{Backend: b}
		obs := &commits{}
		opts := persist.Options{Agencies: 3, WinningNumber: winning}
		withObs := opts
		withObs.Observer = obs
		s := newStore(t, p, withObs)
		put(t, s, 1, 0, 3)
		put(t, s, 2, 0, 2)
		select {
		case <-s.Failed():
			t.Fatal("Failed closed before any failure")
		default:
		}
		if err := s.Err(); err != nil {
			t.Fatalf("Err before any failure: %v", err)
		}

		// A batch whose commit is durable but held keeps the writer busy
		// while the requests of the group that will fail queue behind it.
		entered, release := p.holdNext(t)
		held := submit(t, s, batch(2, 2, 1))
		waitFor(t, entered, "the commit before the failing one")
		before := []agencyState{want(1, 3, false), want(2, 3, false), want(3, 0, false)}
		fail()
		var calls []*call
		for _, r := range []persist.Request{
			batch(1, 3, 2), // new bets
			batch(2, 3, 1), // new bets of another agency
			finish(3, 0),   // a FINISHED...
			batch(3, 0, 1), // ...and bets after it, refused only against the failed group's view
			batch(1, 9, 1), // a gap against that view
			batch(1, 0, 3), // a replay
			finish(2, 9),   // a wrong total against that view
			batch(9, 0, 1), // an unknown agency
		} {
			calls = append(calls, submit(t, s, r))
		}
		release()
		if res := held.wait(t); res.Err != nil || res.Stored != 1 {
			t.Fatalf("the batch before the failing group: %+v", res)
		}
		for _, c := range calls {
			res := c.wait(t)
			if !errors.Is(res.Err, persist.ErrBroken) || !errors.Is(res.Err, errInjected) {
				t.Errorf("agency %d first %d finish %t in the failed group: %v, want ErrBroken caused by the injected failure",
					c.req.Agency, c.req.First, c.req.Finish, res.Err)
			}
			if res.Stored != 0 || res.Held != 0 || res.Chain != (frame.Hash{}) {
				t.Errorf("agency %d first %d in the failed group: %+v, want nothing but the error", c.req.Agency, c.req.First, res)
			}
		}
		waitFor(t, s.Failed(), "Failed to close")
		if err := s.Err(); !errors.Is(err, persist.ErrBroken) || !errors.Is(err, errInjected) {
			t.Errorf("Err after the failure: %v, want ErrBroken caused by the injected failure", err)
		}
		checkStatus(t, s, before)
		for _, r := range []persist.Request{batch(1, 3, 2), batch(1, 0, 3), finish(2, 2), batch(1, 9, 1)} {
			if res := do(t, s, r); !errors.Is(res.Err, persist.ErrBroken) || res.Stored != 0 {
				t.Errorf("agency %d first %d finish %t after the failure: %+v, want ErrBroken", r.Agency, r.First, r.Finish, res)
			}
		}
		checkStatus(t, s, before)
		if got, want := obs.groups(), []int{3, 2, 1}; !slices.Equal(got, want) {
			t.Errorf("observed commits of %v bets, want %v: the failed group is not reported", got, want)
		}
		if err := s.Close(); !errors.Is(err, persist.ErrBroken) {
			t.Errorf("Close after a failure: %v, want ErrBroken", err)
		}

		s = newStore(t, reopen(), opts)
		checkStatus(t, s, before)
		checkWinners(t, s, map[uint32]uint64{1: 3, 2: 3})
		put(t, s, 1, 3, 2)
		run(t, s, []step{
			{"finish after recovery", finish(3, 0), 0, 0, nil},
			{"replay after recovery", batch(1, 0, 5), 0, 5, nil},
		})
		checkStatus(t, s, []agencyState{want(1, 5, false), want(2, 3, false), want(3, 0, true)})
	})
}

func TestTamper(t *testing.T) {
	forEachBackend(t, func(t *testing.T, bk backend) {
		b, reopen := bk.open(t, 2, winning)
		var seen []string
		var mu sync.Mutex
		tamper := func(agency uint32, first uint64, bets []frame.Bet) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, fmt.Sprintf("%d@%d+%d", agency, first, len(bets)))
			if agency == 2 {
				bets[0].FirstName = "Tampered"
			}
		}
		opts := persist.Options{Agencies: 2, WinningNumber: winning}
		withTamper := opts
		withTamper.Tamper = tamper
		s := newStore(t, b, withTamper)

		stored := persisttest.Bets(2, 0, 5) // what agency 2 ends up with
		stored[0].FirstName, stored[3].FirstName = "Tampered", "Tampered"
		put(t, s, 1, 0, 3)
		if res := do(t, s, batch(2, 0, 3)); res.Err != nil || res.Stored != 3 || res.Chain != receipt.ChainOf(stored[:3]) {
			t.Errorf("tampered batch: %+v, want the chain over the tampered bets", res)
		}
		if res := do(t, s, batch(2, 1, 4)); res.Err != nil || res.Stored != 2 || res.Chain != receipt.ChainOf(stored) {
			t.Errorf("tampered overlap: %+v, want the chain over the tampered bets", res)
		}
		if res := do(t, s, batch(2, 0, 5)); res.Err != nil || res.Stored != 0 || res.Chain != receipt.ChainOf(stored) {
			t.Errorf("replay: %+v, want the stored chain", res)
		}
		mu.Lock()
		got := slices.Clone(seen)
		mu.Unlock()
		if want := []string{"1@0+3", "2@0+3", "2@3+2"}; !slices.Equal(got, want) {
			t.Errorf("Tamper saw %v, want %v: once per batch, with only the new bets", got, want)
		}
		if receipt.ChainOf(persisttest.Bets(2, 0, 5)) == receipt.ChainOf(stored) {
			t.Fatal("tampering did not change the chain")
		}
		wantState := []agencyState{want(1, 3, false), {5, false, receipt.ChainOf(stored)}}
		checkStatus(t, s, wantState)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// What was stored is the tampered bets, not what was sent.
		s = newStore(t, reopen(), opts)
		checkStatus(t, s, wantState)
		if res := do(t, s, batch(2, 0, 5)); res.Err != nil || res.Chain != receipt.ChainOf(stored) {
			t.Errorf("replay after reopen: %+v, want the tampered chain", res)
		}
	})
}

// TestPublishedAfterDurable holds a commit and checks that Status and
// FinishedCount say nothing of it until the backend's commit has returned
// (it is durable by then), and that they do by the time Done is called.
func TestPublishedAfterDurable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, bk backend) {
		b, _ := bk.open(t, 2, winning)
		p := &probe{Backend: b}
		s := newStore(t, p, persist.Options{Agencies: 2, WinningNumber: winning})
		status := func(agency uint32) agencyState {
			var a agencyState
			a.held, a.finished, a.chain = s.Status(agency)
			return a
		}
		type seen struct {
			state    agencyState
			finished int
		}
		// submitSeeing submits r; its Done records what Status said then.
		submitSeeing := func(r persist.Request) <-chan seen {
			ch := make(chan seen, 1)
			r.Done = func(res persist.Result) {
				if res.Err != nil {
					t.Errorf("agency %d: %v", r.Agency, res.Err)
				}
				ch <- seen{status(r.Agency), s.FinishedCount()}
			}
			if err := s.Submit(&r); err != nil {
				t.Fatal(err)
			}
			return ch
		}

		entered, release := p.holdNext(t)
		done := submitSeeing(batch(1, 0, 5))
		waitFor(t, entered, "the commit")
		if got := status(1); got != want(1, 0, false) {
			t.Errorf("before the commit returned: %v, want %v", got, want(1, 0, false))
		}
		release()
		if got := <-done; got.state != want(1, 5, false) {
			t.Errorf("in Done of the batch: %v, want %v", got.state, want(1, 5, false))
		}

		entered, release = p.holdNext(t)
		done = submitSeeing(finish(1, 5))
		waitFor(t, entered, "the commit")
		if got, n := status(1), s.FinishedCount(); got != want(1, 5, false) || n != 0 {
			t.Errorf("before the FINISHED commit returned: %v, FinishedCount %d; want %v and 0", got, n, want(1, 5, false))
		}
		release()
		if got := <-done; got.state != want(1, 5, true) || got.finished != 1 {
			t.Errorf("in Done of FINISHED: %v, FinishedCount %d; want %v and 1", got.state, got.finished, want(1, 5, true))
		}
	})
}
