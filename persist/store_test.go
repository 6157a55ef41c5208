package persist

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/frame"
)

// diskHook replaces the store's fsync: it counts syncs per file, can hold
// the first journal sync (the last step of a commit) until released and can
// fail chosen syncs.
type diskHook struct {
	mu      sync.Mutex
	syncs   map[string]int
	hold    chan struct{} // when set, the first journal sync waits until it is closed
	holding chan struct{} // closed once that sync is waiting
	delay   time.Duration
	fail    func(file string, n int) error // n counts syncs of file from 1
	started bool
}

// install makes s use h for every fsync. Call it before submitting: the
// channel send orders it before the writer's first use.
func (h *diskHook) install(s *Store) { s.sync = h.sync }

// holdFirst makes the first journal sync wait until release is called.
func (h *diskHook) holdFirst() {
	h.hold, h.holding = make(chan struct{}), make(chan struct{})
}

func (h *diskHook) release() { close(h.hold) }

func (h *diskHook) sync(f *os.File) error {
	name := filepath.Base(f.Name())
	h.mu.Lock()
	if h.syncs == nil {
		h.syncs = map[string]int{}
	}
	h.syncs[name]++
	n := h.syncs[name]
	wait := h.hold != nil && !h.started && name == JournalFile
	h.started = h.started || wait
	fail := h.fail
	h.mu.Unlock()
	if wait {
		close(h.holding)
		<-h.hold
	}
	time.Sleep(h.delay)
	if fail != nil {
		if err := fail(name, n); err != nil {
			return err
		}
	}
	return f.Sync()
}

func (h *diskHook) count(file string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.syncs[file]
}

// waitHolding waits until the writer is parked in the held sync, its
// request fully written but not yet acknowledged.
func (h *diskHook) waitHolding(t *testing.T) {
	t.Helper()
	select {
	case <-h.holding:
	case <-time.After(10 * time.Second):
		t.Fatal("writer never reached its first sync")
	}
}

// pendingReq is a submitted request whose Done records its results.
type pendingReq struct {
	Request
	calls atomic.Int32
	res   chan Result
}

func submit(t *testing.T, s *Store, r Request) *pendingReq {
	t.Helper()
	p := &pendingReq{Request: r, res: make(chan Result, 2)}
	p.Done = func(res Result) {
		p.calls.Add(1)
		p.res <- res
	}
	if err := s.Submit(&p.Request); err != nil {
		t.Fatalf("Submit(agency %d, first %d): %v", r.Agency, r.First, err)
	}
	return p
}

func (p *pendingReq) wait(t *testing.T) Result {
	t.Helper()
	select {
	case res := <-p.res:
		return res
	case <-time.After(10 * time.Second):
		t.Fatalf("Done not called for agency %d first %d", p.Agency, p.First)
		return Result{}
	}
}

func TestExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Agencies: 3, WinningNumber: 7574})
	batch := func(agency uint32, first uint64, n int) Request {
		return Request{Agency: agency, First: first, Bets: stream(agency, first, n)}
	}
	finish := func(agency uint32, total uint64) Request {
		return Request{Agency: agency, Finish: true, Total: total}
	}
	steps := []struct {
		name     string
		req      Request
		stored   int
		held     uint64
		err      error
		finished int // FinishedCount afterwards
	}{
		{"first batch", batch(1, 0, 5), 5, 5, nil, 0},
		{"replay", batch(1, 0, 5), 0, 5, nil, 0},
		{"replay with other content", Request{Agency: 1, First: 0, Bets: stream(3, 50, 5)}, 0, 5, nil, 0},
		{"replay of a middle slice", batch(1, 2, 3), 0, 5, nil, 0},
		{"overlap stores the tail", batch(1, 3, 4), 2, 7, nil, 0},
		{"gap", batch(1, 8, 2), 0, 7, ErrIndexGap, 0},
		{"empty batch at held", batch(1, 7, 0), 0, 7, nil, 0},
		{"empty batch past held", batch(1, 9, 0), 0, 7, ErrIndexGap, 0},
		{"other agency", batch(2, 0, 3), 3, 3, nil, 0},
		{"finish below held", finish(1, 6), 0, 7, ErrTotalMismatch, 0},
		{"finish above held", finish(1, 8), 0, 7, ErrTotalMismatch, 0},
		{"finish", finish(1, 7), 0, 7, nil, 1},
		{"finish repeated", finish(1, 7), 0, 7, nil, 1},
		{"finish repeated with another total", finish(1, 6), 0, 7, ErrTotalMismatch, 1},
		{"new bets after finish", batch(1, 7, 1), 0, 7, ErrAlreadyFinished, 1},
		{"overlap after finish", batch(1, 5, 3), 0, 7, ErrAlreadyFinished, 1},
		{"replay after finish", batch(1, 0, 7), 0, 7, nil, 1},
		{"gap after finish is still a gap", batch(1, 9, 1), 0, 7, ErrIndexGap, 1},
		{"agency 0", batch(0, 0, 1), 0, 0, ErrUnknownAgency, 1},
		{"agency past the last", batch(4, 0, 1), 0, 0, ErrUnknownAgency, 1},
		{"finish of an unknown agency", finish(4, 0), 0, 0, ErrUnknownAgency, 1},
		{"finish with no bets", finish(3, 0), 0, 0, nil, 2},
		{"second batch of agency 2", batch(2, 3, 2), 2, 5, nil, 2},
	}
	for _, st := range steps {
		res := do(t, s, st.req)
		if !errors.Is(res.Err, st.err) || (st.err == nil) != (res.Err == nil) {
			t.Errorf("%s: error %v, want %v", st.name, res.Err, st.err)
		}
		if res.Stored != st.stored || res.Held != st.held {
			t.Errorf("%s: Stored %d Held %d, want Stored %d Held %d", st.name, res.Stored, res.Held, st.stored, st.held)
		}
		if got := s.FinishedCount(); got != st.finished {
			t.Errorf("%s: FinishedCount %d, want %d", st.name, got, st.finished)
		}
		if held, _ := s.Status(st.req.Agency); st.err == nil && held != st.held {
			t.Errorf("%s: Status held %d, want %d", st.name, held, st.held)
		}
	}

	want := slicesConcat(
		tagged(1, stream(1, 0, 7)),
		tagged(2, stream(2, 0, 5)),
	)
	var got []Bet
	for b, err := range s.Bets() {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	sameBets(t, got, want)
	wantStatus := []string{"1:7:true", "2:5:false", "3:0:true", "finished=2"}
	sameStatus(t, status(s), wantStatus)
	if held, fin := s.Status(0); held != 0 || fin {
		t.Errorf("Status(0) = %d, %t; want 0, false", held, fin)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sameBets(t, readBets(t, dir), want)

	// Everything above, including FINISHED, survives a restart.
	s = openStore(t, dir, Options{Agencies: 3, WinningNumber: 7574})
	sameStatus(t, status(s), wantStatus)
	if res := do(t, s, finish(1, 7)); res.Err != nil {
		t.Errorf("repeated finish after restart: %v", res.Err)
	}
	if res := do(t, s, finish(1, 9)); !errors.Is(res.Err, ErrTotalMismatch) {
		t.Errorf("finish with another total after restart: %v, want ErrTotalMismatch", res.Err)
	}
	if res := do(t, s, batch(1, 7, 1)); !errors.Is(res.Err, ErrAlreadyFinished) {
		t.Errorf("new bets after finish and restart: %v, want ErrAlreadyFinished", res.Err)
	}
	if res := do(t, s, batch(2, 2, 4)); res.Err != nil || res.Stored != 1 || res.Held != 6 {
		t.Errorf("overlap after restart: %+v, want Stored 1 Held 6", res)
	}
	sameStatus(t, status(s), []string{"1:7:true", "2:6:false", "3:0:true", "finished=2"})
}

func slicesConcat(parts ...[]Bet) []Bet {
	var out []Bet
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestExactlyOnceWithinGroup queues requests that depend on each other so
// the writer commits them as one group.
func TestExactlyOnceWithinGroup(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Agencies: 3})
	h := &diskHook{}
	h.holdFirst()
	h.install(s)
	first := submit(t, s, Request{Agency: 3, First: 0, Bets: stream(3, 0, 1)})
	h.waitHolding(t)

	reqs := []struct {
		req    Request
		stored int
		held   uint64
		err    error
	}{
		{Request{Agency: 1, First: 0, Bets: stream(1, 0, 4)}, 4, 4, nil},
		{Request{Agency: 1, First: 0, Bets: stream(1, 0, 4)}, 0, 4, nil},
		{Request{Agency: 1, First: 2, Bets: stream(1, 2, 4)}, 2, 6, nil},
		{Request{Agency: 1, First: 7, Bets: stream(1, 7, 1)}, 0, 6, ErrIndexGap},
		{Request{Agency: 2, Finish: true, Total: 1}, 0, 0, ErrTotalMismatch},
		{Request{Agency: 1, Finish: true, Total: 6}, 0, 6, nil},
		{Request{Agency: 1, First: 6, Bets: stream(1, 6, 1)}, 0, 6, ErrAlreadyFinished},
		{Request{Agency: 1, Finish: true, Total: 6}, 0, 6, nil},
		{Request{Agency: 2, First: 0, Bets: stream(2, 0, 2)}, 2, 2, nil},
	}
	var pending []*pendingReq
	for _, r := range reqs {
		pending = append(pending, submit(t, s, r.req))
	}
	h.release()
	if res := first.wait(t); res.Err != nil || res.Stored != 1 {
		t.Fatalf("held request: %+v", res)
	}
	for i, p := range pending {
		res, want := p.wait(t), reqs[i]
		if !errors.Is(res.Err, want.err) || (want.err == nil) != (res.Err == nil) ||
			res.Stored != want.stored || res.Held != want.held {
			t.Errorf("request %d: got %+v, want Stored %d Held %d error %v", i, res, want.stored, want.held, want.err)
		}
	}
	if got := h.count(BetsFile); got != 2 {
		t.Errorf("bets.csv synced %d times, want 2 (one per group)", got)
	}
	if got := len(journalRecords(t, dir)); got != 2 {
		t.Errorf("journal has %d records, want 2 (one per group)", got)
	}
	sameStatus(t, status(s), []string{"1:6:true", "2:2:false", "3:1:false", "finished=1"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sameBets(t, readBets(t, dir), slicesConcat(tagged(3, stream(3, 0, 1)), tagged(1, stream(1, 0, 6)), tagged(2, stream(2, 0, 2))))
}

func TestGroupCommit(t *testing.T) {
	const (
		agencies  = 16
		batches   = 40
		batchSize = 5
		requests  = agencies * batches
	)
	dir := t.TempDir()
	s := openStore(t, dir, Options{Agencies: agencies})
	h := &diskHook{delay: 2 * time.Millisecond} // a disk whose fsync takes a while
	h.install(s)

	type tracked struct {
		calls atomic.Int32
		res   Result
	}
	all := make([][]*tracked, agencies)
	var done sync.WaitGroup
	done.Add(requests)
	var submitters sync.WaitGroup
	for a := range agencies {
		agency := uint32(a + 1)
		all[a] = make([]*tracked, batches)
		submitters.Go(func() {
			// Each agency pipelines its batches; the queue keeps their order.
			for k := range batches {
				tr := &tracked{}
				all[agency-1][k] = tr
				first := uint64(k * batchSize)
				err := s.Submit(&Request{Agency: agency, First: first, Bets: stream(agency, first, batchSize),
					Done: func(r Result) {
						tr.res = r
						if tr.calls.Add(1) == 1 {
							done.Done()
						}
					}})
				if err != nil {
					t.Errorf("Submit: %v", err)
					done.Done()
				}
			}
		})
	}
	submitters.Wait()
	done.Wait()
	syncs := h.count(BetsFile)
	journalSyncs := h.count(JournalFile)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for a := range agencies {
		for k, tr := range all[a] {
			if n := tr.calls.Load(); n != 1 {
				t.Fatalf("agency %d batch %d: Done called %d times", a+1, k, n)
			}
			if tr.res.Err != nil || tr.res.Stored != batchSize || tr.res.Held != uint64((k+1)*batchSize) {
				t.Fatalf("agency %d batch %d: %+v", a+1, k, tr.res)
			}
		}
	}
	got := byAgency(readBets(t, dir))
	for a := uint32(1); a <= agencies; a++ {
		sameBets(t, tagged(a, got[a]), tagged(a, stream(a, 0, batches*batchSize)))
	}
	t.Logf("%d requests committed with %d fsyncs of bets.csv and %d of the journal", requests, syncs, journalSyncs)
	if syncs > requests/10 {
		t.Errorf("%d fsyncs of bets.csv for %d requests; group commit should need far fewer", syncs, requests)
	}
	if journalSyncs != syncs {
		t.Errorf("journal synced %d times, bets.csv %d; want one each per group", journalSyncs, syncs)
	}
}

func TestMaxGroup(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Agencies: 1, MaxGroup: 8})
	h := &diskHook{}
	h.holdFirst()
	h.install(s)
	first := submit(t, s, Request{Agency: 1, First: 0, Bets: stream(1, 0, 1)})
	h.waitHolding(t)
	var pending []*pendingReq
	for i := 1; i <= 40; i++ {
		pending = append(pending, submit(t, s, Request{Agency: 1, First: uint64(i), Bets: stream(1, uint64(i), 1)}))
	}
	h.release()
	first.wait(t)
	for _, p := range pending {
		if res := p.wait(t); res.Err != nil || res.Stored != 1 {
			t.Fatalf("request first %d: %+v", p.First, res)
		}
	}
	// One group for the held request, then 40 queued ones in groups of 8.
	if got := h.count(BetsFile); got != 6 {
		t.Errorf("bets.csv synced %d times, want 6", got)
	}
	if got := len(journalRecords(t, dir)); got != 6 {
		t.Errorf("journal has %d records, want 6", got)
	}
}

