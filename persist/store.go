// Package persist is the bet store's single writer: one goroutine takes
// every queued request, applies the exactly-once index rules, extends each
// agency's hash chain, and commits the group through a Backend in one
// durable step, so a request is reported done only once it is durable.
// Backends (a data directory, PostgreSQL) live in subpackages.
package persist

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/receipt"
)

// DefaultMaxGroup is the most requests committed together by default.
const DefaultMaxGroup = 4096

// maxStale is how many times in a row a group is planned again after
// another server changed its agencies first.
const maxStale = 8

// Errors a Request can end with; match them with errors.Is.
var (
	ErrIndexGap        = errors.New("batch starts after the last bet held")
	ErrAlreadyFinished = errors.New("agency already finished")
	ErrTotalMismatch   = errors.New("finished total differs from the bets held")
	ErrUnknownAgency   = errors.New("agency outside 1..agencies")
	ErrClosed          = errors.New("store closed")
	ErrBroken          = errors.New("store stopped after a write failure")
	ErrStale           = errors.New("another server changed the agency first")
	// ErrUnavailable (wrapped by a backend) means the database could not be
	// reached or the commit's outcome is unknown: the group's requests fail,
	// but the store stays up, reloads the agencies involved before it plans
	// again, and later requests succeed once the database is back.
	ErrUnavailable = errors.New("storage unavailable")
	// ErrUnstorable is the cause of a BetError.
	ErrUnstorable = errors.New("bet cannot be kept by this store")
)

// BetError says a batch was refused because the backend cannot hold one
// of its bets; nothing of the batch is stored.
type BetError struct {
	Index uint64 // stream index of the first bet the backend cannot hold
	Err   error  // why, wrapping ErrUnstorable
}

func (e *BetError) Error() string { return fmt.Sprintf("bet %d: %v", e.Index, e.Err) }

func (e *BetError) Unwrap() error { return e.Err }

// Backend keeps bets durably. The Store calls it from its writer goroutine
// only, except Winners and Size, which may be called from any goroutine.
type Backend interface {
	// State is the durable state recovered when the backend was opened.
	State() (*State, error)
	// Commit makes a group durable, all of it or none of it. ErrStale
	// (wrapped) means another writer got there first and nothing was
	// stored: the writer reloads and plans again. ErrUnavailable (wrapped)
	// means the backend could not be reached or the outcome is unknown: the
	// group's requests fail, retryably, and its agencies are reloaded
	// before anything is planned for them. Any other error breaks the store.
	Commit(g *Group) error
	// Reload returns the durable state of the named agencies, in the order
	// named: after ErrStale or ErrUnavailable, and on Refresh.
	Reload(agencies []uint32) ([]Agency, error)
	// Winners returns every agency's winning documents in stream order.
	Winners() (map[uint32][]string, error)
	// Size is how many bytes the store takes, for metrics.
	Size() int64
	// Close syncs and releases everything.
	Close() error
}

// DrawKeeper is a Backend that keeps the draw's signed statement beside
// the bets, so anyone auditing the store later can check it.
type DrawKeeper interface {
	// SaveDraw keeps statement unless the store already holds one (another
	// server drew first, or this one before a restart) and returns the
	// statement of record, which every server publishes. A backend may let
	// a signed statement of the same draw (same leaves and root) replace
	// the one it holds, as the file store does after a key change.
	SaveDraw(statement []byte) ([]byte, error)
}

// BetChecker is a Backend that cannot hold every bet the protocol accepts
// (PostgreSQL's text holds no NUL byte): the writer asks it about each new
// bet before planning it, and refuses the batch with a BetError.
type BetChecker interface {
	CheckBet(b *frame.Bet) error
}

// Watcher is a Backend shared by several servers that tells what the others
// changed, so that this server's view and its draw follow theirs.
type Watcher interface {
	// Changed is signalled (it has room for one signal) when TakeChanges
	// has something new.
	Changed() <-chan struct{}
	// TakeChanges returns, and forgets, everything noticed since the last call.
	TakeChanges() Changes
}

