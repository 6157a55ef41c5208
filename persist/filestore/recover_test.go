package filestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/persisttest"
	"github.com/tp0/loteria/receipt"
)

// fixture is a closed data dir built by five commits with no reopen in
// between, so its journal holds the start record and one record per
// commit: [start, agency 1 ×5, agency 2 ×3, agency 2 FINISHED, agency 1 ×3,
// agency 3 ×4].
type fixture struct {
	dir      string
	csv      []byte   // bets.csv
	rowEnds  []int    // where each row of bets.csv ends
	rows     []Bet    // bets.csv's rows
	journal  []byte   // bets.journal
	recs     []record // its records
	ends     []int    // where each record ends
	finished map[uint32]uint64
}

const fixtureRecords = 6

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), finished: map[uint32]uint64{2: 3}}
	opts := testOpts
	opts.Sync = noSync
	w := openWriter(t, f.dir, opts)
	put(t, w, 1, 0, persisttest.Bets(1, 0, 5))
	put(t, w, 2, 0, persisttest.Bets(2, 0, 3))
	finish(t, w, 2, 3)
	put(t, w, 1, 5, persisttest.Bets(1, 5, 3))
	put(t, w, 3, 0, persisttest.Bets(3, 0, 4))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.rows = slices.Concat(tagged(1, persisttest.Bets(1, 0, 5)), tagged(2, persisttest.Bets(2, 0, 3)), tagged(1, persisttest.Bets(1, 5, 3)), tagged(3, persisttest.Bets(3, 0, 4)))
	for _, b := range f.rows {
		f.csv = AppendRow(f.csv, b.Agency, &b.Bet)
		f.rowEnds = append(f.rowEnds, len(f.csv))
	}
	if got := readFile(t, f.dir, BetsFile); !bytes.Equal(got, f.csv) {
		t.Fatalf("bets.csv of the fixture:\n got %q\nwant %q", got, f.csv)
	}
	f.journal = readFile(t, f.dir, JournalFile)
	f.recs, f.ends = records(t, f.journal)
	if len(f.recs) != fixtureRecords {
		t.Fatalf("fixture journal has %d records, want %d", len(f.recs), fixtureRecords)
	}
	return f
}

// copy is a fresh copy of the fixture's directory.
func (f *fixture) copy(t *testing.T) string { return copyDir(t, f.dir) }

// rowOf is the encoding of a row, for appending to bets.csv.
func rowOf(agency uint32, b frame.Bet) []byte { return AppendRow(nil, agency, &b) }

// flip returns data with byte i inverted.
func flip(data []byte, i int) []byte {
	out := append([]byte(nil), data...)
	out[i] ^= 0xff
	return out
}

// recordStart is where record k of the fixture's journal starts.
func (f *fixture) recordStart(k int) int {
	if k == 0 {
		return 0
	}
	return f.ends[k-1]
}

// checkJournal fails the test unless dir's journal is one record holding
// the state of s.
func checkJournal(t *testing.T, s *Store) {
	t.Helper()
	recs, _ := records(t, readFile(t, s.Dir(), JournalFile))
	if len(recs) != 1 {
		t.Fatalf("journal has %d records after Open, want 1", len(recs))
	}
	st, _ := s.State()
	r := recs[0]
	if r.offset != fileSize(t, s.Dir(), BetsFile) {
		t.Errorf("journal vouches for %d bytes, bets.csv has %d", r.offset, fileSize(t, s.Dir(), BetsFile))
	}
	var held []heldEntry
	var done []doneEntry
	for i, a := range st.Agencies {
		if a.Held > 0 || a.Finished {
			held = append(held, heldEntry{uint32(i + 1), a.Held, a.Chain.Sum()})
		}
		if a.Finished {
			done = append(done, doneEntry{uint32(i + 1), a.Total})
		}
	}
	if fmt.Sprint(r.held) != fmt.Sprint(held) || fmt.Sprint(r.finished) != fmt.Sprint(done) {
		t.Errorf("journal record %+v, want held %+v finished %+v", r, held, done)
	}
}

