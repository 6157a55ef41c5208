package secure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/flynn/noise"

	"github.com/tp0/loteria/frame"
)

func TestKindsNeverStartAPlaintextFrame(t *testing.T) {
	for _, k := range []byte{KindHandshake1, KindHandshake2, KindTransport} {
		if k == frame.Version {
			t.Errorf("record kind 0x%02X is frame.Version", k)
		}
	}
	if MaxBodySize != 8208 {
		t.Errorf("MaxBodySize = %d, want frame.MaxSize+16 = 8208", MaxBodySize)
	}
}

func TestHandshakeSizes(t *testing.T) {
	fx := newFixture(t, 1)
	s := newSession(t, fx, 1, nil)
	if got := s.conn.sent.Len(); got != HeaderSize+Handshake1Size {
		t.Errorf("message 1 record is %d bytes, want %d", got, HeaderSize+Handshake1Size)
	}
	if !s.server.Established() || s.server.Agency() != 0 {
		t.Errorf("after the handshake: established %v, agency %d; want true, 0", s.server.Established(), s.server.Agency())
	}
	if reply, err := s.server.Handshake(); reply != nil || err != nil {
		t.Errorf("Handshake once done = %x, %v; want nil, nil", reply, err)
	}
}

// TestFramesBothWays sends a conversation each way in memory and checks
// that the agency is proven by its first frame, not before.
func TestFramesBothWays(t *testing.T) {
	fx := newFixture(t, 3)
	s := newSession(t, fx, 3, nil)
	frames := sampleFrames(t)

	if b, err := s.server.Peek(frame.HeaderSize); !isShort(err) || len(b) != 0 {
		t.Fatalf("Peek with nothing sent = %d bytes, %v; want io.ErrShortBuffer", len(b), err)
	}
	for i, f := range frames {
		if _, err := s.client.Write(f); err != nil {
			t.Fatal(err)
		}
		s.toServer()
		got, err := decodeAll(s.server)
		if !errors.Is(err, frame.ErrIncomplete) || len(got) != 1 || !bytes.Equal(got[0], f) {
			t.Fatalf("frame %d: server decoded %d frames, stopped by %v", i, len(got), err)
		}
		if s.server.Agency() != 3 {
			t.Fatalf("Agency() = %d after a frame decrypted, want 3", s.server.Agency())
		}
	}

	var out []byte
	for _, f := range frames {
		var err error
		if out, err = s.server.Seal(out, f); err != nil {
			t.Fatal(err)
		}
	}
	s.conn.inbox.Write(out)
	got, err := decodeAll(s.client)
	if err != io.EOF {
		t.Errorf("client decode ended with %v, want io.EOF", err)
	}
	if len(got) != len(frames) {
		t.Fatalf("client decoded %d frames, want %d", len(got), len(frames))
	}
	for i := range got {
		if !bytes.Equal(got[i], frames[i]) {
			t.Errorf("frame %d differs", i)
		}
	}
}

// recordedStream returns the bytes agency 2 sends in a repeatable session
// carrying sampleFrames, the frames, and the fixture to replay it against.
func recordedStream(t testing.TB) (*fixture, []byte, [][]byte) {
	t.Helper()
	return recordFrames(t, sampleFrames(t))
}

