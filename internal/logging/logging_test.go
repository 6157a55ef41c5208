package logging_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tp0/loteria/internal/logging"
)

// linePrefix is the contract's start of a line: date, time, level, action.
const linePrefix = `^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (DEBUG|INFO|WARN|ERROR) action: `

func newConsole(t *testing.T, level string) (*zap.Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	log, err := logging.New(level, logging.FormatConsole, &buf)
	if err != nil {
		t.Fatalf("New(%q, console): %v", level, err)
	}
	return log, &buf
}

// oneLine returns the single line in buf, failing if there is not exactly one.
func oneLine(t *testing.T, buf *bytes.Buffer) string {
	t.Helper()
	s := buf.String()
	if !strings.HasSuffix(s, "\n") {
		t.Fatalf("output %q does not end in a newline", s)
	}
	s = strings.TrimSuffix(s, "\n")
	if strings.ContainsAny(s, "\n\r") {
		t.Fatalf("output is not exactly one line: %q", buf.String())
	}
	return s
}

func matchLine(t *testing.T, line, rest string) {
	t.Helper()
	re := regexp.MustCompile(linePrefix + rest + `$`)
	if !re.MatchString(line) {
		t.Errorf("line\n  %q\ndoes not match\n  %q", line, re)
	}
}

func TestConsoleLineShape(t *testing.T) {
	log, buf := newConsole(t, "info")
	log.Info("apuesta_enviada", logging.Success, zap.String("dni", "30904465"), zap.Uint16("numero", 7574))
	matchLine(t, oneLine(t, buf), `apuesta_enviada \| result: success \| dni: 30904465 \| numero: 7574`)

	// The timestamp is the time of the entry, to the second.
	line := oneLine(t, buf)
	ts, err := time.ParseInLocation(logging.TimeLayout, line[:len(logging.TimeLayout)], time.Local)
	if err != nil {
		t.Fatalf("timestamp: %v", err)
	}
	if d := time.Since(ts); d < -time.Second || d > time.Hour {
		t.Errorf("timestamp %v is not about now (off by %v)", ts, d)
	}
}

func TestConsoleLevels(t *testing.T) {
	log, buf := newConsole(t, "debug")
	log.Debug("a", logging.InProgress)
	log.Info("b", logging.Success)
	log.Warn("c", logging.Fail)
	log.Error("d", logging.Fail)
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	want := []string{
		`DEBUG action: a \| result: in_progress`,
		`INFO action: b \| result: success`,
		`WARN action: c \| result: fail`,
		`ERROR action: d \| result: fail`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf)
	}
	for i, w := range want {
		re := regexp.MustCompile(`^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} ` + w + `$`)
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %q", i, lines[i], re)
		}
	}
}

func TestLevelFilter(t *testing.T) {
	log, buf := newConsole(t, "warn")
	log.Info("hidden", logging.Success)
	log.Debug("hidden", logging.Success)
	log.Warn("shown", logging.Fail)
	matchLine(t, oneLine(t, buf), `shown \| result: fail`)
}

func TestResultRightAfterAction(t *testing.T) {
	log, buf := newConsole(t, "info")
	log.Info("upload", zap.Uint32("agency", 3), zap.Int("bets", 12), logging.InProgress, zap.String("percent", "50.0"))
	matchLine(t, oneLine(t, buf), `upload \| result: in_progress \| agency: 3 \| bets: 12 \| percent: 50\.0`)
}

func TestWithFieldsAfterResult(t *testing.T) {
	log, buf := newConsole(t, "info")
	child := log.With(zap.Uint32("agency", 4), zap.String("server", "server:12345"))
	child.Info("hello", zap.Uint64("held", 10), logging.Success)
	matchLine(t, oneLine(t, buf), `hello \| result: success \| agency: 4 \| server: server:12345 \| held: 10`)

	// Nested With keeps both sets, outer first; the parent is unaffected.
	buf.Reset()
	child.With(zap.Int("conn", 7)).Warn("close", logging.Fail)
	matchLine(t, oneLine(t, buf), `close \| result: fail \| agency: 4 \| server: server:12345 \| conn: 7`)
	buf.Reset()
	log.Info("plain", logging.Success)
	matchLine(t, oneLine(t, buf), `plain \| result: success`)
}

