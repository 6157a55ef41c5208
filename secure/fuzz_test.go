package secure

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/tp0/loteria/frame"
)

// feed gives stream to src in chunks whose sizes cycle through sizes (each
// byte plus one; all at once when sizes is empty), calling step after each.
func feed(src *memSource, stream, sizes []byte, step func()) {
	for i := 0; len(stream) > 0; i++ {
		n := len(stream)
		if len(sizes) > 0 {
			n = min(n, int(sizes[i%len(sizes)])+1)
		}
		src.Write(stream[:n])
		stream = stream[n:]
		step()
	}
}

// drain decodes frames from src until one does not come, and returns them.
func drain(src frame.Source) ([]frame.Frame, error) {
	var dec frame.Decoder
	var out []frame.Frame
	for {
		f, err := dec.Next(src)
		var fe *frame.FieldError
		switch {
		case err == nil:
			out = append(out, f)
		case errors.As(err, &fe):
			out = append(out, f) // the frame was consumed; the stream goes on
		default:
			return out, err
		}
	}
}

// smallSession records a short session, so that the fuzzers' inputs stay
// small enough to mutate and minimize quickly.
func smallSession(f *testing.F) (*fixture, []byte, [][]byte) {
	bet := frame.Bet{FirstName: "Ana", LastName: "Paz", Document: "12345678",
		Birthdate: frame.NewDate(1990, 1, 2), Number: 42}
	return recordFrames(f, [][]byte{
		mustEncode(f, &frame.Hello{Agency: 2}),
		mustEncode(f, &frame.Bets{First: 0, Bets: []frame.Bet{bet, bet}}),
		mustEncode(f, &frame.Ping{Payload: []byte("ping")}),
		mustEncode(f, &frame.Finished{Total: 2}),
	})
}

// FuzzServerConn feeds arbitrary bytes, in arbitrary chunks, to a fresh
// ServerConn: it must never panic, never consume plaintext, and never take
// the peer for an agency, since no one but the agency can make a transport
// record that decrypts.
func FuzzServerConn(f *testing.F) {
	fx, stream, _ := smallSession(f)
	msg1 := stream[:HeaderSize+Handshake1Size]
	f.Add(stream, []byte{})
	f.Add(stream, []byte{0})
	f.Add(msg1, []byte{2, 40})
	f.Add(append(bytes.Clone(msg1), msg1...), []byte{})
	f.Add(mustEncode(f, &frame.Ping{Payload: []byte("probe")}), []byte{})
	f.Add([]byte{KindHandshake1, 0xFF, 0xFF}, []byte{})
	f.Add([]byte{KindTransport, 0, 20}, []byte{})
	f.Add(append(bytes.Clone(msg1), KindTransport, 0x20, 0x10), []byte{})
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		src := &memSource{}
		sc := NewServerConn(fx.keys, src)
		sc.rand = seeded(serverSeed + 1) // not the recording's: an attacker cannot know it
		var final error
		feed(src, stream, sizes, func() {
			if !sc.Established() {
				_, err := sc.Handshake()
				switch {
				case errors.Is(err, ErrPlaintext):
					if src.buf[0] != frame.Version || src.discarded != 0 {
						t.Fatal("ErrPlaintext without a plaintext first byte, or with bytes consumed")
					}
					return
				case errors.Is(err, frame.ErrIncomplete):
					return
				case err != nil:
					if final != nil && err.Error() != final.Error() {
						t.Fatalf("error changed from %v to %v", final, err)
					}
					final = err
					return
				}
			}
			drain(sc)
		})
		if sc.Agency() != 0 {
			t.Fatalf("arbitrary bytes were taken for agency %d", sc.Agency())
		}
	})
}

// FuzzOpen feeds arbitrary bytes, in arbitrary chunks, as transport records
// to a ServerConn after a real handshake. Its seeds are records of that very
// session, so they decrypt; whatever the fuzzer changes, a frame that comes
// out must be the one the agency sent at that place.
func FuzzOpen(f *testing.F) {
	fx, stream, frames := smallSession(f)
	records := stream[HeaderSize+Handshake1Size:]
	f.Add(records, []byte{})
	f.Add(records, []byte{0})
	f.Add(records, []byte{200, 7, 255})
	f.Add(records[:30], []byte{})
	f.Add([]byte{KindTransport, 0xFF, 0xFF}, []byte{})
	base := newSession(f, fx, 2, seeded(serverSeed))
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		// A copy of the session's server side just after the handshake,
		// cheaper than a handshake per input.
		src := &memSource{}
		sc := &ServerConn{keys: fx.keys, raw: src, done: true, agency: base.server.agency,
			recv: &cipherState{aead: base.server.recv.aead}, send: &cipherState{aead: base.server.send.aead}}
		var got []frame.Frame
		feed(src, stream, sizes, func() {
			out, _ := drain(sc)
			got = append(got, out...)
		})
		for i, g := range got {
			if i >= len(frames) || !bytes.Equal(mustEncode(t, g), frames[i]) {
				t.Fatalf("frame %d decrypted but is not what the agency sent", i)
			}
		}
		// A frame out means its record decrypted, which proves the key; a
		// record can also decrypt and hold no valid frame (the decoder then
		// refuses it), but it can never prove another agency.
		if a := sc.Agency(); (len(got) > 0 && a != 2) || (a != 0 && a != 2) {
			t.Fatalf("%d frames decoded, Agency() = %d", len(got), a)
		}
	})
}

