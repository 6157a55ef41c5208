package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/persisttest"
	"github.com/tp0/loteria/receipt"
)

var errInjected = errors.New("injected disk failure")

// group builds the commit of bets [first, first+n) of each agency's
// stream, with the chains a writer would send.
func group(s *Store, batches ...[3]int) *persist.Group {
	st, _ := s.State()
	g := &persist.Group{}
	for _, b := range batches {
		agency, first, n := uint32(b[0]), uint64(b[1]), b[2]
		bets := persisttest.Bets(agency, first, n)
		g.Rows = append(g.Rows, persist.Rows{Agency: agency, First: first, Bets: bets})
		chain := receipt.NewChain()
		for _, x := range persisttest.Bets(agency, 0, int(first)+n) {
			chain.Add(&x)
		}
		g.Changes = append(g.Changes, persist.Change{Agency: agency, HeldBefore: st.Agencies[agency-1].Held,
			Held: first + uint64(n), Chain: chain})
	}
	return g
}

// TestCommitFailure fails each step of a commit in turn and checks that
// the group leaves nothing behind: both files are as they were, so are
// Size and the winners, and a reopen finds the state before the group.
func TestCommitFailure(t *testing.T) {
	// readOnly swaps *f for a read-only handle of the same file, so that
	// writing to it fails.
	readOnly := func(t *testing.T, f **os.File) {
		ro, err := os.Open((*f).Name())
		if err != nil {
			t.Fatal(err)
		}
		orig := *f
		*f = ro
		t.Cleanup(func() { orig.Close() })
	}
	failSync := func(file string) func(t *testing.T, s *Store, fail *string) {
		return func(t *testing.T, s *Store, fail *string) { *fail = file }
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, s *Store, failSyncOf *string)
		says  string
		cause error
	}{
		{"bets.csv write", func(t *testing.T, s *Store, _ *string) { readOnly(t, &s.bets) }, "write " + BetsFile, syscall.EBADF},
		{"bets.csv sync", failSync(BetsFile), "sync " + BetsFile, errInjected},
		{"journal write", func(t *testing.T, s *Store, _ *string) { readOnly(t, &s.journal) }, "write " + JournalFile, syscall.EBADF},
		{"journal sync", failSync(JournalFile), "sync " + JournalFile, errInjected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var mu sync.Mutex
			failSyncOf := ""
			opts := testOpts
			opts.Sync = func(f *os.File) error {
				mu.Lock()
				defer mu.Unlock()
				if filepath.Base(f.Name()) == failSyncOf {
					failSyncOf = ""
					return errInjected
				}
				return f.Sync()
			}
			s := open(t, dir, opts)
			if err := s.Commit(group(s, [3]int{1, 0, 5}, [3]int{2, 0, 3})); err != nil {
				t.Fatal(err)
			}
			before := files(t, dir)
			size, winners := s.Size(), winnersOf(readBets(t, dir))
			mu.Lock()
			tt.setup(t, s, &failSyncOf)
			mu.Unlock()

			err := s.Commit(group(s, [3]int{1, 5, 4}, [3]int{3, 0, 8}))
			if !errors.Is(err, tt.cause) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("Commit: %v, want an error saying %q caused by %v", err, tt.says, tt.cause)
			}
			if d := diffFiles(before, files(t, dir)); d != "" {
				t.Errorf("a failed commit left changes behind: %s", d)
			}
			if s.Size() != size {
				t.Errorf("Size %d after a failed commit, want %d", s.Size(), size)
			}
			got, _ := s.Winners()
			if len(got) != len(winners) || !slices.Equal(got[1], winners[1]) || !slices.Equal(got[2], winners[2]) || got[3] != nil {
				t.Errorf("winners after a failed commit: %v, want %v", got, winners)
			}
			s.Close()

			s = open(t, dir, testOpts)
			checkState(t, s, slices.Concat(tagged(1, persisttest.Bets(1, 0, 5)), tagged(2, persisttest.Bets(2, 0, 3))), nil)
		})
	}
}

