package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/secure"
)

// TestMain lets the test binary stand in for "bench serve-stdlib", so the
// runner's process handling is tested without building anything.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve-stdlib" {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		os.Exit(ServeStdlib(os.Args[2:], os.Stdout, os.Stderr, sigs))
	}
	code := m.Run()
	if testKeyDir != "" {
		os.RemoveAll(testKeyDir)
	}
	smokeBins.Remove()
	os.Exit(code)
}

// testKeyAgencies is how many agencies the shared test keys cover.
const testKeyAgencies = 12

var (
	testKeysOnce sync.Once
	testKeyDir   string
	testKeysErr  error
)

// testKeys returns a key directory, written once per test binary the way
// bin/keygen writes one, for the server and agencies 1..testKeyAgencies.
func testKeys(t *testing.T) *keyring {
	t.Helper()
	testKeysOnce.Do(func() {
		if testKeyDir, testKeysErr = os.MkdirTemp("", "bench-test-keys-"); testKeysErr == nil {
			testKeysErr = writeKeys(testKeyDir, testKeyAgencies)
		}
	})
	if testKeysErr != nil {
		t.Fatal(testKeysErr)
	}
	k, err := loadKeyring(testKeyDir, testKeyAgencies)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeKeys writes the key files of a secured deployment of n agencies into dir.
func writeKeys(dir string, n int) error {
	pair := func(priv, pub, owner string) error {
		k, err := secure.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		if err := secure.WritePrivateKey(filepath.Join(dir, priv), owner, k); err != nil {
			return err
		}
		return secure.WritePublicKey(filepath.Join(dir, pub), owner, k.Public())
	}
	if err := pair(secure.ServerKeyFile, secure.ServerPubFile, "server"); err != nil {
		return err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	if err := secure.WriteSigningKey(filepath.Join(dir, secure.SignKeyFile), "server", priv); err != nil {
		return err
	}
	if err := secure.WriteVerifyKey(filepath.Join(dir, secure.VerifyKeyFile), "server", pub); err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		if err := pair(secure.AgencyKeyFile(uint32(i)), secure.AgencyPubFile(uint32(i)), "agency"); err != nil {
			return err
		}
	}
	return nil
}

// inProcess is a server under test running inside the test process.
type inProcess struct {
	addr    string
	dataDir string
	cancel  context.CancelFunc
	done    chan struct{} // closed when Serve has returned err
	err     error
}

// stop drains the server and returns what Serve returned; it may be called
// again.
func (s *inProcess) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case <-s.done:
		return s.err
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop within 30s")
		return nil
	}
}

// testConfig is a plaintext (--insecure) server's configuration.
func testConfig(t *testing.T, agencies int) eventserver.Config {
	return eventserver.Config{
		Listen:        "127.0.0.1:0",
		Agencies:      agencies,
		DataDir:       t.TempDir(),
		WinningNumber: 7574,
		ShutdownGrace: 2 * time.Second,
		Logger:        zap.NewNop(),
	}
}

// secureConfig is testConfig with the server's keys from k, for agencies
// 1..agencies only.
func secureConfig(t *testing.T, agencies int, k *keyring) eventserver.Config {
	t.Helper()
	cfg := testConfig(t, agencies)
	store, err := secure.OpenKeyStore(k.Dir, agencies)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SignKey, err = secure.LoadSigningKey(filepath.Join(k.Dir, secure.SignKeyFile)); err != nil {
		t.Fatal(err)
	}
	cfg.Keys = store
	return cfg
}

type servable interface {
	Serve(context.Context) error
	Ready() <-chan struct{}
	Addr() string
}

func serve(t *testing.T, srv servable, dataDir string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &inProcess{dataDir: dataDir, cancel: cancel, done: make(chan struct{})}
	go func() {
		s.err = srv.Serve(ctx)
		close(s.done)
	}()
	select {
	case <-srv.Ready():
	case <-s.done:
		t.Fatalf("server did not start: %v", s.err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start within 10s")
	}
	s.addr = srv.Addr()
	t.Cleanup(func() { _ = s.stop(t) })
	return s
}

func startStd(t *testing.T, cfg eventserver.Config) *inProcess {
	t.Helper()
	srv, err := NewStdServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, srv, cfg.DataDir)
}

func startGnet(t *testing.T, cfg eventserver.Config) *inProcess {
	t.Helper()
	srv, err := eventserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, srv, cfg.DataDir)
}

// starter starts one kind of server.
type starter struct {
	impl  string
	start func(*testing.T, eventserver.Config) *inProcess
}

var starters = []starter{{ImplGnet, startGnet}, {ImplStdlib, startStd}}

// peer is a hand-driven client connection, plaintext or secured.
type peer struct {
	t   *testing.T
	nc  net.Conn
	src frame.Source
	w   interface{ Write([]byte) (int, error) }
	dec frame.Decoder
}

// dialPeer opens a plaintext connection.
func dialPeer(t *testing.T, addr string) *peer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &peer{t: t, nc: nc, src: frame.NewReader(nc), w: nc}
}

// dialSecure opens a secured connection as agency id.
func dialSecure(t *testing.T, addr string, k *keyring, id uint32) *peer {
	t.Helper()
	p := dialPeer(t, addr)
	sc, err := secure.Client(p.nc, k.key(id), k.Server, 0)
	if err != nil {
		t.Fatalf("handshake as agency %d: %v", id, err)
	}
	p.src, p.w = sc, sc
	return p
}

func (p *peer) send(f frame.Frame) {
	p.t.Helper()
	if err := frame.Write(p.w, f); err != nil {
		p.t.Fatalf("send %s: %v", f.Type(), err)
	}
}

func (p *peer) recv() frame.Frame {
	p.t.Helper()
	f, err := p.dec.Next(p.src)
	if err != nil {
		p.t.Fatalf("receive: %v", err)
	}
	return f
}

// expectError reads frames until an ERROR and checks its code.
func (p *peer) expectError(code frame.Code) {
	p.t.Helper()
	for {
		f := p.recv()
		if e, ok := f.(*frame.Error); ok {
			if e.Code != code {
				p.t.Fatalf("ERROR %s (%s), want %s", e.Code, e.Reason, code)
			}
			return
		}
	}
}

// hello says HELLO as id and expects a WELCOME holding nothing.
func hello(t *testing.T, p *peer, id uint32) *frame.Welcome {
	t.Helper()
	p.send(&frame.Hello{Agency: id})
	w, ok := p.recv().(*frame.Welcome)
	if !ok || w.Held != 0 {
		t.Fatalf("HELLO answered with %+v, want WELCOME holding 0", w)
	}
	return w
}
