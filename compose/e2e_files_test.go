package compose

// Checks of the files the Docker deployment is made of (Dockerfiles,
// .dockerignore, the mounted config files, validar-echo-server.sh) that run
// without a Docker daemon; make e2e runs the deployment itself.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// repoRoot is the repository root as seen from this package's directory.
const repoRoot = ".."

// badValue is valid for no setting; the checks put it under one key at a time.
const badValue = "@not-valid@"

// dockerfile is what the checks need from one Dockerfile.
type dockerfile struct {
	from        []string
	user        string
	stopSignal  string
	copies      map[string]string // destination -> source
	instrs      []string          // instruction keywords, upper case
	entrypoints int
}

func readDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	d := dockerfile{copies: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	var pending string // an instruction continued with a trailing backslash
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			pending += cont + " "
			continue
		}
		line, pending = pending+line, ""
		fields := strings.Fields(line)
		instr := strings.ToUpper(fields[0])
		d.instrs = append(d.instrs, instr)
		args := fields[1:]
		switch instr {
		case "FROM":
			d.from = append(d.from, args[0])
		case "USER":
			d.user = args[0]
		case "STOPSIGNAL":
			d.stopSignal = args[0]
		case "ENTRYPOINT":
			d.entrypoints++
		case "COPY":
			var plain []string
			for _, a := range args {
				if !strings.HasPrefix(a, "--") {
					plain = append(plain, a)
				}
			}
			if len(plain) != 2 {
				t.Fatalf("%s: COPY %q: want one source and one destination", path, args)
			}
			d.copies[plain[1]] = plain[0]
		}
	}
	return d
}

func TestDockerfilesAreScratchNonRoot(t *testing.T) {
	cases := map[string][]string{
		"eventserver/Dockerfile": {"/eventserver", "/probe", "/data/"},
		"agency/Dockerfile":      {"/agency"},
	}
	for path, dests := range cases {
		t.Run(path, func(t *testing.T) {
			d := readDockerfile(t, path)
			if !slices.Equal(d.from, []string{"scratch"}) {
				t.Errorf("FROM %v, want only scratch (nothing can be pulled)", d.from)
			}
			for _, bad := range []string{"RUN", "ADD"} {
				if slices.Contains(d.instrs, bad) {
					t.Errorf("has %s: a scratch image has no shell, and ADD may fetch", bad)
				}
			}
			uid, _, _ := strings.Cut(d.user, ":")
			if uid == "" || uid == "0" || uid == "root" {
				t.Errorf("USER %q, want a non-root numeric user", d.user)
			}
			if d.entrypoints != 1 {
				t.Errorf("%d ENTRYPOINT lines, want 1", d.entrypoints)
			}
			// Without a named stop signal, Docker cancels `restart:
			// on-failure` for a crash forced by any `docker kill -s`, and
			// make e2e could not prove the server is restarted.
			if path == "eventserver/Dockerfile" && d.stopSignal != "SIGTERM" {
				t.Errorf("STOPSIGNAL %q, want SIGTERM (the drain signal, named)", d.stopSignal)
			}
			var got []string
			for dst := range d.copies {
				got = append(got, dst)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(dests))
			if !slices.Equal(got, want) {
				t.Errorf("COPY destinations %v, want %v", got, want)
			}
		})
	}
}

// The build context is exactly what the Dockerfiles copy: everything is
// ignored, then each COPY source is let back in.
func TestDockerignoreAdmitsOnlyCopiedFiles(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			rules = append(rules, line)
		}
	}
	if len(rules) == 0 || rules[0] != "*" {
		t.Fatalf(".dockerignore rules %q: the first must be * (ignore everything)", rules)
	}
	var admitted []string
	for _, r := range rules[1:] {
		if !strings.HasPrefix(r, "!") {
			t.Errorf("rule %q after *: want only ! exceptions", r)
			continue
		}
		admitted = append(admitted, strings.TrimSuffix(strings.TrimPrefix(r, "!"), "/"))
	}
	var copied []string
	for _, path := range []string{"eventserver/Dockerfile", "agency/Dockerfile"} {
		for _, src := range readDockerfile(t, path).copies {
			copied = append(copied, strings.TrimSuffix(src, "/"))
		}
	}
	slices.Sort(admitted)
	slices.Sort(copied)
	copied = slices.Compact(copied)
	if !slices.Equal(admitted, copied) {
		t.Errorf(".dockerignore admits %v, the Dockerfiles copy %v", admitted, copied)
	}
	// Sources outside bin/ are committed files and must be there.
	for _, src := range copied {
		if strings.HasPrefix(src, "bin/") {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(repoRoot, src))
		if err != nil || len(entries) == 0 {
			t.Errorf("COPY source %s: want a directory with a placeholder file (git keeps no empty directory): %v", src, err)
		}
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the server, the agency and keygen once per test run, and
// writes keys for 5 agencies into keys/ beside them.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "compose-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
			"./eventserver/cmd/eventserver", "./agency/cmd/agency", "./secure/cmd/keygen")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New(string(out))
			return
		}
		keygen := exec.Command(filepath.Join(dir, "keygen"), "--dir", filepath.Join(dir, "keys"), "--agencies", "5")
		if out, err := keygen.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("keygen: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// leafKeys lists the dotted paths of a YAML mapping's scalar values.
func leafKeys(prefix string, n *yaml.Node) []string {
	if n.Kind != yaml.MappingNode {
		return []string{prefix}
	}
	var keys []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if prefix != "" {
			k = prefix + "." + k
		}
		keys = append(keys, leafKeys(k, n.Content[i+1])...)
	}
	return keys
}

