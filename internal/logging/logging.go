// Package logging builds the zap loggers every binary uses: the contract
// line format on stdout, or JSON for log pipelines.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Result fields: every action line carries exactly one of these.
var (
	Success    = zap.String(ResultKey, "success")
	Fail       = zap.String(ResultKey, "fail")
	InProgress = zap.String(ResultKey, "in_progress")
)

// ResultKey is the field the line encoder writes right after the action.
const ResultKey = "result"

// Formats accepted by New.
const (
	FormatConsole = "console"
	FormatJSON    = "json"
)

// ParseLevel accepts debug, info, warn(ing), error, case-insensitively.
func ParseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info", "":
		return zapcore.InfoLevel, nil
	case "warn", "warning":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
}

// ParseFormat accepts console or json, case-insensitively.
func ParseFormat(s string) (string, error) {
	switch f := strings.ToLower(strings.TrimSpace(s)); f {
	case FormatConsole, "":
		return FormatConsole, nil
	case FormatJSON:
		return FormatJSON, nil
	}
	return "", fmt.Errorf("unknown log format %q (want console or json)", s)
}

// FlushInterval is how often a buffered logger writes what it gathered: at
// most this much of the log is lost when the process is killed.
const FlushInterval = 100 * time.Millisecond

// New returns a logger writing to w (os.Stdout when nil) at level, in format.
// Each line is written before the call returns.
func New(level, format string, w io.Writer) (*zap.Logger, error) {
	return newLogger(level, format, w, false)
}

// NewBuffered is New with lines gathered in memory and written every
// FlushInterval, when 256 KiB are pending, and on Sync (every exit path
// calls it), so that an event loop logging a line never waits on w.
func NewBuffered(level, format string, w io.Writer) (*zap.Logger, error) {
	return newLogger(level, format, w, true)
}

func newLogger(level, format string, w io.Writer, buffered bool) (*zap.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	f, err := ParseFormat(format)
	if err != nil {
		return nil, err
	}
	if w == nil {
		w = os.Stdout
	}
	var enc zapcore.Encoder
	if f == FormatJSON {
		enc = NewJSONEncoder()
	} else {
		enc = NewLineEncoder()
	}
	w = writeOnly{w}
	ws := zapcore.Lock(zapcore.AddSync(w))
	if buffered {
		ws = &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(w), Size: 256 << 10, FlushInterval: FlushInterval}
	}
	return zap.New(zapcore.NewCore(enc, ws, lvl)), nil
}

// writeOnly hides the writer's Sync, so a log never fsyncs: a written line
// is in the kernel and survives the process, while an fsync of a log file
// would make each flush, and every line logged meanwhile, wait on the disk.
type writeOnly struct{ io.Writer }

// NewJSONEncoder writes one JSON object per line with keys time, level,
// action, result and the fields.
func NewJSONEncoder() zapcore.Encoder {
	return zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		TimeKey:        "time",
		LevelKey:       "level",
		MessageKey:     "action",
		LineEnding:     "\n",
		EncodeTime:     zapcore.RFC3339NanoTimeEncoder,
		EncodeLevel:    zapcore.LowercaseLevelEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
	})
}

// WithField returns log adding f to every line, like log.With(f), but
// without copying the encoder's buffer: cheap enough to hold one per
// connection, thousands of which may be open for hours.
func WithField(log *zap.Logger, f zap.Field) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return &fieldCore{Core: c, field: f} }))
}

// fieldCore adds one field to each entry when it is written.
type fieldCore struct {
	zapcore.Core
	field zap.Field
}

func (c *fieldCore) With(fields []zapcore.Field) zapcore.Core {
	return &fieldCore{Core: c.Core.With(fields), field: c.field}
}

func (c *fieldCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *fieldCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	all := make([]zapcore.Field, 0, len(fields)+1)
	return c.Core.Write(ent, append(append(all, c.field), fields...))
}
