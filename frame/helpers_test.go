package frame_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/tp0/loteria/frame"
)

// testToday is the date the tests decode against unless they say otherwise.
const testToday frame.Date = 20240615

func fixedToday() frame.Date { return testToday }

func validBet() frame.Bet {
	return frame.Bet{FirstName: "Santiago Lionel", LastName: "Lorca", Document: "30904465", Birthdate: 19990317, Number: 7574}
}

// realisticBets returns n valid bets with accented names, 7-8 digit documents
// and birthdates across the whole century, always the same for the same n.
func realisticBets(n int) []frame.Bet {
	first := []string{"Santiago Lionel", "Camila Rocío", "Tiago Nicolás", "María José", "Agustín", "Lucía Belén", "Joaquín", "Valentina"}
	last := []string{"Lorca", "Núñez", "Zambrano", "Rivera", "Peña", "Gómez Ibáñez", "Mamani", "O'Connor"}
	r := rand.New(rand.NewPCG(uint64(n), 42))
	bets := make([]frame.Bet, n)
	for i := range bets {
		bets[i] = frame.Bet{
			FirstName: first[r.IntN(len(first))],
			LastName:  last[r.IntN(len(last))],
			Document:  fmt.Sprintf("%0*d", 7+r.IntN(2), r.IntN(100_000_000)),
			Birthdate: frame.NewDate(1930+r.IntN(80), 1+r.IntN(12), 1+r.IntN(28)),
			Number:    uint16(r.IntN(frame.MaxNumber + 1)),
		}
	}
	return bets
}

// normalize makes frames that differ only in nil versus empty slices equal.
func normalize(f frame.Frame) frame.Frame {
	switch v := f.(type) {
	case *frame.Bets:
		c := *v
		if c.Bets == nil {
			c.Bets = []frame.Bet{}
		}
		return &c
	case *frame.Winners:
		c := *v
		if c.Documents == nil {
			c.Documents = []string{}
		}
		return &c
	case *frame.Ping:
		if v.Payload == nil {
			return &frame.Ping{Payload: []byte{}}
		}
	case *frame.Pong:
		if v.Payload == nil {
			return &frame.Pong{Payload: []byte{}}
		}
	}
	return f
}

func equalFrames(a, b frame.Frame) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

func mustEncode(t testing.TB, f frame.Frame) []byte {
	t.Helper()
	b, err := frame.Encode(f)
	if err != nil {
		t.Fatalf("Encode(%T): %v", f, err)
	}
	return b
}

// concat encodes frames back to back into one stream.
func concat(t testing.TB, frames ...frame.Frame) []byte {
	t.Helper()
	var out []byte
	for _, f := range frames {
		var err error
		if out, err = frame.Append(out, f); err != nil {
			t.Fatalf("Append(%T): %v", f, err)
		}
	}
	return out
}

// rawFrame builds a frame byte by byte, bypassing the encoder's checks.
func rawFrame(version uint8, t frame.Type, payload []byte) []byte {
	n := len(payload)
	return append([]byte{version, byte(t), byte(n >> 8), byte(n)}, payload...)
}

// repeatTo repeats s until it is exactly n bytes long; s must divide n.
func repeatTo(s string, n int) string {
	if n%len(s) != 0 {
		panic("repeatTo: length does not divide")
	}
	return strings.Repeat(s, n/len(s))
}

// hashOf is a hash whose bytes count up from b.
func hashOf(b byte) (h frame.Hash) {
	for i := range h {
		h[i] = b + byte(i)
	}
	return h
}

func signatureOf(b byte) (s frame.Signature) {
	for i := range s {
		s[i] = b ^ byte(i)
	}
	return s
}

func proofOf(n int) []frame.Hash {
	p := make([]frame.Hash, n)
	for i := range p {
		p[i] = hashOf(byte(i * 3))
	}
	return p
}
