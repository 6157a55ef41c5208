package frame_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
)

// decodeOne decodes b, which must hold exactly one frame, through a Decoder.
func decodeOne(t *testing.T, dec *frame.Decoder, b []byte) (frame.Frame, error) {
	t.Helper()
	src := newGradualSource(b, func() int { return len(b) })
	src.reveal()
	f, err := dec.Next(src)
	if f != nil && src.buffered() != 0 {
		t.Fatalf("%d bytes left after decoding one frame", src.buffered())
	}
	return f, err
}

func TestRoundTrip(t *testing.T) {
	maxName := strings.Repeat("x", frame.MaxNameLen)
	maxNameUTF8 := repeatTo("ñ", frame.MaxNameLen)  // 2-byte runes
	maxName4Byte := repeatTo("𝄞", frame.MaxNameLen) // 4-byte runes
	boundaryBets := []frame.Bet{
		{FirstName: "A", LastName: "B", Document: "0", Birthdate: frame.MinDate, Number: 0},
		{FirstName: maxName, LastName: maxNameUTF8, Document: "0000000000", Birthdate: 20000229, Number: frame.MaxNumber},
		{FirstName: maxName4Byte, LastName: "Núñez", Document: "00000042", Birthdate: testToday, Number: 1},
		{FirstName: "Ana", LastName: "Peña", Document: "9999999999", Birthdate: 19991231, Number: 7574},
	}
	// minimal valid bets are 12 bytes; 681 of them fill a frame to 8186 bytes,
	// and six one-byte-longer first names make it exactly MaxSize.
	fullBets := make([]frame.Bet, 681)
	for i := range fullBets {
		fullBets[i] = frame.Bet{FirstName: "a", LastName: "b", Document: "1", Birthdate: 20010911, Number: uint16(i)}
	}
	for i := range 6 {
		fullBets[i].FirstName = "ab"
	}
	manyDocs := make([]string, 100)
	for i := range manyDocs {
		manyDocs[i] = strings.Repeat("0", i%10) + "7"
	}
	maxPing := bytes.Repeat([]byte{0, 0xFF, 'x'}, frame.MaxPayload/3+1)[:frame.MaxPayload]

	tests := []struct {
		name string
		f    frame.Frame
		size int // expected encoded size; 0 means do not check
	}{
		{"hello/agency_0", &frame.Hello{Agency: 0}, 8},
		{"hello/agency_3", &frame.Hello{Agency: 3}, 8},
		{"hello/agency_max", &frame.Hello{Agency: math.MaxUint32}, 8},
		{"welcome/zero", &frame.Welcome{}, 57},
		{"welcome/held_max_finished", &frame.Welcome{Held: math.MaxUint64, Finished: true, Window: math.MaxUint16,
			MaxFrame: frame.MaxSize, ReadTimeout: math.MaxUint32 * time.Millisecond, PingInterval: time.Minute, Chain: hashOf(7)}, 57},
		{"bets/empty_batch", &frame.Bets{First: 0, Bets: []frame.Bet{}}, 14},
		{"bets/one", &frame.Bets{First: 7, Bets: []frame.Bet{validBet()}}, 0},
		{"bets/boundaries", &frame.Bets{First: math.MaxUint64, Bets: boundaryBets}, 0},
		{"bets/realistic_100", &frame.Bets{First: 1000, Bets: realisticBets(100)}, 0},
		{"bets/exactly_max_size", &frame.Bets{First: 1, Bets: fullBets}, frame.MaxSize},
		{"ack/zero", &frame.Ack{}, 54},
		{"ack/max", &frame.Ack{First: math.MaxUint64, Count: math.MaxUint16, Held: math.MaxUint64, Chain: hashOf(0xFF)}, 54},
		{"reject/invalid_bet", &frame.Reject{Code: frame.CodeInvalidBet, Index: 251, Reason: "bet 1: field birthdate \"2023-02-30\" is not a calendar date"}, 0},
		{"reject/empty_reason", &frame.Reject{Code: frame.CodeIndexGap, Index: math.MaxUint64}, 16},
		{"reject/max_reason", &frame.Reject{Code: frame.CodeBusy, Reason: strings.Repeat("r", frame.MaxReasonLen)}, 16 + frame.MaxReasonLen},
		{"reject/utf8_reason", &frame.Reject{Code: frame.CodeInvalidBet, Reason: "apellido «Núñez» inválido"}, 0},
		{"finished/zero", &frame.Finished{}, 12},
		{"finished/max", &frame.Finished{Total: math.MaxUint64}, 12},
		{"query_winners", &frame.QueryWinners{}, 4},
		{"winners/empty_last", &frame.Winners{Last: true, Documents: []string{}}, 7},
		{"winners/empty_not_last", &frame.Winners{}, 7},
		{"winners/leading_zeros", &frame.Winners{Last: true, Documents: []string{"00000042", "0", "0000000000", "30904465"}}, 0},
		{"winners/many", &frame.Winners{Documents: manyDocs}, 0},
		{"not_ready/zero", &frame.NotReady{}, 16},
		{"not_ready/typical", &frame.NotReady{RetryAfter: 1500 * time.Millisecond, Finished: 3, Agencies: 5}, 16},
		{"not_ready/max", &frame.NotReady{RetryAfter: math.MaxUint32 * time.Millisecond, Finished: math.MaxUint32, Agencies: math.MaxUint32}, 16},
		{"ping/empty", &frame.Ping{}, 4},
		{"ping/binary", &frame.Ping{Payload: []byte{0, 1, 0xFE, 0xFF}}, 8},
		{"ping/max_payload", &frame.Ping{Payload: maxPing}, frame.MaxSize},
		{"pong/empty", &frame.Pong{Payload: []byte{}}, 4},
		{"pong/max_payload", &frame.Pong{Payload: maxPing}, frame.MaxSize},
		{"error/flood", &frame.Error{Code: frame.CodeFlood, Reason: "more than 65536 bytes while a batch was in flight"}, 0},
		{"error/empty_reason", &frame.Error{Code: frame.CodeTimeout}, 8},
		{"error/unknown_code", &frame.Error{Code: 0xFFFF, Reason: "from the future"}, 0},
		{"receipt/zero", &frame.Receipt{}, 144},
		{"receipt/full", &frame.Receipt{Lottery: hashOf(1), Agency: math.MaxUint32, Bets: math.MaxUint64, Chain: hashOf(2), Signature: signatureOf(3)}, 144},
		{"commitment/no_proof", &frame.Commitment{Lottery: hashOf(1), Agencies: 1, Root: hashOf(2), Signature: signatureOf(3), Proof: []frame.Hash{}}, 137},
		{"commitment/max_proof", &frame.Commitment{Lottery: hashOf(1), Agencies: math.MaxUint32, Root: hashOf(2), Signature: signatureOf(3), Proof: proofOf(frame.MaxProof)}, 137 + 32*frame.MaxProof},
	}
	dec := &frame.Decoder{Today: fixedToday}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustEncode(t, tt.f)
			if tt.size != 0 && len(b) != tt.size {
				t.Errorf("encoded size = %d, want %d", len(b), tt.size)
			}
			h, err := frame.ParseHeader(b, frame.MaxSize)
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if h.Version != frame.Version || h.Type != tt.f.Type() || h.Size() != len(b) {
				t.Errorf("header = %+v for %d bytes of %s", h, len(b), tt.f.Type())
			}
			got, err := decodeOne(t, dec, b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !equalFrames(got, tt.f) {
				t.Fatalf("decoded %+v, want %+v", got, tt.f)
			}
			if again := mustEncode(t, got); !bytes.Equal(again, b) {
				t.Errorf("re-encoding the decoded frame changed its bytes")
			}
			viaParse, err := frame.Parse(h.Type, b[frame.HeaderSize:], testToday)
			if err != nil || !equalFrames(viaParse, tt.f) {
				t.Errorf("Parse = %+v, %v; want %+v", viaParse, err, tt.f)
			}
		})
	}
}

