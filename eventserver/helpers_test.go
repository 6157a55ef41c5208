package eventserver

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/secure"
)

// These helpers run the real server in-process on 127.0.0.1:0, secured by
// default: every test gets its own key directory as bin/keygen lays it out,
// and its agencies prove their identity with their keys. Every read has a
// deadline that only guards against hangs; tests wait on frames, closed
// connections and log lines, never on the clock.

// itGuard bounds any single wait; a test that needs it has already failed.
const itGuard = 20 * time.Second

// testKeys is a key directory written with the secure package's writers:
// server.key/.pub, server-sign.key/.pub and agency-I.key/.pub, plus the
// private keys read back from those files, as the agency binary reads them.
type testKeys struct {
	dir      string
	server   secure.PublicKey
	sign     ed25519.PrivateKey
	verify   ed25519.PublicKey
	agencies []secure.PrivateKey // agencies[i] is agency i+1's
	store    *secure.KeyStore
}

// newTestKeys writes the keys of a server and n agencies into a new
// directory and opens the server's key store over it.
func newTestKeys(t testing.TB, n int) *testKeys {
	t.Helper()
	dir := t.TempDir()
	server, err := secure.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, sign, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	write := []func() error{
		func() error {
			return secure.WritePrivateKey(filepath.Join(dir, secure.ServerKeyFile), "server", server)
		},
		func() error {
			return secure.WritePublicKey(filepath.Join(dir, secure.ServerPubFile), "server", server.Public())
		},
		func() error { return secure.WriteSigningKey(filepath.Join(dir, secure.SignKeyFile), "server", sign) },
		func() error { return secure.WriteVerifyKey(filepath.Join(dir, secure.VerifyKeyFile), "server", pub) },
	}
	for i := 1; i <= n; i++ {
		id := uint32(i)
		write = append(write, func() error {
			k, err := secure.GenerateKey(nil)
			if err != nil {
				return err
			}
			owner := fmt.Sprintf("agency %d", id)
			if err := secure.WritePrivateKey(filepath.Join(dir, secure.AgencyKeyFile(id)), owner, k); err != nil {
				return err
			}
			return secure.WritePublicKey(filepath.Join(dir, secure.AgencyPubFile(id)), owner, k.Public())
		})
	}
	// Every file is fsynced: write them side by side.
	errs := make([]error, len(write))
	var wg sync.WaitGroup
	for i, w := range write {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = w() }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("write keys: %v", err)
	}

	k := &testKeys{dir: dir, agencies: make([]secure.PrivateKey, n)}
	if k.server, err = secure.LoadPublicKey(filepath.Join(dir, secure.ServerPubFile)); err != nil {
		t.Fatal(err)
	}
	if k.sign, err = secure.LoadSigningKey(filepath.Join(dir, secure.SignKeyFile)); err != nil {
		t.Fatal(err)
	}
	if k.verify, err = secure.LoadVerifyKey(filepath.Join(dir, secure.VerifyKeyFile)); err != nil {
		t.Fatal(err)
	}
	for i := range k.agencies {
		if k.agencies[i], err = secure.LoadPrivateKey(filepath.Join(dir, secure.AgencyKeyFile(uint32(i+1)))); err != nil {
			t.Fatal(err)
		}
	}
	if k.store, err = secure.OpenKeyStore(dir, n); err != nil {
		t.Fatal(err)
	}
	if k.store.Public() != k.server {
		t.Fatalf("key store serves %s, server.pub holds %s", k.store.Public(), k.server)
	}
	return k
}

// agency returns agency id's private key.
func (k *testKeys) agency(id uint32) *secure.PrivateKey { return &k.agencies[id-1] }

