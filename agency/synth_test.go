package agency_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
)

const synthWinning = 7574

func synthCourse(t testing.TB, i int) agency.SynthOptions {
	t.Helper()
	return agency.SynthOptions{
		Agency:        uint32(i + 1),
		Bets:          agency.CourseSizes[i],
		Winners:       agency.CourseWinners[i],
		WinningNumber: synthWinning,
		Seed:          1,
	}
}

func synthMust(t testing.TB, o agency.SynthOptions) []frame.Bet {
	t.Helper()
	bets, err := agency.SyntheticBets(o)
	if err != nil {
		t.Fatalf("SyntheticBets(%+v): %v", o, err)
	}
	if len(bets) != o.Bets {
		t.Fatalf("SyntheticBets(%+v) returned %d bets", o, len(bets))
	}
	return bets
}

func synthCSV(t testing.TB, bets []frame.Bet) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := agency.WriteBetsCSV(&buf, bets); err != nil {
		t.Fatalf("WriteBetsCSV: %v", err)
	}
	return buf.Bytes()
}

func TestSynthDeterministic(t *testing.T) {
	base := synthCourse(t, 0)
	a := synthCSV(t, synthMust(t, base))
	b := synthCSV(t, synthMust(t, base))
	if !bytes.Equal(a, b) {
		t.Fatal("same options produced different bytes")
	}
	for name, o := range map[string]agency.SynthOptions{
		"seed":   {Agency: base.Agency, Bets: base.Bets, Winners: base.Winners, WinningNumber: base.WinningNumber, Seed: 2},
		"agency": {Agency: 2, Bets: base.Bets, Winners: base.Winners, WinningNumber: base.WinningNumber, Seed: base.Seed},
	} {
		if bytes.Equal(a, synthCSV(t, synthMust(t, o))) {
			t.Errorf("changing the %s did not change the bets", name)
		}
	}
	// Without winners no row depends on the row count: a smaller file is a
	// prefix of a larger one.
	small := synthCSV(t, synthMust(t, agency.SynthOptions{Agency: 3, Bets: 100, WinningNumber: synthWinning, Seed: 9}))
	large := synthCSV(t, synthMust(t, agency.SynthOptions{Agency: 3, Bets: 1000, WinningNumber: synthWinning, Seed: 9}))
	if !bytes.HasPrefix(large, small) {
		t.Error("100 bets are not a prefix of 1000 bets with the same seed and no winners")
	}
}

// TestSynthGolden pins the generator's output so that files written by one
// build equal the bets another build generates in memory. If you change the
// generator on purpose, update the hash and say so: old data directories then differ.
func TestSynthGolden(t *testing.T) {
	o := agency.SynthOptions{Agency: 1, Bets: 2000, Winners: 3, WinningNumber: synthWinning, Seed: 1}
	sum := sha256.Sum256(synthCSV(t, synthMust(t, o)))
	const want = "02e4791da80bf308c45d592528a8758aa9350d57cd831f8184d4e4c49860da83"
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("sha256 of %+v = %s, want %s", o, got, want)
	}
}

func TestSynthWinners(t *testing.T) {
	cases := []agency.SynthOptions{
		{Agency: 1, Bets: 0, Winners: 0, WinningNumber: synthWinning},
		{Agency: 1, Bets: 1, Winners: 1, WinningNumber: synthWinning},
		{Agency: 1, Bets: 50, Winners: 50, WinningNumber: 0},
		{Agency: 2, Bets: 5000, Winners: 0, WinningNumber: 9999},
		{Agency: 3, Bets: 5000, Winners: 7, WinningNumber: 0, Seed: -4},
		{Agency: 4, Bets: 10, Winners: 3, WinningNumber: 1234, Seed: 77},
	}
	for i := range agency.CourseSizes {
		cases = append(cases, synthCourse(t, i))
	}
	for _, o := range cases {
		bets := synthMust(t, o)
		var at []int
		for i, b := range bets {
			if b.Number == o.WinningNumber {
				at = append(at, i)
			}
		}
		if len(at) != o.Winners {
			t.Errorf("%+v: %d bets carry %d, want %d", o, len(at), o.WinningNumber, o.Winners)
			continue
		}
		// Winners are spread: the j-th of k winners sits in the j-th k-th of the file.
		for j, i := range at {
			lo, hi := j*o.Bets/o.Winners, (j+1)*o.Bets/o.Winners
			if i < lo || i >= hi {
				t.Errorf("%+v: winner %d at row %d, outside rows [%d, %d)", o, j, i, lo, hi)
			}
		}
	}
}