// HealthChecker is a Backend that can tell, without a request, that it
// cannot reach its database (its listener lost the connection, say).
type HealthChecker interface {
	// Health is nil while the backend looks reachable, or an error
	// wrapping ErrUnavailable.
	Health() error
}

// Changes are what other servers did, merged since the last look.
type Changes struct {
	Agencies []uint32 // agencies whose bets or FINISHED other servers recorded, ascending
	All      bool     // notices may have been missed (the listener reconnected): any agency may have changed
	Drawn    bool     // another server saved the draw's statement
}

// Merge adds o to c.
func (c *Changes) Merge(o Changes) {
	c.All = c.All || o.All
	c.Drawn = c.Drawn || o.Drawn
	if len(o.Agencies) == 0 {
		return
	}
	c.Agencies = append(c.Agencies, o.Agencies...)
	slices.Sort(c.Agencies)
	c.Agencies = slices.Compact(c.Agencies)
}

// Empty reports whether c says nothing changed.
func (c *Changes) Empty() bool { return !c.All && !c.Drawn && len(c.Agencies) == 0 }

// State is what a backend holds.
type State struct {
	Lottery  frame.Hash // the lottery's id (receipt.LotteryID)
	Agencies []Agency   // index agency-1
}

// Agency is the durable progress of one agency.
type Agency struct {
	Held     uint64
	Finished bool
	Total    uint64         // bets the agency finished with
	Chain    *receipt.Chain // over the Held bets; never nil
}

// Group is one commit: the rows to append and every agency it changes.
type Group struct {
	Rows    []Rows
	Changes []Change
	// Finished is set by the Commit of a backend shared by several servers
	// when the group finishes an agency: every agency whose FINISHED is on
	// record once the group is, so that the writer counts what other
	// servers just recorded before its own FINISHED is answered.
	Finished []uint32
}

// Rows are bets of one agency to append, at stream indexes First onwards.
type Rows struct {
	Agency uint32
	First  uint64
	Bets   []frame.Bet
}

// Change is one agency's new progress; HeldBefore is what the writer
// believed it held, for backends shared by several servers.
type Change struct {
	Agency     uint32
	HeldBefore uint64
	Held       uint64
	Chain      *receipt.Chain // state after Held bets
	Finish     bool           // the agency finishes in this group
	Total      uint64
}

// Observer is told about every group commit; it is called from the writer
// goroutine and must not block.
type Observer interface {
	Committed(took time.Duration, bets int, storeBytes int64)
}

// Options configure a Store.
type Options struct {
	Agencies      int    // agencies of the lottery, numbered 1..Agencies
	WinningNumber uint16 // a bet wins when its number equals this
	MaxGroup      int    // most requests committed together
	Logger        *zap.Logger
	Observer      Observer
	// Tamper, when set, may change a batch's bets after they were decoded
	// and before they are chained and written; tests use it to prove that
	// agencies notice.
	Tamper func(agency uint32, first uint64, bets []frame.Bet)
}

// Request asks the writer to store a batch, or, with Finish, to record that
// the agency has finished with Total bets.
type Request struct {
	Agency uint32
	First  uint64      // stream index of Bets[0]
	Bets   []frame.Bet // stored all or nothing
	Finish bool
	Total  uint64
	// Done is called exactly once, from the writer goroutine, after the
	// request is durable or has failed; it must not block.
	Done func(Result)
}

// Result is how a Request ended.
type Result struct {
	Stored int        // bets this request added (0 for a replay of held bets)
	Held   uint64     // bets held for the agency afterwards
	Chain  frame.Hash // chain value over those Held bets
	Err    error
	// OthersFinished, on a FINISHED's result from a shared backend, names
	// the agencies whose FINISHED other servers recorded and this writer
	// learned of by committing it; Status already shows them finished.
	OthersFinished []uint32
}

