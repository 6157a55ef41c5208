package config_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tp0/loteria/internal/config"
)

// env is a fake environment.
type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

// settings is a Set with one flag of every kind the binaries use.
type settings struct {
	set   *config.Set
	name  *string
	count *int
	wait  *time.Duration
	id    *uint32
}

func newSettings() *settings {
	set := config.New("prog", "config", "PROG_CONFIG")
	fs := set.Flags()
	fs.SetOutput(io.Discard)
	s := &settings{
		set:   set,
		name:  fs.String("name", "default-name", "a string"),
		count: fs.Int("count", 1, "an int"),
		wait:  fs.Duration("wait", time.Second, "a duration"),
		id:    fs.Uint32("id", 0, "a uint32"),
	}
	set.Bind("name", []string{"PROG_NAME", "LEGACY_NAME"}, "server.name", "name")
	set.Bind("count", []string{"PROG_COUNT"}, "batch.maxAmount")
	set.Bind("wait", []string{"PROG_WAIT"}, "loop.period")
	set.Bind("id", []string{"PROG_ID"}, "id")
	return s
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const fullYAML = `
server:
  name: "from-file"
batch:
  maxAmount: 30
loop:
  period: "3s"
id: 3
`

type values struct {
	name  string
	count int
	wait  time.Duration
	id    uint32
}

func (s *settings) values() values { return values{*s.name, *s.count, *s.wait, *s.id} }

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "config.yaml", fullYAML)
	allEnv := env{"PROG_NAME": "from-env", "PROG_COUNT": "20", "PROG_WAIT": "2s", "PROG_ID": "2"}
	allFlags := []string{"--name", "from-flag", "--count", "10", "--wait", "1ms", "--id", "1"}
	tests := []struct {
		name    string
		args    []string
		env     env
		want    values
		sources string
	}{
		{"defaults", nil, env{}, values{"default-name", 1, time.Second, 0}, "default"},
		{"file", []string{"--config", file}, env{}, values{"from-file", 30, 3 * time.Second, 3}, "file"},
		{"env over default", nil, allEnv, values{"from-env", 20, 2 * time.Second, 2}, "env"},
		{"env over file", []string{"--config", file}, allEnv, values{"from-env", 20, 2 * time.Second, 2}, "env"},
		{"flag over default", allFlags, env{}, values{"from-flag", 10, time.Millisecond, 1}, "flag"},
		{"flag over env and file", append([]string{"--config", file}, allFlags...), allEnv, values{"from-flag", 10, time.Millisecond, 1}, "flag"},
		{"config file from env", nil, env{"PROG_CONFIG": file}, values{"from-file", 30, 3 * time.Second, 3}, "file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSettings()
			if err := s.set.Load(tc.args, tc.env.lookup); err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := s.values(); got != tc.want {
				t.Errorf("values %+v, want %+v", got, tc.want)
			}
			for _, name := range []string{"name", "count", "wait", "id"} {
				if got := s.set.Source(name); got != tc.sources {
					t.Errorf("Source(%s) = %q, want %q", name, got, tc.sources)
				}
			}
		})
	}
}