func TestDecodedFrameOwnsItsBytes(t *testing.T) {
	stream := concat(t,
		&frame.Bets{First: 3, Bets: realisticBets(5)},
		&frame.Winners{Last: true, Documents: []string{"00000042"}},
		&frame.Ping{Payload: []byte("keep me")},
		&frame.Error{Code: frame.CodeFlood, Reason: "keep me too"})
	payloadStart := frame.HeaderSize
	h, _ := frame.ParseHeader(stream, frame.MaxSize)
	payload := append([]byte(nil), stream[payloadStart:h.Size()]...)
	parsed, err := frame.Parse(frame.TypeBets, payload, testToday)
	if err != nil {
		t.Fatal(err)
	}
	want := &frame.Bets{First: 3, Bets: realisticBets(5)}
	clear(payload)
	if !equalFrames(parsed, want) {
		t.Fatalf("Parse result changed when its payload was overwritten: %+v", parsed)
	}
	// gradualSource scribbles over discarded bytes, so frames that point into
	// the source's buffer would change before we compare them.
	events := decodeAll(t, &frame.Decoder{Today: fixedToday}, stream, func() int { return len(stream) })
	wantFrames := []frame.Frame{want, &frame.Winners{Last: true, Documents: []string{"00000042"}},
		&frame.Ping{Payload: []byte("keep me")}, &frame.Error{Code: frame.CodeFlood, Reason: "keep me too"}}
	if len(events) != len(wantFrames) {
		t.Fatalf("got %d events, want %d: %v", len(events), len(wantFrames), events)
	}
	for i, e := range events {
		if e.err != "" || !equalFrames(e.frame, wantFrames[i]) {
			t.Errorf("event %d = %v, want %+v", i, e, wantFrames[i])
		}
	}
}

