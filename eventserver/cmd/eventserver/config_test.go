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
	"github.com/tp0/loteria/internal/proctest"
	"github.com/tp0/loteria/secure"
)

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

// load is LoadConfig as main calls it.
func load(args []string, out *bytes.Buffer, env cfgEnv) (eventserver.Config, error) {
	return eventserver.LoadConfig("eventserver", args, out, env.lookup)
}

// cfgView is what a test compares of a Config: every setting, and which
// key directory (by its server public key) the keys came from.
type cfgView struct {
	Listen        string
	Agencies      int
	DataDir       string
	Store         string
	Winning       uint16
	ReadTimeout   time.Duration
	HelloTimeout  time.Duration
	PingInterval  time.Duration
	MaxPending    int
	MaxFrame      int
	Window        int
	Grace         time.Duration
	RetryAfter    time.Duration
	Rebuild       bool
	MetricsListen string
	Keys          string // "" when --insecure
}

func view(cfg eventserver.Config, dirs map[string]*memKeys) cfgView {
	v := cfgView{
		Listen: cfg.Listen, Agencies: cfg.Agencies, DataDir: cfg.DataDir, Store: cfg.Store, Winning: cfg.WinningNumber,
		ReadTimeout: cfg.ReadTimeout, HelloTimeout: cfg.HelloTimeout, PingInterval: cfg.PingInterval,
		MaxPending: cfg.MaxPending, MaxFrame: cfg.MaxFrame, Window: cfg.Window, Grace: cfg.ShutdownGrace,
		RetryAfter: cfg.RetryAfter, Rebuild: cfg.RebuildJournal, MetricsListen: cfg.MetricsListen,
	}
	if cfg.Keys != nil {
		v.Keys = "unknown"
		for name, k := range dirs {
			if cfg.Keys.Public() == k.serverPub && bytes.Equal(cfg.SignKey, k.sign) {
				v.Keys = name
			}
		}
	}
	return v
}

// storePassword is a password in a --store URL: no log line may show it.
const storePassword = "s3cret-pw"

