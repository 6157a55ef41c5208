package filestore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/receipt"
)

// meta identifies the lottery a data directory belongs to.
type meta struct {
	Format        int    `json:"format"`
	Agencies      int    `json:"agencies"`
	WinningNumber uint16 `json:"winning_number"`
	Nonce         string `json:"nonce"`
}

const metaFormat = 2

// recover locks the directory, checks or writes the lottery metadata,
// rebuilds every agency's state from bets.csv, checks it against the
// journal, sets aside what cannot belong (never deleting it) and rewrites
// the journal as one record holding the whole state.
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
	lottery, err := s.checkMeta()
	if err != nil {
		return err
	}
	if s.bets, err = os.OpenFile(s.path(BetsFile), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
		return fmt.Errorf("open bets: %w", err)
	}
	info, err := s.bets.Stat()
	if err != nil {
		return fmt.Errorf("stat bets: %w", err)
	}
	size := info.Size()
	j, err := s.readJournal(size)
	if err != nil {
		return err
	}
	sc, err := s.scan(j.records)
	if err != nil {
		return err
	}
	if j.tornAt >= 0 && sc.valid > j.tornAt {
		return fmt.Errorf("%w: the last record of %s was cut at %d bytes of %s, but valid rows go on to byte %d: "+
			"records after it are missing, and with them, perhaps, which agencies finished. Restore %s from a backup, "+
			"or start once with --rebuild-journal to rebuild it from %s", ErrCorrupt, s.path(JournalFile), j.tornAt,
			BetsFile, sc.valid, JournalFile, BetsFile)
	}
	s.state = &persist.State{Lottery: lottery, Agencies: make([]persist.Agency, s.opts.Agencies)}
	for i := range s.state.Agencies {
		a := &s.state.Agencies[i]
		a.Held, a.Chain = sc.count[i], sc.chain[i]
	}
	for _, r := range j.records {
		for _, e := range r.finished {
			a := &s.state.Agencies[e.agency-1]
			a.Finished, a.Total = true, e.total
		}
	}
	if err := s.checkDraw(lottery); err != nil {
		return err
	}
	for i, a := range s.state.Agencies {
		if a.Finished && a.Total != a.Held {
			return fmt.Errorf("%w: agency %d finished with %d bets but %s holds %d of its rows: "+
				"rows were added or removed after its FINISHED; restore %s from a backup",
				ErrCorrupt, i+1, a.Total, s.path(BetsFile), a.Held, BetsFile)
		}
	}
	// Every check passed: only now is anything in the directory changed.
	if err := s.settle(j, sc, size); err != nil {
		return err
	}
	if err := s.setAside(j); err != nil {
		return err
	}
	s.reportUnvouched(sc)
	s.committed = sc.valid
	return s.writeJournal()
}

func (s *Store) path(name string) string { return filepath.Join(s.dir, name) }

// checkDraw holds the recovered state to the draw's statement, when the
// directory has one: the agencies got its root, so every agency must hold
// exactly the bets and chain it committed to, and is finished with that
// total. A journal rebuilt, or restored from before the draw, forgets
// FINISHED facts; the statement keeps them, so the lottery can neither
// reopen nor draw again with another result.
func (s *Store) checkDraw(lottery frame.Hash) error {
	path := s.path(DrawFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the draw's statement: %w", err)
	}
	var st receipt.Statement
	if err = st.UnmarshalJSON(data); err == nil {
		err = st.Check(nil)
	}
	if err == nil && (st.Lottery != lottery || int(st.Agencies) != s.opts.Agencies) {
		err = fmt.Errorf("it is the draw of lottery %x with %d agencies, this directory holds lottery %x with %d",
			st.Lottery[:], st.Agencies, lottery[:], s.opts.Agencies)
	}
	if err != nil {
		return fmt.Errorf("%w: %s is not this lottery's draw statement: %v; restore it from a backup "+
			"(the agencies hold its root)", ErrCorrupt, path, err)
	}
	for i, l := range st.Leaves {
		a := &s.state.Agencies[i]
		if l.Bets != a.Held || l.Chain != a.Chain.Sum() {
			return fmt.Errorf("%w: the draw (%s) committed to %d bets of agency %d with chain %x, but %s holds %d "+
				"with chain %x: bets changed after the draw; restore %s from a backup", ErrCorrupt, path, l.Bets,
				i+1, l.Chain, s.path(BetsFile), a.Held, a.Chain.Sum(), BetsFile)
		}
		a.Finished, a.Total = true, l.Bets
	}
	return nil
}

