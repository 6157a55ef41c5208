package persist_test

import (
	"slices"
	"testing"
	"time"

	"github.com/tp0/loteria/persist"
)

// TestTwoWriters runs two writers, as two servers, over one shared
// backend, each planning from a view the other has moved past: a batch
// that looks like a gap is checked against the backend and stored, a batch
// the other writer stored is acknowledged as a replay, a FINISHED the
// other recorded holds; nothing is stored twice or skipped. A backend one
// server owns (shared false) cannot be opened twice at once.
func TestTwoWriters(t *testing.T) {
	forEachSharedBackend(t, func(t *testing.T, bk backend) {
		b, reopen := bk.open(t, 3, winning)
		opts := persist.Options{Agencies: 3, WinningNumber: winning}
		one := newStore(t, b, opts)
		two := newStore(t, reopen(), opts)

		put(t, one, 1, 0, 10)
		run(t, two, []step{
			// two still believes agency 1 holds nothing.
			{"two continues what one stored", batch(1, 10, 5), 5, 15, nil},
			{"two gets a gap past what both stored", batch(1, 16, 1), 0, 15, persist.ErrIndexGap},
		})
		put(t, one, 2, 0, 4)
		run(t, two, []step{{"two gets again what one stored", batch(2, 0, 4), 0, 4, nil}})
		run(t, one, []step{
			// one believes agency 1 holds 10: bets 10..14 look new to it.
			{"one gets again what two stored", batch(1, 0, 15), 0, 15, nil},
			{"one finishes agency 1", finish(1, 15), 0, 15, nil},
		})
		run(t, two, []step{
			{"two hears FINISHED again", finish(1, 15), 0, 15, nil},
			{"two gets bets after that FINISHED", batch(1, 15, 1), 0, 15, persist.ErrAlreadyFinished},
			{"two gets another total", finish(1, 14), 0, 15, persist.ErrTotalMismatch},
			{"two stores the third agency", batch(3, 0, 3), 3, 3, nil},
		})

		// Refresh brings each writer's view up to the backend's.
		wantState := []agencyState{want(1, 15, true), want(2, 4, false), want(3, 3, false)}
		for name, s := range map[string]*persist.Store{"one": one, "two": two} {
			select {
			case err := <-s.Refresh(nil):
				if err != nil {
					t.Fatalf("%s: Refresh: %v", name, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: Refresh did not answer", name)
			}
			checkStatus(t, s, wantState)
			checkWinners(t, s, map[uint32]uint64{1: 15, 2: 4, 3: 3})
		}
		for _, s := range []*persist.Store{one, two} {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		checkStatus(t, newStore(t, reopen(), opts), wantState)
	})
}

// TestLastFinishedCountsTheOthers has each agency finish on another server:
// the server recording the last FINISHED counts every agency when it
// answers, without waiting for a Refresh or the other servers' notices.
func TestLastFinishedCountsTheOthers(t *testing.T) {
	forEachSharedBackend(t, func(t *testing.T, bk backend) {
		b, reopen := bk.open(t, 3, winning)
		opts := persist.Options{Agencies: 3, WinningNumber: winning}
		stores := []*persist.Store{newStore(t, b, opts), newStore(t, reopen(), opts), newStore(t, reopen(), opts)}
		for i, s := range stores {
			a := uint32(i + 1)
			put(t, s, a, 0, 2)
			res := do(t, s, finish(a, 2))
			if others := []uint32{1, 2}[:i]; res.Err != nil || !slices.Equal(res.OthersFinished, others) {
				t.Fatalf("FINISHED of agency %d: %+v, want agencies %v finished by the other servers", a, res, others)
			}
			if n := s.FinishedCount(); n != i+1 {
				t.Errorf("server %d counts %d finished agencies after agency %d's FINISHED, want %d", i+1, n, a, i+1)
			}
		}
		checkStatus(t, stores[2], []agencyState{want(1, 2, true), want(2, 2, true), want(3, 2, true)})
	})
}
