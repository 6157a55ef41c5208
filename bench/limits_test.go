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

func TestFanOutReachesEveryReader(t *testing.T) {
	took, err := measureFanOut(context.Background(), 50, 640, 3)
	if err != nil {
		t.Fatal(err)
	}
	if took <= 0 {
		t.Errorf("fan-out to 50 readers took %v", took)
	}
	for _, bad := range [][3]int{{0, 640, 1}, {5, 0, 1}, {5, 640, 0}} {
		if _, err := measureFanOut(context.Background(), bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("measureFanOut%v accepted", bad)
		}
	}
}

func TestFanOutFloorAtSmallK(t *testing.T) {
	f, err := fanOutFloor(context.Background(), 40)
	if err != nil {
		t.Fatal(err)
	}
	if f.Agencies != 40 || f.Connections != 40 || f.MessageBytes != fanOutMessage || f.Writers < 1 {
		t.Errorf("fan-out limit %+v: want 40 agencies on 40 connections of %d bytes", f, fanOutMessage)
	}
	if f.TookMs <= 0 || f.FloorMs != f.TookMs {
		t.Errorf("fan-out limit %+v: with every connection measured, the floor is the time taken", f)
	}
}
