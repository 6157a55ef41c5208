package persist_test

import (
	"context"
	"fmt"
	"io"
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
// step (one of pgstore.Options.Fault's steps), once.
type pgFault struct {
	mu   sync.Mutex
	step string
	err  error
}

func (f *pgFault) failAt(step string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.step, f.err = step, err
}

func (f *pgFault) hook(step string) error {
	f.mu.Lock()
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