// Store is the single writer over a Backend.
type Store struct {
	backend Backend
	opts    Options
	log     *zap.Logger
	lottery frame.Hash

	qmu    sync.Mutex
	queue  []*Request
	wake   chan struct{}
	closed bool
	done   chan struct{}
	failed chan struct{} // closed when a commit fails

	mu          sync.RWMutex // guards the published state below
	published   []published
	nFinished   int
	broken      error
	unavailable error // the last commit or reload could not reach the database

	refreshes []refresh // guarded by qmu

	// Owned by the writer goroutine.
	agencies []Agency
	suspect  map[uint32]bool // agencies whose cached view may differ from the backend's
	checker  BetChecker
	shared   bool // the backend is a Watcher: other servers write it too
}

// refresh asks the writer to reload agencies (all of them when nil).
type refresh struct {
	agencies []uint32
	done     chan error
}

type published struct {
	held     uint64
	finished bool
	chain    frame.Hash
}

// New starts the writer over an opened backend.
func New(b Backend, opts Options) (*Store, error) {
	if opts.Agencies < 1 {
		return nil, fmt.Errorf("open store: agencies must be at least 1, got %d", opts.Agencies)
	}
	if opts.MaxGroup <= 0 {
		opts.MaxGroup = DefaultMaxGroup
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	st, err := b.State()
	if err != nil {
		return nil, err
	}
	if len(st.Agencies) != opts.Agencies {
		return nil, fmt.Errorf("open store: backend holds %d agencies, want %d", len(st.Agencies), opts.Agencies)
	}
	s := &Store{
		backend:   b,
		opts:      opts,
		log:       opts.Logger,
		lottery:   st.Lottery,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		failed:    make(chan struct{}),
		published: make([]published, opts.Agencies),
		agencies:  st.Agencies,
		suspect:   map[uint32]bool{},
	}
	s.checker, _ = b.(BetChecker)
	_, s.shared = b.(Watcher)
	for i := range s.agencies {
		s.publish(uint32(i+1), &s.agencies[i])
	}
	go s.run()
	return s, nil
}

func (s *Store) publish(agency uint32, a *Agency) {
	p := &s.published[agency-1]
	if a.Finished && !p.finished {
		s.nFinished++
	}
	*p = published{held: a.Held, finished: a.Finished, chain: a.Chain.Sum()}
}

// Agencies is how many agencies the lottery has.
func (s *Store) Agencies() int { return s.opts.Agencies }

// WinningNumber is the lottery's winning number.
func (s *Store) WinningNumber() uint16 { return s.opts.WinningNumber }

// Lottery is the lottery's id, which receipts and the commitment carry.
func (s *Store) Lottery() frame.Hash { return s.lottery }

// Status says how many bets of agency are durable, whether its FINISHED is
// on record, and the chain value over those bets. An agency outside
// 1..Agencies reports zero values.
func (s *Store) Status(agency uint32) (held uint64, finished bool, chain frame.Hash) {
	if agency < 1 || int(agency) > s.opts.Agencies {
		return 0, false, frame.Hash{}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.published[agency-1]
	return p.held, p.finished, p.chain
}

// FinishedCount is how many distinct agencies have finished, durably.
func (s *Store) FinishedCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.nFinished
}

// Winners returns every agency's winning documents, in stream order.
func (s *Store) Winners() (map[uint32][]string, error) { return s.backend.Winners() }

// SaveDraw keeps the draw's statement durably, when the backend can, and
// returns the statement of record (see DrawKeeper).
func (s *Store) SaveDraw(statement []byte) ([]byte, error) {
	k, ok := s.backend.(DrawKeeper)
	if !ok {
		return statement, nil
	}
	return k.SaveDraw(statement)
}

// Changed is signalled when other servers sharing the backend changed
// something (see TakeChanges); it is nil, and so never ready, for a backend
// no other server writes.
func (s *Store) Changed() <-chan struct{} {
	if w, ok := s.backend.(Watcher); ok {
		return w.Changed()
	}
	return nil
}

// TakeChanges returns what other servers changed since the last call.
func (s *Store) TakeChanges() Changes {
	if w, ok := s.backend.(Watcher); ok {
		return w.TakeChanges()
	}
	return Changes{}
}

// Refresh asks the writer to reload agencies (every agency when nil) from
// the backend, so that Status shows what other servers stored. The channel
// gets nil once the new state is published, or the error that prevented it.
func (s *Store) Refresh(agencies []uint32) <-chan error {
	done := make(chan error, 1)
	if !s.shared {
		done <- errors.New("refresh: no other server writes this store")
		return done
	}
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		done <- ErrClosed
		return done
	}
	s.refreshes = append(s.refreshes, refresh{agencies: slices.Clone(agencies), done: done})
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return done
}

