package frame_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tp0/loteria/frame"
)

func documents(n int, width func(i int) int) []string {
	docs := make([]string, n)
	for i := range docs {
		docs[i] = fmt.Sprintf("%0*d", width(i), i)
	}
	return docs
}

func TestWinnersFrames(t *testing.T) {
	tests := []struct {
		name string
		docs []string
		want int // frames expected; 0 means at least two
	}{
		{"nil", nil, 1},
		{"empty", []string{}, 1},
		{"one", []string{"00000042"}, 1},
		// 7 fixed bytes + 744 * 11 = 8191: the largest count of 10-digit documents in one frame
		{"744_fill_one_frame", documents(744, func(int) int { return 10 }), 1},
		{"745_spill_into_two", documents(745, func(int) int { return 10 }), 2},
		{"10000_ten_digits", documents(10000, func(int) int { return 10 }), 14},
		{"5000_mixed_widths", documents(5000, func(i int) int { return 4 + i%7 }), 0},
		{"9000_single_digit", strings.Split(strings.Repeat("7", 9000), ""), 3}, // 4092 per frame
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frames := frame.WinnersFrames(tt.docs)
			if tt.want > 0 && len(frames) != tt.want {
				t.Errorf("got %d frames, want %d", len(frames), tt.want)
			}
			if tt.want == 0 && len(frames) < 2 {
				t.Errorf("got %d frames, want several", len(frames))
			}
			var all []string
			for i, w := range frames {
				if w.Last != (i == len(frames)-1) {
					t.Errorf("frame %d of %d has Last = %v", i, len(frames), w.Last)
				}
				b := mustEncode(t, w)
				if len(b) > frame.MaxSize {
					t.Fatalf("frame %d is %d bytes", i, len(b))
				}
				// every frame but the last is full: the next document would not fit
				if i < len(frames)-1 {
					next := frames[i+1].Documents[0]
					if len(b)+1+len(next) <= frame.MaxSize {
						t.Errorf("frame %d is %d bytes but left out a %d-byte document that fits", i, len(b), len(next))
					}
				}
				got, err := frame.Parse(frame.TypeWinners, b[frame.HeaderSize:], testToday)
				if err != nil || !equalFrames(got, w) {
					t.Fatalf("frame %d does not round-trip: %v", i, err)
				}
				all = append(all, w.Documents...)
			}
			if !slices.Equal(all, tt.docs) {
				t.Errorf("documents across frames (%d) differ from the input (%d) or are out of order", len(all), len(tt.docs))
			}
		})
	}
}

func TestWinnersFramesDoNotShareBackingArrays(t *testing.T) {
	docs := documents(1000, func(int) int { return 10 })
	frames := frame.WinnersFrames(docs)
	if len(frames) < 2 {
		t.Fatalf("want several frames, got %d", len(frames))
	}
	secondFirst := frames[1].Documents[0]
	frames[0].Documents = append(frames[0].Documents, "appended")
	if frames[1].Documents[0] != secondFirst || docs[len(frames[0].Documents)-1] == "appended" {
		t.Fatal("appending to one frame's documents overwrote the next frame's")
	}
}

func TestWinnersFramesOversizedDocumentTerminates(t *testing.T) {
	// Invalid documents can be longer than a frame; splitting must still end
	// and keep every frame within the limit.
	docs := []string{"1", strings.Repeat("9", 2*frame.MaxSize), "2"}
	frames := frame.WinnersFrames(docs)
	var n int
	for _, w := range frames {
		n += len(w.Documents)
		if _, err := frame.Encode(w); err != nil {
			t.Errorf("frame with %d documents: %v", len(w.Documents), err)
		}
	}
	if n != len(docs) {
		t.Fatalf("frames hold %d documents, want %d", n, len(docs))
	}
}

func TestBetsFrameSize(t *testing.T) {
	odd := validBet()
	odd.LastName = strings.Repeat("n", 300) // invalid, and cut to 255 on the wire
	sets := map[string][]frame.Bet{
		"nil":         nil,
		"one":         {validBet()},
		"realistic":   realisticBets(100),
		"maximal":     {{FirstName: strings.Repeat("x", 100), LastName: repeatTo("ñ", 100), Document: "0000000000", Birthdate: 20000229, Number: 9999}},
		"empty_bet":   {{}},
		"oversize":    realisticBets(400),
		"long_string": {odd},
	}
	for name, bets := range sets {
		t.Run(name, func(t *testing.T) {
			want := encodedBetsSize(t, bets)
			if got := frame.BetsFrameSize(bets); got != want {
				t.Errorf("BetsFrameSize = %d, encoded size %d", got, want)
			}
			for i := range bets {
				if got, want := frame.BetWireSize(&bets[i]), len(frame.AppendBet(nil, &bets[i])); got != want {
					t.Errorf("BetWireSize(bet %d) = %d, AppendBet wrote %d", i, got, want)
				}
			}
		})
	}
}

// encodedBetsSize is the size of the BETS frame holding bets as the encoder
// builds it, or would build it if the frame were not over the limit.
func encodedBetsSize(t *testing.T, bets []frame.Bet) int {
	if b, err := frame.Encode(&frame.Bets{Bets: bets}); err == nil {
		return len(b)
	}
	size := frame.HeaderSize + 8 + 2
	for i := range bets {
		size += len(frame.AppendBet(nil, &bets[i]))
	}
	if size <= frame.MaxSize {
		t.Fatalf("Encode refused a BETS frame of %d bytes", size)
	}
	return size
}
