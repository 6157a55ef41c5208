package agency_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
)

func TestFileSourceFormats(t *testing.T) {
	want := []frame.Bet{
		bet("Santiago Lionel", "Lorca", "30904465", 19990317, 7574),
		bet("José", "Muñoz Peña", "00012345", 19800101, 0),
		bet("Pérez, Juan", `O"Brien`, "0", 20000229, 9999),
	}
	rows := []string{
		"Santiago Lionel,Lorca,30904465,1999-03-17,7574",
		`José,Muñoz Peña,00012345,1980-01-01,0`,
		`"Pérez, Juan","O""Brien",0,2000-02-29,9999`,
	}
	tests := map[string]string{
		"LF":                  strings.Join(rows, "\n") + "\n",
		"CRLF":                strings.Join(rows, "\r\n") + "\r\n",
		"no final newline":    strings.Join(rows, "\n"),
		"BOM":                 "\xEF\xBB\xBF" + strings.Join(rows, "\r\n") + "\r\n",
		"blank lines":         "\n" + rows[0] + "\n\n" + rows[1] + "\r\n\r\n" + rows[2] + "\n\n",
		"spaces around value": "Santiago Lionel,Lorca, 30904465 , 1999-03-17 ,7574 \n" + rows[1] + "\n" + rows[2] + "\n",
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			src, path := openFile(t, content)
			if src.Path() != path {
				t.Errorf("Path() = %q, want %q", src.Path(), path)
			}
			sameBets(t, readAll(t, src), want)
			// EOF is sticky.
			if _, err := src.Next(); !errors.Is(err, io.EOF) {
				t.Errorf("Next after EOF: %v", err)
			}
		})
	}
}

func TestFileSourceEmpty(t *testing.T) {
	src, _ := openFile(t, "")
	if _, err := src.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("Next on an empty file: %v", err)
	}
	if p := src.Progress(); p != 1 {
		t.Errorf("Progress of an empty file = %v, want 1", p)
	}
}

