package receipt

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/tp0/loteria/frame"
)

// Leaf is one agency's entry in the commitment.
type Leaf struct {
	Agency uint32
	Bets   uint64
	Chain  frame.Hash
}

// Hash is SHA-256(0x00 ‖ agency u32 ‖ bets u64 ‖ chain), big-endian.
func (l Leaf) Hash() frame.Hash {
	var b [1 + 4 + 8 + frame.HashSize]byte
	binary.BigEndian.PutUint32(b[1:], l.Agency)
	binary.BigEndian.PutUint64(b[5:], l.Bets)
	copy(b[13:], l.Chain[:])
	return sha256.Sum256(b[:])
}

// node is SHA-256(0x01 ‖ left ‖ right).
func node(left, right *frame.Hash) frame.Hash {
	var b [1 + 2*frame.HashSize]byte
	b[0] = 1
	copy(b[1:], left[:])
	copy(b[1+frame.HashSize:], right[:])
	return sha256.Sum256(b[:])
}

// Tree is a Merkle tree over the leaves of agencies 1..N in order. A level
// with an odd number of nodes carries its last node up unchanged.
type Tree struct{ levels [][]frame.Hash }

// NewTree builds the tree over leaves, leaf i being agency i+1's.
func NewTree(leaves []Leaf) *Tree {
	level := make([]frame.Hash, len(leaves))
	for i := range leaves {
		level[i] = leaves[i].Hash()
	}
	t := &Tree{levels: [][]frame.Hash{level}}
	for len(level) > 1 {
		up := make([]frame.Hash, (len(level)+1)/2)
		for i := range up {
			if 2*i+1 < len(level) {
				up[i] = node(&level[2*i], &level[2*i+1])
			} else {
				up[i] = level[2*i]
			}
		}
		t.levels = append(t.levels, up)
		level = up
	}
	return t
}

// Root is the tree's root; the root of no leaves is the zero hash.
func (t *Tree) Root() frame.Hash {
	top := t.levels[len(t.levels)-1]
	if len(top) == 0 {
		return frame.Hash{}
	}
	return top[0]
}

// Proof lists the siblings of leaf i from the bottom up, skipping levels
// where the path has none.
func (t *Tree) Proof(i int) []frame.Hash {
	proof := make([]frame.Hash, 0, len(t.levels)-1) // one allocation: the draw makes one per agency
	for _, level := range t.levels[:len(t.levels)-1] {
		if s := i ^ 1; s < len(level) {
			proof = append(proof, level[s])
		}
		i /= 2
	}
	return proof
}

// VerifyProof checks that leaf, at index i of n leaves, leads to root.
func VerifyProof(leaf Leaf, i, n int, proof []frame.Hash, root frame.Hash) error {
	if i < 0 || i >= n {
		return fmt.Errorf("leaf %d of %d: %w", i, n, ErrProof)
	}
	h := leaf.Hash()
	for size := n; size > 1; size = (size + 1) / 2 {
		if s := i ^ 1; s < size {
			if len(proof) == 0 {
				return fmt.Errorf("proof too short: %w", ErrProof)
			}
			if i%2 == 0 {
				h = node(&h, &proof[0])
			} else {
				h = node(&proof[0], &h)
			}
			proof = proof[1:]
		}
		i /= 2
	}
	if len(proof) != 0 {
		return fmt.Errorf("proof has %d extra hashes: %w", len(proof), ErrProof)
	}
	if h != root {
		return ErrProof
	}
	return nil
}

// Commitment is the signed root over every agency's leaf.
type Commitment struct {
	Lottery   frame.Hash
	Agencies  uint32
	Root      frame.Hash
	Signature frame.Signature
}

// SignedBytes is the message the signature covers.
func (c *Commitment) SignedBytes() []byte {
	b := make([]byte, 0, len(commitmentDomain)+2*frame.HashSize+4)
	b = append(b, commitmentDomain...)
	b = append(b, c.Lottery[:]...)
	b = binary.BigEndian.AppendUint32(b, c.Agencies)
	return append(b, c.Root[:]...)
}

// Sign signs c with key; a nil key leaves it unsigned.
func (c *Commitment) Sign(key ed25519.PrivateKey) { c.Signature = sign(key, c.SignedBytes()) }

// Verify checks c's signature with the server's signing key.
func (c *Commitment) Verify(pub ed25519.PublicKey) error {
	return verify(pub, c.SignedBytes(), c.Signature, "commitment")
}

// Check verifies a COMMITMENT frame as an agency does: its own leaf (from
// its receipt) must lead to the root, and the signature must verify when a
// key is given.
func Check(f *frame.Commitment, own Leaf, pub ed25519.PublicKey) error {
	if own.Agency < 1 || own.Agency > f.Agencies {
		return fmt.Errorf("agency %d is not among the commitment's %d: %w", own.Agency, f.Agencies, ErrProof)
	}
	if err := VerifyProof(own, int(own.Agency-1), int(f.Agencies), f.Proof, f.Root); err != nil {
		return err
	}
	if pub == nil {
		return nil
	}
	c := Commitment{Lottery: f.Lottery, Agencies: f.Agencies, Root: f.Root, Signature: f.Signature}
	return c.Verify(pub)
}