// setKey returns the YAML document with the scalar at the dotted path key
// set to value.
func setKey(t *testing.T, doc []byte, key, value string) []byte {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		t.Fatal(err)
	}
	n := root.Content[0]
	for _, part := range strings.Split(key, ".") {
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			t.Fatalf("no key %s", key)
		}
		n = next
	}
	n.Kind, n.Tag, n.Style, n.Value = yaml.ScalarNode, "!!str", 0, value
	out, err := yaml.Marshal(&root)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runWith runs bin with a config file holding doc; it returns the exit code
// (-1 when the program was still running after the deadline, i.e. started
// for real) and the combined output.
func runWith(t *testing.T, bin string, doc []byte, env []string, args ...string) (int, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--config", cfg}, args...)...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return -1, string(out)
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("run %s: %v", bin, err)
	return 0, ""
}

// Every key in eventserver/config.yaml must be one the server reads: a bad
// value under it has to be refused (exit 2, the value quoted), not ignored.
func TestServerConfigKeysAreRead(t *testing.T) {
	bin := filepath.Join(binaries(t), "eventserver")
	keyDir := filepath.Join(binaries(t), "keys")
	doc, err := os.ReadFile(filepath.Join(repoRoot, "eventserver", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		t.Fatalf("eventserver/config.yaml is not YAML: %v", err)
	}
	keys := leafKeys("", root.Content[0])
	for _, want := range []string{"listen", "winning_number", "log.level", "log.format"} {
		if !slices.Contains(keys, want) {
			t.Errorf("eventserver/config.yaml lacks %s", want)
		}
	}
	for _, key := range keys {
		t.Run(key, func(t *testing.T) {
			bad := setKey(t, doc, key, badValue)
			if key != "listen" {
				// Should the key be ignored, the server starts: on loopback.
				bad = setKey(t, bad, "listen", "127.0.0.1:0")
			}
			// Keyed as in Compose: the committed file holds no key setting.
			code, out := runWith(t, bin, bad, []string{"SERVER_DATA_DIR=" + t.TempDir(), "SERVER_KEYS=" + keyDir})
			if code != 2 || !strings.Contains(out, badValue) {
				t.Errorf("a bad %s gave exit %d, want 2 and an error quoting the value; output:\n%s", key, code, out)
			}
		})
	}
}

// agency/config.yaml is in the course's format: every key but loop.* is
// read by the agency, and loop.* is accepted and ignored.
func TestAgencyConfigKeysAreRead(t *testing.T) {
	bin := filepath.Join(binaries(t), "agency")
	doc, err := os.ReadFile(filepath.Join(repoRoot, "agency", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		t.Fatalf("agency/config.yaml is not YAML: %v", err)
	}
	keys := leafKeys("", root.Content[0])
	for _, want := range []string{"server.address", "log.level", "batch.maxAmount"} {
		if !slices.Contains(keys, want) {
			t.Errorf("agency/config.yaml lacks %s", want)
		}
	}
	// With no bets file in its directory the agency stops at exit 1 right
	// after loading its settings, before any connection. Its keys come from
	// the environment, as in Compose: the course's file has no key setting.
	keyDir := filepath.Join(binaries(t), "keys")
	env := []string{"CLI_ID=1", "CLI_KEY=" + filepath.Join(keyDir, "agency-1.key"),
		"CLI_SERVER_PUB=" + filepath.Join(keyDir, "server.pub"), "CLI_SIGN_PUB=" + filepath.Join(keyDir, "server-sign.pub")}
	code, out := runWith(t, bin, doc, env)
	if code != 1 || !strings.Contains(out, "action: config | result: success") || !strings.Contains(out, "action: open_bets | result: fail") {
		t.Fatalf("agency with the committed config: exit %d, want 1 after a config line and open_bets fail; output:\n%s", code, out)
	}
	if !strings.Contains(out, "mode: secure") {
		t.Errorf("the agency keyed through the environment does not run secure; output:\n%s", out)
	}
	if !strings.Contains(out, "server: server:12345") {
		t.Errorf("server.address not taken from the file; output:\n%s", out)
	}
	for _, key := range keys {
		t.Run(key, func(t *testing.T) {
			code, out := runWith(t, bin, setKey(t, doc, key, badValue), env)
			if strings.HasPrefix(key, "loop.") {
				if code != 1 {
					t.Errorf("a value under %s (ignored key) gave exit %d, want 1 as with the committed file; output:\n%s", key, code, out)
				}
				return
			}
			if code != 2 || !strings.Contains(out, badValue) {
				t.Errorf("a bad %s gave exit %d, want 2 and an error quoting the value; output:\n%s", key, code, out)
			}
		})
	}
}

// fakeDocker writes a docker command that answers network and image
// inspection with success and runs the probe as script says.
func fakeDocker(t *testing.T, probe string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\ncase \"$1\" in\ninspect) echo lottery_net ;;\nrun) " + probe + " ;;\n*) exit 0 ;;\nesac\n"
	if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestValidarEchoServerVerdicts(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to run validar-echo-server.sh: %v", err)
	}
	const ok = "action: test_echo_server | result: success"
	const ko = "action: test_echo_server | result: fail"
	cases := []struct {
		name  string
		probe string // shell run as `docker run ...`; "" for no docker at all
		want  string
		code  int
	}{
		{"server answers", `echo "2024-01-01 00:00:00 INFO ` + ok + ` | server: server:12345"`, ok, 0},
		{"probe fails", `echo "2024-01-01 00:00:00 ERROR ` + ko + ` | error: refused"; exit 1`, ko, 1},
		{"exit 0 without success line", `echo something else`, ko, 1},
		{"success line but exit 1", `echo "` + ok + `"; exit 1`, ko, 1},
		{"no docker", "", ko, 1},
	}
	script, err := filepath.Abs(filepath.Join(repoRoot, "validar-echo-server.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := t.TempDir() // no docker here
			if c.probe != "" {
				path = fakeDocker(t, c.probe)
			}
			// PATH holds only the fake docker: no timeout(1), as on some hosts.
			cmd := exec.Command(bash, script)
			cmd.Env = []string{"PATH=" + path}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(stdout.String()); got != c.want || code != c.code {
				t.Errorf("stdout %q exit %d, want %q exit %d; stderr: %s", got, code, c.want, c.code, stderr.String())
			}
		})
	}
}

func TestShellScriptsParse(t *testing.T) {
	for _, s := range []string{"compose/e2e.sh", "validar-echo-server.sh", "eventserver/demo.sh", "eventserver/drain-demo.sh"} {
		out, err := exec.Command("bash", "-n", filepath.Join(repoRoot, s)).CombinedOutput()
		if err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
	}
}

// The Makefile prepares exactly the paths the Compose file mounts, and
// exports the variable its group_add reads.
func TestMakefileMatchesGenerator(t *testing.T) {
	read := func(path string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(repoRoot, path))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	makefile, dockerMk := read("Makefile"), read("compose/docker.mk")
	for _, want := range []struct{ file, text, line string }{
		{"Makefile", makefile, "KEYS_DIR := " + KeysDir + "\n"},
		{"Makefile", makefile, " secure/cmd/keygen"},
		{"compose/docker.mk", dockerMk, "RECEIPTS_DIR := " + ReceiptsDir + "\n"},
		{"compose/docker.mk", dockerMk, GroupVariable + " ?= $(shell id -g)\n"},
		{"compose/docker.mk", dockerMk, "export " + GroupVariable + "\n"},
		{"compose/docker.mk", dockerMk, "-f compose/publish-metrics.yaml"},
	} {
		if !strings.Contains(want.text, want.line) {
			t.Errorf("%s lacks %q", want.file, want.line)
		}
	}
	ignore := read(".gitignore")
	for _, dir := range []string{"/" + KeysDir + "/", "/.data/"} {
		if !slices.Contains(strings.Split(ignore, "\n"), dir) {
			t.Errorf(".gitignore does not ignore %s", dir)
		}
	}
}

// TestComposeUpPreparesTheFilesAgencies: make docker-compose-up makes data,
// keys and receipt folders for the agencies the Compose file runs, not for
// AGENCIES: the course's ./generar-compose.sh may have written the file for
// another count. (make -n prints the commands without running them.)
func TestComposeUpPreparesTheFilesAgencies(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("make is needed (CI=true): %v", err)
		}
		t.Skip("make not installed")
	}
	file := filepath.Join(t.TempDir(), "seven.yaml")
	if err := os.WriteFile(file, generate(t, 7), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"the file's seven", []string{"COMPOSE_YAML=" + file}, 7},
		{"AGENCIES when the file is missing", []string{"COMPOSE_YAML=" + file + ".missing", "AGENCIES=3"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("make", append([]string{"-n", "--no-print-directory", "docker-compose-up"}, tc.args...)...)
			cmd.Dir = repoRoot
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("make -n docker-compose-up: %v\n%s", err, out)
			}
			for _, want := range []string{fmt.Sprintf("keygen --dir .keys --agencies %d", tc.want), fmt.Sprintf("seq 1 %d)", tc.want)} {
				if !strings.Contains(string(out), want) {
					t.Errorf("make -n docker-compose-up %v does not run %q:\n%s", tc.args, want, out)
				}
			}
		})
	}
}
