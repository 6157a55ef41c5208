package secure

import (
	"bytes"
	"io"
	"testing"

	"github.com/tp0/loteria/frame"
)

// fixedSource serves the same bytes again after each rewind, never allocating.
type fixedSource struct {
	b   []byte
	off int
}

func (s *fixedSource) Peek(n int) ([]byte, error) {
	if n > len(s.b)-s.off {
		return nil, io.ErrShortBuffer
	}
	return s.b[s.off : s.off+n], nil
}

func (s *fixedSource) Discard(n int) (int, error) {
	s.off += n
	return n, nil
}

// BenchmarkServerHandshake is the server's cost of a handshake: message 1
// in, message 2 out.
func BenchmarkServerHandshake(b *testing.B) {
	fx := newFixture(b, 1)
	s := newSession(b, fx, 1, nil)
	src := &fixedSource{b: s.conn.sent.Bytes()[:HeaderSize+Handshake1Size]}
	b.ReportAllocs()
	for b.Loop() {
		src.off = 0
		sc := NewServerConn(fx.keys, src)
		if _, err := sc.Handshake(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientHandshake is an agency's cost of a handshake (message 1
// out, message 2 in) with the server's cost folded in; "fresh" prepares
// the key every time, "identity" reconnects with one kept Identity.
func BenchmarkClientHandshake(b *testing.B) {
	fx := newFixture(b, 1)
	for _, kind := range []string{"fresh", "identity"} {
		b.Run(kind, func(b *testing.B) {
			ident := NewIdentity(fx.agencies[0])
			b.ReportAllocs()
			for b.Loop() {
				if kind == "fresh" {
					ident = NewIdentity(fx.agencies[0])
				}
				newSessionAs(b, fx, ident, nil)
			}
		})
	}
}

// frame4K is a 4 KiB frame.
func frame4K(b testing.TB) []byte {
	f := mustEncode(b, &frame.Ping{Payload: bytes.Repeat([]byte{7}, 4096-frame.HeaderSize)})
	if len(f) != 4096 {
		b.Fatalf("frame of %d bytes", len(f))
	}
	return f
}

func BenchmarkSeal4K(b *testing.B) {
	fx := newFixture(b, 1)
	s := newSession(b, fx, 1, nil)
	f := frame4K(b)
	var out []byte
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if out, err = s.server.Seal(out[:0], f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen4K decrypts the same record again and again, rewinding the
// nonce, through Peek and Discard as the frame decoder uses them.
func BenchmarkOpen4K(b *testing.B) {
	fx := newFixture(b, 1)
	s := newSession(b, fx, 1, nil)
	f := frame4K(b)
	rec, err := s.client.send.seal(nil, f)
	if err != nil {
		b.Fatal(err)
	}
	src := &fixedSource{b: rec}
	s.server.raw = src
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		src.off, s.server.recv.n = 0, 0
		if _, err := s.server.Peek(len(f)); err != nil {
			b.Fatal(err)
		}
		s.server.Discard(len(f))
	}
}

// BenchmarkClientWrite4K is the agency's cost of sending a frame.
func BenchmarkClientWrite4K(b *testing.B) {
	fx := newFixture(b, 1)
	s := newSession(b, fx, 1, nil)
	f := frame4K(b)
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		s.conn.sent.Reset()
		if _, err := s.client.Write(f); err != nil {
			b.Fatal(err)
		}
	}
}
