package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Header layout and size limits.
const (
	Version    = 2    // protocol version carried by every frame
	HeaderSize = 4    // version u8, type u8, payload length u16 (big-endian)
	MaxSize    = 8192 // no frame, header included, is larger
	MaxPayload = MaxSize - HeaderSize
)

// Errors of the frame layer; match them with errors.Is.
var (
	ErrTooLarge    = errors.New("frame larger than the size limit")
	ErrVersion     = errors.New("unsupported protocol version")
	ErrUnknownType = errors.New("unknown frame type")
	ErrMalformed   = errors.New("malformed frame payload")
	ErrIncomplete  = errors.New("incomplete frame")
)

// Type identifies the kind of a frame.
type Type uint8

// Frame types.
const (
	TypeHello        Type = 0x01
	TypeWelcome      Type = 0x02
	TypeBets         Type = 0x03
	TypeAck          Type = 0x04
	TypeReject       Type = 0x05
	TypeFinished     Type = 0x06
	TypeQueryWinners Type = 0x07
	TypeWinners      Type = 0x08
	TypeNotReady     Type = 0x09
	TypePing         Type = 0x0A
	TypePong         Type = 0x0B
	TypeError        Type = 0x0C
	TypeReceipt      Type = 0x0D
	TypeCommitment   Type = 0x0E
)

var typeNames = [...]string{
	TypeHello: "HELLO", TypeWelcome: "WELCOME", TypeBets: "BETS", TypeAck: "ACK",
	TypeReject: "REJECT", TypeFinished: "FINISHED", TypeQueryWinners: "QUERY_WINNERS",
	TypeWinners: "WINNERS", TypeNotReady: "NOT_READY", TypePing: "PING", TypePong: "PONG",
	TypeError: "ERROR", TypeReceipt: "RECEIPT", TypeCommitment: "COMMITMENT",
}

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("TYPE_0x%02X", uint8(t))
}

func (t Type) known() bool { return t >= TypeHello && t <= TypeCommitment }

// Code says why a batch was rejected or a session ended.
type Code uint16

// Codes carried by REJECT and ERROR frames.
const (
	CodeMalformed       Code = 1  // a frame's payload does not parse
	CodeVersion         Code = 2  // unsupported protocol version
	CodeTooLarge        Code = 3  // a header announced a frame over the limit
	CodeUnknownType     Code = 4  // unknown frame type
	CodeUnexpected      Code = 5  // frame not allowed in the session's state
	CodeUnknownAgency   Code = 6  // agency id outside 1..N
	CodeInvalidBet      Code = 7  // a bet failed validation (REJECT)
	CodeIndexGap        Code = 8  // batch starts after what the server holds (REJECT)
	CodeAlreadyFinished Code = 9  // bets sent after FINISHED (REJECT)
	CodeTotalMismatch   Code = 10 // FINISHED total differs from the bets held
	CodeTimeout         Code = 11 // no complete frame within the read timeout
	CodeReplaced        Code = 12 // a newer connection took over the agency
	CodeTooManyConns    Code = 13 // the server is at its connection limit
	CodeShuttingDown    Code = 14 // the server is draining
	CodeStorage         Code = 15 // the server could not store the data
	CodeBusy            Code = 16 // reserved; this server never sends it
	CodeFlood           Code = 17 // too many unread bytes, or the peer did not read its answers
	CodeUnknownKey      Code = 18 // the handshake's static key belongs to no agency
	CodeWrongAgency     Code = 19 // HELLO names another agency than the connection's key
	CodeSecureRequired  Code = 20 // a plaintext frame other than PING or PONG on a secured server
	CodeInsecureServer  Code = 21 // a handshake sent to a server running --insecure
	CodeHandshake       Code = 22 // the handshake failed (e.g. the agency has a wrong server key)
)

