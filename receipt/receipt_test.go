package receipt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/tp0/loteria/frame"
)

func testBets(n int) []frame.Bet {
	bets := make([]frame.Bet, n)
	for i := range bets {
		bets[i] = frame.Bet{FirstName: "Nombre" + strconv.Itoa(i), LastName: "Núñez, Jr.", Document: strconv.Itoa(30_000_000 + i),
			Birthdate: frame.NewDate(1950+i%50, 1+i%12, 1+i%28), Number: uint16(i * 37 % 10000)}
	}
	return bets
}

func TestChainIsSHA256OfTheEncodedStream(t *testing.T) {
	bets := testBets(50)
	var stream []byte
	c := NewChain()
	if c.Sum() != Empty() || Empty() != sha256.Sum256(nil) {
		t.Fatal("an empty chain is not SHA-256 of nothing")
	}
	for i := range bets {
		stream = frame.AppendBet(stream, &bets[i])
		c.Add(&bets[i])
		if got, want := c.Sum(), frame.Hash(sha256.Sum256(stream)); got != want {
			t.Fatalf("after %d bets: chain %x, want %x", i+1, got, want)
		}
	}
	if c.Len() != 50 || ChainOf(bets) != c.Sum() {
		t.Fatalf("Len %d, ChainOf differs", c.Len())
	}
}

func TestChainDetectsAnyChange(t *testing.T) {
	bets := testBets(10)
	want := ChainOf(bets)
	changes := map[string]func([]frame.Bet) []frame.Bet{
		"name":    func(b []frame.Bet) []frame.Bet { b[3].FirstName += "x"; return b },
		"number":  func(b []frame.Bet) []frame.Bet { b[9].Number++; return b },
		"removed": func(b []frame.Bet) []frame.Bet { return append(b[:4], b[5:]...) },
		"added":   func(b []frame.Bet) []frame.Bet { return append(b, b[0]) },
		"swapped": func(b []frame.Bet) []frame.Bet { b[1], b[2] = b[2], b[1]; return b },
		// moving a byte between two fields keeps the concatenated text the same
		"boundary": func(b []frame.Bet) []frame.Bet {
			b[0].FirstName, b[0].LastName = b[0].FirstName+"N", b[0].LastName[1:]
			return b
		},
	}
	for name, change := range changes {
		got := ChainOf(change(append([]frame.Bet(nil), bets...)))
		if got == want {
			t.Errorf("%s: chain unchanged", name)
		}
	}
}

func TestChainStateResumes(t *testing.T) {
	bets := testBets(20)
	c := NewChain()
	for i := range bets[:7] {
		c.Add(&bets[i])
	}
	state, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var d Chain
	if err := d.UnmarshalBinary(state); err != nil {
		t.Fatal(err)
	}
	e := c.Clone()
	for i := range bets[7:] {
		c.Add(&bets[7+i])
		d.Add(&bets[7+i])
		e.Add(&bets[7+i])
	}
	if d.Sum() != ChainOf(bets) || e.Sum() != ChainOf(bets) || d.Len() != 20 {
		t.Fatalf("resumed chain differs (len %d)", d.Len())
	}
	if err := d.UnmarshalBinary(state[:5]); err == nil {
		t.Error("a truncated state restores")
	}
	if err := d.UnmarshalBinary(append(state[:8:8], "garbage"...)); err == nil {
		t.Error("a garbage state restores")
	}
}

