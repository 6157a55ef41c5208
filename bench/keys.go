package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tp0/loteria/secure"
)

// keyring is what the bench needs of a secured deployment's key files: the
// directory the servers are given (--keys) and, for the agencies it drives,
// the server's public keys and each agency's private key.
type keyring struct {
	Dir    string
	Server secure.PublicKey
	Sign   ed25519.PublicKey
	Agency []secure.PrivateKey // agency id-1
	ids    []*secure.Identity  // agency id-1's key, ready for handshakes, as each agency process keeps its own
}

// key is agency id's private key.
func (k *keyring) key(id uint32) secure.PrivateKey { return k.Agency[id-1] }

// identity is agency id's key as that agency keeps it between connections.
func (k *keyring) identity(id uint32) *secure.Identity { return k.ids[id-1] }

// provisionKeys makes dir hold the keys of the server and of agencies
// 1..n by running keygen, which writes only the files that are missing, so
// a directory kept from an earlier invocation costs nothing; then it loads
// them. With keygen empty the files must exist already.
func provisionKeys(ctx context.Context, keygen, dir string, n int) (*keyring, time.Duration, error) {
	var took time.Duration
	if keygen != "" {
		start := time.Now()
		cmd := exec.CommandContext(ctx, keygen, "--dir", dir, "--agencies", strconv.Itoa(n))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return nil, 0, fmt.Errorf("keygen --dir %s --agencies %d: %w\n%s", dir, n, err, bytes.TrimSpace(out.Bytes()))
		}
		took = time.Since(start)
	}
	k, err := loadKeyring(dir, n)
	return k, took, err
}

// loadKeyring reads the key files of the server and of agencies 1..n.
func loadKeyring(dir string, n int) (*keyring, error) {
	k := &keyring{Dir: dir, Agency: make([]secure.PrivateKey, n), ids: make([]*secure.Identity, n)}
	var err error
	if k.Server, err = secure.LoadPublicKey(filepath.Join(dir, secure.ServerPubFile)); err != nil {
		return nil, fmt.Errorf("keys: %w (bin/keygen --dir %s writes them)", err, dir)
	}
	if k.Sign, err = secure.LoadVerifyKey(filepath.Join(dir, secure.VerifyKeyFile)); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	for i := range k.Agency {
		if k.Agency[i], err = secure.LoadPrivateKey(filepath.Join(dir, secure.AgencyKeyFile(uint32(i+1)))); err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		k.ids[i] = secure.NewIdentity(k.Agency[i])
	}
	return k, nil
}

// keysDir is where an invocation keeps its key files: under the data
// directory, kept between invocations because writing thousands of key
// files (each one fsynced) takes a while.
func keysDir(dataDir string) string { return filepath.Join(dataDir, "keys") }

// ensureDir creates dir if it is missing.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}
