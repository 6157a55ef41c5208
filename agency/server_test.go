package agency_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist/filestore"
	"github.com/tp0/loteria/receipt"
	"github.com/tp0/loteria/secure"
)

// These tests run the agency against a real event server in the process,
// secured with fresh keys unless a case says otherwise. They run in
// parallel (a server takes half a second to stop), so they check for
// leaked goroutines through TestMain rather than each on its own.

const winning = eventserver.DefaultWinningNumber

// courseLike returns agency a's synthetic bets, shaped like the course's
// files, with the given number of winners.
func courseLike(t testing.TB, a uint32, n, winners int) []frame.Bet {
	t.Helper()
	bets, err := agency.SyntheticBets(agency.SynthOptions{Agency: a, Bets: n, Winners: winners, WinningNumber: winning, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	return bets
}

// courseFile writes bets as the course's CSV (CRLF, quoting where needed)
// and returns its path.
func courseFile(t testing.TB, a uint32, bets []frame.Bet) string {
	t.Helper()
	var buf bytes.Buffer
	if err := agency.WriteBetsCSV(&buf, bets); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), fmt.Sprintf("agency-%d.csv", a))
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// storedBets reads a stopped server's bets.csv, by agency.
func storedBets(t testing.TB, dir string) map[uint32][]frame.Bet {
	t.Helper()
	out := map[uint32][]frame.Bet{}
	for b, err := range filestore.LoadBetsFile(filepath.Join(dir, filestore.BetsFile)) {
		if err != nil {
			t.Fatal(err)
		}
		out[b.Agency] = append(out[b.Agency], b.Bet)
	}
	return out
}

// tap wraps the connections an agency dials: it counts dials, reports the
// size of every write, can break a connection in the middle of a write and
// can cut the connection in use.
type tap struct {
	breakAt int // the write (1-based, all connections counted) that breaks its connection; 0: none
	writes  chan int

	mu     sync.Mutex
	dials  int
	nWrite int
	conns  []net.Conn
}

func newTap() *tap { return &tap{writes: make(chan int, 4096)} }

func (tp *tap) install(cfg *agency.Config) {
	d := net.Dialer{Timeout: hangGuard}
	cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		tp.mu.Lock()
		defer tp.mu.Unlock()
		tp.dials++
		if err != nil {
			return nil, err
		}
		tp.conns = append(tp.conns, c)
		return &tapConn{Conn: c, tap: tp}, nil
	}
}

func (tp *tap) dialCount() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.dials
}

// cut closes the connection dialled last.
func (tp *tap) cut() {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.conns[len(tp.conns)-1].Close()
}

type tapConn struct {
	net.Conn
	tap *tap
}

func (c *tapConn) Write(p []byte) (int, error) {
	c.tap.mu.Lock()
	c.tap.nWrite++
	broken := c.tap.nWrite == c.tap.breakAt
	c.tap.mu.Unlock()
	if broken {
		n, _ := c.Conn.Write(p[:len(p)/2])
		c.Conn.Close()
		m, err := c.Conn.Write(p[len(p)/2:])
		return n + m, err
	}
	n, err := c.Conn.Write(p)
	select {
	case c.tap.writes <- n:
	default:
	}
	return n, err
}

// agencyRun is one agency of a lottery run against a real server.
type agencyRun struct {
	id   uint32
	bets []frame.Bet
	cfg  agency.Config
	src  *countingSource
	log  *syncBuffer
}

func newAgencyRun(t *testing.T, rs *realServer, ks *keySet, id uint32, bets []frame.Bet) *agencyRun {
	t.Helper()
	log, buf := testLogger(t)
	cfg := agency.Config{Agency: id, Servers: []string{rs.Addr()}, BatchMaxAmount: 100, RetryBase: 5 * time.Millisecond,
		RetryMax: 50 * time.Millisecond, GiveUp: hangGuard, IOTimeout: hangGuard, Logger: log}
	if ks != nil {
		cfg = ks.secured(cfg, id)
	}
	path := courseFile(t, id, bets)
	cfg.ReceiptFile = path + ".receipt.json"
	src, err := agency.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return &agencyRun{id: id, bets: bets, cfg: cfg, src: &countingSource{Source: src}, log: buf}
}

