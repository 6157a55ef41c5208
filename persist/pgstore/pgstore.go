// Package pgstore keeps a lottery's bets in PostgreSQL, so that several
// event servers can share one store: it is a persist.Backend (one
// transaction per group commit, the bets written with COPY), a
// persist.DrawKeeper (the draw's statement kept once, whoever inserts it
// first) and a persist.Watcher (LISTEN/NOTIFY tells each server what the
// others stored, finished and drew).
//
// Exactly once across servers rests on the agencies table: a commit locks
// the rows of the agencies it changes, in agency order, and goes ahead only
// if each still holds the bets the writer planned against; otherwise it
// rolls back with persist.ErrStale and the writer reloads and plans again.
// The bets' primary key (agency, idx) backs this up. Failures to reach the
// database come back as persist.ErrUnavailable: the store stays up.
//
// The schema lives in migrations/ and is applied by the servers; see
// SCALING.md for the tables and what the database does and does not promise.
package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/receipt"
)

// Defaults for Options.
const (
	DefaultCommitTimeout  = 10 * time.Second
	DefaultConnectTimeout = 5 * time.Second
	DefaultMaxConns       = 4
	DefaultListenRetry    = 500 * time.Millisecond
)

// lotteryFormat is the layout of the lottery row this program writes.
const lotteryFormat = 1

// Channel is the NOTIFY channel the servers of a database talk on.
const Channel = "loteria_changes"

// rowOverhead is roughly what PostgreSQL spends on a bet row besides its
// fields (tuple header, item pointer, the primary key and winners index
// entries), for the Size estimate.
const rowOverhead = 96

// Options configure Open.
type Options struct {
	Agencies      int
	WinningNumber uint16
	Logger        *zap.Logger
	// CommitTimeout bounds each commit, reload and draw statement; a
	// commit that runs out fails with persist.ErrUnavailable.
	CommitTimeout time.Duration
	// ConnectTimeout bounds each connection attempt when the URL sets none.
	ConnectTimeout time.Duration
	// MaxConns is the pool's size: the writer uses one connection at a
	// time, the draw and the metrics another.
	MaxConns int32
	// ListenRetry is how long the listener waits before reconnecting.
	ListenRetry time.Duration
	// Fault, when set, is called at each step of a commit ("locked",
	// "copied", "updated", "committed"); an error it returns is returned
	// as the commit's, after rolling back, or, at "committed", after the
	// COMMIT succeeded (a commit whose answer was lost). Tests only.
	Fault func(step string) error
}

// Store is an open PostgreSQL store.
type Store struct {
	opts   Options
	log    *zap.Logger
	pool   *pgxpool.Pool
	target string // host:port/database, for logs
	id     string // this process's tag on its notices, to skip its own

	state   *persist.State
	lottery frame.Hash
	size    atomic.Int64

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	notes     notices
	listenErr atomic.Pointer[error] // set while the listener is disconnected

	winnersSQL string
	closeOnce  sync.Once

	// Buffers reused by the writer goroutine's commits.
	ids          []int32
	held, totals []int64
	chains       [][]byte
	states       [][]byte
	finish       []bool
	notePayload  strings.Builder
	copyRow      []any
}

// Open connects to the database at url (postgres://...), creates or
// migrates the schema, pins the lottery (or checks it matches), loads every
// agency's progress and starts listening to the other servers.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if opts.Agencies < 1 {
		return nil, fmt.Errorf("open store: agencies must be at least 1, got %d", opts.Agencies)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = DefaultCommitTimeout
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.ListenRetry <= 0 {
		opts.ListenRetry = DefaultListenRetry
	}
	cfg, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.ConnConfig.ConnectTimeout <= 0 {
		cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "loteria"
	}
	tag := make([]byte, 8)
	_, _ = rand.Read(tag)
	s := &Store{
		opts:       opts,
		log:        opts.Logger,
		target:     Target(cfg),
		id:         fmt.Sprintf("%x", tag),
		winnersSQL: WinnersQuery(opts.WinningNumber),
	}
	s.notes.init()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		s.cancel()
		return nil, fmt.Errorf("open store %s: %w", s.target, err)
	}
	if err := s.open(ctx); err != nil {
		s.pool.Close()
		s.cancel()
		s.log.Error("pg_store_open", logging.Fail, zap.String("database", s.target), zap.Error(err))
		return nil, err
	}
	s.wg.Add(1)
	go s.listen()
	var bets uint64
	finished := 0
	for _, a := range s.state.Agencies {
		bets += a.Held
		if a.Finished {
			finished++
		}
	}
	s.log.Info("pg_store_open", logging.Success, zap.String("database", s.target), zap.Int("schema_version", SchemaVersion()),
		zap.Uint64("bets", bets), zap.Int("agencies_finished", finished), zap.Int("agencies", opts.Agencies))
	return s, nil
}

