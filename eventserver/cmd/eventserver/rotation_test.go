package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/proctest"
	"github.com/tp0/loteria/secure"
)

// TestKeyRotationOnSighup replaces agency 2's public key in the server's
// key directory and sends SIGHUP (issue 9, key rotation): the server logs
// `keys_reload | result: success`, agency 2 with its new key gets in and
// finishes, and with its old key it is refused with unknown_key and exits
// 1, nothing stored. A reload that fails (a damaged key file) keeps the
// keys loaded before.
func TestKeyRotationOnSighup(t *testing.T) {
	t.Parallel()
	data := makeFaultData(t, []int{600, 400}, 28)
	c := newCluster(t, data)
	c.startServer()
	serverPub := loadPub(t, filepath.Join(c.keys, secure.ServerPubFile))
	keyPath := func(dir string, id uint32) string { return filepath.Join(dir, secure.AgencyKeyFile(id)) }
	pubPath := func(dir string, id uint32) string { return filepath.Join(dir, secure.AgencyPubFile(id)) }
	oldKey := loadKey(t, keyPath(c.keys, 2))
	if f, err := helloWith(c.addr, oldKey, serverPub, 2); err != nil || f.Type() != frame.TypeWelcome {
		t.Fatalf("agency 2 before the rotation: %v, %v", f, err)
	}
	reloads := func(result string) int { return len(proctest.Find(c.server.Lines(), "keys_reload", result)) }

	// A damaged key file: the reload fails and the keys loaded before stay.
	good := readFile(t, pubPath(c.keys, 1))
	replaceFile(t, pubPath(c.keys, 1), []byte("not a key\n"))
	c.server.Signal(syscall.SIGHUP)
	proctest.WaitFor(t, hangGuard, "keys_reload | result: fail", func() bool { return reloads("fail") == 1 })
	if l := proctest.Find(c.server.Lines(), "keys_reload", "fail")[0]; !strings.Contains(l.Fields["error"], pubPath(c.keys, 1)) {
		t.Errorf("the failed reload does not name the bad file: %v", l)
	}
	if f, err := helloWith(c.addr, loadKey(t, keyPath(c.keys, 1)), serverPub, 1); err != nil || f.Type() != frame.TypeWelcome {
		t.Errorf("agency 1 after a failed reload: %v, %v; its key should still be loaded", f, err)
	}
	replaceFile(t, pubPath(c.keys, 1), good)

	// Rotate agency 2: the new public key goes to the server, the new
	// private key to the agency; the old private key is kept aside.
	fresh := makeKeys(t, 2)
	oldKeyFile := filepath.Join(t.TempDir(), "agency-2.old.key")
	copyFile(t, keyPath(c.keys, 2), oldKeyFile)
	replaceFile(t, pubPath(c.keys, 2), readFile(t, pubPath(fresh, 2)))
	replaceFile(t, keyPath(c.keys, 2), readFile(t, keyPath(fresh, 2)))
	c.server.Signal(syscall.SIGHUP)
	proctest.WaitFor(t, hangGuard, "keys_reload | result: success", func() bool { return reloads("success") == 1 })

	_, err := helloWith(c.addr, oldKey, serverPub, 2)
	var refused *secure.RefusedError
	if !errors.As(err, &refused) || refused.Code != frame.CodeUnknownKey {
		t.Errorf("agency 2's old key after the rotation: %v, want ERROR unknown_key", err)
	}
	old := proctest.Start(t, "agency-2-old-key", filepath.Join(c.logs, "agency-2-old-key.log"), filepath.Join(c.bins, "agency"),
		c.agencyArgs(2, "--key", oldKeyFile)...)
	if code := old.Wait(t, hangGuard); code != 1 {
		t.Errorf("agency 2 with its old key exited %d, want 1", code)
	}
	if e := proctest.Find(old.Lines(), "exit", "fail"); len(e) != 1 || !strings.Contains(e[0].Fields["error"], frame.CodeUnknownKey.String()) {
		t.Errorf("agency 2 with its old key: exit lines %v, want one naming %s", e, frame.CodeUnknownKey)
	}
	if held := proctest.Find(c.server.Lines(), "apuesta_recibida", "success", "agency", "2"); len(held) != 0 {
		t.Errorf("the old key stored bets: %v", held)
	}

	c.startAgencies() // agency 2 with its new key
	roots := c.finishAgencies()
	c.stopServer()
	c.checkStore()
	c.checkEvidence(roots)
}

func loadKey(t *testing.T, path string) secure.PrivateKey {
	t.Helper()
	k, err := secure.LoadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func loadPub(t *testing.T, path string) secure.PublicKey {
	t.Helper()
	k, err := secure.LoadPublicKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// replaceFile puts data at path through a rename, as a person rotating a
// key would, so a reload never reads half a file.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
