package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/receipt"
)

// storeStats is what a run left in the server's data directory.
type storeStats struct {
	Rows     int64
	CSVBytes int64
	// Commits counts the journal's records, one per group commit; BetCommits
	// those that appended rows. Both are -1 when the journal is unreadable.
	Commits, BetCommits int
}

// agencyWant is what the store must hold of one agency: its bets, whose
// chain (over the rows in stream order) is Chain.
type agencyWant struct {
	Bets  int64
	Chain frame.Hash
}

// wantFromSets is what k agencies uploading sets leave in the store.
func wantFromSets(sets []*dataset, k int) []agencyWant {
	want := make([]agencyWant, k)
	for i := range want {
		ds := sets[i%len(sets)]
		want[i] = agencyWant{Bets: int64(ds.bets), Chain: ds.final}
	}
	return want
}

// wantFromBets is what an agency that sent bets leaves in the store.
func wantFromBets(bets []frame.Bet) agencyWant {
	return agencyWant{Bets: int64(len(bets)), Chain: receipt.ChainOf(bets)}
}

// checkStore reads bets.csv back and fails with ErrBrokenRun unless agency
// i+1 holds exactly want[i].Bets rows whose chain is want[i].Chain: every
// bet stored, none twice, none changed, in stream order, and no other agency.
func checkStore(dir string, want []agencyWant) (storeStats, error) {
	path := filepath.Join(dir, filestore.BetsFile)
	f, err := os.Open(path)
	if err != nil {
		return storeStats{}, fmt.Errorf("check store: %w", err)
	}
	defer f.Close()
	chains := make([]*receipt.Chain, len(want))
	for i := range chains {
		chains[i] = receipt.NewChain()
	}
	var st storeStats
	for b, err := range filestore.LoadBets(f) {
		if err != nil {
			return st, fmt.Errorf("%w: %s: %w", ErrBrokenRun, path, err)
		}
		if b.Agency < 1 || int(b.Agency) > len(want) {
			return st, fmt.Errorf("%w: %s holds a bet of agency %d, outside 1..%d", ErrBrokenRun, path, b.Agency, len(want))
		}
		chains[b.Agency-1].Add(&b.Bet)
		st.Rows++
	}
	var total int64
	for _, w := range want {
		total += w.Bets
	}
	if st.Rows != total {
		return st, fmt.Errorf("%w: %s holds %d bets, want %d", ErrBrokenRun, path, st.Rows, total)
	}
	for i, w := range want {
		c := chains[i]
		if int64(c.Len()) != w.Bets {
			return st, fmt.Errorf("%w: %s holds %d bets of agency %d, want %d", ErrBrokenRun, path, c.Len(), i+1, w.Bets)
		}
		if got := c.Sum(); got != w.Chain {
			return st, fmt.Errorf("%w: %s: the chain over agency %d's %d rows is %x, the bets it sent give %x",
				ErrBrokenRun, path, i+1, w.Bets, got, w.Chain)
		}
	}
	if info, err := f.Stat(); err == nil {
		st.CSVBytes = info.Size()
	}
	st.Commits, st.BetCommits = -1, -1
	if b, err := os.ReadFile(filepath.Join(dir, filestore.JournalFile)); err == nil {
		if c, bc, err := countCommits(b); err == nil {
			st.Commits, st.BetCommits = c, bc
		}
	}
	return st, nil
}

// journalFormat is the format byte of the journal records countCommits reads.
const journalFormat = 2

// countCommits walks the store's journal (records of u32 payload length,
// u32 CRC, then a payload starting with a format byte and the committed
// bets.csv offset, see package persist/filestore) and counts its records
// and those that moved the offset.
func countCommits(b []byte) (commits, betCommits int, err error) {
	var offset uint64
	for len(b) > 0 {
		if len(b) < 8 {
			return 0, 0, errors.New("journal: torn record header")
		}
		n := int(binary.BigEndian.Uint32(b))
		if n < 9 || n > len(b)-8 {
			return 0, 0, errors.New("journal: torn record")
		}
		if b[8] != journalFormat {
			return 0, 0, fmt.Errorf("journal: record format %d, this reader knows %d", b[8], journalFormat)
		}
		next := binary.BigEndian.Uint64(b[9:])
		commits++
		if next > offset {
			betCommits++
		}
		offset = next
		b = b[8+n:]
	}
	return commits, betCommits, nil
}
