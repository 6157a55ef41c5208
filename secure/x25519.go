package secure

import (
	"errors"

	"github.com/cloudflare/circl/dh/x25519"
)

// errLowOrder is a DH whose result is all zeros: the peer's point has low
// order, and Noise requires the handshake to fail.
var errLowOrder = errors.New("secure: X25519 with a low-order point")

// x25519Public is the X25519 public key of scalar.
func x25519Public(scalar []byte) []byte {
	if len(scalar) != KeySize {
		panic("secure: X25519 private key is not 32 bytes")
	}
	var secret, public x25519.Key
	copy(secret[:], scalar)
	x25519.KeyGen(&public, &secret)
	return public[:]
}

// scalarMult is RFC 7748's X25519(scalar, point) on raw bytes, with CIRCL's
// BMI2/ADX field arithmetic where the CPU has it: crypto/ecdh is slower, and
// derives the public key of each private key it is given with a ladder of
// its own, a multiplication the handshake does not need.
func scalarMult(scalar, point []byte) ([]byte, error) {
	if len(scalar) != KeySize || len(point) != KeySize {
		return nil, errors.New("secure: X25519 scalar and point must be 32 bytes")
	}
	var secret, public, shared x25519.Key
	copy(secret[:], scalar)
	copy(public[:], point)
	if !x25519.Shared(&shared, &secret, &public) {
		return nil, errLowOrder
	}
	return shared[:], nil
}