// Unavailable is the error of the last commit or reload if the backend
// could not be reached then (nil once one succeeds again), or else what
// the backend says of its own health (HealthChecker).
func (s *Store) Unavailable() error {
	s.mu.RLock()
	err := s.unavailable
	s.mu.RUnlock()
	if err != nil {
		return err
	}
	if h, ok := s.backend.(HealthChecker); ok {
		return h.Health()
	}
	return nil
}

// Size is how many bytes the backend takes.
func (s *Store) Size() int64 { return s.backend.Size() }

// Failed is closed once a commit has failed; the store then refuses every
// request and its owner should stop (and be restarted to recover).
func (s *Store) Failed() <-chan struct{} { return s.failed }

// Err is the failure that closed Failed, or nil.
func (s *Store) Err() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.broken
}

// Submit queues r for the writer; it never blocks. It fails with ErrClosed
// after Close, and then Done is not called. The queue has no fixed bound:
// each connection has at most its window of requests in it.
func (s *Store) Submit(r *Request) error {
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return ErrClosed
	}
	s.queue = append(s.queue, r)
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// Close stops taking requests, lets the writer commit everything queued,
// then closes the backend. It logs each step.
func (s *Store) Close() error {
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return ErrClosed
	}
	s.closed = true
	queued := len(s.queue)
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	s.log.Info("store_drain", logging.InProgress, zap.Int("queued_requests", queued))
	<-s.done
	s.log.Info("store_drain", logging.Success)
	err := errors.Join(s.Err(), s.backend.Close())
	if err != nil {
		s.log.Error("store_close", logging.Fail, zap.Error(err))
		return err
	}
	s.log.Info("store_close", logging.Success)
	return nil
}

// run is the writer goroutine: it takes everything queued and commits it
// in groups of at most MaxGroup requests.
func (s *Store) run() {
	defer close(s.done)
	var spare []*Request
	defer s.endRefreshes()
	for range s.wake {
		s.qmu.Lock()
		taken, closed, refreshes := s.queue, s.closed, s.refreshes
		s.queue, s.refreshes = spare, nil
		s.qmu.Unlock()
		s.refresh(refreshes)
		for batch := taken; len(batch) > 0; {
			n := min(len(batch), s.opts.MaxGroup)
			s.commit(batch[:n])
			batch = batch[n:]
		}
		clear(taken)
		spare = taken[:0]
		if closed {
			s.qmu.Lock()
			empty := len(s.queue) == 0 && len(s.refreshes) == 0
			s.qmu.Unlock()
			if empty {
				return
			}
		}
	}
}

// endRefreshes answers the refreshes asked for after the writer stopped.
func (s *Store) endRefreshes() {
	s.qmu.Lock()
	left := s.refreshes
	s.refreshes = nil
	s.qmu.Unlock()
	for _, r := range left {
		r.done <- ErrClosed
	}
}

// refresh marks the agencies the refreshes name as suspect, reloads every
// suspect agency and tells each refresh how it went.
func (s *Store) refresh(refreshes []refresh) {
	if len(refreshes) == 0 {
		return
	}
	for _, r := range refreshes {
		if r.agencies == nil {
			for a := range s.agencies {
				s.suspect[uint32(a+1)] = true
			}
		}
		for _, a := range r.agencies {
			if a >= 1 && int(a) <= len(s.agencies) {
				s.suspect[a] = true
			}
		}
	}
	err := s.Err()
	if err == nil {
		err = s.reloadSuspects()
	}
	for _, r := range refreshes {
		r.done <- err
	}
}

