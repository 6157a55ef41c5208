package eventserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/tp0/loteria/eventserver/probe"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/secure"
)

// Issue 9: only agency k can speak for agency k, and nobody on the path
// reads or changes what it says.

// TestSecurityRefusals runs the refusals of a secured server through the
// hardening harness (a real agency uploading meanwhile, a clean agency
// afterwards, the store exact): each is refused with its code and a fail
// line, stores nothing, and displaces nobody.
func TestSecurityRefusals(t *testing.T) {
	t.Parallel()
	runHardTable(t, []hardCase{
		{name: "impostor_uses_its_key_to_say_hello_as_another", run: func(t *testing.T, h *hardHarness) {
			// The hostile identity's key, claiming the good agency while it
			// uploads: if it were let in it would replace the good agency's
			// connection and store these bets at its indexes.
			p := h.peer(t)
			p.mode = coalesced
			mustWrite(t, p, &frame.Hello{Agency: h.good}, &frame.Bets{First: 0, Bets: agencyBets(h.good, 10)})
			expectError(t, p, frame.CodeWrongAgency)
			h.expectFailLog(t, p.localAddr(), "hello", "agency", fmt.Sprint(h.good), "key_agency", fmt.Sprint(h.id))
			h.expectFailLog(t, p.localAddr(), "session_error", "code", frame.CodeWrongAgency.String())
		}},
		{name: "unknown_key", run: func(t *testing.T, h *hardHarness) {
			stranger, err := secure.GenerateKey(nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = h.ts.dialKey(stranger)
			local := requireRefused(t, err, frame.CodeUnknownKey)
			h.expectFailLog(t, local, "session_error", "code", frame.CodeUnknownKey.String())
		}},
		{name: "another_servers_public_key", run: func(t *testing.T, h *hardHarness) {
			other, err := secure.GenerateKey(nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = dialPeer(h.ts.Addr(), h.ts.keys.agency(h.id), other.Public(), nil)
			local := requireRefused(t, err, frame.CodeHandshake)
			h.expectFailLog(t, local, "session_error", "code", frame.CodeHandshake.String())
		}},
		{name: "plaintext_client_only_pings", run: func(t *testing.T, h *hardHarness) {
			if err := probe.Ping(h.ts.Addr(), itGuard); err != nil {
				t.Errorf("plaintext health check: %v", err)
			}
			p := h.ts.mustDialPlain(t)
			mustPing(t, p, "no key needed for this")
			mustWrite(t, p, &frame.Hello{Agency: h.id})
			expectError(t, p, frame.CodeSecureRequired)
			h.expectFailLog(t, p.localAddr(), "session_error", "code", frame.CodeSecureRequired.String())
		}},
	})
}

// requireRefused requires err to be the server's plaintext refusal of a
// handshake with code, and returns the local address it came to.
func requireRefused(t *testing.T, err error, code frame.Code) string {
	t.Helper()
	var refused *secure.RefusedError
	var he *handshakeError
	if !errors.As(err, &refused) || refused.Code != code || !errors.As(err, &he) {
		t.Fatalf("handshake: %v, want the server's refusal %s", err, code)
	}
	return he.local
}

// TestSecurityAgencyAndServerModesDisagree: a keyed agency against an
// --insecure server, and a plaintext agency against a secured one, each
// stop at once with an error that says what to change; nothing is stored.
func TestSecurityAgencyAndServerModesDisagree(t *testing.T) {
	t.Parallel()
	keys := newTestKeys(t, 1)
	for _, tc := range []struct {
		name   string
		opts   []serverOption
		key    bool
		code   frame.Code
		advice string
	}{
		{"keyed_agency_insecure_server", []serverOption{optInsecure()}, true, frame.CodeInsecureServer, "--insecure"},
		{"plaintext_agency_secured_server", []serverOption{optKeys(keys)}, false, frame.CodeSecureRequired, "--key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, Config{Agencies: 1}, tc.opts...)
			log, logs := newWatchedLogger(zapcore.InfoLevel)
			cfg := ts.agencyConfig(1, log)
			cfg.Key, cfg.ServerPub, cfg.SignPub = nil, secure.PublicKey{}, nil
			if tc.key {
				cfg.Key, cfg.ServerPub = keys.agency(1), keys.server
			}
			ctx, cancel := context.WithTimeout(context.Background(), itGuard)
			defer cancel()
			_, err := agency.Run(ctx, cfg, agency.NewSliceSource(agencyBets(1, 10)))
			var refused *secure.RefusedError
			var serverErr *agency.ServerError
			switch {
			case errors.As(err, &refused) && refused.Code == tc.code:
			case errors.As(err, &serverErr) && serverErr.Err.Code == tc.code:
			default:
				t.Fatalf("agency: %v, want the server's %s", err, tc.code)
			}
			if !strings.Contains(err.Error(), tc.advice) {
				t.Errorf("agency error %q does not mention %s", err, tc.advice)
			}
			if n := logs.count("connect", map[string]string{"result": "in_progress"}); n != 0 {
				t.Errorf("the agency retried %d times; the refusal needs a person", n)
			}
			ts.logs.wait(t, "session_error", failLine("code", tc.code.String()))
			if held, _, _ := ts.Hub().Status(1); held != 0 {
				t.Errorf("server holds %d bets of the refused agency", held)
			}
		})
	}
}

// TestSecurityRelaySeesNoPlaintext: a relay recording every byte between
// real agencies and a secured server finds none of the documents, names or
// winners of their files; the same relay in front of an --insecure server
// finds them (so the search would see them).
func TestSecurityRelaySeesNoPlaintext(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"secure", "insecure"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var opts []serverOption
			if mode == "insecure" {
				opts = append(opts, optInsecure())
			}
			ts := startServer(t, Config{Agencies: 2}, opts...)
			r := startRelay(t, ts.Addr(), nil)
			bets := map[uint32][]frame.Bet{1: agencyBets(1, 120), 2: agencyBets(2, 120)}
			ctx, cancel := context.WithTimeout(context.Background(), 2*itGuard)
			defer cancel()
			runs := runAgencies(ctx, ts, bets, func(c *agency.Config) { c.Servers = []string{r.addr()} })
			checkRuns(t, ts, bets, runs)

			wire := r.captured()
			var secrets []string
			for _, bs := range bets {
				for _, b := range bs {
					secrets = append(secrets, b.Document, b.FirstName, b.LastName)
				}
			}
			for _, run := range runs {
				secrets = append(secrets, run.res.Winners...)
			}
			found := 0
			for _, s := range secrets {
				if bytes.Contains(wire, []byte(s)) {
					found++
				}
			}
			t.Logf("%d of %d secrets in %d captured bytes", found, len(secrets), len(wire))
			if mode == "secure" && found != 0 {
				t.Errorf("%d of %d documents, names and winners appear in the %d bytes on the wire", found, len(secrets), len(wire))
			}
			if mode == "insecure" && found != len(secrets) {
				t.Errorf("plaintext run: only %d of %d secrets found in the capture; the search is broken", found, len(secrets))
			}
		})
	}
}