// TestServerPrecedence sets every setting in a YAML file, then in the
// environment, then as flags: each source beats the ones after it,
// setting by setting, new settings of protocol version 2 included.
func TestServerPrecedence(t *testing.T) {
	dirs := map[string]*memKeys{"file": writeKeys(t, 5), "env": writeKeys(t, 5), "flag": writeKeys(t, 5)}
	file := cfgFile(t, fmt.Sprintf(`
server:
  listen: "127.0.0.1:4000"
agencies: 3
data_dir: /srv/file
winning_number: 1234
security:
  keys: %s
log:
  level: warn
  format: json
limits:
  read_timeout: 5s
  hello_timeout: 2s
  ping_interval: 20s
  max_pending: 50
  max_frame: 1024
  window: 4
shutdown_grace: 2s
retry_after: 300ms
storage:
  url: postgres://lottery@db-file:5432/lottery
metrics:
  listen: "127.0.0.1:9100"
`, dirs["file"].dir))
	allEnv := cfgEnv{
		"SERVER_LISTEN": "127.0.0.1:5000", "SERVER_AGENCIES": "4", "SERVER_DATA_DIR": "/srv/env",
		"SERVER_WINNING_NUMBER": "42", "SERVER_KEYS": dirs["env"].dir, "SERVER_LOG_LEVEL": "error",
		"SERVER_LOG_FORMAT": "console", "SERVER_READ_TIMEOUT": "6s", "SERVER_HELLO_TIMEOUT": "3s",
		"SERVER_PING_INTERVAL": "30s", "SERVER_MAX_PENDING": "60", "SERVER_MAX_FRAME": "2048", "SERVER_WINDOW": "8",
		"SERVER_SHUTDOWN_GRACE": "3s", "SERVER_RETRY_AFTER": "400ms", "SERVER_REBUILD_JOURNAL": "false",
		"SERVER_METRICS_LISTEN": "127.0.0.1:9200", "SERVER_STORE": "postgres://lottery@db-env:5432/lottery",
	}
	flags := []string{"--listen=127.0.0.1:6000", "--agencies=5", "--data-dir=/srv/flag", "--winning-number=7",
		"--keys", dirs["flag"].dir, "--log-level=debug", "--log-format=json", "--read-timeout=7s", "--hello-timeout=4s",
		"--ping-interval=40s", "--max-pending=70", "--max-frame=4096", "--window=32", "--shutdown-grace=4s",
		"--retry-after=500ms", "--metrics-listen=127.0.0.1:9300",
		"--store", "postgres://lottery:" + storePassword + "@db-flag:5432/lottery"}
	tests := []struct {
		name  string
		args  []string
		env   cfgEnv
		want  cfgView
		level zapcore.Level
		json  bool
	}{
		{"defaults", []string{"--insecure"}, cfgEnv{}, cfgView{
			Listen: eventserver.DefaultListen, Agencies: eventserver.DefaultAgencies, DataDir: ".",
			Winning: eventserver.DefaultWinningNumber, ReadTimeout: eventserver.DefaultReadTimeout,
			HelloTimeout: eventserver.DefaultHelloTimeout, PingInterval: eventserver.DefaultPingInterval,
			MaxPending: eventserver.DefaultMaxPending, MaxFrame: frame.MaxSize, Window: eventserver.DefaultWindow,
			Grace: eventserver.DefaultShutdownGrace, RetryAfter: eventserver.DefaultRetryAfter}, zapcore.InfoLevel, false},
		{"file", []string{"--config", file}, cfgEnv{}, cfgView{
			Listen: "127.0.0.1:4000", Agencies: 3, DataDir: "/srv/file", Winning: 1234, ReadTimeout: 5 * time.Second,
			HelloTimeout: 2 * time.Second, PingInterval: 20 * time.Second, MaxPending: 50, MaxFrame: 1024, Window: 4,
			Grace: 2 * time.Second, RetryAfter: 300 * time.Millisecond, MetricsListen: "127.0.0.1:9100",
			Store: "postgres://lottery@db-file:5432/lottery", Keys: "file"}, zapcore.WarnLevel, true},
		{"env over file", []string{"--config", file}, allEnv, cfgView{
			Listen: "127.0.0.1:5000", Agencies: 4, DataDir: "/srv/env", Winning: 42, ReadTimeout: 6 * time.Second,
			HelloTimeout: 3 * time.Second, PingInterval: 30 * time.Second, MaxPending: 60, MaxFrame: 2048, Window: 8,
			Grace: 3 * time.Second, RetryAfter: 400 * time.Millisecond, Rebuild: false, MetricsListen: "127.0.0.1:9200",
			Store: "postgres://lottery@db-env:5432/lottery", Keys: "env"}, zapcore.ErrorLevel, false},
		{"flags over env", append([]string{"--config", file}, flags...), allEnv, cfgView{
			Listen: "127.0.0.1:6000", Agencies: 5, DataDir: "/srv/flag", Winning: 7, ReadTimeout: 7 * time.Second,
			HelloTimeout: 4 * time.Second, PingInterval: 40 * time.Second, MaxPending: 70, MaxFrame: 4096, Window: 32,
			Grace: 4 * time.Second, RetryAfter: 500 * time.Millisecond, MetricsListen: "127.0.0.1:9300",
			Store: "postgres://lottery:" + storePassword + "@db-flag:5432/lottery", Keys: "flag"}, zapcore.DebugLevel, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cfg, err := load(tc.args, &out, tc.env)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if cfg.Logger == nil {
				t.Fatal("no logger")
			}
			if got := view(cfg, dirs); got != tc.want {
				t.Errorf("config\n %+v\nwant\n %+v", got, tc.want)
			}
			for _, lvl := range []zapcore.Level{zapcore.DebugLevel, zapcore.InfoLevel, zapcore.WarnLevel, zapcore.ErrorLevel} {
				if enabled := cfg.Logger.Core().Enabled(lvl); enabled != (lvl >= tc.level) {
					t.Errorf("level %s enabled = %v with log level %s", lvl, enabled, tc.level)
				}
			}
			if tc.level > zapcore.InfoLevel {
				if out.Len() != 0 {
					t.Errorf("log level %s, yet the config line (info) was written: %s", tc.level, out.String())
				}
				return
			}
			if isJSON := strings.HasPrefix(out.String(), "{"); isJSON != tc.json {
				t.Errorf("config line %q: JSON = %v, want %v", out.String(), isJSON, tc.json)
			}
			mode := "secure"
			if tc.want.Keys == "" {
				mode = "insecure"
			}
			if !strings.Contains(out.String(), `mode: `+mode) && !strings.Contains(out.String(), `"mode":"`+mode+`"`) {
				t.Errorf("config line does not say mode %s:\n%s", mode, out.String())
			}
			if strings.Contains(out.String(), storePassword) {
				t.Errorf("the config line shows the store's password:\n%s", out.String())
			}
		})
	}
}

// TestStorePasswordInTheQueryIsHidden: pgx also takes the password, and
// the client key's, from the URL's query; the config line hides them too.
func TestStorePasswordInTheQueryIsHidden(t *testing.T) {
	var out bytes.Buffer
	url := "postgres://lottery@db:5432/lottery?sslmode=disable&password=" + storePassword + "&sslpassword=" + storePassword
	if _, err := load([]string{"--insecure", "--store", url}, &out, nil); err != nil {
		t.Fatalf("load: %v", err)
	}
	if !strings.Contains(out.String(), "db:5432/lottery") || strings.Contains(out.String(), storePassword) {
		t.Errorf("config line:\n%s\nwant the store's host without its passwords", out.String())
	}
}

