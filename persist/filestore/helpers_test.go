package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/persisttest"
	"github.com/tp0/loteria/receipt"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		// The crash test's child is killed; it never reaches goleak.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}

const winning = persisttest.Winning

var testOpts = Options{Agencies: 3, WinningNumber: winning}

// noSync skips fsync, for tests that open hundreds of directories and do
// not crash the machine.
func noSync(*os.File) error { return nil }

// open opens dir as a file store; the test's cleanup closes it.
func open(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() }) // a second Close does nothing
	return s
}

// openWriter opens dir and starts the single writer over it; the test's
// cleanup closes both.
func openWriter(t testing.TB, dir string, opts Options) *persist.Store {
	t.Helper()
	return writerOver(t, open(t, dir, opts))
}

// writerOver starts the single writer over an open store; the test's
// cleanup closes it.
func writerOver(t testing.TB, s *Store) *persist.Store {
	t.Helper()
	w, err := persist.New(s, persist.Options{Agencies: s.opts.Agencies, WinningNumber: s.opts.WinningNumber})
	if err != nil {
		t.Fatalf("persist.New: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// do submits r and waits for its result.
func do(t testing.TB, w *persist.Store, r persist.Request) persist.Result {
	t.Helper()
	ch := make(chan persist.Result, 1)
	r.Done = func(res persist.Result) { ch <- res }
	if err := w.Submit(&r); err != nil {
		t.Fatalf("Submit(agency %d, first %d): %v", r.Agency, r.First, err)
	}
	select {
	case res := <-ch:
		return res
	case <-time.After(10 * time.Second):
		t.Fatalf("Done not called for agency %d first %d", r.Agency, r.First)
		return persist.Result{}
	}
}

// put stores bets at first and fails the test unless all are new.
func put(t testing.TB, w *persist.Store, agency uint32, first uint64, bets []frame.Bet) {
	t.Helper()
	res := do(t, w, persist.Request{Agency: agency, First: first, Bets: bets})
	if res.Err != nil || res.Stored != len(bets) {
		t.Fatalf("batch of agency %d at %d of %d bets: %+v, want all stored", agency, first, len(bets), res)
	}
}

// finish records agency's FINISHED with total bets.
func finish(t testing.TB, w *persist.Store, agency uint32, total uint64) {
	t.Helper()
	if res := do(t, w, persist.Request{Agency: agency, Finish: true, Total: total}); res.Err != nil {
		t.Fatalf("FINISHED of agency %d with %d: %v", agency, total, res.Err)
	}
}

// tagged attaches agency to bets, as they come back from LoadBets.
func tagged(agency uint32, bets []frame.Bet) []Bet {
	out := make([]Bet, len(bets))
	for i, b := range bets {
		out[i] = Bet{Agency: agency, Bet: b}
	}
	return out
}

// readBets loads every row of dir's bets.csv, failing on any error.
func readBets(t testing.TB, dir string) []Bet {
	t.Helper()
	var out []Bet
	for b, err := range LoadBetsFile(filepath.Join(dir, BetsFile)) {
		if err != nil {
			t.Fatalf("LoadBetsFile: %v", err)
		}
		out = append(out, b)
	}
	return out
}

// sameBets fails the test at the first difference between got and want.
func sameBets(t testing.TB, got, want []Bet) {
	t.Helper()
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("bet %d:\n got %s\nwant %s", i, showBet(got[i]), showBet(want[i]))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d bets, want %d", len(got), len(want))
	}
}

func showBet(b Bet) string {
	return fmt.Sprintf("%d %q %q %q %s %d", b.Agency, b.FirstName, b.LastName, b.Document, b.Birthdate, b.Number)
}

// byAgency splits rows into each agency's bets, keeping their order.
func byAgency(rows []Bet) map[uint32][]frame.Bet {
	m := map[uint32][]frame.Bet{}
	for _, b := range rows {
		m[b.Agency] = append(m[b.Agency], b.Bet)
	}
	return m
}

// winnersOf is each agency's winning documents among rows, in order.
func winnersOf(rows []Bet) map[uint32][]string {
	out := map[uint32][]string{}
	for _, b := range rows {
		if b.Number == winning {
			out[b.Agency] = append(out[b.Agency], b.Document)
		}
	}
	return out
}

// checkState fails the test unless s holds exactly rows: every agency's
// count and chain, the winners index and the size come from them, and the
// finished agencies are those of finished (agency → total).
func checkState(t testing.TB, s *Store, rows []Bet, finished map[uint32]uint64) {
	t.Helper()
	st, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	per := byAgency(rows)
	if len(st.Agencies) != s.opts.Agencies {
		t.Fatalf("state of %d agencies, want %d", len(st.Agencies), s.opts.Agencies)
	}
	for i, a := range st.Agencies {
		agency := uint32(i + 1)
		total, fin := finished[agency]
		if a.Held != uint64(len(per[agency])) || a.Chain.Sum() != receipt.ChainOf(per[agency]) || a.Chain.Len() != a.Held {
			t.Errorf("agency %d: held %d (chain over %d), want %d and the chain over its rows", agency, a.Held, a.Chain.Len(), len(per[agency]))
		}
		if a.Finished != fin || a.Total != total {
			t.Errorf("agency %d: finished %t with %d, want %t with %d", agency, a.Finished, a.Total, fin, total)
		}
	}
	got, err := s.Winners()
	if err != nil {
		t.Fatal(err)
	}
	want := winnersOf(rows)
	if len(got) != len(want) {
		t.Errorf("winners of %d agencies, want %d", len(got), len(want))
	}
	for a, docs := range want {
		if !slices.Equal(got[a], docs) {
			t.Errorf("winners of agency %d: %q, want %q", a, got[a], docs)
		}
	}
	if size := fileSize(t, s.Dir(), BetsFile); s.Size() != size {
		t.Errorf("Size %d, bets.csv has %d bytes", s.Size(), size)
	}
}

// fileSize is the size of dir/name.
func fileSize(t testing.TB, dir, name string) int64 {
	t.Helper()
	info, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

func readFile(t testing.TB, dir, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeFile(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// appendFile appends data to dir/name.
func appendFile(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// records parses a whole journal, failing on any damage.
func records(t testing.TB, data []byte) (recs []record, ends []int) {
	t.Helper()
	for off := 0; off < len(data); {
		r, n, err := parseRecord(data[off:])
		if err != nil {
			t.Fatalf("journal record %d at byte %d: %v", len(recs), off, err)
		}
		off += n
		recs, ends = append(recs, r), append(ends, off)
	}
	return recs, ends
}

// files is every file of dir but the lock, by name, for before/after
// comparisons.
func files(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if e.Name() != LockFile {
			out[e.Name()] = readFile(t, dir, e.Name())
		}
	}
	return out
}

// diffFiles describes how two snapshots of a directory differ, or "".
func diffFiles(before, after map[string][]byte) string {
	var out []string
	for name, data := range before {
		got, ok := after[name]
		switch {
		case !ok:
			out = append(out, name+" removed")
		case !bytes.Equal(got, data):
			out = append(out, fmt.Sprintf("%s changed (%d bytes, was %d)", name, len(got), len(data)))
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			out = append(out, name+" added")
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// copyDir copies the files of src (but the lock) into a new directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	for name, data := range files(t, src) {
		writeFile(t, dst, name, data)
	}
	return dst
}

// aside is the one file of dir whose name starts with prefix (the tail of
// bets.csv or a damaged journal set aside), or nil when there is none.
func aside(t testing.TB, dir, prefix string) []byte {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, prefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	switch len(matches) {
	case 0:
		return nil
	case 1:
		data, err := os.ReadFile(matches[0])
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	t.Fatalf("%d files %s*, want at most one", len(matches), prefix)
	return nil
}

// refuse fails the test unless opening dir fails with target and every
// phrase, twice in a row, leaving the data files as they were.
func refuse(t testing.TB, dir string, opts Options, target error, phrases ...string) error {
	t.Helper()
	before := files(t, dir)
	var first error
	for attempt := range 2 {
		s, err := Open(dir, opts)
		if err == nil {
			s.Close()
			t.Fatalf("attempt %d: Open succeeded, want %v", attempt, target)
		}
		if !errors.Is(err, target) {
			t.Fatalf("attempt %d: %v, want %v", attempt, err, target)
		}
		for _, p := range phrases {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("attempt %d: error %q does not say %q", attempt, err, p)
			}
		}
		if first == nil {
			first = err
		}
	}
	after := files(t, dir)
	for name, data := range after {
		if _, ok := before[name]; !ok && len(data) == 0 {
			delete(after, name) // Open creates an empty bets.csv when it has none
		}
	}
	if d := diffFiles(before, after); d != "" {
		t.Errorf("a refused Open changed the data dir: %s", d)
	}
	return first
}