func TestFileSourceMissing(t *testing.T) {
	_, err := agency.OpenFile(filepath.Join(t.TempDir(), "nope.csv"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFile of a missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestFileSourceRowErrors(t *testing.T) {
	good := "Ana,Gómez,123,1990-01-01,1\n"
	multi := "\"Ana\nMaría\",\"de la\r\nCruz\",124,1990-01-02,2\n" // one record over lines 1-3
	tests := []struct {
		name     string
		content  string
		line     int
		mentions string
	}{
		{"four columns", good + good + "Ana,Gómez,123,1990-01-01\n", 3, "number of fields"},
		{"six columns", good + "Ana,Gómez,123,1990-01-01,1,x\n", 2, "number of fields"},
		{"bad date", good + "Ana,Gómez,123,2023-02-30,1\n", 2, "birthdate"},
		{"date format", good + "Ana,Gómez,123,01/02/1990,1\n", 2, "birthdate"},
		{"future date", good + "Ana,Gómez,123,2999-01-01,1\n", 2, "birthdate"},
		{"number too big", good + "Ana,Gómez,123,1990-01-01,10000\n", 2, "number"},
		{"number negative", good + "Ana,Gómez,123,1990-01-01,-1\n", 2, "number"},
		{"document letters", good + "Ana,Gómez,12a,1990-01-01,1\n", 2, "document"},
		{"document too long", good + "Ana,Gómez,12345678901,1990-01-01,1\n", 2, "document"},
		{"empty first name", good + ",Gómez,123,1990-01-01,1\n", 2, "first_name"},
		{"empty last name", good + "Ana,,123,1990-01-01,1\n", 2, "last_name"},
		{"name too long", good + strings.Repeat("x", 101) + ",Gómez,123,1990-01-01,1\n", 2, "first_name"},
		{"invalid UTF-8", good + "An\xffa,Gómez,123,1990-01-01,1\n", 2, "UTF-8"},
		{"bare quote", good + "An\"a,Gómez,123,1990-01-01,1\n", 2, "quote"},
		{"after multi-line", multi + good + "Ana,Gómez,12a,1990-01-01,1\n", 5, "document"},
		{"after multi-line CRLF", strings.ReplaceAll(multi+good, "\n", "\r\n") + "Ana,Gómez,123,1990-01-01\r\n", 5, "number of fields"},
		{"after blank lines", "\n\n" + good + "\n" + "Ana,Gómez,123,1990-13-01,1\n", 5, "birthdate"},
		{"bad row is multi-line", good + "\"Ana\nMaría\",Gómez,123,1990-01-01,99999\n", 2, "number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, path := openFile(t, tc.content)
			var err error
			n := 0
			for ; n < 10; n++ {
				if _, err = src.Next(); err != nil {
					break
				}
			}
			var re *agency.RowError
			if !errors.As(err, &re) {
				t.Fatalf("after %d good bets: error %v (%T) is not a *RowError", n, err, err)
			}
			if re.File != path || re.Line != tc.line {
				t.Errorf("RowError at %s:%d, want %s:%d", re.File, re.Line, path, tc.line)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, fmt.Sprintf("%s:%d: ", path, tc.line)) || !strings.Contains(msg, tc.mentions) {
				t.Errorf("message %q does not name %s:%d and %q", msg, path, tc.line, tc.mentions)
			}
			if re.Unwrap() == nil {
				t.Error("RowError wraps no cause")
			}
		})
	}
}

// Field errors keep their cause, so callers can tell what was wrong.
func TestRowErrorWrapsFieldError(t *testing.T) {
	src, _ := openFile(t, "Ana,Gómez,12a,1990-01-01,1\n")
	_, err := src.Next()
	var fe *frame.FieldError
	if !errors.As(err, &fe) || fe.Field != "document" || !errors.Is(err, frame.ErrDigits) {
		t.Errorf("error %v does not wrap the document's FieldError", err)
	}
}

func TestFileSourceProgressAndRewind(t *testing.T) {
	bets := testBets(500, 10)
	src, _ := openFile(t, betsCSV(bets))
	if p := src.Progress(); p != 0 {
		t.Errorf("Progress before reading = %v, want 0", p)
	}
	last := 0.0
	for i := range bets {
		if _, err := src.Next(); err != nil {
			t.Fatal(err)
		}
		p := src.Progress()
		if p < last || p > 1 {
			t.Fatalf("Progress went from %v to %v at bet %d", last, p, i)
		}
		last = p
	}
	if last <= 0 {
		t.Errorf("Progress never moved")
	}
	if _, err := src.Next(); !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if p := src.Progress(); p != 1 {
		t.Errorf("Progress at EOF = %v, want 1", p)
	}
	if err := src.Rewind(); err != nil {
		t.Fatal(err)
	}
	if p := src.Progress(); p != 0 {
		t.Errorf("Progress after Rewind = %v, want 0", p)
	}
	sameBets(t, readAll(t, src), bets)
	if err := src.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestParseBet(t *testing.T) {
	today := frame.NewDate(2024, 6, 1)
	b, err := agency.ParseBet("Ana", "Gómez", " 0042 ", " 2024-06-01", "0007 ", today)
	if err != nil {
		t.Fatal(err)
	}
	if want := bet("Ana", "Gómez", "0042", 20240601, 7); b != want {
		t.Errorf("ParseBet = %+v, want %+v", b, want)
	}
	if _, err := agency.ParseBet("Ana", "Gómez", "1", "2024-06-02", "1", today); err == nil {
		t.Error("a birthdate after today was accepted")
	}
	if _, err := agency.ParseBet("Ana", "Gómez", "1", "1899-12-31", "1", today); err == nil {
		t.Error("a birthdate before 1900 was accepted")
	}
}

func TestSliceSource(t *testing.T) {
	bets := testBets(3, 8)
	src := agency.NewSliceSource(bets)
	if p := src.Progress(); p != 0 {
		t.Errorf("Progress = %v, want 0", p)
	}
	sameBets(t, readAll(t, src), bets)
	if p := src.Progress(); p != 1 {
		t.Errorf("Progress = %v, want 1", p)
	}
	if err := src.Rewind(); err != nil {
		t.Fatal(err)
	}
	sameBets(t, readAll(t, src), bets)
	if p := agency.NewSliceSource(nil).Progress(); p != 1 {
		t.Errorf("empty Progress = %v, want 1", p)
	}
}

// drain returns every batch of b until the empty one.
func drain(t testing.TB, b *agency.Batcher) (firsts []uint64, batches [][]frame.Bet) {
	t.Helper()
	for range 100000 {
		first, batch, err := b.Next()
		if err != nil {
			t.Fatalf("Batcher.Next: %v", err)
		}
		if len(batch) == 0 {
			return firsts, batches
		}
		firsts = append(firsts, first)
		batches = append(batches, batch)
	}
	t.Fatal("Batcher never ran dry")
	return nil, nil
}

func TestBatcherCounts(t *testing.T) {
	for _, tc := range []struct{ n, max int }{{250, 100}, {200, 100}, {1, 100}, {0, 100}, {7, 1}, {5, 0}, {106, 106}} {
		t.Run(fmt.Sprintf("%d_by_%d", tc.n, tc.max), func(t *testing.T) {
			bets := testBets(tc.n, 10)
			b := agency.NewBatcher(agency.NewSliceSource(bets), tc.max)
			firsts, batches := drain(t, b)
			per := max(tc.max, 1)
			wantBatches := (tc.n + per - 1) / per
			if len(batches) != wantBatches {
				t.Fatalf("%d batches, want %d", len(batches), wantBatches)
			}
			var all []frame.Bet
			for i, batch := range batches {
				want := per
				if i == len(batches)-1 {
					want = tc.n - per*(len(batches)-1)
				}
				if len(batch) != want {
					t.Errorf("batch %d has %d bets, want %d", i, len(batch), want)
				}
				if firsts[i] != uint64(len(all)) {
					t.Errorf("batch %d first = %d, want %d", i, firsts[i], len(all))
				}
				all = append(all, batch...)
			}
			sameBets(t, all, bets)
			if b.Index() != uint64(tc.n) {
				t.Errorf("Index() = %d, want %d", b.Index(), tc.n)
			}
			// Exhausted stays exhausted.
			if first, batch, err := b.Next(); err != nil || len(batch) != 0 || first != uint64(tc.n) {
				t.Errorf("Next after the end = %d, %d bets, %v", first, len(batch), err)
			}
		})
	}
}

func TestBatcherFrameLimit(t *testing.T) {
	bets := testBets(300, frame.MaxNameLen) // 100-byte names: ~219 bytes a bet
	perFrame := (frame.MaxSize - frame.BetsFrameSize(nil)) / frame.BetWireSize(&bets[0])
	for _, max := range []int{100, 1000, perFrame, perFrame + 1} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			firsts, batches := drain(t, agency.NewBatcher(agency.NewSliceSource(bets), max))
			var all []frame.Bet
			for i, batch := range batches {
				wire, err := frame.Encode(&frame.Bets{First: firsts[i], Bets: batch})
				if err != nil {
					t.Fatalf("batch %d does not encode: %v", i, err)
				}
				if len(wire) > frame.MaxSize {
					t.Fatalf("batch %d encodes to %d bytes", i, len(wire))
				}
				if i < len(batches)-1 {
					if len(batch) != min(max, perFrame) {
						t.Errorf("batch %d has %d bets, want %d", i, len(batch), min(max, perFrame))
					}
					// The cut is as late as possible: one more bet would not fit.
					if len(batch) < max && len(wire)+frame.BetWireSize(&bets[0]) <= frame.MaxSize {
						t.Errorf("batch %d cut at %d bytes though another bet fits", i, len(wire))
					}
				}
				all = append(all, batch...)
			}
			sameBets(t, all, bets)
		})
	}
}