func TestChainAddDoesNotAllocate(t *testing.T) {
	bets := testBets(4)
	c := NewChain()
	allocs := testing.AllocsPerRun(200, func() {
		for i := range bets {
			c.Add(&bets[i])
		}
		_ = c.Sum()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per 4 bets and a Sum", allocs)
	}
}

func TestMerkleProofsForEverySize(t *testing.T) {
	for n := 1; n <= 40; n++ {
		leaves := make([]Leaf, n)
		for i := range leaves {
			leaves[i] = Leaf{Agency: uint32(i + 1), Bets: uint64(i * 100), Chain: ChainOf(testBets(i % 3))}
		}
		tree := NewTree(leaves)
		root := tree.Root()
		for i := range leaves {
			proof := tree.Proof(i)
			if err := VerifyProof(leaves[i], i, n, proof, root); err != nil {
				t.Fatalf("n=%d leaf %d: %v", n, i, err)
			}
			other := leaves[i]
			other.Bets++
			if err := VerifyProof(other, i, n, proof, root); !errors.Is(err, ErrProof) {
				t.Fatalf("n=%d leaf %d with one more bet verifies: %v", n, i, err)
			}
			if len(proof) > 0 {
				bad := append([]frame.Hash(nil), proof...)
				bad[len(bad)-1][0] ^= 1
				if err := VerifyProof(leaves[i], i, n, bad, root); !errors.Is(err, ErrProof) {
					t.Fatalf("n=%d leaf %d with a flipped proof bit verifies", n, i)
				}
				if err := VerifyProof(leaves[i], i, n, proof[:len(proof)-1], root); !errors.Is(err, ErrProof) {
					t.Fatalf("n=%d leaf %d with a short proof verifies", n, i)
				}
			}
			if err := VerifyProof(leaves[i], i, n, append(proof, root), root); !errors.Is(err, ErrProof) {
				t.Fatalf("n=%d leaf %d with an extra hash verifies", n, i)
			}
			if n > 1 {
				j := (i + 1) % n
				if err := VerifyProof(leaves[i], j, n, proof, root); err == nil {
					t.Fatalf("n=%d leaf %d verifies at index %d", n, i, j)
				}
			}
		}
		if n == 1 && root != leaves[0].Hash() {
			t.Fatal("the root of one leaf is not the leaf")
		}
	}
}

func TestReceiptSignature(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	nonce := [NonceSize]byte{1, 2, 3}
	r := Receipt{Lottery: LotteryID(5, 7574, nonce), Agency: 3, Bets: 16014, Chain: ChainOf(testBets(3))}
	if err := r.Verify(pub); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned receipt: %v", err)
	}
	r.Sign(key)
	if err := r.Verify(pub); err != nil {
		t.Fatal(err)
	}
	for name, spoil := range map[string]func(*Receipt){
		"bets":    func(r *Receipt) { r.Bets-- },
		"agency":  func(r *Receipt) { r.Agency = 2 },
		"chain":   func(r *Receipt) { r.Chain[31] ^= 1 },
		"lottery": func(r *Receipt) { r.Lottery = LotteryID(5, 7575, nonce) },
	} {
		bad := r
		spoil(&bad)
		if err := bad.Verify(pub); !errors.Is(err, ErrSignature) {
			t.Errorf("%s changed: %v", name, err)
		}
	}
	otherPub, _, _ := ed25519.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{8}, 64)))
	if err := r.Verify(otherPub); !errors.Is(err, ErrSignature) {
		t.Errorf("another key verifies: %v", err)
	}
	if LotteryID(5, 7574, nonce) == LotteryID(6, 7574, nonce) || LotteryID(5, 7574, nonce) == LotteryID(5, 7574, [NonceSize]byte{}) {
		t.Error("lottery ids collide")
	}
}

func TestReceiptFileRoundTrip(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{9}, 64)))
	r := Receipt{Lottery: LotteryID(2, 1, [NonceSize]byte{}), Agency: 2, Bets: 7, Chain: ChainOf(testBets(7))}
	r.Sign(key)
	path := filepath.Join(t.TempDir(), "agency-2.receipt.json")
	if err := WriteFile(path, File{Receipt: r}); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil || got.Receipt != r || got.Root != nil {
		t.Fatalf("ReadFile = %+v, %v", got, err)
	}
	root := frame.Hash{1, 2}
	if err := WriteFile(path, File{Receipt: r, Root: &root}); err != nil {
		t.Fatal(err)
	}
	if got, err = ReadFile(path); err != nil || got.Root == nil || *got.Root != root {
		t.Fatalf("with root: %+v, %v", got, err)
	}
}

