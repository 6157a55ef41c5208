package compose

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// composeFile mirrors the keys the generator may emit; decoding with
// KnownFields rejects any other key.
type composeFile struct {
	Services map[string]service `yaml:"services"`
	Networks map[string]struct {
		Driver string `yaml:"driver"`
		IPAM   struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
	Volumes map[string]struct{} `yaml:"volumes"`
}

type service struct {
	ContainerName string   `yaml:"container_name"`
	Image         string   `yaml:"image"`
	PullPolicy    string   `yaml:"pull_policy"`
	Environment   []string `yaml:"environment"`
	Command       []string `yaml:"command"`
	GroupAdd      []string `yaml:"group_add"`
	Volumes       []mount  `yaml:"volumes"`
	Ports         []string `yaml:"ports"`
	Healthcheck   *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	Restart   string `yaml:"restart"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
	Networks        []string `yaml:"networks"`
}

// mount is one entry of a service's volumes, in either syntax, written back
// as "source:target" with ":ro" when read-only.
type mount struct {
	Spec string
	Bind bool // the long syntax with type: bind
}

func (m *mount) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		m.Spec = n.Value
		return nil
	}
	var long struct {
		Type     string `yaml:"type"`
		Source   string `yaml:"source"`
		Target   string `yaml:"target"`
		ReadOnly bool   `yaml:"read_only"`
	}
	if err := n.Decode(&long); err != nil {
		return err
	}
	m.Spec = long.Source + ":" + long.Target
	if long.ReadOnly {
		m.Spec += ":ro"
	}
	m.Bind = long.Type == "bind"
	return nil
}

func specs(ms []mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Spec)
	}
	return out
}

func generate(t *testing.T, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Generate(&b, Options{Agencies: n}); err != nil {
		t.Fatalf("Generate(%d): %v", n, err)
	}
	return b.Bytes()
}

func parse(t *testing.T, data []byte) composeFile {
	t.Helper()
	var top map[string]yaml.Node
	if err := yaml.Unmarshal(data, &top); err != nil {
		t.Fatalf("output is not YAML: %v", err)
	}
	var keys []string
	for k := range top {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"networks", "services", "volumes"}; !slices.Equal(keys, want) {
		t.Fatalf("top-level keys %v, want %v (no name/version)", keys, want)
	}
	var f composeFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return f
}

func TestCommittedDevFileIsGenerated(t *testing.T) {
	committed, err := os.ReadFile(filepath.Join("..", "docker-compose-dev.yaml"))
	if err != nil {
		t.Fatalf("read committed file: %v", err)
	}
	if got := generate(t, 5); !bytes.Equal(committed, got) {
		t.Fatalf("docker-compose-dev.yaml differs from Generate for 5 agencies; regenerate it from the repository root with:\n\t./generar-compose.sh docker-compose-dev.yaml 5")
	}
}

func TestStructure(t *testing.T) {
	for _, n := range []int{0, 1, 5, 100, MaxAgencies} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			f := parse(t, generate(t, n))

			want := []string{"server"}
			for i := 1; i <= n; i++ {
				want = append(want, "client"+strconv.Itoa(i))
			}
			var got []string
			for name, s := range f.Services {
				got = append(got, name)
				if s.ContainerName != name {
					t.Errorf("service %s: container_name %q", name, s.ContainerName)
				}
				if s.PullPolicy != "never" {
					t.Errorf("service %s: pull_policy %q, want never", name, s.PullPolicy)
				}
				if s.StopGracePeriod != "10s" {
					t.Errorf("service %s: stop_grace_period %q", name, s.StopGracePeriod)
				}
				if !slices.Equal(s.Networks, []string{"lottery_net"}) {
					t.Errorf("service %s: networks %v", name, s.Networks)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("services %v, want %v", got, want)
			}

			checkServer(t, f.Services["server"], max(n, 1))
			for i := 1; i <= n; i++ {
				checkClient(t, f.Services["client"+strconv.Itoa(i)], i)
			}

			if len(f.Networks) != 1 {
				t.Fatalf("networks %v, want only lottery_net", f.Networks)
			}
			net, ok := f.Networks["lottery_net"]
			if !ok || net.Driver != "bridge" || len(net.IPAM.Config) != 1 || net.IPAM.Config[0].Subnet != "172.25.125.0/24" {
				t.Errorf("network lottery_net = %+v, want bridge on 172.25.125.0/24", net)
			}
			if _, ok := f.Volumes["server-data"]; !ok || len(f.Volumes) != 1 {
				t.Errorf("volumes %v, want only server-data", f.Volumes)
			}
		})
	}
}

func checkServer(t *testing.T, s service, expected int) {
	t.Helper()
	if s.Image != "loteria-eventserver:latest" {
		t.Errorf("server image %q", s.Image)
	}
	wantCmd := []string{"--config", "/config/config.yaml", "--agencies", strconv.Itoa(expected), "--data-dir", "/data",
		"--keys", "/keys", "--metrics-listen", "0.0.0.0:9090"}
	if !slices.Equal(s.Command, wantCmd) {
		t.Errorf("server command %q, want %q", s.Command, wantCmd)
	}
	// --keys reads exactly these: its two private keys and each agency's
	// public key; no agency private key may reach the server.
	wantVols := []string{"./eventserver/config.yaml:/config/config.yaml:ro", "server-data:/data",
		"./.keys/server.key:/keys/server.key:ro", "./.keys/server-sign.key:/keys/server-sign.key:ro"}
	for i := 1; i <= expected; i++ {
		pub := "agency-" + strconv.Itoa(i) + ".pub"
		wantVols = append(wantVols, "./.keys/"+pub+":/keys/"+pub+":ro")
	}
	if got := specs(s.Volumes); !slices.Equal(got, wantVols) {
		t.Errorf("server volumes %q, want %q", got, wantVols)
	}
	checkBinds(t, "server", s.Volumes)
	if !slices.Equal(s.GroupAdd, []string{"${KEYS_GID:-0}"}) {
		t.Errorf("server group_add %q, want the KEYS_GID variable", s.GroupAdd)
	}
	h := s.Healthcheck
	if h == nil {
		t.Fatal("server has no healthcheck")
	}
	// Readiness, over HTTP: the image has no curl, the probe does it.
	if !slices.Equal(h.Test, []string{"CMD", "/probe", "--http", "http://127.0.0.1:9090/readyz", "--timeout", "1s"}) ||
		h.Interval != "1s" || h.Timeout != "2s" || h.Retries != 30 || h.StartPeriod == "" {
		t.Errorf("server healthcheck %+v", *h)
	}
	if s.Restart != "on-failure" {
		t.Errorf("server restart %q, want on-failure (crash-only: a failed store exits 1)", s.Restart)
	}
	if len(s.Ports) != 0 {
		t.Errorf("server ports %q: the metrics port must not be published by default", s.Ports)
	}
	if len(s.DependsOn) != 0 || len(s.Environment) != 0 {
		t.Errorf("server depends_on %v environment %v, want none", s.DependsOn, s.Environment)
	}
}

func checkClient(t *testing.T, s service, id int) {
	t.Helper()
	name := "client" + strconv.Itoa(id)
	agency := "agency-" + strconv.Itoa(id)
	if s.Image != "loteria-agency:latest" {
		t.Errorf("%s image %q", name, s.Image)
	}
	wantEnv := []string{"CLI_ID=" + strconv.Itoa(id), "CLI_KEY=/keys/" + agency + ".key", "CLI_SERVER_PUB=/keys/server.pub",
		"CLI_SIGN_PUB=/keys/server-sign.pub", "CLI_RECEIPT=/receipts/" + agency + ".json"}
	if !slices.Equal(s.Environment, wantEnv) {
		t.Errorf("%s environment %q, want %q", name, s.Environment, wantEnv)
	}
	// The course's config file, unchanged: keys come from the environment.
	if want := []string{"--config", "/config/config.yaml"}; !slices.Equal(s.Command, want) {
		t.Errorf("%s command %q, want %q", name, s.Command, want)
	}
	csv := ".data/" + agency + ".csv"
	wantVols := []string{"./agency/config.yaml:/config/config.yaml:ro", "./" + csv + ":/" + csv + ":ro",
		"./.keys/" + agency + ".key:/keys/" + agency + ".key:ro",
		"./.keys/server.pub:/keys/server.pub:ro", "./.keys/server-sign.pub:/keys/server-sign.pub:ro",
		"./.data/receipts/" + agency + ":/receipts"}
	if got := specs(s.Volumes); !slices.Equal(got, wantVols) {
		t.Errorf("%s volumes %q, want %q", name, got, wantVols)
	}
	checkBinds(t, name, s.Volumes)
	for _, v := range specs(s.Volumes) {
		if strings.HasPrefix(v, "./.keys/") && strings.Contains(v, ".key:") && !strings.HasPrefix(v, "./.keys/"+agency+".key:") {
			t.Errorf("%s mounts another private key: %s", name, v)
		}
	}
	if !slices.Equal(s.GroupAdd, []string{"${KEYS_GID:-0}"}) {
		t.Errorf("%s group_add %q, want the KEYS_GID variable", name, s.GroupAdd)
	}
	if len(s.DependsOn) != 1 || s.DependsOn["server"].Condition != "service_healthy" {
		t.Errorf("%s depends_on %+v, want server: service_healthy", name, s.DependsOn)
	}
	if s.Restart != "no" {
		t.Errorf("%s restart %q, want no (an agency that exits has finished or needs a person)", name, s.Restart)
	}
	if s.Healthcheck != nil || len(s.Ports) != 0 {
		t.Errorf("%s has a healthcheck or ports", name)
	}
}

// checkBinds wants every host path mounted with the long syntax, so a
// missing file stops Compose instead of becoming a root-owned directory.
func checkBinds(t *testing.T, name string, vols []mount) {
	t.Helper()
	for _, m := range vols {
		if strings.HasPrefix(m.Spec, "./") && !m.Bind {
			t.Errorf("%s: %s is not a long-syntax bind mount", name, m.Spec)
		}
	}
}

// The committed file must not depend on the machine it was generated on:
// the group is the variable, never a number, and nothing names a home.
func TestNoHostValues(t *testing.T) {
	out := string(generate(t, 5))
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "group_add") || strings.Contains(line, "KEYS_GID:-") {
			continue
		}
		if strings.Contains(line, "/home/") || strings.Contains(line, "/root") || strings.Contains(line, "/tmp/") {
			t.Errorf("line names a host path: %q", line)
		}
	}
	if n := strings.Count(out, `"${KEYS_GID:-0}"`); n != 6 {
		t.Errorf("%d group_add values, want 6 (server and 5 agencies)", n)
	}
}

// compose/publish-metrics.yaml adds exactly one thing: the metrics port on
// the host's loopback.
func TestPublishMetricsOverride(t *testing.T) {
	data, err := os.ReadFile("publish-metrics.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Ports []string `yaml:"ports"`
		} `yaml:"services"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := []string{"127.0.0.1:${METRICS_PORT:-" + strconv.Itoa(MetricsPort) + "}:" + strconv.Itoa(MetricsPort)}
	if len(f.Services) != 1 || !slices.Equal(f.Services["server"].Ports, want) {
		t.Errorf("services %+v, want only server with ports %q", f.Services, want)
	}
}

func TestZeroAgenciesSaysSo(t *testing.T) {
	out := string(generate(t, 0))
	if !strings.Contains(out, "# No client services were generated") {
		t.Errorf("output for 0 agencies lacks the explanatory comment:\n%s", out)
	}
	if strings.Contains(string(generate(t, 1)), "# No client services") {
		t.Error("output for 1 agency carries the 0-agency comment")
	}
}

func TestDeterministic(t *testing.T) {
	for _, n := range []int{0, 5, 100} {
		a, b := generate(t, n), generate(t, n)
		if !bytes.Equal(a, b) {
			t.Errorf("two generations for %d agencies differ", n)
		}
	}
	if bytes.Equal(generate(t, 4), generate(t, 5)) {
		t.Error("4 and 5 agencies give the same file")
	}
}

func TestRejectsBadCount(t *testing.T) {
	for _, n := range []int{-1, MaxAgencies + 1} {
		var b bytes.Buffer
		err := Generate(&b, Options{Agencies: n})
		if !errors.Is(err, ErrAgencies) {
			t.Errorf("Generate(%d) error %v, want ErrAgencies", n, err)
		}
		if b.Len() != 0 {
			t.Errorf("Generate(%d) wrote %d bytes on error", n, b.Len())
		}
	}
}

type failingWriter struct{}

var errSink = errors.New("sink broke")

func (failingWriter) Write([]byte) (int, error) { return 0, errSink }

func TestWriteErrorIsWrapped(t *testing.T) {
	if err := Generate(failingWriter{}, Options{Agencies: 2}); !errors.Is(err, errSink) {
		t.Fatalf("error %v, want it to wrap the writer's error", err)
	}
}

// composeCommand finds Compose the way the Makefile does: v2, else v1.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if docker, err := exec.LookPath("docker"); err == nil {
		if exec.Command(docker, "compose", "version").Run() == nil {
			return []string{docker, "compose"}
		}
	}
	if v1, err := exec.LookPath("docker-compose"); err == nil {
		return []string{v1}
	}
	const missing = "neither docker compose (v2) nor docker-compose (v1) is installed"
	if os.Getenv("CI") == "true" {
		t.Fatal(missing + "; .ci/run installs docker-compose") // CI must check the file, not skip it
	}
	t.Skip(missing)
	return nil
}

