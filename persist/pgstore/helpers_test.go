package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/pgstore"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

const winning = 7574

// Names that need the CSV's quoting, and non-ASCII text.
var (
	firstNames = []string{"Ana María", "Juan, Pablo", `Rosa "Rosita"`, "Zoë", "Luis\nAlberto", "Ñusta", "Li"}
	lastNames  = []string{"Pérez", "O'Neil", "García, hijo", `"Gallo"`, "Nguyễn", "Ruiz\r\nDíaz", "Sosa"}
)

// betAt is bet i of agency's deterministic stream; about one bet in 40 wins.
func betAt(agency uint32, i uint64) frame.Bet {
	k := int(i)*5 + int(agency)*3
	number := uint16((i*131 + uint64(agency)*17) % 10000)
	if (i+uint64(agency))%40 == 7 {
		number = winning
	}
	return frame.Bet{
		FirstName: firstNames[k%len(firstNames)],
		LastName:  lastNames[(k/2)%len(lastNames)],
		Document:  fmt.Sprintf("%d%07d", agency, i),
		Birthdate: frame.NewDate(1930+k%70, 1+k%12, 1+k%28),
		Number:    number,
	}
}

func stream(agency uint32, first uint64, n int) []frame.Bet {
	out := make([]frame.Bet, n)
	for i := range out {
		out[i] = betAt(agency, first+uint64(i))
	}
	return out
}

// openBackend opens the PostgreSQL store at url, closed when the test ends.
func openBackend(t testing.TB, url string, agencies int, mod ...func(*pgstore.Options)) *pgstore.Store {
	t.Helper()
	opts := pgstore.Options{Agencies: agencies, WinningNumber: winning, Logger: testLogger(t), CommitTimeout: 3 * time.Second}
	for _, f := range mod {
		f(&opts)
	}
	b, err := pgstore.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("pgstore.Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// openWriter starts the persist writer over b, closed when the test ends.
func openWriter(t testing.TB, b persist.Backend, agencies int) *persist.Store {
	t.Helper()
	s, err := persist.New(b, persist.Options{Agencies: agencies, WinningNumber: winning, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("persist.New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, persist.ErrClosed) && !errors.Is(err, persist.ErrBroken) {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// open is a writer over a fresh pgstore backend at url.
func open(t testing.TB, url string, agencies int, mod ...func(*pgstore.Options)) (*persist.Store, *pgstore.Store) {
	t.Helper()
	b := openBackend(t, url, agencies, mod...)
	return openWriter(t, b, agencies), b
}

func testLogger(t testing.TB) *zap.Logger {
	if testing.Verbose() {
		return zap.NewExample()
	}
	return zap.NewNop()
}

// submit queues r and returns a channel with its result.
func submit(t testing.TB, s *persist.Store, r persist.Request) <-chan persist.Result {
	t.Helper()
	ch := make(chan persist.Result, 1)
	r.Done = func(res persist.Result) { ch <- res }
	if err := s.Submit(&r); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return ch
}

// do submits r and waits for its result.
func do(t testing.TB, s *persist.Store, r persist.Request) persist.Result {
	t.Helper()
	select {
	case res := <-submit(t, s, r):
		return res
	case <-time.After(20 * time.Second):
		t.Fatalf("no result within 20s for agency %d first %d", r.Agency, r.First)
		return persist.Result{}
	}
}

// put stores bets [first, first+n) of agency's stream and expects want new bets.
func put(t testing.TB, s *persist.Store, agency uint32, first uint64, n, want int) persist.Result {
	t.Helper()
	res := do(t, s, persist.Request{Agency: agency, First: first, Bets: stream(agency, first, n)})
	if res.Err != nil || res.Stored != want {
		t.Fatalf("agency %d bets %d..%d: got stored %d, held %d, err %v; want stored %d",
			agency, first, first+uint64(n), res.Stored, res.Held, res.Err, want)
	}
	return res
}

// connect opens a plain connection to url for the test's own queries.
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// storedBets reads agency's bets back from the database in index order,
// failing on any gap.
func storedBets(t testing.TB, conn *pgx.Conn, agency uint32) []frame.Bet {
	t.Helper()
	rows, err := conn.Query(context.Background(),
		"SELECT idx, first_name, last_name, document, birthdate, number FROM bets WHERE agency = $1 ORDER BY idx", int32(agency))
	if err != nil {
		t.Fatal(err)
	}
	var out []frame.Bet
	var idx int64
	var b frame.Bet
	var birth time.Time
	var number int16
	_, err = pgx.ForEachRow(rows, []any{&idx, &b.FirstName, &b.LastName, &b.Document, &birth, &number}, func() error {
		if idx != int64(len(out)) {
			return fmt.Errorf("agency %d: bet %d after %d bets", agency, idx, len(out))
		}
		b.Birthdate, b.Number = frame.DateOf(birth), uint16(number)
		out = append(out, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameStream fails unless got is exactly bets 0..n-1 of agency's stream.
func sameStream(t testing.TB, got []frame.Bet, agency uint32, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("agency %d: %d bets stored, want %d", agency, len(got), n)
	}
	for i := range got {
		if want := betAt(agency, uint64(i)); got[i] != want {
			t.Fatalf("agency %d bet %d: got %+v, want %+v", agency, i, got[i], want)
		}
	}
}
