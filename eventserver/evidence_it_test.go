package eventserver

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"go.uber.org/zap/zapcore"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/receipt"
)

// Issue 13: receipts an agency can hold the server to, and one commitment
// fixed before any winner leaves.

// TestEvidenceTamperedBetStopsTheAgency: a fault hook changes one of agency
// 3's bets between decode and write. Agency 3 stops at the ACK of that batch
// with an error wrapping agency.ErrChain and does not retry; the other
// agencies upload, get their receipts and, once the stream is closed by
// hand (a person sends agency 3's FINISHED for what the server holds), their
// exact winners.
func TestEvidenceTamperedBetStopsTheAgency(t *testing.T) {
	t.Parallel()
	const victim, at, batch = 3, 45, 20
	ts := startServer(t, Config{Agencies: 5, Tamper: func(a uint32, first uint64, bets []frame.Bet) {
		if a == victim && first <= at && at < first+uint64(len(bets)) {
			bets[at-first].FirstName = "Tampered"
		}
	}}, optLogLevel(zapcore.InfoLevel))
	bets := map[uint32][]frame.Bet{}
	for a := uint32(1); a <= 5; a++ {
		bets[a] = synthBets(t, a, 300, int(a), int64(a))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*itGuard)
	defer cancel()
	runs := map[uint32]<-chan agencyRun{}
	logs := map[uint32]*watchedLogs{}
	for a := uint32(1); a <= 5; a++ {
		log, l := newWatchedLogger(zapcore.InfoLevel)
		cfg := ts.agencyConfig(a, log)
		cfg.BatchMaxAmount = batch
		runs[a], logs[a] = runInBackground(t, ctx, cfg, bets[a]), l
	}
	tampered := <-runs[victim]
	if !errors.Is(tampered.err, agency.ErrChain) {
		t.Fatalf("agency %d: %v, want an error wrapping agency.ErrChain", victim, tampered.err)
	}
	if want := uint64(at / batch * batch); tampered.res.Bets != want {
		t.Errorf("agency %d stopped with %d bets acknowledged, want %d (before the tampered batch)", victim, tampered.res.Bets, want)
	}
	if n := logs[victim].count("connect", map[string]string{"result": "in_progress"}); n != 0 {
		t.Errorf("agency %d retried %d times after the chain mismatch", victim, n)
	}
	for a := uint32(1); a <= 5; a++ {
		if a != victim {
			logs[a].wait(t, "receipt", map[string]string{"result": "success"})
		}
	}

	// A person closes agency 3's stream at what the server holds.
	p := ts.mustDial(t, victim)
	mustWrite(t, p, &frame.Hello{Agency: victim})
	w := expectFrame[*frame.Welcome](t, p)
	mustWrite(t, p, &frame.Finished{Total: w.Held})
	expectFrame[*frame.Receipt](t, p)
	if _, _, err := awaitWinners(p, receipt.Leaf{Agency: victim, Bets: w.Held, Chain: w.Chain}, ts.verifyKey()); err != nil {
		t.Fatal(err)
	}
	others := map[uint32]*agencyRun{}
	for a := uint32(1); a <= 5; a++ {
		if a != victim {
			r := <-runs[a]
			others[a] = &r
		}
	}
	delete(bets, victim)
	checkRuns(t, ts, bets, others)
	ts.mustStop(t)

	stored := storedBets(t, ts.dir)
	sent := synthBets(t, victim, 300, victim, victim)
	if uint64(len(stored[victim])) != w.Held || stored[victim][at].FirstName != "Tampered" {
		t.Fatalf("agency %d: %d rows stored, bet %d named %q; want the tampered bet on disk", victim,
			len(stored[victim]), at, stored[victim][at].FirstName)
	}
	sent[at].FirstName = "Tampered"
	if !slices.Equal(stored[victim], sent[:w.Held]) {
		t.Errorf("agency %d: stored rows differ from what it sent beyond the tampered bet", victim)
	}
	delete(stored, victim)
	for a, b := range bets {
		if !slices.Equal(stored[a], b) {
			t.Errorf("agency %d: bets.csv holds %d bets that differ from the %d it sent", a, len(stored[a]), len(b))
		}
	}
}

