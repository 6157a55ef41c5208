package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/config"
	"github.com/tp0/loteria/receipt"
	"github.com/tp0/loteria/secure"
)

// hangGuard bounds every wait; it is never a timing assertion.
const hangGuard = 30 * time.Second

// TestMain fails the package if a goroutine outlives the tests; those
// running before the first test (gnet's process-wide worker pool) are
// ignored by identity.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

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

// syncBuffer collects the program's output; seen tells when a text appears.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	waiting map[string]chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	for text, ch := range b.waiting {
		if bytes.Contains(b.buf.Bytes(), []byte(text)) {
			close(ch)
			delete(b.waiting, text)
		}
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// seen returns a channel closed once the output holds text.
func (b *syncBuffer) seen(text string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan struct{})
	if bytes.Contains(b.buf.Bytes(), []byte(text)) {
		close(ch)
		return ch
	}
	if b.waiting == nil {
		b.waiting = map[string]chan struct{}{}
	}
	b.waiting[text] = ch
	return ch
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

// keyDir is a key directory as bin/keygen writes it.
type keyDir struct {
	dir     string
	signPub ed25519.PublicKey
	sign    ed25519.PrivateKey
}

// newKeyDir writes the server's key pairs and agencies 1..n's into a new
// directory; withSign false leaves the signing key pair out.
func newKeyDir(t *testing.T, n int, withSign bool) *keyDir {
	t.Helper()
	kd := &keyDir{dir: t.TempDir()}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	server, err := secure.GenerateKey(nil)
	must(err)
	must(secure.WritePrivateKey(kd.path(secure.ServerKeyFile), "server", server))
	must(secure.WritePublicKey(kd.path(secure.ServerPubFile), "server", server.Public()))
	if withSign {
		kd.signPub, kd.sign, err = ed25519.GenerateKey(rand.Reader)
		must(err)
		must(secure.WriteSigningKey(kd.path(secure.SignKeyFile), "server", kd.sign))
		must(secure.WriteVerifyKey(kd.path(secure.VerifyKeyFile), "server", kd.signPub))
	}
	for i := 1; i <= n; i++ {
		k, err := secure.GenerateKey(nil)
		must(err)
		must(secure.WritePrivateKey(kd.path(secure.AgencyKeyFile(uint32(i))), "agency", k))
		must(secure.WritePublicKey(kd.path(secure.AgencyPubFile(uint32(i))), "agency", k.Public()))
	}
	return kd
}

func (kd *keyDir) path(name string) string { return filepath.Join(kd.dir, name) }

// flags are the key flags of agency id.
func (kd *keyDir) flags(id uint32) []string {
	return []string{"--key", kd.path(secure.AgencyKeyFile(id)), "--server-pub", kd.path(secure.ServerPubFile)}
}

// startServer runs an in-process event server for agencies until the test
// ends, secured with kd or plaintext when kd is nil; with one agency, its
// FINISHED runs the draw.
func startServer(t *testing.T, kd *keyDir, agencies int) (addr, dataDir string) {
	t.Helper()
	cfg := eventserver.Config{Listen: "127.0.0.1:0", Agencies: agencies, DataDir: t.TempDir(),
		WinningNumber: eventserver.DefaultWinningNumber, ShutdownGrace: time.Second, Logger: zap.NewNop()}
	if kd != nil {
		ks, err := secure.OpenKeyStore(kd.dir, cfg.Agencies)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Keys, cfg.SignKey = ks, kd.sign
	}
	srv, err := eventserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("server: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return srv.Addr(), cfg.DataDir
}

var insecure = env{"CLI_INSECURE": "true"}

func TestCourseConfigFile(t *testing.T) {
	path := writeTemp(t, "config.yaml", courseConfig)
	var out bytes.Buffer
	st, err := load([]string{"--config", path}, &out, insecure.with("CLI_ID", "3").lookup)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	c := st.cfg
	if c.Agency != 3 || !slices.Equal(c.Servers, []string{"server:12345"}) || c.BatchMaxAmount != 106 || c.Wait != agency.WaitHold ||
		st.bets != ".data/agency-3.csv" || st.single != nil || c.ReceiptFile != ".data/agency-3.csv.receipt.json" {
		t.Errorf("settings %+v, bets %q", c, st.bets)
	}
	want := fmt.Sprintf(`config \| result: success \| config: %s \| id: 3 \| server: server:12345 \| bets: \.data/agency-3\.csv \| `+
		`batch-max-amount: 106 \| log-level: info \| log-format: console \| wait: hold \| retry-base: %v \| retry-max: %v \| `+
		`give-up: %v \| io-timeout: %v \| key:  \| server-pub:  \| insecure: true \| sign-pub:  \| `+
		`receipt: \.data/agency-3\.csv\.receipt\.json \| mode: insecure \| sign_pub_used: `,
		regexp.QuoteMeta(path), agency.DefaultRetryBase, agency.DefaultRetryMax, agency.DefaultGiveUp, agency.DefaultIOTimeout)
	if !line(want).MatchString(out.String()) || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("config line\n%s\ndoes not match %s", out.String(), want)
	}
}

