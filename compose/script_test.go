package compose

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runScript runs generar-compose.sh with args from dir and returns its exit
// code and combined output.
func runScript(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "generar-compose.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	default:
		t.Fatalf("run script: %v", err)
		return -1, ""
	}
}

func TestScriptWritesFile(t *testing.T) {
	dir := t.TempDir()
	// A relative output path is taken from the caller's directory, not the script's.
	code, out := runScript(t, dir, "out.yaml", "3")
	if code != 0 {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	if !strings.Contains(out, "wrote out.yaml for 3 agencies") {
		t.Errorf("output %q does not say what it wrote", out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "out.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := generate(t, 3); !bytes.Equal(got, want) {
		t.Errorf("script output differs from Generate for 3 agencies")
	}
}

func TestScriptBadArgsLeaveFileUntouched(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "keep.yaml")
	const original = "previous content\n"
	cases := map[string][]string{
		"missing":      {},
		"only output":  {target},
		"non-numeric":  {target, "abc"},
		"negative":     {target, "-1"},
		"extra":        {target, "5", "extra"},
		"empty count":  {target, ""},
		"empty output": {"", "5"},
		"leading zero": {target, "05"},
		"too many":     {target, "253"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(target, []byte(original), 0o644); err != nil {
				t.Fatal(err)
			}
			code, out := runScript(t, dir, args...)
			if code != 2 {
				t.Fatalf("exit %d for args %q, want 2; output:\n%s", code, args, out)
			}
			if !strings.Contains(out, "usage:") && !strings.Contains(out, "--agencies must be") {
				t.Errorf("no usage or reason in output %q", out)
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
