package secure

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flynn/noise"
)

func TestKeyFilesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	priv := testKey(t, 1)
	path := func(name string) string { return filepath.Join(dir, name) }
	if err := WritePrivateKey(path("a.key"), "agency 3", priv); err != nil {
		t.Fatal(err)
	}
	if err := WritePublicKey(path("a.pub"), "agency 3", priv.Public()); err != nil {
		t.Fatal(err)
	}
	_, sign, err := ed25519.GenerateKey(seeded(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSigningKey(path("s.key"), "server", sign); err != nil {
		t.Fatal(err)
	}
	if err := WriteVerifyKey(path("s.pub"), "server", sign.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}

	if got, err := LoadPrivateKey(path("a.key")); err != nil || got != priv {
		t.Errorf("LoadPrivateKey: %v", err)
	}
	if got, err := LoadPublicKey(path("a.pub")); err != nil || got != priv.Public() {
		t.Errorf("LoadPublicKey: %v", err)
	}
	gotSign, err := LoadSigningKey(path("s.key"))
	if err != nil || !gotSign.Equal(sign) {
		t.Fatalf("LoadSigningKey: %v", err)
	}
	verify, err := LoadVerifyKey(path("s.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(verify, []byte("receipt"), ed25519.Sign(gotSign, []byte("receipt"))) {
		t.Error("a signature by the loaded signing key does not verify with the loaded verify key")
	}

	wantHead := map[string]string{
		"a.key": "# loteria agency 3 private key (X25519, Noise IK): keep secret\n",
		"a.pub": "# loteria agency 3 public key (X25519)\n",
		"s.key": "# loteria server signing key (Ed25519 seed): keep secret\n",
		"s.pub": "# loteria server signing public key (Ed25519)\n",
	}
	wantMode := map[string]os.FileMode{"a.key": 0o600, "a.pub": 0o644, "s.key": 0o600, "s.pub": 0o644}
	for name, head := range wantHead {
		data, _ := os.ReadFile(path(name))
		lines := strings.Split(string(data), "\n")
		if !strings.HasPrefix(string(data), head) || len(lines) != 3 || len(lines[1]) != 44 || lines[2] != "" {
			t.Errorf("%s holds %q; want the comment line, one base64 line and a newline", name, data)
		}
		if info, _ := os.Stat(path(name)); info.Mode().Perm() != wantMode[name] {
			t.Errorf("%s mode %v, want %v", name, info.Mode().Perm(), wantMode[name])
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 4 {
		t.Errorf("%d entries in the directory, want the 4 files and no leftovers", len(entries))
	}
}

func TestWritersNeverOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	writeFile(t, path, "precious\n")
	errs := []error{
		WritePrivateKey(path, "x", testKey(t, 1)),
		WritePublicKey(path, "x", testKey(t, 1).Public()),
		WriteSigningKey(path, "x", ed25519.NewKeyFromSeed(make([]byte, 32))),
		WriteVerifyKey(path, "x", make(ed25519.PublicKey, 32)),
	}
	for i, err := range errs {
		if !errors.Is(err, fs.ErrExist) {
			t.Errorf("writer %d over an existing file: %v, want fs.ErrExist", i, err)
		}
	}
	if data, _ := os.ReadFile(path); string(data) != "precious\n" {
		t.Errorf("file changed to %q", data)
	}
	// place itself refuses too, for a file that appears after the first check.
	tmp := filepath.Join(filepath.Dir(path), "tmp")
	writeFile(t, tmp, "new\n")
	if err := place(tmp, path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("place over an existing file: %v", err)
	}
}

func TestParseKeyFile(t *testing.T) {
	key := testKey(t, 7).Public()
	line := key.String()
	cases := []struct {
		name, content string
		want          string // part of the error; "" for success
	}{
		{"bare", line + "\n", ""},
		{"no final newline", line, ""},
		{"comments and blanks", "# one\n\n  # two\n" + line + "\n\n# three\n", ""},
		{"CRLF and spaces", "# c\r\n  " + line + "  \r\n", ""},
		{"not base64", "# c\nnot-base64!!\n", "line 2 is not standard padded base64"},
		{"unpadded", strings.TrimRight(line, "=") + "\n", "not standard padded base64"},
		{"short", "AAAA\n", "holds 3 bytes; want 32"},
		{"long", line[:40] + "AAAAAAAA\n", "want 32"},
		{"empty", "", "no key line"},
		{"only comments", "# a\n\n# b\n", "no key line"},
		{"two keys", line + "\n# x\n" + line + "\n", "two key lines (1 and 3)"},
	}
	dir := t.TempDir()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprint(i, ".pub"))
			writeFile(t, path, tc.content)
			got, err := LoadPublicKey(path)
			if tc.want == "" {
				if err != nil || got != key {
					t.Errorf("LoadPublicKey: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %v; want ErrKeyFile naming %s and saying %q", err, path, tc.want)
			}
		})
	}
	if _, err := LoadPrivateKey(filepath.Join(dir, "absent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	huge := filepath.Join(dir, "huge")
	writeFile(t, huge, strings.Repeat("#\n", maxKeyFile))
	if _, err := LoadPrivateKey(huge); !errors.Is(err, ErrKeyFile) {
		t.Errorf("huge file: %v, want ErrKeyFile", err)
	}
}

// TestPublicMatchesNoise checks that Public derives the key noise's own
// DH25519 derives from the same private bytes.
func TestPublicMatchesNoise(t *testing.T) {
	for seed := range uint64(5) {
		k := testKey(t, seed)
		kp, err := noise.DH25519.GenerateKeypair(bytes.NewReader(k[:]))
		if err != nil {
			t.Fatal(err)
		}
		if pub := k.Public(); !bytes.Equal(pub[:], kp.Public) {
			t.Errorf("seed %d: Public differs from noise's", seed)
		}
	}
}

func TestKeyStrings(t *testing.T) {
	k := testKey(t, 9)
	for _, s := range []string{k.String(), fmt.Sprint(k), fmt.Sprintf("%v", k)} {
		if strings.Contains(s, k.Public().String()[:8]) || strings.Contains(s, fmt.Sprint(k[0], " ", k[1])) {
			t.Errorf("a private key prints as %q", s)
		}
	}
	pub := k.Public()
	if fp := pub.Fingerprint(); len(fp) != 12 || !strings.HasPrefix(pub.String(), fp) {
		t.Errorf("Fingerprint %q is not a 12-character prefix of %q", fp, pub)
	}
	if AgencyKeyFile(12) != "agency-12.key" || AgencyPubFile(12) != "agency-12.pub" {
		t.Errorf("agency key files named %s, %s", AgencyKeyFile(12), AgencyPubFile(12))
	}
}