// The client config.yaml this repository ships (and Compose mounts) loads
// unchanged; keys come from the environment, never from that file.
func TestShippedConfigFile(t *testing.T) {
	kd := newKeyDir(t, 2, true)
	e := env{"CLI_ID": "2", "CLI_KEY": kd.path(secure.AgencyKeyFile(2)), "CLI_SERVER_PUB": kd.path(secure.ServerPubFile)}
	var out bytes.Buffer
	st, err := load([]string{"--config", filepath.Join("..", "..", "config.yaml")}, &out, e.lookup)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if st.cfg.Agency != 2 || st.cfg.Key == nil || st.cfg.SignPub == nil || !slices.Equal(st.cfg.Servers, []string{"server:12345"}) {
		t.Errorf("settings %+v", st.cfg)
	}
	if !line(`config \| result: success \| .* \| mode: secure \| sign_pub_used: ` + regexp.QuoteMeta(kd.path(secure.VerifyKeyFile))).MatchString(out.String()) {
		t.Errorf("config line %q", out.String())
	}
}

func TestConfigFromEnvVariable(t *testing.T) {
	path := writeTemp(t, "config.yaml", courseConfig)
	st, err := load(nil, io.Discard, insecure.with("CLI_ID", "2", "CLI_CONFIG", path).lookup)
	if err != nil || st.cfg.BatchMaxAmount != 106 {
		t.Fatalf("load with CLI_CONFIG: %+v, %v", st, err)
	}
}