// TestServerRebuildJournalPrecedence: --rebuild-journal, which applies to
// the file store only (TestServerPrecedence runs with --store), follows the
// same precedence as every setting.
func TestServerRebuildJournalPrecedence(t *testing.T) {
	file := cfgFile(t, "storage:\n  rebuild_journal: true\n")
	tests := []struct {
		name string
		args []string
		env  cfgEnv
		want bool
	}{
		{"default", nil, nil, false},
		{"file", []string{"--config", file}, nil, true},
		{"env over file", []string{"--config", file}, cfgEnv{"SERVER_REBUILD_JOURNAL": "false"}, false},
		{"flag over env", []string{"--config", file, "--rebuild-journal"}, cfgEnv{"SERVER_REBUILD_JOURNAL": "false"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := load(append([]string{"--insecure"}, tc.args...), new(bytes.Buffer), tc.env)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if cfg.RebuildJournal != tc.want {
				t.Errorf("RebuildJournal %v, want %v", cfg.RebuildJournal, tc.want)
			}
		})
	}
}

// TestServerSecurityPrecedence: --insecure follows the same precedence as
// every setting, and a source that turns it off, or one that adds keys to
// it, is caught at once.
func TestServerSecurityPrecedence(t *testing.T) {
	keys := writeKeys(t, 5)
	insecureFile := cfgFile(t, "security:\n  insecure: true\n")
	keysFile := cfgFile(t, "security:\n  keys: "+keys.dir+"\n")
	tests := []struct {
		name     string
		args     []string
		env      cfgEnv
		secure   bool
		mentions []string // an error when set
	}{
		{"insecure from file", []string{"--config", insecureFile}, nil, false, nil},
		{"insecure from env", nil, cfgEnv{"SERVER_INSECURE": "true"}, false, nil},
		{"env turns the file's insecure off", []string{"--config", insecureFile}, cfgEnv{"SERVER_INSECURE": "false"}, false,
			[]string{"--keys", "--insecure", "neither"}},
		{"flag turns env's off back on", []string{"--insecure"}, cfgEnv{"SERVER_INSECURE": "false"}, false, nil},
		{"keys from file", []string{"--config", keysFile}, nil, true, nil},
		{"keys from env", nil, cfgEnv{"SERVER_KEYS": keys.dir}, true, nil},
		{"file keys and flag insecure", []string{"--config", keysFile, "--insecure"}, nil, false,
			[]string{"--insecure", "--keys", "exclude each other"}},
		{"env keys and file insecure", []string{"--config", insecureFile}, cfgEnv{"SERVER_KEYS": keys.dir}, false,
			[]string{"--insecure", "--keys", "exclude each other"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cfg, err := load(tc.args, &out, tc.env)
			if tc.mentions != nil {
				if err == nil {
					t.Fatalf("loaded %+v; want an error", view(cfg, nil))
				}
				for _, m := range tc.mentions {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error %q does not mention %q", err, m)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (cfg.Keys != nil) != tc.secure || (cfg.SignKey != nil) != tc.secure {
				t.Errorf("keys loaded: %v, signing key loaded: %v; want %v", cfg.Keys != nil, cfg.SignKey != nil, tc.secure)
			}
			if tc.secure && cfg.Keys.Public() != keys.serverPub {
				t.Errorf("keys from another directory")
			}
		})
	}
}

func TestServerYAMLAlternatives(t *testing.T) {
	// The second keys of listen and data-dir, keys matched whatever their
	// case, and the second env name of log-level.
	file := cfgFile(t, "listen: 127.0.0.1:4100\nstorage:\n  dir: /srv/storage\nLIMITS:\n  Max_Frame: 512\n  WINDOW: 3\nSecurity:\n  Insecure: true\n")
	cfg, err := load([]string{"--config", file}, &bytes.Buffer{}, cfgEnv{"LOGGING_LEVEL": "error"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:4100" || cfg.DataDir != "/srv/storage" || cfg.MaxFrame != 512 || cfg.Window != 3 || cfg.Keys != nil {
		t.Errorf("config %+v", view(cfg, nil))
	}
	if cfg.Logger.Core().Enabled(zapcore.WarnLevel) {
		t.Error("LOGGING_LEVEL=error did not apply")
	}
	// SERVER_LOG_LEVEL is the first name: it wins over LOGGING_LEVEL.
	cfg, err = load([]string{"--insecure"}, &bytes.Buffer{}, cfgEnv{"SERVER_LOG_LEVEL": "debug", "LOGGING_LEVEL": "error"})
	if err != nil || !cfg.Logger.Core().Enabled(zapcore.DebugLevel) {
		t.Errorf("SERVER_LOG_LEVEL did not win: %v", err)
	}
	// The config file may come from SERVER_CONFIG.
	cfg, err = load(nil, &bytes.Buffer{}, cfgEnv{"SERVER_CONFIG": file})
	if err != nil || cfg.Listen != "127.0.0.1:4100" {
		t.Errorf("SERVER_CONFIG: %+v, %v", view(cfg, nil), err)
	}
}

// TestShippedConfigLoads loads eventserver/config.yaml as Compose mounts it,
// with the flags Compose adds, and checks it sets what its comments say.
func TestShippedConfigLoads(t *testing.T) {
	keys := writeKeys(t, 5)
	var out bytes.Buffer
	cfg, err := load([]string{"--config", filepath.Join("..", "..", "config.yaml"), "--agencies", "5",
		"--data-dir", t.TempDir(), "--keys", keys.dir, "--metrics-listen", "127.0.0.1:0"}, &out, cfgEnv{})
	if err != nil {
		t.Fatalf("the shipped config.yaml does not load: %v", err)
	}
	want := cfgView{Listen: "0.0.0.0:12345", Agencies: 5, DataDir: cfg.DataDir, Winning: 7574, ReadTimeout: 30 * time.Second,
		HelloTimeout: 10 * time.Second, PingInterval: 60 * time.Second, MaxPending: 1024, MaxFrame: 8192, Window: eventserver.DefaultWindow,
		Grace: 8 * time.Second, RetryAfter: time.Second, MetricsListen: "127.0.0.1:0", Keys: "shipped"}
	if got := view(cfg, map[string]*memKeys{"shipped": keys}); got != want {
		t.Errorf("config.yaml gives\n %+v\nwant\n %+v", got, want)
	}
	if !strings.Contains(out.String(), "| mode: secure") {
		t.Errorf("config line: %s", out.String())
	}
}

func TestServerConfigLine(t *testing.T) {
	keys := writeKeys(t, 2)
	dir := t.TempDir()
	tests := []struct {
		name, mode string
		args       []string
		keysShown  string
		insecure   string
	}{
		{"secure", "secure", []string{"--keys", keys.dir}, regexp.QuoteMeta(keys.dir), "false"},
		{"insecure", "insecure", []string{"--insecure"}, "", "true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			args := append([]string{"--listen", "127.0.0.1:0", "--data-dir", dir, "--agencies", "2"}, tc.args...)
			if _, err := load(args, &out, cfgEnv{"SERVER_WINNING_NUMBER": "0042"}); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf(`config \| result: success \| config:  \| listen: 127\.0\.0\.1:0 \| agencies: 2 \| data-dir: %s \| `+
				`store:  \| winning-number: 42 \| keys: %s \| insecure: %s \| log-level: info \| log-format: console \| read-timeout: %v \| `+
				`hello-timeout: %v \| ping-interval: %v \| max-pending: %d \| max-frame: 8192 \| window: %d \| shutdown-grace: %v \| `+
				`retry-after: %v \| rebuild-journal: false \| metrics-listen:  \| mode: %s`,
				regexp.QuoteMeta(dir), tc.keysShown, tc.insecure, eventserver.DefaultReadTimeout, eventserver.DefaultHelloTimeout,
				eventserver.DefaultPingInterval, eventserver.DefaultMaxPending, eventserver.DefaultWindow,
				eventserver.DefaultShutdownGrace, eventserver.DefaultRetryAfter, tc.mode)
			if !cfgLine(want).MatchString(out.String()) || strings.Count(out.String(), "\n") != 1 {
				t.Errorf("config line\n%s\ndoes not match\n%s", out.String(), want)
			}
		})
	}
	t.Run("agency keys missing", func(t *testing.T) {
		// Keys for 2 agencies, a lottery of 4: agencies 3 and 4 cannot get
		// in, which the server says right after its config line.
		var out bytes.Buffer
		if _, err := load([]string{"--keys", keys.dir, "--agencies", "4"}, &out, cfgEnv{}); err != nil {
			t.Fatal(err)
		}
		if !cfgLine(`keys \| result: fail \| dir: ` + regexp.QuoteMeta(keys.dir) + ` \| agencies_without_key: 2 \| first_missing: \[3 4\]`).MatchString(out.String()) {
			t.Errorf("no keys warning naming agencies 3 and 4:\n%s", out.String())
		}
	})
}

func TestServerJSONConfigLine(t *testing.T) {
	var out bytes.Buffer
	if _, err := load([]string{"--log-format", "json", "--insecure"}, &out, cfgEnv{}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{`"action":"config"`, `"result":"success"`, `"agencies":"5"`, `"listen":"0.0.0.0:12345"`,
		`"insecure":"true"`, `"mode":"insecure"`} {
		if !strings.Contains(s, want) {
			t.Errorf("JSON config line %q lacks %s", s, want)
		}
	}
}

// TestServerBadSettings: every bad setting exits 2 with one line naming
// the setting, the value and where it came from, and nothing on stdout.
func TestServerBadSettings(t *testing.T) {
	keys := writeKeys(t, 5)
	noServerKey := t.TempDir()
	noSignKey := t.TempDir()
	for _, name := range []string{secure.ServerPubFile, secure.VerifyKeyFile, secure.SignKeyFile, secure.AgencyPubFile(1)} {
		copyFile(t, filepath.Join(keys.dir, name), filepath.Join(noServerKey, name))
	}
	for _, name := range []string{secure.ServerKeyFile, secure.ServerPubFile, secure.AgencyPubFile(1)} {
		copyFile(t, filepath.Join(keys.dir, name), filepath.Join(noSignKey, name))
	}
	badFile := cfgFile(t, "agencies: lots\n")
	listFile := cfgFile(t, "limits:\n  max_pending:\n    - 1\n")
	bogusFile := cfgFile(t, "bogus_key: 1\n")
	typoFile := cfgFile(t, "log: {levle: debug}\n")
	oldFile := cfgFile(t, "limits:\n  max_conns: 50\n")
	tests := []struct {
		name     string
		args     []string
		env      cfgEnv
		secure   bool // leave out the --insecure every other case gets
		mentions []string
	}{
		{"neither keys nor insecure", nil, nil, true, []string{"setting keys", "--keys DIR", "--insecure", "refusing to start with neither"}},
		{"keys and insecure", []string{"--keys", keys.dir, "--insecure"}, nil, true, []string{"--insecure and --keys exclude each other"}},
		{"keys env and insecure env", nil, cfgEnv{"SERVER_KEYS": keys.dir, "SERVER_INSECURE": "1"}, true, []string{"exclude each other"}},
		{"keys dir without server.key", []string{"--keys", noServerKey}, nil, true,
			[]string{"setting keys", filepath.Join(noServerKey, secure.ServerKeyFile), "bin/keygen"}},
		{"keys dir without server-sign.key", []string{"--keys", noSignKey}, nil, true,
			[]string{"setting keys", filepath.Join(noSignKey, secure.SignKeyFile), "bin/keygen"}},
		{"keys dir missing", []string{"--keys", "/nonexistent/keys"}, nil, true, []string{"setting keys", "/nonexistent/keys/server.key"}},
		{"insecure words", nil, cfgEnv{"SERVER_INSECURE": "perhaps"}, true, []string{"setting insecure", `"perhaps"`, "env SERVER_INSECURE"}},
		{"unknown key", []string{"--config", bogusFile}, nil, false, []string{"setting config", bogusFile, "unknown key bogus_key"}},
		{"unknown key typo", []string{"--config", typoFile}, nil, false,
			[]string{"setting config", typoFile, "unknown key log.levle", "did you mean log.level?"}},
		{"max_conns is gone", []string{"--config", oldFile}, nil, false, []string{"setting config", oldFile, "limits.max_conns"}},
		{"--max-conns is gone", []string{"--max-conns", "5"}, nil, false, []string{"max-conns"}},
		{"agencies 0", []string{"--agencies", "0"}, nil, false, []string{"setting agencies", "got 0"}},
		{"agencies env 0", nil, cfgEnv{"SERVER_AGENCIES": "0"}, false, []string{"setting agencies", `"0"`, "env SERVER_AGENCIES", "got 0"}},
		{"agencies words", nil, cfgEnv{"SERVER_AGENCIES": "many"}, false, []string{"setting agencies", `"many"`, "env SERVER_AGENCIES"}},
		{"agencies in file", []string{"--config", badFile}, nil, false, []string{"setting agencies", `"lots"`, badFile, "key agencies"}},
		{"winning 10000", []string{"--winning-number", "10000"}, nil, false, []string{"setting winning-number", "10000"}},
		{"winning negative", nil, cfgEnv{"SERVER_WINNING_NUMBER": "-1"}, false, []string{"setting winning-number", "-1"}},
		{"listen x", []string{"--listen", "x"}, nil, false, []string{"setting listen", `"x"`, "host:port"}},
		{"listen port words", nil, cfgEnv{"SERVER_LISTEN": "127.0.0.1:http"}, false, []string{"setting listen", `"http"`}},
		{"listen port big", nil, cfgEnv{"SERVER_LISTEN": "127.0.0.1:70000"}, false, []string{"setting listen", `"70000"`}},
		{"metrics-listen x", []string{"--metrics-listen", "x"}, nil, false, []string{"setting metrics-listen", `"x"`, "host:port"}},
		{"metrics-listen port big", []string{"--metrics-listen", "127.0.0.1:99999"}, nil, false, []string{"setting metrics-listen", `"99999"`, "flag --metrics-listen"}},
		{"rebuild-journal with store", []string{"--rebuild-journal", "--store", "postgres://u:" + storePassword + "@127.0.0.1/x"}, nil, false,
			[]string{"setting rebuild-journal", "PostgreSQL has none"}},
		{"store not postgres", nil, cfgEnv{"SERVER_STORE": "mysql://u:" + storePassword + "@db/x"}, false, []string{"setting store", "postgres://"}},
		{"store as key=value", nil, cfgEnv{"SERVER_STORE": "host=db user=lottery password=" + storePassword}, false, []string{"setting store", "env SERVER_STORE", "not shown"}},
		{"max-frame 9000", []string{"--max-frame", "9000"}, nil, false, []string{"setting max-frame", "9000", "8192"}},
		{"max-frame 10", nil, cfgEnv{"SERVER_MAX_FRAME": "10"}, false, []string{"setting max-frame", "got 10"}},
		{"max-pending list", []string{"--config", listFile}, nil, false, []string{"setting max-pending", listFile, "limits.max_pending", "list or mapping"}},
		{"max-pending 0", []string{"--max-pending", "0"}, nil, false, []string{"setting max-pending", "got 0"}},
		{"window 0", []string{"--window", "0"}, nil, false, []string{"setting window", "got 0"}},
		{"window 2000", nil, cfgEnv{"SERVER_WINDOW": "2000"}, false, []string{"setting window", "env SERVER_WINDOW", "1024", "got 2000"}},
		{"window 0 in file", []string{"--config", cfgFile(t, "limits: {window: 0}\n")}, nil, false, []string{"setting window", "key limits.window", "got 0"}},
		{"hello-timeout tiny", []string{"--hello-timeout", "5ms"}, nil, false, []string{"setting hello-timeout", "100ms"}},
		{"ping-interval words", nil, cfgEnv{"SERVER_PING_INTERVAL": "often"}, false, []string{"setting ping-interval", `"often"`, "SERVER_PING_INTERVAL"}},
		{"ping-interval tiny", nil, cfgEnv{"SERVER_PING_INTERVAL": "1ms"}, false, []string{"setting ping-interval", "100ms"}},
		{"rebuild-journal words", nil, cfgEnv{"SERVER_REBUILD_JOURNAL": "maybe"}, false, []string{"setting rebuild-journal", `"maybe"`}},
		{"log-format xml", []string{"--log-format", "xml"}, nil, false, []string{"setting log-format", `"xml"`}},
		{"log-level loud", nil, cfgEnv{"LOGGING_LEVEL": "loud"}, false, []string{"setting log-level", `"loud"`}},
		{"read-timeout tiny", nil, cfgEnv{"SERVER_READ_TIMEOUT": "1ms"}, false, []string{"setting read-timeout", "env SERVER_READ_TIMEOUT", "100ms"}},
		{"read-timeout words", nil, cfgEnv{"SERVER_READ_TIMEOUT": "soon"}, false, []string{"setting read-timeout", `"soon"`, "SERVER_READ_TIMEOUT"}},
		{"grace 0", []string{"--shutdown-grace", "0s"}, nil, false, []string{"setting shutdown-grace"}},
		{"retry-after 0", nil, cfgEnv{"SERVER_RETRY_AFTER": "0s"}, false, []string{"setting retry-after"}},
		{"data-dir empty", []string{"--data-dir", ""}, nil, false, []string{"setting data-dir"}},
		{"missing config", []string{"--config", "/nonexistent/server.yaml"}, nil, false, []string{"setting config", "/nonexistent/server.yaml"}},
		{"positional", []string{"serve"}, nil, false, []string{`"serve"`}},
		{"unknown flag", []string{"--port", "1"}, nil, false, []string{"port"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if !tc.secure {
				args = append([]string{"--insecure"}, args...)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, &stdout, &stderr, tc.env.lookup, nil, nil)
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
			if strings.Contains(msg, storePassword) {
				t.Errorf("stderr %q shows the store's password", msg)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestServerHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr, cfgEnv{}.lookup, nil, nil); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	for _, want := range []string{"Usage: eventserver", "--winning-number", "--keys", "--insecure", "--hello-timeout",
		"--ping-interval", "--max-pending", "--window", "--rebuild-journal", "--metrics-listen", "SERVER_AGENCIES",
		"SERVER_KEYS", "SERVER_METRICS_LISTEN", "SERVER_LOG_LEVEL, LOGGING_LEVEL"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if strings.Contains(stdout.String(), "max-conns") {
		t.Errorf("help still offers --max-conns")
	}
}

// running is run() in the background.
type running struct {
	sigs, hup chan os.Signal
	stdout    *cfgBuffer
	stderr    *cfgBuffer
	done      chan int
}

// startRun runs the program in the background and waits for it to listen.
func startRun(t *testing.T, args []string, env cfgEnv) (addr string, r *running) {
	t.Helper()
	r = &running{sigs: make(chan os.Signal, 1), hup: make(chan os.Signal, 1), stdout: &cfgBuffer{}, stderr: &cfgBuffer{},
		done: make(chan int, 1)}
	go func() { r.done <- run(context.Background(), args, r.stdout, r.stderr, env.lookup, r.sigs, r.hup) }()
	listen := cfgLine(`listen \| result: success \| address: (127\.0\.0\.1:\d+) .*`)
	deadline := time.Now().Add(hangGuard)
	for {
		if m := listen.FindStringSubmatch(r.stdout.String()); m != nil {
			return m[1], r
		}
		select {
		case code := <-r.done:
			t.Fatalf("exited %d before listening\nstdout:\n%s\nstderr:\n%s", code, r.stdout.String(), r.stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("never listened; stdout:\n%s", r.stdout.String())
		}
	}
}

// waitExit waits for run to return: a run that hangs fails the test.
func waitExit(t *testing.T, done chan int, stdout *cfgBuffer) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(hangGuard):
		t.Fatalf("run did not return within %v; stdout:\n%s", hangGuard, stdout.String())
		return -1
	}
}

// TestServerRunsAndStopsOnSignal runs the program secured and --insecure:
// it is the server asked for (an agency with its key is welcome, a
// plaintext HELLO is not; the --insecure one knows agencies 1..2 only),
// answers a plaintext PING either way, serves /healthz, reloads keys on
// SIGHUP, and drains and exits 0 on SIGTERM.
func TestServerRunsAndStopsOnSignal(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	keys := writeKeys(t, 2)
	for _, mode := range []string{"secure", "insecure"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"--listen", "127.0.0.1:0", "--agencies", "2", "--metrics-listen", "127.0.0.1:0"}
			if mode == "secure" {
				args = append(args, "--keys", keys.dir)
			} else {
				args = append(args, "--insecure")
			}
			addr, r := startRun(t, args, cfgEnv{"SERVER_DATA_DIR": dir, "SERVER_WINNING_NUMBER": "1"})

			// A plaintext PING gets its PONG with no key, in both modes.
			c := dialT(t, addr)
			if err := frame.Write(c, &frame.Ping{Payload: []byte("probe")}); err != nil {
				t.Fatal(err)
			}
			if f := nextFrame(t, c); !isPong(f, "probe") {
				t.Fatalf("answer to PING: %v", f)
			}
			c.Close()

			if mode == "secure" {
				if w, ok := helloSecure(t, addr, keys, 2).(*frame.Welcome); !ok || w.Held != 0 {
					t.Fatalf("answer to agency 2's HELLO: %v", w)
				}
				c := dialT(t, addr)
				if err := frame.Write(c, &frame.Hello{Agency: 2}); err != nil {
					t.Fatal(err)
				}
				if e, ok := nextFrame(t, c).(*frame.Error); !ok || e.Code != frame.CodeSecureRequired {
					t.Fatalf("answer to a plaintext HELLO on a secured server: %v", e)
				}
				c.Close()
			} else {
				for id, want := range map[uint32]frame.Type{2: frame.TypeWelcome, 3: frame.TypeError} {
					c := dialT(t, addr)
					if err := frame.Write(c, &frame.Hello{Agency: id}); err != nil {
						t.Fatal(err)
					}
					f := nextFrame(t, c)
					if f.Type() != want {
						t.Fatalf("answer to HELLO %d: %v", id, f)
					}
					if e, ok := f.(*frame.Error); ok && e.Code != frame.CodeUnknownAgency {
						t.Fatalf("answer to HELLO for agency 3 of 2: %v", f)
					}
					c.Close()
				}
			}

			m := cfgLine(`metrics_listen \| result: success \| address: (\S+)`).FindStringSubmatch(r.stdout.String())
			if m == nil {
				t.Fatalf("no metrics_listen line:\n%s", r.stdout.String())
			}
			for _, path := range []string{"/healthz", "/readyz"} {
				if code, body, err := httpGet("http://" + m[1] + path); err != nil || code != 200 {
					t.Errorf("GET %s: %d %q %v", path, code, body, err)
				}
			}

			r.hup <- syscall.SIGHUP
			want := `keys_reload \| result: success \| agencies_without_key: 0`
			if mode == "insecure" {
				want = `keys_reload \| result: fail \| reason: .*--insecure.*`
			}
			proctest.WaitFor(t, hangGuard, "the SIGHUP to be handled", func() bool { return cfgLine(want).MatchString(r.stdout.String()) })

			r.sigs <- syscall.SIGTERM
			if code := waitExit(t, r.done, r.stdout); code != 0 {
				t.Errorf("exit %d after SIGTERM, want 0", code)
			}
			out := r.stdout.String()
			for _, p := range []string{
				`config \| result: success \| config:  \| listen: 127\.0\.0\.1:0 \| agencies: 2 \| data-dir: ` + regexp.QuoteMeta(dir) + ` \| store:  \| winning-number: 1 .* \| mode: ` + mode,
				`listen \| result: success \| address: \S+ \| agencies: 2 \| finished: 0 \| mode: ` + mode,
				`signal \| result: success \| signal: terminated`,
				`shutdown \| result: success`,
				`server_exit \| result: success`,
				`metrics_shutdown \| result: success`,
			} {
				if !cfgLine(p).MatchString(out) {
					t.Errorf("stdout has no line matching %q\n%s", p, out)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "bets.csv")); err != nil {
				t.Errorf("no bets.csv in the data dir: %v", err)
			}
		})
	}
}

func dialT(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(hangGuard))
	t.Cleanup(func() { c.Close() })
	return c
}

// nextFrame reads one plaintext frame.
func nextFrame(t *testing.T, c net.Conn) frame.Frame {
	t.Helper()
	var dec frame.Decoder
	f, err := dec.Next(frame.NewReader(c))
	if err != nil {
		t.Fatalf("no frame: %v", err)
	}
	return f
}

func isPong(f frame.Frame, payload string) bool {
	p, ok := f.(*frame.Pong)
	return ok && string(p.Payload) == payload
}

// helloSecure handshakes as agency id with its key and returns the answer
// to HELLO, or nil with the handshake's error logged.
func helloSecure(t *testing.T, addr string, keys *memKeys, id uint32) frame.Frame {
	t.Helper()
	f, err := helloWith(addr, keys.agency[id], keys.serverPub, id)
	if err != nil {
		t.Logf("agency %d: %v", id, err)
		return nil
	}
	return f
}

// helloWith handshakes with key, says HELLO id and returns the answer.
func helloWith(addr string, key secure.PrivateKey, server secure.PublicKey, id uint32) (frame.Frame, error) {
	c, err := net.DialTimeout("tcp", addr, hangGuard)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(hangGuard))
	sc, err := secure.Client(c, key, server, hangGuard)
	if err != nil {
		return nil, err
	}
	if err := sc.WriteFrame(&frame.Hello{Agency: id}); err != nil {
		return nil, err
	}
	var dec frame.Decoder
	return dec.Next(sc)
}

