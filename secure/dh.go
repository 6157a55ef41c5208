package secure

import (
	crand "crypto/rand"
	"crypto/subtle"
	"io"
	"sync"

	"github.com/flynn/noise"
)

// staticPair is k with its public half, as a handshake uses them.
func staticPair(k PrivateKey) noise.DHKey {
	return noise.DHKey{Private: append([]byte(nil), k[:]...), Public: x25519Public(k[:])}
}

// handshakeConfig starts a Noise IK configuration for one handshake with
// static key s and WireGuard's suite, 25519_ChaChaPoly_BLAKE2s; known, when
// not nil, remembers the static key's DH with the agencies' static keys.
func handshakeConfig(s noise.DHKey, known *staticDHs, rand io.Reader) noise.Config {
	return noise.Config{
		CipherSuite:   noise.NewCipherSuite(&dh25519{static: s, known: known}, noise.CipherChaChaPoly, noise.HashBLAKE2s),
		Random:        rand,
		Pattern:       noise.HandshakeIK,
		Prologue:      []byte(Prologue),
		StaticKeypair: s,
	}
}

// dh25519 is Noise's DH25519 with two savings over noise.DH25519: each
// operation is CIRCL's X25519 on the raw key (scalarMult, x25519Public), and
// the static-static DH is remembered.
type dh25519 struct {
	static noise.DHKey
	known  *staticDHs
}

// staticDHs remembers the server static key's DH with each agency's static
// key: it never changes, and saves one of a handshake's five X25519
// operations. Only keys the lookup knows are kept, so a peer sending made-up
// keys cannot grow it.
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
	return noise.DHKey{Private: raw, Public: x25519Public(raw)}, nil
}

// DH fails, as Noise wants, when the result is all zeros: pub is of low order.
func (d *dh25519) DH(priv, pub []byte) ([]byte, error) {
	static := d.known != nil && len(pub) == KeySize &&
		subtle.ConstantTimeCompare(priv, d.static.Private) == 1
	var id [KeySize]byte
	if static {
		copy(id[:], pub)
		if v, ok := d.known.m.Load(id); ok {
			return append([]byte(nil), v.([]byte)...), nil
		}
	}
	out, err := scalarMult(priv, pub)
	if err == nil && static && d.known.known(pub) {
		d.known.m.Store(id, append([]byte(nil), out...))
	}
	return out, err
}

func (*dh25519) DHLen() int     { return KeySize }
func (*dh25519) DHName() string { return "25519" }