func TestSynthWinnerRowsNotClustered(t *testing.T) {
	o := agency.SynthOptions{Agency: 1, Bets: 10000, Winners: 4, WinningNumber: synthWinning, Seed: 1}
	var first, last = -1, -1
	for i, b := range synthMust(t, o) {
		if b.Number == o.WinningNumber {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first >= o.Bets/4 || last < o.Bets*3/4 {
		t.Errorf("winners span rows %d..%d of %d; want them spread over the whole file", first, last, o.Bets)
	}
}

func TestSynthValidAndCourseLike(t *testing.T) {
	today := frame.NewDate(2026, 1, 1)
	for i := range agency.CourseSizes {
		o := synthCourse(t, i)
		bets := synthMust(t, o)
		var twoWordFirst, accented, minYear, maxYear = 0, 0, 9999, 0
		for j := range bets {
			b := &bets[j]
			if err := b.Validate(today); err != nil {
				t.Fatalf("agency %d bet %d %+v: %v", o.Agency, j, *b, err)
			}
			if len(b.Document) != 8 {
				t.Fatalf("agency %d bet %d: document %q is not 8 digits", o.Agency, j, b.Document)
			}
			if strings.ContainsAny(b.FirstName+b.LastName, ",\"\r\n") {
				t.Fatalf("agency %d bet %d: name %q %q needs quoting; course data never does", o.Agency, j, b.FirstName, b.LastName)
			}
			if strings.Count(b.FirstName, " ") == 1 {
				twoWordFirst++
			}
			if utf8.RuneCountInString(b.FirstName+b.LastName) != len(b.FirstName+b.LastName) {
				accented++
			}
			minYear, maxYear = min(minYear, b.Birthdate.Year()), max(maxYear, b.Birthdate.Year())
		}
		n := len(bets)
		if twoWordFirst < n*55/100 || twoWordFirst > n*85/100 {
			t.Errorf("agency %d: %d of %d first names have two words; want most but not all", o.Agency, twoWordFirst, n)
		}
		if accented < n/5 {
			t.Errorf("agency %d: only %d of %d names have accents", o.Agency, accented, n)
		}
		if minYear != 1980 || maxYear != 2004 {
			t.Errorf("agency %d: birth years %d..%d, want 1980..2004", o.Agency, minYear, maxYear)
		}
	}
}

func TestSynthRepeatedDocuments(t *testing.T) {
	bets := synthMust(t, synthCourse(t, 0))
	first := map[string]int{}
	repeats, samePerson := 0, 0
	for i, b := range bets {
		j, seen := first[b.Document]
		if !seen {
			first[b.Document] = i
			continue
		}
		repeats++
		p := bets[j]
		if p.FirstName == b.FirstName && p.LastName == b.LastName && p.Birthdate == b.Birthdate {
			samePerson++
		}
	}
	n := len(bets)
	if repeats < n*3/100 || repeats > n*8/100 {
		t.Errorf("%d of %d rows repeat an earlier document; want about 5%%", repeats, n)
	}
	if samePerson < repeats*9/10 {
		t.Errorf("only %d of %d repeated documents belong to the same person", samePerson, repeats)
	}
}

func TestSynthLeadingZeroDocuments(t *testing.T) {
	bets := synthMust(t, synthCourse(t, 0))
	zeros := 0
	for _, b := range bets {
		if b.Document[0] == '0' {
			zeros++
		}
	}
	if zeros == 0 || zeros > len(bets)/50 {
		t.Errorf("%d of %d documents start with 0; want a few", zeros, len(bets))
	}
	// They survive a round trip through the CSV text.
	rows := synthReadCSV(t, synthCSV(t, bets))
	for i, r := range rows {
		if r[2] != bets[i].Document {
			t.Fatalf("row %d: document %q read back as %q", i, bets[i].Document, r[2])
		}
	}
}

func TestSynthBadOptions(t *testing.T) {
	for _, o := range []agency.SynthOptions{
		{Bets: -1},
		{Bets: 3, Winners: -1},
		{Bets: 3, Winners: 4},
		{Bets: 3, Winners: 1, WinningNumber: 10000},
	} {
		bets, err := agency.SyntheticBets(o)
		if !errors.Is(err, agency.ErrSynthOptions) {
			t.Errorf("SyntheticBets(%+v) = %d bets, %v; want ErrSynthOptions", o, len(bets), err)
		}
	}
}

func TestSynthConcurrent(t *testing.T) {
	o := agency.SynthOptions{Agency: 8, Bets: 3000, Winners: 2, WinningNumber: synthWinning, Seed: 5}
	want := synthCSV(t, synthMust(t, o))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			bets, err := agency.SyntheticBets(o)
			if err != nil {
				t.Error(err)
				return
			}
			var buf bytes.Buffer
			if err := agency.WriteBetsCSV(&buf, bets); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Error("concurrent generation differs")
			}
		})
	}
	wg.Wait()
}

func synthReadCSV(t testing.TB, data []byte) [][]string {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = 5
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatalf("encoding/csv cannot read our output: %v", err)
	}
	return rows
}