func TestBatcherSeek(t *testing.T) {
	bets := testBets(250, 10)
	path := writeBetsFile(t, betsCSV(bets))
	sources := map[string]func() agency.Source{
		"slice": func() agency.Source { return agency.NewSliceSource(bets) },
		"file": func() agency.Source {
			s, err := agency.OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
	for name, open := range sources {
		t.Run(name, func(t *testing.T) {
			b := agency.NewBatcher(open(), 100)
			expect := func(step string, first uint64, n int) {
				t.Helper()
				got, batch, err := b.Next()
				if err != nil {
					t.Fatalf("%s: %v", step, err)
				}
				if got != first || len(batch) != n {
					t.Fatalf("%s: batch at %d of %d bets, want at %d of %d", step, got, len(batch), first, n)
				}
				if n > 0 {
					sameBets(t, batch, bets[first:first+uint64(n)])
				}
			}
			if err := b.Seek(0); err != nil {
				t.Fatal(err)
			}
			expect("start", 0, 100)
			if err := b.Seek(130); err != nil { // forward
				t.Fatal(err)
			}
			expect("forward", 130, 100)
			if err := b.Seek(5); err != nil { // backward
				t.Fatal(err)
			}
			expect("backward", 5, 100)
			if err := b.Seek(105); err != nil { // where it already is
				t.Fatal(err)
			}
			expect("same place", 105, 100)
			if err := b.Seek(250); err != nil { // exactly the end
				t.Fatal(err)
			}
			expect("end", 250, 0)
			err := b.Seek(251)
			if err == nil || !strings.Contains(err.Error(), "251") || !strings.Contains(err.Error(), "250") {
				t.Fatalf("Seek beyond the end: %v", err)
			}
			if err := b.Seek(0); err != nil { // usable again after the failed seek
				t.Fatal(err)
			}
			expect("again", 0, 100)
		})
	}
}

// A bet read ahead because it did not fit in the previous frame is neither
// lost nor duplicated by a Seek.
func TestBatcherSeekWithBetAhead(t *testing.T) {
	bets := testBets(100, frame.MaxNameLen)
	for _, target := range []uint64{0, 37, 38, 40} {
		b := agency.NewBatcher(agency.NewSliceSource(bets), 100)
		first, batch, err := b.Next()
		if err != nil || first != 0 || len(batch) != 37 {
			t.Fatalf("first batch: %d, %d bets, %v; want 37 bets (frame limit)", first, len(batch), err)
		}
		if err := b.Seek(target); err != nil {
			t.Fatal(err)
		}
		first, batch, err = b.Next()
		if err != nil || first != target || len(batch) == 0 || batch[0] != bets[target] {
			t.Fatalf("after Seek(%d): first %d, %d bets, %v", target, first, len(batch), err)
		}
	}
}

func TestBatcherBadRow(t *testing.T) {
	content := betsCSV(testBets(5, 10)) + "Ana,Gómez,123,2023-02-30,1\n" + betsCSV(testBets(3, 10))
	src, path := openFile(t, content)
	b := agency.NewBatcher(src, 3)
	if _, batch, err := b.Next(); err != nil || len(batch) != 3 {
		t.Fatalf("first batch: %d bets, %v", len(batch), err)
	}
	first, batch, err := b.Next()
	var re *agency.RowError
	if !errors.As(err, &re) || re.Line != 6 || re.File != path {
		t.Fatalf("second batch error %v, want a RowError at line 6", err)
	}
	if batch != nil || first != 3 {
		t.Errorf("a failed batch returned first %d and %d bets", first, len(batch))
	}
	if b.Index() != 3 {
		t.Errorf("Index() after a failed batch = %d, want 3", b.Index())
	}
}

// readAll drains src, failing on any error but io.EOF.
func readAll(t testing.TB, src agency.Source) []frame.Bet {
	t.Helper()
	var out []frame.Bet
	for {
		b, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("Next after %d bets: %v", len(out), err)
		}
		out = append(out, b)
	}
}

// quirksBets are the bets of testdata/quirks.csv: a byte order mark, CRLF
// and LF endings, blank lines, quoted fields holding commas, quotes and line
// breaks, spaces around values and no final line break.
var quirksBets = []frame.Bet{
	bet("Santiago Lionel", "Lorca", "30904465", 19990317, 7574),
	bet("Pérez, Juan", `O"Brien`, "00012345", 20000229, 0),
	bet("Ana\nMaría", "González", "07654321", 19800101, 9999),
	bet("José", "Muñoz\nPeña", "1", 19000101, 42),
	bet("Zoé", "D'Angelo", "0", 20041231, 7574),
}

// quirksLines are the lines the rows of testdata/quirks.csv start on.
var quirksLines = []int{1, 2, 4, 6, 9}

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestFileSourceQuirksFile(t *testing.T) {
	src, _ := openFile(t, readTestdata(t, "quirks.csv"))
	sameBets(t, readAll(t, src), quirksBets)
}

// Every Position a source reports can be sought back to, from anywhere, and
// reading goes on from exactly that bet.
func TestSourcePositionSeek(t *testing.T) {
	plain := testBets(40, 10)
	sources := []struct {
		name string
		bets []frame.Bet
		open func(t *testing.T) agency.Source
	}{
		{"file quirks", quirksBets, func(t *testing.T) agency.Source {
			src, _ := openFile(t, readTestdata(t, "quirks.csv"))
			return src
		}},
		{"file LF", plain, func(t *testing.T) agency.Source {
			src, _ := openFile(t, betsCSV(plain))
			return src
		}},
		{"file CRLF with BOM", plain, func(t *testing.T) agency.Source {
			src, _ := openFile(t, "\xEF\xBB\xBF"+strings.ReplaceAll(betsCSV(plain), "\n", "\r\n"))
			return src
		}},
		{"slice", plain, func(*testing.T) agency.Source { return agency.NewSliceSource(plain) }},
	}
	for _, tc := range sources {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.open(t)
			positions := make([]agency.Position, 0, len(tc.bets)+1)
			for range tc.bets {
				positions = append(positions, src.Position())
				if _, err := src.Next(); err != nil {
					t.Fatal(err)
				}
			}
			positions = append(positions, src.Position()) // the end
			// Back to every position in turn, from the end and from each other.
			for _, i := range []int{len(tc.bets), 0, len(tc.bets) / 2, 1, len(tc.bets) - 1, len(tc.bets) / 2} {
				if err := src.Seek(positions[i]); err != nil {
					t.Fatalf("Seek(%+v): %v", positions[i], err)
				}
				if got := src.Position(); got != positions[i] {
					t.Errorf("Position after Seek(%+v) = %+v", positions[i], got)
				}
				sameBets(t, readAll(t, src), tc.bets[i:])
			}
		})
	}
}

