package logging

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// TimeLayout is the timestamp at the start of every line.
const TimeLayout = "2006-01-02 15:04:05"

var pool = buffer.NewPool()

// lineEncoder writes the contract line
// "YYYY-MM-DD HH:MM:SS LEVEL action: <message> | result: <r> | key: value ...".
// The entry's message is the action; the "result" field goes first.
type lineEncoder struct {
	buf *buffer.Buffer // fields added through With, or the line being built
	ns  string         // open namespace, prefixed to keys
}

// NewLineEncoder returns the encoder of the log line contract.
func NewLineEncoder() zapcore.Encoder {
	return &lineEncoder{buf: pool.Get()}
}

func (e *lineEncoder) Clone() zapcore.Encoder {
	c := &lineEncoder{buf: pool.Get(), ns: e.ns}
	_, _ = c.buf.Write(e.buf.Bytes())
	return c
}

func (e *lineEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	line := &lineEncoder{buf: pool.Get()} // the result is never namespaced
	b := line.buf
	b.AppendTime(ent.Time, TimeLayout)
	b.AppendByte(' ')
	b.AppendString(ent.Level.CapitalString())
	b.AppendString(" action: ")
	appendSafe(b, ent.Message)
	for i := range fields {
		if fields[i].Key == ResultKey {
			fields[i].AddTo(line)
		}
	}
	_, _ = b.Write(e.buf.Bytes())
	line.ns = e.ns
	for i := range fields {
		if fields[i].Key != ResultKey {
			fields[i].AddTo(line)
		}
	}
	b.AppendByte('\n')
	return b, nil
}

func (e *lineEncoder) key(k string) {
	e.buf.AppendString(" | ")
	if e.ns != "" {
		e.buf.AppendString(e.ns)
		e.buf.AppendByte('.')
	}
	appendSafe(e.buf, k)
	e.buf.AppendString(": ")
}

// appendSafe writes s so that the line stays one line of fields whatever s
// holds (a peer's text reaches the logs): a backslash and the separator's
// '|' are escaped as \\ and \|, control characters and invalid UTF-8 too, so
// a value can neither end its field nor start another. ParseLine undoes it.
func appendSafe(b *buffer.Buffer, s string) {
	for i := 0; i < len(s); {
		c := s[i]
		if c == '\\' || c == '|' {
			b.AppendByte('\\')
			b.AppendByte(c)
			i++
			continue
		}
		if c >= 0x20 && c != 0x7f && c < utf8.RuneSelf {
			b.AppendByte(c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.AppendString(`\x`)
			b.AppendString(strconv.FormatUint(uint64(c), 16))
		case r == '\n':
			b.AppendString(`\n`)
		case r == '\r':
			b.AppendString(`\r`)
		case r == '\t':
			b.AppendString(`\t`)
		case r < 0x20 || r == 0x7f:
			b.AppendString(`\u`)
			b.AppendString(fmt.Sprintf("%04x", r))
		default:
			b.AppendString(s[i : i+size])
		}
		i += size
	}
}

func (e *lineEncoder) AddString(k, v string) { e.key(k); appendSafe(e.buf, v) }
func (e *lineEncoder) AddByteString(k string, v []byte) {
	e.key(k)
	appendSafe(e.buf, string(v))
}
func (e *lineEncoder) AddBinary(k string, v []byte) {
	e.key(k)
	e.buf.AppendString(base64.StdEncoding.EncodeToString(v))
}
func (e *lineEncoder) AddBool(k string, v bool)       { e.key(k); e.buf.AppendBool(v) }
func (e *lineEncoder) AddInt64(k string, v int64)     { e.key(k); e.buf.AppendInt(v) }
func (e *lineEncoder) AddInt(k string, v int)         { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddInt32(k string, v int32)     { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddInt16(k string, v int16)     { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddInt8(k string, v int8)       { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddUint64(k string, v uint64)   { e.key(k); e.buf.AppendUint(v) }
func (e *lineEncoder) AddUint(k string, v uint)       { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUint32(k string, v uint32)   { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUint16(k string, v uint16)   { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUint8(k string, v uint8)     { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUintptr(k string, v uintptr) { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddFloat64(k string, v float64) {
	e.key(k)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		e.buf.AppendString(strconv.FormatFloat(v, 'g', -1, 64))
		return
	}
	e.buf.AppendFloat(v, 64)
}
func (e *lineEncoder) AddFloat32(k string, v float32)       { e.AddFloat64(k, float64(v)) }
func (e *lineEncoder) AddComplex128(k string, v complex128) { e.AddString(k, fmt.Sprint(v)) }
func (e *lineEncoder) AddComplex64(k string, v complex64)   { e.AddString(k, fmt.Sprint(v)) }
func (e *lineEncoder) AddDuration(k string, v time.Duration) {
	e.AddString(k, v.String())
}
func (e *lineEncoder) AddTime(k string, v time.Time) {
	e.key(k)
	e.buf.AppendTime(v, TimeLayout)
}
func (e *lineEncoder) AddReflected(k string, v any) error {
	e.AddString(k, fmt.Sprint(v))
	return nil
}

// AddArray and AddObject render nested values compactly through zap's map
// encoder; our action lines only use them for rare diagnostic fields.
func (e *lineEncoder) AddArray(k string, v zapcore.ArrayMarshaler) error {
	m := zapcore.NewMapObjectEncoder()
	err := m.AddArray(k, v)
	e.AddString(k, fmt.Sprint(m.Fields[k]))
	return err
}

func (e *lineEncoder) AddObject(k string, v zapcore.ObjectMarshaler) error {
	m := zapcore.NewMapObjectEncoder()
	err := m.AddObject(k, v)
	e.AddString(k, fmt.Sprint(m.Fields[k]))
	return err
}

func (e *lineEncoder) OpenNamespace(k string) {
	if e.ns == "" {
		e.ns = k
	} else {
		e.ns += "." + k
	}
}
