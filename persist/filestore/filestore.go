// Package filestore keeps a lottery's bets in a data directory: bets.csv in
// the course's format (the truth), a checksummed journal of commit records
// (how far bets.csv is committed, each agency's count and chain value, who
// finished) and lottery.json pinning the lottery. It is a persist.Backend.
package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/receipt"
)

// File names inside the data directory.
const (
	BetsFile    = "bets.csv"
	JournalFile = "bets.journal"
	MetaFile    = "lottery.json"
	LockFile    = "lock"
	DrawFile    = "commitment.json"
)

// Errors of Open; match them with errors.Is.
var (
	ErrMismatch = errors.New("data directory belongs to another lottery")
	ErrCorrupt  = errors.New("data directory is inconsistent")
)

// Options configure Open.
type Options struct {
	Agencies      int
	WinningNumber uint16
	Logger        *zap.Logger
	// RebuildJournal accepts a damaged or missing journal: the state is
	// rebuilt from bets.csv alone and FINISHED facts the journal held are
	// forgotten (agencies send FINISHED again). Off by default, so that
	// the server refuses to start rather than guess.
	RebuildJournal bool
	// Sync replaces (*os.File).Sync, to inject disk faults in tests.
	Sync func(*os.File) error
}

// Store is an open data directory.
type Store struct {
	dir  string
	opts Options
	log  *zap.Logger
	sync func(*os.File) error
	// write appends a chunk of rows to bets.csv; tests make it fail.
	write func(f *os.File, b []byte) (int, error)
	chunk int // bytes of rows formatted before they are written

	state     *persist.State
	committed int64 // bytes of bets.csv the journal vouches for
	size      atomic.Int64

	bets, journal, lock *os.File
	buf, jbuf           []byte
	newWinners          []winner

	wmu     sync.RWMutex
	winners map[uint32][]string
}

type winner struct {
	agency   uint32
	document string
}

// Open locks and recovers the data directory dir, creating it if needed.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Agencies < 1 {
		return nil, fmt.Errorf("open store: agencies must be at least 1, got %d", opts.Agencies)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Sync == nil {
		opts.Sync = (*os.File).Sync
	}
	s := &Store{dir: dir, opts: opts, log: opts.Logger, sync: opts.Sync, write: (*os.File).Write, chunk: rowChunk, winners: map[uint32][]string{}}
	if err := s.recover(); err != nil {
		s.closeFiles()
		s.log.Error("store_open", logging.Fail, zap.String("dir", dir), zap.Error(err))
		return nil, err
	}
	s.size.Store(s.committed)
	var bets uint64
	finished := 0
	for _, a := range s.state.Agencies {
		bets += a.Held
		if a.Finished {
			finished++
		}
	}
	s.log.Info("store_open", logging.Success, zap.String("dir", dir), zap.Int64("committed_bytes", s.committed),
		zap.Uint64("bets", bets), zap.Int("agencies_finished", finished), zap.Int("agencies", opts.Agencies))
	return s, nil
}

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

// State is the state recovered at Open.
func (s *Store) State() (*persist.State, error) { return s.state, nil }

// Reload is never needed: the directory lock keeps other writers out.
func (s *Store) Reload([]uint32) ([]persist.Agency, error) {
	return nil, errors.New("file store: reload asked for, but no other server can write this directory")
}

// Size is how many bytes of bets.csv are committed.
func (s *Store) Size() int64 { return s.size.Load() }

// Winners returns every agency's winning documents in stream order, kept
// up to date as rows are committed, so the draw never reads bets.csv.
func (s *Store) Winners() (map[uint32][]string, error) {
	s.wmu.RLock()
	defer s.wmu.RUnlock()
	out := make(map[uint32][]string, len(s.winners))
	for a, docs := range s.winners {
		out[a] = docs[:len(docs):len(docs)]
	}
	return out, nil
}

