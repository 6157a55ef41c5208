package main

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tp0/loteria/secure"
)

func keygen(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// contractLine matches the project's log line contract.
var contractLine = regexp.MustCompile(`^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (INFO|ERROR) action: keygen \| result: (success|fail)( \| [a-z_]+: [^|]*)*$`)

func logLines(t *testing.T, stdout string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	for _, l := range lines {
		if !contractLine.MatchString(l) {
			t.Errorf("log line breaks the contract: %q", l)
		}
	}
	return lines
}

// snapshot reads every file of dir.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(data)
	}
	return files
}

func TestKeygenWritesEveryKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "keys")
	code, stdout, stderr := keygen(t, "--dir", dir, "--agencies", "3")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	lines := logLines(t, stdout)
	if len(lines) != 11 {
		t.Fatalf("want a line per file written and a summary, got %d:\n%s", len(lines), stdout)
	}
	if want := "| dir: " + dir + " | agencies: 3 | written: 10 | kept: 0"; !strings.HasSuffix(lines[10], want) {
		t.Errorf("summary %q, want it to end with %q", lines[10], want)
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, mode %v; want 0700", err, info.Mode().Perm())
	}
	modes := map[string]os.FileMode{
		"server.key": 0o600, "server.pub": 0o644, "server-sign.key": 0o600, "server-sign.pub": 0o644,
		"agency-1.key": 0o600, "agency-1.pub": 0o644, "agency-2.key": 0o600, "agency-2.pub": 0o644,
		"agency-3.key": 0o600, "agency-3.pub": 0o644,
	}
	files := snapshot(t, dir)
	if len(files) != len(modes) {
		t.Errorf("%d files in %s, want %d and no leftovers", len(files), dir, len(modes))
	}
	for name, mode := range modes {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if info.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, info.Mode().Perm(), mode)
		}
		if !strings.HasPrefix(files[name], "# loteria ") {
			t.Errorf("%s does not start with its comment: %q", name, files[name])
		}
	}
	if !strings.HasPrefix(files["agency-2.key"], "# loteria agency 2 private key (X25519, Noise IK): keep secret\n") ||
		!strings.HasPrefix(files["server.pub"], "# loteria server public key (X25519)\n") ||
		!strings.HasPrefix(files["server-sign.key"], "# loteria server signing key (Ed25519 seed): keep secret\n") {
		t.Errorf("comments do not say what the keys are")
	}

	// Every pair matches, and the key store the server opens takes them.
	for _, name := range []string{"server", "agency-1", "agency-2", "agency-3"} {
		checkPair(t, dir, name)
	}
	sign, err := secure.LoadSigningKey(filepath.Join(dir, "server-sign.key"))
	if err != nil {
		t.Fatal(err)
	}
	verify, err := secure.LoadVerifyKey(filepath.Join(dir, "server-sign.pub"))
	if err != nil || !ed25519.Verify(verify, []byte("r"), ed25519.Sign(sign, []byte("r"))) {
		t.Errorf("server-sign.pub does not verify server-sign.key's signatures (%v)", err)
	}
	ks, err := secure.OpenKeyStore(dir, 3)
	if err != nil || len(ks.Missing()) != 0 {
		t.Errorf("OpenKeyStore: %v, missing %v", err, ks.Missing())
	}
}

// checkPair checks that name.pub holds the public key of name.key.
func checkPair(t *testing.T, dir, name string) {
	t.Helper()
	priv, err := secure.LoadPrivateKey(filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := secure.LoadPublicKey(filepath.Join(dir, name+".pub"))
	if err != nil {
		t.Fatal(err)
	}
	if priv.Public() != pub {
		t.Errorf("%s.pub does not match %s.key", name, name)
	}
}

func TestKeygenNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := keygen(t, "--dir", dir, "--agencies", "2"); code != 0 {
		t.Fatalf("first run: exit %d, %s", code, stderr)
	}
	before := snapshot(t, dir)
	code, stdout, stderr := keygen(t, "--dir", dir, "--agencies", "2")
	if code != 0 {
		t.Fatalf("second run: exit %d, %s", code, stderr)
	}
	lines := logLines(t, stdout)
	if len(lines) != 1 || !strings.HasSuffix(lines[0], "written: 0 | kept: 8") {
		t.Errorf("second run logged:\n%s\nwant only the summary, all kept", stdout)
	}
	after := snapshot(t, dir)
	if len(after) != len(before) {
		t.Errorf("%d files after, %d before", len(after), len(before))
	}
	for name, content := range before {
		if after[name] != content {
			t.Errorf("%s changed", name)
		}
	}
}

