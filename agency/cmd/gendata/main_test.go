package main

import (
	"bytes"
	"encoding/csv"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tp0/loteria/agency"
)

func gendata(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// contractLine matches the project's log line contract.
var contractLine = regexp.MustCompile(`^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (INFO|ERROR) action: gendata \| result: (success|fail)( \| [a-z_]+: [^|]*)*$`)

func logLines(t *testing.T, stdout string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	for _, l := range lines {
		if !contractLine.MatchString(l) {
			t.Errorf("log line breaks the contract: %q", l)
		}
	}
	return lines
}

func readRows(t *testing.T, path string) [][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(data, []byte("\r\n")) || bytes.Count(data, []byte("\n")) != bytes.Count(data, []byte("\r\n")) {
		t.Fatalf("%s: lines do not all end with CRLF", path)
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = 5
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rows
}

func winnersIn(rows [][]string, number string) int {
	n := 0
	for _, r := range rows {
		if r[4] == number {
			n++
		}
	}
	return n
}

func TestGendataCyclesSizesAndWinners(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	code, stdout, stderr := gendata(t, "--dir", dir, "--agencies", "5", "--sizes", "30, 20,10",
		"--winners", "3,0", "--winning-number", "42", "--seed", "7")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	lines := logLines(t, stdout)
	if len(lines) != 5 {
		t.Fatalf("want one log line per file, got %d:\n%s", len(lines), stdout)
	}
	wantSizes := []int{30, 20, 10, 30, 20}
	wantWinners := []int{3, 0, 3, 0, 3}
	for i := range 5 {
		path := filepath.Join(dir, "agency-"+strconv.Itoa(i+1)+".csv")
		rows := readRows(t, path)
		if len(rows) != wantSizes[i] {
			t.Errorf("%s: %d rows, want %d", path, len(rows), wantSizes[i])
		}
		if got := winnersIn(rows, "42"); got != wantWinners[i] {
			t.Errorf("%s: %d winners of 42, want %d", path, got, wantWinners[i])
		}
		wantLog := "file: " + path + " | bets: " + strconv.Itoa(wantSizes[i]) + " | winners: " + strconv.Itoa(wantWinners[i])
		if !strings.HasSuffix(lines[i], wantLog) || !strings.Contains(lines[i], "result: success") {
			t.Errorf("log line %d = %q, want it to end with %q", i, lines[i], wantLog)
		}
		// The file holds exactly what the library generates in memory.
		bets, err := agency.SyntheticBets(agency.SynthOptions{Agency: uint32(i + 1), Bets: wantSizes[i],
			Winners: wantWinners[i], WinningNumber: 42, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := agency.WriteBetsCSV(&want, bets); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s differs from SyntheticBets + WriteBetsCSV", path)
		}
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644 so containers of any user can read it", path, info.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 5 {
		t.Errorf("%d entries in %s, want the 5 files and no leftovers", len(entries), dir)
	}
}

func TestGendataDefaultsAreTheCourseShape(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := gendata(t, "--dir", dir); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for i, size := range agency.CourseSizes {
		rows := readRows(t, filepath.Join(dir, "agency-"+strconv.Itoa(i+1)+".csv"))
		if len(rows) != size || winnersIn(rows, "7574") != agency.CourseWinners[i] {
			t.Errorf("agency %d: %d rows and %d winners, want %d and %d",
				i+1, len(rows), winnersIn(rows, "7574"), size, agency.CourseWinners[i])
		}
	}
}

func TestGendataNeverOverwritesWithoutForce(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "agency-2.csv")
	const mine = "hand written,do not touch,1,2000-01-01,1\r\n"
	if err := os.WriteFile(keep, []byte(mine), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--dir", dir, "--agencies", "3", "--sizes", "5"}
	code, stdout, stderr := gendata(t, args...)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if got, _ := os.ReadFile(keep); string(got) != mine {
		t.Errorf("existing file changed without --force: %q", got)
	}
	lines := logLines(t, stdout)
	if len(lines) != 3 || !strings.Contains(lines[1], "file: "+keep) || !strings.Contains(lines[1], "kept:") {
		t.Errorf("want a line saying %s was kept, got:\n%s", keep, stdout)
	}
	for _, i := range []string{"1", "3"} {
		if rows := readRows(t, filepath.Join(dir, "agency-"+i+".csv")); len(rows) != 5 {
			t.Errorf("agency-%s.csv: %d rows, want 5", i, len(rows))
		}
	}

	// A second run keeps everything, generated files included.
	first, _ := os.ReadFile(filepath.Join(dir, "agency-1.csv"))
	code, stdout, _ = gendata(t, append(args, "--seed", "99")...)
	if code != 0 || strings.Count(stdout, "kept:") != 3 {
		t.Errorf("rerun: exit %d, want all three kept:\n%s", code, stdout)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "agency-1.csv")); !bytes.Equal(first, again) {
		t.Error("rerun with another seed changed agency-1.csv without --force")
	}

	code, stdout, stderr = gendata(t, append(args, "--force")...)
	if code != 0 || strings.Contains(stdout, "kept:") {
		t.Fatalf("--force: exit %d, stderr %q, stdout:\n%s", code, stderr, stdout)
	}
	if rows := readRows(t, keep); len(rows) != 5 {
		t.Errorf("--force left %d rows in %s, want 5", len(rows), keep)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("%d entries in %s, want 3 (temporary files left behind?)", len(entries), dir)
	}
}

func TestGendataBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--sizes", "10,x"}, "--sizes"},
		{[]string{"--sizes", "10,-1"}, "--sizes"},
		{[]string{"--sizes", ""}, "--sizes"},
		{[]string{"--winners", "1,,2"}, "--winners"},
		{[]string{"--sizes", "2", "--winners", "3"}, "--winners"},
		{[]string{"--agencies", "0"}, "--agencies"},
		{[]string{"--agencies", "many"}, "--agencies"},
		{[]string{"--winning-number", "10000"}, "--winning-number"},
		{[]string{"--winning-number", "-1"}, "--winning-number"},
		{[]string{"--seed", "1.5"}, "--seed"},
		{[]string{"--dir", ""}, "--dir"},
		{[]string{"--colour", "red"}, "--colour"},
	} {
		code, stdout, stderr := gendata(t, append([]string{"--dir", dir}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.flag) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 naming %s", tc.args, code, stderr, tc.flag)
		}
		if stdout != "" {
			t.Errorf("%q: wrote log lines before rejecting the flags: %q", tc.args, stdout)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("bad flags still wrote %d files", len(entries))
	}
}

func TestGendataWriteFailure(t *testing.T) {
	// --dir names a regular file, so no agency file can be created under it.
	file := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := gendata(t, "--dir", file, "--agencies", "1", "--sizes", "3")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	lines := logLines(t, stdout)
	if len(lines) != 1 || !strings.Contains(lines[0], "result: fail") {
		t.Errorf("want one fail line, got:\n%s", stdout)
	}
}