// TestRecoverRefuses damages a data dir in ways no crash can, and checks
// that Open refuses to start, says why and what to do, and changes nothing.
func TestRecoverRefuses(t *testing.T) {
	f := newFixture(t)
	lastRow := len(f.rowEnds) - 1
	row := func(i int) []byte {
		return f.csv[f.rowEnds[i]-len(rowOf(f.rows[i].Agency, f.rows[i].Bet)) : f.rowEnds[i]]
	}
	setCSV := func(data []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) { writeFile(t, dir, BetsFile, data) }
	}
	setJournal := func(data []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) { writeFile(t, dir, JournalFile, data) }
	}
	addRecord := func(r record) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) { appendFile(t, dir, JournalFile, appendRecord(nil, &r)) }
	}
	setMeta := func(m string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) { writeFile(t, dir, MetaFile, []byte(m)) }
	}
	// Row 1 is agency 1's second bet; change one letter of its first name.
	renamed := bytes.Clone(f.csv)
	if i := bytes.Index(renamed[f.rowEnds[0]:], []byte(f.rows[1].FirstName[:1])); i < 0 {
		t.Fatal("fixture row 1 has no first name")
	} else {
		renamed[f.rowEnds[0]+i] ^= 0x01
	}
	// Row 14 is agency 3's; swap two of its rows, which keeps the counts.
	swapped := slices.Concat(f.csv[:f.rowEnds[11]], row(13), row(12), f.csv[f.rowEnds[13]:])
	format := func(v byte) []byte {
		rec := appendRecord(nil, &record{offset: int64(len(f.csv))})
		rec[recordHeader] = v
		return seal(rec[recordHeader:])
	}
	noJournalGarbageThenRow := func(t *testing.T, dir string) {
		os.Remove(filepath.Join(dir, JournalFile))
		appendFile(t, dir, BetsFile, slices.Concat([]byte("1,not,a,row\r\n"), rowOf(1, persisttest.Bet(1, 8))))
	}

	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		rebuild bool
		target  error
		says    []string
	}{
		{"journal missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, JournalFile)) }, false,
			ErrCorrupt, []string{JournalFile, "missing or empty", "--rebuild-journal", "Every row of bets.csv is kept"}},
		{"journal empty", setJournal(nil), false,
			ErrCorrupt, []string{JournalFile, "missing or empty", "--rebuild-journal"}},
		{"first record corrupt", setJournal(flip(f.journal, f.ends[0]-3)), false,
			ErrCorrupt, []string{JournalFile, "record 0 at byte 0", "--rebuild-journal"}},
		{"middle record corrupt", setJournal(flip(f.journal, f.ends[2]-3)), false,
			ErrCorrupt, []string{JournalFile, fmt.Sprintf("record 2 at byte %d", f.ends[1]), "--rebuild-journal"}},
		{"journal cut inside its first record", setJournal(f.journal[:f.ends[0]-1]), false,
			ErrCorrupt, []string{JournalFile, "record 0", "--rebuild-journal"}},
		{"a record of another version", func(t *testing.T, dir string) { appendFile(t, dir, JournalFile, format(recordFormat+1)) }, false,
			ErrCorrupt, []string{JournalFile, fmt.Sprintf("record %d", fixtureRecords), "format 3", "run the version that wrote"}},
		{"a record of another version, even when rebuilding", func(t *testing.T, dir string) { appendFile(t, dir, JournalFile, format(1)) }, true,
			ErrCorrupt, []string{JournalFile, "format 1", "run the version that wrote"}},
		{"a record going back", addRecord(record{offset: 10}), false,
			ErrCorrupt, []string{JournalFile, "goes back to offset 10", "--rebuild-journal"}},
		{"a record naming agency 4 of 3", addRecord(record{offset: int64(len(f.csv)), held: []heldEntry{{4, 1, hashOf(4)}}}), false,
			ErrCorrupt, []string{JournalFile, "names agency 4 of 3"}},
		{"a record finishing agency 0", addRecord(record{offset: int64(len(f.csv)), finished: []doneEntry{{0, 0}}}), false,
			ErrCorrupt, []string{JournalFile, "names agency 0 of 3"}},
		{"a record vouching past the end of bets.csv", addRecord(record{offset: int64(len(f.csv)) + 100, held: []heldEntry{{1, 9, hashOf(1)}}}), false,
			ErrCorrupt, []string{BetsFile, "acknowledged bets are missing", "ends there"}},
		{"bets.csv one row short", setCSV(f.csv[:f.rowEnds[lastRow-1]]), false,
			ErrCorrupt, []string{BetsFile, "acknowledged bets are missing", fmt.Sprintf("valid rows end at byte %d", f.rowEnds[lastRow-1])}},
		{"bets.csv cut inside a middle row", setCSV(f.csv[:f.rowEnds[6]+7]), false,
			ErrCorrupt, []string{BetsFile, "acknowledged bets are missing", fmt.Sprintf("valid rows end at byte %d", f.rowEnds[6])}},
		{"bets.csv empty", setCSV(nil), false,
			ErrCorrupt, []string{BetsFile, "acknowledged bets are missing"}},
		{"bets.csv missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, BetsFile)) }, false,
			ErrCorrupt, []string{BetsFile, "acknowledged bets are missing"}},
		{"a letter of a name changed", setCSV(renamed), false,
			ErrCorrupt, []string{BetsFile, "agency 1", "a bet was changed"}},
		{"two rows of an agency swapped", setCSV(swapped), false,
			ErrCorrupt, []string{BetsFile, "agency 3", "a bet was changed"}},
		{"a row deleted", setCSV(slices.Concat(f.csv[:f.rowEnds[1]], f.csv[f.rowEnds[2]:])), false,
			ErrCorrupt, []string{BetsFile, "falls inside a row", "restore"}},
		{"a row inserted", setCSV(slices.Concat(f.csv[:f.rowEnds[1]], row(1), f.csv[f.rowEnds[1]:])), false,
			ErrCorrupt, []string{BetsFile, "falls inside a row", "restore"}},
		{"a row moved to another agency", setCSV(slices.Concat(f.csv[:f.rowEnds[0]], []byte("3"), row(1)[1:], f.csv[f.rowEnds[1]:])), false,
			ErrCorrupt, []string{BetsFile, "holds 4 rows of agency 1", "says 5", "restore"}},
		{"a record leaving out an agency's rows", setJournal(slices.Concat(f.journal[:f.ends[0]], appendRecord(nil, &record{
			offset:   int64(len(f.csv)),
			held:     []heldEntry{{1, 8, receipt.ChainOf(persisttest.Bets(1, 0, 8))}, {2, 3, receipt.ChainOf(persisttest.Bets(2, 0, 3))}},
			finished: []doneEntry{{2, 3}},
		}))), false, ErrCorrupt, []string{BetsFile, "holds 15 rows", "says 11", "restore"}},
		{"a winning row appended for a finished agency", func(t *testing.T, dir string) {
			b := persisttest.Bet(2, 3)
			b.Number = winning
			appendFile(t, dir, BetsFile, rowOf(2, b))
		}, false, ErrCorrupt, []string{"agency 2 finished with 3 bets", BetsFile, "holds 4", "restore"}},
		{"rebuilding with a bad row followed by valid ones", noJournalGarbageThenRow, true,
			ErrCorrupt, []string{BetsFile, fmt.Sprintf("line %d (byte %d)", 1+bytes.Count(f.csv, []byte("\n")), len(f.csv)), "valid rows follow", "by hand"}},
		{"lottery.json missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, MetaFile)) }, false,
			ErrCorrupt, []string{MetaFile, "bets.csv exists", "empty data dir"}},
		{"lottery.json not JSON", setMeta("{agencies: 3"), false, ErrCorrupt, []string{MetaFile}},
		{"lottery.json of format 1", setMeta(`{"format":1,"agencies":3,"winning_number":7574}`), false,
			ErrMismatch, []string{MetaFile, "format 1", "empty data dir"}},
		{"lottery.json with a bad nonce", setMeta(`{"format":2,"agencies":3,"winning_number":7574,"nonce":"abc"}`), false,
			ErrCorrupt, []string{MetaFile, "nonce"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := f.copy(t)
			tt.damage(t, dir)
			opts := testOpts
			opts.RebuildJournal = tt.rebuild
			refuse(t, dir, opts, tt.target, tt.says...)
		})
	}
}