// ParseURL checks a postgres:// URL and returns the pool configuration it
// describes, without connecting.
func ParseURL(url string) (*pgxpool.Config, error) {
	if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
		return nil, fmt.Errorf("store URL must start with postgres:// or postgresql://, got %q", redactedPrefix(url))
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("store URL: %w", err)
	}
	return cfg, nil
}

// redactedPrefix shows the scheme of a URL that is not one we take, without
// anything that may be a password.
func redactedPrefix(url string) string {
	if i := strings.Index(url, "://"); i >= 0 {
		return url[:i+3] + "..."
	}
	if len(url) > 12 {
		return url[:12] + "..."
	}
	return url
}

// Target names the database of cfg as host:port/database, for logs; it
// never includes the password.
func Target(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("%s:%d/%s", c.Host, c.Port, c.Database)
}

func (s *Store) open(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(s.opts.CommitTimeout, 30*time.Second))
	defer cancel()
	err := withMigrateLock(ctx, s.pool, func(conn *pgx.Conn) error {
		if _, err := migrate(ctx, conn, s.log); err != nil {
			return err
		}
		return s.pin(ctx, conn)
	})
	if err != nil {
		return classify("open "+s.target, err)
	}
	agencies, err := s.load(ctx, nil)
	if err != nil {
		return classify("load agencies", err)
	}
	s.state = &persist.State{Lottery: s.lottery, Agencies: agencies}
	var size int64
	if err := s.pool.QueryRow(ctx, "SELECT pg_total_relation_size('bets')").Scan(&size); err != nil {
		return classify("measure bets", err)
	}
	s.size.Store(size)
	return nil
}

// pin records the lottery's identity and its agencies on first use, and
// otherwise checks that the database holds this lottery.
func (s *Store) pin(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var format, agencies, winning int
		var nonce []byte
		err := tx.QueryRow(ctx, "SELECT format, agencies, winning_number, nonce FROM lottery").Scan(&format, &agencies, &winning, &nonce)
		if errors.Is(err, pgx.ErrNoRows) {
			n, err := receipt.NewNonce()
			if err != nil {
				return fmt.Errorf("new lottery id: %w", err)
			}
			id := receipt.LotteryID(uint32(s.opts.Agencies), s.opts.WinningNumber, n)
			if _, err := tx.Exec(ctx, `INSERT INTO lottery (format, agencies, winning_number, nonce, lottery_id)
				VALUES ($1, $2, $3, $4, $5)`, lotteryFormat, s.opts.Agencies, int(s.opts.WinningNumber), n[:], id[:]); err != nil {
				return fmt.Errorf("pin lottery: %w", err)
			}
			empty := receipt.NewChain()
			state, err := empty.MarshalBinary()
			if err != nil {
				return err
			}
			sum := empty.Sum()
			if _, err := tx.Exec(ctx, `INSERT INTO agencies (agency, chain, chain_state)
				SELECT g, $2, $3 FROM generate_series(1, $1::integer) AS g`, s.opts.Agencies, sum[:], state); err != nil {
				return fmt.Errorf("create agencies: %w", err)
			}
			if err := createWinnersIndex(ctx, tx, s.opts.WinningNumber); err != nil {
				return err
			}
			s.lottery = id
			s.log.Info("pg_lottery", logging.Success, zap.String("state", "created"), zap.Int("agencies", s.opts.Agencies),
				zap.Uint16("winning_number", s.opts.WinningNumber))
			return nil
		}
		if err != nil {
			return fmt.Errorf("read lottery: %w", err)
		}
		if format != lotteryFormat {
			return fmt.Errorf("%w: lottery row of format %d, this program reads format %d", ErrCorrupt, format, lotteryFormat)
		}
		if agencies != s.opts.Agencies || winning != int(s.opts.WinningNumber) {
			return fmt.Errorf("%w: database %s holds a lottery of %d agencies with winning number %d, "+
				"this server runs %d agencies with winning number %d; use another database or the same settings",
				ErrMismatch, s.target, agencies, winning, s.opts.Agencies, s.opts.WinningNumber)
		}
		var n [receipt.NonceSize]byte
		if len(nonce) != len(n) {
			return fmt.Errorf("%w: lottery nonce of %d bytes, want %d", ErrCorrupt, len(nonce), len(n))
		}
		copy(n[:], nonce)
		s.lottery = receipt.LotteryID(uint32(agencies), uint16(winning), n)
		return createWinnersIndex(ctx, tx, s.opts.WinningNumber) // a no-op unless someone dropped it
	})
}

