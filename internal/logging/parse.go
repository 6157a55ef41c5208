package logging

import (
	"bufio"
	"bytes"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Line is an action line of the contract read back: what tests, the bench
// and tools look for in a log.
type Line struct {
	Level  string
	Action string
	Result string
	Fields map[string]string // every field but the result
}

// ParseLine reads "YYYY-MM-DD HH:MM:SS LEVEL action: A | result: R | k: v | ...";
// ok is false for any other line (a panic's trace, a library's output).
func ParseLine(s string) (l Line, ok bool) {
	head, rest, ok := strings.Cut(s, " action: ")
	if !ok {
		return Line{}, false
	}
	if i := strings.LastIndexByte(head, ' '); i >= 0 {
		l.Level = head[i+1:]
	}
	parts := strings.Split(rest, " | ") // no value holds " | ": the encoder escapes every '|'
	l.Action, l.Fields = unescape(parts[0]), make(map[string]string, len(parts)-1)
	resultSeen := false
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, ": ")
		k, v = unescape(k), unescape(v)
		if k == ResultKey {
			if !resultSeen { // the encoder writes it first
				l.Result, resultSeen = v, true
			}
		} else {
			l.Fields[k] = v
		}
	}
	return l, true
}

// unescape undoes appendSafe: \\, \|, \n, \r, \t, \uXXXX and \xHH (a byte
// that was not UTF-8).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch e := s[i+1]; e {
		case '\\', '|':
			b.WriteByte(e)
			i++
		case 'n':
			b.WriteByte('\n')
			i++
		case 'r':
			b.WriteByte('\r')
			i++
		case 't':
			b.WriteByte('\t')
			i++
		case 'x', 'u':
			n := 2
			if e == 'u' {
				n = 4
			}
			v, err := strconv.ParseUint(s[min(i+2, len(s)):min(i+2+n, len(s))], 16, 32)
			if err != nil || i+2+n > len(s) {
				b.WriteByte(c)
				continue
			}
			if e == 'x' {
				b.WriteByte(byte(v))
			} else {
				b.WriteRune(rune(v))
			}
			i += 1 + n
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ReadFile returns the action lines of a log file; a file that does not
// exist (yet) has none.
func ReadFile(path string) ([]Line, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Line
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l, ok := ParseLine(sc.Text()); ok {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// Is reports whether l is action with result ("" for any) and holds every
// key/value pair of kv.
func (l Line) Is(action, result string, kv ...string) bool {
	if l.Action != action || (result != "" && l.Result != result) {
		return false
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if l.Fields[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}

// Int is field key as a number, or -1 when it is missing or not a number.
func (l Line) Int(key string) int64 {
	n, err := strconv.ParseInt(l.Fields[key], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// String is the line without its time and level, fields sorted: for
// test failure messages.
func (l Line) String() string {
	var b strings.Builder
	b.WriteString(l.Action + " | " + l.Result)
	for _, k := range slices.Sorted(maps.Keys(l.Fields)) {
		b.WriteString(" | " + k + ": " + l.Fields[k])
	}
	return b.String()
}