// runInBackground runs agency.Run in a goroutine that the test waits for.
func runInBackground(t *testing.T, ctx context.Context, cfg agency.Config, bets []frame.Bet) <-chan agencyRun {
	t.Helper()
	out := make(chan agencyRun, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, err := agency.Run(ctx, cfg, agency.NewSliceSource(bets))
		out <- agencyRun{res: res, err: err}
	}()
	t.Cleanup(wg.Wait)
	return out
}

// TestSecurityReplayedHandshake: while an agency waits for the draw, its
// recorded message 1 is replayed on new connections, alone, followed by its
// recorded first transport record, and as the whole recorded stream. The
// server answers message 2 and nothing more: the replayed HELLO does not
// decrypt, the agency is not displaced and gets its winners on its
// connection.
func TestSecurityReplayedHandshake(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 2})
	r := startRelay(t, ts.Addr(), nil)
	log, logs := newWatchedLogger(zapcore.InfoLevel)
	cfg := ts.agencyConfig(1, log)
	cfg.Servers = []string{r.addr()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*itGuard)
	defer cancel()
	bets := agencyBets(1, 60)
	done := runInBackground(t, ctx, cfg, bets)
	logs.wait(t, "consulta_ganadores", map[string]string{"result": "in_progress", "wait": agency.WaitHold})

	recs := r.records(0, true)
	if len(recs) < 3 || recs[0].bytes[0] != secure.KindHandshake1 || recs[1].bytes[0] != secure.KindTransport {
		t.Fatalf("recorded %d records from the agency; want message 1, then transport records", len(recs))
	}
	var stream []byte
	for _, rec := range recs {
		stream = append(stream, rec.bytes...)
	}
	for i, replay := range [][][]byte{
		{recs[0].bytes},
		{recs[0].bytes, recs[1].bytes},
		{stream},
	} {
		p := ts.mustDialPlain(t)
		if err := p.sendRaw(replay[0]); err != nil {
			t.Fatal(err)
		}
		head := make([]byte, secure.HeaderSize+secure.Handshake2Size)
		p.tap.SetReadDeadline(time.Now().Add(itGuard))
		if _, err := p.tap.Conn.Read(head[:1]); err != nil || head[0] != secure.KindHandshake2 {
			t.Fatalf("replay %d: the server answered message 1 with %x (%v), want message 2", i, head[:1], err)
		}
		for _, more := range replay[1:] {
			if err := p.sendRaw(more); err != nil {
				t.Fatal(err)
			}
		}
		if i == 0 {
			p.close() // message 1 alone leads nowhere
			continue
		}
		var rest bytes.Buffer
		_, err := rest.ReadFrom(p.tap.Conn)
		if err != nil && !isClosed(err) {
			t.Fatalf("replay %d: %v", i, err)
		}
		if rest.Len() != secure.Handshake2Size+secure.HeaderSize-1 {
			t.Errorf("replay %d: the server sent %d bytes after message 2's first; want only message 2", i, rest.Len())
		}
		ts.logs.wait(t, "connection_lost", failLine("remote", p.localAddr()))
	}
	if n := ts.logs.count("connection_replaced", nil); n != 0 {
		t.Fatalf("a replay displaced the agency (%d connection_replaced lines)", n)
	}

	// The last agency finishes: the draw pushes agency 1 its winners on the
	// connection it never left.
	if _, err := runSpec(ts, agencySpec{id: 2, bets: agencyBets(2, 30), batch: 10}); err != nil {
		t.Fatal(err)
	}
	run := <-done
	if run.err != nil {
		t.Fatalf("agency 1: %v", run.err)
	}
	if want := winnersIn(bets); !slices.Equal(run.res.Winners, want) {
		t.Errorf("agency 1 winners %q, want %q", run.res.Winners, want)
	}
	if n := logs.count("hello", map[string]string{"result": "success"}); n != 1 || r.connections() != 1 {
		t.Errorf("agency 1 said HELLO %d times over %d connections; want it never displaced", n, r.connections())
	}
	ts.mustStop(t)
	checkStored(t, ts.dir, map[uint32][]frame.Bet{1: bets, 2: agencyBets(2, 30)})
}