// TestServerStartFailures: a server that cannot start exits 1 at once, with
// a fail line, also when its metrics server is up already (it used to wait
// forever for that server to stop).
func TestServerStartFailures(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	file := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		args []string
		line string
	}{
		{"data dir is a file", []string{"--data-dir", file}, `server_start \| result: fail \| error: .+`},
		{"data dir is a file, metrics on", []string{"--data-dir", file, "--metrics-listen", "127.0.0.1:0"}, `server_start \| result: fail \| error: .+`},
		{"address in use", []string{"--data-dir", t.TempDir(), "--listen", busy.Addr().String()},
			`server_exit \| result: fail \| error: .*` + regexp.QuoteMeta(busy.Addr().String()) + `.*`},
		{"address in use, metrics on", []string{"--data-dir", t.TempDir(), "--listen", busy.Addr().String(), "--metrics-listen", "127.0.0.1:0"},
			`server_exit \| result: fail \| error: .*` + regexp.QuoteMeta(busy.Addr().String()) + `.*`},
		{"metrics address in use", []string{"--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", busy.Addr().String()},
			`server_start \| result: fail \| error: .*` + regexp.QuoteMeta(busy.Addr().String()) + `.*`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr cfgBuffer
			done := make(chan int, 1)
			args := append([]string{"--insecure", "--listen", "127.0.0.1:0"}, tc.args...)
			go func() { done <- run(context.Background(), args, &stdout, &stderr, cfgEnv{}.lookup, nil, nil) }()
			code := waitExit(t, done, &stdout)
			if code != 1 || !cfgLine(tc.line).MatchString(stdout.String()) {
				t.Errorf("exit %d, want 1 and a line matching %q\n%s", code, tc.line, stdout.String())
			}
		})
	}
}
