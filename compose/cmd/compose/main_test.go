package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tp0/loteria/compose"
)

func want(t *testing.T, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := compose.Generate(&b, compose.Options{Agencies: n}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestStdoutByDefault(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--agencies", "2"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !bytes.Equal(stdout.Bytes(), want(t, 2)) {
		t.Error("stdout differs from Generate for 2 agencies")
	}
}

func TestWritesFileReplacingOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--agencies", "7", "--output", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want(t, 7)) {
		t.Error("file differs from Generate for 7 agencies")
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout got %q while writing a file", stdout.String())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d entries in dir, want 1 (temporary file left behind?)", len(entries))
	}
}

func TestBadArgs(t *testing.T) {
	cases := map[string][]string{
		"no agencies":  {},
		"non-numeric":  {"--agencies", "x"},
		"hex":          {"--agencies", "0x5"},
		"negative":     {"--agencies", "-3"},
		"too many":     {"--agencies", "253"},
		"empty output": {"--agencies", "1", "--output", ""},
		"positional":   {"--agencies", "1", "extra"},
		"unknown flag": {"--agencies", "1", "--nope"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(args, &stdout, &stderr); code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout got %q", stdout.String())
			}
			if stderr.Len() == 0 {
				t.Error("no reason on stderr")
			}
		})
	}
}

func TestFailedWriteLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	// Renaming a file onto a non-empty directory fails.
	target := filepath.Join(dir, "target")
	if err := os.MkdirAll(filepath.Join(target, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--agencies", "1", "--output", target}, &stdout, &stderr); code != exitWrite {
		t.Fatalf("exit %d, want %d; stderr %q", code, exitWrite, stderr.String())
	}
	if !strings.Contains(stderr.String(), target) {
		t.Errorf("stderr %q does not name the file", stderr.String())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d entries in dir, want only the directory (temporary file left behind?)", len(entries))
	}

	missing := filepath.Join(dir, "no-such-dir", "c.yaml")
	if code := run([]string{"--agencies", "1", "--output", missing}, &stdout, &stderr); code != exitWrite {
		t.Errorf("exit %d for %s, want %d", code, missing, exitWrite)
	}
}