func (s *Store) checkMeta() (frame.Hash, error) {
	path := s.path(MetaFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		for _, name := range []string{BetsFile, JournalFile} {
			if info, err := os.Stat(s.path(name)); err == nil && info.Size() > 0 {
				return frame.Hash{}, fmt.Errorf("%w: %s exists but %s does not; use an empty data dir", ErrCorrupt, name, MetaFile)
			}
		}
		nonce, err := receipt.NewNonce()
		if err != nil {
			return frame.Hash{}, fmt.Errorf("new lottery id: %w", err)
		}
		m := meta{Format: metaFormat, Agencies: s.opts.Agencies, WinningNumber: s.opts.WinningNumber,
			Nonce: hex.EncodeToString(nonce[:])}
		data, _ := json.Marshal(m)
		if err := writeFileAtomic(s.dir, MetaFile, append(data, '\n'), s.sync); err != nil {
			return frame.Hash{}, err
		}
		return receipt.LotteryID(uint32(m.Agencies), m.WinningNumber, nonce), nil
	}
	if err != nil {
		return frame.Hash{}, fmt.Errorf("read %s: %w", MetaFile, err)
	}
	got, nonce, err := parseMeta(data)
	if err != nil {
		return frame.Hash{}, fmt.Errorf("%s: %w", path, err)
	}
	if got.Agencies != s.opts.Agencies || got.WinningNumber != s.opts.WinningNumber {
		return frame.Hash{}, fmt.Errorf("%w: %s holds a lottery of %d agencies with winning number %d, "+
			"this server runs %d agencies with winning number %d; use an empty data dir or the same settings",
			ErrMismatch, s.dir, got.Agencies, got.WinningNumber, s.opts.Agencies, s.opts.WinningNumber)
	}
	return receipt.LotteryID(uint32(got.Agencies), got.WinningNumber, nonce), nil
}

