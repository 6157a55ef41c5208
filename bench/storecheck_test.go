package bench

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/persist"
)

// storeWith writes bets for agencies 1..len(perAgency) through a real store
// and closes it, one request per agency.
func storeWith(t *testing.T, perAgency []int) string {
	t.Helper()
	dir := t.TempDir()
	st, err := persist.Open(dir, persist.Options{Agencies: len(perAgency), WinningNumber: 7574})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range perAgency {
		bets, err := agency.SyntheticBets(agency.SynthOptions{Agency: uint32(i + 1), Bets: n, WinningNumber: 7574, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan persist.Result, 1)
		if err := st.Submit(&persist.Request{Agency: uint32(i + 1), Bets: bets, Done: func(r persist.Result) { done <- r }}); err != nil {
			t.Fatal(err)
		}
		if r := <-done; r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCheckStoreCountsRowsAndCommits(t *testing.T) {
	dir := storeWith(t, []int{40, 40, 40})
	st, err := checkStore(dir, 3, 40)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, persist.BetsFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Rows != 120 || st.CSVBytes != info.Size() {
		t.Errorf("stats %+v, want 120 rows and %d bytes", st, info.Size())
	}
	if st.Commits != 3 || st.BetCommits != 3 {
		t.Errorf("commits %d (with bets %d), want 3 and 3: one request at a time", st.Commits, st.BetCommits)
	}
}

func TestCheckStoreFailsOnMissingBets(t *testing.T) {
	dir := storeWith(t, []int{40, 39})
	_, err := checkStore(dir, 2, 40)
	if !errors.Is(err, ErrBrokenRun) {
		t.Fatalf("79 of 80 bets stored: %v, want ErrBrokenRun", err)
	}
	dir = storeWith(t, []int{41, 39})
	if _, err := checkStore(dir, 2, 40); !errors.Is(err, ErrBrokenRun) {
		t.Fatalf("80 bets but 41 and 39: %v, want ErrBrokenRun", err)
	}
	if _, err := checkStore(t.TempDir(), 1, 1); err == nil {
		t.Fatal("no bets.csv at all passed the check")
	}
}

func TestCountCommits(t *testing.T) {
	rec := func(offset uint64) []byte {
		payload := binary.BigEndian.AppendUint64(nil, offset)
		payload = append(payload, 0, 0, 0, 0, 0, 0, 0, 0) // no held, no finished entries
		b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
		b = binary.BigEndian.AppendUint32(b, 0)
		return append(b, payload...)
	}
	var j []byte
	for _, off := range []uint64{100, 250, 250, 400} { // the third one only records a FINISHED
		j = append(j, rec(off)...)
	}
	c, bc, err := countCommits(j)
	if err != nil || c != 4 || bc != 3 {
		t.Errorf("countCommits = %d, %d, %v; want 4 records, 3 with bets", c, bc, err)
	}
	if _, _, err := countCommits(j[:len(j)-3]); err == nil {
		t.Error("a torn last record passed")
	}
}