func TestEscaping(t *testing.T) {
	log, buf := newConsole(t, "info")
	log.Info("act\nion", logging.Fail,
		zap.String("name", "a\nb\rc\td\x01e\x7ff"),
		zap.String("bad", "x\xffy\xc3"),
		zap.String("key\nwith|break", "v"),
		zap.ByteString("raw", []byte("p\nq")),
		zap.String("accent", "Peña Ñandú"),
		zap.Stringer("stringer", stringer("s\r\nt")),
	)
	line := oneLine(t, buf)
	matchLine(t, line, regexp.QuoteMeta(`act\nion | result: fail | name: a\nb\rc\td\u0001e\u007ff | bad: x\xffy\xc3 | key\nwith\|break: v | raw: p\nq | accent: Peña Ñandú | stringer: s\r\nt`))
}

// TestValuesCannotForgeFields: a value holding the separator, as a peer's
// text may (an ERROR's reason, a rejected document), stays one field: it
// neither adds fields nor changes the result, and reads back as it was. A
// backslash is escaped too, so a literal "\n" and a newline read back apart.
func TestValuesCannotForgeFields(t *testing.T) {
	log, buf := newConsole(t, "info")
	forged := "x | result: success | agency: 9 | y: "
	values := []string{forged, `a\nb`, "a\nb", `back\\slash\|`, "\xff\u0001|"}
	fields := []zap.Field{zap.Uint32("agency", 3), zap.String("reason", forged)}
	for i, v := range values {
		fields = append(fields, zap.String(fmt.Sprint("v", i), v))
	}
	log.Warn("session_error", append([]zap.Field{logging.Fail}, fields...)...)
	raw := oneLine(t, buf)
	l, ok := logging.ParseLine(raw)
	if !ok {
		t.Fatalf("%q does not parse", raw)
	}
	if l.Result != "fail" || l.Fields["agency"] != "3" || l.Fields["reason"] != forged || len(l.Fields) != 2+len(values) {
		t.Errorf("%q read back as result %q, fields %q", raw, l.Result, l.Fields)
	}
	for i, v := range values {
		if got := l.Fields[fmt.Sprint("v", i)]; got != v {
			t.Errorf("value %q read back as %q from %q", v, got, raw)
		}
	}
}

type stringer string

func (s stringer) String() string { return string(s) }

func TestValueKinds(t *testing.T) {
	log, buf := newConsole(t, "info")
	log.Error("kinds", logging.Fail,
		zap.Int("int", -42),
		zap.Int64("int64", 1<<40),
		zap.Uint64("uint64", 1<<63),
		zap.Bool("yes", true),
		zap.Bool("no", false),
		zap.Duration("retry_in", 1500*time.Millisecond),
		zap.Error(errors.New("dial tcp: connection refused\nnext")),
		zap.Float64("ratio", 0.25),
		zap.Strings("docs", []string{"1", "2"}),
	)
	matchLine(t, oneLine(t, buf), regexp.QuoteMeta(
		`kinds | result: fail | int: -42 | int64: 1099511627776 | uint64: 9223372036854775808 | yes: true | no: false | retry_in: 1.5s | error: dial tcp: connection refused\nnext | ratio: 0.25 | docs: [1 2]`))

	// A wrapped error keeps its whole chain of messages, on one line.
	buf.Reset()
	log.Error("exit", logging.Fail, zap.Error(fmt.Errorf("upload: %w", errors.New("bad\r\nrow"))))
	matchLine(t, oneLine(t, buf), regexp.QuoteMeta(`exit | result: fail | error: upload: bad\r\nrow`))

	buf.Reset()
	log.Error("exit", logging.Fail, zap.NamedError("close_error", errors.New("x")))
	matchLine(t, oneLine(t, buf), regexp.QuoteMeta(`exit | result: fail | close_error: x`))
}

func TestNamespaces(t *testing.T) {
	log, buf := newConsole(t, "info")
	log.Info("peer", logging.Success, zap.Int("n", 1), zap.Namespace("conn"), zap.String("ip", "127.0.0.1"), zap.Namespace("tcp"), zap.Int("port", 5))
	matchLine(t, oneLine(t, buf), regexp.QuoteMeta(`peer | result: success | n: 1 | conn.ip: 127.0.0.1 | conn.tcp.port: 5`))

	// A namespace opened through With prefixes later fields, but never the
	// result, which keeps its place and name.
	buf.Reset()
	child := log.With(zap.Int("agency", 2), zap.Namespace("req"), zap.Int("id", 9))
	child.Info("bets", zap.Int("count", 3), logging.Success)
	matchLine(t, oneLine(t, buf), regexp.QuoteMeta(`bets | result: success | agency: 2 | req.id: 9 | req.count: 3`))

	// The namespace of one entry does not leak into the next.
	buf.Reset()
	log.Info("after", logging.Success, zap.Int("n", 2))
	matchLine(t, oneLine(t, buf), regexp.QuoteMeta(`after | result: success | n: 2`))
}

