package eventserver

import (
	"runtime"
	"sync"
	"testing"
	"time"
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
