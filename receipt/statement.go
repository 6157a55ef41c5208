package receipt

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Statement is the draw's public record: every agency's leaf, the Merkle
// root over them and the server's signature on it. The server keeps it
// beside the bets so that the store can be audited later, offline.
type Statement struct {
	Commitment
	Leaves []Leaf // agency i+1's leaf at index i
}

// statementFormat names the statement file layout.
const statementFormat = "loteria-commitment-1"

type statementFile struct {
	Format    string     `json:"format"`
	Lottery   string     `json:"lottery"`
	Agencies  uint32     `json:"agencies"`
	Root      string     `json:"root"`
	Signature string     `json:"signature"`
	Leaves    []leafFile `json:"leaves"`
}

type leafFile struct {
	Agency uint32 `json:"agency"`
	Bets   uint64 `json:"bets"`
	Chain  string `json:"chain"`
}

// MarshalJSON writes the statement with hex hashes.
func (s Statement) MarshalJSON() ([]byte, error) {
	f := statementFile{Format: statementFormat, Lottery: hex.EncodeToString(s.Lottery[:]), Agencies: s.Agencies,
		Root: hex.EncodeToString(s.Root[:]), Signature: hex.EncodeToString(s.Signature[:]),
		Leaves: make([]leafFile, len(s.Leaves))}
	for i, l := range s.Leaves {
		f.Leaves[i] = leafFile{Agency: l.Agency, Bets: l.Bets, Chain: hex.EncodeToString(l.Chain[:])}
	}
	return json.MarshalIndent(f, "", "  ")
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *Statement) UnmarshalJSON(data []byte) error {
	var f statementFile
	if err := json.Unmarshal(data, &f); err != nil {
		return err
	}
	if f.Format != statementFormat {
		return fmt.Errorf("format %q, want %q", f.Format, statementFormat)
	}
	*s = Statement{Commitment: Commitment{Agencies: f.Agencies}, Leaves: make([]Leaf, len(f.Leaves))}
	for _, h := range []struct {
		name, text string
		dst        []byte
	}{{"lottery", f.Lottery, s.Lottery[:]}, {"root", f.Root, s.Root[:]}, {"signature", f.Signature, s.Signature[:]}} {
		if err := decodeHex(h.dst, h.text); err != nil {
			return fmt.Errorf("field %s: %w", h.name, err)
		}
	}
	for i, l := range f.Leaves {
		s.Leaves[i] = Leaf{Agency: l.Agency, Bets: l.Bets}
		if err := decodeHex(s.Leaves[i].Chain[:], l.Chain); err != nil {
			return fmt.Errorf("leaf of agency %d: %w", l.Agency, err)
		}
	}
	return nil
}

// Check verifies the statement on its own: one leaf per agency in order,
// their root, and the signature when pub is given.
func (s *Statement) Check(pub ed25519.PublicKey) error {
	if int(s.Agencies) != len(s.Leaves) {
		return fmt.Errorf("statement names %d agencies but holds %d leaves", s.Agencies, len(s.Leaves))
	}
	for i, l := range s.Leaves {
		if l.Agency != uint32(i+1) {
			return fmt.Errorf("leaf %d is agency %d's, want agency %d's", i, l.Agency, i+1)
		}
	}
	if root := NewTree(s.Leaves).Root(); root != s.Root {
		return fmt.Errorf("the leaves give root %x, the statement says %x: %w", root, s.Root, ErrProof)
	}
	if pub == nil {
		return nil
	}
	return s.Commitment.Verify(pub)
}
