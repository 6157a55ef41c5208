package filestore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"strconv"

	"github.com/tp0/loteria/frame"
)

// Bet is a stored bet: the agency it came from and the bet itself.
type Bet struct {
	Agency uint32
	frame.Bet
}

// AppendRow appends b as one bets.csv row, quoted the way Python's csv
// module does with QUOTE_MINIMAL and its default "\r\n" line terminator.
func AppendRow(dst []byte, agency uint32, b *frame.Bet) []byte {
	dst = strconv.AppendUint(dst, uint64(agency), 10)
	dst = append(dst, ',')
	dst = appendField(dst, b.FirstName)
	dst = append(dst, ',')
	dst = appendField(dst, b.LastName)
	dst = append(dst, ',')
	dst = append(dst, b.Document...)
	dst = append(dst, ',')
	dst = b.Birthdate.Append(dst)
	dst = append(dst, ',')
	dst = strconv.AppendUint(dst, uint64(b.Number), 10)
	return append(dst, '\r', '\n')
}

// appendField quotes s only when it holds a comma, a quote or a line break,
// doubling any quote inside, as QUOTE_MINIMAL does.
func appendField(dst []byte, s string) []byte {
	if !needsQuotes(s) {
		return append(dst, s...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, s[i])
	}
	return append(dst, '"')
}

// needsQuotes reports whether s holds a comma, a quote or a line break.
func needsQuotes(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', '"', '\r', '\n':
			return true
		}
	}
	return false
}

// LoadBets streams the bets of a bets.csv file in the order they were
// stored; it stops at the first row it cannot read and yields that error.
func LoadBets(r io.Reader) iter.Seq2[Bet, error] {
	return func(yield func(Bet, error) bool) {
		rr := rowReader{br: bufio.NewReaderSize(r, 64<<10), line: 1}
		for {
			line, err := rr.read()
			if errors.Is(err, io.EOF) {
				return
			}
			if err == nil {
				var b Bet
				if b, err = parseRow(rr.fields[:]); err == nil {
					if !yield(b, nil) {
						return
					}
					continue
				}
			}
			yield(Bet{}, fmt.Errorf("read bets: line %d: %w", line, err))
			return
		}
	}
}

// maxRow bounds one row so a file with an unclosed quote is not read into
// memory whole.
const maxRow = 1 << 20

// rowReader splits bets.csv into rows of six fields as Python's csv.reader
// does, keeping line breaks inside quoted fields byte for byte
// (encoding/csv would turn a quoted "\r\n" into "\n").
type rowReader struct {
	br     *bufio.Reader
	line   int   // line the next row starts on
	off    int64 // bytes consumed so far: the end of the last row read
	ended  bool  // the last row read ended with a line break
	row    []byte
	field  []byte
	fields [6]string
}

// read fills r.fields with the next row and returns the line it starts on.
func (r *rowReader) read() (int, error) {
	line := r.line
	r.row = r.row[:0]
	r.ended = false
	quotes := 0
	for {
		chunk, err := r.br.ReadSlice('\n')
		r.row = append(r.row, chunk...)
		r.off += int64(len(chunk))
		quotes += bytes.Count(chunk, []byte{'"'})
		if len(r.row) > maxRow {
			return line, fmt.Errorf("row is longer than %d bytes", maxRow)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(r.row) == 0 {
				return line, io.EOF
			}
			if quotes%2 != 0 {
				return line, fmt.Errorf("quoted field not closed: %w", io.ErrUnexpectedEOF)
			}
			break
		}
		if err != nil {
			return line, err
		}
		r.line++
		if quotes%2 == 0 {
			r.ended = true
			break
		}
	}
	row := r.row
	row = bytes.TrimSuffix(row, []byte{'\n'})
	row = bytes.TrimSuffix(row, []byte{'\r'})
	return line, r.split(row)
}

// split cuts row into exactly six fields, undoing QUOTE_MINIMAL quoting.
// The fields share one string, as encoding/csv does, to allocate once a row.
func (r *rowReader) split(row []byte) error {
	var ends [len(r.fields)]int
	r.field = r.field[:0]
	n := 0
	for i := 0; ; {
		if n == len(r.fields) {
			return fmt.Errorf("row has more than %d fields", len(r.fields))
		}
		if i < len(row) && row[i] == '"' {
			for i++; ; {
				j := bytes.IndexByte(row[i:], '"')
				if j < 0 {
					return fmt.Errorf("field %d: quoted field not closed", n+1)
				}
				r.field = append(r.field, row[i:i+j]...)
				i += j + 1
				if i < len(row) && row[i] == '"' {
					r.field = append(r.field, '"')
					i++
					continue
				}
				break
			}
		} else {
			j := bytes.IndexByte(row[i:], ',')
			if j < 0 {
				j = len(row) - i
			}
			for _, c := range row[i : i+j] {
				if c == '"' || c == '\r' || c == '\n' {
					return fmt.Errorf("field %d: quote or line break in an unquoted field", n+1)
				}
			}
			r.field = append(r.field, row[i:i+j]...)
			i += j
		}
		ends[n] = len(r.field)
		n++
		if i == len(row) {
			break
		}
		if row[i] != ',' {
			return fmt.Errorf("field %d: %q after the closing quote", n, row[i])
		}
		i++
	}
	if n != len(r.fields) {
		return fmt.Errorf("row has %d fields, want %d", n, len(r.fields))
	}
	all, start := string(r.field), 0
	for k, end := range ends {
		r.fields[k], start = all[start:end], end
	}
	return nil
}

// LoadBetsFile streams the bets of the file at path.
func LoadBetsFile(path string) iter.Seq2[Bet, error] { return loadFile(path, -1) }

// loadFile streams the bets in the first limit bytes of path (all of it
// when limit < 0).
func loadFile(path string, limit int64) iter.Seq2[Bet, error] {
	return func(yield func(Bet, error) bool) {
		f, err := os.Open(path)
		if err != nil {
			yield(Bet{}, fmt.Errorf("open bets: %w", err))
			return
		}
		defer f.Close()
		var r io.Reader = f
		if limit >= 0 {
			r = io.LimitReader(f, limit)
		}
		for b, err := range LoadBets(r) {
			if !yield(b, err) {
				return
			}
		}
	}
}

func parseRow(rec []string) (Bet, error) {
	agency, err := strconv.ParseUint(rec[0], 10, 32)
	if err != nil {
		return Bet{}, fmt.Errorf("agency %q is not a number", rec[0])
	}
	date, err := frame.ParseDate(rec[4])
	if err != nil {
		return Bet{}, err
	}
	number, err := frame.ParseNumber(rec[5])
	if err != nil {
		return Bet{}, err
	}
	b := Bet{Agency: uint32(agency), Bet: frame.Bet{
		FirstName: rec[1],
		LastName:  rec[2],
		Document:  rec[3],
		Birthdate: date,
		Number:    number,
	}}
	if !frame.ValidDocument(b.Document) {
		return Bet{}, &frame.FieldError{Bet: -1, Field: "document", Value: b.Document, Err: frame.ErrDigits}
	}
	return b, nil
}