// Each layer is consulted per flag: a flag can come from the command line
// while its neighbours come from the environment, the file and the default.
func TestPrecedenceMixed(t *testing.T) {
	file := writeFile(t, "c.yaml", "batch:\n  maxAmount: 30\nloop:\n  period: 3s\n")
	s := newSettings()
	err := s.set.Load([]string{"--config=" + file, "--name=cli"}, env{"PROG_COUNT": "20"}.lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := values{"cli", 20, 3 * time.Second, 0}
	if got := s.values(); got != want {
		t.Errorf("values %+v, want %+v", got, want)
	}
	for name, src := range map[string]string{"name": "flag", "count": "env", "wait": "file", "id": "default", "config": "flag"} {
		if got := s.set.Source(name); got != src {
			t.Errorf("Source(%s) = %q, want %q", name, got, src)
		}
	}
}

func TestYAMLKeysCaseInsensitive(t *testing.T) {
	file := writeFile(t, "c.yaml", "BATCH:\n  MAXAMOUNT: 44\nLoop:\n  Period: 250ms\n")
	s := newSettings()
	if err := s.set.Load([]string{"--config", file}, env{}.lookup); err != nil {
		t.Fatal(err)
	}
	if *s.count != 44 || *s.wait != 250*time.Millisecond {
		t.Errorf("count %d wait %v, want 44 and 250ms", *s.count, *s.wait)
	}
}

func TestFirstKeyAndFirstEnvWin(t *testing.T) {
	both := writeFile(t, "both.yaml", "name: second\nserver:\n  name: first\n")
	second := writeFile(t, "second.yaml", "name: second\n")
	tests := []struct {
		name string
		args []string
		env  env
		want string
	}{
		{"first key", []string{"--config", both}, env{}, "first"},
		{"second key alone", []string{"--config", second}, env{}, "second"},
		{"first env", nil, env{"PROG_NAME": "env1", "LEGACY_NAME": "env2"}, "env1"},
		{"second env alone", nil, env{"LEGACY_NAME": "env2"}, "env2"},
		{"empty first env still wins", nil, env{"PROG_NAME": "", "LEGACY_NAME": "env2"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSettings()
			if err := s.set.Load(tc.args, tc.env.lookup); err != nil {
				t.Fatal(err)
			}
			if *s.name != tc.want {
				t.Errorf("name %q, want %q", *s.name, tc.want)
			}
		})
	}
}

func TestNullsIgnored(t *testing.T) {
	file := writeFile(t, "c.yaml", "loop:\n  period:\nbatch:\n  maxAmount: ~\nserver:\n  # name: commented out\n")
	s := newSettings()
	if err := s.set.Load([]string{"--config", file}, env{}.lookup); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := s.values(), (values{"default-name", 1, time.Second, 0}); got != want {
		t.Errorf("values %+v, want defaults %+v", got, want)
	}
	if got := s.set.Source("count"); got != "default" {
		t.Errorf("Source(count) = %q for a null key, want default", got)
	}
}

func TestEmptyFileIsFine(t *testing.T) {
	for _, content := range []string{"", "# only a comment\n", "---\n"} {
		s := newSettings()
		if err := s.set.Load([]string{"--config", writeFile(t, "c.yaml", content)}, env{}.lookup); err != nil {
			t.Errorf("file %q: %v", content, err)
		}
	}
}

// An ignored section can hold the anchors that bound keys refer to.
func TestYAMLAliases(t *testing.T) {
	file := writeFile(t, "c.yaml", "defaults:\n  batch: &d\n    maxAmount: 12\n  period: &p 4s\nbatch: *d\nloop:\n  period: *p\n")
	s := newSettings()
	s.set.Ignore("defaults")
	if err := s.set.Load([]string{"--config", file}, env{}.lookup); err != nil {
		t.Fatal(err)
	}
	if *s.count != 12 || *s.wait != 4*time.Second {
		t.Errorf("count %d wait %v, want 12 and 4s through aliases", *s.count, *s.wait)
	}
}

// A merge key (<<) brings a mapping's keys in; keys written out beat merged
// ones, and the first of several merged mappings beats the later ones.
func TestYAMLMergeKeys(t *testing.T) {
	const anchors = "defaults:\n  a: &a {maxAmount: 1}\n  b: &b {maxAmount: 2}\n"
	tests := []struct {
		name, yaml string
		count      int
	}{
		{"merged", "batch:\n  <<: *b\n", 2},
		{"written out wins", "batch:\n  maxAmount: 3\n  <<: *b\n", 3},
		{"first merged wins", "batch:\n  <<: [*b, *a]\n", 2},
		{"nested merge", "batch:\n  <<: {<<: *b}\n", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSettings()
			s.set.Ignore("defaults")
			file := writeFile(t, "c.yaml", anchors+tc.yaml)
			if err := s.set.Load([]string{"--config", file}, env{}.lookup); err != nil {
				t.Fatal(err)
			}
			if *s.count != tc.count {
				t.Errorf("count %d, want %d", *s.count, tc.count)
			}
		})
	}
}

