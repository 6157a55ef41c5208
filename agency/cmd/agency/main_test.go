package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/config"
)

// hangGuard bounds every wait; it is never a timing assertion.
const hangGuard = 30 * time.Second

// courseConfig is the course's client config.yaml, byte for byte.
const courseConfig = `server:
  address: "server:12345"
loop:
  amount: 5
  period: "5s"
log:
  level: "info"
batch:
  maxAmount: 106
`

type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

// with returns a copy of e with more variables.
func (e env) with(kv ...string) env {
	out := env{}
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// line matches one whole log line whose text after "action: " is pattern.
func line(pattern string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [A-Z]+ action: ` + pattern + `$`)
}

type result struct {
	code           int
	stdout, stderr string
}

// start runs the program in the background; finish waits for it.
func start(ctx context.Context, args []string, e env, sigs <-chan os.Signal) (func(t *testing.T) result, *syncBuffer) {
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &stdout, &stderr, e.lookup, sigs) }()
	return func(t *testing.T) result {
		t.Helper()
		select {
		case code := <-done:
			r := result{code, stdout.String(), stderr.String()}
			if t.Failed() {
				t.Logf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			return r
		case <-time.After(hangGuard):
			t.Fatalf("run did not return; stdout so far:\n%s", stdout.String())
			return result{}
		}
	}, &stdout
}

func runMain(t *testing.T, args []string, e env) result {
	t.Helper()
	finish, _ := start(context.Background(), args, e, nil)
	r := finish(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
	})
	return r
}

func TestCourseConfigFile(t *testing.T) {
	path := writeTemp(t, "config.yaml", courseConfig)
	var out bytes.Buffer
	st, err := load([]string{"--config", path}, &out, env{"CLI_ID": "3"}.lookup)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	c := st.cfg
	if c.Agency != 3 || c.Server != "server:12345" || c.BatchMaxAmount != 106 || c.Wait != agency.WaitHold || st.bets != ".data/agency-3.csv" || st.single != nil {
		t.Errorf("settings %+v, bets %q", c, st.bets)
	}
	want := fmt.Sprintf(`config \| result: success \| config: %s \| id: 3 \| server: server:12345 \| bets: \.data/agency-3\.csv \| batch-max-amount: 106 \| log-level: info \| log-format: console \| wait: hold \| retry-base: %v \| retry-max: %v \| give-up: %v \| io-timeout: %v`,
		regexp.QuoteMeta(path), agency.DefaultRetryBase, agency.DefaultRetryMax, agency.DefaultGiveUp, agency.DefaultIOTimeout)
	if !line(want).MatchString(out.String()) || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("config line\n%s\ndoes not match %s", out.String(), want)
	}
}

func TestConfigFromEnvVariable(t *testing.T) {
	path := writeTemp(t, "config.yaml", courseConfig)
	st, err := load(nil, io.Discard, env{"CLI_ID": "2", "CLI_CONFIG": path}.lookup)
	if err != nil || st.cfg.BatchMaxAmount != 106 {
		t.Fatalf("load with CLI_CONFIG: %+v, %v", st, err)
	}
}

func TestPrecedence(t *testing.T) {
	path := writeTemp(t, "config.yaml", courseConfig)
	fileArgs := []string{"--config", path}
	allEnv := env{
		"CLI_ID": "4", "CLI_SERVER_ADDRESS": "127.0.0.1:7000", "CLI_LOG_LEVEL": "debug",
		"CLI_BATCH_MAXAMOUNT": "7", "CLI_BETS": "/data/a.csv", "CLI_WAIT": "poll",
		"CLI_RETRY_BASE": "10ms", "CLI_RETRY_MAX": "1s", "CLI_GIVE_UP": "1m", "CLI_IO_TIMEOUT": "2s",
	}
	flags := []string{"--id=5", "--server=127.0.0.1:7001", "--log-level=debug", "--batch-max-amount=9",
		"--bets=/b.csv", "--wait=hold", "--retry-base=20ms", "--retry-max=2s", "--give-up=2m", "--io-timeout=3s"}

	t.Run("env over file", func(t *testing.T) {
		var out bytes.Buffer
		st, err := load(fileArgs, &out, allEnv.lookup)
		if err != nil {
			t.Fatal(err)
		}
		want := agency.Config{Agency: 4, Server: "127.0.0.1:7000", BatchMaxAmount: 7, Wait: "poll",
			RetryBase: 10 * time.Millisecond, RetryMax: time.Second, GiveUp: time.Minute, IOTimeout: 2 * time.Second}
		checkConfig(t, st, want, "/data/a.csv")
		if !line(`config \| result: success \| config: \S+ \| id: 4 \| server: 127\.0\.0\.1:7000 \| bets: /data/a\.csv \| batch-max-amount: 7 \| log-level: debug .*`).MatchString(out.String()) {
			t.Errorf("config line %q", out.String())
		}
	})
	t.Run("flags over env", func(t *testing.T) {
		var out bytes.Buffer
		st, err := load(append(fileArgs, flags...), &out, allEnv.lookup)
		if err != nil {
			t.Fatal(err)
		}
		want := agency.Config{Agency: 5, Server: "127.0.0.1:7001", BatchMaxAmount: 9, Wait: "hold",
			RetryBase: 20 * time.Millisecond, RetryMax: 2 * time.Second, GiveUp: 2 * time.Minute, IOTimeout: 3 * time.Second}
		checkConfig(t, st, want, "/b.csv")
	})
	t.Run("log level", func(t *testing.T) {
		// file says info; env debug beats it; a flag error beats the env.
		for _, tc := range []struct {
			args  []string
			env   env
			debug bool
			info  bool
		}{
			{fileArgs, env{"CLI_ID": "1"}, false, true},
			{fileArgs, env{"CLI_ID": "1", "CLI_LOG_LEVEL": "debug"}, true, true},
			{append(fileArgs, "--log-level", "error"), env{"CLI_ID": "1", "CLI_LOG_LEVEL": "debug"}, false, false},
		} {
			var out bytes.Buffer
			st, err := load(tc.args, &out, tc.env.lookup)
			if err != nil {
				t.Fatal(err)
			}
			core := st.log.Core()
			if core.Enabled(-1) != tc.debug || core.Enabled(0) != tc.info {
				t.Errorf("%v %v: debug %v info %v, want %v %v", tc.args, tc.env, core.Enabled(-1), core.Enabled(0), tc.debug, tc.info)
			}
			if got := out.Len() > 0; got != tc.info {
				t.Errorf("%v %v: config line printed %v, want %v", tc.args, tc.env, got, tc.info)
			}
		}
	})
}

func checkConfig(t *testing.T, st *settings, want agency.Config, bets string) {
	t.Helper()
	got := st.cfg
	same := got.Agency == want.Agency && got.Server == want.Server && got.BatchMaxAmount == want.BatchMaxAmount &&
		got.Wait == want.Wait && got.RetryBase == want.RetryBase && got.RetryMax == want.RetryMax &&
		got.GiveUp == want.GiveUp && got.IOTimeout == want.IOTimeout && got.LogEachBet == want.LogEachBet
	if !same || got.Logger == nil || st.bets != bets {
		t.Errorf("config %+v bets %q\nwant   %+v bets %q", got, st.bets, want, bets)
	}
}

func TestBadSettings(t *testing.T) {
	listFile := writeTemp(t, "list.yaml", "batch:\n  maxAmount: [1, 2]\n")
	badFile := writeTemp(t, "bad.yaml", "batch:\n  maxAmount: many\n")
	id := env{"CLI_ID": "1"}
	tests := []struct {
		name     string
		args     []string
		env      env
		mentions []string
	}{
		{"id missing", nil, env{}, []string{"setting id", "required"}},
		{"id abc", nil, env{"CLI_ID": "abc"}, []string{"setting id", `"abc"`, "env CLI_ID"}},
		{"id flag abc", []string{"--id", "abc"}, env{}, []string{"id", "abc"}},
		{"id negative", nil, env{"CLI_ID": "-1"}, []string{"setting id", `"-1"`}},
		{"batch 0", nil, id.with("CLI_BATCH_MAXAMOUNT", "0"), []string{"setting batch-max-amount", "got 0"}},
		{"batch flag 0", []string{"--batch-max-amount", "0"}, id, []string{"setting batch-max-amount", "got 0"}},
		{"batch too big", nil, id.with("CLI_BATCH_MAXAMOUNT", "70000"), []string{"setting batch-max-amount", "70000"}},
		{"batch words", nil, id.with("CLI_BATCH_MAXAMOUNT", "many"), []string{"setting batch-max-amount", `"many"`, "CLI_BATCH_MAXAMOUNT"}},
		{"batch in file", []string{"--config", badFile}, id, []string{"setting batch-max-amount", `"many"`, badFile, "batch.maxAmount"}},
		{"batch list in file", []string{"--config", listFile}, id, []string{"setting batch-max-amount", listFile, "batch.maxAmount", "list or mapping"}},
		{"wait sometimes", nil, id.with("CLI_WAIT", "sometimes"), []string{"setting wait", `"sometimes"`}},
		{"server nohostport", nil, id.with("CLI_SERVER_ADDRESS", "nohostport"), []string{"setting server", `"nohostport"`, "host:port"}},
		{"log level loud", nil, id.with("CLI_LOG_LEVEL", "loud"), []string{"setting log-level", `"loud"`}},
		{"log format xml", []string{"--log-format", "xml"}, id, []string{"setting log-format", `"xml"`}},
		{"retry base 0", nil, id.with("CLI_RETRY_BASE", "0s"), []string{"setting retry-base"}},
		{"retry max below base", []string{"--retry-base", "2s", "--retry-max", "1s"}, id, []string{"setting retry-max"}},
		{"give up 0", nil, id.with("CLI_GIVE_UP", "0s"), []string{"setting give-up"}},
		{"give up sometimes", nil, id.with("CLI_GIVE_UP", "sometimes"), []string{"setting give-up", `"sometimes"`, "CLI_GIVE_UP"}},
		{"io timeout tiny", nil, id.with("CLI_IO_TIMEOUT", "1ms"), []string{"setting io-timeout", "100ms"}},
		{"missing config", []string{"--config", "/nonexistent/config.yaml"}, id, []string{"setting config", "/nonexistent/config.yaml"}},
		{"unknown flag", []string{"--speed", "9"}, id, []string{"speed"}},
		{"positional", []string{"extra"}, id, []string{`"extra"`}},
		{"single bet partial", nil, id.with("NOMBRE", "Ana", "DOCUMENTO", "123"), []string{"single-bet mode", "missing APELLIDO, NACIMIENTO, NUMERO"}},
		{"single bet document", nil, id.with("NOMBRE", "Ana", "APELLIDO", "Gómez", "DOCUMENTO", "12a", "NACIMIENTO", "1990-01-01", "NUMERO", "1"), []string{"single-bet mode", "document", `"12a"`}},
		{"single bet date", nil, id.with("NOMBRE", "Ana", "APELLIDO", "Gómez", "DOCUMENTO", "123", "NACIMIENTO", "2023-02-30", "NUMERO", "1"), []string{"single-bet mode", "birthdate"}},
		{"single bet number", nil, id.with("NOMBRE", "Ana", "APELLIDO", "Gómez", "DOCUMENTO", "123", "NACIMIENTO", "1990-01-01", "NUMERO", "10000"), []string{"single-bet mode", "number"}},
		{"single bet empty name", nil, id.with("NOMBRE", "", "APELLIDO", "Gómez", "DOCUMENTO", "123", "NACIMIENTO", "1990-01-01", "NUMERO", "1"), []string{"single-bet mode", "first_name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runMain(t, tc.args, tc.env)
			if r.code != 2 {
				t.Errorf("exit %d, want 2", r.code)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing (no config line for bad settings)", r.stdout)
			}
			if !strings.HasPrefix(r.stderr, "agency: ") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("stderr %q is not one agency: line", r.stderr)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(r.stderr, m) {
					t.Errorf("stderr %q does not mention %q", r.stderr, m)
				}
			}
		})
	}
}

func TestHelp(t *testing.T) {
	r := runMain(t, []string{"--help"}, env{})
	if r.code != 0 || r.stderr != "" {
		t.Errorf("--help: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"Usage: agency", "--batch-max-amount", "CLI_BATCH_MAXAMOUNT", "CLI_SERVER_ADDRESS", "NOMBRE, APELLIDO, DOCUMENTO, NACIMIENTO, NUMERO"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help does not mention %q", want)
		}
	}
}

// fakeServer accepts agencies and answers them: WELCOME with what it
// holds, each BETS with bets(), FINISHED with the winners.
type fakeServer struct {
	ln      net.Listener
	wg      sync.WaitGroup
	winners []string
	bets    func(b *frame.Bets) frame.Frame // nil reply: never answer
	gotBets chan *frame.Bets

	mu    sync.Mutex
	conns []net.Conn
	held  uint64
}

func newFakeServer(t *testing.T, bets func(b *frame.Bets) frame.Frame) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln, bets: bets, gotBets: make(chan *frame.Bets, 100)}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func ack(b *frame.Bets) frame.Frame { return &frame.Ack{First: b.First, Count: uint16(len(b.Bets))} }

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.serve(c)
		}()
	}
}

func (s *fakeServer) serve(c net.Conn) {
	r := frame.NewReader(c)
	var dec frame.Decoder
	for {
		c.SetReadDeadline(time.Now().Add(hangGuard))
		f, err := dec.Next(r)
		if err != nil {
			return
		}
		var replies []frame.Frame
		switch f := f.(type) {
		case *frame.Hello:
			s.mu.Lock()
			replies = append(replies, &frame.Welcome{Held: s.held})
			s.mu.Unlock()
		case *frame.Bets:
			s.gotBets <- f
			if rep := s.bets(f); rep != nil {
				if a, ok := rep.(*frame.Ack); ok {
					s.mu.Lock()
					s.held = a.First + uint64(a.Count)
					s.mu.Unlock()
				}
				replies = append(replies, rep)
			}
		case *frame.Finished:
			replies = append(replies, &frame.NotReady{RetryAfter: time.Millisecond, Finished: 1, Agencies: 1})
			for _, w := range frame.WinnersFrames(s.winners) {
				replies = append(replies, w)
			}
		default:
			return
		}
		for _, rep := range replies {
			if frame.Write(c, rep) != nil {
				return
			}
		}
	}
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func singleBetVars(s *fakeServer) env {
	return env{
		"CLI_ID": "1", "CLI_SERVER_ADDRESS": s.addr(), "CLI_RETRY_BASE": "1ms", "CLI_GIVE_UP": "10s",
		"NOMBRE": "Santiago Lionel", "APELLIDO": "Lorca", "DOCUMENTO": "00904465",
		"NACIMIENTO": "1999-03-17", "NUMERO": "7574",
	}
}

func TestSingleBet(t *testing.T) {
	s := newFakeServer(t, ack)
	s.winners = []string{"00904465"}
	r := runMain(t, nil, singleBetVars(s))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	select {
	case b := <-s.gotBets:
		want := frame.Bet{FirstName: "Santiago Lionel", LastName: "Lorca", Document: "00904465", Birthdate: 19990317, Number: 7574}
		if b.First != 0 || len(b.Bets) != 1 || b.Bets[0] != want {
			t.Errorf("server got %+v, want the one bet %+v", b, want)
		}
	default:
		t.Fatal("server got no BETS")
	}
	if len(s.gotBets) != 0 {
		t.Error("more than one BETS sent")
	}
	for _, p := range []string{
		`config \| result: success \| .* \| mode: single_bet`,
		`apuesta_enviada \| result: success \| dni: 00904465 \| numero: 7574`,
		`consulta_ganadores \| result: success \| agency: 1 \| cant_ganadores: 1 \| dni: 00904465`,
		`exit \| result: success \| agency: 1 \| bets: 1 \| cant_ganadores: 1`,
	} {
		if !line(p).MatchString(r.stdout) {
			t.Errorf("stdout has no line matching %q", p)
		}
	}
	if strings.Contains(r.stdout, "close_file") {
		t.Error("close_file logged in single-bet mode, which opens no file")
	}
}

// apuesta_enviada success is only logged once the server acknowledged the bet.
func TestSingleBetRejected(t *testing.T) {
	s := newFakeServer(t, func(b *frame.Bets) frame.Frame {
		return &frame.Reject{Code: frame.CodeInvalidBet, Index: b.First, Reason: "bet 0: field document"}
	})
	r := runMain(t, nil, singleBetVars(s))
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	if line(`apuesta_enviada \| result: success .*`).MatchString(r.stdout) {
		t.Error("apuesta_enviada success logged for a rejected bet")
	}
	for _, p := range []string{
		`apuesta_enviada \| result: fail \| cantidad: 1 \| code: invalid_bet \| index: 0 \| reason: bet 0: field document`,
		`exit \| result: fail \| agency: 1 \| error: batch rejected .*`,
	} {
		if !line(p).MatchString(r.stdout) {
			t.Errorf("stdout has no line matching %q", p)
		}
	}
}

func betsFile(t *testing.T, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "Nombre%d,Apellido%d,%d,1990-01-%02d,%d\r\n", i, i, 30000000+i, 1+i%28, i)
	}
	return writeTemp(t, "agency-1.csv", b.String())
}

func TestFileUpload(t *testing.T) {
	s := newFakeServer(t, ack)
	s.winners = []string{"30000007", "30000100"}
	path := betsFile(t, 250)
	config := writeTemp(t, "config.yaml", courseConfig)
	r := runMain(t, []string{"--config", config, "--bets", path}, env{"CLI_ID": "1", "CLI_SERVER_ADDRESS": s.addr()})
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	var sizes []int
	for len(s.gotBets) > 0 {
		sizes = append(sizes, len((<-s.gotBets).Bets))
	}
	if fmt.Sprint(sizes) != "[106 106 38]" {
		t.Errorf("batches of %v, want [106 106 38] (batch.maxAmount from the file)", sizes)
	}
	for _, p := range []string{
		`upload \| result: success \| agency: 1 \| bets: 250`,
		`close_file \| result: success \| file: ` + regexp.QuoteMeta(path),
		`exit \| result: success \| agency: 1 \| bets: 250 \| cant_ganadores: 2`,
	} {
		if !line(p).MatchString(r.stdout) {
			t.Errorf("stdout has no line matching %q", p)
		}
	}
	if strings.Contains(r.stdout, "apuesta_enviada") {
		t.Error("apuesta_enviada per bet in file mode")
	}
}

func TestMissingBetsFile(t *testing.T) {
	r := runMain(t, []string{"--id", "7", "--server", "127.0.0.1:1"}, env{"CLI_BETS": "/nonexistent/agency-7.csv"})
	if r.code != 1 || !line(`open_bets \| result: fail \| file: /nonexistent/agency-7\.csv \| error: .*no such file.*`).MatchString(r.stdout) {
		t.Errorf("exit %d, want 1 and an open_bets fail line", r.code)
	}
}

func TestServerRefusesAgency(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var dec frame.Decoder
		if _, err := dec.Next(frame.NewReader(c)); err == nil {
			frame.Write(c, &frame.Error{Code: frame.CodeUnknownAgency, Reason: "agency 9 is not one of 1..5"})
		}
	}()
	path := betsFile(t, 3)
	r := runMain(t, []string{"--id", "9", "--server", ln.Addr().String(), "--bets", path}, env{})
	if r.code != 1 || !line(`exit \| result: fail \| agency: 9 \| error: server error \(unknown_agency\): agency 9 is not one of 1\.\.5`).MatchString(r.stdout) {
		t.Errorf("exit %d, want 1 and an exit fail line", r.code)
	}
}

// SIGTERM while the agency waits for an ACK: it closes the socket and the
// file, logs the shutdown and exits 0.
func TestSIGTERM(t *testing.T) {
	s := newFakeServer(t, func(*frame.Bets) frame.Frame { return nil }) // never ACKs
	path := betsFile(t, 50)
	sigs := make(chan os.Signal, 1)
	finish, stdout := start(context.Background(),
		[]string{"--bets", path, "--io-timeout", "1h"},
		env{"CLI_ID": "2", "CLI_SERVER_ADDRESS": s.addr()}, sigs)
	select {
	case <-s.gotBets:
	case <-time.After(hangGuard):
		t.Fatalf("no BETS reached the server; stdout:\n%s", stdout.String())
	}
	sigs <- syscall.SIGTERM
	r := finish(t)
	if r.code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", r.code)
	}
	patterns := []string{
		`signal \| result: success \| signal: terminated \| agency: 2`,
		`close_socket \| result: success \| server: ` + regexp.QuoteMeta(s.addr()),
		`close_file \| result: success \| file: ` + regexp.QuoteMeta(path),
		`shutdown \| result: success \| signal: terminated \| agency: 2 \| bets_acknowledged: 0`,
	}
	last := -1
	for _, p := range patterns {
		loc := line(p).FindStringIndex(r.stdout)
		if loc == nil {
			t.Errorf("stdout has no line matching %q", p)
			continue
		}
		if loc[0] < last {
			t.Errorf("line %q out of order", p)
		}
		last = loc[0]
	}
	if strings.Contains(r.stdout, "action: exit") {
		t.Error("an exit line after a signal; want the shutdown line")
	}
}

// SIGTERM before the server is reachable (the agency is backing off).
func TestSIGTERMWhileReconnecting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	sigs := make(chan os.Signal, 1)
	finish, stdout := start(context.Background(),
		[]string{"--id", "3", "--server", addr, "--bets", betsFile(t, 1), "--retry-base", "1h", "--retry-max", "1h"}, env{}, sigs)
	deadline := time.Now().Add(hangGuard)
	for !strings.Contains(stdout.String(), "action: connect | result: in_progress") {
		if time.Now().After(deadline) {
			t.Fatal("the agency never tried to connect")
		}
		time.Sleep(5 * time.Millisecond)
	}
	sigs <- syscall.SIGINT
	r := finish(t)
	if r.code != 0 || !line(`shutdown \| result: success \| signal: interrupt \| agency: 3 \| bets_acknowledged: 0`).MatchString(r.stdout) {
		t.Errorf("exit %d, want 0 and a shutdown line", r.code)
	}
}

// A cancelled parent context (not a signal) also stops the agency cleanly.
func TestContextCancel(t *testing.T) {
	s := newFakeServer(t, func(*frame.Bets) frame.Frame { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	finish, _ := start(ctx, []string{"--id", "1", "--server", s.addr(), "--bets", betsFile(t, 5)}, env{}, nil)
	select {
	case <-s.gotBets:
	case <-time.After(hangGuard):
		t.Fatal("no BETS reached the server")
	}
	cancel()
	r := finish(t)
	if r.code != 0 || !line(`shutdown \| result: success \| signal:  \| agency: 1 \| bets_acknowledged: 0`).MatchString(r.stdout) {
		t.Errorf("exit %d, want 0 and a shutdown line", r.code)
	}
}

func TestSingleBetEnvNames(t *testing.T) {
	// All or none: with none set, the file is used.
	b, err := singleBet(env{}.lookup)
	if b != nil || err != nil {
		t.Errorf("no variables: %v, %v", b, err)
	}
	var ce *config.Error
	_, err = singleBet(env{"NUMERO": "1"}.lookup)
	if !errors.As(err, &ce) || ce.Setting != "single-bet mode" || !strings.Contains(err.Error(), "missing NOMBRE, APELLIDO, DOCUMENTO, NACIMIENTO") {
		t.Errorf("one variable: %v", err)
	}
}

// A key the agency does not read stops it with status 2 and names the key
// (with the closest known one when there is one); loop.* is accepted.
func TestUnknownConfigKeys(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"top level", courseConfig + "bogus_key: 1\n", "unknown key bogus_key"},
		{"nested typo", "log: {levle: debug}\n", "unknown key log.levle; did you mean log.level?"},
		{"section given a value", "log: debug\n", "key log is a section, not a setting; did you mean log.level or log.format?"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, "config.yaml", tc.yaml)
			r := runMain(t, []string{"--config", path}, env{"CLI_ID": "1"})
			want := "agency: setting config: config file " + path + ": " + tc.want + "\n"
			if r.code != 2 || r.stderr != want || r.stdout != "" {
				t.Errorf("exit %d stderr %q stdout %q, want exit 2 and stderr %q", r.code, r.stderr, r.stdout, want)
			}
		})
	}
}