var codeNames = [...]string{
	CodeMalformed: "malformed", CodeVersion: "bad_version", CodeTooLarge: "too_large",
	CodeUnknownType: "unknown_type", CodeUnexpected: "unexpected_frame",
	CodeUnknownAgency: "unknown_agency", CodeInvalidBet: "invalid_bet", CodeIndexGap: "index_gap",
	CodeAlreadyFinished: "already_finished", CodeTotalMismatch: "total_mismatch",
	CodeTimeout: "timeout", CodeReplaced: "replaced", CodeTooManyConns: "too_many_connections",
	CodeShuttingDown: "shutting_down", CodeStorage: "storage", CodeBusy: "busy", CodeFlood: "flood",
	CodeUnknownKey: "unknown_key", CodeWrongAgency: "wrong_agency", CodeSecureRequired: "secure_required",
	CodeInsecureServer: "insecure_server", CodeHandshake: "handshake_failed",
}

// Temporary reports whether an ERROR with this code may go away if the
// agency reconnects later; the others need a person.
func (c Code) Temporary() bool {
	switch c {
	case CodeTimeout, CodeTooManyConns, CodeShuttingDown, CodeStorage, CodeBusy, CodeFlood:
		return true
	}
	return false
}

func (c Code) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return fmt.Sprintf("code_%d", uint16(c))
}

// Header is the fixed prefix of every frame.
type Header struct {
	Version uint8
	Type    Type
	Length  uint16 // payload bytes that follow the header
}

// Size is the whole frame's size, header included.
func (h Header) Size() int { return HeaderSize + int(h.Length) }

// ParseHeader reads a header from the first HeaderSize bytes of b and checks
// it against maxSize, itself capped at MaxSize, before any payload is read.
func ParseHeader(b []byte, maxSize int) (Header, error) {
	maxSize = min(maxSize, MaxSize)
	if len(b) < HeaderSize {
		return Header{}, ErrIncomplete
	}
	h := Header{Version: b[0], Type: Type(b[1]), Length: binary.BigEndian.Uint16(b[2:4])}
	if h.Version != Version {
		return h, fmt.Errorf("%w %d (this server speaks %d)", ErrVersion, h.Version, Version)
	}
	if !h.Type.known() {
		return h, fmt.Errorf("%w 0x%02X", ErrUnknownType, uint8(h.Type))
	}
	if h.Size() > maxSize {
		return h, fmt.Errorf("%w: %s of %d bytes, limit %d", ErrTooLarge, h.Type, h.Size(), maxSize)
	}
	return h, nil
}

// Frame is one protocol message.
type Frame interface {
	Type() Type
	appendPayload(dst []byte) []byte
}

// Append appends f, header included, to dst; it refuses to build a frame
// larger than MaxSize.
func Append(dst []byte, f Frame) ([]byte, error) {
	start := len(dst)
	dst = append(dst, Version, byte(f.Type()), 0, 0)
	dst = f.appendPayload(dst)
	size := len(dst) - start
	if size > MaxSize {
		return dst[:start], fmt.Errorf("%w: %s of %d bytes, limit %d", ErrTooLarge, f.Type(), size, MaxSize)
	}
	binary.BigEndian.PutUint16(dst[start+2:], uint16(size-HeaderSize))
	return dst, nil
}

// Encode returns f as a new byte slice.
func Encode(f Frame) ([]byte, error) { return Append(nil, f) }

// Hello opens a session for an agency.
type Hello struct{ Agency uint32 }

// HashSize is the size of a chain value, a Merkle root or a lottery id.
const HashSize = 32

// SignatureSize is the size of an Ed25519 signature.
const SignatureSize = 64

// Hash is a SHA-256 value: a chain, a Merkle node or a lottery id.
type Hash [HashSize]byte

// Signature is an Ed25519 signature; all zeros means unsigned.
type Signature [SignatureSize]byte

// Welcome answers Hello with how many of the agency's bets the server holds
// and the limits the agency must respect.
type Welcome struct {
	Held         uint64
	Finished     bool          // the agency's FINISHED is already on record
	Window       uint16        // most frames unanswered at once: BETS, FINISHED, and PING or QUERY_WINNERS behind them
	MaxFrame     uint16        // largest frame the server accepts
	ReadTimeout  time.Duration // millisecond resolution on the wire
	PingInterval time.Duration // the server PINGs a waiting agency this often
	Chain        Hash          // chain value over the Held bets
}