// TestEvidenceCourseShapedRun: five real agencies over CSV files with the
// course's row counts (scaled down) and winners: every agency's saved
// receipt verifies with the server's signing key against its own file, and
// every agency reports the same root, the one in the server's sorteo line,
// in commitment.json (whose signed statement holds each agency's receipt
// as its leaf) and in the agency's own log.
func TestEvidenceCourseShapedRun(t *testing.T) {
	t.Parallel()
	const scale = 20
	ts := startServer(t, Config{Agencies: len(agency.CourseSizes)}, optLogLevel(zapcore.InfoLevel))
	dir := t.TempDir()
	bets := map[uint32][]frame.Bet{}
	files := map[uint32]string{}
	for i, size := range agency.CourseSizes {
		a := uint32(i + 1)
		bets[a] = synthBets(t, a, max(size/scale, 1), agency.CourseWinners[i], 2026)
		files[a] = filepath.Join(dir, fmt.Sprintf("agency-%d.csv", a))
		f, err := os.Create(files[a])
		if err != nil {
			t.Fatal(err)
		}
		if err := agency.WriteBetsCSV(f, bets[a]); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*itGuard)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		runs = map[uint32]*agencyRun{}
	)
	for a, path := range files {
		log, logs := newWatchedLogger(zapcore.InfoLevel)
		cfg := ts.agencyConfig(a, log)
		cfg.BatchMaxAmount = agency.DefaultBatchMaxAmount
		cfg.ReceiptFile = receiptFile(path)
		src, err := agency.OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer src.Close()
			res, err := agency.Run(ctx, cfg, src)
			mu.Lock()
			runs[a] = &agencyRun{res: res, err: err, logs: logs}
			mu.Unlock()
		}()
	}
	wg.Wait()
	checkRuns(t, ts, bets, runs)
	for i, want := range agency.CourseWinners {
		if r := runs[uint32(i+1)]; r.err == nil && len(r.res.Winners) != want {
			t.Errorf("agency %d: %d winners, the course's file has %d", i+1, len(r.res.Winners), want)
		}
	}
	ts.mustStop(t)
	checkStored(t, ts.dir, bets)

	draw := requireOneDraw(t, ts)
	root := runs[1].res.Root
	if draw["root"] != hex.EncodeToString(root[:]) {
		t.Errorf("sorteo root %v, agency 1 reports %x", draw["root"], root)
	}
	data, err := os.ReadFile(filepath.Join(ts.dir, filestore.DrawFile))
	if err != nil {
		t.Fatal(err)
	}
	var st receipt.Statement
	if err := st.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ts.keys.verify); err != nil {
		t.Fatalf("commitment.json: %v", err)
	}
	if st.Root != root {
		t.Errorf("commitment.json root %x, agencies report %x", st.Root, root)
	}
	for a, path := range files {
		r := runs[a]
		if r.res.Root != root {
			t.Errorf("agency %d reports root %x, agency 1 %x", a, r.res.Root, root)
		}
		if l := r.logs.wait(t, "consulta_ganadores", map[string]string{"result": "success"}); l["root"] != hex.EncodeToString(root[:]) {
			t.Errorf("agency %d logged root %v, want %x", a, l["root"], root)
		}
		saved, err := receipt.ReadFile(receiptFile(path))
		if err != nil {
			t.Fatal(err)
		}
		if err := saved.Receipt.Verify(ts.keys.verify); err != nil {
			t.Errorf("agency %d: saved receipt: %v", a, err)
		}
		n, chain := fileChain(t, path)
		if saved.Receipt.Agency != a || saved.Receipt.Bets != n || saved.Receipt.Chain != chain {
			t.Errorf("agency %d: receipt for agency %d, %d bets, chain %x; its file has %d bets, chain %x",
				a, saved.Receipt.Agency, saved.Receipt.Bets, saved.Receipt.Chain[:4], n, chain[:4])
		}
		if saved.Root == nil || *saved.Root != root {
			t.Errorf("agency %d: saved receipt root %v, want %x", a, saved.Root, root)
		}
		if leaf := st.Leaves[a-1]; leaf.Bets != n || leaf.Chain != chain {
			t.Errorf("agency %d: commitment.json leaf %d bets chain %x, its file %d bets chain %x", a, leaf.Bets, leaf.Chain[:4], n, chain[:4])
		}
	}
}

// receiptFile is where an agency of the course-shaped run saves its receipt.
func receiptFile(bets string) string { return bets + ".receipt" }

// fileChain reads an agency's CSV file as the agency does and returns its
// bet count and chain, as bin/verify --receipt does.
func fileChain(t *testing.T, path string) (uint64, frame.Hash) {
	t.Helper()
	src, err := agency.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c := receipt.NewChain()
	for {
		b, err := src.Next()
		if errors.Is(err, io.EOF) {
			return c.Len(), c.Sum()
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		c.Add(&b)
	}
}
