package pgstore

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/receipt"
)

// ExportStats says what Export wrote.
type ExportStats struct {
	Agencies int
	Rows     int64
	Bytes    int64
	Finished int
}

// Export writes every bet of the lottery in the database at url to w as
// bets.csv rows in the file store's exact format (filestore.AppendRow),
// agency by agency, each agency's bets in stream order. It reads one
// consistent snapshot and checks it as it goes: every agency's indexes run
// 0..held-1 with no gap, and its bets hash to the chain value on record.
// It never writes to the database.
//
// The file store writes rows in commit order instead, so the two files are
// byte for byte the same when the agencies uploaded one after another in
// agency order, and otherwise hold the same rows, each agency's in the same
// order.
func Export(ctx context.Context, url string, w io.Writer) (ExportStats, error) {
	cfg, err := ParseURL(url)
	if err != nil {
		return ExportStats{}, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return ExportStats{}, fmt.Errorf("connect to %s: %w", Target(cfg), err)
	}
	defer conn.Close(context.Background())
	var st ExportStats
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		st, err = export(ctx, tx, w)
		return err
	})
	return st, err
}

type exportAgency struct {
	held  uint64
	chain []byte
	next  uint64
	c     *receipt.Chain
}

func export(ctx context.Context, tx pgx.Tx, w io.Writer) (ExportStats, error) {
	var st ExportStats
	if _, err := checkSchema(ctx, tx); err != nil {
		return st, err
	}
	if err := tx.QueryRow(ctx, "SELECT agencies FROM lottery").Scan(&st.Agencies); err != nil {
		return st, fmt.Errorf("read lottery: %w", err)
	}
	agencies := make([]exportAgency, st.Agencies+1)
	rows, err := tx.Query(ctx, "SELECT agency, held, finished, chain FROM agencies")
	if err != nil {
		return st, fmt.Errorf("read agencies: %w", err)
	}
	var agency int32
	var held int64
	var finished bool
	var chain []byte
	seen := 0
	_, err = pgx.ForEachRow(rows, []any{&agency, &held, &finished, &chain}, func() error {
		if agency < 1 || int(agency) > st.Agencies {
			return fmt.Errorf("%w: agency row %d outside 1..%d", ErrCorrupt, agency, st.Agencies)
		}
		agencies[agency] = exportAgency{held: uint64(held), chain: chain, c: receipt.NewChain()}
		if finished {
			st.Finished++
		}
		seen++
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("read agencies: %w", err)
	}
	if seen != st.Agencies {
		return st, fmt.Errorf("%w: %d agency rows, want %d", ErrCorrupt, seen, st.Agencies)
	}

	rows, err = tx.Query(ctx, "SELECT agency, idx, first_name, last_name, document, birthdate, number FROM bets ORDER BY agency, idx")
	if err != nil {
		return st, fmt.Errorf("read bets: %w", err)
	}
	var idx int64
	var birth time.Time
	var number int16
	var b frame.Bet
	buf := make([]byte, 0, 256<<10)
	_, err = pgx.ForEachRow(rows, []any{&agency, &idx, &b.FirstName, &b.LastName, &b.Document, &birth, &number}, func() error {
		if agency < 1 || int(agency) > st.Agencies {
			return fmt.Errorf("%w: a bet of agency %d, outside 1..%d", ErrCorrupt, agency, st.Agencies)
		}
		a := &agencies[agency]
		if uint64(idx) != a.next {
			return fmt.Errorf("%w: agency %d: bet %d follows bet %d", ErrCorrupt, agency, idx, int64(a.next)-1)
		}
		a.next++
		b.Birthdate, b.Number = frame.DateOf(birth), uint16(number)
		a.c.Add(&b)
		buf = filestore.AppendRow(buf, uint32(agency), &b)
		st.Rows++
		if len(buf) >= 192<<10 {
			n, err := w.Write(buf)
			st.Bytes += int64(n)
			if err != nil {
				return fmt.Errorf("write: %w", err)
			}
			buf = buf[:0]
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("read bets: %w", err)
	}
	n, err := w.Write(buf)
	st.Bytes += int64(n)
	if err != nil {
		return st, fmt.Errorf("write: %w", err)
	}
	for i := 1; i <= st.Agencies; i++ {
		a := &agencies[i]
		if a.next != a.held {
			return st, fmt.Errorf("%w: agency %d holds %d bets on record but %d rows", ErrCorrupt, i, a.held, a.next)
		}
		if sum := a.c.Sum(); string(sum[:]) != string(a.chain) {
			return st, fmt.Errorf("%w: agency %d's rows do not hash to its chain value on record", ErrCorrupt, i)
		}
	}
	return st, nil
}