func TestEncodeRefusesOversizedFrames(t *testing.T) {
	over := make([]frame.Bet, 682) // 14 + 682*12 = 8198 bytes
	for i := range over {
		over[i] = frame.Bet{FirstName: "a", LastName: "b", Document: "1", Birthdate: 20010911}
	}
	tests := []struct {
		name string
		f    frame.Frame
	}{
		{"ping_one_byte_over", &frame.Ping{Payload: make([]byte, frame.MaxPayload+1)}},
		{"pong_huge", &frame.Pong{Payload: make([]byte, 1<<20)}},
		{"bets_682_minimal", &frame.Bets{Bets: over}},
		{"bets_realistic_300", &frame.Bets{Bets: realisticBets(300)}},
		{"winners_1000_docs", &frame.Winners{Documents: strings.Fields(strings.Repeat("1234567890 ", 1000))}},
		{"bets_65536_wraps_count", &frame.Bets{Bets: make([]frame.Bet, 1<<16)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("previous frames")
			dst := append(make([]byte, 0, 64), prefix...)
			out, err := frame.Append(dst, tt.f)
			if !errors.Is(err, frame.ErrTooLarge) {
				t.Fatalf("Append err = %v, want ErrTooLarge", err)
			}
			if !bytes.Equal(out, prefix) {
				t.Errorf("Append left %d bytes in dst, want the %d it was given", len(out), len(prefix))
			}
			if b, err := frame.Encode(tt.f); !errors.Is(err, frame.ErrTooLarge) || len(b) != 0 {
				t.Errorf("Encode = %d bytes, %v; want nothing and ErrTooLarge", len(b), err)
			}
			var w bytes.Buffer
			if err := frame.Write(&w, tt.f); !errors.Is(err, frame.ErrTooLarge) || w.Len() != 0 {
				t.Errorf("Write wrote %d bytes, err %v; want nothing and ErrTooLarge", w.Len(), err)
			}
		})
	}
}