var errInjected = errors.New("injected disk failure")

func TestWriteFailure(t *testing.T) {
	readOnly := func(t *testing.T, f **os.File) {
		ro, err := os.Open((*f).Name())
		if err != nil {
			t.Fatal(err)
		}
		orig := *f
		*f = ro
		t.Cleanup(func() { orig.Close() })
	}
	cases := []struct {
		name  string
		file  string
		setup func(t *testing.T, s *Store, h *diskHook) // runs while the writer is held
		cause error
	}{
		{"bets write", BetsFile, func(t *testing.T, s *Store, h *diskHook) { readOnly(t, &s.bets) }, syscall.EBADF},
		{"bets sync", BetsFile, func(t *testing.T, s *Store, h *diskHook) { h.fail = failSecond(BetsFile) }, errInjected},
		{"journal write", JournalFile, func(t *testing.T, s *Store, h *diskHook) { readOnly(t, &s.journal) }, syscall.EBADF},
		{"journal sync", JournalFile, func(t *testing.T, s *Store, h *diskHook) { h.fail = failSecond(JournalFile) }, errInjected},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{Agencies: 3})
			store(t, s, 1, 0, stream(1, 0, 3), 3)
			store(t, s, 2, 0, stream(2, 0, 2), 2)
			h := &diskHook{}
			h.holdFirst()
			h.install(s)
			first := submit(t, s, Request{Agency: 3, First: 0, Bets: stream(3, 0, 1)})
			h.waitHolding(t)
			// The held group is written; its sizes are what must remain.
			betsSize, journalSize := fileSize(t, dir, BetsFile), fileSize(t, dir, JournalFile)
			h.mu.Lock()
			tc.setup(t, s, h)
			h.mu.Unlock()
			// These four make up the failing group.
			ok1 := submit(t, s, Request{Agency: 1, First: 3, Bets: stream(1, 3, 2)})
			ok2 := submit(t, s, Request{Agency: 2, First: 2, Bets: stream(2, 2, 1)})
			gap := submit(t, s, Request{Agency: 1, First: 9, Bets: stream(1, 9, 1)})
			fin := submit(t, s, Request{Agency: 3, Finish: true, Total: 1})
			h.release()
			if res := first.wait(t); res.Err != nil {
				t.Fatalf("group before the failure: %v", res.Err)
			}

			for _, p := range []*pendingReq{ok1, ok2, fin} {
				res := p.wait(t)
				if !errors.Is(res.Err, tc.cause) || !strings.Contains(res.Err.Error(), tc.file) {
					t.Errorf("agency %d: error %v, want one naming %s caused by %v", p.Agency, res.Err, tc.file, tc.cause)
				}
				if res.Stored != 0 {
					t.Errorf("agency %d: Stored %d after a failed commit", p.Agency, res.Stored)
				}
			}
			if res := gap.wait(t); !errors.Is(res.Err, ErrIndexGap) {
				t.Errorf("gap request in the failed group: %v, want ErrIndexGap", res.Err)
			}
			// Nothing of the failed group is left on disk or in the state.
			s.mu.RLock()
			committed := s.committed
			s.mu.RUnlock()
			if got := fileSize(t, dir, BetsFile); got != betsSize || committed != betsSize {
				t.Errorf("bets.csv has %d bytes after the failure (%d committed), want %d", got, committed, betsSize)
			}
			if got := fileSize(t, dir, JournalFile); got != journalSize {
				t.Errorf("journal has %d bytes after the failure, want %d", got, journalSize)
			}
			wantStatus := []string{"1:3:false", "2:2:false", "3:1:false", "finished=0"}
			sameStatus(t, status(s), wantStatus)

			later := submit(t, s, Request{Agency: 1, First: 3, Bets: stream(1, 3, 2)})
			if res := later.wait(t); !errors.Is(res.Err, ErrBroken) || !errors.Is(res.Err, tc.cause) {
				t.Errorf("request after the failure: %v, want ErrBroken wrapping %v", res.Err, tc.cause)
			}
			// Close still closes the files, and reports that the store broke.
			if err := s.Close(); !errors.Is(err, ErrBroken) {
				t.Errorf("Close after a write failure = %v, want ErrBroken", err)
			}

			want := slicesConcat(tagged(1, stream(1, 0, 3)), tagged(2, stream(2, 0, 2)), tagged(3, stream(3, 0, 1)))
			sameBets(t, readBets(t, dir), want)
			s = openStore(t, dir, Options{Agencies: 3})
			sameStatus(t, status(s), wantStatus)
			store(t, s, 1, 3, stream(1, 3, 2), 2)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			sameBets(t, readBets(t, dir), append(want, tagged(1, stream(1, 3, 2))...))
		})
	}
}