// Bets carries a batch: First is the index of its first bet in the agency's stream.
type Bets struct {
	First uint64
	Bets  []Bet
}

// Ack confirms that a batch is on disk; Chain covers the agency's first
// Held bets.
type Ack struct {
	First uint64
	Count uint16
	Held  uint64
	Chain Hash
}

// Reject refuses a whole batch; Index is the stream index of the first bad bet.
type Reject struct {
	Code   Code
	Index  uint64
	Reason string
}

// Finished says the agency has sent all its bets.
type Finished struct{ Total uint64 }

// QueryWinners asks for the agency's winners.
type QueryWinners struct{}

// Winners carries documents of the agency's winning bets; Last marks the final chunk.
type Winners struct {
	Last      bool
	Documents []string
}

// NotReady says the draw has not happened yet.
type NotReady struct {
	RetryAfter time.Duration // millisecond resolution on the wire
	Finished   uint32        // agencies finished so far
	Agencies   uint32        // agencies the draw waits for
}

// Ping asks for a Pong carrying the same payload.
type Ping struct{ Payload []byte }

// Pong echoes a Ping's payload.
type Pong struct{ Payload []byte }

// Error ends a session with a code and a reason; the connection closes after it.
type Error struct {
	Code   Code
	Reason string
}

// Receipt is the server's signed statement of what it holds for an agency
// that has finished.
type Receipt struct {
	Lottery   Hash
	Agency    uint32
	Bets      uint64
	Chain     Hash
	Signature Signature
}

// MaxProof is the longest Merkle proof a COMMITMENT carries (2^32 leaves).
const MaxProof = 32

// Commitment is the signed Merkle root over every agency's (bets, chain),
// fixed before any winner is sent, with the proof of the receiver's leaf.
type Commitment struct {
	Lottery   Hash
	Agencies  uint32
	Root      Hash
	Signature Signature
	Proof     []Hash // siblings from the leaf up
}

func (*Hello) Type() Type        { return TypeHello }
func (*Welcome) Type() Type      { return TypeWelcome }
func (*Bets) Type() Type         { return TypeBets }
func (*Ack) Type() Type          { return TypeAck }
func (*Reject) Type() Type       { return TypeReject }
func (*Finished) Type() Type     { return TypeFinished }
func (*QueryWinners) Type() Type { return TypeQueryWinners }
func (*Winners) Type() Type      { return TypeWinners }
func (*NotReady) Type() Type     { return TypeNotReady }
func (*Ping) Type() Type         { return TypePing }
func (*Pong) Type() Type         { return TypePong }
func (*Error) Type() Type        { return TypeError }
func (*Receipt) Type() Type      { return TypeReceipt }
func (*Commitment) Type() Type   { return TypeCommitment }

// MaxReasonLen bounds the reason text of REJECT and ERROR frames.
const MaxReasonLen = 1024

func (f *Hello) appendPayload(b []byte) []byte { return binary.BigEndian.AppendUint32(b, f.Agency) }

func (f *Welcome) appendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, f.Held)
	b = append(b, boolFlag(f.Finished))
	b = binary.BigEndian.AppendUint16(b, f.Window)
	b = binary.BigEndian.AppendUint16(b, f.MaxFrame)
	b = binary.BigEndian.AppendUint32(b, millis(f.ReadTimeout))
	b = binary.BigEndian.AppendUint32(b, millis(f.PingInterval))
	return append(b, f.Chain[:]...)
}

// millis is d in whole milliseconds, clamped to a u32.
func millis(d time.Duration) uint32 {
	ms := d.Milliseconds()
	if ms < 0 {
		return 0
	}
	return uint32(min(ms, 1<<32-1))
}

func (f *Bets) appendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, f.First)
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.Bets)))
	for i := range f.Bets {
		b = AppendBet(b, &f.Bets[i])
	}
	return b
}

// AppendBet appends the wire form of one bet (the layout inside BETS).
func AppendBet(b []byte, bet *Bet) []byte {
	b = appendShort(b, bet.FirstName)
	b = appendShort(b, bet.LastName)
	b = appendShort(b, bet.Document)
	b = binary.BigEndian.AppendUint32(b, uint32(bet.Birthdate))
	return binary.BigEndian.AppendUint16(b, bet.Number)
}

