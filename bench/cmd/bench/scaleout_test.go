package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestStoreFlagsExit2(t *testing.T) {
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--fronts", "1,2"}, "go with --store"},
		{[]string{"--file-store=false"}, "go with --store"},
		{[]string{"--store", "temp", "--fronts", "0"}, "--fronts"},
		{[]string{"--store", "temp", "--svg", "x.svg"}, "--svg does not apply"},
		{[]string{"--store", "temp", "--impl", "stdlib"}, "--impl does not apply"},
		{[]string{"--store", "temp", "--course-reps", "1"}, "--course-reps does not apply"},
		{[]string{"--store", "mysql://db/x", "--data-dir", "DATA"}, "postgres://"},
		{[]string{"--store", "temp", "--agencies", "none", "--data-dir", "DATA"}, "--agencies"},
		{[]string{"--store", "temp", "--server-bin", "/nonexistent/eventserver", "--data-dir", "DATA"}, "--server-bin"},
	} {
		for i, a := range c.args {
			if a == "DATA" {
				c.args[i] = t.TempDir()
			}
		}
		var stdout, stderr bytes.Buffer
		if code := runBench(c.args, &stdout, &stderr, nil); code != 2 {
			t.Errorf("bench %s: exit %d, want 2 (stderr %q)", strings.Join(c.args, " "), code, stderr.String())
		}
		if !strings.Contains(stderr.String(), c.says) {
			t.Errorf("bench %s: stderr %q, want it to say %q", strings.Join(c.args, " "), stderr.String(), c.says)
		}
	}
}