// Line numbers stay right after a Seek: a bad row is reported at its own
// line whichever position the source was sought to before reaching it.
func TestFileSourceSeekKeepsLineNumbers(t *testing.T) {
	content := readTestdata(t, "quirks.csv") + "\r\n\r\nAna,Gómez,12a,1990-01-01,1\r\n"
	const badLine = 11
	src, path := openFile(t, content)
	var positions []agency.Position
	for i := range quirksBets {
		positions = append(positions, src.Position())
		if positions[i].Line > quirksLines[i] {
			t.Errorf("Position before row %d says line %d, the row is on line %d", i, positions[i].Line, quirksLines[i])
		}
		if _, err := src.Next(); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range positions {
		if err := src.Seek(p); err != nil {
			t.Fatal(err)
		}
		n := 0
		var err error
		for ; err == nil; n++ {
			_, err = src.Next()
		}
		var re *agency.RowError
		if !errors.As(err, &re) || re.Line != badLine || re.File != path {
			t.Errorf("after Seek to row %d (%+v): error %v after %d bets, want a RowError at %s:%d", i, p, err, n-1, path, badLine)
		}
		if n-1 != len(quirksBets)-i {
			t.Errorf("after Seek to row %d: %d bets before the bad row, want %d", i, n-1, len(quirksBets)-i)
		}
	}
}

// checkpointRun is a Batcher run straight through: every batch, the chain
// after it and a checkpoint taken after it.
type checkpointRun struct {
	firsts []uint64
	sizes  []int
	chains []frame.Hash
	cps    []agency.Checkpoint
}

func straightThrough(t *testing.T, b *agency.Batcher) checkpointRun {
	t.Helper()
	var r checkpointRun
	r.cps = append(r.cps, b.Checkpoint())
	for range 10000 {
		first, batch, err := b.Next()
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			return r
		}
		r.firsts = append(r.firsts, first)
		r.sizes = append(r.sizes, len(batch))
		r.chains = append(r.chains, b.Chain())
		r.cps = append(r.cps, b.Checkpoint())
	}
	t.Fatal("the batcher never ran dry")
	return r
}

