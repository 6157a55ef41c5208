package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/pgstore"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

// TestServerWithTheDocumentedPrivileges: SCALING.md says a server needs
// CREATE the first time, then SELECT, INSERT, UPDATE on the tables and
// LISTEN/NOTIFY. A server run by a role with only those opens the lottery
// another created, and stores and reads bets.
func TestServerWithTheDocumentedPrivileges(t *testing.T) {
	url := pgtest.NewDatabase(t)
	first := openBackend(t, url, 2) // creates the schema as the owner
	first.Close()
	ctx := context.Background()
	conn := connect(t, url)
	role := fmt.Sprintf("front_%d", os.Getpid())
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		"CREATE ROLE " + role + " LOGIN",
		"GRANT CONNECT ON DATABASE " + db + " TO " + role,
		"GRANT USAGE ON SCHEMA public TO " + role,
		"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO " + role,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		conn.Exec(ctx, "DROP OWNED BY "+role)
		conn.Exec(ctx, "DROP ROLE "+role)
	})
	frontURL := strings.Replace(url, "postgres://postgres@", "postgres://"+role+"@", 1)
	b, err := pgstore.Open(ctx, frontURL, pgstore.Options{Agencies: 2, WinningNumber: winning})
	if err != nil {
		t.Fatalf("a server with SELECT, INSERT, UPDATE on the tables cannot open the lottery: %v", err)
	}
	b.Close()
	w, _ := open(t, frontURL, 2)
	if r := do(t, w, persist.Request{Agency: 1, First: 0, Bets: stream(1, 0, 5)}); r.Err != nil || r.Stored != 5 {
		t.Fatalf("store 5 bets with those privileges: %+v", r)
	}
}

// TestStatementTimeoutIsTransient: a commit that waits on another server's
// row lock longer than the database's statement_timeout is cancelled
// (SQLSTATE 57014, as pg_cancel_backend does): that request fails as
// unavailable, to be retried, and the store goes on.
func TestStatementTimeoutIsTransient(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var mu sync.Mutex
	hold := make(chan struct{})
	reached := make(chan struct{})
	held := false
	a, _ := open(t, url, 1, func(o *pgstore.Options) {
		o.CommitTimeout = 20 * time.Second
		o.Fault = func(step string) error {
			mu.Lock()
			first := step == "locked" && !held
			if first {
				held = true
			}
			mu.Unlock()
			if first {
				close(reached)
				<-hold
			}
			return nil
		}
	})
	b, _ := open(t, url+"&options=-c%20statement_timeout%3D300", 1)
	resA := submit(t, a, persist.Request{Agency: 1, First: 0, Bets: stream(1, 0, 5)})
	<-reached
	resB := do(t, b, persist.Request{Agency: 1, First: 0, Bets: stream(1, 0, 5)})
	close(hold)
	if r := <-resA; r.Err != nil {
		t.Fatal(r.Err)
	}
	if !errors.Is(resB.Err, persist.ErrUnavailable) {
		t.Errorf("the cancelled commit answered %v, want %v", resB.Err, persist.ErrUnavailable)
	}
	if b.Err() != nil || errors.Is(resB.Err, persist.ErrBroken) {
		t.Fatalf("a statement timeout while waiting for the other server's lock broke the store: %v", b.Err())
	}
}
