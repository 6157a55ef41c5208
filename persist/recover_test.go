package persist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/frame"
)

var testOpts = Options{Agencies: 3, WinningNumber: 7574}

// committedDir builds a closed data dir through four commits, and returns
// its bets and status.
func committedDir(t *testing.T) (dir string, bets []Bet, st []string) {
	t.Helper()
	dir = t.TempDir()
	s := openStore(t, dir, testOpts)
	store(t, s, 1, 0, stream(1, 0, 5), 5)
	store(t, s, 2, 0, stream(2, 0, 3), 3)
	if res := do(t, s, Request{Agency: 2, Finish: true, Total: 3}); res.Err != nil {
		t.Fatal(res.Err)
	}
	store(t, s, 1, 5, []frame.Bet{trickyBets[4].Bet, trickyBets[2].Bet, betAt(1, 7)}, 3)
	st = status(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(journalRecords(t, dir)); n != 4 {
		t.Fatalf("journal has %d records after 4 commits, want 4", n)
	}
	return dir, readBets(t, dir), st
}

func TestRecoverCutsTornTails(t *testing.T) {
	// A full record for a commit that never happened, to tear.
	future := appendRecord(nil, &record{offset: 1 << 20, held: []heldEntry{{1, 1000}}})
	uncommittedRows := appendRow(appendRow(nil, 1, &trickyBets[0].Bet), 3, &trickyBets[1].Bet)
	cases := []struct {
		name          string
		bets, journal []byte // appended to each file
	}{
		{"partial row", []byte("1,Juan,Pe"), nil},
		{"rows without a journal record", uncommittedRows, nil},
		{"rows and a torn record", uncommittedRows, future[:len(future)-3]},
		{"binary garbage in both", []byte("\"\x00\xff,\r\n\x01"), []byte{0xde, 0xad, 0xbe}},
		{"torn record header", nil, future[:5]},
		{"record with a bad checksum", nil, append(append([]byte{}, future[:8]...), append([]byte{future[8] ^ 1}, future[9:]...)...)},
		{"length beyond the file", nil, append(binary.BigEndian.AppendUint32(nil, 1000), future[4:]...)},
		{"length below the minimum", nil, append(binary.BigEndian.AppendUint32(nil, 8), future[4:]...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, want, wantStatus := committedDir(t)
			betsSize := fileSize(t, dir, BetsFile)
			appendFile(t, dir, BetsFile, tc.bets)
			appendFile(t, dir, JournalFile, tc.journal)

			core, logs := observer.New(zap.InfoLevel)
			opts := testOpts
			opts.Logger = zap.New(core)
			s := openStore(t, dir, opts)
			sameStatus(t, status(s), wantStatus)
			if got := fileSize(t, dir, BetsFile); got != betsSize {
				t.Errorf("bets.csv has %d bytes after recovery, want the committed %d", got, betsSize)
			}
			if recs := journalRecords(t, dir); len(recs) != 1 || recs[0].offset != betsSize {
				t.Errorf("journal after recovery: %+v, want one record at offset %d", recs, betsSize)
			}
			if len(tc.bets) > 0 {
				cut := logs.FilterMessage("store_recover").FilterField(zap.String("file", BetsFile)).All()
				if len(cut) != 1 || cut[0].ContextMap()["cut_bytes"] != int64(len(tc.bets)) {
					t.Errorf("recovery log for bets.csv: %+v, want cut_bytes %d", cut, len(tc.bets))
				}
			}
			sameBets(t, readBets(t, dir), want)

			// The store keeps working where the committed state left off.
			store(t, s, 1, 8, stream(1, 8, 2), 2)
			if res := do(t, s, Request{Agency: 2, First: 3, Bets: stream(2, 3, 1)}); !errors.Is(res.Err, ErrAlreadyFinished) {
				t.Errorf("agency 2 finished before the crash; new bets: %v", res.Err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			sameBets(t, readBets(t, dir), append(want, tagged(1, stream(1, 8, 2))...))
		})
	}
}

// TestRecoverTrustsJournalPrefix corrupts a middle record: the records
// after it are dropped too, even though they are intact.
func TestRecoverTrustsJournalPrefix(t *testing.T) {
	dir, all, _ := committedDir(t)
	data, err := os.ReadFile(filepath.Join(dir, JournalFile))
	if err != nil {
		t.Fatal(err)
	}
	first, size, err := parseRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	data[size+recordHeader] ^= 0x80 // second record's payload
	if err := os.WriteFile(filepath.Join(dir, JournalFile), data, 0o644); err != nil {
		t.Fatal(err)
	}

	s := openStore(t, dir, testOpts)
	sameStatus(t, status(s), []string{"1:5:false", "2:0:false", "3:0:false", "finished=0"})
	if got := fileSize(t, dir, JournalFile); got != int64(size) {
		t.Errorf("journal has %d bytes, want only the first record's %d", got, size)
	}
	if got := fileSize(t, dir, BetsFile); got != first.offset {
		t.Errorf("bets.csv has %d bytes, want the first record's offset %d", got, first.offset)
	}
	sameBets(t, readBets(t, dir), all[:5])
	// Agency 2 resends from 0 and is stored again, once.
	store(t, s, 2, 0, stream(2, 0, 3), 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sameBets(t, readBets(t, dir), append(all[:5:5], tagged(2, stream(2, 0, 3))...))
}

func TestRecoverCompactsJournal(t *testing.T) {
	dir, want, wantStatus := committedDir(t)
	for range 2 {
		s := openStore(t, dir, testOpts)
		sameStatus(t, status(s), wantStatus)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		recs := journalRecords(t, dir)
		if len(recs) != 1 {
			t.Fatalf("journal has %d records after reopening, want 1", len(recs))
		}
		r := recs[0]
		if r.offset != fileSize(t, dir, BetsFile) || len(r.held) != 2 || len(r.finished) != 1 ||
			r.finished[0] != (heldEntry{2, 3}) {
			t.Errorf("compacted record %+v does not hold the state %v", r, wantStatus)
		}
	}
	leftovers, err := filepath.Glob(filepath.Join(dir, "*.tmp-*"))
	if err != nil || len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v %v", leftovers, err)
	}
	sameBets(t, readBets(t, dir), want)
}

func TestRecoverCorrupt(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"bets.csv shorter than the journal says", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, BetsFile), fileSize(t, dir, BetsFile)-5); err != nil {
				t.Fatal(err)
			}
		}, "but the journal vouches for"},
		{"bets.csv deleted", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, BetsFile)); err != nil {
				t.Fatal(err)
			}
		}, "has 0 bytes"},
		{"journal vouches for a future write", func(t *testing.T, dir string) {
			appendFile(t, dir, JournalFile, appendRecord(nil, &record{offset: fileSize(t, dir, BetsFile) + 1, held: []heldEntry{{1, 9}}}))
		}, "but the journal vouches for"},
		{"journal offsets go backwards", func(t *testing.T, dir string) {
			appendFile(t, dir, JournalFile, appendRecord(nil, &record{offset: 10, held: []heldEntry{{1, 1}}}))
		}, "offsets go backwards"},
		{"journal names an unknown agency", func(t *testing.T, dir string) {
			appendFile(t, dir, JournalFile, appendRecord(nil, &record{offset: fileSize(t, dir, BetsFile), held: []heldEntry{{4, 1}}}))
		}, "names agency 4 of 3"},
		{"lottery.json missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, MetaFile)); err != nil {
				t.Fatal(err)
			}
		}, "lottery.json does not"},
		{"lottery.json not JSON", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, MetaFile), []byte("{agencies: 3"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "lottery.json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, _, _ := committedDir(t)
			tc.damage(t, dir)
			before := snapshot(t, dir)
			for attempt := range 2 { // the failure leaves nothing locked or half-fixed
				s, err := Open(dir, testOpts)
				if err == nil {
					s.Close()
					t.Fatalf("attempt %d: Open of a damaged dir succeeded", attempt)
				}
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("attempt %d: error %q, want ErrCorrupt mentioning %q", attempt, err, tc.want)
				}
			}
			if after := snapshot(t, dir); after != before {
				t.Errorf("a failed Open changed the data dir:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot summarises the data files of dir for before/after comparisons.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	for _, name := range []string{BetsFile, JournalFile, MetaFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue // Open may create an empty bets.csv or journal; that is no change
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > 0 {
			fmt.Fprintf(&b, "%s:%q ", name, data)
		}
	}
	return b.String()
}