func TestKeygenAddsOnlyNewAgencies(t *testing.T) {
	dir := t.TempDir()
	keygen(t, "--dir", dir, "--agencies", "2")
	before := snapshot(t, dir)
	code, stdout, _ := keygen(t, "--dir", dir, "--agencies", "4")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := logLines(t, stdout)
	if len(lines) != 5 || !strings.HasSuffix(lines[4], "agencies: 4 | written: 4 | kept: 8") {
		t.Errorf("raising --agencies logged:\n%s", stdout)
	}
	after := snapshot(t, dir)
	for name, content := range before {
		if after[name] != content {
			t.Errorf("%s changed", name)
		}
	}
	for _, name := range []string{"agency-3.key", "agency-3.pub", "agency-4.key", "agency-4.pub"} {
		if _, ok := after[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	if len(after) != len(before)+4 {
		t.Errorf("%d files, want %d", len(after), len(before)+4)
	}
}

func TestKeygenDerivesMissingPublicKeys(t *testing.T) {
	dir := t.TempDir()
	keygen(t, "--dir", dir, "--agencies", "2")
	before := snapshot(t, dir)
	for _, name := range []string{"agency-1.pub", "server.pub", "server-sign.pub"} {
		os.Remove(filepath.Join(dir, name))
	}
	os.Remove(filepath.Join(dir, "agency-2.key")) // as on a server once the agency has its key
	code, stdout, stderr := keygen(t, "--dir", dir, "--agencies", "2")
	if code != 0 {
		t.Fatalf("exit %d, %s", code, stderr)
	}
	after := snapshot(t, dir)
	for name, content := range before {
		if name != "agency-2.key" && after[name] != content {
			t.Errorf("%s is not what it was before its removal", name)
		}
	}
	if _, ok := after["agency-2.key"]; ok {
		t.Error("a private key was made up for a lone public key")
	}
	if !strings.Contains(stdout, "file: "+filepath.Join(dir, "agency-2.pub")+" | kept: public key without its private key") {
		t.Errorf("the lone public key is not reported:\n%s", stdout)
	}
	if !strings.Contains(stdout, "derived_from: "+filepath.Join(dir, "agency-1.key")) {
		t.Errorf("the derived public key is not reported:\n%s", stdout)
	}
	logLines(t, stdout)
}

func TestKeygenRefusesMismatchedPair(t *testing.T) {
	dir := t.TempDir()
	keygen(t, "--dir", dir, "--agencies", "2")
	os.Remove(filepath.Join(dir, "agency-1.pub"))
	other, _ := secure.LoadPublicKey(filepath.Join(dir, "agency-2.pub"))
	if err := secure.WritePublicKey(filepath.Join(dir, "agency-1.pub"), "agency 1", other); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := keygen(t, "--dir", dir, "--agencies", "2")
	if code != 1 || !strings.Contains(stdout, "does not hold the public key of") {
		t.Errorf("mismatched pair: exit %d, log:\n%s", code, stdout)
	}
	logLines(t, stdout)
}

func TestKeygenIOFailure(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := keygen(t, "--dir", filepath.Join(file, "keys"))
	if code != 1 || !strings.Contains(stdout, "result: fail") {
		t.Errorf("directory under a file: exit %d, log:\n%s", code, stdout)
	}
	logLines(t, stdout)
}

func TestKeygenBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--agencies", "-1"}, "--agencies"},
		{[]string{"--agencies", "2000000"}, "--agencies"},
		{[]string{"--agencies", "many"}, "--agencies"},
		{[]string{"--dir", ""}, "--dir"},
		{[]string{"--nope"}, "--nope"},
		{[]string{"extra"}, `"extra"`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			dir := t.TempDir()
			code, stdout, stderr := keygen(t, append([]string{"--dir", dir}, tc.args...)...)
			if code != 2 || !strings.Contains(stderr, tc.want) || stdout != "" {
				t.Errorf("exit %d, stderr %q, stdout %q; want 2 and a sentence naming %s", code, stderr, stdout, tc.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Error("bad flags wrote files")
			}
		})
	}
	if code, _, _ := keygen(t, "--help"); code != 0 {
		t.Errorf("--help: exit %d", code)
	}
}

// --only I writes agency I's pair and nothing else, never overwriting it,
// and refuses to be combined with --agencies.
func TestKeygenOnlyOneAgency(t *testing.T) {
	dir := t.TempDir()
	code, stdout, stderr := keygen(t, "--dir", dir, "--only", "7")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	files := snapshot(t, dir)
	if len(files) != 2 || files["agency-7.key"] == "" || files["agency-7.pub"] == "" {
		t.Fatalf("--only 7 wrote %d files: %v", len(files), keysOf(files))
	}
	priv, err := secure.LoadPrivateKey(filepath.Join(dir, "agency-7.key"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := secure.LoadPublicKey(filepath.Join(dir, "agency-7.pub"))
	if err != nil || priv.Public() != pub {
		t.Fatalf("agency-7.pub is not agency-7.key's public half (%v)", err)
	}
	if info, _ := os.Stat(filepath.Join(dir, "agency-7.key")); info.Mode().Perm() != 0o600 {
		t.Errorf("agency-7.key mode %v, want 0600", info.Mode().Perm())
	}
	if lines := logLines(t, stdout); len(lines) != 3 || !strings.HasSuffix(lines[2], "| only: 7 | written: 2 | kept: 0") {
		t.Errorf("log %q", lines)
	}
	if code, _, _ := keygen(t, "--dir", dir, "--only", "7"); code != 0 || snapshot(t, dir)["agency-7.key"] != files["agency-7.key"] {
		t.Errorf("a second --only 7: exit %d or the key changed; it must keep the existing pair", code)
	}
	for _, args := range [][]string{{"--only", "0"}, {"--only", "-2"}, {"--only", "3", "--agencies", "5"}} {
		if code, _, stderr := keygen(t, append([]string{"--dir", t.TempDir()}, args...)...); code != 2 || !strings.Contains(stderr, "--only") {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming --only", args, code, stderr)
		}
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