// agencyLike is a Set with the keys of the course's client config.yaml
// (and a flag left to its default).
func agencyLike() *config.Set {
	set := config.New("agency", "config")
	fs := set.Flags()
	fs.SetOutput(io.Discard)
	fs.String("server", "", "")
	fs.String("log-level", "", "")
	fs.String("log-format", "", "")
	fs.Int("batch-max-amount", 0, "")
	set.Bind("server", nil, "server.address")
	set.Bind("log-level", nil, "log.level")
	set.Bind("log-format", nil, "log.format")
	set.Bind("batch-max-amount", nil, "batch.maxAmount")
	set.Ignore("loop")
	return set
}

// The course's client config.yaml, as the course ships it.
const courseClientYAML = `server:
  address: "server:12345"
loop:
  amount: 5
  period: "5s"
log:
  level: "info"
batch:
  maxAmount: 106
`

func TestCourseClientFileAccepted(t *testing.T) {
	set := agencyLike()
	if err := set.Load([]string{"--config", writeFile(t, "config.yaml", courseClientYAML)}, env{}.lookup); err != nil {
		t.Fatal(err)
	}
	if got := set.Effective(); got[1][1] != "server:12345" || got[4][1] != "106" {
		t.Errorf("Effective() = %v", got)
	}
}

func TestUnknownKeyMessages(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"bogus_key: 1\n", "unknown key bogus_key"},
		{"log:\n  levle: debug\n", "unknown key log.levle; did you mean log.level?"},
		{"log: debug\n", "key log is a section, not a setting; did you mean log.level or log.format?"},
	}
	for _, tc := range tests {
		file := writeFile(t, "config.yaml", tc.yaml)
		err := agencyLike().Load([]string{"--config", file}, env{}.lookup)
		want := "setting config: config file " + file + ": " + tc.want
		if err == nil || err.Error() != want {
			t.Errorf("%q: error %v, want %s", tc.yaml, err, want)
		}
	}
}

// Keys that no Bind names and no Ignore covers are refused, whatever the
// flags and the environment say, with the closest known key as a hint.
func TestUnknownKeys(t *testing.T) {
	tests := []struct {
		name   string
		yaml   string
		ignore []string
		key    string // the key named, as written
		hint   string // "" for no hint
	}{
		{"top level", "bogus_key: 1\n", nil, "bogus_key", ""},
		{"null value", "bogus:\n", nil, "bogus", ""},
		{"list value", "extra: [1, 2]\n", nil, "extra", ""},
		{"among known keys", "id: 3\nbatch:\n  maxAmount: 4\nzzz: 1\n", nil, "zzz", ""},
		{"nested typo", "batch:\n  maxAmout: 5\n", nil, "batch.maxAmout", "batch.maxAmount"},
		{"swapped letters", "server:\n  nmae: x\n", nil, "server.nmae", "server.name"},
		{"nothing close", "batch:\n  size: 5\n", nil, "batch.size", ""},
		{"short key, two edits", "xy: 1\n", nil, "xy", ""},
		{"short key, one edit", "ib: 1\n", nil, "ib", "id"},
		{"wrong section", "maxAmount: 5\n", nil, "maxAmount", "batch.maxAmount"},
		{"wrong section, other case", "server:\n  PERIOD: 5s\n", nil, "server.PERIOD", "loop.period"},
		{"prefix", "loop:\n  per: 3s\n", nil, "loop.per", "loop.period"},
		{"longer", "server:\n  name_of_it: x\n", nil, "server.name_of_it", "server.name"},
		{"as written", "BATCH:\n  MaxAmout: 5\n", nil, "BATCH.MaxAmout", "batch.maxAmount"},
		{"unknown section", "servr:\n  name: x\n", nil, "servr", "server"},
		{"section by prefix", "batches:\n  maxAmount: 5\n", nil, "batches", "batch"},
		{"dotted key", "\"batch.maxAmount\": 5\n", nil, `"batch.maxAmount"`, "batch.maxAmount"},
		{"in a merged mapping", "batch:\n  <<: {maxAmount: 3, extra: 1}\n", nil, "batch.extra", ""},
		{"ignore is per part", "extras: 1\n", []string{"extra"}, "extras", ""},
		{"beside an ignored key", "x:\n  y: 1\n  z: 2\n", []string{"x.y"}, "x.z", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, "c.yaml", tc.yaml)
			s := newSettings()
			s.set.Ignore(tc.ignore...)
			// Every setting comes from a flag: the file is checked all the same.
			args := []string{"--config", file, "--name=n", "--count=1", "--wait=1s", "--id=1"}
			err := s.set.Load(args, env{}.lookup)
			want := "unknown key " + tc.key
			if tc.hint != "" {
				want += "; did you mean " + tc.hint + "?"
			}
			ce := badValue(t, err, "config", file+": "+want)
			if tc.hint == "" && strings.Contains(ce.Error(), "did you mean") {
				t.Errorf("error %q has a hint, want none", ce)
			}
		})
	}
}

