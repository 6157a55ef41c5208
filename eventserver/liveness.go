package eventserver

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// loopWatch tells whether each event loop still runs its tasks. gnet runs
// OnTick on a goroutine of its own, so a tick proves nothing about the
// loops; instead every tick hands each loop seen so far a task that stamps
// the time, and a loop whose stamp falls behind is stuck (a callback that
// blocks, a deadlock) even while the ticker goes on.
type loopWatch struct {
	mu    sync.Mutex
	loops map[gnet.EventLoop]*loopBeat
}

// loopBeat is one loop's last answer; at most one stamp task is queued.
type loopBeat struct {
	index   int          // order in which the loop was first seen
	last    atomic.Int64 // unix nanoseconds when the loop last ran its task
	pending atomic.Bool
}

// see adds el, the loop of a connection just opened, if it is new.
func (w *loopWatch) see(el gnet.EventLoop, now time.Time) {
	if el == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.loops[el]; ok {
		return
	}
	if w.loops == nil {
		w.loops = map[gnet.EventLoop]*loopBeat{}
	}
	b := &loopBeat{index: len(w.loops)}
	b.last.Store(now.UnixNano())
	w.loops[el] = b
}

// probe queues a stamp task on every loop that has none waiting.
func (w *loopWatch) probe() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for el, b := range w.loops {
		if b.pending.Swap(true) {
			continue // the last one has not run yet: the stamp ages
		}
		err := el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			b.last.Store(time.Now().UnixNano())
			b.pending.Store(false)
			return nil
		}))
		if err != nil { // the engine is stopping
			b.pending.Store(false)
		}
	}
}

// stuck names the loop that has gone longest without running its task, if
// that is more than limit.
func (w *loopWatch) stuck(now time.Time, limit time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	worst, lag := -1, time.Duration(0)
	for _, b := range w.loops {
		if d := now.Sub(time.Unix(0, b.last.Load())); d > lag && b.pending.Load() {
			worst, lag = b.index, d
		}
	}
	if worst >= 0 && lag > limit {
		return fmt.Errorf("event loop %d has not run a task for %v", worst, lag.Round(time.Millisecond))
	}
	return nil
}