func TestPrecedence(t *testing.T) {
	path := writeTemp(t, "config.yaml", courseConfig+"security:\n  insecure: true\nreceipt: /file/r.json\n")
	fileArgs := []string{"--config", path}
	allEnv := env{
		"CLI_ID": "4", "CLI_SERVER_ADDRESS": "127.0.0.1:7000", "CLI_LOG_LEVEL": "debug",
		"CLI_BATCH_MAXAMOUNT": "7", "CLI_BETS": "/data/a.csv", "CLI_WAIT": "poll",
		"CLI_RETRY_BASE": "10ms", "CLI_RETRY_MAX": "1s", "CLI_GIVE_UP": "1m", "CLI_IO_TIMEOUT": "2s",
		"CLI_RECEIPT": "/env/r.json",
	}
	flags := []string{"--id=5", "--server=127.0.0.1:7001", "--log-level=debug", "--batch-max-amount=9",
		"--bets=/b.csv", "--wait=hold", "--retry-base=20ms", "--retry-max=2s", "--give-up=2m", "--io-timeout=3s",
		"--receipt=/flag/r.json"}

	t.Run("file", func(t *testing.T) {
		st, err := load(fileArgs, io.Discard, env{"CLI_ID": "1"}.lookup)
		if err != nil {
			t.Fatal(err)
		}
		checkConfig(t, st, agency.Config{Agency: 1, Servers: []string{"server:12345"}, BatchMaxAmount: 106, Wait: "hold",
			RetryBase: agency.DefaultRetryBase, RetryMax: agency.DefaultRetryMax, GiveUp: agency.DefaultGiveUp,
			IOTimeout: agency.DefaultIOTimeout, ReceiptFile: "/file/r.json"}, ".data/agency-1.csv")
	})
	t.Run("env over file", func(t *testing.T) {
		var out bytes.Buffer
		st, err := load(fileArgs, &out, allEnv.lookup)
		if err != nil {
			t.Fatal(err)
		}
		want := agency.Config{Agency: 4, Servers: []string{"127.0.0.1:7000"}, BatchMaxAmount: 7, Wait: "poll",
			RetryBase: 10 * time.Millisecond, RetryMax: time.Second, GiveUp: time.Minute, IOTimeout: 2 * time.Second, ReceiptFile: "/env/r.json"}
		checkConfig(t, st, want, "/data/a.csv")
		if !line(`config \| result: success \| config: \S+ \| id: 4 \| server: 127\.0\.0\.1:7000 \| bets: /data/a\.csv \| batch-max-amount: 7 \| log-level: debug .*`).MatchString(out.String()) {
			t.Errorf("config line %q", out.String())
		}
	})
	t.Run("flags over env", func(t *testing.T) {
		st, err := load(append(fileArgs, flags...), io.Discard, allEnv.lookup)
		if err != nil {
			t.Fatal(err)
		}
		want := agency.Config{Agency: 5, Servers: []string{"127.0.0.1:7001"}, BatchMaxAmount: 9, Wait: "hold",
			RetryBase: 20 * time.Millisecond, RetryMax: 2 * time.Second, GiveUp: 2 * time.Minute, IOTimeout: 3 * time.Second,
			ReceiptFile: "/flag/r.json"}
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
	same := got.Agency == want.Agency && slices.Equal(got.Servers, want.Servers) && got.BatchMaxAmount == want.BatchMaxAmount &&
		got.Wait == want.Wait && got.RetryBase == want.RetryBase && got.RetryMax == want.RetryMax &&
		got.GiveUp == want.GiveUp && got.IOTimeout == want.IOTimeout && got.LogEachBet == want.LogEachBet &&
		got.ReceiptFile == want.ReceiptFile
	if !same || got.Logger == nil || st.bets != bets {
		t.Errorf("config %+v bets %q\nwant   %+v bets %q", got, st.bets, want, bets)
	}
}

// --server takes a list: the agency tries the addresses in turn.
func TestServerList(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  []string
	}{
		{"a:1", []string{"a:1"}},
		{"a:1,b:2", []string{"a:1", "b:2"}},
		{" a:1 , 127.0.0.1:2,[::1]:3 ", []string{"a:1", "127.0.0.1:2", "[::1]:3"}},
	} {
		for name, src := range map[string]struct {
			args []string
			env  env
		}{
			"flag": {[]string{"--server", tc.value}, insecure.with("CLI_ID", "1")},
			"env":  {nil, insecure.with("CLI_ID", "1", "CLI_SERVER_ADDRESS", tc.value)},
		} {
			st, err := load(src.args, io.Discard, src.env.lookup)
			if err != nil || !slices.Equal(st.cfg.Servers, tc.want) {
				t.Errorf("%s %q: servers %v, %v; want %v", name, tc.value, st.cfg.Servers, err, tc.want)
			}
		}
	}
}

func TestBadSettings(t *testing.T) {
	listFile := writeTemp(t, "list.yaml", "batch:\n  maxAmount: [1, 2]\n")
	badFile := writeTemp(t, "bad.yaml", "batch:\n  maxAmount: many\n")
	id := insecure.with("CLI_ID", "1")
	tests := []struct {
		name     string
		args     []string
		env      env
		mentions []string
	}{
		{"id missing", nil, insecure, []string{"setting id", "required"}},
		{"id abc", nil, insecure.with("CLI_ID", "abc"), []string{"setting id", `"abc"`, "env CLI_ID"}},
		{"id flag abc", []string{"--id", "abc"}, insecure, []string{"id", "abc"}},
		{"id negative", nil, insecure.with("CLI_ID", "-1"), []string{"setting id", `"-1"`}},
		{"batch 0", nil, id.with("CLI_BATCH_MAXAMOUNT", "0"), []string{"setting batch-max-amount", `"0"`, "env CLI_BATCH_MAXAMOUNT", "got 0"}},
		{"batch flag 0", []string{"--batch-max-amount", "0"}, id, []string{"setting batch-max-amount", "flag --batch-max-amount", "got 0"}},
		{"batch too big", nil, id.with("CLI_BATCH_MAXAMOUNT", "70000"), []string{"setting batch-max-amount", "70000"}},
		{"batch words", nil, id.with("CLI_BATCH_MAXAMOUNT", "many"), []string{"setting batch-max-amount", `"many"`, "CLI_BATCH_MAXAMOUNT"}},
		{"batch in file", []string{"--config", badFile}, id, []string{"setting batch-max-amount", `"many"`, badFile, "batch.maxAmount"}},
		{"batch list in file", []string{"--config", listFile}, id, []string{"setting batch-max-amount", listFile, "batch.maxAmount", "list or mapping"}},
		{"wait sometimes", nil, id.with("CLI_WAIT", "sometimes"), []string{"setting wait", `"sometimes"`}},
		{"server nohostport", nil, id.with("CLI_SERVER_ADDRESS", "nohostport"), []string{"setting server", `"nohostport"`, "host:port"}},
		{"server list with a bad entry", []string{"--server", "a:1,nohost"}, id, []string{"setting server", `"nohost"`, "host:port"}},
		{"server list with an empty entry", []string{"--server", "a:1,,b:2"}, id, []string{"setting server", `""`}},
		{"server port too big", nil, id.with("CLI_SERVER_ADDRESS", "localhost:99999"), []string{"setting server", "env CLI_SERVER_ADDRESS", "port 99999"}},
		{"server port 0", []string{"--server", "a:1,b:0"}, id, []string{"setting server", `"b:0"`, "port 0"}},
		{"log level loud", nil, id.with("CLI_LOG_LEVEL", "loud"), []string{"setting log-level", `"loud"`}},
		{"log format xml", []string{"--log-format", "xml"}, id, []string{"setting log-format", `"xml"`}},
		{"retry base 0", nil, id.with("CLI_RETRY_BASE", "0s"), []string{"setting retry-base"}},
		{"retry max below base", []string{"--retry-base", "2s", "--retry-max", "1s"}, id, []string{"setting retry-max"}},
		{"give up 0", nil, id.with("CLI_GIVE_UP", "0s"), []string{"setting give-up"}},
		{"give up sometimes", nil, id.with("CLI_GIVE_UP", "sometimes"), []string{"setting give-up", `"sometimes"`, "CLI_GIVE_UP"}},
		{"io timeout tiny", nil, id.with("CLI_IO_TIMEOUT", "1ms"), []string{"setting io-timeout", "100ms"}},
		{"insecure maybe", nil, env{"CLI_ID": "1", "CLI_INSECURE": "maybe"}, []string{"setting insecure", `"maybe"`, "CLI_INSECURE"}},
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
			checkRefused(t, runMain(t, tc.args, tc.env), tc.mentions...)
		})
	}
}

