package frame

import (
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Limits on the fields of a bet, enforced by Bet.Validate and by the decoder.
const (
	MaxNameLen     = 100
	MaxDocumentLen = 10
	MaxNumber      = 9999
)

// MinDate is the earliest birthdate accepted.
const MinDate Date = 19000101

// MaxDate is the latest date a Date can hold.
const MaxDate Date = 99991231

// Sentinel causes carried by a *FieldError; match them with errors.Is.
var (
	ErrEmpty   = errors.New("is empty")
	ErrTooLong = errors.New("is too long")
	ErrUTF8    = errors.New("is not valid UTF-8")
	ErrDigits  = errors.New("is not 1-10 decimal digits")
	ErrDate    = errors.New("is not a calendar date from 1900-01-01 to today")
	ErrNumber  = errors.New("is not a number from 0 to 9999")
)

// FieldError reports which field of which bet is invalid and why.
type FieldError struct {
	Bet   int    // position of the bet in its batch, or -1 when there is no batch
	Field string // first_name, last_name, document, birthdate, number
	Value string // the offending value, shortened for logs
	Err   error  // one of the sentinel causes above
}

func (e *FieldError) Error() string {
	prefix := ""
	if e.Bet >= 0 {
		prefix = "bet " + strconv.Itoa(e.Bet) + ": "
	}
	return fmt.Sprintf("%sfield %s %q %v", prefix, e.Field, e.Value, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// Bet is one wager as it travels on the wire; the agency comes from the session.
type Bet struct {
	FirstName string
	LastName  string
	Document  string // decimal digits kept as text so leading zeros survive
	Birthdate Date
	Number    uint16
}

// Validate checks every field of b against the protocol's rules, with today
// as the latest acceptable birthdate.
func (b *Bet) Validate(today Date) error {
	if err := checkName("first_name", b.FirstName); err != nil {
		return err
	}
	if err := checkName("last_name", b.LastName); err != nil {
		return err
	}
	if !ValidDocument(b.Document) {
		return &FieldError{Bet: -1, Field: "document", Value: shorten(b.Document), Err: ErrDigits}
	}
	if !b.Birthdate.Valid() || b.Birthdate < MinDate || b.Birthdate > today {
		return &FieldError{Bet: -1, Field: "birthdate", Value: b.Birthdate.String(), Err: ErrDate}
	}
	if b.Number > MaxNumber {
		return &FieldError{Bet: -1, Field: "number", Value: strconv.Itoa(int(b.Number)), Err: ErrNumber}
	}
	return nil
}

// wireSize is the number of bytes b takes inside a BETS payload.
func (b *Bet) wireSize() int {
	return 3 + shortLen(b.FirstName) + shortLen(b.LastName) + shortLen(b.Document) + 4 + 2
}

func checkName(field, s string) error {
	switch {
	case s == "":
		return &FieldError{Bet: -1, Field: field, Err: ErrEmpty}
	case len(s) > MaxNameLen:
		return &FieldError{Bet: -1, Field: field, Value: shorten(s), Err: ErrTooLong}
	case !utf8.ValidString(s):
		return &FieldError{Bet: -1, Field: field, Value: shorten(s), Err: ErrUTF8}
	}
	return nil
}

// ValidDocument reports whether s is 1 to 10 ASCII decimal digits.
func ValidDocument(s string) bool {
	if len(s) == 0 || len(s) > MaxDocumentLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ParseNumber parses a bet number written in decimal, 0 to 9999.
func ParseNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n > MaxNumber {
		return 0, &FieldError{Bet: -1, Field: "number", Value: shorten(s), Err: ErrNumber}
	}
	return uint16(n), nil
}

func shorten(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// Date is a calendar date packed as the decimal integer YYYYMMDD.
type Date uint32

// NewDate packs a year, month and day; it does not check that they form a real date.
func NewDate(year, month, day int) Date {
	return Date(year*10000 + month*100 + day)
}

// DateOf returns the calendar date of t in t's location.
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return NewDate(y, int(m), d)
}

// Today is the latest date that is today somewhere on Earth (UTC+14), so
// that an agency ahead of the server's clock is never refused a birthdate.
func Today() Date {
	return DateOf(time.Now().In(earliestZone))
}

var earliestZone = time.FixedZone("UTC+14", 14*3600)

// ParseDate parses YYYY-MM-DD into a valid Date.
func ParseDate(s string) (Date, error) {
	if len(s) == 10 && s[4] == '-' && s[7] == '-' {
		y, ok1 := digits(s[0:4])
		m, ok2 := digits(s[5:7])
		d, ok3 := digits(s[8:10])
		if date := NewDate(y, m, d); ok1 && ok2 && ok3 && date.Valid() {
			return date, nil
		}
	}
	return 0, &FieldError{Bet: -1, Field: "birthdate", Value: shorten(s), Err: ErrDate}
}

func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// Year, Month and Day unpack d.
func (d Date) Year() int  { return int(d / 10000) }
func (d Date) Month() int { return int(d / 100 % 100) }
func (d Date) Day() int   { return int(d % 100) }

// Valid reports whether d names a real day of the Gregorian calendar.
func (d Date) Valid() bool {
	y, m, day := d.Year(), d.Month(), d.Day()
	if y < 1 || y > 9999 || m < 1 || m > 12 || day < 1 {
		return false
	}
	return day <= daysIn(y, m)
}

// daysIn is the number of days of month m of year y.
func daysIn(y, m int) int {
	if m == 2 && y%4 == 0 && (y%100 != 0 || y%400 == 0) {
		return 29
	}
	return int(monthDays[m])
}

var monthDays = [13]uint8{0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

// String formats d as YYYY-MM-DD.
func (d Date) String() string {
	b := make([]byte, 0, 10)
	return string(d.Append(b))
}

// Append appends d formatted as YYYY-MM-DD to dst.
func (d Date) Append(dst []byte) []byte {
	y, m, day := d.Year(), d.Month(), d.Day()
	return append(dst,
		byte('0'+y/1000%10), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+m/10%10), byte('0'+m%10), '-',
		byte('0'+day/10%10), byte('0'+day%10))
}
