package frame_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/tp0/loteria/frame"
)

// sessionFrames is a conversation's worth of frames of every type, with one
// batch that carries an invalid bet in the middle.
func sessionFrames() (frames []frame.Frame, badBatch int) {
	bad := realisticBets(4)
	bad[2].Birthdate = 20230230
	frames = []frame.Frame{
		&frame.Ping{Payload: []byte("before hello")},
		&frame.Pong{Payload: []byte("before hello")},
		&frame.Hello{Agency: 3},
		&frame.Welcome{Held: 0},
		&frame.Bets{First: 0, Bets: realisticBets(100)},
		&frame.Ack{First: 0, Count: 100},
		&frame.Bets{First: 100, Bets: bad},
		&frame.Reject{Code: frame.CodeInvalidBet, Index: 102, Reason: "bet 2: field birthdate \"2023-02-30\" is not a calendar date"},
		&frame.Bets{First: 100, Bets: realisticBets(60)},
		&frame.Ack{First: 100, Count: 60},
		&frame.Finished{Total: 160},
		&frame.NotReady{RetryAfter: 250_000_000, Finished: 1, Agencies: 5},
		&frame.QueryWinners{},
		&frame.Winners{Documents: []string{"00000042", "30904465"}},
		&frame.Winners{Last: true, Documents: []string{"0000000001"}},
		&frame.Ping{Payload: bytes.Repeat([]byte{0xFF}, frame.MaxPayload)},
		&frame.Error{Code: frame.CodeShuttingDown, Reason: "draining"},
	}
	return frames, 6
}

func TestIncrementalDecodingGivesSameFrames(t *testing.T) {
	frames, badBatch := sessionFrames()
	stream := concat(t, frames...)
	dec := &frame.Decoder{Today: fixedToday}
	var reference []event
	for _, s := range strategies {
		t.Run(s.name, func(t *testing.T) {
			events := decodeAll(t, dec, stream, s.make(len(stream)))
			if len(events) != len(frames) {
				t.Fatalf("got %d events, want %d: %v", len(events), len(frames), events)
			}
			for i, e := range events {
				if i == badBatch {
					if !strings.Contains(e.err, "birthdate") || e.frame.(*frame.Bets).First != 100 {
						t.Errorf("event %d = %v, want the birthdate error of the batch at 100", i, e)
					}
					continue
				}
				if e.err != "" || !equalFrames(e.frame, frames[i]) {
					t.Errorf("event %d = %v, want %+v", i, e, frames[i])
				}
			}
			if reference == nil {
				reference = events
			} else if !reflect.DeepEqual(events, reference) {
				t.Errorf("events differ from strategy %s", strategies[0].name)
			}
		})
	}
}

func TestDecoderKeepsPartialFrame(t *testing.T) {
	b := mustEncode(t, &frame.Bets{First: 1, Bets: realisticBets(20)})
	src := newGradualSource(b, func() int { return 1 })
	dec := &frame.Decoder{Today: fixedToday}
	for src.reveal() {
		f, err := dec.Next(src)
		if src.end < len(b) {
			if !errors.Is(err, frame.ErrIncomplete) || f != nil || src.start != 0 {
				t.Fatalf("with %d of %d bytes: %v, %v, %d consumed", src.end, len(b), f, err, src.start)
			}
			continue
		}
		if err != nil || src.start != len(b) {
			t.Fatalf("with all bytes: %v, consumed %d of %d", err, src.start, len(b))
		}
	}
	if _, err := dec.Next(src); !errors.Is(err, frame.ErrIncomplete) {
		t.Fatalf("empty source: err = %v, want ErrIncomplete", err)
	}
}

