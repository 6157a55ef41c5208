package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/pgstore"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
	"github.com/tp0/loteria/receipt"
)

func TestOpenCreatesSchemaAndPinsLottery(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()

	// Two servers starting at once on an empty database: the migration
	// lock lets one create the schema and the lottery, the other finds them.
	var wg sync.WaitGroup
	stores := make([]*pgstore.Store, 2)
	errs := make([]error, 2)
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = pgstore.Open(ctx, url, pgstore.Options{Agencies: 3, WinningNumber: winning})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	if stores[0].Lottery() != stores[1].Lottery() || stores[0].Lottery() == (frame.Hash{}) {
		t.Fatalf("two servers on one database see lotteries %x and %x", stores[0].Lottery(), stores[1].Lottery())
	}
	conn := connect(t, url)
	var version, migrations int
	if err := conn.QueryRow(ctx, "SELECT max(version), count(*) FROM schema_migrations").Scan(&version, &migrations); err != nil {
		t.Fatal(err)
	}
	if version != pgstore.SchemaVersion() || migrations != pgstore.SchemaVersion() {
		t.Fatalf("schema_migrations: version %d in %d rows, want %d", version, migrations, pgstore.SchemaVersion())
	}
	st, _ := stores[0].State()
	if len(st.Agencies) != 3 {
		t.Fatalf("state holds %d agencies, want 3", len(st.Agencies))
	}
	for i, a := range st.Agencies {
		if a.Held != 0 || a.Finished || a.Chain.Sum() != receipt.Empty() {
			t.Fatalf("agency %d starts as %+v, want nothing held", i+1, a)
		}
	}

	// Another lottery's settings are refused, naming both.
	_, err := pgstore.Open(ctx, url, pgstore.Options{Agencies: 4, WinningNumber: winning})
	if !errors.Is(err, pgstore.ErrMismatch) || !strings.Contains(err.Error(), "3 agencies") || !strings.Contains(err.Error(), "runs 4 agencies") {
		t.Fatalf("Open with 4 agencies on a 3-agency lottery: %v, want ErrMismatch naming both", err)
	}
	_, err = pgstore.Open(ctx, url, pgstore.Options{Agencies: 3, WinningNumber: 1})
	if !errors.Is(err, pgstore.ErrMismatch) {
		t.Fatalf("Open with another winning number: %v, want ErrMismatch", err)
	}

	// A schema from a newer program is refused, not guessed at.
	if _, err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES (99, 'future')"); err != nil {
		t.Fatal(err)
	}
	_, err = pgstore.Open(ctx, url, pgstore.Options{Agencies: 3, WinningNumber: winning})
	if !errors.Is(err, pgstore.ErrSchemaNewer) {
		t.Fatalf("Open on schema version 99: %v, want ErrSchemaNewer", err)
	}
}

func TestOpenUnreachableIsUnavailable(t *testing.T) {
	pgtest.Shared(t) // the same environment as the rest; the address below has no server
	_, err := pgstore.Open(context.Background(), "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2",
		pgstore.Options{Agencies: 1})
	if !errors.Is(err, persist.ErrUnavailable) {
		t.Fatalf("Open on a closed port: %v, want ErrUnavailable", err)
	}
	if _, err := pgstore.Open(context.Background(), "mysql://x", pgstore.Options{Agencies: 1}); err == nil ||
		!strings.Contains(err.Error(), "postgres://") {
		t.Fatalf("Open of a mysql:// URL: %v, want a message naming postgres://", err)
	}
}

