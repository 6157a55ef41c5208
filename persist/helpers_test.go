package persist_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/persist/persisttest"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
	"github.com/tp0/loteria/receipt"
)

// TestMain starts the PostgreSQL cluster the "postgres" backend takes a
// fresh database from, one per test (with CI=true a cluster that cannot
// start fails the run), then checks that no goroutine was left behind.
func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// winning is the winning number of every lottery in these tests.
const winning = persisttest.Winning

// errInjected is the failure a faulty backend reports.
var errInjected = errors.New("injected backend failure")

// backend is one persist.Backend implementation the suite runs against.
// Where backends promise different things, a field says which promise this
// one makes, and the test of the other promise says why it does not apply.
type backend struct {
	name string
	// open creates an empty store of agencies agencies drawing winning,
	// and returns reopen, which opens the same data again once the
	// backend it returned before has been closed.
	open func(t *testing.T, agencies int, winning uint16) (persist.Backend, func() persist.Backend)
	// faulty is open, but once fail is called the next commit fails after
	// writing as much of the group as the backend can before it reports.
	faulty func(t *testing.T, agencies int, winning uint16) (b persist.Backend, fail func(), reopen func() persist.Backend)
	// lossy is open, but once lose is called the next commit fails with
	// persist.ErrUnavailable, as when the connection to a database breaks:
	// before the group is durable (lostBefore) or after (lostAfter, an
	// answer lost on the way back). The store must stay up and reload
	// before planning again. nil for a crash-only backend, whose every
	// failed commit breaks the store (TestCommitFailure).
	lossy func(t *testing.T, agencies int, winning uint16) (b persist.Backend, lose func(when lossPoint), reopen func() persist.Backend)
	// shared says reopen may be called while the backend open returned is
	// still open: each is another server writing the same data, and the
	// database, not the writer, keeps each agency's index exact.
	shared bool
}

// lossPoint is where a lossy backend's commit loses its connection.
type lossPoint int

const (
	lostBefore lossPoint = iota + 1 // nothing of the group is durable
	lostAfter                       // all of it is, but its answer never came
)

// backends is every backend the suite checks; the file store comes first.
var backends = []backend{
	{
		name: "file",
		open: func(t *testing.T, agencies int, winning uint16) (persist.Backend, func() persist.Backend) {
			b, _, reopen := openFileBackend(t, agencies, winning)
			return b, reopen
		},
		faulty: openFileBackend,
		// lossy: nil, crash-only; shared: false, one server owns its directory.
	},
	{
		name: "memory",
		open: func(t *testing.T, agencies int, winning uint16) (persist.Backend, func() persist.Backend) {
			b, _, reopen := openMemBackend(t, agencies, winning)
			return b, reopen
		},
		faulty: func(t *testing.T, agencies int, winning uint16) (persist.Backend, func(), func() persist.Backend) {
			b, d, reopen := openMemBackend(t, agencies, winning)
			return b, func() { d.failNext(failBroken) }, reopen
		},
		lossy: func(t *testing.T, agencies int, winning uint16) (persist.Backend, func(lossPoint), func() persist.Backend) {
			b, d, reopen := openMemBackend(t, agencies, winning)
			return b, func(p lossPoint) {
				if p == lostBefore {
					d.failNext(failLostBefore)
				} else {
					d.failNext(failLostAfter)
				}
			}, reopen
		},
		// shared: false, it is not a persist.Watcher.
	},
	{
		name: "postgres",
		open: func(t *testing.T, agencies int, winning uint16) (persist.Backend, func() persist.Backend) {
			b, _, reopen := openPGBackend(t, agencies, winning)
			return b, reopen
		},
		faulty: func(t *testing.T, agencies int, winning uint16) (persist.Backend, func(), func() persist.Backend) {
			b, f, reopen := openPGBackend(t, agencies, winning)
			// A bug, not a lost connection: rows copied and agencies
			// updated, then the transaction rolls back and the store breaks.
			return b, func() { f.failAt("updated", errInjected) }, reopen
		},
		lossy: func(t *testing.T, agencies int, winning uint16) (persist.Backend, func(lossPoint), func() persist.Backend) {
			b, f, reopen := openPGBackend(t, agencies, winning)
			return b, func(p lossPoint) {
				if p == lostBefore {
					f.failAt("updated", errConnLost) // rolled back
				} else {
					f.failAt("committed", errConnLost) // COMMIT went through
				}
			}, reopen
		},
		shared: true,
	},
}

// forEachBackend runs test once per backend, as a subtest named after it.
func forEachBackend(t *testing.T, test func(t *testing.T, bk backend)) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) { test(t, bk) })
	}
}