// Restoring a checkpoint resumes exactly: the same batches with the same
// chains as reading straight through, also when a bet was read ahead for
// not fitting the frame, and as often as the checkpoint is restored.
func TestCheckpointRestore(t *testing.T) {
	cases := []struct {
		name    string
		bets    []frame.Bet
		max     int
		content func([]frame.Bet) string
	}{
		{"file, count cuts", testBets(250, 10), 100, betsCSV},
		{"file, frame cuts (a bet read ahead)", testBets(120, frame.MaxNameLen), 100, betsCSV},
		{"file CRLF BOM", testBets(53, 12), 10, func(b []frame.Bet) string {
			return "\xEF\xBB\xBF" + strings.ReplaceAll(betsCSV(b), "\n", "\r\n")
		}},
		{"slice, frame cuts", testBets(120, frame.MaxNameLen), 100, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var src agency.Source = agency.NewSliceSource(tc.bets)
			if tc.content != nil {
				src, _ = openFile(t, tc.content(tc.bets))
			}
			b := agency.NewBatcher(src, tc.max)
			want := straightThrough(t, b)
			if len(want.firsts) < 3 {
				t.Fatalf("only %d batches; the case needs several", len(want.firsts))
			}
			for _, k := range []int{len(want.cps) - 1, 0, 1, len(want.cps) / 2, 1} {
				cp := want.cps[k]
				if err := b.Restore(cp); err != nil {
					t.Fatal(err)
				}
				if b.Index() != cp.Index || b.Chain() != cp.Chain() {
					t.Fatalf("after Restore(checkpoint %d): index %d chain %x, want %d %x", k, b.Index(), b.Chain(), cp.Index, cp.Chain())
				}
				if cp.Chain() != receipt.ChainOf(tc.bets[:cp.Index]) {
					t.Fatalf("checkpoint %d's chain is not the chain of the first %d bets", k, cp.Index)
				}
				got := straightThrough(t, b)
				if !slices.Equal(got.firsts, want.firsts[k:]) || !slices.Equal(got.sizes, want.sizes[k:]) ||
					!slices.Equal(got.chains, want.chains[k:]) {
					t.Fatalf("after Restore(checkpoint %d): batches %v of %v, want %v of %v (or other chains)",
						k, got.firsts, got.sizes, want.firsts[k:], want.sizes[k:])
				}
			}
		})
	}
}

