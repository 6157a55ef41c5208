package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
)

// setup writes two agencies' files and a bets.csv built from them by edit.
func setup(t *testing.T, edit func(rows []string) []string) (store, pattern string) {
	t.Helper()
	dir := t.TempDir()
	var rows []string
	for a := uint32(1); a <= 2; a++ {
		bets, err := agency.SyntheticBets(agency.SynthOptions{Agency: a, Bets: 30, Winners: int(a), WinningNumber: 7574, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := agency.WriteBetsCSV(&buf, bets); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("agency-%d.csv", a)), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, b := range bets {
			rows = append(rows, row(a, b))
		}
	}
	store = filepath.Join(dir, "bets.csv")
	if err := os.WriteFile(store, []byte(strings.Join(edit(rows), "")), 0o644); err != nil {
		t.Fatal(err)
	}
	return store, filepath.Join(dir, "agency-%d.csv")
}

func row(agency uint32, b frame.Bet) string {
	return fmt.Sprintf("%d,%s,%s,%s,%s,%d\r\n", agency, b.FirstName, b.LastName, b.Document, b.Birthdate, b.Number)
}

func TestVerify(t *testing.T) {
	cases := []struct {
		name   string
		edit   func([]string) []string
		status int
		want   string
	}{
		{"equal", func(r []string) []string { return r }, 0, "agency: 2 | bets: 30 | cant_ganadores: 2"},
		{"missing last bet", func(r []string) []string { return r[:len(r)-1] }, 1, "store has only 29 bets; file goes on"},
		{"duplicate bet", func(r []string) []string { return append(r[:31:31], r[30:]...) }, 1, "bet 1 differs"},
		{"extra bet", func(r []string) []string { return append(r, r[len(r)-1]) }, 1, "file has 30 bets, store has 31"},
		{"swapped order", func(r []string) []string { r[3], r[4] = r[4], r[3]; return r }, 1, "bet 3 differs"},
		{"foreign agency", func(r []string) []string {
			return append(r, strings.Replace(r[0], "1,", "3,", 1))
		}, 1, "outside the checked range"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store, pattern := setup(t, tc.edit)
			var out, errOut bytes.Buffer
			status := run([]string{"--store", store, "--agency-files", pattern, "--agencies", "2"}, &out, &errOut)
			if status != tc.status {
				t.Fatalf("status %d, want %d\n%s", status, tc.status, out.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, out.String())
			}
		})
	}
}

func TestVerifyUnreadableStore(t *testing.T) {
	var out, errOut bytes.Buffer
	if status := run([]string{"--store", filepath.Join(t.TempDir(), "none.csv")}, &out, &errOut); status != 1 {
		t.Fatalf("status %d, want 1", status)
	}
	if !strings.Contains(out.String(), "action: verify | result: fail") {
		t.Fatalf("output %q", out.String())
	}
}
