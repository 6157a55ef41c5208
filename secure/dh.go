package secure

import (
	"crypto/ecdh"
	crand "crypto/rand"
	"crypto/subtle"
	"io"
	"sync"

	"github.com/flynn/noise"
)

// staticKey is a static key pair in the two forms a handshake uses.
type staticKey struct {
	pair noise.DHKey
	key  *ecdh.PrivateKey
}

func newStaticKey(k PrivateKey) staticKey {
	key, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		panic("secure: X25519 refused a 32-byte private key: " + err.Error())
	}
	return staticKey{pair: noise.DHKey{Private: k[:], Public: key.PublicKey().Bytes()}, key: key}
}

// handshakeConfig starts a Noise IK configuration for one handshake with
// static key s and WireGuard's suite, 25519_ChaChaPoly_BLAKE2s; known, when
// not nil, remembers the static key's DH with the agencies' static keys.
func handshakeConfig(s staticKey, known *staticDHs, rand io.Reader) noise.Config {
	return noise.Config{
		CipherSuite:   noise.NewCipherSuite(&dh25519{static: s, known: known}, noise.CipherChaChaPoly, noise.HashBLAKE2s),
		Random:        rand,
		Pattern:       noise.HandshakeIK,
		Prologue:      []byte(Prologue),
		StaticKeypair: s.pair,
	}
}

// dh25519 is Noise's DH25519 on crypto/ecdh. It keeps the handshake's static
// and ephemeral keys in ecdh form, so each DH costs one scalar
// multiplication instead of the two of converting the raw key every time.
type dh25519 struct {
	static       staticKey
	known        *staticDHs
	ephemeral    *ecdh.PrivateKey
	ephemeralRaw []byte
}

// staticDHs remembers the server static key's DH with each agency's static
// key: it never changes, and saves one of a handshake's five scalar
// multiplications. Only keys the lookup knows are kept, so a peer sending
// made-up keys cannot grow it.
type staticDHs struct {
	known func(pub []byte) bool
	m     sync.Map // [KeySize]byte → []byte
}

func (d *dh25519) GenerateKeypair(rand io.Reader) (noise.DHKey, error) {
	if rand == nil {
		rand = crand.Reader
	}
	raw := make([]byte, KeySize)
	if _, err := io.ReadFull(rand, raw); err != nil {
		return noise.DHKey{}, err
	}
	k, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil {
		return noise.DHKey{}, err
	}
	d.ephemeral, d.ephemeralRaw = k, raw
	return noise.DHKey{Private: raw, Public: k.PublicKey().Bytes()}, nil
}

// DH fails, as Noise wants, when the result is all zeros: pub is of low order.
func (d *dh25519) DH(priv, pub []byte) ([]byte, error) {
	static := d.static.key != nil && subtle.ConstantTimeCompare(priv, d.static.pair.Private) == 1
	var id [KeySize]byte
	if static && d.known != nil && len(pub) == KeySize {
		copy(id[:], pub)
		if v, ok := d.known.m.Load(id); ok {
			return append([]byte(nil), v.([]byte)...), nil
		}
	}
	k, err := d.privateKey(priv)
	if err != nil {
		return nil, err
	}
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	out, err := k.ECDH(p)
	if err == nil && static && d.known != nil && len(pub) == KeySize && d.known.known(pub) {
		d.known.m.Store(id, append([]byte(nil), out...))
	}
	return out, err
}

func (d *dh25519) privateKey(raw []byte) (*ecdh.PrivateKey, error) {
	if d.ephemeral != nil && subtle.ConstantTimeCompare(raw, d.ephemeralRaw) == 1 {
		return d.ephemeral, nil
	}
	if d.static.key != nil && subtle.ConstantTimeCompare(raw, d.static.pair.Private) == 1 {
		return d.static.key, nil
	}
	return ecdh.X25519().NewPrivateKey(raw)
}

func (*dh25519) DHLen() int     { return KeySize }
func (*dh25519) DHName() string { return "25519" }