// checkRefused requires exit 2, no log line and one stderr line naming mentions.
func checkRefused(t *testing.T, r result, mentions ...string) {
	t.Helper()
	if r.code != 2 {
		t.Errorf("exit %d, want 2", r.code)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing (no config line for bad settings)", r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "agency: ") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr %q is not one agency: line", r.stderr)
	}
	for _, m := range mentions {
		if !strings.Contains(r.stderr, m) {
			t.Errorf("stderr %q does not mention %q", r.stderr, m)
		}
	}
}

// The agency speaks plaintext only when asked: it refuses to start with
// neither keys nor --insecure, or with both, and names a key file it cannot
// use.
func TestSecuritySettings(t *testing.T) {
	kd := newKeyDir(t, 1, true)
	key, pub := kd.path(secure.AgencyKeyFile(1)), kd.path(secure.ServerPubFile)
	garbage := writeTemp(t, "garbage.key", "not a key\n")
	short := writeTemp(t, "short.pub", "# too short\nAAAA\n")
	missing := filepath.Join(t.TempDir(), "missing.key")
	id := env{"CLI_ID": "1"}
	tests := []struct {
		name     string
		args     []string
		env      env
		mentions []string
	}{
		{"neither", nil, id, []string{"--key", "--server-pub", "--insecure", "refusing to start with neither"}},
		{"both", []string{"--insecure", "--key", key, "--server-pub", pub}, id, []string{"--insecure", "--key"}},
		{"insecure and a server key", []string{"--server-pub", pub}, id.with("CLI_INSECURE", "true"), []string{"--insecure", "--server-pub"}},
		{"key only", []string{"--key", key}, id, []string{"--server-pub is not"}},
		{"server-pub only", nil, id.with("CLI_SERVER_PUB", pub), []string{"--key is not"}},
		{"key missing", []string{"--key", missing, "--server-pub", pub}, id, []string{"setting key", missing, "no such file"}},
		{"key garbage", []string{"--key", garbage, "--server-pub", pub}, id, []string{"setting key", garbage, "base64"}},
		{"server-pub too short", []string{"--key", key, "--server-pub", short}, id, []string{"setting server-pub", short, "3 bytes"}},
		{"sign-pub garbage", []string{"--key", key, "--server-pub", pub, "--sign-pub", garbage}, id, []string{"setting sign-pub", garbage}},
		{"sign-pub missing", []string{"--key", key, "--server-pub", pub, "--sign-pub", missing}, id, []string{"setting sign-pub", missing}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkRefused(t, runMain(t, tc.args, tc.env), tc.mentions...)
		})
	}
}

