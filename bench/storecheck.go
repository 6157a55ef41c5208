package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tp0/loteria/persist/filestore"
)

// storeStats is what a run left in the server's data directory.
type storeStats struct {
	Rows     int64
	CSVBytes int64
	// Commits counts the journal's records, one per group commit; BetCommits
	// those that appended rows. Both are -1 when the journal is unreadable.
	Commits, BetCommits int
}

// checkStore reads bets.csv back and fails with ErrBrokenRun unless every
// agency 1..agencies holds exactly betsPerAgency rows.
func checkStore(dir string, agencies, betsPerAgency int) (storeStats, error) {
	path := filepath.Join(dir, filestore.BetsFile)
	f, err := os.Open(path)
	if err != nil {
		return storeStats{}, fmt.Errorf("check store: %w", err)
	}
	defer f.Close()
	perAgency := make([]int64, agencies+1)
	var st storeStats
	for b, err := range filestore.LoadBets(f) {
		if err != nil {
			return st, fmt.Errorf("%w: %s: %w", ErrBrokenRun, path, err)
		}
		if b.Agency < 1 || int(b.Agency) > agencies {
			return st, fmt.Errorf("%w: %s holds a bet of agency %d, outside 1..%d", ErrBrokenRun, path, b.Agency, agencies)
		}
		perAgency[b.Agency]++
		st.Rows++
	}
	if want := int64(agencies) * int64(betsPerAgency); st.Rows != want {
		return st, fmt.Errorf("%w: %s holds %d bets, want %d (%d agencies × %d)", ErrBrokenRun, path, st.Rows, want, agencies, betsPerAgency)
	}
	for a := 1; a <= agencies; a++ {
		if perAgency[a] != int64(betsPerAgency) {
			return st, fmt.Errorf("%w: %s holds %d bets of agency %d, want %d", ErrBrokenRun, path, perAgency[a], a, betsPerAgency)
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

// countCommits walks the store's journal (records of u32 length, u32 CRC,
// then a payload starting with the committed bets.csv offset, see package
// persist) and counts its records and those that moved the offset.
func countCommits(b []byte) (commits, betCommits int, err error) {
	var offset uint64
	for len(b) > 0 {
		if len(b) < 8 {
			return 0, 0, errors.New("journal: torn record header")
		}
		n := int(binary.BigEndian.Uint32(b))
		if n < 8 || n > len(b)-8 {
			return 0, 0, errors.New("journal: torn record")
		}
		next := binary.BigEndian.Uint64(b[8:])
		commits++
		if next > offset {
			betCommits++
		}
		offset = next
		b = b[8+n:]
	}
	return commits, betCommits, nil
}