// Seek hashes the bets it skips: after Seek(i) the chain is that of the
// first i bets, whichever way the batcher moved and whatever it read before.
func TestBatcherSeekChain(t *testing.T) {
	bets := testBets(250, frame.MaxNameLen) // batches cut by the frame, a bet read ahead
	src, _ := openFile(t, betsCSV(bets))
	b := agency.NewBatcher(src, 100)
	if _, batch, err := b.Next(); err != nil || len(batch) != 37 {
		t.Fatalf("first batch: %d bets, %v; want 37 (frame limit)", len(batch), err)
	}
	for _, i := range []uint64{37, 0, 1, 38, 200, 250, 36, 37, 100} {
		if err := b.Seek(i); err != nil {
			t.Fatalf("Seek(%d): %v", i, err)
		}
		if b.Index() != i {
			t.Errorf("Seek(%d): Index() = %d", i, b.Index())
		}
		if got, want := b.Chain(), receipt.ChainOf(bets[:i]); got != want {
			t.Errorf("Seek(%d): Chain() = %x, want receipt.ChainOf of the first %d bets %x", i, got, i, want)
		}
		if cp := b.Checkpoint(); cp.Index != i || cp.Chain() != receipt.ChainOf(bets[:i]) {
			t.Errorf("Seek(%d): checkpoint at %d with chain %x", i, cp.Index, cp.Chain())
		}
		first, batch, err := b.Next()
		if err != nil || first != i {
			t.Fatalf("Next after Seek(%d): first %d, %v", i, first, err)
		}
		if i < uint64(len(bets)) && (len(batch) == 0 || batch[0] != bets[i]) {
			t.Fatalf("Next after Seek(%d) does not start with bet %d", i, i)
		}
		if got, want := b.Chain(), receipt.ChainOf(bets[:i+uint64(len(batch))]); got != want {
			t.Errorf("batch after Seek(%d): chain %x, want %x", i, got, want)
		}
	}
	if receipt.ChainOf(nil) != receipt.Empty() {
		t.Error("the chain of no bets is not receipt.Empty()")
	}
}

