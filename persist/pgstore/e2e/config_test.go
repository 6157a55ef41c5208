package e2e_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/internal/config"
	"github.com/tp0/loteria/internal/proctest"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

// The server takes the store's URL from --store, SERVER_STORE or the YAML
// key storage.url, refuses what is not a postgres:// URL, and never logs
// the URL's password.
func TestServerStoreSetting(t *testing.T) {
	const url = "postgres://lottery:s3cret@db.example:5432/lottery"
	noEnv := func(string) (string, bool) { return "", false }
	load := func(args []string, env func(string) (string, bool)) (eventserver.Config, string, error) {
		var out bytes.Buffer
		cfg, err := eventserver.LoadConfig("eventserver", append([]string{"--insecure"}, args...), &out, env)
		return cfg, out.String(), err
	}

	cfg, log, err := load([]string{"--store", url}, noEnv)
	if err != nil || cfg.Store != url {
		t.Fatalf("--store: store %q, err %v", cfg.Store, err)
	}
	if strings.Contains(log, "s3cret") || !strings.Contains(log, "store: postgres://lottery:xxxxx@db.example:5432/lottery") {
		t.Fatalf("the config line must show the store without its password:\n%s", log)
	}

	cfg, _, err = load(nil, func(k string) (string, bool) {
		if k == "SERVER_STORE" {
			return url, true
		}
		return "", false
	})
	if err != nil || cfg.Store != url {
		t.Fatalf("SERVER_STORE: store %q, err %v", cfg.Store, err)
	}

	yaml := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(yaml, []byte("storage:\n  url: "+url+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err = load([]string{"--config", yaml}, noEnv)
	if err != nil || cfg.Store != url {
		t.Fatalf("storage.url in YAML: store %q, err %v", cfg.Store, err)
	}

	cfg, _, err = load(nil, noEnv)
	if err != nil || cfg.Store != "" {
		t.Fatalf("no store setting: store %q, err %v; want the file store", cfg.Store, err)
	}

	var cerr *config.Error
	if _, _, err := load([]string{"--store", "mysql://db/lottery"}, noEnv); !errors.As(err, &cerr) || cerr.Setting != "store" {
		t.Fatalf("--store mysql://: %v, want a config error naming store", err)
	}
}

// A bet PostgreSQL cannot hold (a NUL byte in a name, which the protocol
// allows) is refused with REJECT invalid_bet: the agency stops and says
// which bet, and the server's store keeps working for everyone else.
func TestUnstorableBetIsRejected(t *testing.T) {
	l := theLottery(t)
	url := pgtest.NewDatabase(t)
	d := newDeployment(t, l)
	f := d.addFront(url)
	d.start(f)
	bad := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(bad, []byte("Ana,Pérez,30111222,1990-05-01,1\nLuis,Gó\x00mez,30111223,1991-06-02,2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := proctest.Start(t, "agency-nul", filepath.Join(d.logs, "agency-nul.log"), filepath.Join(d.bin, "agency"),
		"--id", "1", "--server", f.addr, "--bets", bad, "--batch-max-amount", "1",
		"--key", filepath.Join(l.keys, "agency-1.key"), "--server-pub", filepath.Join(l.keys, "server.pub"),
		"--receipt", filepath.Join(d.logs, "nul.receipt.json"), "--retry-base", "20ms", "--give-up", "20s")
	if code := p.Wait(t, 30*time.Second); code != 1 {
		t.Fatalf("agency with a NUL byte exited %d, want 1:\n%s", code, proctest.Tail(p.Log, 10))
	}
	if data, _ := os.ReadFile(p.Log); !bytes.Contains(data, []byte("invalid_bet")) {
		t.Fatalf("the agency does not say its bet was refused as invalid_bet:\n%s", proctest.Tail(p.Log, 10))
	}
	if f.p.Exited() || len(proctest.Find(f.p.Lines(), "store", "fail")) > 0 {
		t.Fatalf("the server's store broke on the refused bet:\n%s", proctest.Tail(f.p.Log, 10))
	}
	// The agency's first bet is stored, the refused one is not.
	if n := heldIn(t, url); n != 1 {
		t.Fatalf("the database holds %d bets, want the 1 before the refused one", n)
	}
}
