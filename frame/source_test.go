package frame_test

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/tp0/loteria/frame"
)

// gradualSource is a Source that behaves like gnet.Conn: it holds only the
// bytes revealed so far, Peek(n) fails with io.ErrShortBuffer when fewer than n
// are buffered, n <= 0 means everything, and Discard overwrites what it drops
// so a decoder that kept a reference into the buffer is caught.
type gradualSource struct {
	buf   []byte // private copy of the whole stream
	start int    // first byte not yet discarded
	end   int    // bytes revealed so far
	next  func() int
}

// reveal strategies: how many more bytes arrive with each read.
type strategy struct {
	name string
	make func(total int) func() int
}

var strategies = []strategy{
	{"one_at_a_time", func(int) func() int { return func() int { return 1 } }},
	{"all_at_once", func(total int) func() int { return func() int { return total } }},
	{"random_chunks", func(total int) func() int {
		r := rand.New(rand.NewPCG(uint64(total), 0x5eed))
		return func() int { return 1 + r.IntN(64) }
	}},
	{"large_random_chunks", func(total int) func() int {
		r := rand.New(rand.NewPCG(uint64(total), 0xb16))
		return func() int { return 1 + r.IntN(3*frame.MaxSize) }
	}},
}

func newGradualSource(stream []byte, next func() int) *gradualSource {
	return &gradualSource{buf: append([]byte(nil), stream...), next: next}
}

func (s *gradualSource) buffered() int { return s.end - s.start }

// reveal makes the next chunk of the stream readable; false means the
// whole stream is already revealed.
func (s *gradualSource) reveal() bool {
	if s.end == len(s.buf) {
		return false
	}
	s.end = min(len(s.buf), s.end+max(1, s.next()))
	return true
}

func (s *gradualSource) Peek(n int) ([]byte, error) {
	if n <= 0 {
		n = s.buffered()
	}
	if n > s.buffered() {
		return nil, io.ErrShortBuffer
	}
	return s.buf[s.start : s.start+n : s.start+n], nil
}

func (s *gradualSource) Discard(n int) (int, error) {
	if n <= 0 || n > s.buffered() {
		n = s.buffered()
	}
	for i := s.start; i < s.start+n; i++ {
		s.buf[i] = 0xA5
	}
	s.start += n
	return n, nil
}

// event is one result of Decoder.Next, kept in a form that compares equal
// across reveal strategies.
type event struct {
	frame    frame.Frame
	err      string
	consumed int // bytes the call discarded
}

func (e event) String() string {
	if e.err != "" {
		return fmt.Sprintf("error %q after %d bytes", e.err, e.consumed)
	}
	return fmt.Sprintf("%s %+v (%d bytes)", e.frame.Type(), e.frame, e.consumed)
}

// fieldErrorOnBets reports whether err is the one error after which the
// stream stays usable: a BETS frame carrying an invalid bet.
func fieldErrorOnBets(f frame.Frame, err error) bool {
	var fe *frame.FieldError
	_, isBets := f.(*frame.Bets)
	return isBets && errors.As(err, &fe)
}

// decodeAll runs dec over stream revealed by next until the stream ends or a
// fatal error, checking the Source contract on every call: ErrIncomplete
// consumes nothing and any other result consumes exactly one whole frame.
func decodeAll(t testing.TB, dec *frame.Decoder, stream []byte, next func() int) []event {
	t.Helper()
	src := newGradualSource(stream, next)
	var events []event
	for {
		before := src.start
		f, err := dec.Next(src)
		consumed := src.start - before
		if errors.Is(err, frame.ErrIncomplete) {
			if consumed != 0 {
				t.Fatalf("ErrIncomplete after consuming %d bytes", consumed)
			}
			if src.reveal() {
				continue
			}
			if src.buffered() != 0 {
				events = append(events, event{err: "incomplete frame at end of stream"})
			}
			return events
		}
		if err == nil || fieldErrorOnBets(f, err) {
			h, herr := frame.ParseHeader(stream[before:], frame.MaxSize)
			if herr != nil || consumed != h.Size() {
				t.Fatalf("frame %v consumed %d bytes, header says %d (%v)", f, consumed, h.Size(), herr)
			}
			e := event{frame: f, consumed: consumed}
			if err != nil {
				e.err = err.Error()
			}
			events = append(events, e)
			continue
		}
		if f != nil {
			t.Fatalf("fatal error %v came with a frame %+v", err, f)
		}
		return append(events, event{err: err.Error(), consumed: consumed})
	}
}

func TestGradualSourceLikeGnet(t *testing.T) {
	src := newGradualSource([]byte{1, 2, 3, 4, 5}, func() int { return 2 })
	if _, err := src.Peek(1); !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("Peek(1) on empty source: err = %v, want io.ErrShortBuffer", err)
	}
	src.reveal()
	if b, err := src.Peek(2); err != nil || len(b) != 2 || b[0] != 1 {
		t.Fatalf("Peek(2) = %v, %v", b, err)
	}
	if _, err := src.Peek(3); !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("Peek(3) with 2 buffered: err = %v, want io.ErrShortBuffer", err)
	}
	if b, _ := src.Peek(0); len(b) != 2 {
		t.Fatalf("Peek(0) returned %d bytes, want everything (2)", len(b))
	}
	peeked, _ := src.Peek(1)
	if n, _ := src.Discard(1); n != 1 || peeked[0] != 0xA5 {
		t.Fatalf("Discard(1) = %d, discarded byte now %#x; want 1 and scribbled", n, peeked[0])
	}
	for src.reveal() {
	}
	if n, _ := src.Discard(0); n != 4 || src.buffered() != 0 {
		t.Fatalf("Discard(0) = %d, buffered %d; want 4 and 0", n, src.buffered())
	}
}
