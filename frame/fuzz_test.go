package frame_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/tp0/loteria/frame"
)

// fuzzSeeds are valid frames of every type, streams of several, and broken
// frames the decoder must refuse.
// Seeds are kept small: the fuzzer minimizes every new input it finds
// interesting, and large inputs make that slow.
func fuzzSeeds(t testing.TB) [][]byte {
	frames := []frame.Frame{
		&frame.Ping{Payload: []byte("hi")},
		&frame.Pong{Payload: []byte("hi")},
		&frame.Hello{Agency: 3},
		&frame.Welcome{Held: 2, Finished: true},
		&frame.Bets{First: 2, Bets: realisticBets(2)},
		&frame.Ack{First: 2, Count: 2},
		&frame.Reject{Code: frame.CodeIndexGap, Index: 4, Reason: "gap"},
		&frame.Finished{Total: 4},
		&frame.NotReady{RetryAfter: 1e9, Finished: 1, Agencies: 5},
		&frame.QueryWinners{},
		&frame.Winners{Last: true, Documents: []string{"00000042", "1"}},
		&frame.Error{Code: frame.CodeFlood, Reason: "flood"},
	}
	seeds := [][]byte{concat(t, frames...)}
	for _, f := range frames {
		seeds = append(seeds, mustEncode(t, f))
	}
	bad := realisticBets(3)
	bad[1].LastName = "Pe\xf1a" // Latin-1, not UTF-8
	nonDigit := realisticBets(2)
	nonDigit[0].Document = "3O904465"
	growingReason := strings.Repeat("a\xff", frame.MaxReasonLen/2)
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	seeds = append(seeds,
		mustEncode(t, &frame.Bets{First: 5, Bets: bad}),
		mustEncode(t, &frame.Bets{First: 6, Bets: nonDigit}),
		mustEncode(t, &frame.Bets{First: 1, Bets: []frame.Bet{{Birthdate: 19000229}}}),
		mustEncode(t, &frame.Error{Code: frame.CodeMalformed, Reason: growingReason}),
		mustEncode(t, &frame.Reject{Code: frame.CodeInvalidBet, Reason: "\xe2\x82"}),
		rawFrame(2, frame.TypeHello, []byte{0, 0, 0, 1}),                 // wrong version
		rawFrame(frame.Version, 0x0D, nil),                               // unknown type
		[]byte{frame.Version, byte(frame.TypePing), 0x1F, 0xFD},          // announces MaxSize+1
		[]byte{frame.Version, byte(frame.TypeBets), 0xFF, 0xFF, 1, 2, 3}, // announces 65539 bytes
		rawFrame(frame.Version, frame.TypeBets, append(make([]byte, 8), append(u16(0xFFFF), make([]byte, 10)...)...)),
		rawFrame(frame.Version, frame.TypeWinners, append([]byte{1}, append(u16(0xFFFF), 1, '1')...)),
		rawFrame(frame.Version, frame.TypeError, append(u16(1), 0xFF, 0xFF, 'x')),
		rawFrame(frame.Version, frame.TypeWelcome, append(make([]byte, 8), 2)), // bad flag
		rawFrame(frame.Version, frame.TypeWinners, []byte{7, 0, 0}),            // bad flag
		rawFrame(frame.Version, frame.TypeAck, []byte{0, 0, 0}),                // truncated
		rawFrame(frame.Version, frame.TypeFinished, make([]byte, 9)),           // trailing byte
		mustEncode(t, &frame.Hello{Agency: 1})[:6],                             // stream cut mid-frame
		[]byte{},
	)
	return seeds
}

// FuzzDecode feeds arbitrary bytes through Decoder.Next over every reveal
// strategy and through Parse as a payload. It checks that nothing panics,
// that all strategies agree, that every decoded frame re-encodes to bytes
// that decode to an equal frame, and that decoding allocates in proportion
// to the bytes present, never to a length that was only announced.
//
// Run it with go test -fuzz=FuzzDecode -fuzzminimizetime=10s ./frame: the
// default minute spent minimizing each new input stalls a small machine.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := &frame.Decoder{Today: fixedToday}
		var reference []event
		for i, s := range strategies {
			events := decodeAll(t, dec, data, s.make(len(data)))
			if i == 0 {
				reference = events
				continue
			}
			if !reflect.DeepEqual(events, reference) {
				t.Fatalf("strategy %s decoded\n%v\nbut %s decoded\n%v", s.name, events, strategies[0].name, reference)
			}
		}
		offset := 0
		for _, e := range reference {
			if e.frame != nil {
				checkReencode(t, e.frame, data[offset:offset+e.consumed])
			}
			offset += e.consumed
		}

		if len(data) > 0 {
			ty := frame.Type(data[0]%12 + 1)
			if g, err := frame.Parse(ty, data[1:], testToday); err == nil || fieldErrorOnBets(g, err) {
				raw := binary.BigEndian.AppendUint16([]byte{frame.Version, byte(ty)}, uint16(len(data)-1))
				checkReencode(t, g, append(raw, data[1:]...))
			} else if g != nil {
				t.Fatalf("Parse(%s) returned a frame with error %v", ty, err)
			}
		}

		if used, limit := decoderAllocation(dec, data), allocationLimit(len(data)); used > limit {
			t.Fatalf("decoding %d bytes allocated %d bytes, limit %d", len(data), used, limit)
		}
	})
}

