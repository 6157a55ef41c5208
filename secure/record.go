package secure

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/tp0/loteria/frame"
)

// Record kinds: the first byte of every record. None of them can be
// frame.Version, so the first byte of a connection tells a plaintext peer
// from a Noise handshake.
const (
	KindHandshake1 byte = 0xE1 // agency to server: Noise IK message 1
	KindHandshake2 byte = 0xE2 // server to agency: Noise IK message 2
	KindTransport  byte = 0xE3 // either way: one encrypted frame
)

// Record sizes, in bytes.
const (
	HeaderSize     = 3                          // kind u8, body length u16 big-endian
	Handshake1Size = 96                         // body of a 0xE1 record: e, encrypted s, empty payload's tag
	Handshake2Size = 48                         // body of a 0xE2 record: e, empty payload's tag
	TagSize        = 16                         // Poly1305 tag closing every transport body
	MinBodySize    = frame.HeaderSize + TagSize // smallest transport body: an empty-payload frame
	MaxBodySize    = frame.MaxSize + TagSize    // largest transport body: 8208
	MaxRecordSize  = HeaderSize + MaxBodySize
)

// Prologue is mixed into every handshake, so peers speaking different
// versions of this layer never complete one.
const Prologue = "loteria noise v1"

// Errors of the secure layer; match them with errors.Is. Every one of them
// but ErrPlaintext ends the connection.
var (
	// ErrPlaintext says the peer's first byte is frame.Version: it speaks
	// the plaintext protocol (a health probe, or an --insecure agency).
	ErrPlaintext = errors.New("secure: peer speaks plaintext")
	// ErrRecord is a record of a kind not expected at that point, of a size
	// outside its kind's limits, or not holding exactly one frame.
	ErrRecord = errors.New("secure: bad record")
	// ErrHandshake is a handshake message that does not decrypt or verify.
	ErrHandshake = errors.New("secure: handshake failed")
	// ErrUnknownKey is a handshake from a static key no agency holds; the
	// error is an *UnknownKeyError.
	ErrUnknownKey = errors.New("secure: unknown agency key")
	// ErrDecrypt is a transport record that fails authentication: it was
	// altered, replayed, reordered or one before it was dropped.
	ErrDecrypt = errors.New("secure: transport record does not decrypt")
	// ErrExhausted is a direction that has used up its 2^64-1 nonces.
	ErrExhausted = errors.New("secure: nonces exhausted; reconnect")
)

// UnknownKeyError carries the static key of a handshake that no agency holds.
type UnknownKeyError struct{ Key PublicKey }

func (e *UnknownKeyError) Error() string {
	return "secure: unknown agency key " + e.Key.Fingerprint()
}

func (e *UnknownKeyError) Unwrap() error { return ErrUnknownKey }

// kindName names a record kind for error messages.
func kindName(kind byte) string {
	switch kind {
	case KindHandshake1:
		return "handshake message 1 (0xE1)"
	case KindHandshake2:
		return "handshake message 2 (0xE2)"
	case KindTransport:
		return "transport record (0xE3)"
	case frame.Version:
		return fmt.Sprintf("plaintext frame (0x%02X)", kind)
	}
	return fmt.Sprintf("unknown kind 0x%02X", kind)
}

// bodyLimits is the smallest and largest body a record of kind may carry.
func bodyLimits(kind byte) (lo, hi int) {
	switch kind {
	case KindHandshake1:
		return Handshake1Size, Handshake1Size
	case KindHandshake2:
		return Handshake2Size, Handshake2Size
	}
	return MinBodySize, MaxBodySize
}

// checkHeader reads a record header from the first HeaderSize bytes of b and
// returns its body size, refusing a kind other than want or a size outside
// want's limits before any byte of the body is looked at.
func checkHeader(b []byte, want byte) (int, error) {
	if b[0] != want {
		return 0, fmt.Errorf("%w: %s where a %s was expected", ErrRecord, kindName(b[0]), kindName(want))
	}
	size := int(binary.BigEndian.Uint16(b[1:HeaderSize]))
	if lo, hi := bodyLimits(want); size < lo || size > hi {
		if lo == hi {
			return 0, fmt.Errorf("%w: %s announces a %d-byte body, want %d", ErrRecord, kindName(want), size, lo)
		}
		return 0, fmt.Errorf("%w: %s announces a %d-byte body, want %d to %d", ErrRecord, kindName(want), size, lo, hi)
	}
	return size, nil
}

