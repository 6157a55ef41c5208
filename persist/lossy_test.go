package persist_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
)

// TestCommitUnavailable loses the backend's connection mid-commit, before
// the group is durable and after it (the answer lost on the way back):
// the group's requests fail with the retryable ErrUnavailable, the store
// stays up, reloads the agencies involved before planning for them again,
// and the retries store each bet once. A crash-only backend (lossy nil)
// has no such failure: TestCommitFailure is its whole story.
func TestCommitUnavailable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, bk backend) {
		if bk.lossy == nil {
			t.Skipf("the %s backend is crash-only (lossy is nil in the backends table): "+
				"every failed commit breaks the store, as TestCommitFailure checks", bk.name)
		}
		b, lose, reopen := bk.lossy(t, 3, winning)
		p := &probe{Backend: b}
		obs := &commits{}
		opts := persist.Options{Agencies: 3, WinningNumber: winning}
		withObs := opts
		withObs.Observer = obs
		s := newStore(t, p, withObs)
		put(t, s, 1, 0, 5)

		unavailable := func(what string, res persist.Result) {
			t.Helper()
			if !errors.Is(res.Err, persist.ErrUnavailable) || res.Stored != 0 || res.Held != 0 || res.Chain != (frame.Hash{}) {
				t.Errorf("%s: %+v, want only an error wrapping ErrUnavailable", what, res)
			}
		}
		up := func(what string) {
			t.Helper()
			if err := s.Err(); err != nil {
				t.Fatalf("%s: the store broke: %v", what, err)
			}
			select {
			case <-s.Failed():
				t.Fatalf("%s: Failed is closed", what)
			default:
			}
		}

		// The commit is durable but its answer is lost: the request fails,
		// Status keeps the last state known to be durable, and the retry,
		// planned after reloading the agency, is a replay.
		lose(lostAfter)
		unavailable("a batch whose answer was lost", do(t, s, batch(1, 5, 3)))
		up("after a lost answer")
		if err := s.Unavailable(); !errors.Is(err, persist.ErrUnavailable) {
			t.Errorf("Unavailable after a lost answer: %v, want ErrUnavailable", err)
		}
		checkStatus(t, s, []agencyState{want(1, 5, false), want(2, 0, false), want(3, 0, false)})
		run(t, s, []step{{"retry of the batch whose answer was lost", batch(1, 5, 3), 0, 8, nil}})
		if err := s.Unavailable(); err != nil {
			t.Errorf("Unavailable after a good round: %v, want nil", err)
		}

		// Lost before the group is durable: the retry stores it.
		lose(lostBefore)
		unavailable("a batch whose commit was lost", do(t, s, batch(1, 8, 2)))
		up("after a lost commit")
		run(t, s, []step{{"retry of the batch whose commit was lost", batch(1, 8, 2), 2, 10, nil}})

		// A whole group with its answer lost: every request of it fails
		// alike, refusals and replays too (they were worked out against a
		// state whose fate was unknown); the retries find it all durable.
		entered, release := p.holdNext(t)
		starter := submit(t, s, batch(3, 0, 1))
		waitFor(t, entered, "the commit before the one that loses its answer")
		lose(lostAfter)
		group := []persist.Request{
			batch(1, 10, 2), // new bets
			batch(2, 0, 4),  // another agency's
			finish(2, 4),    // its FINISHED
			batch(1, 20, 1), // a gap
			batch(1, 0, 3),  // a replay
		}
		var calls []*call
		for _, r := range group {
			calls = append(calls, submit(t, s, r))
		}
		release()
		checkResult(t, step{"the commit before", batch(3, 0, 1), 1, 1, nil}, starter.wait(t))
		for _, c := range calls {
			unavailable("a request of the group whose answer was lost", c.wait(t))
		}
		up("after a group's lost answer")
		run(t, s, []step{
			{"retried new bets are a replay", batch(1, 10, 2), 0, 12, nil},
			{"retried bets of the other agency are a replay", batch(2, 0, 4), 0, 4, nil},
			{"retried FINISHED is on record", finish(2, 4), 0, 4, nil},
			{"FINISHED with another total", finish(2, 3), 0, 4, persist.ErrTotalMismatch},
			{"the gap is still a gap", batch(1, 20, 1), 0, 12, persist.ErrIndexGap},
			{"the replay is still a replay", batch(1, 0, 3), 0, 12, nil},
		})
		wantState := []agencyState{want(1, 12, false), want(2, 4, true), want(3, 1, false)}
		checkStatus(t, s, wantState)
		if got, want := obs.groups(), []int{5, 2, 1}; !slices.Equal(got, want) {
			t.Errorf("observed commits of %v bets, want %v: a commit whose answer was lost is not reported, nor are replays",
				got, want)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close after the store came back: %v", err)
		}

		s = newStore(t, reopen(), opts)
		checkStatus(t, s, wantState)
		checkWinners(t, s, map[uint32]uint64{1: 12, 2: 4, 3: 1})
	})
}
