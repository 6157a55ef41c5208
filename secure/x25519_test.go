package secure

import (
	"bytes"
	"crypto/ecdh"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestX25519Vectors runs RFC 7748's test vectors: section 5.2's two
// multiplications, its iterated one (1 and 1,000 rounds) and section 6.1's
// key exchange.
func TestX25519Vectors(t *testing.T) {
	for _, v := range []struct{ scalar, point, want string }{
		{"a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
			"e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
			"c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"},
		{"4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
			"e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
			"95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"},
	} {
		got, err := scalarMult(unhex(t, v.scalar), unhex(t, v.point))
		if err != nil || hex.EncodeToString(got) != v.want {
			t.Errorf("X25519(%s…) = %x, %v; want %s", v.scalar[:8], got, err, v.want)
		}
	}

	k := make([]byte, KeySize)
	k[0] = 9
	u := bytes.Clone(k)
	for i := 1; i <= 1000; i++ {
		next, err := scalarMult(k, u)
		if err != nil {
			t.Fatal(err)
		}
		k, u = next, k
		if want := map[int]string{
			1:    "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079",
			1000: "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51",
		}[i]; want != "" && hex.EncodeToString(k) != want {
			t.Errorf("after %d iterations k = %x, want %s", i, k, want)
		}
	}

	alice := unhex(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	bob := unhex(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
	alicePub, bobPub := x25519Public(alice), x25519Public(bob)
	if hex.EncodeToString(alicePub) != "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a" ||
		hex.EncodeToString(bobPub) != "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f" {
		t.Errorf("public keys %x, %x differ from RFC 7748's", alicePub, bobPub)
	}
	ab, err1 := scalarMult(alice, bobPub)
	ba, err2 := scalarMult(bob, alicePub)
	const shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
	if err1 != nil || err2 != nil || hex.EncodeToString(ab) != shared || hex.EncodeToString(ba) != shared {
		t.Errorf("shared secrets %x, %x (%v, %v), want %s", ab, ba, err1, err2, shared)
	}
}

// TestX25519MatchesECDH compares both functions with crypto/ecdh on random
// scalars and on points that are real public keys, arbitrary u (the twist),
// u with the top bit set and u at or above the field's prime.
func TestX25519MatchesECDH(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		scalar, point := make([]byte, KeySize), make([]byte, KeySize)
		for j := range KeySize {
			scalar[j], point[j] = byte(r.Uint32()), byte(r.Uint32())
		}
		switch i % 4 {
		case 0: // a real public key
			point = x25519Public(point)
		case 1: // u = p + small, not reduced
			copy(point, unhex(t, "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"))
			point[0] += byte(i % 19)
		case 2: // the top bit clear (case 3 leaves it as drawn)
			point[31] &= 0x7f
		}
		matchesECDH(t, scalar, point)
	}
}

// matchesECDH fails t unless x25519Public(scalar) and scalarMult(scalar,
// point) give what crypto/ecdh does, errors included.
func matchesECDH(t *testing.T, scalar, point []byte) {
	t.Helper()
	priv, err := ecdh.X25519().NewPrivateKey(scalar)
	if err != nil {
		t.Fatal(err)
	}
	if got := x25519Public(scalar); !bytes.Equal(got, priv.PublicKey().Bytes()) {
		t.Fatalf("public key of %x: %x, crypto/ecdh says %x", scalar, got, priv.PublicKey().Bytes())
	}
	pub, err := ecdh.X25519().NewPublicKey(point)
	if err != nil {
		t.Fatal(err)
	}
	want, wantErr := priv.ECDH(pub)
	got, err := scalarMult(scalar, point)
	if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
		t.Fatalf("X25519(%x, %x) = %x, %v; crypto/ecdh %x, %v", scalar, point, got, err, want, wantErr)
	}
}

// TestX25519LowOrder checks that every low-order point fails, as Noise
// wants, rather than yield the all-zero secret.
func TestX25519LowOrder(t *testing.T) {
	scalar := x25519Public(make([]byte, KeySize)) // any scalar
	for _, u := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		if out, err := scalarMult(scalar, unhex(t, u)); !errors.Is(err, errLowOrder) {
			t.Errorf("X25519 with low-order u %s… = %x, %v; want errLowOrder", u[:8], out, err)
		}
	}
}

// FuzzX25519 compares scalarMult and x25519Public with crypto/ecdh on any
// scalar and point.
func FuzzX25519(f *testing.F) {
	f.Add(make([]byte, KeySize), make([]byte, KeySize))
	f.Add(bytes.Repeat([]byte{0xff}, KeySize), bytes.Repeat([]byte{0xff}, KeySize))
	f.Fuzz(func(t *testing.T, scalar, point []byte) {
		if len(scalar) != KeySize || len(point) != KeySize {
			return
		}
		matchesECDH(t, scalar, point)
	})
}

func BenchmarkX25519(b *testing.B) {
	scalar := bytes.Repeat([]byte{7}, KeySize)
	point := x25519Public(bytes.Repeat([]byte{3}, KeySize))
	b.Run("shared", func(b *testing.B) {
		for b.Loop() {
			if _, err := scalarMult(scalar, point); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("public", func(b *testing.B) {
		for b.Loop() {
			x25519Public(scalar)
		}
	})
}

// TestX25519RefusesBadLengths checks that a scalar or point of any length
// but 32 bytes is an error, not silently padded or cut.
func TestX25519RefusesBadLengths(t *testing.T) {
	good := x25519Public(bytes.Repeat([]byte{5}, KeySize))
	for _, n := range []int{0, 31, 33} {
		if _, err := scalarMult(make([]byte, n), good); err == nil {
			t.Errorf("a %d-byte scalar was accepted", n)
		}
		if _, err := scalarMult(good, make([]byte, n)); err == nil {
			t.Errorf("a %d-byte point was accepted", n)
		}
	}
}
