package filestore

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist/persisttest"
)

// trickyBets covers every quoting case of QUOTE_MINIMAL.
var trickyBets = []Bet{
	{1, frame.Bet{FirstName: "Santiago Lionel", LastName: "Lorca", Document: "30904465", Birthdate: frame.NewDate(1999, 3, 17), Number: 7574}},
	{2, frame.Bet{FirstName: "María José", LastName: "Pérez García", Document: "00000042", Birthdate: frame.NewDate(1960, 2, 29), Number: 0}},
	{3, frame.Bet{FirstName: "Juan, Carlos", LastName: `Ana "La Rubia"`, Document: "0", Birthdate: frame.NewDate(1900, 1, 1), Number: 9999}},
	{1, frame.Bet{FirstName: `"`, LastName: ",", Document: "1234567890", Birthdate: frame.NewDate(2000, 12, 31), Number: 7574}},
	{2, frame.Bet{FirstName: "José\nLuis", LastName: "Smith\r\nJones", Document: "0012", Birthdate: frame.NewDate(1985, 7, 4), Number: 42}},
	{3, frame.Bet{FirstName: "Carriage\rReturn", LastName: " spaced ", Document: "99", Birthdate: frame.NewDate(1970, 1, 1), Number: 1}},
	{1, frame.Bet{FirstName: "Tab\there", LastName: "Emoji 🎲", Document: "7", Birthdate: frame.NewDate(2024, 2, 29), Number: 7574}},
	{2, frame.Bet{FirstName: `""""`, LastName: "\"\r\n,", Document: "0000000000", Birthdate: frame.NewDate(1950, 6, 15), Number: 1000}},
}

// storeTricky stores trickyBets in order through the writer, one batch each.
func storeTricky(t *testing.T, dir string) {
	t.Helper()
	w := openWriter(t, dir, testOpts)
	for _, b := range trickyBets {
		held, _, _ := w.Status(b.Agency)
		put(t, w, b.Agency, held, []frame.Bet{b.Bet})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Agencies: 4, WinningNumber: winning}
	w := openWriter(t, dir, opts)
	var want []Bet
	held := map[uint32]uint64{}
	// Interleave agencies with batches of different sizes.
	for round := range 6 {
		for a := uint32(1); a <= 4; a++ {
			n := 1 + (round*int(a))%37
			bets := persisttest.Bets(a, held[a], n)
			put(t, w, a, held[a], bets)
			held[a] += uint64(n)
			want = append(want, tagged(a, bets)...)
		}
	}
	tricky := []frame.Bet{trickyBets[4].Bet, trickyBets[7].Bet}
	put(t, w, 2, held[2], tricky)
	want = append(want, tagged(2, tricky)...)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sameBets(t, readBets(t, dir), want)
	if doc := want[0].Document; doc[0] != '0' || len(doc) != 8 {
		t.Fatalf("the fixture should start with a zero-padded document, got %q", doc)
	}
	var loaded []Bet
	for b, err := range LoadDir(dir) {
		if err != nil {
			t.Fatal(err)
		}
		loaded = append(loaded, b)
	}
	sameBets(t, loaded, want)
	checkState(t, open(t, dir, opts), want, nil)
}

func TestRoundTripTricky(t *testing.T) {
	dir := t.TempDir()
	storeTricky(t, dir)
	sameBets(t, readBets(t, dir), trickyBets)
}

func TestLoadBetsStopsWhenAsked(t *testing.T) {
	var data []byte
	for i := range 5 {
		b := persisttest.Bet(1, uint64(i))
		data = AppendRow(data, 1, &b)
	}
	n := 0
	for _, err := range LoadBets(bytes.NewReader(data)) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 2 {
			break
		}
	}
	if n != 2 {
		t.Fatalf("read %d bets after break at 2", n)
	}
}