// FuzzRoundTrip seals PING frames cut from payload and opens them from
// chunks of arbitrary sizes: the same frames must come out.
func FuzzRoundTrip(f *testing.F) {
	fx := newFixture(f, 1)
	f.Add([]byte("hello"), []byte{3, 1, 4})
	f.Add(bytes.Repeat([]byte{0xE3}, 600), []byte{5, 255})
	f.Fuzz(func(t *testing.T, payload, sizes []byte) {
		s := newSession(t, fx, 1, nil)
		var sent [][]byte
		for i := 0; len(payload) > 0 || i == 0; i++ {
			n := min(len(payload), frame.MaxPayload)
			if len(sizes) > 0 {
				n = min(n, (int(sizes[i%len(sizes)])+1)*37)
			}
			ping := mustEncode(t, &frame.Ping{Payload: payload[:n]})
			payload = payload[n:]
			if err := s.client.WriteFrame(mustParse(t, ping)); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, ping)
		}
		var got []frame.Frame
		feed(s.src, s.conn.sent.Bytes()[s.fed:], sizes, func() {
			out, err := drain(s.server)
			if !errors.Is(err, frame.ErrIncomplete) {
				t.Fatalf("decode: %v", err)
			}
			got = append(got, out...)
		})
		if len(got) != len(sent) {
			t.Fatalf("%d frames out, %d in", len(got), len(sent))
		}
		for i := range got {
			if !bytes.Equal(mustEncode(t, got[i]), sent[i]) {
				t.Fatalf("frame %d differs", i)
			}
		}
	})
}

// chunked hands out its bytes in pieces whose sizes cycle through sizes
// (each byte plus one), as a network would, then io.EOF.
type chunked struct {
	data, sizes []byte
	i           int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n = min(n, int(c.sizes[c.i%len(c.sizes)])+1)
		c.i++
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// FuzzClientConn gives an agency's ClientConn, after a real handshake,
// whatever a hostile server or the network might send, in arbitrary pieces:
// it must never panic, never hand out more than one record's worth of
// buffer, and frames must come out only from records the server sealed.
func FuzzClientConn(f *testing.F) {
	fx := newFixture(f, 1)
	good := newSession(f, fx, 1, nil)
	var sealed []byte
	for _, fr := range [][]byte{mustEncode(f, &frame.Ping{Payload: []byte("abc")}),
		mustEncode(f, &frame.Winners{Last: true, Documents: []string{"30904465"}})} {
		rec, err := good.server.Seal(nil, fr)
		if err != nil {
			f.Fatal(err)
		}
		sealed = append(sealed, rec...)
	}
	f.Add(sealed, []byte{})
	f.Add(sealed, []byte{0, 2, 200})
	flipped := bytes.Clone(sealed)
	flipped[HeaderSize+3] ^= 1
	f.Add(flipped, []byte{7})
	f.Add([]byte{KindTransport, 0xFF, 0xFF, 1, 2, 3}, []byte{})
	f.Add([]byte{KindTransport, 0, 0}, []byte{1})
	f.Add(sealed[:len(sealed)-5], []byte{3})
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		s := newSession(t, fx, 1, nil)
		s.client.r.r = &chunked{data: stream, sizes: sizes}
		out, err := drain(s.client)
		if err == nil {
			t.Fatal("the stream ended without an error")
		}
		if cap(s.client.r.buf) > MaxRecordSize {
			t.Fatalf("read buffer grew to %d bytes", cap(s.client.r.buf))
		}
		// This session's server sealed nothing: any frame out of it would
		// have to come from a forged record.
		if len(out) > 0 {
			t.Fatalf("%d frames decoded from records this session's server never sealed", len(out))
		}
	})
}