func TestRecoverMismatch(t *testing.T) {
	dir, want, wantStatus := committedDir(t)
	for _, opts := range []Options{
		{Agencies: 4, WinningNumber: 7574},
		{Agencies: 2, WinningNumber: 7574},
		{Agencies: 3, WinningNumber: 1234},
	} {
		s, err := Open(dir, opts)
		if err == nil {
			s.Close()
			t.Fatalf("Open with %+v of a lottery of 3 agencies drawing 7574 succeeded", opts)
		}
		if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "3 agencies with winning number 7574") {
			t.Errorf("Open with %d agencies and number %d: %v, want ErrMismatch naming the stored lottery", opts.Agencies, opts.WinningNumber, err)
		}
	}
	s := openStore(t, dir, testOpts)
	sameStatus(t, status(s), wantStatus)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sameBets(t, readBets(t, dir), want)
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, testOpts)
	store(t, s, 1, 0, stream(1, 0, 2), 2)
	s2, err := Open(dir, testOpts)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a data dir in use succeeded")
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) || !strings.Contains(err.Error(), "another server") {
		t.Errorf("second Open: %v, want a lock error naming the cause", err)
	}
	// The first store is unaffected.
	store(t, s, 1, 2, stream(1, 2, 2), 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, testOpts)
	if held, _ := s.Status(1); held != 4 {
		t.Errorf("held %d after reopening, want 4", held)
	}
}

func TestJournalRecord(t *testing.T) {
	r := record{offset: 123456789, held: []heldEntry{{1, 5}, {3, 1 << 40}}, finished: []heldEntry{{3, 1 << 40}}}
	data := appendRecord([]byte("prefix"), &r)[len("prefix"):]
	got, n, err := parseRecord(append(data, 0xff)) // bytes after a record are not its business
	if err != nil || n != len(data) {
		t.Fatalf("parseRecord: %v, size %d of %d", err, n, len(data))
	}
	if fmt.Sprint(got) != fmt.Sprint(r) {
		t.Fatalf("round trip: got %+v, want %+v", got, r)
	}
	for cut := range len(data) {
		if _, _, err := parseRecord(data[:cut]); !errors.Is(err, errTorn) {
			t.Fatalf("record cut to %d of %d bytes: %v, want errTorn", cut, len(data), err)
		}
	}
	for bit := range len(data) * 8 {
		flipped := append([]byte{}, data...)
		flipped[bit/8] ^= 1 << (bit % 8)
		if _, _, err := parseRecord(flipped); !errors.Is(err, errTorn) {
			t.Fatalf("record with bit %d flipped: %v, want errTorn", bit, err)
		}
	}
}