// SaveDraw writes the draw's signed statement to commitment.json and
// returns the statement of record. The first one saved is kept (recovery
// has held the store to it): a later statement replaces it only when it
// commits to the same leaves and root and is signed, that is when a server
// restarted with another signing key signs the same draw again.
func (s *Store) SaveDraw(statement []byte) ([]byte, error) {
	kept, err := os.ReadFile(s.path(DrawFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read the draw's statement: %w", err)
	case !sameDrawSigned(kept, statement):
		return kept, nil
	}
	if err := writeFileAtomic(s.dir, DrawFile, statement, s.sync); err != nil {
		return nil, err
	}
	return statement, nil
}

// sameDrawSigned reports whether next, unlike kept, is another signature
// over the same draw: same lottery, leaves and root, and signed.
func sameDrawSigned(kept, next []byte) bool {
	if bytes.Equal(kept, next) {
		return false
	}
	var a, b receipt.Statement
	if a.UnmarshalJSON(kept) != nil || b.UnmarshalJSON(next) != nil || b.Signature == (frame.Signature{}) {
		return false
	}
	return a.Lottery == b.Lottery && a.Agencies == b.Agencies && a.Root == b.Root && slices.Equal(a.Leaves, b.Leaves)
}

// Lottery describes the lottery a data directory belongs to.
type Lottery struct {
	Agencies      int
	WinningNumber uint16
	ID            frame.Hash
}

// ReadLottery reads lottery.json of the data directory dir, for tools.
func ReadLottery(dir string) (Lottery, error) {
	data, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if err != nil {
		return Lottery{}, fmt.Errorf("read lottery: %w", err)
	}
	m, nonce, err := parseMeta(data)
	if err != nil {
		return Lottery{}, fmt.Errorf("%s: %w", filepath.Join(dir, MetaFile), err)
	}
	return Lottery{Agencies: m.Agencies, WinningNumber: m.WinningNumber,
		ID: receipt.LotteryID(uint32(m.Agencies), m.WinningNumber, nonce)}, nil
}

// Commit appends the group's rows to bets.csv, fsyncs, appends one journal
// record, fsyncs; on failure it cuts both files back and reports it.
func (s *Store) Commit(g *persist.Group) error {
	s.buf, s.newWinners = s.buf[:0], s.newWinners[:0]
	written := int64(0) // bytes of this group already in bets.csv
	for _, rows := range g.Rows {
		for i := range rows.Bets {
			b := &rows.Bets[i]
			s.buf = AppendRow(s.buf, rows.Agency, b)
			if b.Number == s.opts.WinningNumber {
				// A copy: the document is a slice of its whole frame's text,
				// which the index would otherwise keep alive until the draw.
				s.newWinners = append(s.newWinners, winner{rows.Agency, strings.Clone(b.Document)})
			}
		}
		if len(s.buf) >= s.chunk {
			if err := s.writeRows(); err != nil {
				return err
			}
			written += int64(len(s.buf))
			s.buf = s.buf[:0]
		}
	}
	if len(s.buf) > 0 {
		if err := s.writeRows(); err != nil {
			return err
		}
		written += int64(len(s.buf))
	}
	rec := record{offset: s.committed + written}
	for _, c := range g.Changes {
		rec.held = append(rec.held, heldEntry{c.Agency, c.Held, c.Chain.Sum()})
		if c.Finish {
			rec.finished = append(rec.finished, doneEntry{c.Agency, c.Total})
		}
	}
	if written > 0 {
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
	s.committed = rec.offset
	s.size.Store(rec.offset)
	if len(s.newWinners) > 0 {
		s.wmu.Lock()
		for _, w := range s.newWinners {
			s.winners[w.agency] = append(s.winners[w.agency], w.document)
		}
		s.wmu.Unlock()
	}
	return nil
}

func (s *Store) rollbackJournal(size int64, err error) error {
	if terr := s.journal.Truncate(size); terr != nil {
		err = fmt.Errorf("%w; cutting %s back also failed: %w", err, JournalFile, terr)
	}
	return s.rollback(err)
}

// rowChunk is about how many bytes of rows a commit formats before writing
// them: a group of thousands of batches goes out in pieces, so the buffer
// stays small instead of growing (and faulting in fresh pages) to the size
// of the largest group.
const rowChunk = 256 << 10

// writeRows appends the formatted rows in buf to bets.csv; on failure it
// cuts off whatever of the group was written.
func (s *Store) writeRows() error {
	if _, err := s.write(s.bets, s.buf); err != nil {
		return s.rollback(fmt.Errorf("write %s: %w", BetsFile, err))
	}
	return nil
}

// rollback cuts bets.csv back to the committed offset so that no row of a
// failed group is left behind.
func (s *Store) rollback(err error) error {
	if terr := s.bets.Truncate(s.committed); terr != nil {
		return fmt.Errorf("%w; cutting %s back also failed: %w", err, BetsFile, terr)
	}
	return err
}

// Close syncs and closes the files and releases the directory lock.
func (s *Store) Close() error {
	err := s.closeFiles()
	if err == nil {
		s.log.Info("file_store_close", logging.Success, zap.String("dir", s.dir), zap.Int64("committed_bytes", s.committed))
	}
	return err
}

func (s *Store) closeFiles() error {
	var first error
	for _, f := range []*os.File{s.bets, s.journal} {
		if f == nil {
			continue
		}
		if err := s.sync(f); err != nil {
			if first == nil {
				first = fmt.Errorf("sync %s: %w", filepath.Base(f.Name()), err)
			}
			s.log.Error("file_sync", logging.Fail, zap.String("file", f.Name()), zap.Error(err))
		} else {
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

// LoadDir streams the committed bets of the data directory dir without
// opening it as a store (no lock, no recovery), for tools; it reads what
// the journal vouches for, or the whole file when there is no journal.
func LoadDir(dir string) func(yield func(Bet, error) bool) {
	limit := int64(-1)
	if data, err := os.ReadFile(filepath.Join(dir, JournalFile)); err == nil {
		for off := 0; off < len(data); {
			r, n, err := parseRecord(data[off:])
			if err != nil {
				break
			}
			limit, off = r.offset, off+n
		}
	}
	return loadFile(filepath.Join(dir, BetsFile), limit)
}

// FinishedAgencies counts the agencies whose FINISHED the journal of the
// data directory dir records, without opening it as a store, for tools: a
// store whose every agency finished has drawn, or draws at its next start.
func FinishedAgencies(dir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(dir, JournalFile))
	if err != nil {
		return 0, err
	}
	finished := map[uint32]bool{}
	for off := 0; off < len(data); {
		r, n, err := parseRecord(data[off:])
		if err != nil {
			break // a record cut by a crash: nothing after it was acknowledged
		}
		for _, e := range r.finished {
			finished[e.agency] = true
		}
		off += n
	}
	return len(finished), nil
}

// addWinner appends b's document to the in-memory index if it won.
func (s *Store) addWinner(agency uint32, b *frame.Bet) {
	if b.Number == s.opts.WinningNumber {
		s.winners[agency] = append(s.winners[agency], strings.Clone(b.Document))
	}
}