// Keys load from flags, the environment or the YAML file; the signing key
// is found beside the server's public key unless named; the config line
// says which mode runs and which signing key is used.
func TestSecurityModes(t *testing.T) {
	kd := newKeyDir(t, 1, true)
	bare := newKeyDir(t, 1, false) // no server-sign.pub beside server.pub
	key, pub := kd.path(secure.AgencyKeyFile(1)), kd.path(secure.ServerPubFile)
	signPub := kd.path(secure.VerifyKeyFile)
	yaml := writeTemp(t, "config.yaml", fmt.Sprintf("security:\n  key: %s\n  server_pub: %s\n", key, pub))
	id := env{"CLI_ID": "1"}
	tests := []struct {
		name     string
		args     []string
		env      env
		mode     string
		signUsed string // "" when receipts are not checked
	}{
		{"flags", kd.flags(1), id, "secure", signPub},
		{"environment", nil, id.with("CLI_KEY", key, "CLI_SERVER_PUB", pub), "secure", signPub},
		{"config file", []string{"--config", yaml}, id, "secure", signPub},
		{"no signing key beside server.pub", bare.flags(1), id, "secure", ""},
		{"signing key named", append(bare.flags(1), "--sign-pub", signPub), id, "secure", signPub},
		{"insecure flag", []string{"--insecure"}, id, "insecure", ""},
		{"insecure env", nil, id.with("CLI_INSECURE", "1"), "insecure", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			st, err := load(tc.args, &out, tc.env.lookup)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf(`config \| result: success \| .* \| mode: %s \| sign_pub_used: %s`, tc.mode, regexp.QuoteMeta(tc.signUsed))
			if !line(want).MatchString(out.String()) {
				t.Errorf("config line %q does not match %q", out.String(), want)
			}
			c := st.cfg
			if secured := tc.mode == "secure"; (c.Key != nil) != secured {
				t.Errorf("mode %s with key %v", tc.mode, c.Key)
			}
			if c.Key != nil {
				k, _ := secure.LoadPrivateKey(tc.env["CLI_KEY"])
				if tc.env["CLI_KEY"] != "" && *c.Key != k {
					t.Error("the key loaded is not the file's")
				}
				if c.ServerPub == (secure.PublicKey{}) {
					t.Error("no server public key loaded")
				}
			}
			if (c.SignPub != nil) != (tc.signUsed != "") || (c.SignPub != nil && !c.SignPub.Equal(kd.signPub)) {
				t.Errorf("SignPub %x, want the key of %q", c.SignPub, tc.signUsed)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	r := runMain(t, []string{"--help"}, env{})
	if r.code != 0 || r.stderr != "" {
		t.Errorf("--help: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"Usage: agency", "--batch-max-amount", "CLI_BATCH_MAXAMOUNT", "CLI_SERVER_ADDRESS",
		"--key", "CLI_KEY", "--server-pub", "--insecure", "--sign-pub", "--receipt", "NOMBRE, APELLIDO, DOCUMENTO, NACIMIENTO, NUMERO"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help does not mention %q", want)
		}
	}
}

func betsFile(t *testing.T, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "Nombre%d,Apellido%d,%d,1990-01-%02d,%d\r\n", i, i, 30000000+i, 1+i%28, 7570+i%10)
	}
	return writeTemp(t, "agency-1.csv", b.String())
}

// A secured upload of a file against a real server: batches as the file's
// config says, the receipt saved beside the bets file by default, checked
// against the signing key found beside server.pub, with the root.
func TestFileUpload(t *testing.T) {
	kd := newKeyDir(t, 1, true)
	addr, _ := startServer(t, kd, 1)
	path := betsFile(t, 250)
	config := writeTemp(t, "config.yaml", courseConfig)
	r := runMain(t, append([]string{"--config", config, "--bets", path}, kd.flags(1)...), env{"CLI_ID": "1", "CLI_SERVER_ADDRESS": addr})
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	f, err := receipt.ReadFile(path + ".receipt.json")
	if err != nil {
		t.Fatalf("receipt at the default path: %v", err)
	}
	if f.Receipt.Agency != 1 || f.Receipt.Bets != 250 || f.Root == nil {
		t.Errorf("receipt %+v", f)
	}
	if err := f.Receipt.Verify(kd.signPub); err != nil {
		t.Errorf("receipt: %v", err)
	}
	for _, p := range []string{
		`config \| result: success \| .* \| receipt: ` + regexp.QuoteMeta(path+".receipt.json") + ` \| mode: secure \| sign_pub_used: \S+`,
		`hello \| result: success \| agency: 1 \| .*`,
		`upload \| result: success \| agency: 1 \| bets: 250 \| chain: [0-9a-f]{64}`,
		`receipt \| result: success \| agency: 1 \| bets: 250 \| chain: [0-9a-f]{64} \| signed: true \| file: ` + regexp.QuoteMeta(path+".receipt.json"),
		fmt.Sprintf(`consulta_ganadores \| result: success \| agency: 1 \| cant_ganadores: 25 \| root: %x \| dni: .*`, *f.Root),
		`close_file \| result: success \| file: ` + regexp.QuoteMeta(path),
		`exit \| result: success \| agency: 1 \| bets: 250 \| cant_ganadores: 25`,
	} {
		if !line(p).MatchString(r.stdout) {
			t.Errorf("stdout has no line matching %q", p)
		}
	}
	if strings.Contains(r.stdout, "apuesta_enviada") {
		t.Error("apuesta_enviada per bet in file mode")
	}
}

func singleBetVars(addr string) env {
	return env{
		"CLI_ID": "1", "CLI_SERVER_ADDRESS": addr, "CLI_RETRY_BASE": "1ms", "CLI_GIVE_UP": "10s", "CLI_INSECURE": "true",
		"NOMBRE": "Santiago Lionel", "APELLIDO": "Lorca", "DOCUMENTO": "00904465",
		"NACIMIENTO": "1999-03-17", "NUMERO": "7574",
	}
}

// Single-bet mode against a real plaintext server: the one bet is stored,
// wins, and no receipt file is written (there is no bets file to put it
// beside).
func TestSingleBet(t *testing.T) {
	addr, dataDir := startServer(t, nil, 1)
	t.Chdir(t.TempDir()) // a receipt written to a relative default path would land here
	r := runMain(t, nil, singleBetVars(addr))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	data, err := os.ReadFile(filepath.Join(dataDir, "bets.csv"))
	if err != nil || string(data) != "1,Santiago Lionel,Lorca,00904465,1999-03-17,7574\r\n" {
		t.Errorf("bets.csv %q, %v", data, err)
	}
	for _, p := range []string{
		`config \| result: success \| .* \| receipt:  \| bets_from: environment \| mode: insecure \| sign_pub_used: `,
		`apuesta_enviada \| result: success \| dni: 00904465 \| numero: 7574`,
		`consulta_ganadores \| result: success \| agency: 1 \| cant_ganadores: 1 \| root: [0-9a-f]{64} \| dni: 00904465`,
		`exit \| result: success \| agency: 1 \| bets: 1 \| cant_ganadores: 1`,
	} {
		if !line(p).MatchString(r.stdout) {
			t.Errorf("stdout has no line matching %q", p)
		}
	}
	if strings.Contains(r.stdout, "close_file") || strings.Contains(r.stdout, "file: ") {
		t.Error("a file was opened or written in single-bet mode")
	}
	if entries, _ := os.ReadDir("."); len(entries) != 0 {
		t.Errorf("single-bet mode wrote %d files", len(entries))
	}
}

// fakeServer accepts plaintext agencies and answers them: WELCOME with
// nothing held, then each BETS with bets(); nil means never answer.
type fakeServer struct {
	ln      net.Listener
	wg      sync.WaitGroup
	bets    func(b *frame.Bets) frame.Frame
	gotBets chan *frame.Bets

	mu    sync.Mutex
	conns []net.Conn
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
		var reply frame.Frame
		switch f := f.(type) {
		case *frame.Hello:
			reply = &frame.Welcome{Window: 16, MaxFrame: frame.MaxSize, Chain: receipt.Empty()}
		case *frame.Bets:
			s.gotBets <- f
			reply = s.bets(f)
		default:
			return
		}
		if reply != nil && frame.Write(c, reply) != nil {
			return
		}
	}
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

// apuesta_enviada success is only logged once the server acknowledged the bet.
func TestSingleBetRejected(t *testing.T) {
	s := newFakeServer(t, func(b *frame.Bets) frame.Frame {
		return &frame.Reject{Code: frame.CodeInvalidBet, Index: b.First, Reason: "bet 0: field document"}
	})
	r := runMain(t, nil, singleBetVars(s.addr()))
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

func TestMissingBetsFile(t *testing.T) {
	r := runMain(t, []string{"--id", "7", "--server", "127.0.0.1:1", "--insecure"}, env{"CLI_BETS": "/nonexistent/agency-7.csv"})
	if r.code != 1 || !line(`open_bets \| result: fail \| file: /nonexistent/agency-7\.csv \| error: .*no such file.*`).MatchString(r.stdout) {
		t.Errorf("exit %d, want 1 and an open_bets fail line", r.code)
	}
}

// A refusal that needs a person exits 1 at once, naming the server's reason.
func TestServerRefusesAgency(t *testing.T) {
	kd := newKeyDir(t, 2, true)
	addr, _ := startServer(t, kd, 2)
	path := betsFile(t, 3)
	other := newKeyDir(t, 1, false)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"plaintext agency", []string{"--id", "1", "--insecure"}, `server error \(secure_required\): .*`},
		{"unknown key", []string{"--id", "1", "--key", other.path(secure.AgencyKeyFile(1)), "--server-pub", kd.path(secure.ServerPubFile)},
			`secure: server refused the handshake: ERROR unknown_key: .*`},
		{"another agency's key", append([]string{"--id", "1"}, kd.flags(2)...), `server error \(wrong_agency\): .*`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runMain(t, append(tc.args, "--server", addr, "--bets", path, "--retry-base", "1ms"), env{})
			if r.code != 1 || !line(`exit \| result: fail \| agency: 1 \| error: `+tc.want).MatchString(r.stdout) {
				t.Errorf("exit %d, want 1 and an exit fail line matching %q", r.code, tc.want)
			}
			if strings.Count(r.stdout, "action: hello") > 1 || strings.Contains(r.stdout, "result: in_progress") {
				t.Error("the agency retried a refusal that needs a person")
			}
		})
	}
}

