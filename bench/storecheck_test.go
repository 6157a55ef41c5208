package bench

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/filestore"
)

// storeWith writes bets for agencies 1..len(perAgency) through a real store
// and closes it, one request per agency; it returns the directory and what
// each agency sent.
func storeWith(t *testing.T, perAgency []int) (string, []agencyWant) {
	t.Helper()
	cfg := testConfig(t, len(perAgency))
	st, err := eventserver.OpenStore(cfg.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	want := make([]agencyWant, len(perAgency))
	for i, n := range perAgency {
		bets := someBets(t, uint32(i+1), n)
		done := make(chan persist.Result, 1)
		if err := st.Submit(&persist.Request{Agency: uint32(i + 1), Bets: bets, Done: func(r persist.Result) { done <- r }}); err != nil {
			t.Fatal(err)
		}
		if r := <-done; r.Err != nil {
			t.Fatal(r.Err)
		}
		want[i] = wantFromBets(bets)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg.DataDir, want
}

func TestCheckStoreCountsRowsAndCommits(t *testing.T) {
	dir, want := storeWith(t, []int{40, 40, 40})
	st, err := checkStore(dir, want)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, filestore.BetsFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Rows != 120 || st.CSVBytes != info.Size() {
		t.Errorf("stats %+v, want 120 rows and %d bytes", st, info.Size())
	}
	// One request at a time, so one commit each; recovery may add a record.
	if st.BetCommits != 3 || st.Commits < 3 {
		t.Errorf("commits %d (with bets %d), want 3 with bets", st.Commits, st.BetCommits)
	}
}

func TestCheckStoreFailsOnAnythingElse(t *testing.T) {
	dir, want := storeWith(t, []int{40, 39})
	for name, w := range map[string][]agencyWant{
		"a bet missing":        {want[0], {Bets: 40, Chain: want[1].Chain}},
		"a bet more":           {{Bets: 39, Chain: want[0].Chain}, want[1]},
		"another bet":          {want[0], {Bets: 39, Chain: frame.Hash{1}}},
		"an unknown agency":    {want[0]},
		"the agencies swapped": {want[1], want[0]},
	} {
		if _, err := checkStore(dir, w); !errors.Is(err, ErrBrokenRun) {
			t.Errorf("%s: %v, want ErrBrokenRun", name, err)
		}
	}
	if _, err := checkStore(dir, want); err != nil {
		t.Errorf("the right expectation failed: %v", err)
	}
	if _, err := checkStore(t.TempDir(), want[:1]); err == nil {
		t.Error("no bets.csv at all passed the check")
	}
	_, err := checkStore(dir, []agencyWant{want[0], {Bets: 39, Chain: frame.Hash{1}}})
	if err == nil || !strings.Contains(err.Error(), "chain over agency 2") {
		t.Errorf("a changed bet: %v, want the chain of agency 2 named", err)
	}
}

func TestWantFromSets(t *testing.T) {
	sets, err := buildDatasets(datasetPlan{Distinct: 2, Bets: 10, Batch: 5, WinningNumber: 7574, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := wantFromSets(sets, 3)
	if len(want) != 3 || want[2] != want[0] || want[1].Chain != sets[1].final || want[0].Bets != 10 {
		t.Errorf("wantFromSets = %+v", want)
	}
}

func TestCountCommits(t *testing.T) {
	rec := func(format byte, offset uint64) []byte {
		payload := append([]byte{format}, binary.BigEndian.AppendUint64(nil, offset)...)
		payload = append(payload, 0, 0, 0, 0, 0, 0, 0, 0) // no held, no finished entries
		b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
		b = binary.BigEndian.AppendUint32(b, 0)
		return append(b, payload...)
	}
	var j []byte
	for _, off := range []uint64{100, 250, 250, 400} { // the third one only records a FINISHED
		j = append(j, rec(2, off)...)
	}
	c, bc, err := countCommits(j)
	if err != nil || c != 4 || bc != 3 {
		t.Errorf("countCommits = %d, %d, %v; want 4 records, 3 with bets", c, bc, err)
	}
	if _, _, err := countCommits(j[:len(j)-3]); err == nil {
		t.Error("a torn last record passed")
	}
	if _, _, err := countCommits(append(j, rec(3, 500)...)); err == nil {
		t.Error("a record of another format passed")
	}
}
