package secure

import (
	"bytes"
	"errors"
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
