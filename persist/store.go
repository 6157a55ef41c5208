// Package persist is the bet store: one goroutine owns bets.csv and commits
// queued batches in groups (one write, one fsync), so a batch is reported
// done only once it is on disk.
package persist

import (
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
)

// File names inside the data directory.
const (
	BetsFile    = "bets.csv"
	JournalFile = "bets.journal"
	MetaFile    = "lottery.json"
	LockFile    = "lock"
)

// Defaults for Options.
const (
	DefaultQueueSize = 4096
	DefaultMaxGroup  = 1024
)

// Errors a Request can end with; match them with errors.Is.
var (
	ErrIndexGap        = errors.New("batch starts after the last bet held")
	ErrAlreadyFinished = errors.New("agency already finished")
	ErrTotalMismatch   = errors.New("finished total differs from the bets held")
	ErrUnknownAgency   = errors.New("agency outside 1..agencies")
	ErrClosed          = errors.New("store closed")
	ErrBusy            = errors.New("store queue full")
	ErrBroken          = errors.New("store stopped after a write failure")
	ErrMismatch        = errors.New("data directory belongs to another lottery")
	ErrCorrupt         = errors.New("data directory is inconsistent")
)

// Options configure a Store.
type Options struct {
	Agencies      int    // agencies of the lottery, numbered 1..Agencies
	WinningNumber uint16 // recorded with the data so a restart draws the same
	QueueSize     int    // capacity of the request channel
	MaxGroup      int    // most requests committed together
	Logger        *zap.Logger
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
	Stored int    // bets this request added (0 for a replay of held bets)
	Held   uint64 // bets held for the agency afterwards
	Err    error
}

// Store is an open data directory.
type Store struct {
	dir  string
	opts Options
	log  *zap.Logger

	reqs chan *Request
	done chan struct{}

	mu        sync.RWMutex // guards closed and the published state below
	closed    bool
	held      []uint64 // index agency-1
	total     []uint64 // total an agency finished with
	finished  []bool
	nFinished int
	committed int64 // bytes of bets.csv the journal vouches for

	// Owned by the writer goroutine after Open.
	bets, journal *os.File
	lock          *os.File
	buf, jbuf     []byte
	broken        error
	sync          func(*os.File) error
}

// Open recovers the data directory dir (creating it if needed) and starts
// the writer. Recovery cuts bets.csv back to the last committed offset.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Agencies < 1 {
		return nil, fmt.Errorf("open store: agencies must be at least 1, got %d", opts.Agencies)
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.MaxGroup <= 0 {
		opts.MaxGroup = DefaultMaxGroup
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	s := &Store{
		dir:      dir,
		opts:     opts,
		log:      opts.Logger,
		reqs:     make(chan *Request, opts.QueueSize),
		done:     make(chan struct{}),
		held:     make([]uint64, opts.Agencies),
		total:    make([]uint64, opts.Agencies),
		finished: make([]bool, opts.Agencies),
		sync:     (*os.File).Sync,
	}
	if err := s.recover(); err != nil {
		s.closeFiles()
		s.log.Error("store_open", logging.Fail, zap.String("dir", dir), zap.Error(err))
		return nil, err
	}
	s.log.Info("store_open", logging.Success, zap.String("dir", dir),
		zap.Int64("committed_bytes", s.committed), zap.Uint64("bets", s.totalHeld()),
		zap.Int("agencies_finished", s.nFinished), zap.Int("agencies", opts.Agencies))
	go s.run()
	return s, nil
}

func (s *Store) totalHeld() uint64 {
	var n uint64
	for _, h := range s.held {
		n += h
	}
	return n
}

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

// Agencies is how many agencies the lottery has.
func (s *Store) Agencies() int { return s.opts.Agencies }

// WinningNumber is the lottery's winning number.
func (s *Store) WinningNumber() uint16 { return s.opts.WinningNumber }

// Status says how many bets of agency are on disk and whether its FINISHED
// is on record. An agency outside 1..Agencies reports zero values.
func (s *Store) Status(agency uint32) (held uint64, finished bool) {
	if agency < 1 || int(agency) > s.opts.Agencies {
		return 0, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.held[agency-1], s.finished[agency-1]
}

// FinishedCount is how many distinct agencies have finished, durably.
func (s *Store) FinishedCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.nFinished
}

