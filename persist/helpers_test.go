package persist

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tp0/loteria/frame"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		// The crash test's child process is killed, never reaching goleak.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}

// Names that exercise the quoting: commas, quotes, line breaks and UTF-8.
var (
	firstNames = []string{"Santiago Lionel", "María José", "Juan, Carlos", `Ana "La Rubia"`, "Zoë", "José\nLuis", "Ñandú", "O'Brien"}
	lastNames  = []string{"Lorca", "Pérez García", "D'Alessandro", `"Quoted"`, "Müller, Jr.", "Nguyễn", "Smith\r\nJones", "Gómez"}
)

// betAt is bet i of agency's deterministic stream.
func betAt(agency uint32, i uint64) frame.Bet {
	k := int(i) + int(agency)*7
	return frame.Bet{
		FirstName: firstNames[k%len(firstNames)],
		LastName:  lastNames[(k/3)%len(lastNames)],
		Document:  fmt.Sprintf("%08d", uint64(agency)*100000+i%100000),
		Birthdate: frame.NewDate(1940+k%60, 1+k%12, 1+k%28),
		Number:    uint16((i*7919 + uint64(agency)*31) % 10000),
	}
}

// stream is bets [first, first+n) of agency's stream.
func stream(agency uint32, first uint64, n int) []frame.Bet {
	bets := make([]frame.Bet, n)
	for i := range bets {
		bets[i] = betAt(agency, first+uint64(i))
	}
	return bets
}

// openStore opens dir and closes the store when the test ends, unless the
// test closed it itself.
func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// do submits r and waits for its result.
func do(t testing.TB, s *Store, r Request) Result {
	t.Helper()
	ch := make(chan Result, 1)
	r.Done = func(res Result) { ch <- res }
	if err := s.Submit(&r); err != nil {
		t.Fatalf("Submit(agency %d, first %d): %v", r.Agency, r.First, err)
	}
	select {
	case res := <-ch:
		return res
	case <-time.After(10 * time.Second):
		t.Fatalf("Done not called within 10s for agency %d first %d", r.Agency, r.First)
		return Result{}
	}
}

// store submits a batch and fails the test unless it stored want bets.
func store(t testing.TB, s *Store, agency uint32, first uint64, bets []frame.Bet, want int) Result {
	t.Helper()
	res := do(t, s, Request{Agency: agency, First: first, Bets: bets})
	if res.Err != nil || res.Stored != want {
		t.Fatalf("batch agency %d first %d len %d: got %+v, want Stored %d and no error", agency, first, len(bets), res, want)
	}
	return res
}

// readBets loads every bet of dir's bets.csv, failing on any error.
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

// tagged attaches agency to bets, as they come back from LoadBets.
func tagged(agency uint32, bets []frame.Bet) []Bet {
	out := make([]Bet, len(bets))
	for i, b := range bets {
		out[i] = Bet{Agency: agency, Bet: b}
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

// byAgency splits bets into one slice per agency, keeping their order.
func byAgency(bets []Bet) map[uint32][]frame.Bet {
	m := map[uint32][]frame.Bet{}
	for _, b := range bets {
		m[b.Agency] = append(m[b.Agency], b.Bet)
	}
	return m
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

// journalRecords parses dir's journal, failing on a torn record.
func journalRecords(t testing.TB, dir string) []record {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, JournalFile))
	if err != nil {
		t.Fatal(err)
	}
	var recs []record
	for len(data) > 0 {
		r, n, err := parseRecord(data)
		if err != nil {
			t.Fatalf("journal record %d: %v", len(recs), err)
		}
		recs = append(recs, r)
		data = data[n:]
	}
	return recs
}

// status is every agency's held count and finished flag, for comparisons.
func status(s *Store) []string {
	var out []string
	for a := 1; a <= s.Agencies(); a++ {
		held, fin := s.Status(uint32(a))
		out = append(out, fmt.Sprintf("%d:%d:%t", a, held, fin))
	}
	return append(out, fmt.Sprintf("finished=%d", s.FinishedCount()))
}

func sameStatus(t testing.TB, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("status:\n got %v\nwant %v", got, want)
	}
}
