package persist_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/pgstore"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

// errConnLost stands for the connection to PostgreSQL breaking mid-commit;
// pgstore reports it as persist.ErrUnavailable.
var errConnLost = fmt.Errorf("injected: connection lost: %w", io.ErrUnexpectedEOF)

// pgFault is what the next commit of a PostgreSQL backend meets: err at
// step (one of pgstore.Options.Fault's steps), once; or a stop at hold
// until released.
type pgFault struct {
	mu   sync.Mutex
	step string
	err  error

	hold    string
	reached chan struct{} // closed when a commit stops at hold
	release chan struct{} // closed to let it go on
}

// holdAt makes the next commit that reaches step wait there, its
// transaction open, until release is called.
func (f *pgFault) holdAt(step string) (reached <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold, f.reached, f.release = step, make(chan struct{}), make(chan struct{})
	return f.reached, sync.OnceFunc(func() { close(f.release) })
}

func (f *pgFault) failAt(step string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.step, f.err = step, err
}

func (f *pgFault) hook(step string) error {
	f.mu.Lock()
	if step == f.hold {
		f.hold = ""
		reached, release := f.reached, f.release
		f.mu.Unlock()
		close(reached)
		<-release
		return nil
	}
	defer f.mu.Unlock()
	if step != f.step {
		return nil
	}
	err := f.err
	f.step, f.err = "", nil
	return err
}

// openPGBackend opens a PostgreSQL store in a fresh database of the test
// binary's cluster (see TestMain); without a cluster the test skips, or
// fails with CI=true. reopen may be called while the first backend is
// open: it is then a second server on the same database.
func openPGBackend(t *testing.T, agencies int, winning uint16) (persist.Backend, *pgFault, func() persist.Backend) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	f := &pgFault{}
	open := func() persist.Backend {
		t.Helper()
		b, err := pgstore.Open(context.Background(), url, pgstore.Options{Agencies: agencies, WinningNumber: winning,
			CommitTimeout: 10 * time.Second, Fault: f.hook})
		if err != nil {
			t.Fatalf("open PostgreSQL store: %v", err)
		}
		t.Cleanup(func() { b.Close() }) // a second Close does nothing
		return b
	}
	return open(), f, open
}

// TestFinishingAtOnceOnTwoServers has the last two agencies finish at the
// same moment on two servers sharing PostgreSQL: the first FINISHED is held
// with its transaction open while the second is submitted. The second must
// wait for the first and count it, so that it is answered with all agencies
// finished (the draw), not NOT_READY.
func TestFinishingAtOnceOnTwoServers(t *testing.T) {
	b, f, reopen := openPGBackend(t, 2, winning)
	opts := persist.Options{Agencies: 2, WinningNumber: winning}
	one := newStore(t, b, opts)
	two := newStore(t, reopen(), opts)
	put(t, one, 1, 0, 3)
	put(t, two, 2, 0, 4)

	reached, release := f.holdAt("updated")
	defer release()
	first := submit(t, one, finish(1, 3))
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("the first FINISHED never reached its update")
	}
	second := submit(t, two, finish(2, 4))
	// Give the second commit time to reach the database; with the bug it
	// commits now, counting only itself.
	time.Sleep(200 * time.Millisecond)
	release()
	if res := first.wait(t); res.Err != nil || res.OthersFinished != nil {
		t.Fatalf("first FINISHED: %+v, want no error and no other agency finished", res)
	}
	if res := second.wait(t); res.Err != nil || !slices.Equal(res.OthersFinished, []uint32{1}) {
		t.Fatalf("second FINISHED: %+v, want agency 1 finished by the other server", res)
	}
	if n := two.FinishedCount(); n != 2 {
		t.Errorf("the server of the last FINISHED counts %d finished agencies when it answers, want 2", n)
	}
	checkStatus(t, two, []agencyState{want(1, 3, true), want(2, 4, true)})
}