// TestWinnersWhileCommitting reads Winners and Size from other goroutines
// while groups are committed (the race detector checks the sharing), and
// checks that every read is a prefix of the final winners.
func TestWinnersWhileCommitting(t *testing.T) {
	dir := t.TempDir()
	opts := testOpts
	opts.Sync = noSync
	s := open(t, dir, opts)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	reads := make([][]map[uint32][]string, 2)
	for r := range reads {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				w, err := s.Winners()
				if err != nil {
					t.Error(err)
					return
				}
				if s.Size() < 0 {
					t.Error("negative size")
				}
				reads[r] = append(reads[r], w)
			}
		})
	}
	held := [4]int{}
	for k := range 60 {
		a := 1 + k%3
		if err := s.Commit(group(s, [3]int{a, held[a], 7})); err != nil {
			t.Fatal(err)
		}
		held[a] += 7
	}
	close(stop)
	readers.Wait()
	final, _ := s.Winners()
	want := winnersOf(readBets(t, dir))
	for a := uint32(1); a <= 3; a++ {
		if !slices.Equal(final[a], want[a]) {
			t.Fatalf("winners of agency %d: %q, want %q", a, final[a], want[a])
		}
	}
	n := 0
	for _, rs := range reads {
		for _, w := range rs {
			n++
			for a, docs := range w {
				if len(docs) > len(want[a]) || !slices.Equal(docs, want[a][:len(docs)]) {
					t.Fatalf("a read of agency %d's winners %q is no prefix of %q", a, docs, want[a])
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no read happened")
	}
}

// TestCommitRows checks the bytes a commit appends: the rows of each batch
// of the group in order, and one journal record vouching for them.
func TestCommitRows(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, testOpts)
	journal := readFile(t, dir, JournalFile)
	g := group(s, [3]int{2, 0, 3}, [3]int{1, 0, 2})
	g.Rows = append(g.Rows, persist.Rows{Agency: 2, First: 3, Bets: persisttest.Bets(2, 3, 2)})
	g.Changes[0].Held = 5
	chain := receipt.NewChain()
	for _, b := range persisttest.Bets(2, 0, 5) {
		chain.Add(&b)
	}
	g.Changes[0].Chain = chain
	g.Changes[1].Finish, g.Changes[1].Total = true, 2
	if err := s.Commit(g); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, r := range g.Rows {
		for i := range r.Bets {
			want = AppendRow(want, r.Agency, &r.Bets[i])
		}
	}
	if got := readFile(t, dir, BetsFile); !bytes.Equal(got, want) {
		t.Errorf("bets.csv:\n got %q\nwant %q", got, want)
	}
	after := readFile(t, dir, JournalFile)
	if !bytes.HasPrefix(after, journal) {
		t.Fatal("the commit changed the journal's earlier records")
	}
	recs, _ := records(t, after[len(journal):])
	wantRec := record{offset: int64(len(want)),
		held:     []heldEntry{{2, 5, receipt.ChainOf(persisttest.Bets(2, 0, 5))}, {1, 2, receipt.ChainOf(persisttest.Bets(1, 0, 2))}},
		finished: []doneEntry{{1, 2}}}
	if len(recs) != 1 || fmt.Sprintf("%+v", recs[0]) != fmt.Sprintf("%+v", wantRec) {
		t.Errorf("journal records %+v, want one: %+v", recs, wantRec)
	}
	if s.Size() != int64(len(want)) {
		t.Errorf("Size %d, want %d", s.Size(), len(want))
	}
	s.Close()
	checkState(t, open(t, dir, testOpts), slices.Concat(tagged(2, persisttest.Bets(2, 0, 3)), tagged(1, persisttest.Bets(1, 0, 2)), tagged(2, persisttest.Bets(2, 3, 2))),
		map[uint32]uint64{1: 2})
}

// TestCommitInChunks: a group bigger than the chunk goes to bets.csv in
// several writes, exactly as one would have written it, and a write failing
// after others of the same group took place leaves nothing of the group.
func TestCommitInChunks(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, testOpts)
	s.chunk = 1000
	var writes []int
	fail := 0 // the write that fails, counted from 1; 0: none
	s.write = func(f *os.File, b []byte) (int, error) {
		writes = append(writes, len(b))
		if len(writes) == fail {
			return 0, errInjected
		}
		return f.Write(b)
	}
	if err := s.Commit(group(s, [3]int{1, 0, 5})); err != nil {
		t.Fatal(err)
	}
	before, size := files(t, dir), s.Size()

	writes, fail = nil, 3
	g := group(s, [3]int{1, 5, 40}, [3]int{2, 0, 40}, [3]int{3, 0, 40})
	if err := s.Commit(g); !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "write "+BetsFile) {
		t.Fatalf("Commit: %v, want the injected failure of the third write", err)
	}
	if len(writes) != 3 {
		t.Fatalf("%d writes before the failure, want 3", len(writes))
	}
	if d := diffFiles(before, files(t, dir)); d != "" {
		t.Errorf("a commit failing at its third write left changes behind: %s", d)
	}
	if s.Size() != size {
		t.Errorf("Size %d after a failed commit, want %d", s.Size(), size)
	}

	writes, fail = nil, 0
	if err := s.Commit(group(s, [3]int{1, 5, 40}, [3]int{2, 0, 40}, [3]int{3, 0, 40})); err != nil {
		t.Fatal(err)
	}
	want, batchMax := slices.Clone(before[BetsFile]), 0
	for _, r := range g.Rows {
		n := len(want)
		for i := range r.Bets {
			want = AppendRow(want, r.Agency, &r.Bets[i])
		}
		batchMax = max(batchMax, len(want)-n)
	}
	if got := readFile(t, dir, BetsFile); !bytes.Equal(got, want) {
		t.Errorf("bets.csv after a chunked commit:\n got %q\nwant %q", got, want)
	}
	if len(writes) < 3 {
		t.Errorf("a group of %d bytes went out in %d writes, want one per chunk of %d", len(want)-len(before[BetsFile]), len(writes), s.chunk)
	}
	for _, n := range writes {
		if n >= s.chunk+batchMax {
			t.Errorf("a write of %d bytes: the chunk of %d grew by more than one batch's rows", n, s.chunk)
		}
	}
	s.Close()
	checkState(t, open(t, dir, testOpts), slices.Concat(tagged(1, persisttest.Bets(1, 0, 45)), tagged(2, persisttest.Bets(2, 0, 40)),
		tagged(3, persisttest.Bets(3, 0, 40))), nil)
}