func TestExactlyOnce(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s, _ := open(t, url, 3)
	put(t, s, 1, 0, 50, 50)
	put(t, s, 1, 50, 50, 50)
	put(t, s, 1, 0, 50, 0)   // a replay of held bets
	put(t, s, 1, 80, 40, 20) // overlapping: only the new ones
	res := do(t, s, persist.Request{Agency: 1, First: 130, Bets: stream(1, 130, 5)})
	if !errors.Is(res.Err, persist.ErrIndexGap) || res.Held != 120 {
		t.Fatalf("a gap: %+v, want ErrIndexGap with 120 held", res)
	}
	put(t, s, 2, 0, 7, 7)
	res = do(t, s, persist.Request{Agency: 2, Finish: true, Total: 8})
	if !errors.Is(res.Err, persist.ErrTotalMismatch) {
		t.Fatalf("FINISHED with the wrong total: %+v, want ErrTotalMismatch", res)
	}
	res = do(t, s, persist.Request{Agency: 2, Finish: true, Total: 7})
	if res.Err != nil || res.Chain != receipt.ChainOf(stream(2, 0, 7)) {
		t.Fatalf("FINISHED: %+v, want the chain over 7 bets", res)
	}
	if res := do(t, s, persist.Request{Agency: 2, Finish: true, Total: 7}); res.Err != nil {
		t.Fatalf("FINISHED again: %v", res.Err)
	}
	if res := do(t, s, persist.Request{Agency: 2, First: 7, Bets: stream(2, 7, 1)}); !errors.Is(res.Err, persist.ErrAlreadyFinished) {
		t.Fatalf("bets after FINISHED: %+v, want ErrAlreadyFinished", res)
	}
	if res := do(t, s, persist.Request{Agency: 4, First: 0, Bets: stream(4, 0, 1)}); !errors.Is(res.Err, persist.ErrUnknownAgency) {
		t.Fatalf("agency 4 of 3: %+v, want ErrUnknownAgency", res)
	}

	conn := connect(t, url)
	sameStream(t, storedBets(t, conn, 1), 1, 120)
	sameStream(t, storedBets(t, conn, 2), 2, 7)
	sameStream(t, storedBets(t, conn, 3), 3, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened, the progress, FINISHED and the chains are as they were.
	s2, _ := open(t, url, 3)
	for _, c := range []struct {
		agency   uint32
		held     uint64
		finished bool
	}{{1, 120, false}, {2, 7, true}, {3, 0, false}} {
		held, finished, chain := s2.Status(c.agency)
		if held != c.held || finished != c.finished || chain != receipt.ChainOf(stream(c.agency, 0, int(c.held))) {
			t.Errorf("agency %d after reopening: held %d finished %v, want %d %v and its chain", c.agency, held, finished, c.held, c.finished)
		}
	}
	put(t, s2, 1, 100, 30, 10)
	sameStream(t, storedBets(t, conn, 1), 1, 130)
}

func TestGroupCommitIsOneTransaction(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s, _ := open(t, url, 4)
	var chans []<-chan persist.Result
	for a := uint32(1); a <= 4; a++ {
		for i := uint64(0); i < 10; i++ {
			chans = append(chans, submit(t, s, persist.Request{Agency: a, First: i * 10, Bets: stream(a, i*10, 10)}))
		}
	}
	for _, ch := range chans {
		if res := <-ch; res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	conn := connect(t, url)
	for a := uint32(1); a <= 4; a++ {
		sameStream(t, storedBets(t, conn, a), a, 100)
	}
}

func TestUnstorableBetIsRefusedNotFatal(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s, _ := open(t, url, 1)
	put(t, s, 1, 0, 3, 3)
	bets := stream(1, 3, 3)
	bets[1].LastName = "a\x00b"
	res := do(t, s, persist.Request{Agency: 1, First: 3, Bets: bets})
	var be *persist.BetError
	if !errors.As(res.Err, &be) || be.Index != 4 || !errors.Is(res.Err, persist.ErrUnstorable) {
		t.Fatalf("a NUL byte in a name: %v, want a BetError at bet 4", res.Err)
	}
	if s.Err() != nil {
		t.Fatalf("the store broke: %v", s.Err())
	}
	put(t, s, 1, 3, 3, 3)
	sameStream(t, storedBets(t, connect(t, url), 1), 1, 6)
}

// Two servers on one database, each with its own writer: whatever each
// believed, a bet is never stored twice nor after a gap.
func TestTwoWritersOneDatabase(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, _ := open(t, url, 2)
	b, _ := open(t, url, 2)

	put(t, a, 1, 0, 100, 100)
	// b still believes agency 1 holds nothing: the commit finds 100 held,
	// rolls back (ErrStale), reloads and stores only bets 100..149.
	put(t, b, 1, 0, 150, 50)
	// a believes 100: the batch starting at 150 looks like a gap from
	// there, so a checks with the database before refusing, and stores it.
	res := put(t, a, 1, 150, 10, 10)
	if res.Held != 160 || res.Chain != receipt.ChainOf(stream(1, 0, 160)) {
		t.Fatalf("after the other server's bets: %+v, want 160 held and their chain", res)
	}
	// A real gap is still refused, with what the database holds.
	if res := do(t, b, persist.Request{Agency: 1, First: 170, Bets: stream(1, 170, 5)}); !errors.Is(res.Err, persist.ErrIndexGap) || res.Held != 160 {
		t.Fatalf("a real gap: %+v, want ErrIndexGap at 160", res)
	}
	// FINISHED through the server that did not store the last bets.
	if res := do(t, b, persist.Request{Agency: 1, Finish: true, Total: 160}); res.Err != nil {
		t.Fatalf("FINISHED through b: %v", res.Err)
	}
	if res := do(t, a, persist.Request{Agency: 1, First: 160, Bets: stream(1, 160, 1)}); !errors.Is(res.Err, persist.ErrAlreadyFinished) {
		t.Fatalf("bets through a after b recorded FINISHED: %+v, want ErrAlreadyFinished", res)
	}

	// Both servers hammer agency 2's stream at once, batches in order on
	// each, as an agency would if its connections to both overlapped.
	const batches, size = 60, 7
	var wg sync.WaitGroup
	for _, s := range []*persist.Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range batches {
				first := uint64(i * size)
				res := do(t, s, persist.Request{Agency: 2, First: first, Bets: stream(2, first, size)})
				// A server that lost the race too often answers with a
				// retryable error; its next batch may then be a real gap.
				if res.Err != nil && !errors.Is(res.Err, persist.ErrUnavailable) && !errors.Is(res.Err, persist.ErrIndexGap) {
					t.Errorf("batch %d: %v", i, res.Err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// One more pass through one server fills in whatever is left.
	for i := range batches {
		first := uint64(i * size)
		if res := do(t, a, persist.Request{Agency: 2, First: first, Bets: stream(2, first, size)}); res.Err != nil {
			t.Fatalf("final pass, batch %d: %v", i, res.Err)
		}
	}
	conn := connect(t, url)
	sameStream(t, storedBets(t, conn, 1), 1, 160)
	sameStream(t, storedBets(t, conn, 2), 2, batches*size)
	if a.Err() != nil || b.Err() != nil {
		t.Fatalf("a store broke: %v / %v", a.Err(), b.Err())
	}
}

// errTransient stands for a connection lost at a given step.
var errTransient = fmt.Errorf("fault: %w", io.ErrUnexpectedEOF)

func TestAmbiguousCommitIsReloaded(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var mu sync.Mutex
	failAt := ""
	s, _ := open(t, url, 2, func(o *pgstore.Options) {
		o.Fault = func(step string) error {
			mu.Lock()
			defer mu.Unlock()
			if step == failAt {
				failAt = ""
				return errTransient
			}
			return nil
		}
	})
	setFault := func(step string) {
		mu.Lock()
		failAt = step
		mu.Unlock()
	}
	put(t, s, 1, 0, 10, 10)

	// The COMMIT went through but its answer was lost: the request fails
	// with a retryable error, the store stays up, and its retry, planned
	// after reloading the agency, is a replay.
	setFault("committed")
	res := do(t, s, persist.Request{Agency: 1, First: 10, Bets: stream(1, 10, 10)})
	if !errors.Is(res.Err, persist.ErrUnavailable) {
		t.Fatalf("commit with a lost answer: %+v, want ErrUnavailable", res)
	}
	if s.Err() != nil || s.Unavailable() == nil {
		t.Fatalf("after the lost answer: Err %v, Unavailable %v; want not broken, unavailable", s.Err(), s.Unavailable())
	}
	if held, _, _ := s.Status(1); held != 10 {
		t.Fatalf("Status shows %d held before the reload, want the last known 10", held)
	}
	res = put(t, s, 1, 10, 10, 0)
	if res.Held != 20 || res.Chain != receipt.ChainOf(stream(1, 0, 20)) {
		t.Fatalf("retry after the lost answer: %+v, want a replay with 20 held", res)
	}
	if s.Unavailable() != nil {
		t.Fatalf("still unavailable after a good round: %v", s.Unavailable())
	}

	// Lost before COMMIT (rolled back): the retry stores the bets.
	for _, step := range []string{"locked", "copied", "updated"} {
		setFault(step)
		held, _, _ := s.Status(1)
		res := do(t, s, persist.Request{Agency: 1, First: held, Bets: stream(1, held, 5)})
		if !errors.Is(res.Err, persist.ErrUnavailable) {
			t.Fatalf("fault at %s: %+v, want ErrUnavailable", step, res)
		}
		put(t, s, 1, held, 5, 5)
	}
	// A finish whose answer was lost is on record after the reload.
	setFault("committed")
	if res := do(t, s, persist.Request{Agency: 1, Finish: true, Total: 35}); !errors.Is(res.Err, persist.ErrUnavailable) {
		t.Fatalf("FINISHED with a lost answer: %+v", res)
	}
	if res := do(t, s, persist.Request{Agency: 1, Finish: true, Total: 35}); res.Err != nil {
		t.Fatalf("FINISHED again: %v", res.Err)
	}
	if _, finished, _ := s.Status(1); !finished || s.FinishedCount() != 1 {
		t.Fatalf("agency 1 not finished after the reload")
	}
	sameStream(t, storedBets(t, connect(t, url), 1), 1, 35)

	// Anything that is not about reaching the database still breaks the
	// store (crash-only, as with the file store).
	s2, _ := open(t, url, 2, func(o *pgstore.Options) {
		o.Fault = func(step string) error {
			if step == "copied" {
				return errors.New("fault: a bug")
			}
			return nil
		}
	})
	res = do(t, s2, persist.Request{Agency: 2, First: 0, Bets: stream(2, 0, 3)})
	if !errors.Is(res.Err, persist.ErrBroken) || s2.Err() == nil {
		t.Fatalf("a non-transient failure: %+v, want the store broken", res)
	}
	select {
	case <-s2.Failed():
	default:
		t.Fatal("Failed not closed after a non-transient failure")
	}
}

func TestWinnersFromTheIndex(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s, b := open(t, url, 3)
	const n = 3000
	for a := uint32(1); a <= 3; a++ {
		for first := uint64(0); first < n; first += 500 {
			put(t, s, a, first, 500, 500)
		}
	}
	got, err := b.Winners()
	if err != nil {
		t.Fatal(err)
	}
	for a := uint32(1); a <= 3; a++ {
		var want []string
		for _, bet := range stream(a, 0, n) {
			if bet.Number == winning {
				want = append(want, bet.Document)
			}
		}
		if len(want) == 0 || strings.Join(got[a], ",") != strings.Join(want, ",") {
			t.Fatalf("agency %d winners: %v, want %v in stream order", a, got[a], want)
		}
	}

	// The query reads the index, not the table.
	conn := connect(t, url)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "ANALYZE bets"); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "EXPLAIN "+pgstore.WinnersQuery(winning))
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	text := strings.Join(plan, "\n")
	if !strings.Contains(text, "using bets_winners") && !strings.Contains(text, "on bets_winners") || strings.Contains(text, "Seq Scan") {
		t.Fatalf("the winners query does not read the winners index:\n%s", text)
	}
	// Only winning bets are in the index.
	var entries int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM bets WHERE number = 7574").Scan(&entries); err != nil {
		t.Fatal(err)
	}
	var pages int64
	if err := conn.QueryRow(ctx, "SELECT relpages FROM pg_class WHERE relname = 'bets_winners'").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages > 4 {
		t.Fatalf("the winners index takes %d pages for %d winners: it holds more than the winners", pages, entries)
	}
}

func TestDrawStatementIsKeptOnce(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := openBackend(t, url, 2)
	b := openBackend(t, url, 2)
	statement := func(root byte) []byte {
		leaves := []receipt.Leaf{{Agency: 1, Chain: receipt.Empty()}, {Agency: 2, Chain: receipt.Empty()}}
		st := receipt.Statement{Commitment: receipt.Commitment{Lottery: a.Lottery(), Agencies: 2}, Leaves: leaves}
		st.Root = receipt.NewTree(leaves).Root()
		st.Signature[0] = root // tells the two apart
		data, err := st.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	first, second := statement(1), statement(2)
	waitChanges(t, b, func(c persist.Changes) bool { return c.All }) // b listens
	if got, err := a.LoadDraw(); err != nil || got != nil {
		t.Fatalf("LoadDraw before the draw: %q, %v", got, err)
	}
	kept, err := a.SaveDraw(first)
	if err != nil || string(kept) != string(first) {
		t.Fatalf("first SaveDraw: %v; kept the other statement: %v", err, string(kept) != string(first))
	}
	kept, err = b.SaveDraw(second)
	if err != nil || string(kept) != string(first) {
		t.Fatalf("second server's SaveDraw: %v; want the first statement back", err)
	}
	if got, _ := b.LoadDraw(); string(got) != string(first) {
		t.Fatal("LoadDraw does not return the statement of record")
	}
	waitChanges(t, b, func(c persist.Changes) bool { return c.Drawn })
}

// waitChanges waits until the store's notices satisfy ok.
func waitChanges(t *testing.T, b *pgstore.Store, ok func(persist.Changes) bool) persist.Changes {
	t.Helper()
	var got persist.Changes
	deadline := time.After(10 * time.Second)
	for {
		select {
		case <-b.Changed():
			got.Merge(b.TakeChanges())
			if ok(got) {
				return got
			}
		case <-deadline:
			t.Fatalf("no such notice within 10s; got %+v", got)
		}
	}
}

func TestNoticesReachTheOtherServers(t *testing.T) {
	url := pgtest.NewDatabase(t)
	sa, ba := open(t, url, 5)
	_, bb := open(t, url, 5)
	// Each listener's first connection says "anything may have changed".
	waitChanges(t, ba, func(c persist.Changes) bool { return c.All })
	waitChanges(t, bb, func(c persist.Changes) bool { return c.All })

	put(t, sa, 3, 0, 4, 4)
	put(t, sa, 5, 0, 4, 4)
	got := waitChanges(t, bb, func(c persist.Changes) bool { return len(c.Agencies) == 2 })
	if got.Agencies[0] != 3 || got.Agencies[1] != 5 || got.All || got.Drawn {
		t.Fatalf("notices: %+v, want agencies 3 and 5", got)
	}
	if res := do(t, sa, persist.Request{Agency: 3, Finish: true, Total: 4}); res.Err != nil {
		t.Fatal(res.Err)
	}
	waitChanges(t, bb, func(c persist.Changes) bool { return len(c.Agencies) == 1 && c.Agencies[0] == 3 })
	// A server does not hear its own notices.
	select {
	case <-ba.Changed():
		if c := ba.TakeChanges(); !c.Empty() {
			t.Fatalf("a server heard its own notices: %+v", c)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

func TestRefreshShowsTheOtherServersWork(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, _ := open(t, url, 2)
	b, _ := open(t, url, 2)
	put(t, a, 1, 0, 30, 30)
	if res := do(t, a, persist.Request{Agency: 1, Finish: true, Total: 30}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if held, _, _ := b.Status(1); held != 0 {
		t.Fatalf("b's view before Refresh: %d held", held)
	}
	if err := <-b.Refresh([]uint32{1}); err != nil {
		t.Fatal(err)
	}
	held, finished, chain := b.Status(1)
	if held != 30 || !finished || chain != receipt.ChainOf(stream(1, 0, 30)) || b.FinishedCount() != 1 {
		t.Fatalf("b's view after Refresh: held %d finished %v count %d", held, finished, b.FinishedCount())
	}
	if err := <-b.Refresh(nil); err != nil {
		t.Fatalf("Refresh of every agency: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-b.Refresh(nil); !errors.Is(err, persist.ErrClosed) {
		t.Fatalf("Refresh after Close: %v, want ErrClosed", err)
	}
}

// PostgreSQL killed (pg_ctl stop -m immediate) and started again under a
// running writer: requests fail with ErrUnavailable meanwhile, the store
// never breaks, and once the database is back the retries finish the job
// with nothing lost or stored twice.
func TestDatabaseRestart(t *testing.T) {
	pgtest.Shared(t) // fail or skip like the others if PostgreSQL cannot run
	c, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Remove(); err != nil {
			t.Error(err)
		}
	}()
	url, err := c.CreateDatabase(context.Background(), "restart")
	if err != nil {
		t.Fatal(err)
	}
	s, b := open(t, url, 2, func(o *pgstore.Options) { o.CommitTimeout = 2 * time.Second; o.ListenRetry = 100 * time.Millisecond })
	waitChanges(t, b, func(c persist.Changes) bool { return c.All })
	put(t, s, 1, 0, 50, 50)

	if err := c.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	// Before any request, the lost listener connection says it.
	for deadline := time.Now().Add(5 * time.Second); !errors.Is(s.Unavailable(), persist.ErrUnavailable); {
		if time.Now().After(deadline) {
			t.Fatalf("Unavailable is %v 5s after PostgreSQL stopped", s.Unavailable())
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	res := do(t, s, persist.Request{Agency: 1, First: 50, Bets: stream(1, 50, 50)})
	if !errors.Is(res.Err, persist.ErrUnavailable) {
		t.Fatalf("a batch while PostgreSQL is down: %+v, want ErrUnavailable", res)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the failed commit took %v, want it bounded by the commit timeout", took)
	}
	if res := do(t, s, persist.Request{Agency: 2, Finish: true, Total: 0}); !errors.Is(res.Err, persist.ErrUnavailable) {
		t.Fatalf("FINISHED while PostgreSQL is down: %+v, want ErrUnavailable", res)
	}
	if s.Err() != nil || s.Unavailable() == nil {
		t.Fatalf("while down: Err %v, Unavailable %v; want up but unavailable", s.Err(), s.Unavailable())
	}
	if _, err := b.Winners(); !errors.Is(err, persist.ErrUnavailable) {
		t.Fatalf("Winners while down: %v, want ErrUnavailable", err)
	}
	// The notices the listener missed while down count as "anything changed".
	b.TakeChanges()

	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	retry := func(r persist.Request) persist.Result {
		deadline := time.Now().Add(15 * time.Second)
		for {
			res := do(t, s, r)
			if !errors.Is(res.Err, persist.ErrUnavailable) || time.Now().After(deadline) {
				return res
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if res := retry(persist.Request{Agency: 1, First: 50, Bets: stream(1, 50, 50)}); res.Err != nil || res.Held != 100 {
		t.Fatalf("the batch again once PostgreSQL is back: %+v", res)
	}
	if res := retry(persist.Request{Agency: 2, Finish: true, Total: 0}); res.Err != nil {
		t.Fatalf("FINISHED again once PostgreSQL is back: %v", res.Err)
	}
	waitChanges(t, b, func(c persist.Changes) bool { return c.All }) // the listener is back
	if s.Unavailable() != nil || s.Err() != nil || b.Health() != nil {
		t.Fatalf("after recovery: Unavailable %v, Err %v, Health %v", s.Unavailable(), s.Err(), b.Health())
	}
	sameStream(t, storedBets(t, connect(t, url), 1), 1, 100)
}
