package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestParseInts(t *testing.T) {
	got, err := parseInts("10, 100,1_000,10000")
	if err != nil || !slices.Equal(got, []int{10, 100, 1000, 10000}) {
		t.Errorf("parseInts = %v, %v", got, err)
	}
	for _, bad := range []string{"", ",", "0", "-5", "ten", "1,000.5"} {
		if _, err := parseInts(bad); err == nil {
			t.Errorf("parseInts(%q) succeeded", bad)
		}
	}
}

func TestBadFlagsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"--agencies", "0"},
		{"--agencies", "many"},
		{"--winning-number", "10000"},
		{"--server-log-level", "loud"},
		{"--no-such-flag"},
		{"extra-argument"},
		{"--impl", "nginx", "--data-dir", "DATA"},
		{"--impl", "stdlib", "--bets", "0", "--data-dir", "DATA"},
		// stdlib needs no binary but this one: each of these fails on its own flag.
		{"--impl", "stdlib", "--agencies", "none", "--data-dir", "DATA"}, // nothing to run
		{"--impl", "stdlib", "--repeat", "0", "--insecure", "--data-dir", "DATA"},
		{"--impl", "stdlib", "--course-reps", "1", "--agency-bin", "/nonexistent/agency", "--data-dir", "DATA"},
	} {
		for i, a := range args {
			if a == "DATA" {
				args[i] = t.TempDir()
			}
		}
		var stdout, stderr bytes.Buffer
		if code := runBench(args, &stdout, &stderr, nil); code != 2 {
			t.Errorf("bench %s: exit %d, want 2 (stderr %q)", strings.Join(args, " "), code, stderr.String())
		}
		if stderr.Len() == 0 || strings.Contains(stderr.String(), "--server-bin") {
			t.Errorf("bench %s: stderr %q, want a message about its own flag", strings.Join(args, " "), stderr.String())
		}
	}
}

func TestHelpExits0(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runBench([]string{"--help"}, &stdout, &stderr, nil); code != 0 {
		t.Errorf("--help: exit %d", code)
	}
	if !strings.Contains(stderr.String(), "--agencies") {
		t.Errorf("--help does not list --agencies: %q", stderr.String())
	}
	if code := runBench([]string{"--agencies", "1", "--impl", "gnet", "--server-bin", "/nonexistent", "--data-dir", t.TempDir()},
		&stdout, &stderr, nil); code != 2 {
		t.Errorf("missing server binary: exit %d, want 2", code)
	}
}
