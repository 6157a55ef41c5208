package eventserver

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/frame"
)

// testServer is an in-process server on 127.0.0.1:0 with its logs observed.
type testServer struct {
	*Server
	logs   *observer.ObservedLogs
	cancel context.CancelFunc
	done   chan error
}

// startServer runs a server until the test ends (or stop is called);
// cfg.Listen and cfg.DataDir default to 127.0.0.1:0 and a temp dir.
func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Agencies == 0 {
		cfg.Agencies = 5
	}
	if cfg.WinningNumber == 0 {
		cfg.WinningNumber = DefaultWinningNumber
	}
	core, logs := observer.New(zap.DebugLevel)
	if cfg.Logger == nil {
		cfg.Logger = zap.New(core)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-ts.done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start within 10s")
	}
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop drains the server and returns Serve's result; later calls return nil.
func (ts *testServer) stop(t testing.TB) error {
	t.Helper()
	if ts.cancel == nil {
		return nil
	}
	ts.cancel()
	ts.cancel = nil
	select {
	case err := <-ts.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop within 30s")
		return nil
	}
}

// rawConn is a test client speaking frames directly.
type rawConn struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	dec  frame.Decoder
}

func dial(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, conn: c, r: frame.NewReader(c)}
}

// send writes one frame whole.
func (c *rawConn) send(f frame.Frame) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := frame.Write(c.conn, f); err != nil {
		c.t.Fatalf("send %s: %v", f.Type(), err)
	}
}

// sendRaw writes bytes as they are.
func (c *rawConn) sendRaw(b []byte) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("send raw: %v", err)
	}
}

// recv reads the next frame within timeout.
func (c *rawConn) recv(timeout time.Duration) (frame.Frame, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	return c.dec.Next(c.r)
}

// expect reads the next frame and fails the test unless it is a T.
func expect[T frame.Frame](c *rawConn) T {
	c.t.Helper()
	f, err := c.recv(10 * time.Second)
	if err != nil {
		c.t.Fatalf("expected %T, got error %v", *new(T), err)
	}
	v, ok := f.(T)
	if !ok {
		c.t.Fatalf("expected %T, got %s %+v", *new(T), f.Type(), f)
	}
	return v
}
