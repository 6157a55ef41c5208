package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
)

func zapLevel(l int8) zapcore.Level { return zapcore.Level(l) }

// cfgHangGuard bounds every wait; it is never a timing assertion.
const cfgHangGuard = 30 * time.Second

type cfgEnv map[string]string

func (e cfgEnv) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

type cfgBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *cfgBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *cfgBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func cfgFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cfgLine matches a whole log line whose text after "action: " is pattern.
func cfgLine(pattern string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [A-Z]+ action: ` + pattern + `$`)
}

// configFile sets every setting through the YAML keys main.go binds.
const configFile = `
server:
  listen: "127.0.0.1:4000"
agencies: 3
data_dir: /srv/file
winning_number: 1234
log:
  level: warn
  format: json
limits:
  read_timeout: 5s
  max_conns: 50
  max_frame: 1024
shutdown_grace: 2s
retry_after: 300ms
unknown:
  ignored: [1, 2]
`

func TestServerPrecedence(t *testing.T) {
	file := cfgFile(t, configFile)
	allEnv := cfgEnv{
		"SERVER_LISTEN": "127.0.0.1:5000", "SERVER_AGENCIES": "4", "SERVER_DATA_DIR": "/srv/env",
		"SERVER_WINNING_NUMBER": "42", "SERVER_LOG_LEVEL": "error", "SERVER_LOG_FORMAT": "console",
		"SERVER_READ_TIMEOUT": "6s", "SERVER_MAX_CONNS": "60", "SERVER_MAX_FRAME": "2048",
		"SERVER_SHUTDOWN_GRACE": "3s", "SERVER_RETRY_AFTER": "400ms",
	}
	flags := []string{"--listen=127.0.0.1:6000", "--agencies=5", "--data-dir=/srv/flag", "--winning-number=7",
		"--log-level=error", "--log-format=console", "--read-timeout=7s", "--max-conns=70", "--max-frame=4096",
		"--shutdown-grace=4s", "--retry-after=500ms"}
	tests := []struct {
		name  string
		args  []string
		env   cfgEnv
		want  eventserver.Config
		level string
	}{
		{"defaults", nil, cfgEnv{}, eventserver.Config{
			Listen: eventserver.DefaultListen, Agencies: eventserver.DefaultAgencies, DataDir: ".",
			WinningNumber: eventserver.DefaultWinningNumber, ReadTimeout: eventserver.DefaultReadTimeout,
			MaxConns: eventserver.DefaultMaxConns, MaxFrame: frame.MaxSize, ShutdownGrace: eventserver.DefaultShutdownGrace,
			RetryAfter: eventserver.DefaultRetryAfter}, "info"},
		{"file", []string{"--config", file}, cfgEnv{}, eventserver.Config{
			Listen: "127.0.0.1:4000", Agencies: 3, DataDir: "/srv/file", WinningNumber: 1234, ReadTimeout: 5 * time.Second,
			MaxConns: 50, MaxFrame: 1024, ShutdownGrace: 2 * time.Second, RetryAfter: 300 * time.Millisecond}, "warn"},
		{"env over file", []string{"--config", file}, allEnv, eventserver.Config{
			Listen: "127.0.0.1:5000", Agencies: 4, DataDir: "/srv/env", WinningNumber: 42, ReadTimeout: 6 * time.Second,
			MaxConns: 60, MaxFrame: 2048, ShutdownGrace: 3 * time.Second, RetryAfter: 400 * time.Millisecond}, "error"},
		{"flags over env", append([]string{"--config", file}, flags...), allEnv, eventserver.Config{
			Listen: "127.0.0.1:6000", Agencies: 5, DataDir: "/srv/flag", WinningNumber: 7, ReadTimeout: 7 * time.Second,
			MaxConns: 70, MaxFrame: 4096, ShutdownGrace: 4 * time.Second, RetryAfter: 500 * time.Millisecond}, "error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cfg, log, err := load(tc.args, &out, tc.env.lookup)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if cfg.Logger == nil || log == nil {
				t.Fatal("no logger")
			}
			cfg.Logger = nil
			if cfg != tc.want {
				t.Errorf("config\n %+v\nwant\n %+v", cfg, tc.want)
			}
			levels := map[string]int8{"info": 0, "warn": 1, "error": 2}
			for name, lvl := range levels {
				if enabled := log.Core().Enabled(zapLevel(lvl)); enabled != (lvl >= levels[tc.level]) {
					t.Errorf("level %s enabled = %v with log level %s", name, enabled, tc.level)
				}
			}
		})
	}
}

func TestServerYAMLAlternatives(t *testing.T) {
	// The second keys of listen and data-dir, and the second env name of log-level.
	file := cfgFile(t, "listen: 127.0.0.1:4100\nstorage:\n  dir: /srv/storage\nLIMITS:\n  Max_Frame: 512\n")
	cfg, log, err := load([]string{"--config", file}, &bytes.Buffer{}, cfgEnv{"LOGGING_LEVEL": "error"}.lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:4100" || cfg.DataDir != "/srv/storage" || cfg.MaxFrame != 512 {
		t.Errorf("config %+v", cfg)
	}
	if log.Core().Enabled(zapLevel(1)) {
		t.Error("LOGGING_LEVEL=error did not apply")
	}
	// SERVER_LOG_LEVEL is the first name: it wins over LOGGING_LEVEL.
	_, log, err = load(nil, &bytes.Buffer{}, cfgEnv{"SERVER_LOG_LEVEL": "debug", "LOGGING_LEVEL": "error"}.lookup)
	if err != nil || !log.Core().Enabled(zapLevel(-1)) {
		t.Errorf("SERVER_LOG_LEVEL did not win: %v", err)
	}
	// The config file may come from SERVER_CONFIG.
	cfg, _, err = load(nil, &bytes.Buffer{}, cfgEnv{"SERVER_CONFIG": file}.lookup)
	if err != nil || cfg.Listen != "127.0.0.1:4100" {
		t.Errorf("SERVER_CONFIG: %+v, %v", cfg, err)
	}
}

func TestServerConfigLine(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	_, _, err := load([]string{"--listen", "127.0.0.1:0", "--data-dir", dir, "--agencies", "2"},
		&out, cfgEnv{"SERVER_WINNING_NUMBER": "0042"}.lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`config \| result: success \| config:  \| listen: 127\.0\.0\.1:0 \| agencies: 2 \| data-dir: %s \| winning-number: 42 \| log-level: info \| log-format: console \| read-timeout: %v \| max-conns: %d \| max-frame: 8192 \| shutdown-grace: %v \| retry-after: %v`,
		regexp.QuoteMeta(dir), eventserver.DefaultReadTimeout, eventserver.DefaultMaxConns, eventserver.DefaultShutdownGrace, eventserver.DefaultRetryAfter)
	if !cfgLine(want).MatchString(out.String()) || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("config line\n%s\ndoes not match\n%s", out.String(), want)
	}
}

func TestServerJSONConfigLine(t *testing.T) {
	var out bytes.Buffer
	if _, _, err := load([]string{"--log-format", "json"}, &out, cfgEnv{}.lookup); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{`"action":"config"`, `"result":"success"`, `"agencies":"5"`, `"listen":"0.0.0.0:12345"`} {
		if !strings.Contains(s, want) {
			t.Errorf("JSON config line %q lacks %s", s, want)
		}
	}
}

func TestServerBadSettings(t *testing.T) {
	badFile := cfgFile(t, "agencies: lots\n")
	listFile := cfgFile(t, "limits:\n  max_conns:\n    - 1\n")
	tests := []struct {
		name     string
		args     []string
		env      cfgEnv
		mentions []string
	}{
		{"agencies 0", []string{"--agencies", "0"}, nil, []string{"setting agencies", "got 0"}},
		{"agencies env 0", nil, cfgEnv{"SERVER_AGENCIES": "0"}, []string{"setting agencies", "got 0"}},
		{"agencies words", nil, cfgEnv{"SERVER_AGENCIES": "many"}, []string{"setting agencies", `"many"`, "env SERVER_AGENCIES"}},
		{"agencies in file", []string{"--config", badFile}, nil, []string{"setting agencies", `"lots"`, badFile, "key agencies"}},
		{"winning 10000", []string{"--winning-number", "10000"}, nil, []string{"setting winning-number", "10000"}},
		{"winning negative", nil, cfgEnv{"SERVER_WINNING_NUMBER": "-1"}, []string{"setting winning-number", "-1"}},
		{"listen x", []string{"--listen", "x"}, nil, []string{"setting listen", `"x"`, "host:port"}},
		{"listen port words", nil, cfgEnv{"SERVER_LISTEN": "127.0.0.1:http"}, []string{"setting listen", `"http"`}},
		{"listen port big", nil, cfgEnv{"SERVER_LISTEN": "127.0.0.1:70000"}, []string{"setting listen", `"70000"`}},
		{"max-frame 9000", []string{"--max-frame", "9000"}, nil, []string{"setting max-frame", "9000", "8192"}},
		{"max-frame 10", nil, cfgEnv{"SERVER_MAX_FRAME": "10"}, []string{"setting max-frame", "got 10"}},
		{"max-conns list", []string{"--config", listFile}, nil, []string{"setting max-conns", listFile, "limits.max_conns", "list or mapping"}},
		{"max-conns 0", []string{"--max-conns", "0"}, nil, []string{"setting max-conns"}},
		{"log-format xml", []string{"--log-format", "xml"}, nil, []string{"setting log-format", `"xml"`}},
		{"log-level loud", nil, cfgEnv{"LOGGING_LEVEL": "loud"}, []string{"setting log-level", `"loud"`}},
		{"read-timeout tiny", nil, cfgEnv{"SERVER_READ_TIMEOUT": "1ms"}, []string{"setting read-timeout", "100ms"}},
		{"read-timeout words", nil, cfgEnv{"SERVER_READ_TIMEOUT": "soon"}, []string{"setting read-timeout", `"soon"`, "SERVER_READ_TIMEOUT"}},
		{"grace 0", []string{"--shutdown-grace", "0s"}, nil, []string{"setting shutdown-grace"}},
		{"retry-after 0", nil, cfgEnv{"SERVER_RETRY_AFTER": "0s"}, []string{"setting retry-after"}},
		{"data-dir empty", []string{"--data-dir", ""}, nil, []string{"setting data-dir"}},
		{"missing config", []string{"--config", "/nonexistent/server.yaml"}, nil, []string{"setting config", "/nonexistent/server.yaml"}},
		{"positional", []string{"serve"}, nil, []string{`"serve"`}},
		{"unknown flag", []string{"--port", "1"}, nil, []string{"port"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr, tc.env.lookup, nil)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing for bad settings", stdout.String())
			}
			msg := stderr.String()
			if !strings.HasPrefix(msg, "eventserver: ") || strings.Count(msg, "\n") != 1 {
				t.Errorf("stderr %q is not one eventserver: line", msg)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(msg, m) {
					t.Errorf("stderr %q does not mention %q", msg, m)
				}
			}
		})
	}
}

func TestServerHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr, cfgEnv{}.lookup, nil); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	for _, want := range []string{"Usage: eventserver", "--winning-number", "SERVER_AGENCIES", "SERVER_LOG_LEVEL, LOGGING_LEVEL"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// startRun runs the program in the background and waits for it to listen.
func startRun(t *testing.T, args []string, env cfgEnv) (addr string, sigs chan os.Signal, stdout *cfgBuffer, done chan int) {
	t.Helper()
	sigs = make(chan os.Signal, 1)
	stdout = &cfgBuffer{}
	done = make(chan int, 1)
	var stderr cfgBuffer
	go func() { done <- run(context.Background(), args, stdout, &stderr, env.lookup, sigs) }()
	listen := cfgLine(`listen \| result: success \| address: (127\.0\.0\.1:\d+) .*`)
	deadline := time.Now().Add(cfgHangGuard)
	for {
		if m := listen.FindStringSubmatch(stdout.String()); m != nil {
			return m[1], sigs, stdout, done
		}
		select {
		case code := <-done:
			t.Fatalf("exited %d before listening\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("never listened; stdout:\n%s", stdout.String())
		}
	}
}

func waitExit(t *testing.T, done chan int, stdout *cfgBuffer) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(cfgHangGuard):
		t.Fatalf("run did not return; stdout:\n%s", stdout.String())
		return -1
	}
}

func TestServerRunsAndStopsOnSignal(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	addr, sigs, stdout, done := startRun(t, []string{"--listen", "127.0.0.1:0", "--agencies", "2"},
		cfgEnv{"SERVER_DATA_DIR": dir, "SERVER_WINNING_NUMBER": "1"})

	// It is our server, configured as asked: agency 2 is welcome, 3 is not.
	c, err := net.DialTimeout("tcp", addr, cfgHangGuard)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(cfgHangGuard))
	r := frame.NewReader(c)
	var dec frame.Decoder
	if err := frame.Write(c, &frame.Hello{Agency: 2}); err != nil {
		t.Fatal(err)
	}
	if f, err := dec.Next(r); err != nil {
		t.Fatalf("no answer to HELLO: %v", err)
	} else if w, ok := f.(*frame.Welcome); !ok || w.Held != 0 {
		t.Fatalf("answer to HELLO: %v", f)
	}
	c.Close()
	c, err = net.DialTimeout("tcp", addr, cfgHangGuard)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(cfgHangGuard))
	if err := frame.Write(c, &frame.Hello{Agency: 3}); err != nil {
		t.Fatal(err)
	}
	if f, err := dec.Next(frame.NewReader(c)); err != nil {
		t.Fatalf("no answer to HELLO 3: %v", err)
	} else if e, ok := f.(*frame.Error); !ok || e.Code != frame.CodeUnknownAgency {
		t.Fatalf("answer to HELLO for agency 3 of 2: %v", f)
	}
	c.Close()

	sigs <- syscall.SIGTERM
	if code := waitExit(t, done, stdout); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
	out := stdout.String()
	for _, p := range []string{
		`config \| result: success \| config:  \| listen: 127\.0\.0\.1:0 \| agencies: 2 \| data-dir: ` + regexp.QuoteMeta(dir) + ` \| winning-number: 1 .*`,
		`signal \| result: success \| signal: terminated`,
		`shutdown \| result: success`,
		`server_exit \| result: success`,
	} {
		if !cfgLine(p).MatchString(out) {
			t.Errorf("stdout has no line matching %q\n%s", p, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bets.csv")); err != nil {
		t.Errorf("no bets.csv in the data dir: %v", err)
	}
}

func TestServerStartFailures(t *testing.T) {
	t.Run("data dir is a file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "plain")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"--listen", "127.0.0.1:0", "--data-dir", file}, &stdout, &stderr, cfgEnv{}.lookup, nil)
		if code != 1 || !cfgLine(`server_start \| result: fail \| error: .+`).MatchString(stdout.String()) {
			t.Errorf("exit %d, want 1 and a server_start fail line\n%s", code, stdout.String())
		}
	})
	t.Run("address in use", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var stdout, stderr cfgBuffer
		done := make(chan int, 1)
		go func() {
			done <- run(context.Background(), []string{"--listen", ln.Addr().String(), "--data-dir", t.TempDir()}, &stdout, &stderr, cfgEnv{}.lookup, nil)
		}()
		code := waitExit(t, done, &stdout)
		if code != 1 || !cfgLine(`server_exit \| result: fail \| error: .*`+regexp.QuoteMeta(ln.Addr().String())+`.*`).MatchString(stdout.String()) {
			t.Errorf("exit %d, want 1 and a server_exit fail line naming the address\n%s", code, stdout.String())
		}
	})
}