// TestRecoverMismatch opens a lottery's directory with other settings.
func TestRecoverMismatch(t *testing.T) {
	f := newFixture(t)
	for _, opts := range []Options{
		{Agencies: 4, WinningNumber: winning},
		{Agencies: 2, WinningNumber: winning},
		{Agencies: 3, WinningNumber: 1234},
		{Agencies: 3, WinningNumber: winning + 1, RebuildJournal: true},
	} {
		refuse(t, f.dir, opts, ErrMismatch, "3 agencies with winning number 7574",
			fmt.Sprintf("%d agencies with winning number %d", opts.Agencies, opts.WinningNumber))
	}
	if _, err := Open(t.TempDir(), Options{Agencies: 0}); err == nil {
		t.Error("Open with 0 agencies succeeded")
	}
	checkState(t, open(t, f.dir, testOpts), f.rows, f.finished)
}

func TestOpenLocked(t *testing.T) {
	f := newFixture(t)
	s := open(t, f.dir, testOpts)
	s2, err := Open(f.dir, testOpts)
	if err == nil {
		s2.Close()
		t.Fatal("a second Open of a data dir in use succeeded")
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) || !strings.Contains(err.Error(), "another server") || !strings.Contains(err.Error(), f.dir) {
		t.Errorf("second Open: %v, want a lock error naming the dir and the likely cause", err)
	}
	// The first store is unaffected, and the lock goes with it.
	w := writerOver(t, s)
	put(t, w, 3, 4, persisttest.Bets(3, 4, 2))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	checkState(t, open(t, f.dir, testOpts), append(f.rows, tagged(3, persisttest.Bets(3, 4, 2))...), f.finished)
}