// TestPythonWrittenFile reads a file written by Python's csv.writer (see
// testdata/python_writer.py) and writes the same rows byte for byte.
func TestPythonWrittenFile(t *testing.T) {
	path := filepath.Join("testdata", "python_writer.csv")
	want := slices.Clone(trickyBets[:7])
	for i := range want {
		want[i].Agency = uint32(i + 1)
	}
	got := []Bet{}
	for b, err := range LoadBetsFile(path) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	sameBets(t, got, want)

	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var written []byte
	for i := range want {
		written = AppendRow(written, want[i].Agency, &want[i].Bet)
	}
	if !bytes.Equal(written, file) {
		t.Fatalf("AppendRow differs from Python's csv.writer:\n got %q\nwant %q", written, file)
	}
}

func TestPythonCompatibility(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 not on PATH (%v): CI must install it", err)
		}
		t.Skipf("python3 not on PATH (%v); TestPythonWrittenFile still checks a Python-written file", err)
	}
	// Resolve version-manager shims once; each shim start costs a second.
	if out, err := exec.Command(python, "-c", "import sys; print(sys.executable)").Output(); err == nil {
		if exe := strings.TrimSpace(string(out)); exe != "" {
			python = exe
		}
	}
	dir := t.TempDir()
	storeTricky(t, dir)
	path := filepath.Join(dir, BetsFile)
	stored := readBets(t, dir)
	sameBets(t, stored, trickyBets)

	asStrings := func(b Bet) []string {
		return []string{strconv.Itoa(int(b.Agency)), b.FirstName, b.LastName, b.Document, b.Birthdate.String(), strconv.Itoa(int(b.Number))}
	}
	run := func(script string, stdin []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(python, append([]string{"-c", script}, args...)...)
		cmd.Env = append(os.Environ(), "PYTHONUTF8=1")
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("python: %v\n%s", err, stderr.String())
		}
		return out
	}

	t.Run("csv.reader", func(t *testing.T) {
		const script = `
import csv, json, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    json.dump(list(csv.reader(f)), sys.stdout)
`
		var rows [][]string
		if err := json.Unmarshal(run(script, nil, path), &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(stored) {
			t.Fatalf("python read %d rows, want %d: %q", len(rows), len(stored), rows)
		}
		for i, b := range stored {
			want := asStrings(b)
			if strings.Join(rows[i], "\x00") != strings.Join(want, "\x00") {
				t.Errorf("row %d: python read %q, want %q", i, rows[i], want)
			}
		}
	})

	t.Run("course load_bets", func(t *testing.T) {
		// The course opens the file in text mode, so Python itself turns
		// "\r\n" and "\r" inside names into "\n"; every other byte must match.
		const script = `
import csv, datetime, json, sys
class Bet:
    def __init__(self, agency, first_name, last_name, document, birthdate, number):
        self.agency = int(agency)
        self.first_name = first_name
        self.last_name = last_name
        self.document = document
        self.birthdate = datetime.date.fromisoformat(birthdate)
        self.number = int(number)
def load_bets(path):
    with open(path, "r") as file:
        reader = csv.reader(file, quoting=csv.QUOTE_MINIMAL)
        for row in reader:
            yield Bet(row[0], row[1], row[2], row[3], row[4], row[5])
json.dump([[str(b.agency), b.first_name, b.last_name, b.document, b.birthdate.isoformat(), str(b.number)]
           for b in load_bets(sys.argv[1])], sys.stdout)
`
		var rows [][]string
		if err := json.Unmarshal(run(script, nil, path), &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(stored) {
			t.Fatalf("load_bets read %d rows, want %d", len(rows), len(stored))
		}
		textMode := strings.NewReplacer("\r\n", "\n", "\r", "\n")
		for i, b := range stored {
			want := asStrings(b)
			want[1], want[2] = textMode.Replace(want[1]), textMode.Replace(want[2])
			if strings.Join(rows[i], "\x00") != strings.Join(want, "\x00") {
				t.Errorf("row %d: load_bets read %q, want %q", i, rows[i], want)
			}
		}
	})

	t.Run("csv.writer bytes", func(t *testing.T) {
		const script = `
import csv, io, json, sys
buf = io.StringIO(newline="")
w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL)
for agency, first, last, document, birthdate, number in json.load(sys.stdin):
    w.writerow([agency, first, last, document, birthdate, number])
sys.stdout.buffer.write(buf.getvalue().encode("utf-8"))
`
		var rows [][]any
		for _, b := range stored {
			rows = append(rows, []any{b.Agency, b.FirstName, b.LastName, b.Document, b.Birthdate.String(), b.Number})
		}
		in, err := json.Marshal(rows)
		if err != nil {
			t.Fatal(err)
		}
		file, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if py := run(script, in); !bytes.Equal(py, file) {
			t.Fatalf("bets.csv differs from Python's csv.writer:\n ours %q\npython %q", file, py)
		}
	})
}

func TestAppendFieldQuoting(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"Pérez", "Pérez"},
		{" spaces ", " spaces "},
		{"tab\t", "tab\t"},
		{"a,b", `"a,b"`},
		{`say "hi"`, `"say ""hi"""`},
		{`"`, `""""`},
		{"line\nbreak", "\"line\nbreak\""},
		{"cr\rlf", "\"cr\rlf\""},
		{"crlf\r\n", "\"crlf\r\n\""},
	}
	for _, tt := range tests {
		if got := string(appendField(nil, tt.in)); got != tt.want {
			t.Errorf("appendField(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLoadBetsErrors(t *testing.T) {
	const good = "1,Ana,Lorca,00000042,1999-03-17,7574\r\n"
	const twoLines = "1,\"Ana\nMaría\",Lorca,1,1999-03-17,1\r\n" // a row spanning lines 1-2
	tests := []struct {
		name, data, want string
	}{
		{"five fields", "1,Ana,Lorca,1,1999-03-17\r\n", "line 1: row has 5 fields, want 6"},
		{"seven fields", "1,Ana,Lorca,1,1999-03-17,1,x\r\n", "line 1: row has more than 6 fields"},
		{"empty line", good + "\r\n", "line 2: row has 1 fields, want 6"},
		{"agency not a number", "x,Ana,Lorca,1,1999-03-17,1\r\n", `line 1: agency "x" is not a number`},
		{"bad date", good + "1,Ana,Lorca,1,1999-02-30,1\r\n", "line 2: field birthdate"},
		{"bad number", "1,Ana,Lorca,1,1999-03-17,10000\r\n", "line 1: field number"},
		{"bad document", twoLines + "1,Ana,Lorca,12a,1999-03-17,1\r\n", "line 3: field document"},
		{"unclosed quote at end", good + "1,\"Ana,Lorca,1,1999-03-17,1\r\n", "line 2: quoted field not closed"},
		{"text after closing quote", "1,\"Ana\"x,Lorca,1,1999-03-17,1\r\n", `line 1: field 2: 'x' after the closing quote`},
		{"quotes in unquoted field", "1,An\"\"a,Lorca,1,1999-03-17,1\r\n", "line 1: field 2: quote or line break in an unquoted field"},
		{"stray quote", good + "1,An\"a,Lorca,1,1999-03-17,1\r\n", "line 2: quoted field not closed"},
		{"bare carriage return", "1,An\ra,Lorca,1,1999-03-17,1\r\n", "line 1: field 2: quote or line break in an unquoted field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Bet
			var gotErr error
			for b, err := range LoadBets(strings.NewReader(tt.data)) {
				if err != nil {
					gotErr = err
					continue
				}
				got = append(got, b)
			}
			if gotErr == nil || !strings.Contains(gotErr.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", gotErr, tt.want)
			}
			if !strings.HasPrefix(gotErr.Error(), "read bets: ") {
				t.Errorf("error %q lacks the read bets: prefix", gotErr)
			}
			// Rows before the bad one still come through.
			if wantRows := strings.Count(tt.data, "\r\n") - 1; len(got) != wantRows {
				t.Errorf("got %d good rows before the error, want %d", len(got), wantRows)
			}
		})
	}
}

func TestLoadBetsFields(t *testing.T) {
	t.Run("last row without line break", func(t *testing.T) {
		got := []Bet{}
		for b, err := range LoadBets(strings.NewReader("7,Ana,\"Lo,rca\",0042,1999-03-17,7574")) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b)
		}
		want := []Bet{{7, frame.Bet{FirstName: "Ana", LastName: "Lo,rca", Document: "0042", Birthdate: frame.NewDate(1999, 3, 17), Number: 7574}}}
		sameBets(t, got, want)
	})
	t.Run("empty file", func(t *testing.T) {
		for b, err := range LoadBets(strings.NewReader("")) {
			t.Fatalf("empty input yielded %+v, %v", b, err)
		}
	})
	t.Run("row longer than a buffer", func(t *testing.T) {
		long := strings.Repeat("x", 200<<10) // crosses bufio's 64 KiB buffer
		row := "1," + long + ",\"" + long + "\n\",1,1999-03-17,1\r\n"
		n := 0
		for b, err := range LoadBets(strings.NewReader(row + row)) {
			if err != nil {
				t.Fatal(err)
			}
			if b.FirstName != long || b.LastName != long+"\n" {
				t.Fatalf("long fields came back with lengths %d and %d", len(b.FirstName), len(b.LastName))
			}
			n++
		}
		if n != 2 {
			t.Fatalf("read %d rows, want 2", n)
		}
	})
	t.Run("unclosed quote stops at the row limit", func(t *testing.T) {
		data := "1,\"Ana" + strings.Repeat("x\r\n", maxRow/3+10)
		for _, err := range LoadBets(strings.NewReader(data)) {
			if err == nil || !strings.Contains(err.Error(), "line 1: row is longer than") {
				t.Fatalf("error %v, want a row length error on line 1", err)
			}
			return
		}
		t.Fatal("no error for a row longer than the limit")
	})
	t.Run("missing file", func(t *testing.T) {
		for _, err := range LoadBetsFile(filepath.Join(t.TempDir(), "nope.csv")) {
			if !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("error %v, want one matching os.ErrNotExist", err)
			}
			return
		}
		t.Fatal("missing file yielded nothing")
	})
}