// createWinnersIndex creates the partial index the draw reads: only the
// bets on the pinned winning number, in stream order, with their documents.
func createWinnersIndex(ctx context.Context, tx pgx.Tx, winning uint16) error {
	// CREATE INDEX IF NOT EXISTS needs to own the table even when the index
	// is there: look first, so that a role that only reads and writes starts.
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass('bets_winners') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("look for the winners index: %w", err)
	}
	if exists {
		return nil
	}
	_, err := tx.Exec(ctx, fmt.Sprintf(
		"CREATE INDEX IF NOT EXISTS bets_winners ON bets (agency, idx) INCLUDE (document) WHERE number = %d", winning))
	if err != nil {
		return fmt.Errorf("create the winners index: %w", err)
	}
	return nil
}

// WinnersQuery is the draw's query: the winning number is written into it,
// not passed as a parameter, so that the planner reads the partial winners
// index (a parameter could be any number).
func WinnersQuery(winning uint16) string {
	return fmt.Sprintf("SELECT agency, document FROM bets WHERE number = %d ORDER BY agency, idx", winning)
}

// load reads the progress of agencies ids (every agency when nil), in the
// order asked, resuming each chain from its saved state.
func (s *Store) load(ctx context.Context, ids []uint32) ([]persist.Agency, error) {
	var rows pgx.Rows
	var err error
	if ids == nil {
		rows, err = s.pool.Query(ctx, "SELECT agency, held, finished, coalesce(total, 0), chain, chain_state FROM agencies ORDER BY agency")
	} else {
		want := make([]int32, len(ids))
		for i, a := range ids {
			want[i] = int32(a)
		}
		rows, err = s.pool.Query(ctx, "SELECT agency, held, finished, coalesce(total, 0), chain, chain_state FROM agencies WHERE agency = ANY($1)", want)
	}
	if err != nil {
		return nil, err
	}
	byAgency := map[uint32]persist.Agency{}
	var agency int32
	var held, total int64
	var finished bool
	var sum, state []byte
	_, err = pgx.ForEachRow(rows, []any{&agency, &held, &finished, &total, &sum, &state}, func() error {
		c := receipt.NewChain()
		if err := c.UnmarshalBinary(state); err != nil {
			return fmt.Errorf("%w: agency %d: %w", ErrCorrupt, agency, err)
		}
		if c.Len() != uint64(held) || held < 0 {
			return fmt.Errorf("%w: agency %d holds %d bets but its chain covers %d", ErrCorrupt, agency, held, c.Len())
		}
		if v := c.Sum(); string(v[:]) != string(sum) {
			return fmt.Errorf("%w: agency %d: the saved chain state does not give the saved chain value", ErrCorrupt, agency)
		}
		byAgency[uint32(agency)] = persist.Agency{Held: uint64(held), Finished: finished, Total: uint64(total), Chain: c}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if ids == nil {
		if len(byAgency) != s.opts.Agencies {
			return nil, fmt.Errorf("%w: %d agency rows, want %d", ErrCorrupt, len(byAgency), s.opts.Agencies)
		}
		ids = make([]uint32, s.opts.Agencies)
		for i := range ids {
			ids[i] = uint32(i + 1)
		}
	}
	out := make([]persist.Agency, len(ids))
	for i, a := range ids {
		ag, ok := byAgency[a]
		if !ok {
			return nil, fmt.Errorf("%w: no row for agency %d", ErrCorrupt, a)
		}
		out[i] = ag
	}
	return out, nil
}

// State is the state loaded at Open.
func (s *Store) State() (*persist.State, error) { return s.state, nil }

// Lottery is the lottery's id.
func (s *Store) Lottery() frame.Hash { return s.lottery }

// Reload reads agencies ids from the database, after another server
// changed them or after a commit whose outcome is unknown.
func (s *Store) Reload(ids []uint32) ([]persist.Agency, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CommitTimeout)
	defer cancel()
	out, err := s.load(ctx, ids)
	return out, classify("reload agencies", err)
}

// Size estimates the bytes the bets take: the table's size at Open plus
// what each commit added.
func (s *Store) Size() int64 { return s.size.Load() }

// CheckBet refuses what PostgreSQL's text type cannot hold: a NUL byte.
func (s *Store) CheckBet(b *frame.Bet) error {
	for _, f := range [...]struct{ name, value string }{{"first_name", b.FirstName}, {"last_name", b.LastName}} {
		if strings.IndexByte(f.value, 0) >= 0 {
			return fmt.Errorf("%w: field %s holds a NUL byte, which PostgreSQL text cannot store", persist.ErrUnstorable, f.name)
		}
	}
	return nil
}

// betColumns are the bets table's columns, in COPY order.
var betColumns = []string{"agency", "idx", "first_name", "last_name", "document", "birthdate", "number"}

// Commit stores a group in one transaction: it locks the changed agencies'
// rows in agency order, checks that each holds what the writer believed
// (persist.ErrStale otherwise), copies the rows in, updates the agencies and
// notifies the other servers.
func (s *Store) Commit(g *persist.Group) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CommitTimeout)
	defer cancel()
	added, err := s.commit(ctx, g)
	if err != nil {
		return classify("commit", err)
	}
	s.size.Add(added)
	return nil
}