// TestRecoverAfterTheClockWentBack: a bet born "today" by the clock that
// accepted it is a later day than today once the clock is set back; the
// store still opens with it, since it was valid when it was acknowledged.
func TestRecoverAfterTheClockWentBack(t *testing.T) {
	dir := t.TempDir()
	bets := persisttest.Bets(1, 0, 3)
	bets[1].Birthdate = frame.DateOf(time.Now().AddDate(0, 0, 2)) // after today in every time zone
	w := openWriter(t, dir, testOpts)
	put(t, w, 1, 0, bets)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir, testOpts)
	st, _ := s.State()
	if a := st.Agencies[0]; a.Held != 3 || a.Chain.Sum() != receipt.ChainOf(bets) {
		t.Errorf("agency 1 holds %d bets, chain %x; want 3, %x", a.Held, a.Chain.Sum(), receipt.ChainOf(bets))
	}
}

// TestRecoverStarts damages a data dir the way a crash can, or in ways the
// store can set right by itself, and checks that Open starts, keeps every
// complete valid row, moves the rest aside byte for byte, and that the
// store then works.
func TestRecoverStarts(t *testing.T) {
	f := newFixture(t)
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 200)
	for i := range garbage {
		garbage[i] = byte(rng.IntN(256))
	}
	garbage[0] = 0 // no row starts with a NUL
	next1, next3 := rowOf(1, persisttest.Bet(1, 8)), rowOf(3, persisttest.Bet(3, 4))
	full := slices.Concat(next1, next3)
	// A record a crash cut short: the one that would have vouched for full.
	unfinished := appendRecord(nil, &record{offset: int64(len(f.csv) + len(full)),
		held: []heldEntry{{1, 9, receipt.ChainOf(persisttest.Bets(1, 0, 9))}, {3, 5, receipt.ChainOf(persisttest.Bets(3, 0, 5))}}})
	corrupt := func(k int) []byte { return flip(f.journal, f.ends[k]-3) }
	foreign := persisttest.Bet(3, 77)
	foreign.Number = winning

	tests := []struct {
		name      string
		noJournal bool   // the journal is removed
		journal   []byte // when not nil, replaces the journal
		kept      []byte // appended to bets.csv, and must stay
		moved     []byte // appended to bets.csv after kept, and must be moved aside
		rebuild   bool
		damaged   bool // the replaced journal must be kept as bets.journal.damaged-*
	}{
		{name: "rows past the last record", kept: full},
		{name: "rows past the last record and a torn record", journal: slices.Concat(f.journal, unfinished[:30]), kept: full},
		{name: "a torn record, no rows past it", journal: slices.Concat(f.journal, unfinished[:recordHeader+3])},
		// No journal record vouches for it and nothing tells it from the
		// crash window: it is kept (the agency notices through its chain).
		{name: "a foreign winning row for a running agency", kept: rowOf(1, foreign)},
		{name: "random bytes", moved: garbage},
		{name: "half a row", moved: next1[:len(next1)/2]},
		{name: "a row without its line break", moved: next1[:len(next1)-2]},
		{name: "a row ending in a bare line feed", kept: slices.Concat(next1[:len(next1)-2], []byte("\n"))},
		{name: "a row for an unknown agency", moved: rowOf(4, persisttest.Bet(1, 8))},
		{name: "a row with an invalid date", moved: []byte("1,Ana,Lorca,00000001,1999-02-30,7574\r\n")},
		// Birthdates were checked against the day each row arrived; a clock
		// set back since must not make a row bad.
		{name: "a row with a birthdate after today", kept: []byte("1,Ana,Lorca,00000001,2999-01-01,7574\r\n")},
		{name: "a row with an empty name", moved: []byte("1,,Lorca,00000001,1999-01-01,7574\r\n")},
		{name: "a quote left open", moved: []byte("1,\"Ana\r\nLorca,00000001,1999-01-01,7574\r\n")},
		{name: "garbage then valid rows", moved: slices.Concat([]byte("not,a,row\r\n"), full)},
		{name: "valid rows then garbage", kept: full, moved: garbage},
		{name: "rebuild, journal missing", noJournal: true, kept: full, rebuild: true},
		{name: "rebuild, journal empty", journal: []byte{}, kept: full, rebuild: true},
		{name: "rebuild, first record corrupt", journal: corrupt(0), rebuild: true, damaged: true},
		{name: "rebuild, middle record corrupt", journal: corrupt(2), kept: full, rebuild: true, damaged: true},
		{name: "rebuild, half a row", journal: corrupt(3), moved: next1[:9], rebuild: true, damaged: true},
		{name: "rebuild, garbage with no valid row after it", journal: corrupt(1), moved: []byte("x\r\ny\r\n"), rebuild: true, damaged: true},
		{name: "rebuild, damage after a FINISHED", journal: corrupt(4), rebuild: true, damaged: true},
		{name: "rebuild of a healthy journal changes nothing", rebuild: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := f.copy(t)
			meta := readFile(t, dir, MetaFile)
			if tt.noJournal {
				if err := os.Remove(filepath.Join(dir, JournalFile)); err != nil {
					t.Fatal(err)
				}
			}
			if tt.journal != nil {
				writeFile(t, dir, JournalFile, tt.journal)
			}
			appendFile(t, dir, BetsFile, slices.Concat(tt.kept, tt.moved))

			core, logs := observer.New(zap.InfoLevel)
			opts := testOpts
			opts.RebuildJournal = tt.rebuild
			opts.Logger = zap.New(core)
			s := open(t, dir, opts)
			wantCSV := slices.Concat(f.csv, tt.kept)
			if got := readFile(t, dir, BetsFile); !bytes.Equal(got, wantCSV) {
				t.Errorf("bets.csv after Open has %d bytes, want the %d of the valid rows", len(got), len(wantCSV))
			}
			if got := aside(t, dir, BetsFile+".torn-"); !bytes.Equal(got, tt.moved) {
				t.Errorf("set aside %q, want %q", got, tt.moved)
			}
			var wantRows []Bet
			for b, err := range LoadBets(bytes.NewReader(wantCSV)) {
				if err != nil {
					t.Fatal(err)
				}
				wantRows = append(wantRows, b)
			}
			finished := f.finished
			if tt.rebuild && (tt.noJournal || tt.journal != nil) {
				finished = nil // a rebuilt journal forgets who finished
			}
			checkState(t, s, wantRows, finished)
			checkJournal(t, s)
			if got := aside(t, dir, JournalFile+".damaged-"); tt.damaged != (got != nil) || tt.damaged && !bytes.Equal(got, tt.journal) {
				t.Errorf("damaged journal set aside: %d bytes, want it kept: %t", len(got), tt.damaged)
			}
			if got := readFile(t, dir, MetaFile); !bytes.Equal(got, meta) {
				t.Errorf("lottery.json changed: %s", got)
			}
			// Each repair is logged as a store_recover warning.
			var repairs []string
			past := 0
			for _, e := range logs.FilterMessage("store_recover").All() {
				m := e.ContextMap()
				switch {
				case e.Level != zap.WarnLevel || m["result"] != "success":
					t.Errorf("store_recover logged at %v with result %v, want a warning with success", e.Level, m["result"])
				case m["rows_past_last_record"] != nil:
					past++
				case m["moved_bytes"] != nil:
					repairs = append(repairs, fmt.Sprintf("%s moved %d", m["file"], m["moved_bytes"]))
				case m["torn_bytes"] != nil:
					repairs = append(repairs, fmt.Sprintf("%s torn %d", m["file"], m["torn_bytes"]))
				default:
					repairs = append(repairs, fmt.Sprintf("%s rebuilt", m["file"]))
				}
			}
			var want []string
			rebuilt := tt.rebuild && (tt.noJournal || tt.journal != nil)
			if !rebuilt && len(tt.journal) > len(f.journal) {
				want = append(want, fmt.Sprintf("%s torn %d", JournalFile, len(tt.journal)-len(f.journal)))
			}
			if tt.moved != nil {
				want = append(want, fmt.Sprintf("%s moved %d", BetsFile, len(tt.moved)))
			}
			if rebuilt {
				want = append(want, JournalFile+" rebuilt")
			}
			if !slices.Equal(repairs, want) {
				t.Errorf("store_recover logged %q, want %q", repairs, want)
			}
			// Rows kept past the last record are named once, and only then.
			if wantPast := !rebuilt && len(tt.kept) > 0; (past == 1) != wantPast {
				t.Errorf("%d rows_past_last_record lines, want one: %v", past, wantPast)
			}
			wantNames := 3
			if tt.moved != nil {
				wantNames++
			}
			if tt.damaged {
				wantNames++
			}
			if got := files(t, dir); len(got) != wantNames {
				t.Errorf("data dir holds %d files, want %d: %v", len(got), wantNames, slices.Sorted(mapKeys(got)))
			}

			// The store goes on from there, and the next start agrees.
			w := writerOver(t, s)
			held, _, _ := w.Status(3)
			more := persisttest.Bets(3, 100, 2)
			put(t, w, 3, held, more)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			wantRows = append(wantRows, tagged(3, more)...)
			s = open(t, dir, testOpts)
			checkState(t, s, wantRows, finished)
		})
	}
}

func mapKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestRecoverEachRecordCorrupt flips a byte inside each record of a
// journal of several commits in turn: a damaged record before the last
// cannot be a crash, so Open refuses; the last one can, so Open starts
// and keeps the rows of its group.
func TestRecoverEachRecordCorrupt(t *testing.T) {
	f := newFixture(t)
	opts := testOpts
	opts.Sync = noSync
	for k := range fixtureRecords {
		start, end := f.recordStart(k), f.ends[k]
		last := k == fixtureRecords-1
		// For the last record, every byte of its checksum and payload. For
		// the others, the middle of the payload, and (-1) a length that runs
		// past the end of the journal as a torn record's would: the intact
		// records after it tell them apart.
		bytesToFlip := []int{(start + recordHeader + end) / 2, -1}
		if last {
			bytesToFlip = bytesToFlip[:0]
			for i := start + 4; i < end; i++ {
				bytesToFlip = append(bytesToFlip, i)
			}
		}
		for _, i := range bytesToFlip {
			dir := f.copy(t)
			var j []byte
			if i < 0 {
				j = bytes.Clone(f.journal)
				binary.BigEndian.PutUint32(j[start:], uint32(len(f.journal)))
			} else {
				j = flip(f.journal, i)
			}
			writeFile(t, dir, JournalFile, j)
			if !last {
				refuse(t, dir, opts, ErrCorrupt, JournalFile, fmt.Sprintf("record %d at byte %d", k, start), "--rebuild-journal")
				continue
			}
			s, err := Open(dir, opts)
			if err != nil {
				t.Fatalf("last record, byte %d of %d flipped: %v, want a start as after a crash", i-start, end-start, err)
			}
			if got := readFile(t, dir, BetsFile); !bytes.Equal(got, f.csv) {
				t.Fatalf("last record, byte %d flipped: bets.csv changed", i-start)
			}
			checkState(t, s, f.rows, f.finished)
			s.Close()
		}
	}
}