// checkFrame says whether b is exactly one frame, going by its header's
// length; the frame decoder checks the rest.
func checkFrame(b []byte) error {
	if len(b) < frame.HeaderSize {
		return fmt.Errorf("%w: %d bytes cannot hold a frame header", ErrRecord, len(b))
	}
	if size := frame.HeaderSize + int(binary.BigEndian.Uint16(b[2:4])); size != len(b) {
		return fmt.Errorf("%w: %d bytes hold a frame announcing %d; a record carries exactly one frame", ErrRecord, len(b), size)
	}
	if len(b) > frame.MaxSize {
		return fmt.Errorf("%w: %d-byte frame, limit %d", frame.ErrTooLarge, len(b), frame.MaxSize)
	}
	return nil
}

// cipherState is one direction of a transport: Noise's ChaChaPoly cipher
// with its counter nonce, kept here so that a record costs no allocation.
type cipherState struct {
	aead  cipher.AEAD
	n     uint64
	nonce [chacha20poly1305.NonceSize]byte // 4 zero bytes, then n little-endian, as Noise says
}

// newCipherState takes over the key of a CipherState from a finished handshake.
func newCipherState(cs *noise.CipherState) (*cipherState, error) {
	k := cs.UnsafeKey()
	aead, err := chacha20poly1305.New(k[:])
	if err != nil {
		return nil, err
	}
	return &cipherState{aead: aead, n: cs.Nonce()}, nil
}

// next returns the nonce for the next record; Noise reserves 2^64-1.
func (c *cipherState) next() ([]byte, error) {
	if c.n == math.MaxUint64 {
		return nil, ErrExhausted
	}
	binary.LittleEndian.PutUint64(c.nonce[4:], c.n)
	return c.nonce[:], nil
}

// seal appends to dst a transport record carrying the frame f.
func (c *cipherState) seal(dst, f []byte) ([]byte, error) {
	if err := checkFrame(f); err != nil {
		return dst, err
	}
	nonce, err := c.next()
	if err != nil {
		return dst, err
	}
	c.n++
	dst = append(dst, KindTransport, 0, 0)
	binary.BigEndian.PutUint16(dst[len(dst)-2:], uint16(len(f)+TagSize))
	return c.aead.Seal(dst, nonce, f, nil), nil
}

// open appends to dst the frame carried by a transport record's body.
func (c *cipherState) open(dst, body []byte) ([]byte, error) {
	nonce, err := c.next()
	if err != nil {
		return dst, err
	}
	out, err := c.aead.Open(dst, nonce, body, nil)
	if err != nil {
		return dst, fmt.Errorf("%w (record %d of this direction)", ErrDecrypt, c.n)
	}
	c.n++
	if err := checkFrame(out[len(dst):]); err != nil {
		return dst, err
	}
	return out, nil
}

// pending is bytes received and not yet consumed, buf[off:]: the
// bookkeeping behind every Peek and Discard of this package.
type pending struct {
	buf []byte
	off int
}

// held is how many bytes are pending.
func (p *pending) held() int { return len(p.buf) - p.off }

// bytes returns the first n pending bytes, all of them when n <= 0; n may
// not exceed held.
func (p *pending) bytes(n int) []byte {
	if n <= 0 {
		return p.buf[p.off:]
	}
	return p.buf[p.off : p.off+n]
}

// discard drops the next n pending bytes, all of them when n <= 0, as
// frame.Source's Discard does: asked for more than is held, it drops what
// there is and returns io.ErrShortBuffer. Once nothing is pending, buf
// starts over from its beginning.
func (p *pending) discard(n int) (int, error) {
	held := p.held()
	var err error
	switch {
	case n <= 0:
		n = held
	case n > held:
		n, err = held, io.ErrShortBuffer
	}
	p.off += n
	if p.off == len(p.buf) {
		p.buf, p.off = p.buf[:0], 0
	}
	return n, err
}

// compact moves the pending bytes to the front of buf, so what is appended
// next follows them.
func (p *pending) compact() {
	if p.off > 0 {
		p.buf, p.off = p.buf[:copy(p.buf, p.buf[p.off:])], 0
	}
}