// check verifies an agency's result: its winners, its receipt (signed when
// the server has keys) and the receipt file with the root.
func (a *agencyRun) check(t *testing.T, o outcome, ks *keySet) {
	t.Helper()
	if o.err != nil {
		t.Fatalf("agency %d: %v", a.id, o.err)
	}
	if o.res.Bets != uint64(len(a.bets)) || !slices.Equal(o.res.Winners, winnersOf(a.bets, winning)) {
		t.Errorf("agency %d: %d bets, winners %v; want %d, %v", a.id, o.res.Bets, o.res.Winners, len(a.bets), winnersOf(a.bets, winning))
	}
	r := o.res.Receipt
	if r == nil || r.Agency != a.id || r.Bets != uint64(len(a.bets)) || r.Chain != receipt.ChainOf(a.bets) {
		t.Fatalf("agency %d: receipt %+v", a.id, r)
	}
	if ks != nil {
		if err := r.Verify(ks.signPub); err != nil {
			t.Errorf("agency %d: receipt: %v", a.id, err)
		}
	} else if r.Signature != (frame.Signature{}) {
		t.Errorf("agency %d: an insecure server signed its receipt", a.id)
	}
	f, err := receipt.ReadFile(a.cfg.ReceiptFile)
	if err != nil || f.Receipt != *r || f.Root == nil || *f.Root != o.res.Root {
		t.Errorf("agency %d: receipt file %+v, %v; want the receipt and root %x", a.id, f, err, o.res.Root)
	}
	if n := a.src.rewinds.Load(); n != 0 {
		t.Errorf("agency %d read its file from the start %d times", a.id, n)
	}
}

// Three agencies, secured and not: batches cut to the server's max_frame,
// pipelined up to its window, two agencies holding for the push and one
// polling; every agency gets its winners, a receipt for exactly its file
// and the same root, and bets.csv holds exactly the files.
func TestUploadToServer(t *testing.T) {
	t.Parallel()
	for _, secured := range []bool{true, false} {
		name := map[bool]string{true: "secure", false: "insecure"}[secured]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var ks *keySet
			if secured {
				ks = newKeySet(t, 3)
			}
			rs := startServer(t, eventserver.Config{Agencies: 3, Window: 4, MaxFrame: 2048}, ks)
			runs := []*agencyRun{
				newAgencyRun(t, rs, ks, 1, courseLike(t, 1, 700, 3)),
				newAgencyRun(t, rs, ks, 2, courseLike(t, 2, 450, 2)),
				newAgencyRun(t, rs, ks, 3, courseLike(t, 3, 90, 0)),
			}
			runs[2].cfg.Wait = agency.WaitPoll
			var done []<-chan outcome
			for _, a := range runs {
				done = append(done, runAsync(context.Background(), a.cfg, a.src))
			}
			var root frame.Hash
			for i, a := range runs {
				o := wait(t, done[i])
				a.check(t, o, ks)
				if i == 0 {
					root = o.res.Root
				}
				if o.res.Root != root || root == (frame.Hash{}) {
					t.Errorf("agency %d: root %x, agency 1 has %x", a.id, o.res.Root, root)
				}
				if !hasLine(a.log.String(), fmt.Sprintf(`consulta_ganadores \| result: success \| agency: %d \| cant_ganadores: %d \| root: %x.*`,
					a.id, len(o.res.Winners), root)) {
					t.Errorf("agency %d: no consulta_ganadores line with the root", a.id)
				}
			}
			rs.stop(t)
			stored := storedBets(t, rs.dir)
			for _, a := range runs {
				sameBets(t, stored[a.id], a.bets)
			}
		})
	}
}