// Compose itself reads the generated file: it accepts every key, takes the
// group from KEYS_GID (0 when unset), and publishes the metrics port only
// with compose/publish-metrics.yaml.
func TestComposeReadsFile(t *testing.T) {
	t.Parallel() // Compose v1 takes seconds to start
	cmdline := composeCommand(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, generate(t, 2), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	config := func(env []string, files ...string) map[string]any {
		t.Helper()
		args := append(cmdline[1:], "-p", "composetest", "--project-directory", root)
		for _, f := range files {
			args = append(args, "-f", f)
		}
		cmd := exec.Command(cmdline[0], append(args, "config")...)
		cmd.Env = append(os.Environ(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s config: %v\n%s", strings.Join(cmdline, " "), err, stderr.String())
		}
		var doc struct {
			Services map[string]map[string]any `yaml:"services"`
		}
		if err := yaml.Unmarshal(out, &doc); err != nil {
			t.Fatalf("config output is not YAML: %v\n%s", err, out)
		}
		return map[string]any{"server": doc.Services["server"], "client1": doc.Services["client1"]}
	}
	groups := func(svc any) []any {
		g, _ := svc.(map[string]any)["group_add"].([]any)
		return g
	}

	got := config([]string{"KEYS_GID=4321", "METRICS_PORT="}, file)
	for _, name := range []string{"server", "client1"} {
		if g := groups(got[name]); len(g) != 1 || fmt.Sprint(g[0]) != "4321" {
			t.Errorf("%s group_add %v with KEYS_GID=4321", name, g)
		}
	}
	if ports, ok := got["server"].(map[string]any)["ports"]; ok {
		t.Errorf("server ports %v without the override", ports)
	}

	got = config([]string{"KEYS_GID=", "METRICS_PORT=19090"}, file, "publish-metrics.yaml")
	if g := groups(got["server"]); len(g) != 1 || fmt.Sprint(g[0]) != "0" {
		t.Errorf("server group_add %v with KEYS_GID empty, want 0", g)
	}
	ports := fmt.Sprint(got["server"].(map[string]any)["ports"])
	if !strings.Contains(ports, "127.0.0.1") || !strings.Contains(ports, "19090") || !strings.Contains(ports, "9090") {
		t.Errorf("server ports %s with the override and METRICS_PORT=19090, want 127.0.0.1:19090 -> 9090", ports)
	}
}
