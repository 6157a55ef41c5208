package secure

import (
	"crypto/subtle"
	"errors"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// errLowOrder is a DH whose result is all zeros: the peer's point has low
// order, and Noise requires the handshake to fail.
var errLowOrder = errors.New("secure: X25519 with a low-order point")

// x25519Public is the X25519 public key of scalar: the Montgomery u of its
// multiple of the base point, computed on edwards25519 with its precomputed
// table, about 2.5 times faster than a ladder from u = 9. The base point has
// prime order, so the scalar reduced mod that order names the same point.
func x25519Public(scalar []byte) []byte {
	s, err := edwards25519.NewScalar().SetBytesWithClamping(scalar)
	if err != nil {
		panic("secure: X25519 private key of " + err.Error())
	}
	return new(edwards25519.Point).ScalarBaseMult(s).BytesMontgomery()
}

// x25519 is RFC 7748's X25519(scalar, point) on raw bytes: crypto/ecdh
// derives the public key of each private key it is given with a ladder of
// its own, which would undo x25519Public's saving. It runs in constant time
// in the scalar.
func x25519(scalar, point []byte) ([]byte, error) {
	if len(scalar) != KeySize {
		return nil, errors.New("secure: X25519 scalar is not 32 bytes")
	}
	var k [KeySize]byte
	copy(k[:], scalar)
	k[0] &= 248
	k[31] &= 127
	k[31] |= 64

	var x1, x2, z2, x3, z3, t0, t1 field.Element
	if _, err := x1.SetBytes(point); err != nil { // the top bit is ignored, as the RFC says
		return nil, err
	}
	x2.One()
	x3.Set(&x1)
	z3.One()
	swap := 0
	for i := 254; i >= 0; i-- {
		bit := int(k[i/8]>>uint(i&7)) & 1
		swap ^= bit
		x2.Swap(&x3, swap)
		z2.Swap(&z3, swap)
		swap = bit

		// One differential addition and doubling (RFC 7748, section 5).
		t0.Subtract(&x3, &z3)
		t1.Subtract(&x2, &z2)
		x2.Add(&x2, &z2)
		z2.Add(&x3, &z3)
		z3.Multiply(&t0, &x2)
		z2.Multiply(&z2, &t1)
		t0.Square(&t1)
		t1.Square(&x2)
		x3.Add(&z3, &z2)
		z2.Subtract(&z3, &z2)
		x2.Multiply(&t1, &t0)
		t1.Subtract(&t1, &t0)
		z2.Square(&z2)
		z3.Mult32(&t1, 121666)
		x3.Square(&x3)
		t0.Add(&t0, &z3)
		z3.Multiply(&x1, &z2)
		z2.Multiply(&t1, &t0)
	}
	x2.Swap(&x3, swap)
	z2.Swap(&z3, swap)
	z2.Invert(&z2)
	out := x2.Multiply(&x2, &z2).Bytes()
	var zero [KeySize]byte
	if subtle.ConstantTimeCompare(out, zero[:]) == 1 {
		return nil, errLowOrder
	}
	return out, nil
}
