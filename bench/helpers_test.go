package bench

import (
	"context"
	"net"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
)

// TestMain lets the test binary stand in for "bench serve-stdlib", so the
// runner's process handling is tested without building anything.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve-stdlib" {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		os.Exit(ServeStdlib(os.Args[2:], os.Stdout, os.Stderr, sigs))
	}
	os.Exit(m.Run())
}

// inProcess is a server under test running inside the test process.
type inProcess struct {
	addr    string
	dataDir string
	cancel  context.CancelFunc
	done    chan error
}

// stop drains the server and returns what Serve returned.
func (s *inProcess) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop within 30s")
		return nil
	}
}

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

type servable interface {
	Serve(context.Context) error
	Ready() <-chan struct{}
	Addr() string
}

func serve(t *testing.T, srv servable, dataDir string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &inProcess{dataDir: dataDir, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-s.done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start within 10s")
	}
	s.addr = srv.Addr()
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

// peer is a hand-driven client connection.
type peer struct {
	t   *testing.T
	nc  net.Conn
	r   frame.Source
	dec frame.Decoder
}

func dialPeer(t *testing.T, addr string) *peer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &peer{t: t, nc: nc, r: frame.NewReader(nc)}
}

func (p *peer) send(f frame.Frame) {
	p.t.Helper()
	if err := frame.Write(p.nc, f); err != nil {
		p.t.Fatalf("send %s: %v", f.Type(), err)
	}
}

func (p *peer) recv() frame.Frame {
	p.t.Helper()
	f, err := p.dec.Next(p.r)
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
