package persist

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tp0/loteria/internal/logging"
)

// meta identifies the lottery a data directory belongs to.
type meta struct {
	Format        int    `json:"format"`
	Agencies      int    `json:"agencies"`
	WinningNumber uint16 `json:"winning_number"`
}

const metaFormat = 1

// recover locks the directory, checks or writes the lottery metadata,
// replays the journal and cuts bets.csv back to what the journal vouches for.
func (s *Store) recover() error {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(s.dir, LockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open lock file: %w", err)
	}
	s.lock = lock
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("lock data dir %s (is another server using it?): %w", s.dir, err)
	}
	if err := s.checkMeta(); err != nil {
		return err
	}
	journalPath := filepath.Join(s.dir, JournalFile)
	if s.journal, err = os.OpenFile(journalPath, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	if s.bets, err = os.OpenFile(filepath.Join(s.dir, BetsFile), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
		return fmt.Errorf("open bets: %w", err)
	}
	records, err := s.replayJournal()
	if err != nil {
		return err
	}
	info, err := s.bets.Stat()
	if err != nil {
		return fmt.Errorf("stat bets: %w", err)
	}
	switch size := info.Size(); {
	case size < s.committed:
		return fmt.Errorf("%w: %s has %d bytes but the journal vouches for %d", ErrCorrupt, BetsFile, size, s.committed)
	case size > s.committed:
		if err := s.bets.Truncate(s.committed); err != nil {
			return fmt.Errorf("cut torn tail of %s: %w", BetsFile, err)
		}
		if err := s.sync(s.bets); err != nil {
			return fmt.Errorf("sync %s: %w", BetsFile, err)
		}
		s.log.Warn("store_recover", logging.Success, zap.String("file", BetsFile),
			zap.Int64("cut_bytes", size-s.committed), zap.Int64("committed_bytes", s.committed))
	}
	if records > 1 {
		return s.compactJournal()
	}
	return syncDir(s.dir)
}

func (s *Store) checkMeta() error {
	path := filepath.Join(s.dir, MetaFile)
	want := meta{Format: metaFormat, Agencies: s.opts.Agencies, WinningNumber: s.opts.WinningNumber}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		for _, name := range []string{BetsFile, JournalFile} {
			if info, err := os.Stat(filepath.Join(s.dir, name)); err == nil && info.Size() > 0 {
				return fmt.Errorf("%w: %s exists but %s does not; use an empty data dir", ErrCorrupt, name, MetaFile)
			}
		}
		data, _ := json.Marshal(want)
		return writeFileAtomic(s.dir, MetaFile, append(data, '\n'), s.sync)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", MetaFile, err)
	}
	var got meta
	if err := json.Unmarshal(data, &got); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, MetaFile, err)
	}
	if got != want {
		return fmt.Errorf("%w: %s holds a lottery of %d agencies with winning number %d (format %d), "+
			"this server runs %d agencies with winning number %d; use an empty data dir or the same settings",
			ErrMismatch, s.dir, got.Agencies, got.WinningNumber, got.Format, want.Agencies, want.WinningNumber)
	}
	return nil
}

// replayJournal applies every intact record and cuts the journal after the
// last one; it returns how many records it applied.
func (s *Store) replayJournal() (int, error) {
	data, err := os.ReadFile(s.journal.Name())
	if err != nil {
		return 0, fmt.Errorf("read journal: %w", err)
	}
	off, n := 0, 0
	for off < len(data) {
		rec, size, err := parseRecord(data[off:])
		if err != nil {
			break
		}
		if err := s.applyRecord(&rec); err != nil {
			return 0, err
		}
		off += size
		n++
	}
	if off < len(data) {
		if err := s.journal.Truncate(int64(off)); err != nil {
			return 0, fmt.Errorf("cut torn tail of %s: %w", JournalFile, err)
		}
		if err := s.sync(s.journal); err != nil {
			return 0, fmt.Errorf("sync %s: %w", JournalFile, err)
		}
		s.log.Warn("store_recover", logging.Success, zap.String("file", JournalFile),
			zap.Int("cut_bytes", len(data)-off), zap.Int("records", n))
	}
	return n, nil
}

func (s *Store) applyRecord(r *record) error {
	if r.offset < s.committed {
		return fmt.Errorf("%w: journal offsets go backwards (%d after %d)", ErrCorrupt, r.offset, s.committed)
	}
	for _, list := range [][]heldEntry{r.held, r.finished} {
		for _, e := range list {
			if e.agency < 1 || int(e.agency) > s.opts.Agencies {
				return fmt.Errorf("%w: journal names agency %d of %d", ErrCorrupt, e.agency, s.opts.Agencies)
			}
		}
	}
	for _, e := range r.held {
		s.held[e.agency-1] = e.held
	}
	for _, e := range r.finished {
		if !s.finished[e.agency-1] {
			s.nFinished++
		}
		s.finished[e.agency-1], s.total[e.agency-1] = true, e.held
	}
	s.committed = r.offset
	return nil
}

// compactJournal replaces the journal with one record holding the whole
// state, so restarts do not replay an ever longer history.
func (s *Store) compactJournal() error {
	rec := record{offset: s.committed}
	for i := range s.held {
		if s.held[i] > 0 || s.finished[i] {
			rec.held = append(rec.held, heldEntry{uint32(i + 1), s.held[i]})
		}
		if s.finished[i] {
			rec.finished = append(rec.finished, heldEntry{uint32(i + 1), s.total[i]})
		}
	}
	if err := writeFileAtomic(s.dir, JournalFile, appendRecord(nil, &rec), s.sync); err != nil {
		return fmt.Errorf("compact journal: %w", err)
	}
	old := s.journal
	j, err := os.OpenFile(filepath.Join(s.dir, JournalFile), os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("reopen journal: %w", err)
	}
	s.journal = j
	old.Close()
	return nil
}

// writeFileAtomic writes name in dir through a temporary file, fsyncs it,
// renames it into place and fsyncs the directory.
func writeFileAtomic(dir, name string, data []byte, sync func(*os.File) error) error {
	tmp, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temp for %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := sync(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("rename %s: %w", name, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