func TestWriteBetsCSVFormat(t *testing.T) {
	bets := []frame.Bet{
		{FirstName: "Tiago Nicolás", LastName: "Muñoz", Document: "30904465", Birthdate: frame.NewDate(1999, 3, 7), Number: 2201},
		{FirstName: "Zoé", LastName: "D'Angelo", Document: "01234567", Birthdate: frame.NewDate(2004, 12, 31), Number: 0},
	}
	want := "Tiago Nicolás,Muñoz,30904465,1999-03-07,2201\r\n" +
		"Zoé,D'Angelo,01234567,2004-12-31,0\r\n"
	if got := string(synthCSV(t, bets)); got != want {
		t.Errorf("WriteBetsCSV wrote\n%q\nwant\n%q", got, want)
	}
	if got := synthCSV(t, nil); len(got) != 0 {
		t.Errorf("no bets wrote %q, want nothing", got)
	}
}

func TestWriteBetsCSVSyntheticShape(t *testing.T) {
	o := synthCourse(t, 4)
	bets := synthMust(t, o)
	data := synthCSV(t, bets)
	lines := strings.Split(string(data), "\r\n")
	if lines[len(lines)-1] != "" {
		t.Fatal("output does not end with CRLF")
	}
	lines = lines[:len(lines)-1]
	if len(lines) != len(bets) {
		t.Fatalf("%d lines for %d bets (a header or a stray line?)", len(lines), len(bets))
	}
	for i, l := range lines {
		if strings.ContainsAny(l, "\r\n\"") {
			t.Fatalf("line %d %q has a bare CR/LF or a quote", i, l)
		}
		want := strings.Join([]string{bets[i].FirstName, bets[i].LastName, bets[i].Document,
			bets[i].Birthdate.String(), strconv.Itoa(int(bets[i].Number))}, ",")
		if l != want {
			t.Fatalf("line %d = %q, want %q", i, l, want)
		}
	}
}

func TestWriteBetsCSVQuoting(t *testing.T) {
	bets := []frame.Bet{
		{FirstName: "Ana, María", LastName: `O"Neil`, Document: "12345678", Birthdate: frame.NewDate(1990, 1, 2), Number: 5},
		{FirstName: "Line\nBreak", LastName: "Carriage\rReturn", Document: "1", Birthdate: frame.NewDate(1985, 6, 30), Number: 9999},
		{FirstName: `"`, LastName: `""x""`, Document: "2", Birthdate: frame.NewDate(2000, 2, 29), Number: 7574},
		{FirstName: " Leading space", LastName: "Plain", Document: "3", Birthdate: frame.NewDate(1980, 1, 1), Number: 1},
	}
	data := synthCSV(t, bets)
	if !bytes.Contains(data, []byte(`"Ana, María","O""Neil",12345678,`)) {
		t.Errorf("comma and quote fields not quoted as expected:\n%s", data)
	}
	if !bytes.Contains(data, []byte("\r\n Leading space,Plain,3,")) {
		t.Errorf("a field without comma, quote or line break was quoted:\n%s", data)
	}
	rows := synthReadCSV(t, data)
	if len(rows) != len(bets) {
		t.Fatalf("read %d rows, wrote %d", len(rows), len(bets))
	}
	for i, b := range bets {
		// encoding/csv turns \r\n inside quotes into \n; we write no \r\n pair inside names.
		want := []string{b.FirstName, b.LastName, b.Document, b.Birthdate.String(), strconv.Itoa(int(b.Number))}
		for k := range want {
			if rows[i][k] != want[k] {
				t.Errorf("row %d field %d = %q, want %q", i, k, rows[i][k], want[k])
			}
		}
	}
}

type synthFailWriter struct{ after int }

var errSynthDisk = errors.New("disk full")

func (w *synthFailWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errSynthDisk
	}
	w.after--
	return len(p), nil
}

func TestWriteBetsCSVError(t *testing.T) {
	bets := synthMust(t, agency.SynthOptions{Agency: 1, Bets: 20000, Seed: 1})
	for _, after := range []int{0, 1} {
		err := agency.WriteBetsCSV(&synthFailWriter{after: after}, bets)
		if !errors.Is(err, errSynthDisk) {
			t.Errorf("writer failing after %d writes: got %v, want the writer's error", after, err)
		}
	}
	if err := agency.WriteBetsCSV(io.Discard, bets); err != nil {
		t.Errorf("io.Discard: %v", err)
	}
}

func BenchmarkSyntheticBets100k(b *testing.B) {
	o := agency.SynthOptions{Agency: 1, Bets: 100_000, Winners: 3, WinningNumber: synthWinning, Seed: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := agency.SyntheticBets(o); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteBetsCSV100k(b *testing.B) {
	bets := synthMust(b, agency.SynthOptions{Agency: 1, Bets: 100_000, Winners: 3, WinningNumber: synthWinning, Seed: 1})
	b.ReportAllocs()
	for b.Loop() {
		if err := agency.WriteBetsCSV(io.Discard, bets); err != nil {
			b.Fatal(err)
		}
	}
}