func TestEncodeClampsAndCuts(t *testing.T) {
	t.Run("not_ready_retry_after", func(t *testing.T) {
		for _, tt := range []struct {
			in   time.Duration
			want uint32
		}{
			{-time.Second, 0},
			{999 * time.Microsecond, 0},
			{1500*time.Millisecond + 999*time.Microsecond, 1500},
			{math.MaxUint32 * time.Millisecond, math.MaxUint32},
			{(math.MaxUint32 + 1) * time.Millisecond, math.MaxUint32},
			{math.MaxInt64, math.MaxUint32},
		} {
			b := mustEncode(t, &frame.NotReady{RetryAfter: tt.in})
			if got := binary.BigEndian.Uint32(b[4:]); got != tt.want {
				t.Errorf("RetryAfter %v encodes as %d ms, want %d", tt.in, got, tt.want)
			}
		}
	})
	t.Run("reason_longer_than_max", func(t *testing.T) {
		long := strings.Repeat("z", 3*frame.MaxReasonLen)
		for _, f := range []frame.Frame{&frame.Reject{Reason: long}, &frame.Error{Reason: long}} {
			b := mustEncode(t, f)
			got, err := frame.Parse(f.Type(), b[frame.HeaderSize:], testToday)
			if err != nil {
				t.Fatalf("%s with a long reason does not decode: %v", f.Type(), err)
			}
			var reason string
			switch g := got.(type) {
			case *frame.Reject:
				reason = g.Reason
			case *frame.Error:
				reason = g.Reason
			}
			if reason != long[:frame.MaxReasonLen] {
				t.Errorf("%s reason decoded with %d bytes, want the first %d", f.Type(), len(reason), frame.MaxReasonLen)
			}
		}
	})
	t.Run("reason_cut_inside_a_rune", func(t *testing.T) {
		// 1023 ASCII bytes then a 2-byte rune: a byte cut would split the rune.
		reason := strings.Repeat("a", frame.MaxReasonLen-1) + "ñ and more"
		b := mustEncode(t, &frame.Error{Code: frame.CodeFlood, Reason: reason})
		got, err := frame.Parse(frame.TypeError, b[frame.HeaderSize:], testToday)
		if err != nil {
			t.Fatal(err)
		}
		r := got.(*frame.Error).Reason
		if len(r) > frame.MaxReasonLen || !strings.HasPrefix(reason, r) {
			t.Errorf("decoded reason has %d bytes and is not a prefix of the original", len(r))
		}
	})
}

func TestAppendToExistingBuffer(t *testing.T) {
	frames := []frame.Frame{&frame.Hello{Agency: 1}, &frame.Bets{First: 0, Bets: realisticBets(3)}, &frame.Finished{Total: 3}}
	stream := concat(t, frames...)
	var want []byte
	for _, f := range frames {
		want = append(want, mustEncode(t, f)...)
	}
	if !bytes.Equal(stream, want) {
		t.Fatal("Append to a non-empty buffer differs from concatenated Encode results")
	}
	var w bytes.Buffer
	for _, f := range frames {
		if err := frame.Write(&w, f); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(w.Bytes(), want) {
		t.Fatal("Write output differs from Encode")
	}
}

// countingWriter records the size of every Write call.
type countingWriter struct{ writes []int }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, len(p))
	return len(p), nil
}

func TestWriteIsOneCall(t *testing.T) {
	var w countingWriter
	f := &frame.Bets{First: 9, Bets: realisticBets(50)}
	if err := frame.Write(&w, f); err != nil {
		t.Fatal(err)
	}
	if len(w.writes) != 1 || w.writes[0] != frame.BetsFrameSize(f.Bets) {
		t.Fatalf("Write made calls of %v bytes, want one of %d", w.writes, frame.BetsFrameSize(f.Bets))
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func TestWriteReturnsWriterError(t *testing.T) {
	boom := errors.New("connection reset")
	if err := frame.Write(failingWriter{boom}, &frame.Ping{}); !errors.Is(err, boom) {
		t.Fatalf("Write err = %v, want %v", err, boom)
	}
}