// An agency holding for the draw answers every PING of the server: with a
// read timeout far shorter than the wait, the server would otherwise close
// the connection, and the agency would reconnect.
func TestHoldAnswersServerPings(t *testing.T) {
	t.Parallel()
	ks := newKeySet(t, 2)
	rs := startServer(t, eventserver.Config{Agencies: 2, PingInterval: 20 * time.Millisecond, ReadTimeout: 400 * time.Millisecond}, ks)
	first := newAgencyRun(t, rs, ks, 1, courseLike(t, 1, 300, 2))
	tp := newTap()
	tp.install(&first.cfg)
	done := runAsync(context.Background(), first.cfg, first.src)
	first.log.await(t, `consulta_ganadores \| result: in_progress \| agency: 1 .* \| wait: hold`)
	for len(tp.writes) > 0 { // what the agency wrote before it held
		<-tp.writes
	}
	// The server PINGs at its tick (read timeout / 4 here, 100 ms): eight
	// PONGs take longer than an unanswered PING would last (420 ms).
	const pongSize = secure.HeaderSize + frame.HeaderSize + 8 + secure.TagSize // the server's PING carries 8 bytes
	for i := range 8 {
		select {
		case n := <-tp.writes:
			if n != pongSize {
				t.Fatalf("write %d while holding is %d bytes, want a PONG record of %d", i, n, pongSize)
			}
		case <-time.After(hangGuard):
			t.Fatal("the agency stopped answering PINGs")
		}
	}
	second := newAgencyRun(t, rs, ks, 2, courseLike(t, 2, 50, 1))
	o2 := run(t, second.cfg, second.src)
	second.check(t, o2, ks)
	o1 := wait(t, done)
	first.check(t, o1, ks)
	if tp.dialCount() != 1 {
		t.Errorf("the holding agency connected %d times, want 1", tp.dialCount())
	}
}

// A connection that breaks in the middle of a write (half a record on the
// wire) is resumed from WELCOME's held, which is always where a batch the
// agency sent ends: the agency restores that checkpoint and never reads its
// file from the start again.
func TestReconnectResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	for _, breakAt := range []int{3, 4, 6} {
		t.Run(fmt.Sprint("write ", breakAt), func(t *testing.T) {
			t.Parallel()
			ks := newKeySet(t, 1)
			rs := startServer(t, eventserver.Config{Agencies: 1, Window: 4}, ks)
			a := newAgencyRun(t, rs, ks, 1, courseLike(t, 1, 1500, 4))
			a.cfg.BatchMaxAmount = 50
			tp := newTap()
			tp.breakAt = breakAt
			tp.install(&a.cfg)
			o := run(t, a.cfg, a.src)
			a.check(t, o, ks)
			if tp.dialCount() < 2 {
				t.Errorf("%d connections, want a reconnect", tp.dialCount())
			}
			if a.src.seeks.Load() < 2 {
				t.Errorf("%d seeks, want one per session", a.src.seeks.Load())
			}
			rs.stop(t)
			sameBets(t, storedBets(t, rs.dir)[1], a.bets)
		})
	}
}

// An agency holding for the draw whose connection drops reconnects, asks
// for its winners (QUERY_WINNERS) and holds again until the push.
func TestHoldReconnects(t *testing.T) {
	t.Parallel()
	ks := newKeySet(t, 2)
	rs := startServer(t, eventserver.Config{Agencies: 2}, ks)
	first := newAgencyRun(t, rs, ks, 1, courseLike(t, 1, 200, 1))
	tp := newTap()
	tp.install(&first.cfg)
	done := runAsync(context.Background(), first.cfg, first.src)
	first.log.await(t, `consulta_ganadores \| result: in_progress \| agency: 1 .* \| wait: hold`)
	tp.cut()
	first.log.await(t, `hello \| result: success \| agency: 1 \| server: \S+ \| held: 200 \| finished: true \| .*`)
	second := newAgencyRun(t, rs, ks, 2, courseLike(t, 2, 30, 0))
	second.check(t, run(t, second.cfg, second.src), ks)
	o := wait(t, done)
	first.check(t, o, ks)
	if tp.dialCount() != 2 {
		t.Errorf("%d connections, want 2", tp.dialCount())
	}
}