// SetMaxFrame (WELCOME's max_frame) cuts every later batch to frames of at
// most that size, as late as possible; a bet that cannot fit alone fails.
func TestBatcherSetMaxFrame(t *testing.T) {
	long := testBets(60, frame.MaxNameLen) // 219 bytes a bet
	betSize := frame.BetWireSize(&long[0])
	empty := frame.BetsFrameSize(nil)
	cases := []struct {
		limit, want int // want: the frame size batches are cut to
	}{
		{2048, 2048},
		{empty + betSize, empty + betSize}, // exactly one bet a frame
		{0, frame.MaxSize},                 // no limit announced
		{-1, frame.MaxSize},
		{frame.MaxSize + 1, frame.MaxSize},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.limit), func(t *testing.T) {
			b := agency.NewBatcher(agency.NewSliceSource(long), 1000)
			b.SetMaxFrame(tc.limit)
			perFrame := (tc.want - empty) / betSize
			firsts, batches := drain(t, b)
			var all []frame.Bet
			for i, batch := range batches {
				wire, err := frame.Encode(&frame.Bets{First: firsts[i], Bets: batch})
				if err != nil {
					t.Fatal(err)
				}
				if len(wire) > tc.want {
					t.Fatalf("batch %d encodes to %d bytes, limit %d", i, len(wire), tc.want)
				}
				if i < len(batches)-1 && len(batch) != perFrame {
					t.Errorf("batch %d holds %d bets, want %d (as many as fit)", i, len(batch), perFrame)
				}
				all = append(all, batch...)
			}
			sameBets(t, all, long)
		})
	}
	t.Run("a bet larger than the limit", func(t *testing.T) {
		bets := append(testBets(3, 8), long[0])
		b := agency.NewBatcher(agency.NewSliceSource(bets), 100)
		b.SetMaxFrame(empty + betSize - 1)
		first, batch, err := b.Next()
		if err != nil || first != 0 || len(batch) != 3 {
			t.Fatalf("first batch: %d, %d bets, %v; want the 3 short bets", first, len(batch), err)
		}
		first, batch, err = b.Next()
		if err == nil || batch != nil || first != 3 {
			t.Fatalf("the oversized bet gave first %d, %d bets, %v; want an error", first, len(batch), err)
		}
		for _, want := range []string{"bet 3", fmt.Sprint(betSize), fmt.Sprint(empty + betSize - 1)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		if b.Index() != 3 {
			t.Errorf("Index() = %d after the failed batch, want 3", b.Index())
		}
	})
}

func TestSliceSourcePositionBounds(t *testing.T) {
	src := agency.NewSliceSource(testBets(3, 8))
	for _, off := range []int64{-1, 4} {
		if err := src.Seek(agency.Position{Offset: off}); err == nil {
			t.Errorf("Seek to %d of 3 bets succeeded", off)
		}
	}
	if err := src.Seek(agency.Position{Offset: 3}); err != nil {
		t.Errorf("Seek to the end: %v", err)
	}
	if _, err := src.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("Next at the end: %v, want io.EOF", err)
	}
}

