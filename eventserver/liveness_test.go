package eventserver

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// fakeLoop is an event loop whose tasks run only when the test says so.
type fakeLoop struct {
	mu    sync.Mutex
	tasks []gnet.Runnable
}

func (l *fakeLoop) Register(context.Context, net.Addr) (<-chan gnet.RegisteredResult, error) {
	return nil, nil
}
func (l *fakeLoop) Enroll(context.Context, net.Conn) (<-chan gnet.RegisteredResult, error) {
	return nil, nil
}
func (l *fakeLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error { return nil }
func (l *fakeLoop) Close(gnet.Conn) error                                        { return nil }

func (l *fakeLoop) Execute(_ context.Context, r gnet.Runnable) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tasks = append(l.tasks, r)
	return nil
}

// run runs the queued tasks and says how many there were.
func (l *fakeLoop) run() int {
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = nil
	l.mu.Unlock()
	for _, r := range tasks {
		_ = r.Run(context.Background())
	}
	return len(tasks)
}

// TestLoopWatchNamesTheStuckLoop steps the watch by hand: a loop that runs
// its stamp tasks stays live, one that does not is named once its task has
// waited past the limit, and it gets one task at a time.
func TestLoopWatchNamesTheStuckLoop(t *testing.T) {
	var w loopWatch
	start := time.Now()
	live, stuck := &fakeLoop{}, &fakeLoop{}
	w.see(live, start)
	w.see(stuck, start)
	w.see(live, start) // seen again: still two loops
	w.see(nil, start)
	if len(w.loops) != 2 {
		t.Fatalf("%d loops watched, want 2", len(w.loops))
	}
	if err := w.stuck(start.Add(time.Hour), time.Second); err != nil {
		t.Errorf("no task sent yet, but %v", err)
	}
	w.probe()
	w.probe() // the stuck loop's first task has not run: no second one
	if n := live.run(); n != 1 {
		t.Errorf("the live loop got %d tasks from two probes before running any, want 1", n)
	}
	if err := w.stuck(time.Now().Add(time.Second), 2*time.Second); err != nil {
		t.Errorf("within the limit: %v", err)
	}
	err := w.stuck(time.Now().Add(3*time.Second), 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "event loop 1 has not run a task for") {
		t.Errorf("the stuck loop past the limit: %v, want event loop 1 named", err)
	}
	if n := stuck.run(); n != 1 {
		t.Errorf("the stuck loop held %d tasks, want 1", n)
	}
	if err := w.stuck(time.Now().Add(3*time.Second), 2*time.Second); err != nil {
		t.Errorf("after the stuck loop ran its task: %v", err)
	}
}

// TestStuckSeesABlockedEventLoop blocks a real event loop of a running
// server with a task that waits, and checks that Stuck names it while the
// ticker goes on, and clears once the loop runs again.
func TestStuckSeesABlockedEventLoop(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 1})
	p := ts.mustDialPlain(t)
	mustPing(t, p, "a connection, so its loop is watched")
	const limit = 300 * time.Millisecond
	if err := ts.Stuck(time.Now(), limit); err != nil {
		t.Fatalf("an idle server: %v", err)
	}
	ts.loops.mu.Lock()
	var el gnet.EventLoop
	for l := range ts.loops.loops {
		el = l
	}
	ts.loops.mu.Unlock()
	release := make(chan struct{})
	if err := el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		<-release
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	var err error
	deadline := time.Now().Add(itGuard)
	for err == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		err = ts.Stuck(time.Now(), limit)
	}
	close(release)
	if err == nil || !strings.Contains(err.Error(), "has not run a task") {
		t.Fatalf("a blocked event loop: Stuck = %v", err)
	}
	deadline = time.Now().Add(itGuard)
	for ts.Stuck(time.Now(), limit) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := ts.Stuck(time.Now(), limit); err != nil {
		t.Errorf("after the loop was released: %v", err)
	}
	mustPing(t, p, "the connection after its loop was released")
}