// reloadSuspects reloads the agencies whose cached view may be wrong: after
// a commit that could not reach the database (it may have committed before
// the connection broke) and when other servers changed them. A reload that
// fails for any reason but ErrUnavailable breaks the store.
func (s *Store) reloadSuspects() error {
	if len(s.suspect) == 0 {
		return nil
	}
	ids := make([]uint32, 0, len(s.suspect))
	for a := range s.suspect {
		ids = append(ids, a)
	}
	slices.Sort(ids)
	if err := s.reload(ids); err != nil {
		if errors.Is(err, ErrUnavailable) {
			s.setUnavailable(err)
			return err
		}
		s.fail(fmt.Errorf("reload agencies: %w", err), 0)
		return s.Err()
	}
	clear(s.suspect)
	s.setUnavailable(nil)
	return nil
}

// setUnavailable records whether the backend could be reached, logging the
// moments it went away and came back.
func (s *Store) setUnavailable(err error) {
	s.mu.Lock()
	was := s.unavailable
	s.unavailable = err
	s.mu.Unlock()
	switch {
	case err != nil && was == nil:
		s.log.Warn("store_unavailable", logging.Fail, zap.Error(err),
			zap.String("next", "requests fail with a storage error until the backend answers again"))
	case err == nil && was != nil:
		s.log.Info("store_unavailable", logging.Success, zap.String("state", "backend reachable again"))
	}
}

// pending is a group's view of one agency before the commit is durable.
// Its chain is the agency's own, extended in place: a failed commit breaks
// the store and a stale one reloads the agency, so neither keeps it.
type pending struct {
	before  uint64
	held    uint64
	chain   *receipt.Chain
	finish  bool
	total   uint64
	changed bool
}

func (s *Store) commit(group []*Request) {
	// A broken store plans nothing: its agencies' chains may hold bets of
	// the failed group, and every request fails the same way. Suspect
	// agencies are reloaded first; while that fails the group fails with it.
	err := s.Err()
	if err == nil {
		err = s.reloadSuspects()
	}
	if err != nil {
		for _, r := range group {
			r.Done(Result{Err: err})
		}
		return
	}
	rechecked := false
	for attempt := 0; ; attempt++ {
		results, g, views, stored := s.plan(group)
		var err error
		if s.shared && !rechecked {
			// A refusal planned against a view another server may have
			// moved on from (a gap, a total that differs) is checked again
			// against the backend before any agency hears it.
			if ids := refused(group, results, g); len(ids) > 0 {
				rechecked = true
				if err = s.reload(ids); err == nil {
					continue
				}
				for _, a := range ids {
					s.suspect[a] = true
				}
			}
		}
		if err == nil && len(g.Changes) > 0 {
			start := time.Now()
			err = s.backend.Commit(g)
			if err == nil && s.opts.Observer != nil {
				s.opts.Observer.Committed(time.Since(start), stored, s.backend.Size())
			}
			if err == nil {
				if ce := s.log.Check(zap.DebugLevel, "store_commit"); ce != nil {
					ce.Write(logging.Success, zap.Int("requests", len(group)), zap.Int("bets", stored),
						zap.Duration("took", time.Since(start)))
				}
			}
		}
		if errors.Is(err, ErrStale) {
			rerr := s.reload(changed(g))
			switch {
			case rerr == nil && attempt < maxStale:
				continue
			case rerr == nil:
				// Other servers keep winning the race for these agencies:
				// the requests fail with a retryable error, nothing breaks.
				err = fmt.Errorf("%w: %d attempts in a row found the agencies changed by another server: %w",
					ErrUnavailable, attempt+1, err)
			case errors.Is(rerr, ErrUnavailable):
				err = rerr
			default:
				err = fmt.Errorf("%w; reloading its agencies failed: %w", err, rerr)
			}
		}
		switch {
		case err == nil:
			s.mu.Lock()
			for a, p := range views {
				if !p.changed {
					continue
				}
				ag := &s.agencies[a-1]
				ag.Held, ag.Chain = p.held, p.chain
				if p.finish {
					ag.Finished, ag.Total = true, p.total
				}
				s.publish(a, ag)
			}
			s.mu.Unlock()
			if len(g.Changes) > 0 {
				s.setUnavailable(nil)
			}
			if learned := s.learnFinished(g.Finished); len(learned) > 0 {
				for i, r := range group {
					if r.Finish && results[i].Err == nil {
						results[i].OthersFinished = learned
					}
				}
			}
		case errors.Is(err, ErrUnavailable):
			// The group may or may not be durable (a COMMIT whose answer was
			// lost): its agencies' chains were extended in place, so they are
			// reloaded before anything else is planned for them, and every
			// request fails with a retryable error.
			for _, a := range changed(g) {
				s.suspect[a] = true
			}
			s.setUnavailable(err)
			s.log.Warn("store_commit", logging.Fail, zap.Int("requests", len(group)), zap.Error(err),
				zap.String("next", "the requests fail; their agencies are reloaded before the next group"))
			for i := range results {
				results[i] = Result{Err: err}
			}
		default:
			// Every result of the group, refusals included, was worked out
			// against a state that never became durable: none of them holds.
			s.fail(err, len(group))
			for i := range results {
				results[i] = Result{Err: s.Err()}
			}
		}
		for i, r := range group {
			r.Done(results[i])
		}
		return
	}
}