// parseMeta decodes lottery.json and its nonce.
func parseMeta(data []byte) (meta, [receipt.NonceSize]byte, error) {
	var m meta
	var nonce [receipt.NonceSize]byte
	if err := json.Unmarshal(data, &m); err != nil {
		return m, nonce, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if m.Format != metaFormat {
		return m, nonce, fmt.Errorf("%w: format %d, this server reads format %d; use an empty data dir",
			ErrMismatch, m.Format, metaFormat)
	}
	b, err := hex.DecodeString(m.Nonce)
	if err != nil || len(b) != len(nonce) {
		return m, nonce, fmt.Errorf("%w: nonce %q is not %d hex bytes", ErrCorrupt, m.Nonce, len(nonce))
	}
	copy(nonce[:], b)
	return m, nonce, nil
}

// journalState is what the journal says, and how far it can be trusted.
type journalState struct {
	records []record
	damaged string // why the journal cannot be trusted, "" when it can
	torn    int    // bytes of a torn last record (a crash mid-append)
	tornAt  int64  // the bets.csv offset the torn record names, -1 when unknown
	rebuilt bool   // the journal was damaged and is being rebuilt from bets.csv
	present bool   // the journal file holds bytes (set aside when rebuilt)
}

// readJournal parses the journal. The first record is always written whole
// (by writeJournal, through a rename), so only a later record that ends the
// file can be torn by a crash; any other damage means the journal cannot
// vouch for FINISHED facts, and the server refuses to start unless told to
// rebuild it from bets.csv.
func (s *Store) readJournal(betsSize int64) (journalState, error) {
	data, err := os.ReadFile(s.path(JournalFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return journalState{}, fmt.Errorf("read journal: %w", err)
	}
	j := journalState{tornAt: -1, present: len(data) > 0}
	off := 0
	for off < len(data) {
		r, n, err := parseRecord(data[off:])
		if errors.Is(err, errFormat) {
			return journalState{}, fmt.Errorf("%w: %s record %d: %w; run the version that wrote this data dir",
				ErrCorrupt, s.path(JournalFile), len(j.records), err)
		}
		if err != nil {
			rest := data[off:]
			endsFile := errors.Is(err, errShort) || recordLen(rest) == len(rest) || allZero(rest)
			if len(j.records) > 0 && endsFile && !validRecordIn(rest[1:]) {
				j.torn = len(rest)
				if errors.Is(err, errShort) { // cut short, so what is there was written whole
					j.tornAt = tornOffset(rest)
				}
			} else {
				j.damaged = fmt.Sprintf("record %d at byte %d %v", len(j.records), off, err)
			}
			break
		}
		if k := len(j.records); k > 0 && r.offset < j.records[k-1].offset {
			j.damaged = fmt.Sprintf("record %d at byte %d goes back to offset %d after %d", k, off, r.offset, j.records[k-1].offset)
			break
		}
		for _, e := range r.held {
			if e.agency < 1 || int(e.agency) > s.opts.Agencies {
				j.damaged = fmt.Sprintf("record %d at byte %d names agency %d of %d", len(j.records), off, e.agency, s.opts.Agencies)
			}
		}
		for _, e := range r.finished {
			if e.agency < 1 || int(e.agency) > s.opts.Agencies {
				j.damaged = fmt.Sprintf("record %d at byte %d names agency %d of %d", len(j.records), off, e.agency, s.opts.Agencies)
			}
		}
		if j.damaged != "" {
			break
		}
		j.records = append(j.records, r)
		off += n
	}
	if len(data) == 0 && betsSize > 0 {
		j.damaged = "is missing or empty while " + BetsFile + " holds rows"
	}
	if j.damaged == "" {
		return j, nil
	}
	if !s.opts.RebuildJournal {
		return journalState{}, fmt.Errorf("%w: %s %s, so it cannot vouch for which agencies finished. "+
			"Every row of %s is kept. Restore %s from a backup, or start once with --rebuild-journal to rebuild "+
			"it from %s (agencies that had finished send FINISHED again; running agencies do so by themselves)",
			ErrCorrupt, s.path(JournalFile), j.damaged, BetsFile, JournalFile, BetsFile)
	}
	return journalState{tornAt: -1, damaged: j.damaged, rebuilt: true, present: j.present}, nil
}

// setAside keeps a damaged journal that is being rebuilt, under a new name.
func (s *Store) setAside(j journalState) error {
	if !j.rebuilt {
		return nil
	}
	if !j.present {
		s.log.Warn("store_recover", logging.Success, zap.String("file", JournalFile), zap.String("damage", j.damaged),
			zap.String("action_taken", "rebuilt from "+BetsFile))
		return nil
	}
	aside := s.path(JournalFile + ".damaged-" + stamp())
	if err := os.Rename(s.path(JournalFile), aside); err != nil {
		return fmt.Errorf("set aside damaged journal: %w", err)
	}
	s.log.Warn("store_recover", logging.Success, zap.String("file", JournalFile), zap.String("damage", j.damaged),
		zap.String("moved_to", aside), zap.String("action_taken", "rebuilt from "+BetsFile))
	return nil
}

// tornOffset is the bets.csv offset a cut record names, when enough of it
// survived to read it, else -1.
func tornOffset(b []byte) int64 {
	if len(b) < recordHeader+9 || b[recordHeader] != recordFormat {
		return -1
	}
	return int64(binary.BigEndian.Uint64(b[recordHeader+1:]))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// recordLen is the whole size a record header announces, or -1.
func recordLen(b []byte) int {
	if len(b) < recordHeader {
		return -1
	}
	return recordHeader + int(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))
}

// validRecordIn reports whether an intact record starts anywhere in b.
func validRecordIn(b []byte) bool {
	for p := range b {
		if _, _, err := parseRecord(b[p:]); err == nil {
			return true
		}
	}
	return false
}

// scanned is bets.csv as read: the state of every agency after its valid
// rows, and where the valid rows end.
type scanned struct {
	count []uint64
	chain []*receipt.Chain
	valid int64 // end of the last complete, valid row
	bad   error // why reading stopped before the end, with line and offset
	// vouched is every agency's count at the journal's last record; rows
	// after it were written in the window before a crash's journal record.
	vouched []uint64
}

// scan reads bets.csv from the start, rebuilding counts, chains and the
// winners index, and checks the state at every journal record's offset.
func (s *Store) scan(records []record) (*scanned, error) {
	sc := &scanned{count: make([]uint64, s.opts.Agencies), chain: make([]*receipt.Chain, s.opts.Agencies)}
	for i := range sc.chain {
		sc.chain[i] = receipt.NewChain()
	}
	if _, err := s.bets.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("read bets: %w", err)
	}
	rr := rowReader{br: bufio.NewReaderSize(s.bets, 256<<10), line: 1}
	// A row's birthdate was checked against the day it arrived. Checked
	// against today, a clock set back since (NTP, a restored VM) would turn
	// an acknowledged bet into a bad row and keep the server from starting.
	today := frame.MaxDate
	var total, vouched uint64 // rows read; rows the journal vouches for at the next record
	lastHeld := make([]uint64, s.opts.Agencies)
	next := 0
	check := func() error {
		for next < len(records) && records[next].offset <= sc.valid {
			r := &records[next]
			if r.offset < sc.valid {
				return fmt.Errorf("%w: %s record %d vouches for %d bytes of %s, which falls inside a row (rows end at %d); "+
					"one of the files was edited: restore them from a backup", ErrCorrupt, JournalFile, next, r.offset, BetsFile, sc.valid)
			}
			for _, e := range r.held {
				got := sc.count[e.agency-1]
				vouched += e.held - lastHeld[e.agency-1]
				lastHeld[e.agency-1] = e.held
				if got != e.held {
					return fmt.Errorf("%w: at byte %d %s holds %d rows of agency %d, %s says %d: "+
						"rows were added, removed or moved; restore %s from a backup", ErrCorrupt, r.offset, BetsFile, got,
						e.agency, JournalFile, e.held, BetsFile)
				}
				if sc.chain[e.agency-1].Sum() != e.chain {
					return fmt.Errorf("%w: at byte %d the rows of agency %d in %s differ from what was stored "+
						"(chain %x, %s says %x): a bet was changed; restore %s from a backup", ErrCorrupt, r.offset,
						e.agency, BetsFile, sc.chain[e.agency-1].Sum(), JournalFile, e.chain, BetsFile)
				}
			}
			if vouched != total {
				return fmt.Errorf("%w: at byte %d %s holds %d rows, %s says %d: rows were added or removed; "+
					"restore %s from a backup", ErrCorrupt, r.offset, BetsFile, total, JournalFile, vouched, BetsFile)
			}
			next++
			if next == len(records) {
				sc.vouched = slices.Clone(sc.count)
			}
		}
		return nil
	}
	if err := check(); err != nil {
		return nil, err
	}
	for {
		start := rr.off
		line, err := rr.read()
		if errors.Is(err, io.EOF) {
			break
		}
		var b Bet
		if err == nil {
			b, err = parseRow(rr.fields[:])
		}
		if err == nil {
			err = s.validate(&b, today)
		}
		if err == nil && !rr.ended {
			err = errors.New("last row has no line break: an incomplete write")
		}
		if err != nil {
			sc.bad = fmt.Errorf("line %d (byte %d): %w", line, start, err)
			break
		}
		sc.count[b.Agency-1]++
		sc.chain[b.Agency-1].Add(&b.Bet)
		s.addWinner(b.Agency, &b.Bet)
		total++
		sc.valid = rr.off
		if err := check(); err != nil {
			return nil, err
		}
	}
	if next < len(records) {
		last := records[len(records)-1].offset
		why := "ends there"
		if sc.bad != nil {
			why = "has a bad row at " + sc.bad.Error()
		}
		return nil, fmt.Errorf("%w: %s vouches for %d bytes of %s, but its valid rows end at byte %d (the file %s): "+
			"acknowledged bets are missing. Restore %s from a backup; or, to keep only what the file holds, move %s "+
			"away and start with --rebuild-journal (agencies resend what is missing)", ErrCorrupt, JournalFile, last,
			s.path(BetsFile), sc.valid, why, BetsFile, JournalFile)
	}
	return sc, nil
}

func (s *Store) validate(b *Bet, today frame.Date) error {
	if b.Agency < 1 || int(b.Agency) > s.opts.Agencies {
		return fmt.Errorf("agency %d is outside 1..%d", b.Agency, s.opts.Agencies)
	}
	return b.Validate(today)
}

// reportUnvouched names the rows kept past the journal's last record: a
// crash came between their fsync and their journal record, so they were
// never acknowledged, but they are the agency's next bets all the same.
func (s *Store) reportUnvouched(sc *scanned) {
	if sc.vouched == nil {
		return
	}
	var rows uint64
	var agencies []string
	for i := range sc.count {
		if n := sc.count[i] - sc.vouched[i]; n > 0 {
			rows += n
			agencies = append(agencies, fmt.Sprintf("%d:%d", i+1, n))
		}
	}
	if rows > 0 {
		s.log.Warn("store_recover", logging.Success, zap.String("file", BetsFile), zap.Uint64("rows_past_last_record", rows),
			zap.String("agency_rows", strings.Join(agencies, ",")),
			zap.String("note", "written before a crash and never acknowledged; kept as the agencies' next bets"))
	}
}

// settle deals with bytes after the last valid row: an incomplete last row,
// or rows no commit record vouches for that do not parse, are moved to a
// file beside bets.csv; garbage followed by valid rows, when the journal
// cannot say those rows were never acknowledged, stops the start.
func (s *Store) settle(j journalState, sc *scanned, size int64) error {
	if j.torn > 0 {
		s.log.Warn("store_recover", logging.Success, zap.String("file", JournalFile), zap.Int("torn_bytes", j.torn),
			zap.String("action_taken", "dropped the record a crash cut short; its rows are kept"))
	}
	if sc.valid == size {
		return nil
	}
	tail := make([]byte, size-sc.valid)
	if _, err := s.bets.ReadAt(tail, sc.valid); err != nil {
		return fmt.Errorf("read tail of %s: %w", BetsFile, err)
	}
	// A trusted journal vouches for every acknowledged row, and those all
	// come before the valid ones end: the tail was never acknowledged.
	incomplete := !bytes.Contains(tail, []byte{'\n'})
	if !incomplete && j.rebuilt && validRowFollows(tail) {
		return fmt.Errorf("%w: %s %v, and valid rows follow it; nothing says whether they were acknowledged, "+
			"so the server will not guess: fix or remove that row by hand and start again", ErrCorrupt, s.path(BetsFile), sc.bad)
	}
	aside := s.path(BetsFile + ".torn-" + stamp())
	if err := writeFileAtomic(s.dir, filepath.Base(aside), tail, s.sync); err != nil {
		return fmt.Errorf("set aside the tail of %s: %w", BetsFile, err)
	}
	if err := s.bets.Truncate(sc.valid); err != nil {
		return fmt.Errorf("cut the tail of %s: %w", BetsFile, err)
	}
	if err := s.sync(s.bets); err != nil {
		return fmt.Errorf("sync %s: %w", BetsFile, err)
	}
	s.log.Warn("store_recover", logging.Success, zap.String("file", BetsFile), zap.Int("moved_bytes", len(tail)),
		zap.String("moved_to", aside), zap.Int64("valid_bytes", sc.valid), zap.String("reason", sc.bad.Error()))
	return nil
}

// validRowFollows reports whether a complete, parseable row starts at any
// line after the first one of tail.
func validRowFollows(tail []byte) bool {
	rr := rowReader{br: bufio.NewReaderSize(nil, 4096)}
	for p := bytes.IndexByte(tail, '\n'); p >= 0 && p+1 < len(tail); {
		rest := tail[p+1:]
		rr.br.Reset(bytes.NewReader(rest))
		if _, err := rr.read(); err == nil && rr.ended {
			if _, err := parseRow(rr.fields[:]); err == nil {
				return true
			}
		}
		q := bytes.IndexByte(rest, '\n')
		if q < 0 {
			break
		}
		p += 1 + q
	}
	return false
}

// writeJournal replaces the journal with one record holding the whole
// state, written through a rename so that it is never torn.
func (s *Store) writeJournal() error {
	rec := record{offset: s.committed}
	for i, a := range s.state.Agencies {
		if a.Held > 0 || a.Finished {
			rec.held = append(rec.held, heldEntry{uint32(i + 1), a.Held, a.Chain.Sum()})
		}
		if a.Finished {
			rec.finished = append(rec.finished, doneEntry{uint32(i + 1), a.Total})
		}
	}
	if err := writeFileAtomic(s.dir, JournalFile, appendRecord(nil, &rec), s.sync); err != nil {
		return fmt.Errorf("compact journal: %w", err)
	}
	j, err := os.OpenFile(s.path(JournalFile), os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("reopen journal: %w", err)
	}
	s.journal = j
	return nil
}

func stamp() string { return time.Now().UTC().Format("20060102T150405.000000000Z") }

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
