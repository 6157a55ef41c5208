package compose

// The course's two scripts, generar-compose.sh and validar-echo-server.sh,
// run as the course runs them (sh, which is dash on Debian), under bash and
// as ./script. validar-echo-server.sh talks to a fake docker.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// shell is one way of starting a script.
type shell struct {
	name string
	bin  string // "" to run ./script from the repository root
}

// shells are dash, bash and ./script. A missing dash or bash skips its
// runs, except under CI=true, where it fails the test.
func shells(t *testing.T) []shell {
	t.Helper()
	out := []shell{}
	for _, name := range []string{"dash", "bash"} {
		bin, err := exec.LookPath(name)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is needed to check the course's scripts under it (CI=true): %v", name, err)
			}
			t.Logf("%s not installed: its runs are skipped", name)
			continue
		}
		out = append(out, shell{name, bin})
	}
	return append(out, shell{name: "dot-slash"})
}

// command runs script (a file in the repository root) with args: from dir
// under a shell, from the repository root as ./script.
func (sh shell) command(t *testing.T, script, dir string, args ...string) *exec.Cmd {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	if sh.bin == "" {
		cmd := exec.Command("./"+script, args...)
		cmd.Dir = root
		return cmd
	}
	cmd := exec.Command(sh.bin, append([]string{filepath.Join(root, script)}, args...)...)
	cmd.Dir = dir
	return cmd
}

// exitCode runs cmd and returns its exit code.
func exitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	}
	t.Fatalf("run %v: %v", cmd.Args, err)
	return -1
}