// The batcher allocates per batch (the batch itself), not per bet: it sits
// on the agency's hot path, once for every bet of the file.
func TestBatcherAllocatesPerBatch(t *testing.T) {
	bets := testBets(2000, 10)
	src := agency.NewSliceSource(bets)
	allocs := testing.AllocsPerRun(5, func() {
		if err := src.Rewind(); err != nil {
			t.Fatal(err)
		}
		b := agency.NewBatcher(src, 100)
		for {
			_, batch, err := b.Next()
			if err != nil {
				t.Fatal(err)
			}
			if len(batch) == 0 {
				return
			}
		}
	})
	if perBet := allocs / float64(len(bets)); perBet > 0.2 {
		t.Errorf("%.0f allocations for %d bets in 20 batches: %.2f a bet, want at most 0.2", allocs, len(bets), perBet)
	}
}

// A batch handed back through NextInto is filled again in place: an upload
// that recycles its ACKed batches allocates no batch slices at all, and
// gets the same batches as one that does not.
func TestBatcherNextIntoReuses(t *testing.T) {
	bets := testBets(1000, 10)
	fresh := agency.NewBatcher(agency.NewSliceSource(bets), 100)
	reused := agency.NewBatcher(agency.NewSliceSource(bets), 100)
	var spare []frame.Bet
	for i := 0; ; i++ {
		wantFirst, want, err := fresh.Next()
		if err != nil {
			t.Fatal(err)
		}
		first, got, err := reused.NextInto(spare)
		if err != nil {
			t.Fatal(err)
		}
		if first != wantFirst || !slices.Equal(got, want) {
			t.Fatalf("batch %d: NextInto gave %d bets from %d, Next %d from %d", i, len(got), first, len(want), wantFirst)
		}
		if i > 0 && len(got) > 0 && &got[:1][0] != &spare[:1][0] {
			t.Fatalf("batch %d: NextInto did not fill the slice it was handed", i)
		}
		if len(want) == 0 {
			break
		}
		spare = got
	}
	if reused.Chain() != fresh.Chain() {
		t.Errorf("chain %x after NextInto, %x after Next", reused.Chain(), fresh.Chain())
	}
	src := agency.NewSliceSource(bets)
	allocs := testing.AllocsPerRun(5, func() {
		if err := src.Rewind(); err != nil {
			t.Fatal(err)
		}
		b := agency.NewBatcher(src, 100)
		_, spare, _ := b.Next()
		for {
			_, batch, err := b.NextInto(spare)
			if err != nil {
				t.Fatal(err)
			}
			if len(batch) == 0 {
				return
			}
		}
	})
	// Left: the batcher, its chain and the first batch (5 here); one per
	// batch would make 14.
	if allocs > 10 {
		t.Errorf("%.0f allocations for %d bets in 10 batches recycled, want at most 10", allocs, len(bets))
	}
}

// A quoted number holding a line break is accepted (ParseBet trims it), so the
// row ends one line below where its number field starts. Position must still
// name the line the next row starts on, or an error after a Seek (a reconnect
// restoring a checkpoint) names the wrong line.
func TestPositionAfterAQuotedNumberWithALineBreak(t *testing.T) {
	content := "Ana,Gómez,1,1990-01-01,\"7574\r\n\"\r\n" + // lines 1-2, accepted
		"Bob,Pérez,12a,1990-01-01,1\r\n" // line 3, bad document
	src, path := openFile(t, content)
	if _, err := src.Next(); err != nil {
		t.Fatalf("row 1: %v", err)
	}
	pos := src.Position()
	_, err := src.Next()
	var straight *agency.RowError
	if !errors.As(err, &straight) || straight.Line != 3 {
		t.Fatalf("straight read: %v, want a RowError at %s:3", err, path)
	}
	if pos.Line != 3 {
		t.Errorf("Position after row 1 = %+v, but the next row starts on line 3", pos)
	}
	if err := src.Seek(pos); err != nil {
		t.Fatal(err)
	}
	_, err = src.Next()
	var re *agency.RowError
	if !errors.As(err, &re) || re.Line != 3 {
		t.Errorf("after Seek(%+v): %v, want a RowError at %s:3", pos, err, path)
	}
}
