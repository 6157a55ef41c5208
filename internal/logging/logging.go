// Package logging builds the zap loggers every binary uses: the contract
// line format on stdout, or JSON for log pipelines.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"

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

// New returns a logger writing to w (os.Stdout when nil) at level, in format.
func New(level, format string, w io.Writer) (*zap.Logger, error) {
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
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core), nil
}

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