// Submit queues r for the writer without blocking. It fails with ErrBusy
// when the queue is full and ErrClosed after Close; then Done is not called.
func (s *Store) Submit(r *Request) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.reqs <- r:
		return nil
	default:
		return ErrBusy
	}
}

// Bets streams every committed bet, in the order stored.
func (s *Store) Bets() iter.Seq2[Bet, error] {
	s.mu.RLock()
	size := s.committed
	s.mu.RUnlock()
	return loadFile(filepath.Join(s.dir, BetsFile), size)
}

// Close stops taking requests, lets the writer commit everything queued,
// then syncs and closes the files. It logs each step.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	queued := len(s.reqs)
	close(s.reqs)
	s.mu.Unlock()
	s.log.Info("store_drain", logging.InProgress, zap.Int("queued_requests", queued))
	<-s.done
	s.log.Info("store_drain", logging.Success)
	// A store broken by a failed write says so even if its files close fine.
	err := errors.Join(s.broken, s.closeFiles())
	if err != nil {
		s.log.Error("store_close", logging.Fail, zap.Error(err))
		return err
	}
	s.log.Info("store_close", logging.Success, zap.String("dir", s.dir),
		zap.Int64("committed_bytes", s.committed), zap.Uint64("bets", s.totalHeld()))
	return nil
}

func (s *Store) closeFiles() error {
	var first error
	for _, f := range []*os.File{s.bets, s.journal} {
		if f == nil {
			continue
		}
		if err := s.sync(f); err != nil && first == nil {
			first = fmt.Errorf("sync %s: %w", filepath.Base(f.Name()), err)
			s.log.Error("file_sync", logging.Fail, zap.String("file", f.Name()), zap.Error(err))
		} else if err == nil {
			s.log.Info("file_sync", logging.Success, zap.String("file", f.Name()))
		}
		if err := f.Close(); err != nil {
			if first == nil {
				first = fmt.Errorf("close %s: %w", filepath.Base(f.Name()), err)
			}
			s.log.Error("file_close", logging.Fail, zap.String("file", f.Name()), zap.Error(err))
		} else {
			s.log.Info("file_close", logging.Success, zap.String("file", f.Name()))
		}
	}
	s.bets, s.journal = nil, nil
	if s.lock != nil {
		s.lock.Close() // releases the directory lock
		s.lock = nil
	}
	return first
}

// run is the writer goroutine: it takes what is queued, up to MaxGroup
// requests, and commits it with one write and one fsync per file.
func (s *Store) run() {
	defer close(s.done)
	group := make([]*Request, 0, s.opts.MaxGroup)
	for r := range s.reqs {
		group = append(group[:0], r)
	fill:
		for len(group) < s.opts.MaxGroup {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break fill
				}
				group = append(group, r)
			default:
				break fill
			}
		}
		s.commit(group)
		clear(group)
	}
}

// pending is a group's view of one agency before the commit is durable.
type pending struct {
	held      uint64
	finished  bool
	total     uint64
	changed   bool
	finishNow bool
}

func (s *Store) commit(group []*Request) {
	start := time.Now()
	results := make([]Result, len(group))
	view := map[uint32]*pending{}
	s.buf = s.buf[:0]
	stored := 0
	for i, r := range group {
		if r.Agency < 1 || int(r.Agency) > s.opts.Agencies {
			results[i].Err = fmt.Errorf("%w: agency %d of %d", ErrUnknownAgency, r.Agency, s.opts.Agencies)
			continue
		}
		p := view[r.Agency]
		if p == nil {
			s.mu.RLock()
			p = &pending{held: s.held[r.Agency-1], finished: s.finished[r.Agency-1], total: s.total[r.Agency-1]}
			s.mu.RUnlock()
			view[r.Agency] = p
		}
		results[i] = s.apply(r, p)
		stored += results[i].Stored
	}
	if s.broken != nil {
		for i := range results {
			if results[i].Err == nil {
				results[i] = Result{Err: s.broken}
			}
		}
	} else if err := s.write(view); err != nil {
		s.broken = fmt.Errorf("%w: %w", ErrBroken, err)
		s.log.Error("store_commit", logging.Fail, zap.Int("requests", len(group)), zap.Error(err))
		for i := range results {
			if results[i].Err == nil {
				results[i] = Result{Err: s.broken}
			}
		}
	} else if ce := s.log.Check(zap.DebugLevel, "store_commit"); ce != nil {
		ce.Write(logging.Success, zap.Int("requests", len(group)), zap.Int("bets", stored),
			zap.Int("bytes", len(s.buf)), zap.Duration("took", time.Since(start)))
	}
	for i, r := range group {
		r.Done(results[i])
	}
}

