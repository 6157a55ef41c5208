package filestore_test

import (
	"errors"
	"os"
	"sync/atomic"
	"testing"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/filestore"
)

// The writer's retryable path (persist.ErrUnavailable) is for shared
// databases; a disk that fails an fsync still stops the file store, which
// recovers from its files when the server restarts.
func TestFileStoreFailureStaysCrashOnly(t *testing.T) {
	var failing atomic.Bool
	b, err := filestore.Open(t.TempDir(), filestore.Options{Agencies: 1, Sync: func(f *os.File) error {
		if failing.Load() {
			return errors.New("injected fsync failure")
		}
		return f.Sync()
	}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := persist.New(b, persist.Options{Agencies: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bet := frame.Bet{FirstName: "Ana", LastName: "Sosa", Document: "1", Birthdate: frame.NewDate(1990, 1, 2), Number: 5}
	store := func(first uint64) persist.Result {
		done := make(chan persist.Result, 1)
		if err := s.Submit(&persist.Request{Agency: 1, First: first, Bets: []frame.Bet{bet}, Done: func(r persist.Result) { done <- r }}); err != nil {
			t.Fatal(err)
		}
		return <-done
	}
	if r := store(0); r.Err != nil {
		t.Fatal(r.Err)
	}
	failing.Store(true)
	if r := store(1); !errors.Is(r.Err, persist.ErrBroken) || errors.Is(r.Err, persist.ErrUnavailable) {
		t.Fatalf("a failed fsync: %v, want ErrBroken", r.Err)
	}
	select {
	case <-s.Failed():
	default:
		t.Fatal("Failed not closed after a failed fsync")
	}
	if s.Unavailable() != nil {
		t.Fatalf("Unavailable %v: a file store is broken, not unavailable", s.Unavailable())
	}
	if err := <-s.Refresh(nil); err == nil {
		t.Fatal("Refresh of a file store succeeded: no other server writes it")
	}
}