func TestAppendRowAllocs(t *testing.T) {
	buf := make([]byte, 0, 4096)
	bets := append(persisttest.Bets(1, 0, 8), trickyBets[4].Bet, trickyBets[7].Bet)
	allocs := testing.AllocsPerRun(100, func() {
		buf = buf[:0]
		for i := range bets {
			buf = AppendRow(buf, 1, &bets[i])
		}
	})
	if allocs != 0 {
		t.Errorf("AppendRow allocates %.1f times for %d rows, want 0", allocs, len(bets))
	}
}

// FuzzRowRoundTrip checks that any names survive a row written by
// AppendRow and read back by LoadBets, alone and between other rows.
func FuzzRowRoundTrip(f *testing.F) {
	for _, b := range trickyBets {
		f.Add(b.FirstName, b.LastName, uint32(b.Birthdate), b.Number)
	}
	f.Add("", "", uint32(0), uint16(0))
	f.Add("\r", "\n", uint32(1), uint16(1))
	f.Add(`",`, "\r\n\"", uint32(2), uint16(2))
	f.Fuzz(func(t *testing.T, first, last string, day uint32, number uint16) {
		if len(first)+len(last) > 4096 {
			return
		}
		b := frame.Bet{
			FirstName: first,
			LastName:  last,
			Document:  strconv.FormatUint(uint64(day), 10),
			Birthdate: frame.NewDate(1900+int(day%120), 1+int(day%12), 1+int(day%28)),
			Number:    number % 10000,
		}
		neighbour := persisttest.Bet(2, uint64(day))
		data := AppendRow(nil, 2, &neighbour)
		data = AppendRow(data, 1, &b)
		data = AppendRow(data, 2, &neighbour)
		var got []Bet
		for r, err := range LoadBets(bytes.NewReader(data)) {
			if err != nil {
				t.Fatalf("row %q: %v", data, err)
			}
			got = append(got, r)
		}
		sameBets(t, got, []Bet{{2, neighbour}, {1, b}, {2, neighbour}})
	})
}
