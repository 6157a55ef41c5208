package bench

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestLoopbackMovesEveryByte(t *testing.T) {
	for _, streams := range []int{1, 7} {
		bps, err := measureLoopback(context.Background(), streams, 3<<20+5)
		if err != nil {
			t.Fatalf("%d streams: %v", streams, err)
		}
		if bps <= 0 {
			t.Errorf("%d streams: %v bytes/s", streams, bps)
		}
	}
	if _, err := measureLoopback(context.Background(), 0, 10); err == nil {
		t.Error("0 streams accepted")
	}
}

func TestDiskAppendFsyncCleansUp(t *testing.T) {
	dir := t.TempDir()
	d, err := measureDisk(dir, 4096, 20*time.Millisecond, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if d.Fsyncs < 5 || d.BytesPerSec <= 0 || d.FsyncsPerSec <= 0 {
		t.Errorf("disk result %+v: want at least 5 fsyncs and positive rates", d)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the disk test left %d files behind", len(left))
	}
	if _, err := measureDisk(dir, 0, time.Millisecond, 1); err == nil {
		t.Error("a 0-byte block accepted")
	}
}
