// Package agency is the betting agency's client: it streams bets from a CSV
// file, uploads them in batches to the event server, resumes after faults,
// and collects the agency's winners after the draw.
package agency

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
)

// RowError names the file and line of a bet that cannot be read.
type RowError struct {
	File string
	Line int
	Err  error
}

func (e *RowError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *RowError) Unwrap() error { return e.Err }

// Source yields an agency's bets in order.
type Source interface {
	// Next returns the next bet, or io.EOF after the last one.
	Next() (frame.Bet, error)
	// Progress returns how much of the input was read, as a fraction from 0 to 1.
	Progress() float64
	// Rewind starts over from the first bet.
	Rewind() error
	// Position is where the next bet will be read from.
	Position() Position
	// Seek goes back (or forward) to a Position the source returned.
	Seek(Position) error
	Close() error
}

// Position is a place in a Source: a byte offset and the line there for a
// file, an index for bets in memory.
type Position struct {
	Offset int64
	Line   int
}

// FileSource streams bets from a CSV file without loading it whole: no
// header, columns first_name,last_name,document,birthdate,number, CRLF or LF
// line endings, quoted fields allowed, an optional UTF-8 byte order mark.
type FileSource struct {
	path  string
	f     *os.File
	size  int64
	cr    *csv.Reader
	base  int64 // file offset where the csv reader starts
	lines int   // lines before the csv reader's first
	next  int   // line the next row starts on
	today frame.Date
}

// OpenFile opens path for streaming.
func OpenFile(path string) (*FileSource, error) {
	s := &FileSource{path: path, today: frame.Today()}
	if err := s.Rewind(); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is the file being read.
func (s *FileSource) Path() string { return s.path }

// Rewind reopens the file at its first row.
func (s *FileSource) Rewind() error {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("open bets file: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat bets file: %w", err)
	}
	s.f, s.size = f, info.Size()
	var bom [3]byte
	if n, _ := io.ReadFull(f, bom[:]); n == 3 && bytes.Equal(bom[:], []byte{0xEF, 0xBB, 0xBF}) {
		return s.Seek(Position{Offset: 3, Line: 1})
	}
	return s.Seek(Position{Offset: 0, Line: 1})
}

// Position is the offset and line of the next row.
func (s *FileSource) Position() Position {
	return Position{Offset: s.base + s.cr.InputOffset(), Line: s.next}
}

// Seek continues reading at a Position this source returned.
func (s *FileSource) Seek(p Position) error {
	if _, err := s.f.Seek(p.Offset, io.SeekStart); err != nil {
		return fmt.Errorf("seek bets file: %w", err)
	}
	cr := csv.NewReader(bufio.NewReaderSize(s.f, 64<<10))
	cr.FieldsPerRecord = 5
	cr.ReuseRecord = true
	s.cr, s.base, s.lines, s.next = cr, p.Offset, p.Line-1, p.Line
	return nil
}

// Next reads and validates the next row.
func (s *FileSource) Next() (frame.Bet, error) {
	rec, err := s.cr.Read()
	if errors.Is(err, io.EOF) {
		return frame.Bet{}, io.EOF
	}
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return frame.Bet{}, &RowError{File: s.path, Line: s.lines + pe.Line, Err: pe.Err}
		}
		return frame.Bet{}, fmt.Errorf("read %s: %w", s.path, err)
	}
	line, _ := s.cr.FieldPos(0)
	last, _ := s.cr.FieldPos(4)
	last += strings.Count(rec[4], "\n") // a quoted number may hold line breaks that ParseBet trims
	line, s.next = s.lines+line, s.lines+last+1
	b, err := ParseBet(rec[0], rec[1], rec[2], rec[3], rec[4], s.today)
	if err != nil {
		return frame.Bet{}, &RowError{File: s.path, Line: line, Err: err}
	}
	return b, nil
}

// Progress is the fraction of the file's bytes read so far.
func (s *FileSource) Progress() float64 {
	if s.size == 0 {
		return 1
	}
	return float64(s.base+s.cr.InputOffset()) / float64(s.size)
}

// Size is the file's size in bytes.
func (s *FileSource) Size() int64 { return s.size }

// Close closes the file.
func (s *FileSource) Close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// ParseBet builds a validated bet from its five text fields. Surrounding
// spaces are ignored in the document, birthdate and number.
func ParseBet(firstName, lastName, document, birthdate, number string, today frame.Date) (frame.Bet, error) {
	date, err := frame.ParseDate(strings.TrimSpace(birthdate))
	if err != nil {
		return frame.Bet{}, err
	}
	n, err := frame.ParseNumber(strings.TrimSpace(number))
	if err != nil {
		return frame.Bet{}, err
	}
	b := frame.Bet{
		FirstName: firstName,
		LastName:  lastName,
		Document:  strings.TrimSpace(document),
		Birthdate: date,
		Number:    n,
	}
	if err := b.Validate(today); err != nil {
		return frame.Bet{}, err
	}
	return b, nil
}

// SliceSource yields bets held in memory (single-bet mode, benchmarks).
type SliceSource struct {
	bets []frame.Bet
	next int
}

// NewSliceSource returns a Source over bets.
func NewSliceSource(bets []frame.Bet) *SliceSource { return &SliceSource{bets: bets} }

// Next returns the next bet or io.EOF.
func (s *SliceSource) Next() (frame.Bet, error) {
	if s.next >= len(s.bets) {
		return frame.Bet{}, io.EOF
	}
	s.next++
	return s.bets[s.next-1], nil
}