// TestRecoverLastRecordLength damages the length of the last record: a
// length that runs past the end of the journal looks like a torn append
// and starts; any other damage to it is refused.
func TestRecoverLastRecordLength(t *testing.T) {
	f := newFixture(t)
	start := f.recordStart(fixtureRecords - 1)
	n := binary.BigEndian.Uint32(f.journal[start:])
	tests := []struct {
		name   string
		length uint32
		starts bool
	}{
		{"one byte longer", n + 1, true},
		{"as long as the limit", maxRecord, true},
		{"above the limit", maxRecord + 1, false},
		{"one byte shorter", n - 1, false},
		{"zero", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := f.copy(t)
			j := bytes.Clone(f.journal)
			binary.BigEndian.PutUint32(j[start:], tt.length)
			writeFile(t, dir, JournalFile, j)
			if !tt.starts {
				refuse(t, dir, testOpts, ErrCorrupt, JournalFile, fmt.Sprintf("record %d", fixtureRecords-1))
				return
			}
			checkState(t, open(t, dir, testOpts), f.rows, f.finished)
			if got := readFile(t, dir, BetsFile); !bytes.Equal(got, f.csv) {
				t.Error("bets.csv changed")
			}
		})
	}
}

// TestRecoverJournalCut cuts the journal at every byte of its first and
// last two records, and at the edges and middle of the others. Inside the
// first record (written whole by a rename at every start) that is damage,
// and Open refuses; inside any later one it is what a crash leaves, and at
// a record boundary it is a clean shorter journal: either way Open starts,
// keeps every row of bets.csv, and keeps the FINISHED facts of the records
// left whole.
func TestRecoverJournalCut(t *testing.T) {
	f := newFixture(t)
	opts := testOpts
	opts.Sync = noSync
	finishEnd := f.ends[3] // the record of agency 2's FINISHED
	var cuts []int
	for k := range fixtureRecords {
		start, end := f.recordStart(k), f.ends[k]
		if k == 0 || k >= fixtureRecords-2 {
			for cut := start; cut < end; cut++ {
				cuts = append(cuts, cut)
			}
			continue
		}
		cuts = append(cuts, start, start+1, start+recordHeader-1, start+recordHeader, (start+end)/2, end-1)
	}
	// lost reports whether a cut at byte cut leaves a record whose offset is
	// readable and short of the rows bets.csv holds: the records after it
	// are gone, so the start is refused rather than taken for a crash.
	lost := func(cut int) bool {
		for k := range fixtureRecords {
			start, end := f.recordStart(k), f.ends[k]
			if cut < start || cut >= end {
				continue
			}
			r, _, err := parseRecord(f.journal[start:end])
			if err != nil {
				t.Fatalf("fixture record %d: %v", k, err)
			}
			return cut-start >= recordHeader+9 && r.offset < int64(len(f.csv))
		}
		return false
	}
	for _, cut := range cuts {
		dir := f.copy(t)
		writeFile(t, dir, JournalFile, f.journal[:cut])
		if cut < f.ends[0] {
			refuse(t, dir, opts, ErrCorrupt, JournalFile, "--rebuild-journal")
			continue
		}
		if lost(cut) {
			refuse(t, dir, opts, ErrCorrupt, JournalFile, "records after it are missing")
			continue
		}
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatalf("journal cut at byte %d of %d: %v", cut, len(f.journal), err)
		}
		if got := readFile(t, dir, BetsFile); !bytes.Equal(got, f.csv) {
			t.Fatalf("journal cut at byte %d: bets.csv changed", cut)
		}
		finished := f.finished
		if cut < finishEnd {
			finished = nil
		}
		checkState(t, s, f.rows, finished)
		if t.Failed() {
			t.Fatalf("journal cut at byte %d of %d (records end at %v)", cut, len(f.journal), f.ends)
		}
		s.Close()
	}
}