func TestSectionGivenAValue(t *testing.T) {
	for name, content := range map[string]string{
		"scalar": "server: x\n",
		"list":   "server: [a]\n",
		"alias":  "id: &v 1\nserver: *v\n",
	} {
		t.Run(name, func(t *testing.T) {
			file := writeFile(t, "c.yaml", content)
			s := newSettings()
			err := s.set.Load([]string{"--config", file}, env{}.lookup)
			badValue(t, err, "config", file+": key server is a section, not a setting; did you mean server.name?")
		})
	}
}

func TestKnownAndIgnoredKeys(t *testing.T) {
	tests := []struct {
		name   string
		yaml   string
		ignore []string
		want   values
	}{
		{"case-insensitive", "BATCH:\n  MAXAMOUNT: 44\nLoop:\n  Period: 250ms\nID: 2\n", nil, values{"default-name", 44, 250 * time.Millisecond, 2}},
		{"ignored key", "extra: 1\nid: 2\n", []string{"extra"}, values{"default-name", 1, time.Second, 2}},
		{"ignored section and its children", "extra:\n  a: 1\n  b:\n    c: [1, 2]\nid: 2\n", []string{"extra"}, values{"default-name", 1, time.Second, 2}},
		{"ignore is case-insensitive", "EXTRA:\n  A: 1\n", []string{"Extra"}, values{"default-name", 1, time.Second, 0}},
		{"several prefixes", "a: 1\nb: 2\n", []string{"a", "b"}, values{"default-name", 1, time.Second, 0}},
		{"ignored key in a section", "batch:\n  maxAmount: 3\n  note: x\n", []string{"batch.note"}, values{"default-name", 3, time.Second, 0}},
		{"parent of an ignored key", "x:\n  y:\n    z: 1\n", []string{"x.y"}, values{"default-name", 1, time.Second, 0}},
		{"both key and section", "server:\n  name: a\nname: b\n", nil, values{"a", 1, time.Second, 0}},
		{"alias to a section", "loop: &l\n  period: 2s\nbatch:\n  maxAmount: 5\n", nil, values{"default-name", 5, 2 * time.Second, 0}},
		{"empty trailing document", "id: 4\n---\n", nil, values{"default-name", 1, time.Second, 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSettings()
			s.set.Ignore(tc.ignore...)
			if err := s.set.Load([]string{"--config", writeFile(t, "c.yaml", tc.yaml)}, env{}.lookup); err != nil {
				t.Fatal(err)
			}
			if got := s.values(); got != tc.want {
				t.Errorf("values %+v, want %+v", got, tc.want)
			}
		})
	}
}

// badValue checks that err is a *config.Error naming the setting and that
// its message names the setting, the source and the value.
func badValue(t *testing.T, err error, setting string, mentions ...string) *config.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one about %s", setting)
	}
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *config.Error", err, err)
	}
	if ce.Setting != setting {
		t.Errorf("Setting %q, want %q (error: %v)", ce.Setting, setting, err)
	}
	msg := err.Error()
	for _, m := range append([]string{setting}, mentions...) {
		if !strings.Contains(msg, m) {
			t.Errorf("error %q does not mention %q", msg, m)
		}
	}
	return ce
}