// checkReencode checks that f, decoded from raw, encodes to a frame that
// decodes to f again, and to raw itself unless f carries a reason whose
// invalid UTF-8 the decoder repaired.
func checkReencode(t *testing.T, f frame.Frame, raw []byte) {
	t.Helper()
	b, err := frame.Encode(f)
	if err != nil {
		t.Fatalf("decoded %s does not encode: %v", f.Type(), err)
	}
	h, err := frame.ParseHeader(b, frame.MaxSize)
	if err != nil || h.Size() != len(b) {
		t.Fatalf("re-encoded %s has header %+v for %d bytes: %v", f.Type(), h, len(b), err)
	}
	again, err := frame.Parse(h.Type, b[frame.HeaderSize:], testToday)
	if err != nil && !fieldErrorOnBets(again, err) {
		t.Fatalf("re-encoded %s does not decode: %v", f.Type(), err)
	}
	if !equalFrames(again, f) {
		t.Fatalf("re-encoded %s decodes to %+v, want %+v", f.Type(), again, f)
	}
	switch f.(type) {
	case *frame.Reject, *frame.Error:
		return
	}
	if !bytes.Equal(b, raw) {
		t.Fatalf("%s re-encodes to % x, want the original % x", f.Type(), b, raw)
	}
}

// decoderAllocation is how many heap bytes dec allocates while decoding
// data, revealed all at once, up to its first fatal error.
func decoderAllocation(dec *frame.Decoder, data []byte) uint64 {
	src := newGradualSource(data, func() int { return len(data) })
	src.reveal()
	var fe *frame.FieldError
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for {
		f, err := dec.Next(src)
		if err == nil {
			continue
		}
		if _, isBets := f.(*frame.Bets); isBets && errors.As(err, &fe) {
			continue
		}
		break
	}
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// allocationLimit bounds what decoding n bytes may allocate: decoded frames
// take a small multiple of their wire size (a 9-byte bet becomes a 56-byte
// Bet, a 1-byte document a 16-byte string header), and errors a constant.
func allocationLimit(n int) uint64 { return 32*uint64(n) + 16<<10 }

func TestAnnouncedLengthAllocatesLittle(t *testing.T) {
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	tests := []struct {
		name   string
		stream []byte
	}{
		{"bets_count_65535_with_10_bytes", rawFrame(frame.Version, frame.TypeBets, append(make([]byte, 8), append(u16(0xFFFF), make([]byte, 10)...)...))},
		{"bets_count_900_with_one_bet", rawFrame(frame.Version, frame.TypeBets, append(make([]byte, 8), append(u16(900), frame.AppendBet(nil, &frame.Bet{})...)...))},
		{"winners_count_65535_with_2_bytes", rawFrame(frame.Version, frame.TypeWinners, append([]byte{1}, append(u16(0xFFFF), 1, '1')...))},
		{"error_reason_65535_with_1_byte", rawFrame(frame.Version, frame.TypeError, append(u16(1), 0xFF, 0xFF, 'x'))},
		{"reject_reason_1024_with_1_byte", rawFrame(frame.Version, frame.TypeReject, append(make([]byte, 10), append(u16(1024), 'x')...))},
		{"header_announces_max_payload_sends_10", append([]byte{frame.Version, byte(frame.TypeBets), 0x1F, 0xFC}, make([]byte, 10)...)},
		{"header_announces_65535", []byte{frame.Version, byte(frame.TypePing), 0xFF, 0xFF}},
	}
	dec := &frame.Decoder{Today: fixedToday}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newGradualSource(tt.stream, func() int { return len(tt.stream) })
			src.reveal()
			f, err := dec.Next(src)
			if err == nil || f != nil {
				t.Fatalf("Next = %+v, %v; want an error", f, err)
			}
			allocs := testing.AllocsPerRun(100, func() {
				src.start, src.end = 0, len(tt.stream)
				copy(src.buf, tt.stream)
				dec.Next(src)
			})
			if allocs > 8 {
				t.Errorf("refusing the frame took %.0f allocations, want at most 8", allocs)
			}
			const runs = 200
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				src.start, src.end = 0, len(tt.stream)
				copy(src.buf, tt.stream)
				dec.Next(src)
			}
			runtime.ReadMemStats(&after)
			if perRun := (after.TotalAlloc - before.TotalAlloc) / runs; perRun > 512 {
				t.Errorf("refusing the frame allocated %d bytes per call, want at most 512", perRun)
			}
		})
	}
}

func TestFuzzSeedsDecode(t *testing.T) {
	// The seed corpus must hold at least one valid frame of every type, so
	// that the fuzzer starts from every branch of the decoder.
	seen := map[frame.Type]bool{}
	for _, s := range fuzzSeeds(t) {
		for _, e := range decodeAll(t, &frame.Decoder{Today: fixedToday}, s, func() int { return len(s) }) {
			if e.frame != nil && e.err == "" {
				seen[e.frame.Type()] = true
			}
		}
	}
	for ty := frame.TypeHello; ty <= frame.TypeError; ty++ {
		if !seen[ty] {
			t.Errorf("no seed decodes to a valid %s", ty)
		}
	}
}