func (f *Ack) appendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, f.First)
	b = binary.BigEndian.AppendUint16(b, f.Count)
	b = binary.BigEndian.AppendUint64(b, f.Held)
	return append(b, f.Chain[:]...)
}

func (f *Reject) appendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(f.Code))
	b = binary.BigEndian.AppendUint64(b, f.Index)
	return appendReason(b, f.Reason)
}

func (f *Finished) appendPayload(b []byte) []byte { return binary.BigEndian.AppendUint64(b, f.Total) }

func (*QueryWinners) appendPayload(b []byte) []byte { return b }

func (f *Winners) appendPayload(b []byte) []byte {
	b = append(b, boolFlag(f.Last))
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.Documents)))
	for _, d := range f.Documents {
		b = appendShort(b, d)
	}
	return b
}

func (f *NotReady) appendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, millis(f.RetryAfter))
	b = binary.BigEndian.AppendUint32(b, f.Finished)
	return binary.BigEndian.AppendUint32(b, f.Agencies)
}

func (f *Ping) appendPayload(b []byte) []byte { return append(b, f.Payload...) }
func (f *Pong) appendPayload(b []byte) []byte { return append(b, f.Payload...) }

func (f *Error) appendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(f.Code))
	return appendReason(b, f.Reason)
}

func (f *Receipt) appendPayload(b []byte) []byte {
	b = append(b, f.Lottery[:]...)
	b = binary.BigEndian.AppendUint32(b, f.Agency)
	b = binary.BigEndian.AppendUint64(b, f.Bets)
	b = append(b, f.Chain[:]...)
	return append(b, f.Signature[:]...)
}

func (f *Commitment) appendPayload(b []byte) []byte {
	b = append(b, f.Lottery[:]...)
	b = binary.BigEndian.AppendUint32(b, f.Agencies)
	b = append(b, f.Root[:]...)
	b = append(b, f.Signature[:]...)
	proof := f.Proof[:min(len(f.Proof), MaxProof)]
	b = append(b, byte(len(proof)))
	for i := range proof {
		b = append(b, proof[i][:]...)
	}
	return b
}

func boolFlag(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// maxShort is the longest string a one-byte length can announce.
const maxShort = 255

// appendShort writes a string of at most maxShort bytes with a one-byte
// length; longer strings are cut, which validation on both sides never lets
// happen.
func appendShort(b []byte, s string) []byte {
	s = s[:shortLen(s)]
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// shortLen is how many bytes of s appendShort writes.
func shortLen(s string) int { return min(len(s), maxShort) }

func appendReason(b []byte, s string) []byte {
	s = clipUTF8(s, MaxReasonLen)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// clipUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func clipUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut > n-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if !utf8.RuneStart(s[cut]) {
		cut = n // not UTF-8 around the cut: cut at the byte limit
	}
	return s[:cut]
}

// WinnersFrames splits documents into as many WINNERS frames as needed to
// keep each under MaxSize; the last one has Last set. No documents still
// yield one (empty, last) frame.
func WinnersFrames(documents []string) []*Winners {
	var out []*Winners
	const fixed = HeaderSize + 1 + 2
	for {
		size, n := fixed, 0
		for n < len(documents) && n < 0xFFFF && size+1+shortLen(documents[n]) <= MaxSize {
			size += 1 + shortLen(documents[n])
			n++
		}
		w := &Winners{Documents: documents[:n:n]}
		documents = documents[n:]
		out = append(out, w)
		if len(documents) == 0 {
			w.Last = true
			return out
		}
	}
}

// BetsFrameSize is the size of a BETS frame holding bets.
func BetsFrameSize(bets []Bet) int {
	size := HeaderSize + 8 + 2
	for i := range bets {
		size += bets[i].wireSize()
	}
	return size
}

// BetWireSize is how many bytes b adds to a BETS frame.
func BetWireSize(b *Bet) int { return b.wireSize() }
