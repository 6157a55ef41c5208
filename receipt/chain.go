// Package receipt is the evidence the server gives agencies: a hash chain
// over each agency's stored bets, a signed receipt of what an agency
// finished with, and a signed Merkle commitment over every agency's chain
// that is fixed before any winner is sent.
package receipt

import (
	"crypto/sha256"
	"encoding"
	"fmt"
	"hash"

	"github.com/tp0/loteria/frame"
)

// Chain is the running SHA-256 of an agency's bets in stream order: its
// value after n bets is SHA-256 of the concatenated canonical encodings of
// bets 0..n-1, the encoding being a bet's layout inside a BETS frame. Each
// value commits to the whole prefix, so equal values mean equal bets.
type Chain struct {
	h       hash.Hash
	n       uint64
	scratch []byte
}

// NewChain returns the chain of an agency with no bets.
func NewChain() *Chain { return &Chain{h: sha256.New(), scratch: make([]byte, 0, 64)} }

// Add extends the chain with the next bet of the stream.
func (c *Chain) Add(b *frame.Bet) {
	c.scratch = frame.AppendBet(c.scratch[:0], b)
	c.h.Write(c.scratch)
	c.n++
}

// Len is how many bets the chain covers.
func (c *Chain) Len() uint64 { return c.n }

// Sum is the chain value over the bets added so far; it does not change the chain.
func (c *Chain) Sum() (v frame.Hash) {
	c.h.Sum(c.scratch[:0])
	copy(v[:], c.scratch[:frame.HashSize])
	return v
}

// Clone returns an independent copy of c.
func (c *Chain) Clone() *Chain {
	state, _ := c.MarshalBinary()
	d := NewChain()
	_ = d.UnmarshalBinary(state)
	return d
}

// MarshalBinary saves the chain's state (count and hash state) so a store
// can resume it without re-reading the bets.
func (c *Chain) MarshalBinary() ([]byte, error) {
	state, err := c.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("save chain: %w", err)
	}
	out := make([]byte, 8, 8+len(state))
	putU64(out, c.n)
	return append(out, state...), nil
}

// UnmarshalBinary restores a state saved by MarshalBinary.
func (c *Chain) UnmarshalBinary(b []byte) error {
	if len(b) < 8 {
		return fmt.Errorf("restore chain: state of %d bytes is too short", len(b))
	}
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[8:]); err != nil {
		return fmt.Errorf("restore chain: %w", err)
	}
	c.h, c.n = h, getU64(b)
	if c.scratch == nil {
		c.scratch = make([]byte, 0, 64)
	}
	return nil
}

// Empty is the chain value of an agency with no bets (SHA-256 of nothing).
func Empty() frame.Hash { return sha256.Sum256(nil) }

// ChainOf is the chain value over bets.
func ChainOf(bets []frame.Bet) frame.Hash {
	c := NewChain()
	for i := range bets {
		c.Add(&bets[i])
	}
	return c.Sum()
}

func putU64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

func getU64(b []byte) (v uint64) {
	for i := range 8 {
		v = v<<8 | uint64(b[i])
	}
	return v
}