// failSecond fails the second sync of file, the one of the group after the
// held one.
func failSecond(file string) func(string, int) error {
	return func(name string, n int) error {
		if name == file && n == 2 {
			return errInjected
		}
		return nil
	}
}

func TestCloseDrainsQueue(t *testing.T) {
	dir := t.TempDir()
	core, logs := observer.New(zap.DebugLevel)
	s, err := Open(dir, Options{Agencies: 5, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	h := &diskHook{}
	h.holdFirst()
	h.install(s)
	pending := []*pendingReq{submit(t, s, Request{Agency: 1, First: 0, Bets: stream(1, 0, 3)})}
	h.waitHolding(t)
	for k := range 10 {
		for a := uint32(1); a <= 5; a++ {
			first := uint64(k * 3)
			if a == 1 {
				first += 3
			}
			pending = append(pending, submit(t, s, Request{Agency: a, First: first, Bets: stream(a, first, 3)}))
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for {
		s.mu.RLock()
		c := s.closed
		s.mu.RUnlock()
		if c {
			break
		}
		time.Sleep(time.Millisecond)
	}
	late := &Request{Agency: 2, First: 30, Bets: stream(2, 30, 1), Done: func(Result) {
		t.Error("Done called for a request refused by Submit")
	}}
	if err := s.Submit(late); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit during Close: %v, want ErrClosed", err)
	}
	h.release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, p := range pending {
		if n := p.calls.Load(); n != 1 {
			t.Fatalf("agency %d first %d: Done called %d times", p.Agency, p.First, n)
		}
		if res := <-p.res; res.Err != nil || res.Stored != 3 {
			t.Fatalf("agency %d first %d: %+v", p.Agency, p.First, res)
		}
	}
	if err := s.Submit(late); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	got := byAgency(readBets(t, dir))
	for a := uint32(1); a <= 5; a++ {
		n := 30
		if a == 1 {
			n = 33
		}
		sameBets(t, tagged(a, got[a]), tagged(a, stream(a, 0, n)))
	}

	// Close says what it does, in the log line contract.
	var steps []string
	for _, e := range logs.All() {
		if e.Message == "store_commit" {
			continue
		}
		result, _ := e.ContextMap()["result"].(string)
		switch result {
		case "success", "fail", "in_progress":
		default:
			t.Errorf("log %q has result %q", e.Message, result)
		}
		steps = append(steps, e.Message+" "+result)
	}
	wantSteps := []string{
		"store_open success", "store_drain in_progress", "store_drain success",
		"file_sync success", "file_close success", "file_sync success", "file_close success",
		"store_close success",
	}
	if got := strings.Join(steps, ", "); got != strings.Join(wantSteps, ", ") {
		t.Errorf("log steps %s\nwant %s", got, strings.Join(wantSteps, ", "))
	}
	for _, e := range logs.FilterMessage("store_drain").All() {
		if q, ok := e.ContextMap()["queued_requests"]; ok && q != int64(50) {
			t.Errorf("store_drain reports %v queued requests, want 50", q)
		}
	}
}

func TestSubmitBusy(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Agencies: 1, QueueSize: 1})
	h := &diskHook{}
	h.holdFirst()
	h.install(s)
	r1 := submit(t, s, Request{Agency: 1, First: 0, Bets: stream(1, 0, 2)})
	h.waitHolding(t) // the writer took r1; the queue is empty
	r2 := submit(t, s, Request{Agency: 1, First: 2, Bets: stream(1, 2, 2)})
	refused := &Request{Agency: 1, First: 4, Bets: stream(1, 4, 2), Done: func(Result) {
		t.Error("Done called for a request refused with ErrBusy")
	}}
	if err := s.Submit(refused); !errors.Is(err, ErrBusy) {
		t.Fatalf("Submit with a full queue: %v, want ErrBusy", err)
	}
	h.release()
	for _, p := range []*pendingReq{r1, r2} {
		if res := p.wait(t); res.Err != nil || res.Stored != 2 {
			t.Fatalf("first %d: %+v", p.First, res)
		}
	}
	if res := do(t, s, Request{Agency: 1, First: 4, Bets: stream(1, 4, 2)}); res.Err != nil || res.Stored != 2 {
		t.Fatalf("request once the queue drained: %+v", res)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sameBets(t, readBets(t, dir), tagged(1, stream(1, 0, 6)))
}

func TestOpenOptions(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{Agencies: 0}); err == nil {
		t.Error("Open with 0 agencies succeeded")
	}
	s := openStore(t, t.TempDir(), Options{Agencies: 2, WinningNumber: 1234})
	if s.Agencies() != 2 || s.WinningNumber() != 1234 || s.Dir() == "" {
		t.Errorf("Agencies %d WinningNumber %d Dir %q", s.Agencies(), s.WinningNumber(), s.Dir())
	}
	if s.opts.QueueSize != DefaultQueueSize || s.opts.MaxGroup != DefaultMaxGroup {
		t.Errorf("defaults: QueueSize %d MaxGroup %d", s.opts.QueueSize, s.opts.MaxGroup)
	}
	// A store in a directory that does not exist yet creates it.
	nested := filepath.Join(t.TempDir(), "a", "b")
	s2 := openStore(t, nested, Options{Agencies: 1})
	store(t, s2, 1, 0, []frame.Bet{betAt(1, 0)}, 1)
	if fileSize(t, nested, BetsFile) == 0 {
		t.Error("bets.csv empty after a stored batch")
	}
}