func TestConcurrentLinesStayWhole(t *testing.T) {
	log, buf := newConsole(t, "info")
	child := log.With(zap.String("shared", "x"))
	done := make(chan struct{})
	const workers, each = 4, 50
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range each {
				child.Info("work", logging.Success, zap.Int("worker", w), zap.Int("i", i))
			}
		}()
	}
	for range workers {
		<-done
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != workers*each {
		t.Fatalf("got %d lines, want %d", len(lines), workers*each)
	}
	re := regexp.MustCompile(linePrefix + `work \| result: success \| shared: x \| worker: \d \| i: \d+$`)
	for _, l := range lines {
		if !re.MatchString(l) {
			t.Fatalf("mangled line %q", l)
		}
	}
}

func TestJSONFormat(t *testing.T) {
	var buf bytes.Buffer
	log, err := logging.New("debug", "JSON", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.With(zap.Int("agency", 1)).Info("upload", zap.Uint64("bets", 5), logging.Success,
		zap.Duration("took", 2*time.Second), zap.String("name", "a\nb"))
	log.Warn("connect", logging.InProgress)
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("line %q is not JSON: %v", lines[0], err)
	}
	want := map[string]any{"level": "info", "action": "upload", "result": "success", "agency": 1.0, "bets": 5.0, "took": "2s", "name": "a\nb"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	ts, _ := m["time"].(string)
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		t.Errorf("time %q: %v", ts, err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatalf("line %q is not JSON: %v", lines[1], err)
	}
	if m["level"] != "warn" || m["result"] != "in_progress" || m["action"] != "connect" {
		t.Errorf("second line %v", m)
	}
}

func TestParseLevel(t *testing.T) {
	good := map[string]zapcore.Level{
		"debug": zapcore.DebugLevel, "INFO": zapcore.InfoLevel, "": zapcore.InfoLevel,
		" Warn ": zapcore.WarnLevel, "warning": zapcore.WarnLevel, "error": zapcore.ErrorLevel,
	}
	for in, want := range good {
		got, err := logging.ParseLevel(in)
		if err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"loud", "fatal", "5", "info,debug"} {
		_, err := logging.ParseLevel(in)
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(in)) {
			t.Errorf("ParseLevel(%q) error %v does not name the value", in, err)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]string{"console": "console", "": "console", "Json": "json", " json ": "json"} {
		got, err := logging.ParseFormat(in)
		if err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"xml", "text", "consola"} {
		_, err := logging.ParseFormat(in)
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(in)) {
			t.Errorf("ParseFormat(%q) error %v does not name the value", in, err)
		}
	}
}

func TestNewRejectsBadSettings(t *testing.T) {
	if _, err := logging.New("loud", "console", nil); err == nil || !strings.Contains(err.Error(), `"loud"`) {
		t.Errorf("New with level loud: %v", err)
	}
	if _, err := logging.New("info", "xml", nil); err == nil || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("New with format xml: %v", err)
	}
}

func TestResultFields(t *testing.T) {
	for f, want := range map[*zap.Field]string{&logging.Success: "success", &logging.Fail: "fail", &logging.InProgress: "in_progress"} {
		if f.Key != logging.ResultKey || f.Type != zapcore.StringType || f.String != want {
			t.Errorf("result field %+v, want key %q value %q", *f, logging.ResultKey, want)
		}
	}
}

// moduleRoot walks up from the working directory to the go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

var (
	logMethods = map[string]bool{"Debug": true, "Info": true, "Warn": true, "Error": true, "DPanic": true, "Panic": true, "Fatal": true}
	resultVars = map[string]bool{"Success": true, "Fail": true, "InProgress": true}
	actionName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// TestSourcesUseOnlyTheThreeResults parses every non-test Go file of the
// module: outside this package nobody writes a "result" zap field by hand, and
// every zap call that logs an action (a literal message) carries exactly one
// of logging.Success, Fail or InProgress.
func TestSourcesUseOnlyTheThreeResults(t *testing.T) {
	root := moduleRoot(t)
	own := filepath.Join(root, "internal", "logging")
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		files++
		rel, _ := filepath.Rel(root, path)
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if filepath.Dir(path) == own {
			checkResultDefinitions(t, fset, f)
			return nil
		}
		if imports(f, "testing") {
			return nil // test support (t.Fatal, b.Error), not action lines
		}
		loggingName := importName(f, "github.com/tp0/loteria/internal/logging", "logging")
		zapName := importName(f, "go.uber.org/zap", "zap")
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if id, ok := n.X.(*ast.Ident); ok && id.Name == loggingName && n.Sel.Name == "ResultKey" {
					t.Errorf("%s: logging.ResultKey used outside internal/logging", fset.Position(n.Pos()))
				}
			case *ast.CallExpr:
				checkResultField(t, fset, n, zapName)
				checkLogCall(t, fset, n, loggingName)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("scanned only %d files under %s: the walk is broken", files, root)
	}
}