// A bet changed between the server's decoder and its disk (the store's
// fault hook) is caught at the next ACK: the chains differ, the agency
// stops with ErrChain and does not retry.
func TestTamperedBetStopsTheAgency(t *testing.T) {
	t.Parallel()
	ks := newKeySet(t, 1)
	tamper := func(a uint32, first uint64, bets []frame.Bet) {
		if first <= 120 && 120 < first+uint64(len(bets)) {
			bets[120-first].LastName = "Mallory"
		}
	}
	rs := startServer(t, eventserver.Config{Agencies: 1, Tamper: tamper}, ks)
	a := newAgencyRun(t, rs, ks, 1, courseLike(t, 1, 400, 1))
	tp := newTap()
	tp.install(&a.cfg)
	o := run(t, a.cfg, a.src)
	if !errors.Is(o.err, agency.ErrChain) {
		t.Fatalf("Run error %v, want ErrChain", o.err)
	}
	if o.res.Bets > 100 || tp.dialCount() != 1 {
		t.Errorf("%d bets acknowledged over %d connections; want at most the first batch, 1 connection", o.res.Bets, tp.dialCount())
	}
}

// With the first address dead the agency moves on to the live server.
func TestFailoverToLiveServer(t *testing.T) {
	t.Parallel()
	ks := newKeySet(t, 1)
	rs := startServer(t, eventserver.Config{Agencies: 1}, ks)
	a := newAgencyRun(t, rs, ks, 1, courseLike(t, 1, 250, 2))
	dead := refusedAddr(t)
	a.cfg.Servers = []string{dead, rs.Addr()}
	a.check(t, run(t, a.cfg, a.src), ks)
	if !hasLine(a.log.String(), fmt.Sprintf(`connect \| result: in_progress \| server: %s \| next: %s \| .*`, dead, rs.Addr())) {
		t.Error("no connect line moving from the dead address to the live one")
	}
}

// A real server refuses agencies without the right keys; none of these is
// retried and nothing is stored.
func TestServerRefusesAgency(t *testing.T) {
	t.Parallel()
	ks := newKeySet(t, 2)
	other := newKeySet(t, 1)
	securedServer := startServer(t, eventserver.Config{Agencies: 2}, ks)
	insecureServer := startServer(t, eventserver.Config{Agencies: 2}, nil)
	tests := []struct {
		name    string
		server  *realServer
		setup   func(cfg *agency.Config)
		code    frame.Code
		refused bool // a handshake refusal (secure.RefusedError), else an ERROR after it
	}{
		{"plaintext agency, secured server", securedServer, func(cfg *agency.Config) { cfg.Key, cfg.SignPub = nil, nil }, frame.CodeSecureRequired, false},
		{"keyed agency, insecure server", insecureServer, func(*agency.Config) {}, frame.CodeInsecureServer, true},
		{"unknown key", securedServer, func(cfg *agency.Config) { cfg.Key = &other.agencies[0] }, frame.CodeUnknownKey, true},
		{"another server's public key", securedServer, func(cfg *agency.Config) { cfg.ServerPub = other.serverPub }, frame.CodeHandshake, true},
		{"agency 2's key claiming agency 1", securedServer, func(cfg *agency.Config) { cfg.Key = &ks.agencies[1] }, frame.CodeWrongAgency, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgencyRun(t, tc.server, ks, 1, courseLike(t, 1, 20, 0))
			tc.setup(&a.cfg)
			tp := newTap()
			tp.install(&a.cfg)
			o := run(t, a.cfg, a.src)
			var code frame.Code
			var refused *secure.RefusedError
			var se *agency.ServerError
			switch {
			case errors.As(o.err, &refused) && tc.refused:
				code = refused.Code
			case errors.As(o.err, &se) && !tc.refused:
				code = se.Err.Code
			}
			if code != tc.code {
				t.Fatalf("Run error %v, want %s", o.err, tc.code)
			}
			if tp.dialCount() != 1 || o.res.Bets != 0 {
				t.Errorf("%d connections, %d bets; want 1 (no retry), 0", tp.dialCount(), o.res.Bets)
			}
		})
	}
	for _, rs := range []*realServer{securedServer, insecureServer} {
		rs.stop(t)
		if n := len(storedBets(t, rs.dir)); n != 0 {
			t.Errorf("bets of %d agencies stored", n)
		}
	}
}
