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
	Close() error
}

// FileSource streams bets from a CSV file without loading it whole: no
// header, columns first_name,last_name,document,birthdate,number, CRLF or LF
// line endings, quoted fields allowed, an optional UTF-8 byte order mark.
type FileSource struct {
	path  string
	f     *os.File
	size  int64
	cr    *csv.Reader
	base  int64 // bytes skipped before the csv reader (byte order mark)
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
	br := bufio.NewReaderSize(f, 64<<10)
	s.base = 0
	if bom, _ := br.Peek(3); bytes.Equal(bom, []byte{0xEF, 0xBB, 0xBF}) {
		br.Discard(3)
		s.base = 3
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = 5
	cr.ReuseRecord = true
	s.f, s.size, s.cr = f, info.Size(), cr
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
			return frame.Bet{}, &RowError{File: s.path, Line: pe.Line, Err: pe.Err}
		}
		return frame.Bet{}, fmt.Errorf("read %s: %w", s.path, err)
	}
	line, _ := s.cr.FieldPos(0)
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

// Close does nothing.
func (s *SliceSource) Close() error { return nil }

// Batcher cuts a Source into batches of at most max bets that each fit in
// one BETS frame, and can seek to a stream index after a reconnect.
type Batcher struct {
	src   Source
	max   int
	index uint64     // stream index of the next bet Next would return
	ahead *frame.Bet // a bet read but not yet batched
}

// NewBatcher returns a Batcher over src with at most max bets per batch.
func NewBatcher(src Source, max int) *Batcher {
	if max < 1 {
		max = 1
	}
	return &Batcher{src: src, max: max}
}

// Index is the stream index of the next bet to batch.
func (b *Batcher) Index() uint64 { return b.index }

// Next returns the next batch and the index of its first bet; an empty batch
// means the source is exhausted. A bad row fails the whole batch.
func (b *Batcher) Next() (uint64, []frame.Bet, error) {
	first := b.index
	var batch []frame.Bet
	size := frame.BetsFrameSize(nil)
	for len(batch) < b.max {
		bet, err := b.read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return first, nil, err
		}
		if n := frame.BetWireSize(&bet); size+n > frame.MaxSize {
			b.ahead = &bet
			break
		} else {
			size += n
		}
		batch = append(batch, bet)
	}
	b.index += uint64(len(batch))
	return first, batch, nil
}

func (b *Batcher) read() (frame.Bet, error) {
	if b.ahead != nil {
		bet := *b.ahead
		b.ahead = nil
		return bet, nil
	}
	return b.src.Next()
}

// Seek positions the batcher so the next batch starts at stream index i,
// rewinding the source when i is behind.
func (b *Batcher) Seek(i uint64) error {
	if i < b.index {
		if err := b.src.Rewind(); err != nil {
			return err
		}
		b.index, b.ahead = 0, nil
	}
	for b.index < i {
		if _, err := b.read(); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("server holds %d bets but the source has only %d", i, b.index)
			}
			return err
		}
		b.index++
	}
	return nil
}