// SIGTERM while the agency waits for an ACK: it closes the socket and the
// file, logs the shutdown and exits 0.
func TestSIGTERM(t *testing.T) {
	s := newFakeServer(t, func(*frame.Bets) frame.Frame { return nil }) // never ACKs
	path := betsFile(t, 50)
	sigs := make(chan os.Signal, 1)
	finish, stdout := start(context.Background(),
		[]string{"--bets", path, "--io-timeout", "1h", "--insecure"},
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

// SIGINT before the server is reachable (the agency is backing off).
func TestSIGTERMWhileReconnecting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	sigs := make(chan os.Signal, 1)
	finish, stdout := start(context.Background(),
		[]string{"--id", "3", "--server", addr, "--bets", betsFile(t, 1), "--retry-base", "1h", "--retry-max", "1h", "--insecure"}, env{}, sigs)
	select {
	case <-stdout.seen("action: connect | result: in_progress"):
	case <-time.After(hangGuard):
		t.Fatal("the agency never tried to connect")
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
	finish, _ := start(ctx, []string{"--id", "1", "--server", s.addr(), "--bets", betsFile(t, 5), "--insecure"}, env{}, nil)
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
		{"security typo", "security: {insecur: true}\n", "unknown key security.insecur; did you mean security.insecure?"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, "config.yaml", tc.yaml)
			r := runMain(t, []string{"--config", path}, insecure.with("CLI_ID", "1"))
			want := "agency: setting config: config file " + path + ": " + tc.want + "\n"
			if r.code != 2 || r.stderr != want || r.stdout != "" {
				t.Errorf("exit %d stderr %q stdout %q, want exit 2 and stderr %q", r.code, r.stderr, r.stdout, want)
			}
		})
	}
}
