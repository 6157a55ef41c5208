package e2e_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tp0/loteria/internal/logging"
)

// The tests run the real binaries; they are built once per test binary.
var bins struct {
	once sync.Once
	dir  string
	err  error
}

func binaries(t *testing.T) string {
	t.Helper()
	bins.once.Do(func() {
		dir, err := os.MkdirTemp("", "loteria-e2e-bins-")
		if err != nil {
			bins.err = err
			return
		}
		bins.dir = dir
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
			"github.com/tp0/loteria/eventserver/cmd/eventserver",
			"github.com/tp0/loteria/agency/cmd/agency",
			"github.com/tp0/loteria/agency/cmd/gendata",
			"github.com/tp0/loteria/secure/cmd/keygen",
			"github.com/tp0/loteria/persist/pgstore/cmd/export")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			bins.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.dir
}

// proc is one run of a binary, its output going to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	code int // exit status once done; -1 when killed by a signal
}

func startProc(t *testing.T, name, logPath, bin string, args ...string) *proc {
	t.Helper()
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		out.Close()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig os.Signal) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// wait waits for the process to end, failing the test after limit.
func (p *proc) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(limit):
		t.Fatalf("%s still running after %v; log tail:\n%s", p.name, limit, tail(p.log, 20))
		return 0
	}
}

func (p *proc) lines() []logging.Line {
	lines, _ := logging.ReadFile(p.log) // a half-written last line is skipped, and read on the next call
	return lines
}

// find returns the lines of action with result (any when "") whose fields
// hold every key/value pair of kv.
func find(lines []logging.Line, action, result string, kv ...string) []logging.Line {
	var out []logging.Line
	for _, l := range lines {
		if l.Is(action, result, kv...) {
			out = append(out, l)
		}
	}
	return out
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// waitFor polls cond until it holds, failing the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// run runs a tool to completion, failing the test unless it exits 0.
func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func itoa(n int) string { return strconv.Itoa(n) }
