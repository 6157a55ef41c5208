// Package proctest runs the project's binaries from tests: each one a child
// process whose output goes to a log file of contract lines, killed when
// the test ends if it still runs.
package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tp0/loteria/internal/logging"
)

// Proc is one run of a binary.
type Proc struct {
	Name string // for messages
	Log  string // the file its stdout and stderr go to
	cmd  *exec.Cmd
	done chan struct{}
	code int
	end  time.Time
}

// Start runs bin with args, its output going to logPath.
func Start(t testing.TB, name, logPath, bin string, args ...string) *Proc {
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
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		out.Close()
		p.code = cmd.ProcessState.ExitCode()
		p.end = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		<-p.done
	})
	return p
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Code is the exit status once the process has ended; -1 when a signal
// killed it.
func (p *Proc) Code() int {
	<-p.done
	return p.code
}

// End is when the process was seen to end.
func (p *Proc) End() time.Time {
	<-p.done
	return p.end
}

// Signal sends sig unless the process has ended.
func (p *Proc) Signal(sig os.Signal) {
	if !p.Exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Wait waits for the process to end and returns its exit status, failing
// the test after limit.
func (p *Proc) Wait(t testing.TB, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(limit):
		t.Fatalf("%s still running after %v; log tail:\n%s", p.Name, limit, Tail(p.Log, 15))
		return 0
	}
}

// Kill ends the process with SIGKILL and waits for it.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	p.Signal(syscall.SIGKILL)
	p.Wait(t, 20*time.Second)
}

// Lines is the action lines the process has logged so far.
func (p *Proc) Lines() []logging.Line {
	lines, _ := logging.ReadFile(p.Log) // a half-written last line is skipped, and read on the next call
	return lines
}

// Find returns the lines of action with result (any when "") whose fields
// hold every key/value pair of kv.
func Find(lines []logging.Line, action, result string, kv ...string) []logging.Line {
	var out []logging.Line
	for _, l := range lines {
		if l.Is(action, result, kv...) {
			out = append(out, l)
		}
	}
	return out
}

// Tail is the last n lines of a file, indented, for failure messages.
func Tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// WaitFor polls cond until it holds, failing the test after limit.
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Binaries are commands a test binary builds once, on first use, into a
// temporary folder, which its TestMain removes with Remove.
type Binaries struct {
	pkgs []string
	once sync.Once
	dir  string
	err  error
}

// NewBinaries names the packages (import paths of main packages) to build.
func NewBinaries(pkgs ...string) *Binaries { return &Binaries{pkgs: pkgs} }

// Dir builds the commands the first time, statically, and returns their folder.
func (b *Binaries) Dir(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "loteria-test-bins-")
		if err != nil {
			b.err = err
			return
		}
		b.dir = dir
		cmd := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, b.pkgs...)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.dir
}

// Remove deletes the built commands, if any were built.
func (b *Binaries) Remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}