// forEachSharedBackend is forEachBackend for tests of several servers on
// one store: a backend one server owns (shared false) is skipped, since it
// cannot be opened twice at once.
func forEachSharedBackend(t *testing.T, test func(t *testing.T, bk backend)) {
	forEachBackend(t, func(t *testing.T, bk backend) {
		if !bk.shared {
			t.Skipf("the %s backend is not shared (shared is false in the backends table): one writer owns its data", bk.name)
		}
		test(t, bk)
	})
}

// openFileBackend opens a file store in a new directory. Once fail is
// called, the next fsync of the journal fails: by then the group's rows
// and its record are written, so the backend must cut both back.
func openFileBackend(t *testing.T, agencies int, winning uint16) (persist.Backend, func(), func() persist.Backend) {
	t.Helper()
	dir := t.TempDir()
	var armed atomic.Bool
	faultySync := func(f *os.File) error {
		if filepath.Base(f.Name()) == filestore.JournalFile && armed.CompareAndSwap(true, false) {
			return errInjected
		}
		return f.Sync()
	}
	open := func(syncFile func(*os.File) error) persist.Backend {
		t.Helper()
		b, err := filestore.Open(dir, filestore.Options{Agencies: agencies, WinningNumber: winning, Sync: syncFile})
		if err != nil {
			t.Fatalf("open file store: %v", err)
		}
		t.Cleanup(func() { b.Close() }) // a second Close does nothing
		return b
	}
	return open(faultySync), func() { armed.Store(true) }, func() persist.Backend { return open(nil) }
}

// memData is what a memory backend holds; it outlives each backend opened
// over it, as a directory or a database does.
type memData struct {
	mu       sync.Mutex
	open     bool
	lottery  frame.Hash
	winning  uint16
	agencies []persist.Agency // chains owned here, handed out as clones
	rows     []row
	fail     failure // how the next commit fails; 0: it does not
	lost     bool    // a commit failed with ErrUnavailable: the writer may reload
}

// failure is how a memory backend's next commit fails.
type failure int

const (
	failBroken     failure = iota + 1 // errInjected, nothing applied: the store breaks
	failLostBefore                    // ErrUnavailable, nothing applied
	failLostAfter                     // ErrUnavailable, the group applied
)

// errLost is what a memory backend says when it plays a lost connection.
var errLost = fmt.Errorf("%w: memory backend: injected lost connection", persist.ErrUnavailable)

func (d *memData) failNext(f failure) {
	d.mu.Lock()
	d.fail = f
	d.mu.Unlock()
}

type row struct {
	agency uint32
	bet    frame.Bet
}

// memBackend keeps everything in memory. It checks each group against
// what it holds before applying it, so a writer that sends rows at the
// wrong index, a wrong HeldBefore or a chain that does not cover the rows
// fails the test instead of being stored.
type memBackend struct {
	d      *memData
	closed bool
}

func openMemBackend(t *testing.T, agencies int, winning uint16) (persist.Backend, *memData, func() persist.Backend) {
	t.Helper()
	d := &memData{winning: winning, agencies: make([]persist.Agency, agencies)}
	copy(d.lottery[:], fmt.Sprintf("memory lottery %p", d))
	for i := range d.agencies {
		d.agencies[i].Chain = receipt.NewChain()
	}
	open := func() persist.Backend {
		t.Helper()
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.open {
			t.Fatal("memory backend opened twice at once")
		}
		d.open = true
		return &memBackend{d: d}
	}
	return open(), d, open
}

func (m *memBackend) State() (*persist.State, error) {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	st := &persist.State{Lottery: m.d.lottery, Agencies: make([]persist.Agency, len(m.d.agencies))}
	for i, a := range m.d.agencies {
		a.Chain = a.Chain.Clone()
		st.Agencies[i] = a
	}
	return st, nil
}

