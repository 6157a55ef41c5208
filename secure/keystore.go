package secure

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/flynn/noise"
)

// KeyStore holds what the server needs for handshakes: its own static key
// and the agencies' public keys. Lookup is safe from any goroutine while
// Reload swaps in a new set of agency keys.
type KeyStore struct {
	dir      string
	agencies int
	static   noise.DHKey // the server's, read-only once opened
	public   PublicKey

	reload sync.Mutex // one Reload at a time
	set    atomic.Pointer[agencySet]
	dhs    staticDHs // the static key's DH with the agencies' keys, as handshakes need them
}

// agencySet is one immutable generation of agency keys.
type agencySet struct {
	byKey   map[PublicKey]uint32
	missing []uint32
}

// OpenKeyStore reads ServerKeyFile and, for each agency id from 1 to
// agencies, its AgencyPubFile from dir. A missing agency file is not an
// error (that agency cannot connect; see Missing), but a key shared by two
// agencies, or by an agency and the server, is.
func OpenKeyStore(dir string, agencies int) (*KeyStore, error) {
	if agencies < 0 || uint64(agencies) > math.MaxUint32 {
		return nil, fmt.Errorf("open key store: cannot hold %d agencies", agencies)
	}
	priv, err := LoadPrivateKey(filepath.Join(dir, ServerKeyFile))
	if err != nil {
		return nil, fmt.Errorf("open key store: %w", err)
	}
	static := staticPair(priv)
	s := &KeyStore{dir: dir, agencies: agencies, static: static}
	copy(s.public[:], static.Public)
	s.dhs.known = func(pub []byte) bool {
		var k PublicKey
		copy(k[:], pub)
		_, ok := s.Lookup(k)
		return ok
	}
	set, err := s.load()
	if err != nil {
		return nil, fmt.Errorf("open key store: %w", err)
	}
	s.set.Store(set)
	return s, nil
}

// Reload reads the agency public keys again and, if they all load, makes
// them the ones Lookup answers from; on error the previous keys stay. The
// server calls it on SIGHUP, so keys rotate without a restart.
func (s *KeyStore) Reload() error {
	s.reload.Lock()
	defer s.reload.Unlock()
	set, err := s.load()
	if err != nil {
		return fmt.Errorf("reload keys: %w", err)
	}
	s.set.Store(set)
	return nil
}

// Lookup returns the agency whose public key is pub.
func (s *KeyStore) Lookup(pub PublicKey) (agency uint32, ok bool) {
	agency, ok = s.set.Load().byKey[pub]
	return agency, ok
}

// Missing lists, in order, the agencies that have no public key file.
func (s *KeyStore) Missing() []uint32 {
	return append([]uint32(nil), s.set.Load().missing...)
}

// Public is the server's static public key, the one agencies must hold.
func (s *KeyStore) Public() PublicKey { return s.public }

// load reads every agency public key file into a new set.
func (s *KeyStore) load() (*agencySet, error) {
	set := &agencySet{byKey: make(map[PublicKey]uint32, s.agencies)}
	for i := 1; i <= s.agencies; i++ {
		id := uint32(i)
		path := filepath.Join(s.dir, AgencyPubFile(id))
		pub, err := LoadPublicKey(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			set.missing = append(set.missing, id)
			continue
		case err != nil:
			return nil, err
		case pub == s.public:
			return nil, fmt.Errorf("%w %s: agency %d holds the server's own public key", ErrKeyFile, path, id)
		}
		if other, dup := set.byKey[pub]; dup {
			return nil, fmt.Errorf("%w %s: agency %d holds the same public key as agency %d (%s)",
				ErrKeyFile, path, id, other, AgencyPubFile(other))
		}
		set.byKey[pub] = id
	}
	return set, nil
}