func (s *Store) fault(step string) error {
	if s.opts.Fault == nil {
		return nil
	}
	return s.opts.Fault(step)
}

func (s *Store) commit(ctx context.Context, g *persist.Group) (int64, error) {
	s.ids, s.held, s.totals = s.ids[:0], s.held[:0], s.totals[:0]
	s.chains, s.states, s.finish = s.chains[:0], s.states[:0], s.finish[:0]
	for _, c := range g.Changes {
		state, err := c.Chain.MarshalBinary()
		if err != nil {
			return 0, err
		}
		sum := c.Chain.Sum()
		s.ids = append(s.ids, int32(c.Agency))
		s.held = append(s.held, int64(c.Held))
		s.chains = append(s.chains, sum[:])
		s.states = append(s.states, state)
		s.finish = append(s.finish, c.Finish)
		s.totals = append(s.totals, int64(c.Total))
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer rollback(tx)
	finishing := slices.Contains(s.finish, true)
	if finishing {
		// Groups that finish an agency take the lottery row first, one at a
		// time across servers, so the count read below includes every
		// FINISHED committed before this one: of two agencies finishing last
		// on two servers at once, the second always sees the first.
		if _, err := tx.Exec(ctx, "SELECT 1 FROM lottery FOR UPDATE"); err != nil {
			return 0, fmt.Errorf("lock the lottery row: %w", err)
		}
	}
	if err := s.lock(ctx, tx, g); err != nil {
		return 0, err
	}
	if err := s.fault("locked"); err != nil {
		return 0, err
	}
	var added int64
	if len(g.Rows) > 0 {
		src := &rowSource{rows: g.Rows, row: -1, values: s.copyRow[:0]}
		n, err := tx.CopyFrom(ctx, pgx.Identifier{"bets"}, betColumns, src)
		s.copyRow = src.values
		if err != nil {
			return 0, fmt.Errorf("copy bets: %w", err)
		}
		if n != int64(src.total) {
			return 0, fmt.Errorf("copy bets: %d rows copied, want %d", n, src.total)
		}
		added = src.bytes
		if err := s.fault("copied"); err != nil {
			return 0, err
		}
	}
	b := &pgx.Batch{}
	b.Queue(`UPDATE agencies AS a SET held = u.held, chain = u.chain, chain_state = u.chain_state,
		finished = a.finished OR u.finish, total = CASE WHEN u.finish THEN u.total ELSE a.total END, updated_at = now()
		FROM unnest($1::integer[], $2::bigint[], $3::bytea[], $4::bytea[], $5::boolean[], $6::bigint[])
		AS u(agency, held, chain, chain_state, finish, total) WHERE a.agency = u.agency`,
		s.ids, s.held, s.chains, s.states, s.finish, s.totals)
	b.Queue("SELECT pg_notify($1, $2)", Channel, s.progressNotice(g))
	if finishing {
		b.Queue("SELECT agency FROM agencies WHERE finished ORDER BY agency")
	}
	br := tx.SendBatch(ctx, b)
	tag, err := br.Exec()
	if err == nil && tag.RowsAffected() != int64(len(s.ids)) {
		err = fmt.Errorf("%w: updated %d agency rows, want %d", ErrCorrupt, tag.RowsAffected(), len(s.ids))
	}
	if err == nil {
		_, err = br.Exec()
	}
	var finished []uint32
	if err == nil && finishing {
		var rows pgx.Rows
		if rows, err = br.Query(); err == nil {
			var agency int32
			_, err = pgx.ForEachRow(rows, []any{&agency}, func() error {
				finished = append(finished, uint32(agency))
				return nil
			})
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("update agencies: %w", err)
	}
	if err := s.fault("updated"); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("COMMIT: %w", err)
	}
	if err := s.fault("committed"); err != nil {
		return 0, err
	}
	g.Finished = finished
	return added, nil
}

// rollback ends a transaction that did not commit (a no-op after Commit),
// bounded in time: a connection that does not answer is dropped by pgx.
func rollback(tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = tx.Rollback(ctx)
}

// lock takes the changed agencies' rows FOR UPDATE, in agency order (so two
// servers never deadlock), and checks that each holds what the writer
// planned against and has not finished.
func (s *Store) lock(ctx context.Context, tx pgx.Tx, g *persist.Group) error {
	rows, err := tx.Query(ctx, "SELECT agency, held, finished FROM agencies WHERE agency = ANY($1) ORDER BY agency FOR UPDATE", s.ids)
	if err != nil {
		return fmt.Errorf("lock agencies: %w", err)
	}
	i := 0
	var agency int32
	var held int64
	var finished bool
	_, err = pgx.ForEachRow(rows, []any{&agency, &held, &finished}, func() error {
		if i >= len(g.Changes) || uint32(agency) != g.Changes[i].Agency {
			return fmt.Errorf("%w: lock returned agency %d out of order", ErrCorrupt, agency)
		}
		c := &g.Changes[i]
		i++
		switch {
		case uint64(held) != c.HeldBefore:
			return fmt.Errorf("%w: agency %d holds %d bets in the database, this server planned from %d",
				persist.ErrStale, agency, held, c.HeldBefore)
		case finished:
			return fmt.Errorf("%w: agency %d finished in the database", persist.ErrStale, agency)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, persist.ErrStale) || errors.Is(err, ErrCorrupt) {
			return err
		}
		return fmt.Errorf("lock agencies: %w", err)
	}
	if i != len(g.Changes) {
		return fmt.Errorf("%w: %d of %d agencies have a row", ErrCorrupt, i, len(g.Changes))
	}
	return nil
}

// rowSource feeds a group's bets to COPY, one reused row at a time.
type rowSource struct {
	rows   []persist.Rows
	r, row int
	values []any
	total  int   // rows handed out
	bytes  int64 // their estimated size on disk
}

func (src *rowSource) Next() bool {
	src.row++
	for src.r < len(src.rows) && src.row >= len(src.rows[src.r].Bets) {
		src.r, src.row = src.r+1, 0
	}
	return src.r < len(src.rows)
}

func (src *rowSource) Values() ([]any, error) {
	rows := &src.rows[src.r]
	b := &rows.Bets[src.row]
	src.total++
	src.bytes += int64(rowOverhead + len(b.FirstName) + len(b.LastName) + len(b.Document))
	d := b.Birthdate
	src.values = append(src.values[:0], int32(rows.Agency), int64(rows.First)+int64(src.row), b.FirstName, b.LastName,
		b.Document, time.Date(d.Year(), time.Month(d.Month()), d.Day(), 0, 0, 0, 0, time.UTC), int16(b.Number))
	return src.values, nil
}

func (src *rowSource) Err() error { return nil }

// maxNotice keeps a notice's payload under PostgreSQL's 8000-byte limit;
// a longer list of agencies is sent as "every agency".
const maxNotice = 7000

// Notices are "1 <sender> p <agency>,<agency>,..." (progress or FINISHED
// recorded; "*" for every agency) and "1 <sender> d" (the draw is saved).
func (s *Store) progressNotice(g *persist.Group) string {
	b := &s.notePayload
	b.Reset()
	b.WriteString("1 ")
	b.WriteString(s.id)
	b.WriteString(" p ")
	start := b.Len()
	for i, c := range g.Changes {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(c.Agency), 10))
		if b.Len()-start > maxNotice {
			return "1 " + s.id + " p *"
		}
	}
	return b.String()
}

