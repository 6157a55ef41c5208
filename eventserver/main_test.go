package eventserver

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// server, store, hub and client a test starts must be gone when it ends.
//
// The only goroutines ignored are those already running before the first
// test: gnet creates its global worker pool (goroutine.DefaultWorkerPool, an
// ants pool) when its package is initialised, and that pool's purge and
// ticktock goroutines (ants.(*poolCommon).purgeStaleWorkers and ticktock)
// live for the whole process, before any engine starts and after every
// Stop. IgnoreCurrent snapshots them by goroutine, so a pool or anything
// else started by a test is still reported.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}
