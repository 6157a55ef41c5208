package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/persist/pgstore"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestExportCommand(t *testing.T) {
	url := pgtest.NewDatabase(t)
	b, err := pgstore.Open(context.Background(), url, pgstore.Options{Agencies: 2, WinningNumber: 7574})
	if err != nil {
		t.Fatal(err)
	}
	s, err := persist.New(b, persist.Options{Agencies: 2, WinningNumber: 7574})
	if err != nil {
		t.Fatal(err)
	}
	bets := []frame.Bet{
		{FirstName: "Ana", LastName: "Pérez, Sosa", Document: "30111222", Birthdate: frame.NewDate(1990, 5, 1), Number: 7574},
		{FirstName: `Luis "Lucho"`, LastName: "Gómez", Document: "0012", Birthdate: frame.NewDate(1961, 12, 31), Number: 12},
	}
	done := make(chan persist.Result, 1)
	if err := s.Submit(&persist.Request{Agency: 2, First: 0, Bets: bets, Done: func(r persist.Result) { done <- r }}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.Err != nil {
		t.Fatal(r.Err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for i := range bets {
		want = filestore.AppendRow(want, 2, &bets[i])
	}
	noEnv := func(string) (string, bool) { return "", false }

	out := filepath.Join(t.TempDir(), "bets.csv")
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--store", url, "--output", out}, &stdout, &stderr, noEnv, nil); code != 0 {
		t.Fatalf("export exited %d: %s%s", code, stdout.String(), stderr.String())
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatalf("export wrote %q, want %q", got, want)
	}
	if line := stdout.String(); !strings.Contains(line, "action: export | result: success") || !strings.Contains(line, "rows: 2") ||
		strings.Contains(line, "postgres://") {
		t.Fatalf("log: %q, want a success line with 2 rows that names the database without its URL", line)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".bets.csv.tmp-*")); len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}

	// SERVER_STORE, and --output - writing the rows to stdout.
	stdout.Reset()
	stderr.Reset()
	env := func(k string) (string, bool) { return url, k == "SERVER_STORE" }
	if code := run(context.Background(), []string{"--output", "-"}, &stdout, &stderr, env, nil); code != 0 {
		t.Fatalf("export to stdout exited %d: %s", code, stderr.String())
	}
	if !bytes.Equal(stdout.Bytes(), want) || !strings.Contains(stderr.String(), "result: success") {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}

	// A database that holds no lottery fails, leaving no file.
	empty := pgtest.NewDatabase(t)
	stdout.Reset()
	missing := filepath.Join(t.TempDir(), "none.csv")
	if code := run(context.Background(), []string{"--store", empty, "--output", missing}, &stdout, &stderr, noEnv, nil); code != 1 ||
		!strings.Contains(stdout.String(), "holds no lottery") {
		t.Fatalf("export of an empty database exited %d: %s", code, stdout.String())
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("a failed export left %s", missing)
	}

	for _, args := range [][]string{{}, {"--store", "mysql://x"}, {"--store", url, "extra"}, {"--store", url, "--output", ""}} {
		stderr.Reset()
		if code := run(context.Background(), args, &stdout, &stderr, noEnv, nil); code != 2 {
			t.Errorf("export %q exited %d, want 2 (%s)", args, code, stderr.String())
		}
	}
}