// Winners returns every agency's winning documents in stream order, read
// from the winners index.
func (s *Store) Winners() (map[uint32][]string, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CommitTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, s.winnersSQL)
	if err != nil {
		return nil, classify("winners", err)
	}
	out := map[uint32][]string{}
	var agency int32
	var doc string
	_, err = pgx.ForEachRow(rows, []any{&agency, &doc}, func() error {
		out[uint32(agency)] = append(out[uint32(agency)], doc)
		return nil
	})
	if err != nil {
		return nil, classify("winners", err)
	}
	return out, nil
}

// SaveDraw inserts the draw's statement unless one is there already and
// returns the statement of record; the server that inserted it notifies
// the others.
func (s *Store) SaveDraw(statement []byte) ([]byte, error) {
	var st receipt.Statement
	if err := st.UnmarshalJSON(statement); err != nil {
		return nil, fmt.Errorf("save draw: %w", err)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CommitTimeout)
	defer cancel()
	var kept string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "INSERT INTO draw (id, root, statement) VALUES (true, $1, $2) ON CONFLICT (id) DO NOTHING",
			st.Root[:], string(statement))
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "SELECT statement FROM draw").Scan(&kept); err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, "1 "+s.id+" d")
		}
		return err
	})
	if err != nil {
		return nil, classify("save draw", err)
	}
	return []byte(kept), nil
}

// LoadDraw returns the saved statement, or nil before the draw.
func (s *Store) LoadDraw() ([]byte, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CommitTimeout)
	defer cancel()
	var kept string
	err := s.pool.QueryRow(ctx, "SELECT statement FROM draw").Scan(&kept)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, classify("load draw", err)
	}
	return []byte(kept), nil
}

// Changed is signalled when other servers changed something.
func (s *Store) Changed() <-chan struct{} { return s.notes.signal }

// TakeChanges returns what other servers changed since the last call.
func (s *Store) TakeChanges() persist.Changes { return s.notes.take() }

// Close stops listening and closes the connections.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.pool.Close()
		s.log.Info("pg_store_close", logging.Success, zap.String("database", s.target))
	})
	return nil
}