// rotate gives agency id the key nk: it replaces agency-I.pub and
// agency-I.key and reloads the key store, as an operator does before
// sending SIGHUP. k.agencies keeps the old key.
func (k *testKeys) rotate(t testing.TB, id uint32, nk secure.PrivateKey) {
	t.Helper()
	owner := fmt.Sprintf("agency %d", id)
	for _, name := range []string{secure.AgencyPubFile(id), secure.AgencyKeyFile(id)} {
		// The writers never replace a file: write beside it, then rename over.
		tmp := filepath.Join(k.dir, "new-"+name)
		var err error
		if strings.HasSuffix(name, ".pub") {
			err = secure.WritePublicKey(tmp, owner, nk.Public())
		} else {
			err = secure.WritePrivateKey(tmp, owner, nk)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(k.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.store.Reload(); err != nil {
		t.Fatalf("reload keys: %v", err)
	}
}

// watchedLogs is an observed zap core that also wakes waiters on every line,
// so that tests wait for a log line instead of polling the clock.
type watchedLogs struct {
	*observer.ObservedLogs
	mu      sync.Mutex
	changed chan struct{}
}

func newWatchedLogger(level zapcore.Level) (*zap.Logger, *watchedLogs) {
	core, logs := observer.New(level)
	w := &watchedLogs{ObservedLogs: logs, changed: make(chan struct{})}
	return zap.New(notifyCore{Core: core, w: w}), w
}

func (w *watchedLogs) signal() {
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

func (w *watchedLogs) wakeup() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// notifyCore signals its watchedLogs after every entry it writes.
type notifyCore struct {
	zapcore.Core
	w *watchedLogs
}

func (c notifyCore) With(fields []zapcore.Field) zapcore.Core {
	return notifyCore{Core: c.Core.With(fields), w: c.w}
}

func (c notifyCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c notifyCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	err := c.Core.Write(e, fields)
	c.w.signal()
	return err
}

// logFields is a log line's context; matches compares values as text.
type logFields map[string]any

func (f logFields) matches(want map[string]string) bool {
	for k, v := range want {
		if got, ok := f[k]; !ok || fmt.Sprint(got) != v {
			return false
		}
	}
	return true
}

// lines returns the context of every line with message msg whose fields
// include want.
func (w *watchedLogs) lines(msg string, want map[string]string) []logFields {
	var out []logFields
	for _, e := range w.FilterMessage(msg).All() {
		if f := logFields(e.ContextMap()); f.matches(want) {
			out = append(out, f)
		}
	}
	return out
}

func (w *watchedLogs) count(msg string, want map[string]string) int { return len(w.lines(msg, want)) }

// waitFor waits until cond holds, re-checking it after every log line.
func (w *watchedLogs) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timeout := time.NewTimer(itGuard)
	defer timeout.Stop()
	for {
		wake := w.wakeup()
		if cond() {
			return
		}
		select {
		case <-wake:
		case <-timeout.C:
			t.Fatalf("waited %v for %s; logs:\n%s", itGuard, what, w.dump())
		}
	}
}

// wait waits for a line with message msg whose fields include want and
// returns its fields.
func (w *watchedLogs) wait(t testing.TB, msg string, want map[string]string) logFields {
	t.Helper()
	var got logFields
	w.waitFor(t, fmt.Sprintf("a %q line with %v", msg, want), func() bool {
		ls := w.lines(msg, want)
		if len(ls) > 0 {
			got = ls[0]
		}
		return len(ls) > 0
	})
	return got
}

func (w *watchedLogs) dump() string {
	var b strings.Builder
	for _, e := range w.All() {
		fmt.Fprintf(&b, "  %s %s %v\n", e.Level, e.Message, e.ContextMap())
	}
	return b.String()
}

// failLine is the fields of a `result: fail` line, plus more.
func failLine(kv ...string) map[string]string {
	m := map[string]string{"result": "fail"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// testServer is an in-process server with its logs observed.
type testServer struct {
	*Server
	keys   *testKeys // nil when the server runs --insecure
	dir    string
	logs   *watchedLogs
	cancel context.CancelFunc
	done   chan error
}

// serverOption changes how startServer runs the server.
type serverOption func(*serverSetup)

type serverSetup struct {
	insecure bool
	keys     *testKeys
	level    zapcore.Level
}

// optInsecure runs the server --insecure: no keys, plaintext frames.
func optInsecure() serverOption { return func(s *serverSetup) { s.insecure = true } }

// optKeys runs the server with an existing key directory (a restart).
func optKeys(k *testKeys) serverOption { return func(s *serverSetup) { s.keys = k } }

// optLogLevel observes the server's logs from level on (debug by default).
func optLogLevel(l zapcore.Level) serverOption { return func(s *serverSetup) { s.level = l } }

// startServer runs a server until the test ends (or stop is called). The
// zero fields of cfg default to 127.0.0.1:0, a temp data dir, 5 agencies and
// the default winning number; unless optInsecure() is given it is secured with
// new keys for its agencies (or those of optKeys).
func startServer(t testing.TB, cfg Config, opts ...serverOption) *testServer {
	t.Helper()
	setup := serverSetup{level: zapcore.DebugLevel}
	for _, o := range opts {
		o(&setup)
	}
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
	ts := &testServer{dir: cfg.DataDir, done: make(chan error, 1)}
	if !setup.insecure {
		ts.keys = setup.keys
		if ts.keys == nil {
			ts.keys = newTestKeys(t, cfg.Agencies)
		}
		cfg.Keys, cfg.SignKey = ts.keys.store, ts.keys.sign
	}
	cfg.Logger, ts.logs = newWatchedLogger(setup.level)
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	ts.Server = srv
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- srv.Serve(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-ts.done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(itGuard):
		t.Fatal("server did not start in time")
	}
	t.Cleanup(func() { _ = ts.stop(t) })
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

// mustStop stops the server and requires a clean drain.
func (ts *testServer) mustStop(t testing.TB) {
	t.Helper()
	if err := ts.stop(t); err != nil {
		t.Fatalf("Serve returned %v, want nil after a clean drain", err)
	}
}

// verifyKey is the key receipts and commitments must verify with; nil
// (nothing checked) on an --insecure server.
func (ts *testServer) verifyKey() ed25519.PublicKey {
	if ts.keys == nil {
		return nil
	}
	return ts.keys.verify
}

// dial opens agency id's connection: the handshake with its key on a
// secured server, plaintext on an --insecure one.
func (ts *testServer) dial(id uint32) (*peer, error) {
	if ts.keys == nil {
		return dialPeer(ts.Addr(), nil, secure.PublicKey{}, nil)
	}
	return dialPeer(ts.Addr(), ts.keys.agency(id), ts.keys.server, nil)
}

// dialKey opens a connection handshaking with key.
func (ts *testServer) dialKey(key secure.PrivateKey) (*peer, error) {
	var server secure.PublicKey
	if ts.keys != nil {
		server = ts.keys.server
	}
	return dialPeer(ts.Addr(), &key, server, nil)
}

// mustDial is dial for the test goroutine; the connection closes with the test.
func (ts *testServer) mustDial(t testing.TB, id uint32) *peer {
	t.Helper()
	p, err := ts.dial(id)
	if err != nil {
		t.Fatalf("dial as agency %d: %v", id, err)
	}
	t.Cleanup(p.close)
	return p
}

// mustDialPlain opens a plaintext connection that has sent nothing yet.
func (ts *testServer) mustDialPlain(t testing.TB) *peer {
	t.Helper()
	p, err := dialPeer(ts.Addr(), nil, secure.PublicKey{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

// agencyConfig is agency.Config for agency id of ts, with short retries and
// its keys when ts is secured; log nil means a no-op logger.
func (ts *testServer) agencyConfig(id uint32, log *zap.Logger) agency.Config {
	cfg := agency.Config{
		Agency:         id,
		Servers:        []string{ts.Addr()},
		BatchMaxAmount: 50,
		RetryBase:      10 * time.Millisecond,
		RetryMax:       100 * time.Millisecond,
		GiveUp:         itGuard,
		IOTimeout:      itGuard,
		Logger:         log,
	}
	if ts.keys != nil {
		cfg.Key, cfg.ServerPub, cfg.SignPub = ts.keys.agency(id), ts.keys.server, ts.keys.verify
	}
	return cfg
}

// writeMode is how a peer puts frames on the wire.
type writeMode int

const (
	wholeFrames writeMode = iota // one Write per frame (per record when secured)
	byteByByte                   // one Write per byte of the wire, paced
	coalesced                    // all the frames of a call in one Write
)

func (m writeMode) String() string {
	return [...]string{"whole_frames", "byte_by_byte", "coalesced"}[m]
}

// tapConn is the peer's TCP connection. It can pace writes one byte at a
// time, or capture what is written instead of sending it, so that a test
// can handle the exact wire bytes of sealed records. Not for concurrent
// writers.
type tapConn struct {
	net.Conn
	paced   bool
	capture *[]byte
}

func (c *tapConn) Write(b []byte) (int, error) {
	if c.capture != nil {
		*c.capture = append(*c.capture, b...)
		return len(b), nil
	}
	if !c.paced {
		return c.Conn.Write(b)
	}
	for i := range b {
		if _, err := c.Conn.Write(b[i : i+1]); err != nil {
			return i, err
		}
		time.Sleep(20 * time.Microsecond) // pacing, so that the server sees the bytes in many reads
	}
	return len(b), nil
}

// peer is a test client speaking frames, inside the secured transport when
// it has a key. Its methods return errors, so many peers can run in
// goroutines; the package-level expect helpers fail the test instead.
type peer struct {
	tap  *tapConn
	sc   *secure.ClientConn // nil for a plaintext peer
	src  frame.Source
	dec  frame.Decoder
	mode writeMode
}

// dialPeer connects to addr and, with a key, performs the handshake with a
// server whose static key is server. A server refusing the handshake makes
// it return a *secure.RefusedError. dialer nil means a plain TCP dial.
func dialPeer(addr string, key *secure.PrivateKey, server secure.PublicKey, dialer *net.Dialer) (*peer, error) {
	if dialer == nil {
		dialer = &net.Dialer{Timeout: itGuard}
	}
	nc, err := dialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &peer{tap: &tapConn{Conn: nc}}
	if key == nil {
		p.src = bufio.NewReaderSize(nc, frame.MaxSize)
		return p, nil
	}
	if p.sc, err = secure.Client(p.tap, *key, server, itGuard); err != nil {
		nc.Close()
		return nil, &handshakeError{local: nc.LocalAddr().String(), err: err}
	}
	p.src = p.sc
	return p, nil
}

// handshakeError is a failed handshake, with the local address of its
// connection, which the server's log lines name.
type handshakeError struct {
	local string
	err   error
}

func (e *handshakeError) Error() string { return "handshake from " + e.local + ": " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

func (p *peer) close() { p.tap.Close() }

// localAddr is the peer's address, as the server's log lines name it.
func (p *peer) localAddr() string { return p.tap.LocalAddr().String() }

// sendEncoded sends whole encoded frames: as they are when plaintext, one
// sealed record per frame when secured, in a single Write of the connection.
func (p *peer) sendEncoded(b []byte) error {
	p.tap.SetWriteDeadline(time.Now().Add(itGuard))
	var err error
	if p.sc != nil {
		_, err = p.sc.Write(b)
	} else {
		_, err = p.tap.Write(b)
	}
	return err
}

// write sends frames as p.mode says.
func (p *peer) write(fs ...frame.Frame) error {
	p.tap.paced = p.mode == byteByByte
	defer func() { p.tap.paced = false }()
	var b []byte
	for _, f := range fs {
		var err error
		if b, err = frame.Append(b, f); err != nil {
			return err
		}
		if p.mode == coalesced {
			continue
		}
		if err := p.sendEncoded(b); err != nil {
			return err
		}
		b = b[:0]
	}
	if len(b) == 0 {
		return nil
	}
	return p.sendEncoded(b)
}

// wire returns the bytes that sending the encoded frames b would put on the
// connection, without sending them. On a secured peer the records are
// sealed, so they must be sent, in order, before anything else.
func (p *peer) wire(b []byte) ([]byte, error) {
	if p.sc == nil {
		return append([]byte(nil), b...), nil
	}
	var out []byte
	p.tap.capture = &out
	defer func() { p.tap.capture = nil }()
	if _, err := p.sc.Write(b); err != nil {
		return nil, err
	}
	return out, nil
}

// sendRaw writes bytes to the connection as they are.
func (p *peer) sendRaw(b []byte) error {
	p.tap.SetWriteDeadline(time.Now().Add(itGuard))
	_, err := p.tap.Conn.Write(b)
	return err
}

// read returns the next frame; the deadline only guards against a hang.
func (p *peer) read() (frame.Frame, error) {
	return p.readWithin(itGuard)
}

func (p *peer) readWithin(d time.Duration) (frame.Frame, error) {
	p.tap.SetReadDeadline(time.Now().Add(d))
	return p.dec.Next(p.src)
}

// readAs reads the next frame and requires it to be a T.
func readAs[T frame.Frame](p *peer) (T, error) {
	var zero T
	f, err := p.read()
	if err != nil {
		return zero, fmt.Errorf("want %T: %w", zero, err)
	}
	v, ok := f.(T)
	if !ok {
		return zero, fmt.Errorf("want %T, got %s %s", zero, f.Type(), brief(f))
	}
	return v, nil
}

// brief shows a frame briefly, with an ERROR's or REJECT's code.
func brief(f frame.Frame) string {
	switch f := f.(type) {
	case *frame.Error:
		return fmt.Sprintf("{%s: %s}", f.Code, f.Reason)
	case *frame.Reject:
		return fmt.Sprintf("{%s at %d: %s}", f.Code, f.Index, f.Reason)
	case *frame.Winners:
		return fmt.Sprintf("{last %t, %d documents}", f.Last, len(f.Documents))
	}
	return fmt.Sprintf("%+v", f)
}

// waitClosed reads until the server's close: EOF, or a reset when the
// server closed with bytes of ours unread. Any frame is an error.
func (p *peer) waitClosed() error {
	f, err := p.read()
	switch {
	case err == nil:
		return fmt.Errorf("expected the connection closed, got %s %s", f.Type(), brief(f))
	case isClosed(err):
		return nil
	}
	return fmt.Errorf("expected the connection closed, got %w", err)
}

// isClosed says whether err means the server closed the connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// readError reads an ERROR, requires it to carry code, then requires the
// server to close the connection.
func (p *peer) readError(code frame.Code) error {
	e, err := readAs[*frame.Error](p)
	if err != nil {
		return err
	}
	if e.Code != code {
		return fmt.Errorf("ERROR %s (%q), want %s", e.Code, e.Reason, code)
	}
	if err := p.waitClosed(); err != nil {
		return fmt.Errorf("after ERROR %s: %w", e.Code, err)
	}
	return nil
}

// expectFrame reads the next frame and fails the test unless it is a T.
func expectFrame[T frame.Frame](t testing.TB, p *peer) T {
	t.Helper()
	v, err := readAs[T](p)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// expectError reads an ERROR with code and then the server's close.
func expectError(t testing.TB, p *peer, code frame.Code) {
	t.Helper()
	if err := p.readError(code); err != nil {
		t.Fatal(err)
	}
}

// mustWrite sends frames or fails the test.
func mustWrite(t testing.TB, p *peer, fs ...frame.Frame) {
	t.Helper()
	if err := p.write(fs...); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// mustPing sends a PING and requires its PONG next.
func mustPing(t testing.TB, p *peer, payload string) {
	t.Helper()
	mustWrite(t, p, &frame.Ping{Payload: []byte(payload)})
	if pong := expectFrame[*frame.Pong](t, p); string(pong.Payload) != payload {
		t.Fatalf("PONG %q, want %q", pong.Payload, payload)
	}
}
