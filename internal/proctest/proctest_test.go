package proctest_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tp0/loteria/internal/proctest"
)

func TestProcRunsLogsAndEnds(t *testing.T) {
	dir := t.TempDir()
	p := proctest.Start(t, "says", filepath.Join(dir, "says.log"), "/bin/sh", "-c",
		`echo "2026-12-02 00:00:00 INFO action: hello | result: success | agency: 3"; echo "not a contract line"; exit 3`)
	if code := p.Wait(t, 10*time.Second); code != 3 || p.Code() != 3 || !p.Exited() {
		t.Fatalf("exit status %d (Code %d, Exited %v), want 3", code, p.Code(), p.Exited())
	}
	if got := proctest.Find(p.Lines(), "hello", "success", "agency", "3"); len(got) != 1 {
		t.Errorf("Find hello in %v: %v", p.Lines(), got)
	}
	if tail := proctest.Tail(p.Log, 1); tail != "  not a contract line" {
		t.Errorf("Tail = %q", tail)
	}
	if p.End().IsZero() {
		t.Error("no end time")
	}

	sleeper := proctest.Start(t, "sleeper", filepath.Join(dir, "sleeper.log"), "/bin/sh", "-c", "exec sleep 60")
	if sleeper.Exited() {
		t.Fatal("the sleeper ended at once")
	}
	sleeper.Kill(t)
	if sleeper.Code() != -1 {
		t.Errorf("killed: exit status %d, want -1", sleeper.Code())
	}
	waited := false
	proctest.WaitFor(t, time.Second, "a condition", func() bool { waited = true; return true })
	if !waited || !strings.HasPrefix(p.Name, "says") {
		t.Error("WaitFor did not poll")
	}
}