// checkLogCall checks a call like log.Info("action", fields...): the action
// is a lower_snake word and exactly one result field is among the arguments
// (or the fields come spread from a slice, checked where it is built).
func checkLogCall(t *testing.T, fset *token.FileSet, call *ast.CallExpr, loggingName string) {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || !logMethods[sel.Sel.Name] || len(call.Args) == 0 {
		return
	}
	lit, ok := call.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return // not an action line (errors.New, t.Error, ... take other shapes)
	}
	action, _ := strconv.Unquote(lit.Value)
	pos := fset.Position(call.Pos())
	if call.Ellipsis.IsValid() {
		return
	}
	if !actionName.MatchString(action) {
		t.Errorf("%s: action %q is not a lower_snake_case name", pos, action)
	}
	results := 0
	for _, a := range call.Args[1:] {
		if s, ok := a.(*ast.SelectorExpr); ok {
			if id, ok := s.X.(*ast.Ident); ok && id.Name == loggingName && resultVars[s.Sel.Name] {
				results++
			}
		}
	}
	if results != 1 {
		t.Errorf("%s: %s(%q) carries %d result fields, want exactly one of logging.Success, Fail, InProgress", pos, sel.Sel.Name, action, results)
	}
}

// checkResultDefinitions makes sure the logging package itself defines no
// result value besides the three.
func checkResultDefinitions(t *testing.T, fset *token.FileSet, f *ast.File) {
	allowed := map[string]bool{"success": true, "fail": true, "in_progress": true}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) != 2 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != "String" {
			return true
		}
		if key, ok := call.Args[0].(*ast.Ident); !ok || key.Name != "ResultKey" {
			return true
		}
		lit, ok := call.Args[1].(*ast.BasicLit)
		if !ok {
			t.Errorf("%s: result value is not a literal", fset.Position(call.Pos()))
			return true
		}
		v, _ := strconv.Unquote(lit.Value)
		if !allowed[v] {
			t.Errorf("%s: result value %s is not one of success, fail, in_progress", fset.Position(call.Pos()), lit.Value)
		}
		delete(allowed, v)
		return true
	})
	if f.Name.Name == "logging" && strings.HasSuffix(fset.Position(f.Pos()).Filename, "logging.go") && len(allowed) != 0 {
		t.Errorf("result values %v are not defined in logging.go", allowed)
	}
}

// importName is how file f refers to the package at path (def when not renamed).
func importName(f *ast.File, path, def string) string {
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == path {
			if imp.Name != nil {
				return imp.Name.Name
			}
			return def
		}
	}
	return "\x00" // not imported: matches no identifier
}

type point struct{ X, Y int }

func (p point) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddInt("x", p.X)
	enc.AddInt("y", p.Y)
	return nil
}

func TestMoreValueKinds(t *testing.T) {
	log, buf := newConsole(t, "info")
	at := time.Date(2024, 3, 5, 7, 8, 9, 0, time.Local)
	log.Info("more", logging.Success,
		zap.Int8("i8", -8), zap.Int16("i16", -16), zap.Int32("i32", -32),
		zap.Uint("u", 1), zap.Uint8("u8", 8), zap.Uint16("u16", 16), zap.Uint32("u32", 32), zap.Uintptr("up", 64),
		zap.Float32("f32", 1.5), zap.Float64("nan", math.NaN()), zap.Float64("inf", math.Inf(-1)),
		zap.Complex128("c", complex(1, 2)), zap.Complex64("c64", complex(3, -1)),
		zap.Time("at", at), zap.Binary("bin", []byte{0, 1, 2}),
		zap.Any("any", map[string]int{"a\nb": 1}),
		zap.Object("pt", point{1, 2}),
		zap.Ints("ints", []int{3, 4}),
	)
	matchLine(t, oneLine(t, buf), regexp.QuoteMeta(
		`more | result: success | i8: -8 | i16: -16 | i32: -32 | u: 1 | u8: 8 | u16: 16 | u32: 32 | up: 64 | f32: 1.5 | nan: NaN | inf: -Inf | c: (1+2i) | c64: (3-1i) | at: 2024-03-05 07:08:09 | bin: AAEC | any: map[a\nb:1] | pt: map[x:1 y:2] | ints: [3 4]`))
}