func TestHeaderErrors(t *testing.T) {
	const v = frame.Version
	tests := []struct {
		name    string
		header  []byte
		maxSize int
		want    error
	}{
		{"version_0", []byte{0, 1, 0, 4}, 0, frame.ErrVersion},
		{"version_1", []byte{1, 1, 0, 4}, 0, frame.ErrVersion},
		{"version_3", []byte{3, 1, 0, 4}, 0, frame.ErrVersion},
		{"version_ff", []byte{0xFF, 0xFF, 0xFF, 0xFF}, 0, frame.ErrVersion},
		{"type_0", []byte{v, 0, 0, 0}, 0, frame.ErrUnknownType},
		{"type_0f", []byte{v, 0x0F, 0, 0}, 0, frame.ErrUnknownType},
		{"type_ff", []byte{v, 0xFF, 0, 0}, 0, frame.ErrUnknownType},
		{"one_byte_over_max", []byte{v, byte(frame.TypePing), 0x1F, 0xFD}, 0, frame.ErrTooLarge},
		{"length_65535", []byte{v, byte(frame.TypeBets), 0xFF, 0xFF}, 0, frame.ErrTooLarge},
		{"over_decoder_max", []byte{v, byte(frame.TypePing), 0, 97}, 100, frame.ErrTooLarge},
		{"over_max_when_decoder_max_too_big", []byte{v, byte(frame.TypePing), 0x1F, 0xFD}, 1 << 20, frame.ErrTooLarge},
		{"over_max_when_decoder_max_negative", []byte{v, byte(frame.TypePing), 0x1F, 0xFD}, -1, frame.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Only the header is available: the decoder must decide from it
			// alone, without waiting for a payload that may never come.
			src := newGradualSource(tt.header, func() int { return frame.HeaderSize })
			src.reveal()
			f, err := (&frame.Decoder{MaxSize: tt.maxSize}).Next(src)
			if !errors.Is(err, tt.want) || f != nil {
				t.Fatalf("Next = %v, %v; want %v", f, err, tt.want)
			}
			if src.start != 0 {
				t.Errorf("a rejected header consumed %d bytes", src.start)
			}
			limit := tt.maxSize
			if limit <= 0 {
				limit = frame.MaxSize
			}
			if _, err := frame.ParseHeader(tt.header, limit); !errors.Is(err, tt.want) {
				t.Errorf("ParseHeader(maxSize %d) err = %v, want %v", limit, err, tt.want)
			}
		})
	}
}

func TestDecoderMaxSize(t *testing.T) {
	small := mustEncode(t, &frame.Ping{Payload: make([]byte, 96)}) // exactly 100 bytes
	dec := &frame.Decoder{MaxSize: 100}
	if _, err := decodeOne(t, dec, small); err != nil {
		t.Fatalf("frame of exactly MaxSize 100: %v", err)
	}
	if _, err := decodeOne(t, dec, mustEncode(t, &frame.Ping{Payload: make([]byte, 97)})); !errors.Is(err, frame.ErrTooLarge) {
		t.Fatalf("frame of 101 bytes with MaxSize 100: err = %v, want ErrTooLarge", err)
	}
	full := mustEncode(t, &frame.Pong{Payload: make([]byte, frame.MaxPayload)})
	for _, m := range []int{0, -5, frame.MaxSize, frame.MaxSize + 1, 1 << 30} {
		if _, err := decodeOne(t, &frame.Decoder{MaxSize: m}, full); err != nil {
			t.Errorf("MaxSize %d rejects a frame of exactly frame.MaxSize: %v", m, err)
		}
	}
}

func TestParseHeader(t *testing.T) {
	h, err := frame.ParseHeader([]byte{frame.Version, 3, 0x01, 0x02, 0xEE}, frame.MaxSize)
	if err != nil || h != (frame.Header{Version: frame.Version, Type: frame.TypeBets, Length: 0x0102}) || h.Size() != 0x0106 {
		t.Fatalf("ParseHeader = %+v, %v", h, err)
	}
	for n := range frame.HeaderSize {
		if _, err := frame.ParseHeader([]byte{frame.Version, 3, 0, 0}[:n], frame.MaxSize); !errors.Is(err, frame.ErrIncomplete) {
			t.Errorf("ParseHeader of %d bytes: err = %v, want ErrIncomplete", n, err)
		}
	}
	if _, err := frame.ParseHeader([]byte{frame.Version, byte(frame.TypeQueryWinners), 0, 0}, frame.HeaderSize); err != nil {
		t.Errorf("empty frame with maxSize HeaderSize: %v", err)
	}
}

// payloadOf returns the payload of a valid encoding of f.
func payloadOf(t *testing.T, f frame.Frame) []byte {
	return mustEncode(t, f)[frame.HeaderSize:]
}

