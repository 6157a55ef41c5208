package frame

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// minBetSize is the smallest bet the wire can carry: three empty strings
// (their length bytes), a date and a number. Counts are checked against it,
// not against the smallest valid bet, so that empty fields are reported as
// a *FieldError rather than as a malformed frame.
const minBetSize = 3 + 4 + 2

// Parse decodes a payload of type t. Strings in the result are copied out of
// payload, so payload may be reused as soon as Parse returns. When a BETS
// frame holds an invalid bet, Parse returns a *FieldError and still returns
// the decoded *Bets, so the caller can say which stream index was bad and
// how many bets the refused batch held.
func Parse(t Type, payload []byte, today Date) (Frame, error) {
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("%w: %s payload of %d bytes", ErrTooLarge, t, len(payload))
	}
	r := reader{buf: payload}
	var f Frame
	switch t {
	case TypeHello:
		f = &Hello{Agency: r.u32()}
	case TypeWelcome:
		f = &Welcome{Held: r.u64(), Finished: r.flag(), Window: r.u16(), MaxFrame: r.u16(),
			ReadTimeout: r.millis(), PingInterval: r.millis(), Chain: r.hash()}
	case TypeBets:
		return parseBets(&r, today)
	case TypeAck:
		f = &Ack{First: r.u64(), Count: r.u16(), Held: r.u64(), Chain: r.hash()}
	case TypeReject:
		f = &Reject{Code: Code(r.u16()), Index: r.u64(), Reason: r.reason()}
	case TypeFinished:
		f = &Finished{Total: r.u64()}
	case TypeQueryWinners:
		f = &QueryWinners{}
	case TypeWinners:
		return parseWinners(&r)
	case TypeNotReady:
		f = &NotReady{RetryAfter: r.millis(), Finished: r.u32(), Agencies: r.u32()}
	case TypePing:
		f = &Ping{Payload: r.rest()}
	case TypePong:
		f = &Pong{Payload: r.rest()}
	case TypeError:
		f = &Error{Code: Code(r.u16()), Reason: r.reason()}
	case TypeReceipt:
		f = &Receipt{Lottery: r.hash(), Agency: r.u32(), Bets: r.u64(), Chain: r.hash(), Signature: r.signature()}
	case TypeCommitment:
		c := &Commitment{Lottery: r.hash(), Agencies: r.u32(), Root: r.hash(), Signature: r.signature()}
		if n := r.u8(); n > MaxProof && r.err == nil {
			r.err = fmt.Errorf("proof of %d hashes, at most %d", n, MaxProof)
		} else {
			c.Proof = make([]Hash, 0, n)
			for range n {
				c.Proof = append(c.Proof, r.hash())
			}
		}
		f = c
	default:
		return nil, fmt.Errorf("%w 0x%02X", ErrUnknownType, uint8(t))
	}
	if err := r.finish(t); err != nil {
		return nil, err
	}
	return f, nil
}

func parseBets(r *reader, today Date) (Frame, error) {
	f := &Bets{First: r.u64()}
	count := int(r.u16())
	if r.err != nil {
		return nil, r.malformed(TypeBets)
	}
	// The count is only trusted as far as the bytes present can back it.
	if count*minBetSize > len(r.buf)-r.off {
		return nil, fmt.Errorf("%w: BETS announces %d bets but carries only %d bytes", ErrMalformed, count, len(r.buf)-r.off)
	}
	// One string holds every text field of the batch: one allocation per frame.
	text := string(r.buf[r.off:])
	base := r.off
	f.Bets = takeBets(count)
	for i := range f.Bets {
		b := &f.Bets[i]
		b.FirstName = r.shortIn(text, base)
		b.LastName = r.shortIn(text, base)
		b.Document = r.shortIn(text, base)
		b.Birthdate = Date(r.u32())
		b.Number = r.u16()
		if r.err != nil {
			return nil, fmt.Errorf("%w: BETS truncated inside bet %d of %d", ErrMalformed, i, count)
		}
	}
	if err := r.finish(TypeBets); err != nil {
		return nil, err
	}
	for i := range f.Bets {
		if err := f.Bets[i].Validate(today); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				fe.Bet = i
			}
			return f, err
		}
	}
	return f, nil
}

// betSlices holds the bet slices of BETS frames handed back with
// RecycleBets: a server decodes thousands of batches a second, each of
// which would otherwise be a fresh 5 KiB for the garbage collector.
var betSlices sync.Pool // *[]Bet, cleared

// takeBets returns n cleared bets, from the pool when its next slice has
// room for them: batches of one stream are all the same size but the last.
func takeBets(n int) []Bet {
	if p, ok := betSlices.Get().(*[]Bet); ok {
		if cap(*p) >= n {
			return (*p)[:n]
		}
		betSlices.Put(p)
	}
	return make([]Bet, n)
}

// minPooledBets and maxPooledBets bound the slices kept: tiny ones would
// only be put back by takeBets, and the pool keeps no outsized frame.
const minPooledBets, maxPooledBets = 16, 512

// RecycleBets hands back the Bets of a frame this package decoded, for a
// later decode to reuse. The caller, and anyone it gave them to, must be
// done with them: nothing may read them afterwards. The strings the bets
// held are let go.
func RecycleBets(bets []Bet) {
	if cap(bets) < minPooledBets || cap(bets) > maxPooledBets {
		return
	}
	bets = bets[:cap(bets)]
	clear(bets)
	betSlices.Put(&bets)
}

