package secure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
)

// seeded is a repeatable source of key bytes.
func seeded(seed uint64) io.Reader {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

// testKey returns the private key generated from seed.
func testKey(t testing.TB, seed uint64) PrivateKey {
	t.Helper()
	k, err := GenerateKey(seeded(seed))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fixture is a key directory with a server key and agency keys.
type fixture struct {
	dir      string
	server   PrivateKey
	agencies []PrivateKey // agencies[i] is agency i+1
	keys     *KeyStore
}

// newFixture writes the server key and n agency public keys (seeded, so the
// same every run) into a fresh directory and opens it.
func newFixture(t testing.TB, n int) *fixture {
	t.Helper()
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i + 1
	}
	return sparseFixture(t, n, ids...)
}

// sparseFixture is newFixture with public key files for the agencies ids only.
func sparseFixture(t testing.TB, n int, ids ...int) *fixture {
	t.Helper()
	fx := &fixture{dir: t.TempDir(), server: testKey(t, 1000), agencies: make([]PrivateKey, n)}
	if err := WritePrivateKey(filepath.Join(fx.dir, ServerKeyFile), "server", fx.server); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		k := testKey(t, uint64(id))
		fx.agencies[id-1] = k
		if err := WritePublicKey(filepath.Join(fx.dir, AgencyPubFile(uint32(id))), "agency", k.Public()); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := OpenKeyStore(fx.dir, n)
	if err != nil {
		t.Fatal(err)
	}
	fx.keys = ks
	return fx
}

// memSource is a frame.Source that behaves like gnet.Conn's inbound buffer:
// a Peek of more than is buffered fails with io.ErrShortBuffer, and Discard
// overwrites the bytes it drops, so a caller keeping them sees garbage.
type memSource struct {
	buf       []byte
	discarded int // bytes dropped so far
}

func (s *memSource) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	return len(p), nil
}

func (s *memSource) Peek(n int) ([]byte, error) {
	if n > len(s.buf) {
		return nil, io.ErrShortBuffer
	}
	if n <= 0 {
		n = len(s.buf)
	}
	return s.buf[:n:n], nil
}

func (s *memSource) Discard(n int) (int, error) {
	if n <= 0 || n > len(s.buf) {
		n = len(s.buf)
	}
	for i := range s.buf[:n] {
		s.buf[i] = 0xA5
	}
	s.buf = s.buf[n:]
	s.discarded += n
	return n, nil
}

// memConn is the agency's end of an in-memory connection: Write appends to
// sent (everything the agency ever sent, for replaying), Read serves inbox,
// calling answer first whenever inbox is empty.
type memConn struct {
	net.Conn // nil: methods not overridden here are not used
	sent     bytes.Buffer
	inbox    bytes.Buffer
	answer   func(c *memConn)
}

func (c *memConn) Write(p []byte) (int, error) { return c.sent.Write(p) }

func (c *memConn) Read(p []byte) (int, error) {
	if c.inbox.Len() == 0 && c.answer != nil {
		c.answer(c)
	}
	if c.inbox.Len() == 0 {
		return 0, io.EOF
	}
	return c.inbox.Read(p)
}

func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
func (c *memConn) Close() error                     { return nil }

// session is a handshake done in memory and in step: the agency's
// ClientConn, the server's ServerConn and the source feeding it.
type session struct {
	client *ClientConn
	conn   *memConn
	server *ServerConn
	src    *memSource
	fed    int // bytes of conn.sent already given to src
}

// Seeds of the ephemeral keys of a repeatable session.
const (
	agencySeed = 101
	serverSeed = 102
)

// newSession performs a handshake in memory between agency id's key and a
// ServerConn whose ephemeral keys come from serverRand (nil: crypto/rand);
// with seeded ephemerals on both sides every run yields the same bytes.
func newSession(t testing.TB, fx *fixture, id int, serverRand io.Reader) *session {
	t.Helper()
	return newSessionAs(t, fx, NewIdentity(fx.agencies[id-1]), serverRand)
}

// newSessionAs is newSession for an Identity the caller keeps.
func newSessionAs(t testing.TB, fx *fixture, ident *Identity, serverRand io.Reader) *session {
	t.Helper()
	s := &session{conn: &memConn{}, src: &memSource{}}
	s.server = NewServerConn(fx.keys, s.src)
	s.server.rand = serverRand
	s.conn.answer = func(c *memConn) {
		s.toServer()
		reply, err := s.server.Handshake()
		if err != nil {
			t.Errorf("server handshake: %v", err)
		}
		c.inbox.Write(reply)
	}
	var err error
	s.client, err = ident.client(s.conn, fx.server.Public(), time.Second, seeded(agencySeed))
	if err != nil {
		t.Fatal(err)
	}
	s.conn.answer = nil
	return s
}

// toServer gives the server what the agency sent since the last call.
func (s *session) toServer() {
	b := s.conn.sent.Bytes()
	s.src.Write(b[s.fed:])
	s.fed = len(b)
}

// decodeAll takes every complete frame out of src and returns them encoded,
// with the error that stopped it.
func decodeAll(src frame.Source) ([][]byte, error) {
	var dec frame.Decoder
	var out [][]byte
	for {
		f, err := dec.Next(src)
		if err != nil {
			return out, err
		}
		b, err := frame.Encode(f)
		if err != nil {
			return out, err
		}
		out = append(out, b)
	}
}

func mustEncode(t testing.TB, f frame.Frame) []byte {
	t.Helper()
	b, err := frame.Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sampleFrames is a conversation's worth of frames of varied sizes, the
// largest the protocol allows among them.
func sampleFrames(t testing.TB) [][]byte {
	t.Helper()
	bet := frame.Bet{FirstName: "Valentina", LastName: "Ortega", Document: "30904465",
		Birthdate: frame.NewDate(1999, 3, 17), Number: 7574}
	bets := make([]frame.Bet, 40)
	for i := range bets {
		bets[i] = bet
	}
	return [][]byte{
		mustEncode(t, &frame.Hello{Agency: 3}),
		mustEncode(t, &frame.Bets{First: 0, Bets: bets}),
		mustEncode(t, &frame.Ping{}),
		mustEncode(t, &frame.Ping{Payload: bytes.Repeat([]byte{0xE3}, frame.MaxPayload)}),
		mustEncode(t, &frame.Finished{Total: 40}),
		mustEncode(t, &frame.QueryWinners{}),
	}
}

// isShort says whether err means "no complete record yet".
func isShort(err error) bool {
	return errors.Is(err, io.ErrShortBuffer) || errors.Is(err, frame.ErrIncomplete)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