func TestBadEnvValues(t *testing.T) {
	tests := []struct {
		env     env
		setting string
		value   string
		envName string
	}{
		{env{"PROG_COUNT": "many"}, "count", "many", "PROG_COUNT"},
		{env{"PROG_COUNT": ""}, "count", "", "PROG_COUNT"},
		{env{"PROG_WAIT": "sometimes"}, "wait", "sometimes", "PROG_WAIT"},
		{env{"PROG_WAIT": "5"}, "wait", "5", "PROG_WAIT"},
		{env{"PROG_ID": "abc"}, "id", "abc", "PROG_ID"},
		{env{"PROG_ID": "-1"}, "id", "-1", "PROG_ID"},
		{env{"PROG_ID": "4294967296"}, "id", "4294967296", "PROG_ID"},
	}
	for _, tc := range tests {
		t.Run(tc.envName+"="+tc.value, func(t *testing.T) {
			s := newSettings()
			err := s.set.Load(nil, tc.env.lookup)
			ce := badValue(t, err, tc.setting, "env "+tc.envName, `"`+tc.value+`"`)
			if ce.Source != "env "+tc.envName || ce.Value != tc.value {
				t.Errorf("Source %q Value %q", ce.Source, ce.Value)
			}
			if ce.Err == nil || errors.Unwrap(err) != ce.Err {
				t.Errorf("Unwrap does not give the cause: %v", ce.Err)
			}
		})
	}
}

// A bad value that a flag overrides is never looked at.
func TestOverriddenBadValuesIgnored(t *testing.T) {
	file := writeFile(t, "c.yaml", "batch:\n  maxAmount: lots\n")
	s := newSettings()
	err := s.set.Load([]string{"--config", file, "--count", "5"}, env{"PROG_COUNT": "many"}.lookup)
	if err != nil || *s.count != 5 {
		t.Errorf("Load: %v, count %d; want 5 from the flag", err, *s.count)
	}
	s = newSettings()
	err = s.set.Load([]string{"--config", file}, env{"PROG_COUNT": "6"}.lookup)
	if err != nil || *s.count != 6 {
		t.Errorf("Load: %v, count %d; want 6 from the env", err, *s.count)
	}
}

func TestBadFileValues(t *testing.T) {
	tests := []struct {
		name, yaml, setting, key, value string
	}{
		{"int", "batch:\n  maxAmount: lots\n", "count", "batch.maxAmount", "lots"},
		{"float for int", "batch:\n  maxAmount: 1.5\n", "count", "batch.maxAmount", "1.5"},
		{"duration", "loop:\n  period: forever\n", "wait", "loop.period", "forever"},
		{"uint32", "id: -3\n", "id", "id", "-3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, "config.yaml", tc.yaml)
			s := newSettings()
			err := s.set.Load([]string{"--config", file}, env{}.lookup)
			ce := badValue(t, err, tc.setting, file, tc.key, `"`+tc.value+`"`)
			if ce.Value != tc.value {
				t.Errorf("Value %q, want %q", ce.Value, tc.value)
			}
		})
	}
}

func TestListOrMappingForScalar(t *testing.T) {
	for name, content := range map[string]string{
		"list":    "batch:\n  maxAmount: [1, 2]\n",
		"mapping": "batch:\n  maxAmount:\n    a: 1\n",
		"block":   "server:\n  name:\n    - x\n",
	} {
		t.Run(name, func(t *testing.T) {
			file := writeFile(t, "c.yaml", content)
			s := newSettings()
			err := s.set.Load([]string{"--config", file}, env{}.lookup)
			if err == nil {
				t.Fatal("no error for a non-scalar value")
			}
			var ce *config.Error
			if !errors.As(err, &ce) || (ce.Setting != "count" && ce.Setting != "name") {
				t.Fatalf("error %v is not a *config.Error naming the setting", err)
			}
			if !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "list or mapping") {
				t.Errorf("error %q does not name the file and the problem", err)
			}
		})
	}
}

func TestConfigFileProblems(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	s := newSettings()
	err := s.set.Load([]string{"--config", missing}, env{}.lookup)
	badValue(t, err, "config", missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file error %v does not wrap fs.ErrNotExist", err)
	}

	s = newSettings()
	err = s.set.Load(nil, env{"PROG_CONFIG": missing}.lookup)
	badValue(t, err, "config", missing)

	for name, content := range map[string]string{
		"not yaml":         "a: [unclosed\n",
		"list top level":   "- a\n- b\n",
		"scalar top":       "just text\n",
		"two documents":    "id: 1\n---\nid: 2\n",
		"bad 2nd document": "id: 1\n---\na: [unclosed\n",
		"merge of a value": "batch:\n  <<: 5\n",
		"merge of itself":  "batch: &b\n  <<: *b\n",
		"merge of a list":  "batch:\n  <<: [[1]]\n",
	} {
		t.Run(name, func(t *testing.T) {
			file := writeFile(t, "bad.yaml", content)
			s := newSettings()
			err := s.set.Load([]string{"--config", file}, env{}.lookup)
			badValue(t, err, "config", file)
		})
	}
}