// checkResultField reports a zap field constructor called with the key
// "result" (zap.String("result", ...) and the like) outside this package.
func checkResultField(t *testing.T, fset *token.FileSet, call *ast.CallExpr, zapName string) {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || len(call.Args) == 0 {
		return
	}
	if id, ok := sel.X.(*ast.Ident); !ok || id.Name != zapName {
		return
	}
	if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
		if v, err := strconv.Unquote(lit.Value); err == nil && v == logging.ResultKey {
			t.Errorf("%s: zap field %q outside internal/logging: use logging.Success, Fail or InProgress", fset.Position(lit.Pos()), v)
		}
	}
}

// imports reports whether f imports path.
func imports(f *ast.File, path string) bool {
	for _, imp := range f.Imports {
		if p, err := strconv.Unquote(imp.Path.Value); err == nil && p == path {
			return true
		}
	}
	return false
}

func TestWithFieldWritesLikeWith(t *testing.T) {
	var a, b bytes.Buffer
	la, _ := logging.New("info", logging.FormatConsole, &a)
	lb, _ := logging.New("info", logging.FormatConsole, &b)
	la = la.With(zap.String("remote", "127.0.0.1:5"))
	lb = logging.WithField(lb, zap.String("remote", "127.0.0.1:5"))
	for _, l := range []*zap.Logger{la, lb} {
		l.Info("hello", logging.Success, zap.Int("agency", 3))
		l.Debug("hidden", logging.Success)
		l.Warn("session_error", logging.Fail, zap.String("code", "timeout"))
	}
	strip := func(s string) string { return regexp.MustCompile(`(?m)^\S+ \S+ `).ReplaceAllString(s, "") }
	if strip(a.String()) != strip(b.String()) || !strings.Contains(b.String(), "hello | result: success | remote: 127.0.0.1:5 | agency: 3") {
		t.Fatalf("With:\n%s\nWithField:\n%s", a.String(), b.String())
	}
}

// ParseLine reads back exactly what the encoder writes, and nothing else.
func TestParseLineReadsTheEncoder(t *testing.T) {
	var out bytes.Buffer
	log := zap.New(zapcore.NewCore(logging.NewLineEncoder(), zapcore.AddSync(&out), zapcore.DebugLevel))
	log.Warn("connection_refused", logging.Fail, zap.String("code", "unknown_key"), zap.Int64("count", 12),
		zap.String("reason", "key a|b: c"))
	log.Info("hello", logging.Success, zap.Uint32("agency", 3))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	lines = append(lines, "goroutine 1 [running]:", "")
	var got []logging.Line
	for _, s := range lines {
		if l, ok := logging.ParseLine(s); ok {
			got = append(got, l)
		}
	}
	if len(got) != 2 {
		t.Fatalf("parsed %d lines of %q, want 2", len(got), lines)
	}
	if l := got[0]; l.Level != "WARN" || !l.Is("connection_refused", "fail", "code", "unknown_key") || l.Int("count") != 12 ||
		l.Fields["reason"] != "key a|b: c" || l.Int("code") != -1 {
		t.Errorf("first line read back as %+v", l)
	}
	if l := got[1]; l.Level != "INFO" || !l.Is("hello", "success", "agency", "3") || l.Is("hello", "fail") || l.Is("hello", "", "agency", "4") {
		t.Errorf("second line read back as %+v", l)
	}
	if s := got[1].String(); s != "hello | success | agency: 3" {
		t.Errorf("String() = %q", s)
	}
}

// syncCounter is a log destination that counts the fsyncs asked of it.
type syncCounter struct {
	bytes.Buffer
	syncs int
}

func (s *syncCounter) Sync() error { s.syncs++; return nil }

func TestLoggersWriteButNeverFsync(t *testing.T) {
	for name, build := range map[string]func(string, string, io.Writer) (*zap.Logger, error){
		"direct": logging.New, "buffered": logging.NewBuffered,
	} {
		t.Run(name, func(t *testing.T) {
			dst := &syncCounter{}
			log, err := build("info", "console", dst)
			if err != nil {
				t.Fatal(err)
			}
			log.Info("file_sync", logging.Success)
			if err := log.Sync(); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(dst.String(), "action: file_sync | result: success") {
				t.Fatalf("after Sync the line is not written: %q", dst.String())
			}
			if dst.syncs != 0 {
				t.Fatalf("the logger fsynced its destination %d times; a log line only needs to reach the kernel", dst.syncs)
			}
		})
	}
}