// Progress is the fraction of bets returned.
func (s *SliceSource) Progress() float64 {
	if len(s.bets) == 0 {
		return 1
	}
	return float64(s.next) / float64(len(s.bets))
}

// Rewind starts over.
func (s *SliceSource) Rewind() error { s.next = 0; return nil }

// Position is the index of the next bet.
func (s *SliceSource) Position() Position { return Position{Offset: int64(s.next)} }

// Seek continues at a Position this source returned.
func (s *SliceSource) Seek(p Position) error {
	if p.Offset < 0 || p.Offset > int64(len(s.bets)) {
		return fmt.Errorf("seek to bet %d of %d", p.Offset, len(s.bets))
	}
	s.next = int(p.Offset)
	return nil
}

// Close does nothing.
func (s *SliceSource) Close() error { return nil }

// maxBatchHint caps the room a new batch slice is made with: a batch ends
// at the frame limit long before a very large maxAmount.
const maxBatchHint = 256

// Batcher cuts a Source into batches of at most max bets that each fit in
// one BETS frame, keeps the agency's chain over every bet it has batched,
// and can go back to a Checkpoint or to any stream index after a reconnect.
type Batcher struct {
	src      Source
	max      int
	maxFrame int
	index    uint64 // stream index of the next bet Next would return
	chain    *receipt.Chain
	ahead    *frame.Bet // a bet read but not yet batched
	aheadAt  Position   // where ahead was read from
}

// Checkpoint is a Batcher's place: the next stream index, where the source
// reads it from, and the chain over the bets before it.
type Checkpoint struct {
	Index uint64
	pos   Position
	chain *receipt.Chain
}

// Chain is the chain value over the bets before the checkpoint.
func (c Checkpoint) Chain() frame.Hash { return c.chain.Sum() }

// NewBatcher returns a Batcher over src with at most max bets per batch.
func NewBatcher(src Source, max int) *Batcher {
	if max < 1 {
		max = 1
	}
	return &Batcher{src: src, max: max, maxFrame: frame.MaxSize, chain: receipt.NewChain()}
}

// SetMaxFrame cuts later batches to frames of at most n bytes (the limit a
// server announces in WELCOME).
func (b *Batcher) SetMaxFrame(n int) {
	if n <= 0 || n > frame.MaxSize {
		n = frame.MaxSize
	}
	b.maxFrame = n
}

// Index is the stream index of the next bet to batch.
func (b *Batcher) Index() uint64 { return b.index }

// Chain is the chain value over every bet before Index.
func (b *Batcher) Chain() frame.Hash { return b.chain.Sum() }

// Next returns the next batch and the index of its first bet; an empty batch
// means the source is exhausted. A bad row fails the whole batch. A single
// bet too large for the frame limit is an error.
func (b *Batcher) Next() (uint64, []frame.Bet, error) { return b.NextInto(nil) }

// NextInto is Next appending the batch to dst[:0], so a caller done with an
// earlier batch can hand its slice back instead of growing a new one.
func (b *Batcher) NextInto(dst []frame.Bet) (uint64, []frame.Bet, error) {
	first := b.index
	batch := dst[:0]
	if cap(batch) == 0 {
		batch = make([]frame.Bet, 0, min(b.max, maxBatchHint))
	}
	size := frame.BetsFrameSize(nil)
	for len(batch) < b.max {
		at := b.pos()
		bet, err := b.read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return first, nil, err
		}
		if n := frame.BetWireSize(&bet); size+n > b.maxFrame {
			if len(batch) == 0 {
				return first, nil, fmt.Errorf("bet %d takes %d bytes, more than the server's frame limit of %d allows", first, n, b.maxFrame)
			}
			ahead := bet // a copy, so that bet stays off the heap on every other iteration
			b.ahead, b.aheadAt = &ahead, at
			break
		} else {
			size += n
		}
		batch = append(batch, bet)
	}
	for i := range batch {
		b.chain.Add(&batch[i])
	}
	b.index += uint64(len(batch))
	return first, batch, nil
}

// pos is where the next bet comes from.
func (b *Batcher) pos() Position {
	if b.ahead != nil {
		return b.aheadAt
	}
	return b.src.Position()
}

func (b *Batcher) read() (frame.Bet, error) {
	if b.ahead != nil {
		bet := *b.ahead
		b.ahead = nil
		return bet, nil
	}
	return b.src.Next()
}

// Checkpoint returns the batcher's place, to Restore later.
func (b *Batcher) Checkpoint() Checkpoint {
	return Checkpoint{Index: b.index, pos: b.pos(), chain: b.chain.Clone()}
}

// Restore goes back (or forward) to a checkpoint of this batcher.
func (b *Batcher) Restore(c Checkpoint) error {
	if err := b.src.Seek(c.pos); err != nil {
		return err
	}
	b.index, b.ahead, b.chain = c.Index, nil, c.chain.Clone()
	return nil
}

// Seek positions the batcher so the next batch starts at stream index i,
// rewinding the source when i is behind and hashing every bet it skips.
func (b *Batcher) Seek(i uint64) error {
	if i < b.index {
		if err := b.src.Rewind(); err != nil {
			return err
		}
		b.index, b.ahead, b.chain = 0, nil, receipt.NewChain()
	}
	for b.index < i {
		bet, err := b.read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: the server holds %d bets but the source has only %d", ErrAhead, i, b.index)
			}
			return err
		}
		b.chain.Add(&bet)
		b.index++
	}
	return nil
}
