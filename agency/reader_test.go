package agency_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
)

// writeBetsFile writes content to a new file and returns its path.
func writeBetsFile(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agency-1.csv")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func openFile(t testing.TB, content string) (*agency.FileSource, string) {
	t.Helper()
	path := writeBetsFile(t, content)
	src, err := agency.OpenFile(path)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	return src, path
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

// testBets returns n valid bets whose names are nameLen bytes long (at
// least 8) and whose documents and numbers encode their position.
func testBets(n, nameLen int) []frame.Bet {
	bets := make([]frame.Bet, n)
	for i := range bets {
		bets[i] = frame.Bet{
			FirstName: fmt.Sprintf("N%07d", i) + strings.Repeat("a", max(nameLen, 8)-8),
			LastName:  fmt.Sprintf("L%07d", i) + strings.Repeat("b", max(nameLen, 8)-8),
			Document:  fmt.Sprintf("%08d", 10000000+i),
			Birthdate: frame.NewDate(1950+i%50, 1+i%12, 1+i%28),
			Number:    uint16(i % 10000),
		}
	}
	return bets
}

// betsCSV formats bets (plain names, no quoting needed) as LF lines.
func betsCSV(bets []frame.Bet) string {
	var b strings.Builder
	for _, bet := range bets {
		fmt.Fprintf(&b, "%s,%s,%s,%s,%d\n", bet.FirstName, bet.LastName, bet.Document, bet.Birthdate, bet.Number)
	}
	return b.String()
}

func bet(first, last, doc string, date frame.Date, number uint16) frame.Bet {
	return frame.Bet{FirstName: first, LastName: last, Document: doc, Birthdate: date, Number: number}
}

func sameBets(t testing.TB, got, want []frame.Bet) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d bets, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("bet %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

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
