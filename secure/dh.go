package secure

import (
	"crypto/ecdh"
	crand "crypto/rand"
	"crypto/subtle"
	"io"

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
// static key s and WireGuard's suite, 25519_ChaChaPoly_BLAKE2s.
func handshakeConfig(s staticKey, rand io.Reader) noise.Config {
	return noise.Config{
		CipherSuite:   noise.NewCipherSuite(&dh25519{static: s}, noise.CipherChaChaPoly, noise.HashBLAKE2s),
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
	ephemeral    *ecdh.PrivateKey
	ephemeralRaw []byte
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
	k, err := d.privateKey(priv)
	if err != nil {
		return nil, err
	}
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return k.ECDH(p)
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
