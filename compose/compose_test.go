package compose

import (
	"bytes"
	"errors"
	"os"
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
	Volumes       []string `yaml:"volumes"`
	Healthcheck   *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
	Networks        []string `yaml:"networks"`
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
	wantCmd := []string{"--config", "/config/config.yaml", "--agencies", strconv.Itoa(expected), "--data-dir", "/data"}
	if !slices.Equal(s.Command, wantCmd) {
		t.Errorf("server command %q, want %q", s.Command, wantCmd)
	}
	wantVols := []string{"./eventserver/config.yaml:/config/config.yaml:ro", "server-data:/data"}
	if !slices.Equal(s.Volumes, wantVols) {
		t.Errorf("server volumes %q, want %q", s.Volumes, wantVols)
	}
	h := s.Healthcheck
	if h == nil {
		t.Fatal("server has no healthcheck")
	}
	if !slices.Equal(h.Test, []string{"CMD", "/probe", "--server", "127.0.0.1:12345"}) ||
		h.Interval != "1s" || h.Timeout != "2s" || h.Retries != 30 || h.StartPeriod == "" {
		t.Errorf("server healthcheck %+v", *h)
	}
	if len(s.DependsOn) != 0 || len(s.Environment) != 0 {
		t.Errorf("server depends_on %v environment %v, want none", s.DependsOn, s.Environment)
	}
}

func checkClient(t *testing.T, s service, id int) {
	t.Helper()
	name := "client" + strconv.Itoa(id)
	if s.Image != "loteria-agency:latest" {
		t.Errorf("%s image %q", name, s.Image)
	}
	if want := []string{"CLI_ID=" + strconv.Itoa(id)}; !slices.Equal(s.Environment, want) {
		t.Errorf("%s environment %q, want %q", name, s.Environment, want)
	}
	if want := []string{"--config", "/config/config.yaml"}; !slices.Equal(s.Command, want) {
		t.Errorf("%s command %q, want %q", name, s.Command, want)
	}
	csv := ".data/agency-" + strconv.Itoa(id) + ".csv"
	wantVols := []string{"./agency/config.yaml:/config/config.yaml:ro", "./" + csv + ":/" + csv + ":ro"}
	if !slices.Equal(s.Volumes, wantVols) {
		t.Errorf("%s volumes %q, want %q", name, s.Volumes, wantVols)
	}
	if len(s.DependsOn) != 1 || s.DependsOn["server"].Condition != "service_healthy" {
		t.Errorf("%s depends_on %+v, want server: service_healthy", name, s.DependsOn)
	}
	if s.Healthcheck != nil {
		t.Errorf("%s has a healthcheck", name)
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