func (m *memBackend) Commit(g *persist.Group) error {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	if m.closed {
		return errors.New("memory backend: commit after close")
	}
	switch m.d.fail {
	case failBroken:
		m.d.fail = 0
		return errInjected
	case failLostBefore:
		m.d.fail, m.d.lost = 0, true
		return errLost
	}
	// Replay the group on copies; apply nothing unless all of it holds.
	held := map[uint32]uint64{}
	chains := map[uint32]*receipt.Chain{}
	view := func(a uint32) *receipt.Chain {
		if chains[a] == nil {
			held[a], chains[a] = m.d.agencies[a-1].Held, m.d.agencies[a-1].Chain.Clone()
		}
		return chains[a]
	}
	for _, r := range g.Rows {
		c := view(r.Agency)
		if r.First != held[r.Agency] {
			return fmt.Errorf("memory backend: rows of agency %d start at %d, it holds %d", r.Agency, r.First, held[r.Agency])
		}
		for i := range r.Bets {
			c.Add(&r.Bets[i])
		}
		held[r.Agency] += uint64(len(r.Bets))
	}
	for _, c := range g.Changes {
		a := m.d.agencies[c.Agency-1]
		view(c.Agency)
		switch {
		case c.HeldBefore != a.Held:
			return fmt.Errorf("memory backend: agency %d HeldBefore %d, it holds %d", c.Agency, c.HeldBefore, a.Held)
		case c.Held != held[c.Agency]:
			return fmt.Errorf("memory backend: agency %d Held %d after its rows, change says %d", c.Agency, held[c.Agency], c.Held)
		case c.Chain.Sum() != chains[c.Agency].Sum():
			return fmt.Errorf("memory backend: agency %d chain differs from its rows", c.Agency)
		case c.Finish && (a.Finished || c.Total != c.Held):
			return fmt.Errorf("memory backend: agency %d finishes with %d of %d (finished before: %t)", c.Agency, c.Total, c.Held, a.Finished)
		}
	}
	if len(held) != len(g.Changes) {
		return fmt.Errorf("memory backend: rows for %d agencies, changes for %d", len(held), len(g.Changes))
	}
	for _, r := range g.Rows {
		for _, b := range r.Bets {
			m.d.rows = append(m.d.rows, row{r.Agency, b})
		}
	}
	for _, c := range g.Changes {
		a := &m.d.agencies[c.Agency-1]
		a.Held, a.Chain = c.Held, chains[c.Agency]
		if c.Finish {
			a.Finished, a.Total = true, c.Total
		}
	}
	if m.d.fail == failLostAfter {
		m.d.fail, m.d.lost = 0, true
		return errLost
	}
	return nil
}

// Reload is for after a lost commit only: no other writer shares a memory
// backend, so a writer reloading at any other time has a bug.
func (m *memBackend) Reload(ids []uint32) ([]persist.Agency, error) {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	if !m.d.lost {
		return nil, errors.New("memory backend: reload, but no commit was lost and no other writer exists")
	}
	out := make([]persist.Agency, len(ids))
	for i, a := range ids {
		out[i] = m.d.agencies[a-1]
		out[i].Chain = out[i].Chain.Clone()
	}
	return out, nil
}

func (m *memBackend) Winners() (map[uint32][]string, error) {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	out := map[uint32][]string{}
	for _, r := range m.d.rows {
		if r.bet.Number == m.d.winning {
			out[r.agency] = append(out[r.agency], r.bet.Document)
		}
	}
	return out, nil
}

func (m *memBackend) Size() int64 {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	return int64(len(m.d.rows))
}

func (m *memBackend) Close() error {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	if !m.closed {
		m.closed, m.d.open = true, false
	}
	return nil
}

// probe wraps a backend to hold a commit while a test queues requests,
// and to see when the backend is closed.
type probe struct {
	persist.Backend
	mu      sync.Mutex
	gate    chan struct{} // the next commit waits until it is closed
	entered chan struct{} // closed once that commit is waiting
	onClose func()
	closes  atomic.Int32
}

// holdNext makes the next commit, once the backend has made it durable,
// wait until release is called before it returns to the writer. The
// test's cleanup releases it too.
func (p *probe) holdNext(t *testing.T) (entered <-chan struct{}, release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	gate, in := make(chan struct{}), make(chan struct{})
	p.gate, p.entered = gate, in
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return in, release
}

func (p *probe) Commit(g *persist.Group) error {
	p.mu.Lock()
	gate, in := p.gate, p.entered
	p.gate, p.entered = nil, nil
	p.mu.Unlock()
	err := p.Backend.Commit(g)
	if gate != nil {
		close(in)
		<-gate
	}
	return err
}

func (p *probe) Close() error {
	if p.onClose != nil {
		p.onClose()
	}
	p.closes.Add(1)
	return p.Backend.Close()
}

// waitFor fails the test unless ch is closed within a generous bound.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// commits is a fake Observer recording every group commit.
type commits struct {
	mu    sync.Mutex
	bets  []int
	sizes []int64
}

func (c *commits) Committed(took time.Duration, bets int, storeBytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bets = append(c.bets, bets)
	c.sizes = append(c.sizes, storeBytes)
}