// learnFinished reloads the agencies of ids this writer does not yet know
// as finished (other servers recorded their FINISHED) and returns them.
// Should the reload fail it returns nil: the agencies are reloaded before
// the next group, and the other servers' notices (Watcher) tell of them.
func (s *Store) learnFinished(ids []uint32) []uint32 {
	var news []uint32
	for _, a := range ids {
		if a >= 1 && int(a) <= len(s.agencies) && !s.agencies[a-1].Finished {
			news = append(news, a)
		}
	}
	if len(news) == 0 {
		return nil
	}
	if err := s.reload(news); err != nil {
		for _, a := range news {
			s.suspect[a] = true
		}
		s.log.Warn("store_reload", logging.Fail, zap.Uint32s("agencies", news), zap.Error(err),
			zap.String("next", "they are reloaded before the next group"))
		return nil
	}
	return news
}

// refused lists the agencies of requests the plan refused (a gap, a total
// or a FINISHED that does not fit), with every agency g changes (their
// chains were extended in place, so they are reloaded too), or nil when
// nothing was refused.
func refused(group []*Request, results []Result, g *Group) []uint32 {
	var ids []uint32
	for i, r := range results {
		if r.Err != nil && (errors.Is(r.Err, ErrIndexGap) || errors.Is(r.Err, ErrTotalMismatch) || errors.Is(r.Err, ErrAlreadyFinished)) {
			ids = append(ids, group[i].Agency)
		}
	}
	if ids == nil {
		return nil
	}
	ids = append(ids, changed(g)...)
	slices.Sort(ids)
	return slices.Compact(ids)
}

// changed lists the agencies a group changes, in ascending order.
func changed(g *Group) []uint32 {
	ids := make([]uint32, len(g.Changes))
	for i, c := range g.Changes {
		ids[i] = c.Agency
	}
	return ids
}

// fail marks the store broken after a failed commit.
func (s *Store) fail(err error, requests int) {
	s.mu.Lock()
	first := s.broken == nil
	if first {
		s.broken = fmt.Errorf("%w: %w", ErrBroken, err)
	}
	s.mu.Unlock()
	if first {
		s.log.Error("store_commit", logging.Fail, zap.Int("requests", requests), zap.Error(err))
		close(s.failed)
	}
}