// TestRecoverCycles stores random batches over several reopen cycles and
// checks after each that recovery rebuilt counts, chains, FINISHED facts
// and the winners index exactly, and that LoadDir streams the same rows.
func TestRecoverCycles(t *testing.T) {
	const agencies = 4
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	opts := Options{Agencies: agencies, WinningNumber: winning, Sync: noSync}
	dir := t.TempDir()
	var rows []Bet
	held := make([]uint64, agencies+1)
	finished := map[uint32]uint64{}
	for cycle := range 4 {
		w := openWriter(t, dir, opts)
		for range 30 {
			a := uint32(1 + rng.IntN(agencies))
			if _, done := finished[a]; done {
				continue
			}
			if cycle > 0 && rng.IntN(12) == 0 {
				finish(t, w, a, held[a])
				finished[a] = held[a]
				continue
			}
			// Some batches resend what is held already.
			first := held[a] - min(held[a], uint64(rng.IntN(3)))
			n := 1 + rng.IntN(15)
			res := do(t, w, persist.Request{Agency: a, First: first, Bets: persisttest.Bets(a, first, n)})
			wantHeld := max(held[a], first+uint64(n))
			if res.Err != nil || res.Held != wantHeld || res.Chain != receipt.ChainOf(persisttest.Bets(a, 0, int(wantHeld))) {
				t.Fatalf("cycle %d agency %d batch at %d of %d: %+v", cycle, a, first, n, res)
			}
			rows = append(rows, tagged(a, persisttest.Bets(a, held[a], int(res.Held-held[a])))...)
			held[a] = res.Held
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		s := open(t, dir, opts)
		checkState(t, s, rows, finished)
		checkJournal(t, s)
		var loaded []Bet
		for b, err := range LoadDir(dir) {
			if err != nil {
				t.Fatal(err)
			}
			loaded = append(loaded, b)
		}
		sameBets(t, loaded, rows)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if names := slices.Sorted(mapKeys(files(t, dir))); !slices.Equal(names, []string{BetsFile, JournalFile, MetaFile}) {
			t.Fatalf("cycle %d: data dir holds %v, want only the data files", cycle, names)
		}
	}
	sameBets(t, readBets(t, dir), rows)
}

// TestLoadDir checks that tools read what the journal vouches for: rows
// past its last record are not committed yet.
func TestLoadDir(t *testing.T) {
	f := newFixture(t)
	appendFile(t, f.dir, BetsFile, rowOf(1, persisttest.Bet(1, 8)))
	var got []Bet
	for b, err := range LoadDir(f.dir) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	sameBets(t, got, f.rows)

	// Without a journal, every row of the file.
	os.Remove(filepath.Join(f.dir, JournalFile))
	got = got[:0]
	for b, err := range LoadDir(f.dir) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	sameBets(t, got, append(f.rows, tagged(1, persisttest.Bets(1, 8, 1))...))

	for _, err := range LoadDir(t.TempDir()) {
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("LoadDir of an empty dir: %v, want a not-exist error", err)
		}
	}
}