func TestParseTruncatedAndTrailing(t *testing.T) {
	frames := []frame.Frame{
		&frame.Hello{Agency: 3},
		&frame.Welcome{Held: 10, Finished: true},
		&frame.Bets{First: 1, Bets: realisticBets(3)},
		&frame.Ack{First: 1, Count: 3},
		&frame.Reject{Code: frame.CodeIndexGap, Index: 9, Reason: "gap"},
		&frame.Finished{Total: 4},
		&frame.QueryWinners{},
		&frame.Winners{Last: true, Documents: []string{"1", "00000042"}},
		&frame.NotReady{RetryAfter: 1e9, Finished: 1, Agencies: 2},
		&frame.Error{Code: frame.CodeTimeout, Reason: "idle"},
		&frame.Receipt{Lottery: hashOf(1), Agency: 2, Bets: 3, Chain: hashOf(4), Signature: signatureOf(5)},
		&frame.Commitment{Lottery: hashOf(1), Agencies: 5, Root: hashOf(2), Signature: signatureOf(3), Proof: proofOf(3)},
	}
	for _, f := range frames {
		t.Run(f.Type().String(), func(t *testing.T) {
			p := payloadOf(t, f)
			for n := range len(p) {
				if g, err := frame.Parse(f.Type(), p[:n], testToday); !errors.Is(err, frame.ErrMalformed) || g != nil {
					t.Errorf("payload cut to %d of %d bytes: %v, %v; want ErrMalformed", n, len(p), g, err)
				}
			}
			for _, extra := range [][]byte{{0}, {1, 2, 3}} {
				long := append(append([]byte(nil), p...), extra...)
				if g, err := frame.Parse(f.Type(), long, testToday); !errors.Is(err, frame.ErrMalformed) || g != nil {
					t.Errorf("%d trailing bytes: %v, %v; want ErrMalformed", len(extra), g, err)
				} else if !strings.Contains(err.Error(), "trailing") {
					t.Errorf("trailing-bytes error %q does not say so", err)
				}
			}
		})
	}
	// PING and PONG payloads are opaque: any length up to the limit is whole.
	for _, ty := range []frame.Type{frame.TypePing, frame.TypePong} {
		for _, n := range []int{0, 1, frame.MaxPayload} {
			if _, err := frame.Parse(ty, make([]byte, n), testToday); err != nil {
				t.Errorf("%s with %d payload bytes: %v", ty, n, err)
			}
		}
	}
}

