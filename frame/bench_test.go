package frame_test

import (
	"testing"

	"github.com/tp0/loteria/frame"
)

// replaySource serves the same bytes again after each Discard, like a
// connection that keeps receiving the same frame.
type replaySource struct{ b []byte }

func (s *replaySource) Peek(n int) ([]byte, error) {
	if n > len(s.b) {
		n = len(s.b)
	}
	return s.b[:n], nil
}

func (s *replaySource) Discard(n int) (int, error) { return n, nil }

func BenchmarkEncodeBets100(b *testing.B) {
	f := &frame.Bets{First: 1000, Bets: realisticBets(100)}
	buf := make([]byte, 0, frame.MaxSize)
	b.SetBytes(int64(frame.BetsFrameSize(f.Bets)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = frame.Append(buf[:0], f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeBets100 decodes a 100-bet batch, keeping the bets
// (fresh) or handing them back once used, as the server does when a batch
// is stored (recycled): what is left per frame is then its text.
func BenchmarkDecodeBets100(b *testing.B) {
	for _, recycle := range []bool{false, true} {
		b.Run(map[bool]string{false: "fresh", true: "recycled"}[recycle], func(b *testing.B) {
			src := &replaySource{b: mustEncode(b, &frame.Bets{First: 1000, Bets: realisticBets(100)})}
			dec := &frame.Decoder{Today: fixedToday}
			b.SetBytes(int64(len(src.b)))
			b.ReportAllocs()
			for b.Loop() {
				f, err := dec.Next(src)
				if err != nil || len(f.(*frame.Bets).Bets) != 100 {
					b.Fatalf("Next = %v, %v", f, err)
				}
				if recycle {
					frame.RecycleBets(f.(*frame.Bets).Bets)
				}
			}
		})
	}
}

func BenchmarkDecodeBets100DefaultToday(b *testing.B) {
	src := &replaySource{b: mustEncode(b, &frame.Bets{First: 1000, Bets: realisticBets(100)})}
	dec := &frame.Decoder{}
	b.SetBytes(int64(len(src.b)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dec.Next(src); err != nil {
			b.Fatal(err)
		}
	}
}
