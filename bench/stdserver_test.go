package bench

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/secure"
)

func someBets(t *testing.T, id uint32, n int) []frame.Bet {
	t.Helper()
	bets, err := agency.SyntheticBets(agency.SynthOptions{Agency: id, Bets: n, WinningNumber: 7574, Seed: int64(id)})
	if err != nil {
		t.Fatal(err)
	}
	return bets
}

// heldBets is what a fresh connection of agency id learns the store holds.
func heldBets(t *testing.T, addr string, id uint32) uint64 {
	t.Helper()
	p := dialPeer(t, addr)
	p.send(&frame.Hello{Agency: id})
	w, ok := p.recv().(*frame.Welcome)
	if !ok {
		t.Fatalf("HELLO answered with %+v", w)
	}
	p.nc.Close()
	return w.Held
}

// syncGate blocks the store's fsyncs of bets.csv while it is armed, and
// numbers them.
type syncGate struct {
	armed   atomic.Bool
	count   atomic.Int64
	entered chan struct{}
	release chan struct{}
}

func newSyncGate() *syncGate {
	return &syncGate{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (g *syncGate) sync(f *os.File) error {
	if filepath.Base(f.Name()) == filestore.BetsFile {
		if g.armed.Load() {
			g.entered <- struct{}{}
			<-g.release
		}
		g.count.Add(1)
	}
	return f.Sync()
}

func TestStdServerDrainsOnShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := startStd(t, testConfig(t, 2))
	p := dialPeer(t, srv.addr)
	hello(t, p, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.stop(t) }()
	p.expectError(frame.CodeShuttingDown)
	if err := <-errc; err != nil {
		t.Fatalf("drain: %v", err)
	}
	if _, err := p.dec.Next(p.src); !errors.Is(err, io.EOF) {
		t.Errorf("after the drain: %v, want the connection closed", err)
	}
}

// TestStdServerDrainFinishesTheBatchInFlight stops the server while a batch
// waits for its fsync: the agency gets the ACK, then ERROR shutting_down,
// and the batch is in the store.
func TestStdServerDrainFinishesTheBatchInFlight(t *testing.T) {
	gate := newSyncGate()
	cfg := testConfig(t, 2)
	cfg.StoreSync = gate.sync
	srv := startStd(t, cfg)
	p := dialPeer(t, srv.addr)
	hello(t, p, 1)
	gate.armed.Store(true)
	p.send(&frame.Bets{First: 0, Bets: someBets(t, 1, 5)})
	<-gate.entered
	errc := make(chan error, 1)
	go func() { errc <- srv.stop(t) }()
	time.Sleep(100 * time.Millisecond) // the drain has begun and waits for the batch
	gate.armed.Store(false)
	close(gate.release)
	if a, ok := p.recv().(*frame.Ack); !ok || a.Held != 5 {
		t.Fatalf("the batch in flight was answered with %+v, want its ACK", a)
	}
	p.expectError(frame.CodeShuttingDown)
	if err := <-errc; err != nil {
		t.Fatalf("drain: %v", err)
	}
	restart := testConfig(t, 2)
	restart.DataDir = cfg.DataDir
	again := startStd(t, restart)
	if held := heldBets(t, again.addr, 1); held != 5 {
		t.Errorf("after the drain the store holds %d bets of agency 1, want 5", held)
	}
}

// TestStdServerKeepsTheWindow blocks the first commit, sends three times
// the window at once, and checks that no group commit ever holds more
// batches than the window: the session takes no frame while it is full.
func TestStdServerKeepsTheWindow(t *testing.T) {
	const window, batches = 3, 9
	gate := newSyncGate()
	var mu sync.Mutex
	groups := map[int64]int{} // batches per commit, by the bets.csv fsyncs done before it
	cfg := testConfig(t, 1)
	cfg.Window = window
	cfg.StoreSync = gate.sync
	cfg.Tamper = func(uint32, uint64, []frame.Bet) {
		mu.Lock()
		groups[gate.count.Load()]++
		mu.Unlock()
	}
	srv := startStd(t, cfg)
	p := dialPeer(t, srv.addr)
	if w := hello(t, p, 1); w.Window != window {
		t.Fatalf("WELCOME window %d, want %d", w.Window, window)
	}
	bets := someBets(t, 1, batches*4)
	var wire []byte
	for i := range batches {
		b, err := frame.Encode(&frame.Bets{First: uint64(4 * i), Bets: bets[4*i : 4*i+4]})
		if err != nil {
			t.Fatal(err)
		}
		wire = append(wire, b...)
	}
	gate.armed.Store(true)
	if _, err := p.nc.Write(wire); err != nil {
		t.Fatal(err)
	}
	<-gate.entered
	time.Sleep(200 * time.Millisecond) // every frame has arrived; the window decides how many were taken
	gate.armed.Store(false)
	close(gate.release)
	for i := range batches {
		a, ok := p.recv().(*frame.Ack)
		if !ok || a.First != uint64(4*i) || a.Held != uint64(4*i+4) {
			t.Fatalf("answer %d: %+v, want the ACK of bets %d+4", i, a, 4*i)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for g, n := range groups {
		total += n
		if n > window {
			t.Errorf("commit %d held %d batches, more than the window of %d", g, n, window)
		}
	}
	if total != batches {
		t.Errorf("%d batches committed, want %d", total, batches)
	}
}

func TestStdServerRefusesBeyondItsConnections(t *testing.T) {
	cfg := testConfig(t, 1)
	cfg.MaxPending = 1 // one agency and one connection before HELLO
	srv := startStd(t, cfg)
	first := dialPeer(t, srv.addr)
	hello(t, first, 1)
	second := dialPeer(t, srv.addr)
	second.send(&frame.Ping{Payload: []byte("x")})
	if _, ok := second.recv().(*frame.Pong); !ok {
		t.Fatal("the second connection was not served")
	}
	third := dialPeer(t, srv.addr)
	third.expectError(frame.CodeTooManyConns)
}

func TestStdServerTimeouts(t *testing.T) {
	cfg := testConfig(t, 2)
	cfg.HelloTimeout = 150 * time.Millisecond
	cfg.ReadTimeout = 250 * time.Millisecond
	srv := startStd(t, cfg)

	// No HELLO: the hello timeout, counted from the connection's start.
	p := dialPeer(t, srv.addr)
	began := time.Now()
	p.send(&frame.Ping{Payload: []byte("keep me")}) // a PING does not extend it
	if _, ok := p.recv().(*frame.Pong); !ok {
		t.Fatal("PING not answered")
	}
	p.expectError(frame.CodeTimeout)
	if took := time.Since(began); took < 120*time.Millisecond || took > 2*time.Second {
		t.Errorf("timed out after %v, want about the 150ms hello timeout", took)
	}

	// HELLO, then silence while uploading: the read timeout.
	q := dialPeer(t, srv.addr)
	hello(t, q, 1)
	began = time.Now()
	q.expectError(frame.CodeTimeout)
	if took := time.Since(began); took < 200*time.Millisecond {
		t.Errorf("timed out after %v, before the 250ms read timeout", took)
	}
}

// TestStdServerLiveness checks the PINGs of an agency waiting for the draw:
// answered, the connection stays; unanswered, it ends with ERROR timeout.
func TestStdServerLiveness(t *testing.T) {
	cfg := testConfig(t, 2)
	cfg.PingInterval = 100 * time.Millisecond
	cfg.ReadTimeout = 600 * time.Millisecond
	srv := startStd(t, cfg)
	p := dialPeer(t, srv.addr)
	hello(t, p, 1)
	p.send(&frame.Finished{Total: 0})
	if _, ok := p.recv().(*frame.Receipt); !ok {
		t.Fatal("FINISHED not answered with RECEIPT")
	}
	if _, ok := p.recv().(*frame.NotReady); !ok {
		t.Fatal("FINISHED not answered with NOT_READY")
	}
	var last time.Time
	began := time.Now()
	for i := range 4 {
		ping, ok := p.recv().(*frame.Ping)
		if !ok {
			t.Fatalf("waiting agency got %+v, want PING %d", ping, i+1)
		}
		if !last.IsZero() && time.Since(last) < 80*time.Millisecond {
			t.Errorf("PING %d came %v after the PONG, before the 100ms interval", i+1, time.Since(last))
		}
		p.send(&frame.Pong{Payload: ping.Payload})
		last = time.Now()
	}
	if took := time.Since(began); took > 1500*time.Millisecond {
		t.Errorf("4 PINGs took %v; every 100ms of silence is 400ms", took)
	}
	// Silence now: the next PING goes unanswered.
	if _, ok := p.recv().(*frame.Ping); !ok {
		t.Fatal("no PING after the last PONG")
	}
	began = time.Now()
	p.expectError(frame.CodeTimeout)
	if took := time.Since(began); took < 500*time.Millisecond {
		t.Errorf("an unanswered PING timed out after %v, before the 600ms read timeout", took)
	}
}

func TestStdServerAnswersBadInput(t *testing.T) {
	srv := startStd(t, testConfig(t, 2))

	p := dialPeer(t, srv.addr)
	if _, err := p.nc.Write([]byte{9, byte(frame.TypeHello), 0, 4, 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	p.expectError(frame.CodeVersion)

	// An invalid bet refuses the batch but keeps the session.
	q := dialPeer(t, srv.addr)
	hello(t, q, 2)
	bets := someBets(t, 2, 3)
	bad := append([]frame.Bet(nil), bets...)
	bad[1].Document = "12ab"
	q.send(&frame.Bets{First: 0, Bets: bad})
	if r, ok := q.recv().(*frame.Reject); !ok || r.Code != frame.CodeInvalidBet || r.Index != 1 {
		t.Fatalf("invalid bet answered with %+v, want REJECT invalid_bet at 1", r)
	}
	q.send(&frame.Bets{First: 0, Bets: bets})
	if a, ok := q.recv().(*frame.Ack); !ok || a.Count != 3 {
		t.Fatalf("valid batch answered with %+v, want ACK of 3", a)
	}
	q.send(&frame.Ping{Payload: []byte("x")})
	if pong, ok := q.recv().(*frame.Pong); !ok || string(pong.Payload) != "x" {
		t.Fatalf("PING answered with %+v", pong)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestStdServerReplacesAnOlderConnection(t *testing.T) {
	srv := startStd(t, testConfig(t, 1))
	old := dialPeer(t, srv.addr)
	hello(t, old, 1)
	newer := dialPeer(t, srv.addr)
	hello(t, newer, 1)
	old.expectError(frame.CodeReplaced)
	newer.send(&frame.Finished{Total: 0})
	// The only agency finished: the draw runs and its (empty) winners come.
	for {
		f := newer.recv()
		if w, ok := f.(*frame.Winners); ok {
			if !w.Last || len(w.Documents) != 0 {
				t.Fatalf("WINNERS %+v, want one empty last chunk", w)
			}
			break
		}
		switch f.(type) {
		case *frame.Receipt, *frame.NotReady, *frame.Commitment:
		default:
			t.Fatalf("got %s, want RECEIPT, COMMITMENT, then WINNERS", f.Type())
		}
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
}

// flipConn flips one byte of what is written through it, at offset at of
// the stream.
type flipConn struct {
	net.Conn
	at, written int
}

func (c *flipConn) Write(p []byte) (int, error) {
	if i := c.at - c.written; i >= 0 && i < len(p) {
		p = append([]byte(nil), p...)
		p[i] ^= 0x40
	}
	c.written += len(p)
	return c.Conn.Write(p)
}

func TestStdServerSecured(t *testing.T) {
	keys := testKeys(t)
	srv := startStd(t, secureConfig(t, 2, keys))

	t.Run("plaintext may only PING", func(t *testing.T) {
		p := dialPeer(t, srv.addr)
		p.send(&frame.Ping{Payload: []byte("health")})
		if pong, ok := p.recv().(*frame.Pong); !ok || string(pong.Payload) != "health" {
			t.Fatalf("plaintext PING answered with %+v", pong)
		}
		p.send(&frame.Hello{Agency: 1})
		p.expectError(frame.CodeSecureRequired)
	})
	t.Run("an agency's upload", func(t *testing.T) {
		p := dialSecure(t, srv.addr, keys, 1)
		hello(t, p, 1)
		p.send(&frame.Bets{First: 0, Bets: someBets(t, 1, 4)})
		if a, ok := p.recv().(*frame.Ack); !ok || a.Held != 4 {
			t.Fatalf("BETS answered with %+v", a)
		}
	})
	t.Run("unknown key", func(t *testing.T) {
		p := dialPeer(t, srv.addr)
		_, err := secure.Client(p.nc, keys.key(3), keys.Server, 0) // the server knows agencies 1 and 2
		var refused *secure.RefusedError
		if !errors.As(err, &refused) || refused.Code != frame.CodeUnknownKey {
			t.Fatalf("handshake with agency 3's key: %v, want ERROR unknown_key", err)
		}
	})
	t.Run("HELLO for another agency", func(t *testing.T) {
		p := dialSecure(t, srv.addr, keys, 2)
		p.send(&frame.Hello{Agency: 1})
		p.expectError(frame.CodeWrongAgency)
	})
	t.Run("a flipped byte closes without an answer", func(t *testing.T) {
		p := dialPeer(t, srv.addr)
		// Message 1 (99 bytes) and the HELLO record (27) go through; the
		// BETS record's ciphertext is flipped.
		fc := &flipConn{Conn: p.nc, at: secure.HeaderSize + secure.Handshake1Size + secure.HeaderSize + 8 + secure.TagSize + 10}
		sc, err := secure.Client(fc, keys.key(2), keys.Server, 0)
		if err != nil {
			t.Fatal(err)
		}
		p.src, p.w = sc, sc
		hello(t, p, 2)
		p.send(&frame.Bets{First: 0, Bets: someBets(t, 2, 4)})
		if f, err := p.dec.Next(p.src); err == nil || !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("after a corrupted record: %v, %v; want the connection closed without an answer", f, err)
		}
		if held := heldAfterHandshake(t, srv.addr, keys, 2); held != 0 {
			t.Errorf("the store holds %d bets of the corrupted batch", held)
		}
	})
}

// heldAfterHandshake is what a fresh secured connection of agency id learns
// the store holds.
func heldAfterHandshake(t *testing.T, addr string, k *keyring, id uint32) uint64 {
	t.Helper()
	p := dialSecure(t, addr, k, id)
	p.send(&frame.Hello{Agency: id})
	w, ok := p.recv().(*frame.Welcome)
	if !ok {
		t.Fatalf("HELLO answered with %+v", w)
	}
	p.nc.Close()
	return w.Held
}

func TestStdServerRefusesAHandshakeWhenInsecure(t *testing.T) {
	keys := testKeys(t)
	srv := startStd(t, testConfig(t, 2))
	p := dialPeer(t, srv.addr)
	_, err := secure.Client(p.nc, keys.key(1), keys.Server, 0)
	var refused *secure.RefusedError
	if !errors.As(err, &refused) || refused.Code != frame.CodeInsecureServer {
		t.Fatalf("handshake with an --insecure server: %v, want ERROR insecure_server", err)
	}
}

func TestStdServerStartErrors(t *testing.T) {
	cfg := testConfig(t, 1)
	cfg.Agencies = 0
	if _, err := NewStdServer(cfg); err == nil {
		t.Error("a store for 0 agencies opened")
	}
	srv, err := NewStdServer(eventserver.Config{Listen: "127.0.0.1:-1", Agencies: 1, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(t.Context()); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Serve on a bad address = %v, want a listen error", err)
	}
}

func TestServeStdlibRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--insecure", "--agencies", "0"}, {"--insecure", "--winning-number", "10000"}, {"--insecure", "--window", "0"},
		{"--insecure", "--bogus"}, {"--insecure", "--log-level", "loud"},
		{"--agencies", "3"}, // neither --keys nor --insecure
		{"--keys", "/nonexistent/keys", "--agencies", "3"}, // no key files there
	} {
		var stdout, stderr strings.Builder
		if code := ServeStdlib(args, &stdout, &stderr, nil); code != 2 || stderr.Len() == 0 {
			t.Errorf("serve-stdlib %v: exit %d, stderr %q; want 2 and a message", args, code, stderr.String())
		}
	}
}