func TestTruncatedFrameOverDecoder(t *testing.T) {
	// A header whose length is one byte short of the bytes the payload needs:
	// the frame is whole as far as the stream goes, but its payload is cut.
	p := payloadOf(t, &frame.Ack{First: 1, Count: 2})
	b := rawFrame(frame.Version, frame.TypeAck, p[:len(p)-1])
	if _, err := decodeOne(t, &frame.Decoder{}, b); !errors.Is(err, frame.ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

func TestParseRejectsBadPayloads(t *testing.T) {
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	bets := func(first uint64, count uint16, rest ...byte) []byte {
		p := binary.BigEndian.AppendUint64(nil, first)
		return append(append(p, u16(count)...), rest...)
	}
	oneBet := frame.AppendBet(nil, &frame.Bet{FirstName: "a", LastName: "b", Document: "1", Birthdate: 20000101, Number: 1})
	tests := []struct {
		name    string
		t       frame.Type
		payload []byte
		want    error
		mention string // a word the message must contain
	}{
		{"bets_count_65535_with_10_bytes", frame.TypeBets, bets(0, 65535, make([]byte, 10)...), frame.ErrMalformed, "65535"},
		{"bets_count_2_with_1_bet", frame.TypeBets, bets(0, 2, oneBet...), frame.ErrMalformed, "2 bets"},
		{"bets_count_0_with_1_bet", frame.TypeBets, bets(0, 0, oneBet...), frame.ErrMalformed, "trailing"},
		{"bets_string_longer_than_payload", frame.TypeBets, bets(0, 1, 200, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l'), frame.ErrMalformed, "truncated"},
		{"winners_count_65535", frame.TypeWinners, append([]byte{1}, append(u16(65535), 1, '1')...), frame.ErrMalformed, "65535"},
		{"winners_count_2_with_1_doc", frame.TypeWinners, []byte{1, 0, 2, 1, '1', 5, '2'}, frame.ErrMalformed, "truncated"},
		{"welcome_flag_2", frame.TypeWelcome, append(make([]byte, 8), 2), frame.ErrMalformed, "flag"},
		{"welcome_flag_ff", frame.TypeWelcome, append(make([]byte, 8), 0xFF), frame.ErrMalformed, "flag"},
		{"winners_flag_2", frame.TypeWinners, []byte{2, 0, 0}, frame.ErrMalformed, "flag"},
		{"winners_flag_80_with_doc", frame.TypeWinners, []byte{0x80, 0, 1, 1, '7'}, frame.ErrMalformed, "flag"},
		{"reject_reason_over_max", frame.TypeReject, append(append(u16(1), make([]byte, 8)...), append(u16(frame.MaxReasonLen+1), make([]byte, frame.MaxReasonLen+1)...)...), frame.ErrMalformed, "reason"},
		{"error_reason_65535_announced", frame.TypeError, append(u16(1), 0xFF, 0xFF, 'x'), frame.ErrMalformed, "ERROR"},
		{"error_reason_longer_than_payload", frame.TypeError, append(u16(1), 0, 5, 'x'), frame.ErrMalformed, "truncated"},
		{"hello_too_short", frame.TypeHello, []byte{0, 0, 3}, frame.ErrMalformed, "HELLO"},
		{"query_winners_with_payload", frame.TypeQueryWinners, []byte{0}, frame.ErrMalformed, "trailing"},
		{"commitment_proof_33", frame.TypeCommitment, append(make([]byte, 32+4+32+64), append([]byte{33}, make([]byte, 33*32)...)...), frame.ErrMalformed, "proof of 33"},
		{"unknown_type", frame.Type(0x42), nil, frame.ErrUnknownType, "0x42"},
		{"payload_over_max", frame.TypePing, make([]byte, frame.MaxPayload+1), frame.ErrTooLarge, "PING"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := frame.Parse(tt.t, tt.payload, testToday)
			if !errors.Is(err, tt.want) || f != nil {
				t.Fatalf("Parse = %v, %v; want %v", f, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("message %q does not mention %q", err, tt.mention)
			}
		})
	}
}

func TestWinnersInvalidDocument(t *testing.T) {
	for _, doc := range []string{"", "12a", "12345678901", "-1"} {
		p := payloadOf(t, &frame.Winners{Last: true, Documents: []string{"1", doc}})
		f, err := frame.Parse(frame.TypeWinners, p, testToday)
		var fe *frame.FieldError
		if !errors.As(err, &fe) || fe.Field != "document" || !errors.Is(err, frame.ErrDigits) || f != nil {
			t.Errorf("WINNERS with document %q: %v, %v; want a document FieldError", doc, f, err)
		}
	}
}

func TestReasonInvalidUTF8IsRepaired(t *testing.T) {
	for _, ty := range []frame.Type{frame.TypeReject, frame.TypeError} {
		var p []byte
		if ty == frame.TypeReject {
			p = payloadOf(t, &frame.Reject{Code: frame.CodeInvalidBet, Index: 5, Reason: "bad \xff\xfe name"})
		} else {
			p = payloadOf(t, &frame.Error{Code: frame.CodeMalformed, Reason: "bad \xff\xfe name"})
		}
		f, err := frame.Parse(ty, p, testToday)
		if err != nil {
			t.Fatalf("%s: %v", ty, err)
		}
		got := fmt.Sprint(f)
		if !strings.Contains(got, "bad \uFFFD name") {
			t.Errorf("%s reason decoded as %s, want the invalid bytes replaced", ty, got)
		}
	}
}

func TestFieldErrorKeepsStreamUsable(t *testing.T) {
	bad := realisticBets(2)
	bad[0].Document = "not digits"
	stream := concat(t, &frame.Bets{First: 40, Bets: bad}, &frame.Ping{Payload: []byte("still here")})
	events := decodeAll(t, &frame.Decoder{Today: fixedToday}, stream, func() int { return 5 })
	if len(events) != 2 || !strings.Contains(events[0].err, "bet 0: field document") ||
		!equalFrames(events[1].frame, &frame.Ping{Payload: []byte("still here")}) {
		t.Fatalf("events = %v", events)
	}
}

func TestNextOverBufioReader(t *testing.T) {
	frames, badBatch := sessionFrames()
	stream := concat(t, frames...)
	readers := map[string]func() io.Reader{
		"bytes":       func() io.Reader { return bytes.NewReader(stream) },
		"one_byte":    func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":        func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"data_err":    func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
		"chunks_of_7": func() io.Reader { return &chunkReader{data: stream, n: 7} },
	}
	for name, newReader := range readers {
		t.Run(name, func(t *testing.T) {
			r := frame.NewReader(newReader())
			dec := &frame.Decoder{Today: fixedToday}
			for i, want := range frames {
				f, err := dec.Next(r)
				if i == badBatch {
					if !fieldErrorOnBets(f, err) {
						t.Fatalf("frame %d: %v, %v; want a FieldError on BETS", i, f, err)
					}
					continue
				}
				if err != nil || !equalFrames(f, want) {
					t.Fatalf("frame %d = %+v, %v; want %+v", i, f, err, want)
				}
			}
			for range 2 {
				if f, err := dec.Next(r); err != io.EOF || f != nil {
					t.Fatalf("at the end: %v, %v; want nil, io.EOF", f, err)
				}
			}
		})
	}
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestNextOverBufioTruncated(t *testing.T) {
	hello := mustEncode(t, &frame.Hello{Agency: 3})
	bets := mustEncode(t, &frame.Bets{First: 0, Bets: realisticBets(10)})
	cuts := []int{1, frame.HeaderSize - 1, frame.HeaderSize, frame.HeaderSize + 1, len(bets) / 2, len(bets) - 1}
	for _, cut := range cuts {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			stream := append(append([]byte(nil), hello...), bets[:cut]...)
			r := frame.NewReader(iotest.OneByteReader(bytes.NewReader(stream)))
			dec := &frame.Decoder{Today: fixedToday}
			if f, err := dec.Next(r); err != nil || !equalFrames(f, &frame.Hello{Agency: 3}) {
				t.Fatalf("first frame = %v, %v", f, err)
			}
			if f, err := dec.Next(r); err != io.ErrUnexpectedEOF || f != nil {
				t.Fatalf("frame cut after %d bytes: %v, %v; want io.ErrUnexpectedEOF", cut, f, err)
			}
		})
	}
}

func TestNextPassesSourceErrors(t *testing.T) {
	boom := errors.New("connection reset by peer")
	hello := mustEncode(t, &frame.Hello{Agency: 3})
	r := frame.NewReader(io.MultiReader(bytes.NewReader(hello[:6]), iotest.ErrReader(boom)))
	if _, err := (&frame.Decoder{}).Next(r); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	empty := frame.NewReader(iotest.ErrReader(boom))
	if _, err := (&frame.Decoder{}).Next(empty); !errors.Is(err, boom) {
		t.Fatalf("err before any byte = %v, want %v", err, boom)
	}
}

func TestNewReaderHoldsMaxFrame(t *testing.T) {
	big := mustEncode(t, &frame.Ping{Payload: bytes.Repeat([]byte{7}, frame.MaxPayload)})
	r := frame.NewReader(bytes.NewReader(concat(t, &frame.Hello{Agency: 1}, &frame.Ping{Payload: bytes.Repeat([]byte{7}, frame.MaxPayload)})))
	dec := &frame.Decoder{}
	if _, err := dec.Next(r); err != nil {
		t.Fatal(err)
	}
	f, err := dec.Next(r)
	if err != nil || len(f.(*frame.Ping).Payload) != len(big)-frame.HeaderSize {
		t.Fatalf("MaxSize frame after another frame over NewReader: %v", err)
	}
	if r.Size() < frame.MaxSize {
		t.Fatalf("NewReader buffer is %d bytes, want at least %d", r.Size(), frame.MaxSize)
	}
	var _ frame.Source = (*bufio.Reader)(nil)
}

// TestRecycledBetsAreClearedAndDecodesStayExact: bets handed back let go of
// their strings at once, and decodes after it, into recycled slices or not
// (a batch longer than any kept), give exactly the bets sent.
func TestRecycledBetsAreClearedAndDecodesStayExact(t *testing.T) {
	dec := &frame.Decoder{Today: fixedToday}
	all := realisticBets(400)
	for round, n := range []int{100, 100, 37, 100, 200, 100} {
		want := all[round*20 : round*20+n]
		f, err := dec.Next(&replaySource{b: mustEncode(t, &frame.Bets{First: uint64(round), Bets: want})})
		if err != nil {
			t.Fatal(err)
		}
		got := f.(*frame.Bets).Bets
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: decoded bets differ from the %d sent", round, n)
		}
		frame.RecycleBets(got)
		for i := range got[:cap(got)] {
			if got[:cap(got)][i] != (frame.Bet{}) {
				t.Fatalf("round %d: bet %d still held after RecycleBets: %+v", round, i, got[i])
			}
		}
	}
}
