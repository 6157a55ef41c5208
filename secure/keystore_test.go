package secure

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestKeyStoreLookup(t *testing.T) {
	fx := newFixture(t, 3)
	for i, k := range fx.agencies {
		if id, ok := fx.keys.Lookup(k.Public()); !ok || id != uint32(i+1) {
			t.Errorf("Lookup(agency %d) = %d, %v", i+1, id, ok)
		}
	}
	if _, ok := fx.keys.Lookup(fx.server.Public()); ok {
		t.Error("the server's key maps to an agency")
	}
	if _, ok := fx.keys.Lookup(testKey(t, 50).Public()); ok {
		t.Error("a stranger's key maps to an agency")
	}
	if m := fx.keys.Missing(); len(m) != 0 {
		t.Errorf("Missing() = %v", m)
	}
	if fx.keys.Public() != fx.server.Public() {
		t.Error("Public() is not the server's public key")
	}
}

func TestKeyStoreMissingAgencies(t *testing.T) {
	fx := sparseFixture(t, 5, 1, 3)
	if m := fx.keys.Missing(); !slices.Equal(m, []uint32{2, 4, 5}) {
		t.Errorf("Missing() = %v, want [2 4 5]", m)
	}
	m := fx.keys.Missing()
	m[0] = 99
	if fx.keys.Missing()[0] != 2 {
		t.Error("Missing() hands out the store's own slice")
	}
	if id, ok := fx.keys.Lookup(fx.agencies[2].Public()); !ok || id != 3 {
		t.Errorf("Lookup(agency 3) = %d, %v", id, ok)
	}
}

func TestKeyStoreRefusals(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, fx *fixture)
		want  string
	}{
		{"duplicate", func(t *testing.T, fx *fixture) {
			replacePub(t, fx.dir, 3, fx.agencies[0].Public())
		}, "agency 3 holds the same public key as agency 1 (agency-1.pub)"},
		{"server's key", func(t *testing.T, fx *fixture) {
			replacePub(t, fx.dir, 2, fx.server.Public())
		}, "agency 2 holds the server's own public key"},
		{"bad file", func(t *testing.T, fx *fixture) {
			writeFile(t, filepath.Join(fx.dir, AgencyPubFile(2)), "garbage\n")
		}, "agency-2.pub: line 1 is not standard padded base64"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, 3)
			tc.setup(t, fx)
			_, err := OpenKeyStore(fx.dir, 3)
			if !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("OpenKeyStore: %v; want ErrKeyFile saying %q", err, tc.want)
			}
			// Reload refuses the same way and keeps answering from the old keys.
			if err := fx.keys.Reload(); !errors.Is(err, ErrKeyFile) {
				t.Errorf("Reload: %v, want ErrKeyFile", err)
			}
			if id, ok := fx.keys.Lookup(fx.agencies[0].Public()); !ok || id != 1 {
				t.Errorf("after a failed Reload Lookup(agency 1) = %d, %v", id, ok)
			}
		})
	}
	if _, err := OpenKeyStore(t.TempDir(), 1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no server.key: %v, want fs.ErrNotExist", err)
	}
	if _, err := OpenKeyStore(t.TempDir(), -1); err == nil {
		t.Error("OpenKeyStore with -1 agencies succeeded")
	}
}

// replacePub puts pub in agency id's public key file.
func replacePub(t *testing.T, dir string, id uint32, pub PublicKey) {
	t.Helper()
	path := filepath.Join(dir, AgencyPubFile(id))
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if err := WritePublicKey(path, "agency", pub); err != nil {
		t.Fatal(err)
	}
}

func TestKeyStoreRotation(t *testing.T) {
	fx := newFixture(t, 2)
	old, rotated := fx.agencies[0].Public(), testKey(t, 60).Public()
	replacePub(t, fx.dir, 1, rotated)
	os.Remove(filepath.Join(fx.dir, AgencyPubFile(2))) // agency 2 revoked
	if _, ok := fx.keys.Lookup(rotated); ok {
		t.Fatal("the new key works before Reload")
	}
	if err := fx.keys.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := fx.keys.Lookup(old); ok {
		t.Error("the old key still works after Reload")
	}
	if id, ok := fx.keys.Lookup(rotated); !ok || id != 1 {
		t.Errorf("Lookup(new key) = %d, %v", id, ok)
	}
	if _, ok := fx.keys.Lookup(fx.agencies[1].Public()); ok {
		t.Error("a removed key still works after Reload")
	}
	if m := fx.keys.Missing(); !slices.Equal(m, []uint32{2}) {
		t.Errorf("Missing() = %v, want [2]", m)
	}
}

// TestKeyStoreReloadRace looks keys up from several goroutines while the
// main one rotates agency 1 back and forth and sometimes breaks a file:
// every answer is agency 1 under one of its two keys, agency 2 always.
func TestKeyStoreReloadRace(t *testing.T) {
	fx := newFixture(t, 2)
	keyA, keyB := fx.agencies[0].Public(), testKey(t, 61).Public()
	agency2 := fx.agencies[1].Public()
	var stop atomic.Bool
	var wg sync.WaitGroup
	var seenA, seenB atomic.Int64
	errs := make(chan string, 4)
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				_, okA := fx.keys.Lookup(keyA)
				_, okB := fx.keys.Lookup(keyB)
				id2, ok2 := fx.keys.Lookup(agency2)
				if okA {
					seenA.Add(1)
				}
				if okB {
					seenB.Add(1)
				}
				if !ok2 || id2 != 2 {
					select {
					case errs <- "agency 2 vanished during a reload":
					default:
					}
				}
			}
		})
	}
	for i := range 60 {
		switch i % 3 {
		case 0:
			replacePub(t, fx.dir, 1, keyB)
		case 1:
			replacePub(t, fx.dir, 1, keyA)
		case 2:
			writeFile(t, filepath.Join(fx.dir, AgencyPubFile(1)), "broken\n")
			if err := fx.keys.Reload(); err == nil {
				t.Error("Reload of a broken file succeeded")
			}
			replacePub(t, fx.dir, 1, keyB)
		}
		if err := fx.keys.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if seenA.Load() == 0 || seenB.Load() == 0 {
		t.Logf("lookups saw key A %d times, key B %d times", seenA.Load(), seenB.Load())
	}
}