// recordFrames is recordedStream carrying frames.
func recordFrames(t testing.TB, frames [][]byte) (*fixture, []byte, [][]byte) {
	t.Helper()
	fx := newFixture(t, 3)
	s := newSession(t, fx, 2, seeded(serverSeed))
	for _, f := range frames {
		if _, err := s.client.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	return fx, s.conn.sent.Bytes(), frames
}

// handshaken is a ServerConn with the recorded session's server ephemeral
// key that has read stream and answered its handshake.
func handshaken(t *testing.T, fx *fixture, stream []byte) *ServerConn {
	t.Helper()
	src := &memSource{}
	src.Write(stream)
	sc := NewServerConn(fx.keys, src)
	sc.rand = seeded(serverSeed)
	if _, err := sc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return sc
}

// replay feeds stream to a ServerConn with the recorded session's server
// ephemeral key, in chunks of the sizes next returns, and returns the frames
// decoded after each chunk.
func replay(t *testing.T, fx *fixture, stream []byte, next func() int) [][]byte {
	t.Helper()
	src := &memSource{}
	sc := NewServerConn(fx.keys, src)
	sc.rand = seeded(serverSeed)
	var got [][]byte
	for len(stream) > 0 {
		n := min(max(next(), 1), len(stream))
		src.Write(stream[:n])
		stream = stream[n:]
		if !sc.Established() {
			if _, err := sc.Handshake(); err != nil {
				if errors.Is(err, frame.ErrIncomplete) {
					continue
				}
				t.Fatalf("handshake: %v", err)
			}
		}
		frames, err := decodeAll(sc)
		if !errors.Is(err, frame.ErrIncomplete) {
			t.Fatalf("decode: %v", err)
		}
		got = append(got, frames...)
	}
	if sc.Agency() != 2 {
		t.Errorf("Agency() = %d, want 2", sc.Agency())
	}
	return got
}

func TestSplitAnywhere(t *testing.T) {
	fx, stream, frames := recordedStream(t)
	rng := rand.New(rand.NewPCG(1, 2))
	chunkings := map[string]func() int{
		"whole":        func() int { return len(stream) },
		"byte by byte": func() int { return 1 },
		"2 bytes":      func() int { return 2 },
		"record - 1":   func() int { return MaxRecordSize - 1 },
		"random small": func() int { return rng.IntN(20) },
		"random large": func() int { return rng.IntN(3 * MaxRecordSize) },
	}
	for name, next := range chunkings {
		t.Run(name, func(t *testing.T) {
			got := replay(t, fx, stream, next)
			if len(got) != len(frames) {
				t.Fatalf("decoded %d frames, want %d", len(got), len(frames))
			}
			for i := range got {
				if !bytes.Equal(got[i], frames[i]) {
					t.Errorf("frame %d differs", i)
				}
			}
		})
	}
}

// TestLazyDecryption checks that records stay in raw until a frame is asked
// for, so the server's flood limit still sees them.
func TestLazyDecryption(t *testing.T) {
	fx := newFixture(t, 1)
	s := newSession(t, fx, 1, nil)
	for range 3 {
		if err := s.client.WriteFrame(&frame.Ping{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	s.toServer()
	record := HeaderSize + frame.HeaderSize + 1 + TagSize
	if len(s.src.buf) != 3*record {
		t.Fatalf("raw holds %d bytes, want 3 records of %d", len(s.src.buf), record)
	}
	if _, err := s.server.Peek(frame.HeaderSize); err != nil {
		t.Fatal(err)
	}
	if len(s.src.buf) != 2*record {
		t.Errorf("after one Peek raw holds %d bytes, want 2 records (%d)", len(s.src.buf), 2*record)
	}
	if _, err := s.server.Peek(frame.HeaderSize + 1); err != nil {
		t.Fatal(err)
	}
	if len(s.src.buf) != 2*record {
		t.Errorf("a Peek within the held frame read more records")
	}
	// A peek across frames works too, decrypting the next record.
	b, err := s.server.Peek(frame.HeaderSize + 1 + frame.HeaderSize)
	if err != nil || len(s.src.buf) != record || b[frame.HeaderSize+1] != frame.Version {
		t.Errorf("Peek across frames: %d bytes, %v; raw holds %d", len(b), err, len(s.src.buf))
	}
	if n, err := s.server.Discard(0); n != 2*(frame.HeaderSize+1) || err != nil {
		t.Errorf("Discard(0) = %d, %v", n, err)
	}
	if b, err := s.server.Peek(0); len(b) != frame.HeaderSize+1 || err != nil {
		t.Errorf("Peek(0) = %d bytes, %v; want the third frame", len(b), err)
	}
	if n, err := s.server.Discard(100); n != frame.HeaderSize+1 || err == nil {
		t.Errorf("Discard beyond what is held = %d, %v; want %d and an error", n, err, frame.HeaderSize+1)
	}
}

func TestPlaintextPeer(t *testing.T) {
	fx := newFixture(t, 1)
	ping := mustEncode(t, &frame.Ping{Payload: []byte("health")})
	for _, n := range []int{1, len(ping)} {
		src := &memSource{}
		src.Write(ping[:n])
		sc := NewServerConn(fx.keys, src)
		reply, err := sc.Handshake()
		if !errors.Is(err, ErrPlaintext) || reply != nil {
			t.Fatalf("%d bytes of PING: Handshake = %x, %v; want ErrPlaintext", n, reply, err)
		}
		if !bytes.Equal(src.buf, ping[:n]) {
			t.Fatalf("Handshake consumed plaintext bytes")
		}
	}
	src := &memSource{}
	src.Write(ping)
	sc := NewServerConn(fx.keys, src)
	sc.Handshake()
	var dec frame.Decoder
	if f, err := dec.Next(src); err != nil || f.Type() != frame.TypePing {
		t.Errorf("the plaintext decoder then reads %v, %v; want the PING", f, err)
	}
}

func TestUnknownKey(t *testing.T) {
	fx := newFixture(t, 2)
	stranger := testKey(t, 99)
	src := &memSource{}
	sc := NewServerConn(fx.keys, src)
	conn := &memConn{answer: func(c *memConn) {
		src.Write(c.sent.Bytes())
		reply, err := sc.Handshake()
		var uk *UnknownKeyError
		if !errors.Is(err, ErrUnknownKey) || !errors.As(err, &uk) || reply != nil {
			t.Errorf("Handshake = %x, %v; want an *UnknownKeyError and no reply", reply, err)
			return
		}
		if uk.Key != stranger.Public() || !strings.Contains(err.Error(), stranger.Public().Fingerprint()) {
			t.Errorf("error %q does not carry the stranger's key", err)
		}
	}}
	if _, err := Client(conn, stranger, fx.server.Public(), 0); !errors.Is(err, io.EOF) {
		t.Errorf("client with no answer: %v, want io.EOF", err)
	}
	if sc.Agency() != 0 || sc.Established() {
		t.Errorf("unknown key: agency %d, established %v", sc.Agency(), sc.Established())
	}
	if _, err := sc.Handshake(); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("the error does not stick: %v", err)
	}
}

func TestWrongServerKey(t *testing.T) {
	fx := newFixture(t, 1)
	src := &memSource{}
	sc := NewServerConn(fx.keys, src)
	conn := &memConn{answer: func(c *memConn) {
		src.Write(c.sent.Bytes())
		if _, err := sc.Handshake(); !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "server public key") {
			t.Errorf("Handshake with a message 1 for another server = %v, want ErrHandshake naming the key", err)
		}
	}}
	if _, err := Client(conn, fx.agencies[0], testKey(t, 77).Public(), 0); err == nil {
		t.Error("handshake with the wrong server key succeeded")
	}
}

func TestOtherPrologueFails(t *testing.T) {
	fx := newFixture(t, 1)
	agency := fx.agencies[0]
	pub := agency.Public()
	server := fx.server.Public()
	hs, err := noise.NewHandshakeState(noise.Config{CipherSuite: noiseSuite, Pattern: noise.HandshakeIK,
		Initiator: true, Prologue: []byte("loteria noise v2"),
		StaticKeypair: noise.DHKey{Private: agency[:], Public: pub[:]}, PeerStatic: server[:]})
	if err != nil {
		t.Fatal(err)
	}
	msg, _, _, err := hs.WriteMessage([]byte{KindHandshake1, 0, Handshake1Size}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := NewServerConn(fx.keys, &memSource{buf: msg})
	if _, err := sc.Handshake(); !errors.Is(err, ErrHandshake) {
		t.Errorf("message 1 with another prologue: %v, want ErrHandshake", err)
	}
}

// TestReplayedMessage1 replays a real session's bytes to a new ServerConn:
// message 1 draws a message 2, but nothing after it decrypts.
func TestReplayedMessage1(t *testing.T) {
	fx, stream, _ := recordedStream(t)
	src := &memSource{}
	src.Write(stream)
	sc := NewServerConn(fx.keys, src) // a fresh ephemeral key, as a real server has
	reply, err := sc.Handshake()
	if err != nil || len(reply) != HeaderSize+Handshake2Size {
		t.Fatalf("replayed message 1: %d-byte reply, %v", len(reply), err)
	}
	if sc.Agency() != 0 {
		t.Fatalf("Agency() = %d after message 1 alone", sc.Agency())
	}
	if _, err := decodeAll(sc); !errors.Is(err, ErrDecrypt) {
		t.Errorf("replayed transport record: %v, want ErrDecrypt", err)
	}
	if sc.Agency() != 0 {
		t.Errorf("Agency() = %d after a replay", sc.Agency())
	}
	if _, err := sc.Peek(1); !errors.Is(err, ErrDecrypt) {
		t.Errorf("the decryption failure does not stick: %v", err)
	}
}

func TestTamperedRecord(t *testing.T) {
	first := HeaderSize + Handshake1Size // the HELLO record starts here
	helloEnd := first + HeaderSize + frame.HeaderSize + 4 + TagSize
	cases := map[string]int{
		"first ciphertext byte": first + HeaderSize,
		"last tag byte":         helloEnd - 1,
		"second record body":    helloEnd + HeaderSize + 10,
	}
	for name, at := range cases {
		t.Run(name, func(t *testing.T) {
			fx, stream, _ := recordedStream(t)
			stream = bytes.Clone(stream)
			stream[at] ^= 0x01
			_, err := decodeAll(handshaken(t, fx, stream))
			if !errors.Is(err, ErrDecrypt) {
				t.Errorf("flipped bit: %v, want ErrDecrypt", err)
			}
		})
	}
}

// TestRefusedFromHeader checks that a bad record is refused from its header
// alone, with its body still to come.
func TestRefusedFromHeader(t *testing.T) {
	fx := newFixture(t, 1)
	before := map[string][]byte{
		"transport first":   {KindTransport, 0, 20},
		"message 2 first":   {KindHandshake2, 0, Handshake2Size},
		"unknown kind":      {0x7F},
		"long message 1":    {KindHandshake1, 0, Handshake1Size + 1},
		"short message 1":   {KindHandshake1, 0, Handshake1Size - 1},
		"message 1 of 64 K": {KindHandshake1, 0xFF, 0xFF},
	}
	for name, b := range before {
		t.Run(name, func(t *testing.T) {
			sc := NewServerConn(fx.keys, &memSource{buf: b})
			reply, err := sc.Handshake()
			if !errors.Is(err, ErrRecord) || reply != nil {
				t.Errorf("Handshake = %x, %v; want ErrRecord", reply, err)
			}
		})
	}
	after := map[string][]byte{
		"oversize transport": {KindTransport, (MaxBodySize + 1) >> 8, (MaxBodySize + 1) & 0xFF},
		"65535 bytes":        {KindTransport, 0xFF, 0xFF},
		"tag only":           {KindTransport, 0, TagSize},
		"empty":              {KindTransport, 0, 0},
		"second message 1":   {KindHandshake1, 0, Handshake1Size},
		"message 2":          {KindHandshake2, 0, Handshake2Size},
		"plaintext frame":    {frame.Version, byte(frame.TypePing), 0},
	}
	for name, b := range after {
		t.Run(name, func(t *testing.T) {
			s := newSession(t, fx, 1, nil)
			s.src.Write(b)
			if _, err := s.server.Peek(frame.HeaderSize); !errors.Is(err, ErrRecord) {
				t.Errorf("Peek = %v, want ErrRecord", err)
			}
			if _, err := s.server.Handshake(); !errors.Is(err, ErrRecord) {
				t.Errorf("Handshake after the failure = %v, want the same error", err)
			}
		})
	}
}

func TestRecordHoldsExactlyOneFrame(t *testing.T) {
	fx := newFixture(t, 1)
	s := newSession(t, fx, 1, nil)
	two := append(mustEncode(t, &frame.Ping{}), mustEncode(t, &frame.Ping{})...)
	// Seal refuses it, so forge it with the agency's cipher directly.
	if _, err := s.client.send.seal(nil, two); !errors.Is(err, ErrRecord) {
		t.Fatalf("seal of two frames: %v, want ErrRecord", err)
	}
	nonce, _ := s.client.send.next()
	rec := append([]byte{KindTransport, 0, byte(len(two) + TagSize)}, s.client.send.aead.Seal(nil, nonce, two, nil)...)
	s.src.Write(rec)
	if _, err := s.server.Peek(frame.HeaderSize); !errors.Is(err, ErrRecord) {
		t.Errorf("record of two frames: %v, want ErrRecord", err)
	}
	if _, err := s.client.Write(two[:5]); !errors.Is(err, ErrRecord) {
		t.Errorf("Write of a partial frame: %v, want ErrRecord", err)
	}
}

func TestOutOfTurnCalls(t *testing.T) {
	fx := newFixture(t, 1)
	sc := NewServerConn(fx.keys, &memSource{})
	if _, err := sc.Peek(4); err == nil {
		t.Error("Peek before the handshake succeeded")
	}
	if _, err := sc.Discard(4); err == nil {
		t.Error("Discard before the handshake succeeded")
	}
	if _, err := sc.Seal(nil, mustEncode(t, &frame.Ping{})); err == nil {
		t.Error("Seal before the handshake succeeded")
	}
	if _, err := sc.Handshake(); !errors.Is(err, frame.ErrIncomplete) {
		t.Errorf("Handshake with nothing received = %v, want frame.ErrIncomplete", err)
	}
	s := newSession(t, fx, 1, nil)
	if _, err := s.server.Peek(frame.MaxSize + 1); !errors.Is(err, frame.ErrTooLarge) {
		t.Errorf("Peek beyond a frame: %v", err)
	}
	if _, err := s.server.Seal(nil, make([]byte, 3)); !errors.Is(err, ErrRecord) {
		t.Errorf("Seal of 3 bytes: %v, want ErrRecord", err)
	}
}

func TestNonceExhaustion(t *testing.T) {
	fx := newFixture(t, 1)
	s := newSession(t, fx, 1, nil)
	ping := mustEncode(t, &frame.Ping{})
	s.server.send.n = math.MaxUint64 - 1
	if _, err := s.server.Seal(nil, ping); err != nil {
		t.Fatalf("last nonce: %v", err)
	}
	if _, err := s.server.Seal(nil, ping); !errors.Is(err, ErrExhausted) {
		t.Errorf("after the last nonce: %v, want ErrExhausted", err)
	}
	s.client.send.n = math.MaxUint64
	if err := s.client.WriteFrame(&frame.Ping{}); !errors.Is(err, ErrExhausted) {
		t.Errorf("client after the last nonce: %v, want ErrExhausted", err)
	}
}

// TestStaticDHsRemembersOnlyAgencies checks the cache of the server's
// static-static DH: a known agency's is kept and reused (the second
// handshake still interoperates), a stranger's never is.
func TestStaticDHsRemembersOnlyAgencies(t *testing.T) {
	fx := newFixture(t, 2)
	count := func() int {
		n := 0
		fx.keys.dhs.m.Range(func(any, any) bool { n++; return true })
		return n
	}
	for range 2 { // the second handshake takes ss from the cache
		s := newSession(t, fx, 2, nil)
		hello := mustEncode(t, &frame.Hello{Agency: 2})
		if _, err := s.client.Write(hello); err != nil {
			t.Fatal(err)
		}
		s.toServer()
		got, err := decodeAll(s.server)
		if !errors.Is(err, frame.ErrIncomplete) || len(got) != 1 || !bytes.Equal(got[0], hello) || s.server.Agency() != 2 {
			t.Fatalf("HELLO: %d frames, %v, agency %d", len(got), err, s.server.Agency())
		}
	}
	if n := count(); n != 1 {
		t.Fatalf("%d static DHs remembered after two handshakes of one agency, want 1", n)
	}
	stranger := testKey(t, 99)
	src := &memSource{}
	sc := NewServerConn(fx.keys, src)
	conn := &memConn{answer: func(c *memConn) {
		src.Write(c.sent.Bytes())
		_, _ = sc.Handshake()
	}}
	_, _ = Client(conn, stranger, fx.server.Public(), 0)
	if n := count(); n != 1 {
		t.Fatalf("a stranger's handshake grew the cache to %d", n)
	}
}

// TestReplayedReorderedOrDroppedRecord rearranges the transport records of
// a recorded session: a record sent twice, two records swapped, a record
// left out. The frames before the change come out as sent and the first
// record out of place fails to decrypt, since each direction's nonce is a
// counter the records never carry.
func TestReplayedReorderedOrDroppedRecord(t *testing.T) {
	fx, stream, frames := recordedStream(t)
	if len(frames) < 3 {
		t.Fatalf("the recorded session has %d frames, want at least 3", len(frames))
	}
	hs, rest := stream[:HeaderSize+Handshake1Size], stream[HeaderSize+Handshake1Size:]
	var recs [][]byte
	for len(rest) > 0 {
		n := HeaderSize + int(binary.BigEndian.Uint16(rest[1:3]))
		recs, rest = append(recs, rest[:n]), rest[n:]
	}
	cases := map[string]struct {
		order []int
		good  int // frames that must come out before the failure
	}{
		"second record replayed": {[]int{0, 1, 1, 2}, 2},
		"two records swapped":    {[]int{0, 2, 1}, 1},
		"second record dropped":  {[]int{0, 2}, 1},
		"first record replayed":  {[]int{0, 0, 1}, 1},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rearranged := bytes.Clone(hs)
			for _, i := range c.order {
				rearranged = append(rearranged, recs[i]...)
			}
			got, err := decodeAll(handshaken(t, fx, rearranged))
			if !errors.Is(err, ErrDecrypt) {
				t.Errorf("records in order %v: %v, want ErrDecrypt", c.order, err)
			}
			if len(got) != c.good {
				t.Fatalf("%d frames came out before the failure, want %d", len(got), c.good)
			}
			for i := range got {
				if !bytes.Equal(got[i], frames[i]) {
					t.Errorf("frame %d came out changed", i)
				}
			}
		})
	}
}
