package eventserver

import (
	"bytes"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

func TestIdleTrackerReleasesOncePerIdleSecond(t *testing.T) {
	var q idleTracker
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at   time.Duration
		busy bool
		want bool
	}{
		{0, false, false},                     // never busy: nothing to give back
		{100 * time.Millisecond, true, false}, // an upload
		{900 * time.Millisecond, true, false},
		{1500 * time.Millisecond, false, false}, // idle for 0.6 s
		{1900 * time.Millisecond, false, true},  // idle for a second
		{2500 * time.Millisecond, false, false}, // already given back
		{3 * time.Second, true, false},          // busy again
		{3500 * time.Millisecond, false, false},
		{4 * time.Second, false, true},
	}
	for _, s := range steps {
		if got := q.due(t0.Add(s.at), s.busy); got != s.want {
			t.Errorf("at %v busy %v: due %v, want %v", s.at, s.busy, got, s.want)
		}
	}
}

func TestReturnMemoryEmptiesPools(t *testing.T) {
	var pool sync.Pool
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 64 {
		pool.Put(new([64 << 10]byte))
	}
	returnMemory()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if n := after.NumGC - before.NumGC; n < 2 {
		t.Fatalf("%d collections; a pool's buffers are only freed by the second", n)
	}
	if x := pool.Get(); x != nil {
		t.Error("a pooled buffer survived: memory given back would still hold it")
	}
}

// sink is a connection whose writes all go through.
type sink struct{ gnet.Conn }

func (sink) Write(p []byte) (int, error) { return len(p), nil }

// TestAnswersReusePooledBuffers: answers to many connections, one callback
// each (the draw's pushes), are gathered in pooled buffers; none is
// allocated per connection, and none stays with a connection afterwards.
func TestAnswersReusePooledBuffers(t *testing.T) {
	conns := make([]*conn, 500)
	for i := range conns {
		conns[i] = &conn{c: sink{}}
	}
	answer := bytes.Repeat([]byte{0xE3}, 657) // a COMMITMENT and a WINNERS, sealed
	next := 0
	allocs := testing.AllocsPerRun(len(conns)-1, func() {
		cs := conns[next]
		next++
		cs.takeOut()
		cs.out = append(cs.out, answer...)
		if !cs.flush() {
			t.Fatal("flush reported a failed write")
		}
		if cs.out != nil || cs.outBuf != nil {
			t.Fatal("a connection kept its answer buffer after the callback")
		}
	})
	// The race detector makes sync.Pool drop a quarter of what it is
	// given; a buffer per connection would be one allocation each.
	if allocs > 0.5 {
		t.Errorf("%.2f allocations per connection answered, want none but what the pool drops", allocs)
	}
}
