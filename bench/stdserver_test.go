package bench

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
)

func hello(t *testing.T, p *peer, id uint32) {
	t.Helper()
	p.send(&frame.Hello{Agency: id})
	if w, ok := p.recv().(*frame.Welcome); !ok || w.Held != 0 {
		t.Fatalf("HELLO answered with %+v, want WELCOME holding 0", w)
	}
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
	if _, err := p.dec.Next(p.r); !errors.Is(err, io.EOF) {
		t.Errorf("after the drain: %v, want the connection closed", err)
	}
}

func TestStdServerRefusesBeyondMaxConns(t *testing.T) {
	cfg := testConfig(t, 3)
	cfg.MaxConns = 1
	srv := startStd(t, cfg)
	first := dialPeer(t, srv.addr)
	hello(t, first, 1)
	second := dialPeer(t, srv.addr)
	second.expectError(frame.CodeTooManyConns)
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestStdServerTimesOutASilentPeer(t *testing.T) {
	cfg := testConfig(t, 1)
	cfg.ReadTimeout = 150 * time.Millisecond
	srv := startStd(t, cfg)
	p := dialPeer(t, srv.addr)
	began := time.Now()
	p.expectError(frame.CodeTimeout)
	if took := time.Since(began); took < 100*time.Millisecond {
		t.Errorf("timed out after %v, before the 150ms read timeout", took)
	}
	// Waiting for the draw is not a timeout: a finished agency may stay silent.
	cfg2 := testConfig(t, 2)
	cfg2.ReadTimeout = 150 * time.Millisecond
	srv2 := startStd(t, cfg2)
	q := dialPeer(t, srv2.addr)
	hello(t, q, 1)
	q.send(&frame.Finished{Total: 0})
	if _, ok := q.recv().(*frame.NotReady); !ok {
		t.Fatal("FINISHED not answered with NOT_READY")
	}
	q.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if f, err := q.dec.Next(q.r); err == nil {
		t.Fatalf("a waiting agency got %s; it should be left alone", f.Type())
	}
	for _, s := range []*inProcess{srv, srv2} {
		if err := s.stop(t); err != nil {
			t.Fatal(err)
		}
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
	bets, err := agency.SyntheticBets(agency.SynthOptions{Agency: 2, Bets: 3, WinningNumber: 7574, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
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
		if _, ok := f.(*frame.NotReady); !ok {
			t.Fatalf("got %s, want NOT_READY or WINNERS", f.Type())
		}
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
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
	for _, args := range [][]string{{"--agencies", "0"}, {"--winning-number", "10000"}, {"--max-conns", "0"}, {"--bogus"},
		{"--log-level", "loud"}} {
		var stdout, stderr strings.Builder
		if code := ServeStdlib(args, &stdout, &stderr, nil); code != 2 || stderr.Len() == 0 {
			t.Errorf("serve-stdlib %v: exit %d, stderr %q; want 2 and a message", args, code, stderr.String())
		}
	}
}