func TestCheckCommitment(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{5}, 64)))
	leaves := []Leaf{{1, 10, ChainOf(testBets(10))}, {2, 0, Empty()}, {3, 4, ChainOf(testBets(4))}}
	tree := NewTree(leaves)
	c := Commitment{Lottery: frame.Hash{9}, Agencies: 3, Root: tree.Root()}
	c.Sign(key)
	for i, l := range leaves {
		f := &frame.Commitment{Lottery: c.Lottery, Agencies: 3, Root: c.Root, Signature: c.Signature, Proof: tree.Proof(i)}
		if err := Check(f, l, pub); err != nil {
			t.Fatalf("agency %d: %v", l.Agency, err)
		}
		f.Signature[0] ^= 1
		if err := Check(f, l, pub); !errors.Is(err, ErrSignature) {
			t.Fatalf("agency %d: a bad signature passes: %v", l.Agency, err)
		}
	}
	f := &frame.Commitment{Agencies: 3, Root: c.Root, Proof: tree.Proof(0)}
	if err := Check(f, Leaf{Agency: 4}, nil); !errors.Is(err, ErrProof) {
		t.Errorf("agency outside the commitment: %v", err)
	}
}

func TestStatementRoundTripAndCheck(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{3}, 64)))
	leaves := []Leaf{{1, 3, ChainOf(testBets(3))}, {2, 0, Empty()}, {3, 5, ChainOf(testBets(5))}}
	s := Statement{Commitment: Commitment{Lottery: frame.Hash{7}, Agencies: 3, Root: NewTree(leaves).Root()}, Leaves: leaves}
	s.Sign(key)
	data, err := s.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var got Statement
	if err := got.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	if err := got.Check(pub); err != nil {
		t.Fatal(err)
	}
	got.Leaves[2].Bets++
	if err := got.Check(pub); !errors.Is(err, ErrProof) {
		t.Fatalf("a changed leaf passes: %v", err)
	}
	got.Leaves[2].Bets--
	got.Signature[5] ^= 1
	if err := got.Check(pub); !errors.Is(err, ErrSignature) {
		t.Fatalf("a changed signature passes: %v", err)
	}
	if err := got.UnmarshalJSON([]byte(`{"format":"x"}`)); err == nil {
		t.Fatal("a wrong format loads")
	}
}

// TestStatementIsWhatEncodingJSONWrites keeps the hand-built statement
// byte for byte what json.MarshalIndent wrote before: statements already
// on disk, and those other servers sharing a store saved, compare equal.
func TestStatementIsWhatEncodingJSONWrites(t *testing.T) {
	for _, n := range []int{0, 1, 2, 7, 300} {
		s := Statement{Commitment: Commitment{Lottery: sha256.Sum256([]byte{byte(n)}), Agencies: uint32(n)}}
		for i := range n {
			bets := uint64(i * 977)
			if i == n-1 {
				bets = ^uint64(0)
			}
			s.Leaves = append(s.Leaves, Leaf{Agency: uint32(i + 1), Bets: bets, Chain: sha256.Sum256([]byte(strconv.Itoa(i)))})
		}
		s.Root = NewTree(s.Leaves).Root()
		s.Signature[0], s.Signature[63] = 0xab, 0x01
		got, err := s.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		f := statementFile{Format: statementFormat, Lottery: hex.EncodeToString(s.Lottery[:]), Agencies: s.Agencies,
			Root: hex.EncodeToString(s.Root[:]), Signature: hex.EncodeToString(s.Signature[:]), Leaves: make([]leafFile, n)}
		for i, l := range s.Leaves {
			f.Leaves[i] = leafFile{Agency: l.Agency, Bets: l.Bets, Chain: hex.EncodeToString(l.Chain[:])}
		}
		want, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d leaves: got\n%s\nwant\n%s", n, got, want)
		}
	}
}

func BenchmarkStatement10k(b *testing.B) {
	s := Statement{Commitment: Commitment{Agencies: 10_000}, Leaves: make([]Leaf, 10_000)}
	for i := range s.Leaves {
		s.Leaves[i] = Leaf{Agency: uint32(i + 1), Bets: 100, Chain: sha256.Sum256([]byte(strconv.Itoa(i)))}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}