// TestSecurityFlippedByte: one byte of one transport record flipped on its
// way, from agency 1 (a BETS record) and to agency 2 (an ACK record), each
// through a relay of its own: the receiver's decryption fails and the
// connection ends; nothing wrong is stored, and each agency reconnects,
// resumes and finishes exactly.
func TestSecurityFlippedByte(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 2}, optLogLevel(zapcore.InfoLevel))
	relays := map[uint32]*relay{}
	for id, up := range map[uint32]bool{1: true, 2: false} {
		var once sync.Once
		relays[id] = startRelay(t, ts.Addr(), func(rec relayRecord) {
			// Record 0 is the handshake; 3 is a BETS record upstream, an ACK downstream.
			if rec.conn == 0 && rec.up == up && rec.index == 3 {
				once.Do(func() { rec.bytes[len(rec.bytes)/2] ^= 0x20 })
			}
		})
	}
	bets := map[uint32][]frame.Bet{1: synthBets(t, 1, 400, 4, 9), 2: synthBets(t, 2, 400, 3, 10)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*itGuard)
	defer cancel()
	runs := runAgencies(ctx, ts, bets, func(c *agency.Config) {
		c.Servers, c.BatchMaxAmount = []string{relays[c.Agency].addr()}, 20
	})
	checkRuns(t, ts, bets, runs)
	for id, r := range relays {
		if r.connections() < 2 || runs[id].logs.count("hello", map[string]string{"result": "success"}) < 2 {
			t.Errorf("agency %d used %d connections; want it to have reconnected after the flipped byte", id, r.connections())
		}
	}
	ts.logs.wait(t, "connection_lost", failLine("agency", "1"))
	ts.mustStop(t)
	checkStored(t, ts.dir, bets)
}