func parseWinners(r *reader) (Frame, error) {
	f := &Winners{Last: r.flag()}
	count := int(r.u16())
	if r.err != nil {
		return nil, r.malformed(TypeWinners)
	}
	if count > len(r.buf)-r.off { // each document takes at least its length byte
		return nil, fmt.Errorf("%w: WINNERS announces %d documents but carries only %d bytes", ErrMalformed, count, len(r.buf)-r.off)
	}
	f.Documents = make([]string, count)
	for i := range f.Documents {
		d := r.short()
		if r.err != nil {
			return nil, fmt.Errorf("%w: WINNERS truncated inside document %d of %d", ErrMalformed, i, count)
		}
		if !ValidDocument(string(d)) {
			return nil, &FieldError{Bet: -1, Field: "document", Value: shorten(string(d)), Err: ErrDigits}
		}
		f.Documents[i] = string(d)
	}
	if err := r.finish(TypeWinners); err != nil {
		return nil, err
	}
	return f, nil
}

// reader walks a payload; the first short read sets err and every later read
// returns zero values, so parsers check err once at the end.
type reader struct {
	buf []byte
	off int
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil // keep the first error: it says what went wrong
	}
	if n > len(r.buf)-r.off {
		r.err = io.ErrUnexpectedEOF
		return nil
	}
	b := r.buf[r.off : r.off+n]
	r.off += n
	return b
}

func (r *reader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) millis() time.Duration { return time.Duration(r.u32()) * time.Millisecond }

func (r *reader) hash() (h Hash) {
	if b := r.take(HashSize); b != nil {
		copy(h[:], b)
	}
	return h
}

func (r *reader) signature() (s Signature) {
	if b := r.take(SignatureSize); b != nil {
		copy(s[:], b)
	}
	return s
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) flag() bool {
	b := r.take(1)
	if b == nil {
		return false
	}
	if b[0] > 1 {
		r.err = errBadFlag
	}
	return b[0] == 1
}

var (
	errBadFlag    = errors.New("flag byte is neither 0 nor 1")
	errLongReason = fmt.Errorf("reason longer than %d bytes", MaxReasonLen)
)

func (r *reader) short() []byte {
	b := r.take(1)
	if b == nil {
		return nil
	}
	return r.take(int(b[0]))
}

// shortIn reads a one-byte-length string and returns it as a substring of
// text, which holds r.buf[base:].
func (r *reader) shortIn(text string, base int) string {
	b := r.short()
	if r.err != nil {
		return ""
	}
	end := r.off - base
	return text[end-len(b) : end]
}

func (r *reader) reason() string {
	n := int(r.u16())
	if n > MaxReasonLen && r.err == nil {
		r.err = errLongReason
	}
	b := r.take(n)
	// Repairing invalid UTF-8 can make the text longer; clip it again so
	// that a decoded reason always encodes back unchanged.
	return clipUTF8(strings.ToValidUTF8(string(b), "\uFFFD"), MaxReasonLen)
}

func (r *reader) rest() []byte {
	b := make([]byte, len(r.buf)-r.off)
	copy(b, r.buf[r.off:])
	r.off = len(r.buf)
	return b
}

func (r *reader) malformed(t Type) error {
	if r.err != io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: %s %v", ErrMalformed, t, r.err)
	}
	return fmt.Errorf("%w: %s payload of %d bytes is truncated", ErrMalformed, t, len(r.buf))
}

func (r *reader) finish(t Type) error {
	if r.err != nil {
		return r.malformed(t)
	}
	if r.off != len(r.buf) {
		return fmt.Errorf("%w: %s has %d trailing bytes", ErrMalformed, t, len(r.buf)-r.off)
	}
	return nil
}

// Source is the part of a buffered byte stream the decoder reads from;
// *bufio.Reader and gnet.Conn both provide it.
type Source interface {
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
}

// Decoder takes whole frames out of a Source. It never consumes a partial
// frame: when the source holds too few bytes it returns ErrIncomplete and
// leaves them in place, so the same frames come out however the bytes arrive.
type Decoder struct {
	// MaxSize is the largest frame accepted; zero or more than MaxSize means MaxSize.
	MaxSize int
	// Today returns the latest acceptable birthdate; nil means frame.Today.
	Today func() Date
}

// Next returns the next frame in src. Errors other than ErrIncomplete and
// io.EOF mean the stream cannot be trusted any further; a *FieldError on a
// BETS frame is the exception: that frame was consumed and the stream stays
// usable.
func (d *Decoder) Next(src Source) (Frame, error) {
	hb, err := src.Peek(HeaderSize)
	if err != nil {
		return nil, sourceErr(err, len(hb) > 0)
	}
	h, err := ParseHeader(hb, d.maxSize())
	if err != nil {
		return nil, err
	}
	whole, err := src.Peek(h.Size())
	if err != nil {
		return nil, sourceErr(err, true)
	}
	today := Today
	if d.Today != nil {
		today = d.Today
	}
	f, err := Parse(h.Type, whole[HeaderSize:], today())
	if _, derr := src.Discard(h.Size()); derr != nil && err == nil {
		err = derr
	}
	return f, err
}

func (d *Decoder) maxSize() int {
	if d.MaxSize <= 0 || d.MaxSize > MaxSize {
		return MaxSize
	}
	return d.MaxSize
}

// sourceErr maps what a Source says about a short peek: not enough bytes yet
// (gnet) is ErrIncomplete; end of stream is io.EOF before any byte of a frame
// and io.ErrUnexpectedEOF inside one.
func sourceErr(err error, inFrame bool) error {
	switch {
	case errors.Is(err, io.ErrShortBuffer):
		return ErrIncomplete
	case errors.Is(err, io.EOF) && inFrame:
		return io.ErrUnexpectedEOF
	}
	return err
}

// Write encodes f and writes it with a single Write call, so a frame is never
// split between writers.
func Write(w io.Writer, f Frame) error {
	b, err := Encode(f)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// NewReader returns a bufio.Reader big enough to peek a whole frame.
func NewReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, MaxSize) }