func runGenerar(t *testing.T, sh shell, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := sh.command(t, "generar-compose.sh", dir, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return exitCode(t, cmd), out.String()
}

func TestScriptWritesFile(t *testing.T) {
	for _, sh := range shells(t) {
		t.Run(sh.name, func(t *testing.T) {
			dir := t.TempDir()
			// A relative output path is taken from the caller's directory,
			// not the script's; ./script runs from the repository root.
			output := "out.yaml"
			if sh.bin == "" {
				output = filepath.Join(dir, output)
			}
			code, out := runGenerar(t, sh, dir, output, "3")
			if code != 0 {
				t.Fatalf("exit %d, output:\n%s", code, out)
			}
			if !strings.Contains(out, "wrote "+output+" for 3 agencies") {
				t.Errorf("output %q does not say what it wrote", out)
			}
			got, err := os.ReadFile(filepath.Join(dir, "out.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if want := generate(t, 3); !bytes.Equal(got, want) {
				t.Errorf("script output differs from Generate for 3 agencies")
			}
		})
	}
}

func TestScriptBadArgsLeaveFileUntouched(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "keep.yaml")
	const original = "previous content\n"
	cases := []struct {
		name string
		args []string
		want string // in the output
	}{
		{"missing", []string{}, "want 2 arguments, got 0"},
		{"only output", []string{target}, "want 2 arguments, got 1"},
		{"extra", []string{target, "5", "extra"}, "want 2 arguments, got 3"},
		{"empty output", []string{"", "5"}, "output file is empty"},
		{"stdout", []string{"-", "5"}, "output file must be a path, not '-'"},
		{"non-numeric", []string{target, "abc"}, "agencies must be a non-negative integer, got 'abc'"},
		{"negative", []string{target, "-1"}, "got '-1'"},
		{"empty count", []string{target, ""}, "got ''"},
		{"leading zero", []string{target, "05"}, "got '05'"},
		{"sign", []string{target, "+5"}, "got '+5'"},
		{"space", []string{target, "5 "}, "got '5 '"},
		{"glob", []string{target, "*"}, "got '*'"},
		{"ten digits", []string{target, "1234567890"}, "got '1234567890'"},
		{"too many", []string{target, fmt.Sprint(MaxAgencies + 1)}, fmt.Sprintf("at most %d", MaxAgencies)},
	}
	for _, sh := range shells(t) {
		for _, c := range cases {
			t.Run(sh.name+"/"+c.name, func(t *testing.T) {
				if err := os.WriteFile(target, []byte(original), 0o644); err != nil {
					t.Fatal(err)
				}
				code, out := runGenerar(t, sh, dir, c.args...)
				if code != 2 {
					t.Fatalf("exit %d for args %q, want 2; output:\n%s", code, c.args, out)
				}
				if !strings.Contains(out, c.want) {
					t.Errorf("output %q does not say %q", out, c.want)
				}
				if !strings.Contains(out, "usage:") {
					t.Errorf("output %q has no usage line", out)
				}
				got, err := os.ReadFile(target)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != original {
					t.Errorf("output file changed to %q", got)
				}
				entries, err := os.ReadDir(dir)
				if err != nil {
					t.Fatal(err)
				}
				if len(entries) != 1 {
					t.Errorf("directory holds %d entries, want only keep.yaml", len(entries))
				}
			})
		}
	}
}

// fakeDockerScript stands for docker: it appends "docker <args>" (and
// "timeout <args>" when installed as timeout) to $FAKE_LOG, and answers
// from the environment: FAKE_INSPECT is what `inspect` prints ("fail": no
// such container), FAKE_INFO, FAKE_NETWORK and FAKE_IMAGE make `info`,
// `network inspect` and `image inspect` fail when "fail", and `run`
// prints FAKE_RUN_OUT and exits FAKE_RUN_RC.
const fakeDockerScript = `#!/bin/sh
case $0 in
*timeout)
	printf '%s\n' "timeout $*" >>"$FAKE_LOG"
	shift
	exec "$@"
	;;
esac
printf '%s\n' "docker $*" >>"$FAKE_LOG"
case $1 in
inspect)
	if [ "${FAKE_INSPECT-}" = fail ]; then
		echo "Error: No such container: server" >&2
		exit 1
	fi
	[ -z "${FAKE_INSPECT-}" ] || printf '%s\n' "$FAKE_INSPECT"
	;;
info) [ "${FAKE_INFO-}" != fail ] ;;
network) [ "${FAKE_NETWORK-}" != fail ] ;;
image) [ "${FAKE_IMAGE-}" != fail ] ;;
run)
	printf '%s\n' "${FAKE_RUN_OUT-}"
	exit "${FAKE_RUN_RC:-0}"
	;;
*) exit 64 ;;
esac
`

func TestValidarEchoServer(t *testing.T) {
	const (
		ok = "action: test_echo_server | result: success"
		ko = "action: test_echo_server | result: fail"
		// A server started with docker compose from a folder named myfolder:
		// not the network PROJECT (tp0) would name.
		nets  = "myfolder_lottery_net\nbridge"
		probe = "run --rm --pull never --network myfolder_lottery_net --entrypoint /probe loteria-eventserver:latest --server server:12345 --timeout 3s"
	)
	inspect := "inspect --type container -f {{if .State.Running}}{{range $k, $v := .NetworkSettings.Networks}}{{println $k}}{{end}}{{end}} server"
	okLine := "2024-01-01 00:00:00 INFO " + ok + " | server: server:12345"
	cases := []struct {
		name    string
		env     []string
		noDock  bool   // no docker on PATH
		timeout bool   // a timeout command on PATH
		want    string // stdout line
		reason  string // in stderr
		log     []string
		notLog  []string
	}{
		{name: "server answers", env: []string{"FAKE_INSPECT=" + nets, "FAKE_RUN_OUT=" + okLine},
			want: ok, log: []string{"docker " + inspect, "docker " + probe}, notLog: []string{"tp0", "timeout 30"}},
		{name: "under timeout", env: []string{"FAKE_INSPECT=" + nets, "FAKE_RUN_OUT=" + okLine}, timeout: true,
			want: ok, log: []string{"timeout 30 docker " + probe, "docker " + probe}},
		{name: "NETWORK, SERVER_ADDRESS, SERVER_IMAGE", env: []string{"FAKE_INSPECT=fail", "FAKE_RUN_OUT=" + okLine,
			"NETWORK=mine", "SERVER_ADDRESS=10.0.0.2:9", "SERVER_IMAGE=probe:x"},
			want: ok, log: []string{"docker network inspect mine", "docker image inspect probe:x",
				"docker run --rm --pull never --network mine --entrypoint /probe probe:x --server 10.0.0.2:9 --timeout 3s"},
			notLog: []string{"docker inspect"}},
		{name: "NETWORK not found", env: []string{"NETWORK=mine", "FAKE_NETWORK=fail"},
			want: ko, reason: "network mine (from NETWORK) not found", notLog: []string{"docker run"}},
		{name: "no server container", env: []string{"FAKE_INSPECT=fail"},
			want: ko, reason: "no container named server", notLog: []string{"docker run"}},
		{name: "server stopped", env: []string{"FAKE_INSPECT="},
			want: ko, reason: "the container named server is not running", notLog: []string{"docker run"}},
		{name: "no daemon", env: []string{"FAKE_INSPECT=fail", "FAKE_INFO=fail"},
			want: ko, reason: "no Docker daemon answers", notLog: []string{"docker run"}},
		{name: "no docker", noDock: true, want: ko, reason: "docker is not installed"},
		{name: "no image", env: []string{"FAKE_INSPECT=" + nets, "FAKE_IMAGE=fail"},
			want: ko, reason: "image loteria-eventserver:latest not found", notLog: []string{"docker run"}},
		{name: "probe fails", env: []string{"FAKE_INSPECT=" + nets, "FAKE_RUN_OUT=ERROR " + ko + " | error: refused", "FAKE_RUN_RC=1"},
			want: ko, reason: "probe exited 1: ERROR " + ko + " | error: refused", log: []string{"docker " + probe}},
		{name: "exit 0 without success line", env: []string{"FAKE_INSPECT=" + nets, "FAKE_RUN_OUT=something else"},
			want: ko, reason: "probe exited 0: something else"},
		{name: "success line but exit 1", env: []string{"FAKE_INSPECT=" + nets, "FAKE_RUN_OUT=" + okLine, "FAKE_RUN_RC=1"},
			want: ko, reason: "probe exited 1"},
	}
	for _, sh := range shells(t) {
		for _, c := range cases {
			t.Run(sh.name+"/"+c.name, func(t *testing.T) {
				bin := t.TempDir()
				if !c.noDock {
					names := []string{"docker"}
					if c.timeout {
						names = append(names, "timeout")
					}
					for _, n := range names {
						if err := os.WriteFile(filepath.Join(bin, n), []byte(fakeDockerScript), 0o755); err != nil {
							t.Fatal(err)
						}
					}
				}
				log := filepath.Join(t.TempDir(), "log")
				cmd := sh.command(t, "validar-echo-server.sh", t.TempDir())
				// PATH holds only the fakes: no timeout(1) unless faked, as on
				// some hosts, and nothing else the script could lean on.
				cmd.Env = append([]string{"PATH=" + bin, "FAKE_LOG=" + log, "PROJECT=tp0"}, c.env...)
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				code := exitCode(t, cmd)
				wantCode := 1
				if c.want == ok {
					wantCode = 0
				}
				if stdout.String() != c.want+"\n" || code != wantCode {
					t.Errorf("stdout %q exit %d, want %q exit %d; stderr: %s", stdout.String(), code, c.want, wantCode, stderr.String())
				}
				if c.reason != "" && !strings.Contains(stderr.String(), "validar-echo-server: "+c.reason) {
					t.Errorf("stderr %q does not give the reason %q", stderr.String(), c.reason)
				}
				if c.want == ok && stderr.Len() > 0 {
					t.Errorf("stderr %q on success, want nothing", stderr.String())
				}
				calls, err := os.ReadFile(log)
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
				lines := strings.Split(strings.TrimSpace(string(calls)), "\n")
				for _, want := range c.log {
					found := false
					for _, l := range lines {
						found = found || l == want
					}
					if !found {
						t.Errorf("no call %q; calls:\n%s", want, calls)
					}
				}
				for _, bad := range c.notLog {
					if strings.Contains(string(calls), bad) {
						t.Errorf("calls mention %q:\n%s", bad, calls)
					}
				}
			})
		}
	}
}

// The scripts are POSIX sh: dash parses them, and checkbashisms (when
// installed) finds nothing.
func TestScriptsHaveNoBashisms(t *testing.T) {
	scripts := []string{filepath.Join(repoRoot, "generar-compose.sh"), filepath.Join(repoRoot, "validar-echo-server.sh")}
	for _, s := range scripts {
		data, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(data), "#!/bin/sh\n") {
			t.Errorf("%s: first line is not #!/bin/sh", s)
		}
		if info, err := os.Stat(s); err != nil || info.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable: %v", s, err)
		}
	}
	for _, sh := range shells(t) {
		if sh.name != "dash" {
			continue
		}
		for _, s := range scripts {
			if out, err := exec.Command(sh.bin, "-n", s).CombinedOutput(); err != nil {
				t.Errorf("dash -n %s: %v\n%s", s, err, out)
			}
		}
	}
	if cb, err := exec.LookPath("checkbashisms"); err == nil {
		out, err := exec.Command(cb, append([]string{"--posix", "--extra"}, scripts...)...).CombinedOutput()
		if err != nil {
			t.Errorf("checkbashisms: %v\n%s", err, out)
		}
	} else {
		t.Log("checkbashisms not installed: only dash -n checks the scripts")
	}
}
