package receipt

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tp0/loteria/frame"
)

// Errors of verification; match them with errors.Is.
var (
	ErrUnsigned  = errors.New("not signed")
	ErrSignature = errors.New("signature does not verify")
	ErrProof     = errors.New("merkle proof does not lead to the root")
)

// Domain-separation prefixes of everything that is hashed or signed.
const (
	lotteryDomain    = "loteria lottery v1\x00"
	receiptDomain    = "loteria receipt v1\x00"
	commitmentDomain = "loteria commitment v1\x00"
)

// NonceSize is the size of the random part of a lottery id.
const NonceSize = 16

// NewNonce returns fresh random bytes for a new lottery's id.
func NewNonce() ([NonceSize]byte, error) {
	var n [NonceSize]byte
	_, err := rand.Read(n[:])
	return n, err
}

// LotteryID names one lottery: SHA-256 over its agency count, winning number
// and a nonce drawn when its store was created, so receipts of two
// lotteries can never be confused.
func LotteryID(agencies uint32, winningNumber uint16, nonce [NonceSize]byte) frame.Hash {
	b := make([]byte, 0, len(lotteryDomain)+4+2+NonceSize)
	b = append(b, lotteryDomain...)
	b = binary.BigEndian.AppendUint32(b, agencies)
	b = binary.BigEndian.AppendUint16(b, winningNumber)
	b = append(b, nonce[:]...)
	return sha256.Sum256(b)
}

// Receipt is the server's signed statement that it holds exactly Bets bets
// of Agency in Lottery, whose chain value is Chain.
type Receipt frame.Receipt

// SignedBytes is the message the signature covers.
func (r *Receipt) SignedBytes() []byte {
	b := make([]byte, 0, len(receiptDomain)+frame.HashSize*2+12)
	b = append(b, receiptDomain...)
	b = append(b, r.Lottery[:]...)
	b = binary.BigEndian.AppendUint32(b, r.Agency)
	b = binary.BigEndian.AppendUint64(b, r.Bets)
	return append(b, r.Chain[:]...)
}

// Sign signs r with key; a nil key leaves it unsigned (all zeros).
func (r *Receipt) Sign(key ed25519.PrivateKey) {
	r.Signature = sign(key, r.SignedBytes())
}

// Verify checks r's signature with the server's signing key.
func (r *Receipt) Verify(pub ed25519.PublicKey) error {
	return verify(pub, r.SignedBytes(), r.Signature, "receipt")
}

func sign(key ed25519.PrivateKey, msg []byte) (s frame.Signature) {
	if key != nil {
		copy(s[:], ed25519.Sign(key, msg))
	}
	return s
}

func verify(pub ed25519.PublicKey, msg []byte, sig frame.Signature, what string) error {
	if sig == (frame.Signature{}) {
		return fmt.Errorf("%s: %w", what, ErrUnsigned)
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, msg, sig[:]) {
		return fmt.Errorf("%s: %w", what, ErrSignature)
	}
	return nil
}

// fileFormat names the receipt file layout.
const fileFormat = "loteria-receipt-1"

type receiptFile struct {
	Format    string `json:"format"`
	Lottery   string `json:"lottery"`
	Agency    uint32 `json:"agency"`
	Bets      uint64 `json:"bets"`
	Chain     string `json:"chain"`
	Signature string `json:"signature"`
	Root      string `json:"root,omitempty"`
}

// File is what an agency keeps: its receipt and, once the draw is done,
// the commitment root its leaf was proven under.
type File struct {
	Receipt Receipt
	Root    *frame.Hash
}

// WriteFile saves f as JSON at path, atomically (temp file, fsync, rename).
func WriteFile(path string, f File) error {
	rf := receiptFile{
		Format: fileFormat, Lottery: hex.EncodeToString(f.Receipt.Lottery[:]), Agency: f.Receipt.Agency,
		Bets: f.Receipt.Bets, Chain: hex.EncodeToString(f.Receipt.Chain[:]),
		Signature: hex.EncodeToString(f.Receipt.Signature[:]),
	}
	if f.Root != nil {
		rf.Root = hex.EncodeToString(f.Root[:])
	}
	data, err := json.MarshalIndent(rf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode receipt: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write receipt: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write receipt %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync receipt %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close receipt %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("chmod receipt %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write receipt %s: %w", path, err)
	}
	return nil
}

// ReadFile loads a receipt saved by WriteFile.
func ReadFile(path string) (File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("read receipt: %w", err)
	}
	var rf receiptFile
	if err := json.Unmarshal(data, &rf); err != nil {
		return File{}, fmt.Errorf("receipt %s: %w", path, err)
	}
	if rf.Format != fileFormat {
		return File{}, fmt.Errorf("receipt %s: format %q, want %q", path, rf.Format, fileFormat)
	}
	f := File{Receipt: Receipt{Agency: rf.Agency, Bets: rf.Bets}}
	fields := []struct {
		name string
		text string
		dst  []byte
	}{
		{"lottery", rf.Lottery, f.Receipt.Lottery[:]},
		{"chain", rf.Chain, f.Receipt.Chain[:]},
		{"signature", rf.Signature, f.Receipt.Signature[:]},
	}
	if rf.Root != "" {
		f.Root = new(frame.Hash)
		fields = append(fields, struct {
			name string
			text string
			dst  []byte
		}{"root", rf.Root, f.Root[:]})
	}
	for _, fl := range fields {
		if err := decodeHex(fl.dst, fl.text); err != nil {
			return File{}, fmt.Errorf("receipt %s: field %s: %w", path, fl.name, err)
		}
	}
	return f, nil
}

func decodeHex(dst []byte, s string) error {
	b, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	if len(b) != len(dst) {
		return fmt.Errorf("%d bytes, want %d", len(b), len(dst))
	}
	copy(dst, b)
	return nil
}