func (c *commits) groups() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.bets...)
}

// newStore starts a writer over b; the test's cleanup closes it.
func newStore(t *testing.T, b persist.Backend, opts persist.Options) *persist.Store {
	t.Helper()
	s, err := persist.New(b, opts)
	if err != nil {
		t.Fatalf("persist.New: %v", err)
	}
	t.Cleanup(func() { s.Close() }) // the test checks the Close it cares about
	return s
}

// call is a submitted request: its result arrives on res.
type call struct {
	req   persist.Request
	res   chan persist.Result
	calls atomic.Int32
}

// submit queues r and returns the call to wait on.
func submit(t *testing.T, s *persist.Store, r persist.Request) *call {
	t.Helper()
	c := &call{req: r, res: make(chan persist.Result, 2)}
	c.req.Done = func(res persist.Result) {
		c.calls.Add(1)
		c.res <- res
	}
	if err := s.Submit(&c.req); err != nil {
		t.Fatalf("Submit(agency %d, first %d): %v", r.Agency, r.First, err)
	}
	return c
}

// wait returns the call's result.
func (c *call) wait(t *testing.T) persist.Result {
	t.Helper()
	select {
	case res := <-c.res:
		return res
	case <-time.After(10 * time.Second):
		t.Fatalf("Done not called for agency %d first %d", c.req.Agency, c.req.First)
		return persist.Result{}
	}
}

// do submits r and waits for its result.
func do(t *testing.T, s *persist.Store, r persist.Request) persist.Result {
	t.Helper()
	return submit(t, s, r).wait(t)
}

func batch(agency uint32, first uint64, n int) persist.Request {
	return persist.Request{Agency: agency, First: first, Bets: persisttest.Bets(agency, first, n)}
}

func finish(agency uint32, total uint64) persist.Request {
	return persist.Request{Agency: agency, Finish: true, Total: total}
}

// put stores bets [first, first+n) of agency's stream and fails the test
// unless all n are new.
func put(t *testing.T, s *persist.Store, agency uint32, first uint64, n int) persist.Result {
	t.Helper()
	res := do(t, s, batch(agency, first, n))
	if res.Err != nil || res.Stored != n || res.Held != first+uint64(n) {
		t.Fatalf("batch of agency %d at %d of %d bets: %+v, want all stored", agency, first, n, res)
	}
	return res
}

// winnersOf is the winning documents of each agency's first held[a] bets.
func winnersOf(held map[uint32]uint64) map[uint32][]string {
	out := map[uint32][]string{}
	for a, n := range held {
		for _, b := range persisttest.Bets(a, 0, int(n)) {
			if b.Number == winning {
				out[a] = append(out[a], b.Document)
			}
		}
	}
	return out
}

// agencyState is what Status says about one agency.
type agencyState struct {
	held     uint64
	finished bool
	chain    frame.Hash
}

func (a agencyState) String() string {
	return fmt.Sprintf("held %d finished %t chain %x", a.held, a.finished, a.chain[:4])
}

// want is the state of an agency holding the first held bets of its stream.
func want(agency uint32, held uint64, finished bool) agencyState {
	return agencyState{held, finished, receipt.ChainOf(persisttest.Bets(agency, 0, int(held)))}
}

// checkStatus fails the test unless every agency's Status and the
// FinishedCount match want (index agency-1).
func checkStatus(t *testing.T, s *persist.Store, want []agencyState) {
	t.Helper()
	finished := 0
	for i, w := range want {
		var got agencyState
		got.held, got.finished, got.chain = s.Status(uint32(i + 1))
		if got != w {
			t.Errorf("agency %d: %v, want %v", i+1, got, w)
		}
		if w.finished {
			finished++
		}
	}
	if got := s.FinishedCount(); got != finished {
		t.Errorf("FinishedCount %d, want %d", got, finished)
	}
}

// checkWinners fails the test unless the store's winners are those of the
// agencies' first held bets.
func checkWinners(t *testing.T, s *persist.Store, held map[uint32]uint64) {
	t.Helper()
	got, err := s.Winners()
	if err != nil {
		t.Fatalf("Winners: %v", err)
	}
	wantW := winnersOf(held)
	for a := range s.Agencies() + 2 { // and the agencies just outside 1..N
		g, w := got[uint32(a)], wantW[uint32(a)]
		if !slices.Equal(g, w) {
			t.Errorf("winners of agency %d: %q, want %q", a, g, w)
		}
	}
	if len(got) > len(wantW) {
		t.Errorf("winners for %d agencies, want %d: %v", len(got), len(wantW), got)
	}
}