// TestReadLottery reads lottery.json as tools do: the same lottery id as
// the store's.
func TestReadLottery(t *testing.T) {
	f := newFixture(t)
	s := open(t, f.dir, testOpts)
	st, _ := s.State()
	got, err := ReadLottery(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Lottery{Agencies: 3, WinningNumber: winning, ID: st.Lottery}); got != want {
		t.Errorf("ReadLottery: %+v, want %+v", got, want)
	}
	if st.Lottery == (frame.Hash{}) {
		t.Error("the lottery id is the zero hash")
	}
	other := newFixture(t)
	if o, err := ReadLottery(other.dir); err != nil || o.ID == got.ID {
		t.Errorf("another lottery with the same settings: %+v, %v; want another id", o, err)
	}
	writeFile(t, other.dir, MetaFile, []byte(`{"format":1}`))
	if _, err := ReadLottery(other.dir); !errors.Is(err, ErrMismatch) {
		t.Errorf("ReadLottery of format 1: %v, want ErrMismatch", err)
	}
	if _, err := ReadLottery(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadLottery of an empty dir: %v, want a not-exist error", err)
	}
}

// drawnDir is a closed data directory whose three agencies all finished and
// whose draw's statement is saved, with that statement.
func drawnDir(t *testing.T) (string, receipt.Statement) {
	t.Helper()
	dir := t.TempDir()
	b, err := Open(dir, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	w := writerOver(t, b)
	sizes := []int{5, 0, 3}
	for i, n := range sizes {
		a := uint32(i + 1)
		if n > 0 {
			put(t, w, a, 0, persisttest.Bets(a, 0, n))
		}
		finish(t, w, a, uint64(n))
	}
	st, _ := b.State()
	leaves := make([]receipt.Leaf, len(sizes))
	for i, a := range st.Agencies {
		leaves[i] = receipt.Leaf{Agency: uint32(i + 1), Bets: a.Held, Chain: a.Chain.Sum()}
	}
	statement := receipt.Statement{Commitment: receipt.Commitment{Lottery: st.Lottery, Agencies: uint32(len(sizes)),
		Root: receipt.NewTree(leaves).Root()}, Leaves: leaves}
	data, err := statement.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.SaveDraw(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, statement
}

// TestRecoverHoldsTheDrawStatement: once the draw's statement is saved, the
// agencies hold its root. A journal rebuilt after it gets every FINISHED
// back from it; a statement that does not fit the lottery or its bets
// refuses the start, naming commitment.json; and a later SaveDraw keeps
// the first statement.
func TestRecoverHoldsTheDrawStatement(t *testing.T) {
	dir, statement := drawnDir(t)
	write := func(dir string, st receipt.Statement) {
		data, err := st.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, DrawFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("rebuilt journal", func(t *testing.T) {
		d := copyDir(t, dir)
		if err := os.Remove(filepath.Join(d, JournalFile)); err != nil {
			t.Fatal(err)
		}
		opts := testOpts
		opts.RebuildJournal = true
		st, _ := open(t, d, opts).State()
		for i, a := range st.Agencies {
			if l := statement.Leaves[i]; !a.Finished || a.Total != l.Bets || a.Held != l.Bets {
				t.Errorf("agency %d: finished %v with %d, holds %d; the draw committed to %d", i+1, a.Finished, a.Total, a.Held, l.Bets)
			}
		}
	})
	for _, tc := range []struct {
		name string
		edit func(d string)
		want string
	}{
		{"not a statement", func(d string) {
			if err := os.WriteFile(filepath.Join(d, DrawFile), []byte("{not json"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not this lottery's draw statement"},
		{"another lottery", func(d string) {
			other := statement
			other.Lottery[0] ^= 1
			write(d, other)
		}, "the draw of lottery"},
		{"other bets", func(d string) {
			other := statement
			other.Leaves = slices.Clone(statement.Leaves)
			other.Leaves[0].Bets++
			other.Root = receipt.NewTree(other.Leaves).Root()
			write(d, other)
		}, "bets changed after the draw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := copyDir(t, dir)
			tc.edit(d)
			_, err := Open(d, testOpts)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), DrawFile) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v; want ErrCorrupt naming %s and saying %q", err, DrawFile, tc.want)
			}
		})
	}
	t.Run("SaveDraw keeps the first", func(t *testing.T) {
		d := copyDir(t, dir)
		first := readFile(t, d, DrawFile)
		kept, err := open(t, d, testOpts).SaveDraw([]byte(`{"another":"statement"}`))
		if err != nil || !bytes.Equal(kept, first) || !bytes.Equal(readFile(t, d, DrawFile), first) {
			t.Errorf("SaveDraw over a saved statement: %q, %v; want the first kept", kept, err)
		}
	})
}