// TestSecurityKeyRotation: agency-1.pub is replaced and the key store
// reloaded; the new key, refused before, gets in on new connections and the
// agency finishes; the old key is refused on new connections, while one it
// opened before the reload keeps running.
func TestSecurityKeyRotation(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 2})
	old := *ts.keys.agency(1)
	fresh, err := secure.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ts.dialKey(fresh)
	requireRefused(t, err, frame.CodeUnknownKey)
	kept, err := ts.dialKey(old) // established before the rotation
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kept.close)
	mustWrite(t, kept, &frame.Hello{Agency: 1})
	expectFrame[*frame.Welcome](t, kept)

	ts.keys.rotate(t, 1, fresh)
	_, err = ts.dialKey(old)
	requireRefused(t, err, frame.CodeUnknownKey)
	mustPing(t, kept, "a connection made with the old key runs on until it ends")

	bets := map[uint32][]frame.Bet{1: agencyBets(1, 50), 2: agencyBets(2, 50)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*itGuard)
	defer cancel()
	runs := runAgencies(ctx, ts, bets, func(c *agency.Config) {
		if c.Agency == 1 {
			c.Key = &fresh
		}
	})
	checkRuns(t, ts, bets, runs)
	ts.mustStop(t)
	checkStored(t, ts.dir, bets)
	if n := ts.logs.count("session_error", failLine("code", frame.CodeUnknownKey.String())); n != 2 {
		t.Errorf("%d unknown_key refusals logged, want 2 (the new key before, the old one after)", n)
	}
}

// TestSecurityHandshakeRefusalsAreSampled: a peer failing handshakes on
// purpose (an unknown key, again and again) gets ERROR unknown_key every
// time, but only RefusalLines a second get a session_error line of their
// own; the rest are counted in connection_refused lines, and together they
// account for every refusal.
func TestSecurityHandshakeRefusalsAreSampled(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Agencies: 1})
	const burst = 5 * RefusalLines
	started := time.Now()
	for range burst {
		stranger, err := secure.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ts.dialKey(stranger)
		requireRefused(t, err, frame.CodeUnknownKey)
	}
	elapsed := time.Since(started)
	code := failLine("code", frame.CodeUnknownKey.String())
	var own, summed int
	ts.logs.waitFor(t, fmt.Sprintf("session_error and connection_refused lines adding up to %d", burst), func() bool {
		own, summed = ts.logs.count("session_error", code), 0
		for _, l := range ts.logs.lines("connection_refused", code) {
			n, _ := l["count"].(int64)
			summed += int(n)
		}
		return own+summed >= burst
	})
	if own+summed != burst {
		t.Errorf("%d session_error lines and %d counted in connection_refused, want %d in all", own, summed, burst)
	}
	// The count starts over at each summary, so a burst may straddle one.
	if most := (int(elapsed/time.Second) + 2) * RefusalLines; own > most {
		t.Errorf("%d session_error lines for %d refusals in %v, want at most %d", own, burst, elapsed, most)
	}
	if own < RefusalLines {
		t.Errorf("%d session_error lines, want the first %d refusals logged one by one", own, RefusalLines)
	}
}
