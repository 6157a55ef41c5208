package secure

import (
	"bytes"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// KeySize is the size of every raw key this package stores: X25519 keys and
// Ed25519 seeds and public keys alike.
const KeySize = 32

// Names of the key files in a key directory.
const (
	ServerKeyFile = "server.key"      // the server's X25519 private key
	ServerPubFile = "server.pub"      // the server's X25519 public key, given to every agency
	SignKeyFile   = "server-sign.key" // the server's Ed25519 seed, for signed receipts
	VerifyKeyFile = "server-sign.pub" // the server's Ed25519 public key
)

// AgencyKeyFile names the file holding agency id's X25519 private key.
func AgencyKeyFile(id uint32) string { return "agency-" + strconv.FormatUint(uint64(id), 10) + ".key" }

// AgencyPubFile names the file holding agency id's X25519 public key.
func AgencyPubFile(id uint32) string { return "agency-" + strconv.FormatUint(uint64(id), 10) + ".pub" }

// ErrKeyFile is wrapped by every error about the content of a key file.
var ErrKeyFile = errors.New("bad key file")

// PrivateKey is an X25519 private key, the static key of a Noise peer.
type PrivateKey [KeySize]byte

// PublicKey is an X25519 public key.
type PublicKey [KeySize]byte

// GenerateKey returns a new private key read from rand (crypto/rand when nil).
func GenerateKey(rand io.Reader) (PrivateKey, error) {
	if rand == nil {
		rand = crand.Reader
	}
	var k PrivateKey
	if _, err := io.ReadFull(rand, k[:]); err != nil {
		return PrivateKey{}, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// Public derives the public key of k.
func (k PrivateKey) Public() PublicKey {
	var p PublicKey
	copy(p[:], x25519Public(k[:]))
	return p
}

// String keeps a private key out of logs and error messages.
func (k PrivateKey) String() string { return "PrivateKey(secret)" }

// String returns k in standard base64, the form key files hold.
func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Fingerprint is a short prefix of k's base64 form, enough to tell keys
// apart in a log line and to grep for among the .pub files.
func (k PublicKey) Fingerprint() string { return k.String()[:12] }

// LoadPrivateKey reads an X25519 private key file.
func LoadPrivateKey(path string) (PrivateKey, error) {
	var k PrivateKey
	return k, loadKey(path, k[:])
}

// LoadPublicKey reads an X25519 public key file.
func LoadPublicKey(path string) (PublicKey, error) {
	var k PublicKey
	return k, loadKey(path, k[:])
}

// LoadSigningKey reads an Ed25519 seed file and expands it into the
// signing key.
func LoadSigningKey(path string) (ed25519.PrivateKey, error) {
	seed := make([]byte, KeySize)
	if err := loadKey(path, seed); err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// LoadVerifyKey reads an Ed25519 public key file.
func LoadVerifyKey(path string) (ed25519.PublicKey, error) {
	k := make([]byte, KeySize)
	if err := loadKey(path, k); err != nil {
		return nil, err
	}
	return ed25519.PublicKey(k), nil
}

// maxKeyFile bounds what loadKey reads: a key file is a few lines.
const maxKeyFile = 64 << 10

// loadKey reads the single key line of the file at path into dst.
func loadKey(path string, dst []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return fmt.Errorf("%w %s: larger than %d bytes", ErrKeyFile, path, maxKeyFile)
	}
	if err := parseKey(data, dst); err != nil {
		return fmt.Errorf("%w %s: %w", ErrKeyFile, path, err)
	}
	return nil
}

// parseKey finds the one line of data that is not a comment or blank and
// decodes it into dst, which it fills exactly.
func parseKey(data, dst []byte) error {
	keyLine := 0
	var encoded []byte
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if keyLine != 0 {
			return fmt.Errorf("two key lines (%d and %d); want exactly one", keyLine, i+1)
		}
		keyLine, encoded = i+1, line
	}
	if keyLine == 0 {
		return errors.New("no key line (only comments and blank lines)")
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(string(encoded))
	if err != nil {
		return fmt.Errorf("line %d is not standard padded base64: %w", keyLine, err)
	}
	if len(raw) != len(dst) {
		return fmt.Errorf("line %d holds %d bytes; want %d", keyLine, len(raw), len(dst))
	}
	copy(dst, raw)
	return nil
}

// WritePrivateKey writes k to a new file at path, mode 0600, with a comment
// naming owner (e.g. "server", "agency 3"). Like every writer here it never
// replaces a file: if path exists the error wraps fs.ErrExist.
func WritePrivateKey(path, owner string, k PrivateKey) error {
	return writeKey(path, "# loteria "+owner+" private key (X25519, Noise IK): keep secret", k[:], 0o600)
}

// WritePublicKey writes k to a new file at path, mode 0644.
func WritePublicKey(path, owner string, k PublicKey) error {
	return writeKey(path, "# loteria "+owner+" public key (X25519)", k[:], 0o644)
}

// WriteSigningKey writes the seed of k to a new file at path, mode 0600.
func WriteSigningKey(path, owner string, k ed25519.PrivateKey) error {
	if len(k) != ed25519.PrivateKeySize {
		return fmt.Errorf("write %s: signing key of %d bytes", path, len(k))
	}
	return writeKey(path, "# loteria "+owner+" signing key (Ed25519 seed): keep secret", k.Seed(), 0o600)
}

// WriteVerifyKey writes k to a new file at path, mode 0644.
func WriteVerifyKey(path, owner string, k ed25519.PublicKey) error {
	if len(k) != ed25519.PublicKeySize {
		return fmt.Errorf("write %s: verify key of %d bytes", path, len(k))
	}
	return writeKey(path, "# loteria "+owner+" signing public key (Ed25519)", k, 0o644)
}

// writeKey writes the key file through a synced temporary file in the same
// directory, then links it into place, which fails rather than replace a
// file that appeared meanwhile.
func writeKey(path, comment string, key []byte, mode os.FileMode) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("write %s: %w", path, fs.ErrExist)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp") // mode 0600 from the start
	if err != nil {
		return fmt.Errorf("create temporary key file: %w", err)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name()) // already gone once renamed
	}()
	content := comment + "\n" + base64.StdEncoding.EncodeToString(key) + "\n"
	if _, err := tmp.WriteString(content); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := place(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// place moves tmp to path without ever replacing path: a hard link fails if
// path exists; where links are not supported it checks again and renames.
func place(tmp, path string) error {
	err := os.Link(tmp, path)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("write %s: %w", path, fs.ErrExist)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("write %s: %w", path, fs.ErrExist)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	return nil
}

// syncDir makes a new directory entry in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