// reload replaces the cached view of agencies ids with the backend's.
func (s *Store) reload(ids []uint32) error {
	fresh, err := s.backend.Reload(ids)
	if err != nil {
		return err
	}
	if len(fresh) != len(ids) {
		return fmt.Errorf("reload: backend returned %d agencies for %d asked", len(fresh), len(ids))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, a := range ids {
		s.agencies[a-1] = fresh[i]
		s.publish(a, &s.agencies[a-1])
	}
	return nil
}

// plan applies the index rules to every request of the group against the
// agencies' durable state and builds the group to commit.
func (s *Store) plan(group []*Request) ([]Result, *Group, map[uint32]*pending, int) {
	results := make([]Result, len(group))
	views := map[uint32]*pending{}
	g := &Group{}
	stored := 0
	for i, r := range group {
		if r.Agency < 1 || int(r.Agency) > s.opts.Agencies {
			results[i].Err = fmt.Errorf("%w: agency %d of %d", ErrUnknownAgency, r.Agency, s.opts.Agencies)
			continue
		}
		p := views[r.Agency]
		if p == nil {
			a := &s.agencies[r.Agency-1]
			p = &pending{before: a.Held, held: a.Held, chain: a.Chain, finish: a.Finished, total: a.Total}
			views[r.Agency] = p
		}
		results[i] = s.apply(r, p, g)
		stored += results[i].Stored
	}
	for a, p := range views {
		if p.changed {
			g.Changes = append(g.Changes, Change{Agency: a, HeldBefore: p.before, Held: p.held, Chain: p.chain,
				Finish: p.finish && !s.agencies[a-1].Finished, Total: p.total})
		}
	}
	slices.SortFunc(g.Changes, func(x, y Change) int { return int(x.Agency) - int(y.Agency) })
	return results, g, views, stored
}

// apply decides what r does to the agency's pending state and adds the
// rows it stores to g.
func (s *Store) apply(r *Request, p *pending, g *Group) Result {
	if r.Finish {
		switch {
		case p.finish && r.Total == p.total:
			return Result{Held: p.held, Chain: p.chain.Sum()}
		case p.finish:
			return Result{Held: p.held, Err: fmt.Errorf("%w: finished before with %d bets, now says %d", ErrTotalMismatch, p.total, r.Total)}
		case r.Total != p.held:
			return Result{Held: p.held, Err: fmt.Errorf("%w: says %d bets, server holds %d", ErrTotalMismatch, r.Total, p.held)}
		}
		p.finish, p.total, p.changed = true, r.Total, true
		return Result{Held: p.held, Chain: p.chain.Sum()}
	}
	end := r.First + uint64(len(r.Bets))
	switch {
	case r.First > p.held:
		return Result{Held: p.held, Err: fmt.Errorf("%w: batch starts at bet %d, server holds %d", ErrIndexGap, r.First, p.held)}
	case end <= p.held:
		return Result{Held: p.held, Chain: p.chain.Sum()}
	case p.finish:
		return Result{Held: p.held, Err: fmt.Errorf("%w with %d bets; batch adds bets %d..%d", ErrAlreadyFinished, p.total, p.held, end-1)}
	}
	bets := r.Bets[p.held-r.First:] // a batch overlapping what is held stores only its new bets
	if s.checker != nil {
		for i := range bets {
			if err := s.checker.CheckBet(&bets[i]); err != nil {
				return Result{Held: p.held, Err: &BetError{Index: p.held + uint64(i), Err: err}}
			}
		}
	}
	if s.opts.Tamper != nil {
		s.opts.Tamper(r.Agency, p.held, bets)
	}
	for i := range bets {
		p.chain.Add(&bets[i])
	}
	g.Rows = append(g.Rows, Rows{Agency: r.Agency, First: p.held, Bets: bets})
	p.held, p.changed = end, true
	return Result{Stored: len(bets), Held: end, Chain: p.chain.Sum()}
}