// apply decides what r does to the agency's pending state and appends the
// rows it stores to s.buf.
func (s *Store) apply(r *Request, p *pending) Result {
	if r.Finish {
		switch {
		case p.finished && r.Total == p.total:
			return Result{Held: p.held}
		case p.finished:
			return Result{Held: p.held, Err: fmt.Errorf("%w: finished before with %d bets, now says %d", ErrTotalMismatch, p.total, r.Total)}
		case r.Total != p.held:
			return Result{Held: p.held, Err: fmt.Errorf("%w: says %d bets, server holds %d", ErrTotalMismatch, r.Total, p.held)}
		}
		p.finished, p.total, p.changed, p.finishNow = true, r.Total, true, true
		return Result{Held: p.held}
	}
	end := r.First + uint64(len(r.Bets))
	switch {
	case r.First > p.held:
		return Result{Held: p.held, Err: fmt.Errorf("%w: batch starts at bet %d, server holds %d", ErrIndexGap, r.First, p.held)}
	case end <= p.held:
		return Result{Held: p.held}
	case p.finished:
		return Result{Held: p.held, Err: fmt.Errorf("%w with %d bets; batch adds bets %d..%d", ErrAlreadyFinished, p.total, p.held, end-1)}
	}
	skip := p.held - r.First // a batch overlapping what is held stores only its new bets
	for i := skip; i < uint64(len(r.Bets)); i++ {
		s.buf = appendRow(s.buf, r.Agency, &r.Bets[i])
	}
	p.held, p.changed = end, true
	return Result{Stored: int(uint64(len(r.Bets)) - skip), Held: end}
}

// write makes the group durable: rows to bets.csv, fsync, a journal record,
// fsync; then publishes the new state. On failure it cuts both files back.
func (s *Store) write(view map[uint32]*pending) error {
	rec := record{offset: s.committed + int64(len(s.buf))}
	for agency, p := range view {
		if !p.changed {
			continue
		}
		rec.held = append(rec.held, heldEntry{agency, p.held})
		if p.finishNow {
			rec.finished = append(rec.finished, heldEntry{agency, p.total})
		}
	}
	if len(rec.held) == 0 {
		return nil
	}
	if len(s.buf) > 0 {
		if _, err := s.bets.Write(s.buf); err != nil {
			return s.rollback(fmt.Errorf("write %s: %w", BetsFile, err))
		}
		if err := s.sync(s.bets); err != nil {
			return s.rollback(fmt.Errorf("sync %s: %w", BetsFile, err))
		}
	}
	jstart, err := s.journal.Seek(0, io.SeekEnd)
	if err != nil {
		return s.rollback(fmt.Errorf("seek %s: %w", JournalFile, err))
	}
	s.jbuf = appendRecord(s.jbuf[:0], &rec)
	if _, err := s.journal.Write(s.jbuf); err != nil {
		return s.rollbackJournal(jstart, fmt.Errorf("write %s: %w", JournalFile, err))
	}
	if err := s.sync(s.journal); err != nil {
		return s.rollbackJournal(jstart, fmt.Errorf("sync %s: %w", JournalFile, err))
	}
	s.mu.Lock()
	for _, e := range rec.held {
		s.held[e.agency-1] = e.held
	}
	for _, e := range rec.finished {
		s.finished[e.agency-1], s.total[e.agency-1] = true, e.held
		s.nFinished++
	}
	s.committed = rec.offset
	s.mu.Unlock()
	return nil
}

func (s *Store) rollbackJournal(size int64, err error) error {
	if terr := s.journal.Truncate(size); terr != nil {
		err = fmt.Errorf("%w; cutting %s back also failed: %w", err, JournalFile, terr)
	}
	return s.rollback(err)
}

// rollback cuts bets.csv back to the committed offset so that no row of a
// failed group is left behind.
func (s *Store) rollback(err error) error {
	if terr := s.bets.Truncate(s.committed); terr != nil {
		return fmt.Errorf("%w; cutting %s back also failed: %w", err, BetsFile, terr)
	}
	return err
}