func TestPositionalArgs(t *testing.T) {
	s := newSettings()
	err := s.set.Load([]string{"--count", "3", "extra"}, env{}.lookup)
	if err == nil || !strings.Contains(err.Error(), `"extra"`) {
		t.Errorf("Load with a positional argument: %v", err)
	}
}

func TestBadFlag(t *testing.T) {
	s := newSettings()
	if err := s.set.Load([]string{"--count", "x"}, env{}.lookup); err == nil || !strings.Contains(err.Error(), "count") {
		t.Errorf("bad flag value: %v", err)
	}
	s = newSettings()
	if err := s.set.Load([]string{"--nosuch"}, env{}.lookup); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("unknown flag: %v", err)
	}
}

func TestHelp(t *testing.T) {
	s := newSettings()
	if err := s.set.Load([]string{"--help"}, env{}.lookup); !errors.Is(err, config.ErrHelp) {
		t.Errorf("--help: %v, want ErrHelp", err)
	}
	u := s.set.Usage()
	for _, want := range []string{"--name", "--count", "--wait", "--id", "--config", "PROG_NAME, LEGACY_NAME", "PROG_ID", "PROG_CONFIG"} {
		if !strings.Contains(u, want) {
			t.Errorf("usage does not mention %q:\n%s", want, u)
		}
	}
}

func TestEffective(t *testing.T) {
	file := writeFile(t, "c.yaml", "id: 9\n")
	s := newSettings()
	if err := s.set.Load([]string{"--config", file, "--wait", "90s"}, env{"PROG_COUNT": "4"}.lookup); err != nil {
		t.Fatal(err)
	}
	got := s.set.Effective()
	want := [][2]string{{"config", file}, {"name", "default-name"}, {"count", "4"}, {"wait", "1m30s"}, {"id", "9"}}
	if len(got) != len(want) {
		t.Fatalf("Effective() = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Effective()[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestErrorMessage(t *testing.T) {
	e := &config.Error{Setting: "id", Err: errors.New("required")}
	if got := e.Error(); got != "setting id: required" {
		t.Errorf("no-source message %q", got)
	}
	e = &config.Error{Setting: "id", Source: "env CLI_ID", Value: "abc", Err: errors.New("invalid syntax")}
	if got, want := e.Error(), `setting id: invalid value "abc" from env CLI_ID: invalid syntax`; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}

func TestBindUndefinedPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Bind of an undefined flag did not panic")
		}
	}()
	config.New("p", "config").Bind("nosuch", nil)
}

// Integers are decimal from every source: a leading zero is not octal and
// 0x or 0b prefixes are refused.
func TestIntegersAreDecimal(t *testing.T) {
	file := writeFile(t, "c.yaml", "batch:\n  maxAmount: 0100\nid: 010\n")
	s := newSettings()
	if err := s.set.Load([]string{"--config", file}, env{}.lookup); err != nil {
		t.Fatal(err)
	}
	if *s.count != 100 || *s.id != 10 {
		t.Errorf("from the file: count %d id %d, want 100 and 10", *s.count, *s.id)
	}
	s = newSettings()
	if err := s.set.Load([]string{"--count", "0042"}, env{"PROG_ID": "0089"}.lookup); err != nil {
		t.Fatal(err)
	}
	if *s.count != 42 || *s.id != 89 {
		t.Errorf("from flag and env: count %d id %d, want 42 and 89", *s.count, *s.id)
	}
	if got := s.set.Effective()[2]; got != [2]string{"count", "42"} {
		t.Errorf("Effective shows %v", got)
	}
	for _, v := range []string{"0x10", "0b1", "0o7", "1_000", "1e3"} {
		s = newSettings()
		err := s.set.Load(nil, env{"PROG_COUNT": v}.lookup)
		badValue(t, err, "count", `"`+v+`"`, "env PROG_COUNT")
		if *s.count != 1 {
			t.Errorf("a refused %q changed count to %d", v, *s.count)
		}
	}
}
