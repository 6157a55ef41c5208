package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
)

// TestDriveBothServersEndToEnd drives both servers, secured and plaintext:
// every hook sees the barrier's state, every ACK, receipt, commitment and
// winner is checked by the driver, the store holds exactly what was sent,
// and a storm against the restarted server finds every agency finished.
func TestDriveBothServersEndToEnd(t *testing.T) {
	const k, bets = 9, 120
	keys := testKeys(t)
	sets, err := buildDatasets(datasetPlan{Distinct: 4, Bets: bets, Batch: 25, WinningNumber: 7574, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	wire := int64(0)
	for a := range k {
		wire += int64(sets[a%len(sets)].wireBytes)
	}
	for _, st := range starters {
		for _, secured := range []bool{true, false} {
			name := st.impl + "/insecure"
			if secured {
				name = st.impl + "/secure"
			}
			t.Run(name, func(t *testing.T) {
				cfg := testConfig(t, k)
				var driverKeys *keyring
				if secured {
					cfg = secureConfig(t, k, keys)
					driverKeys = keys
				}
				cfg.Window = 3
				srv := st.start(t, cfg)
				prog := &progress{}
				var hooks atomic.Int32
				check := func(name string, cond bool) error {
					hooks.Add(1)
					if !cond {
						t.Errorf("at %s: connected %d, acked %d, finished %d, winners %d", name,
							prog.connected.Load(), prog.acked.Load(), prog.finished.Load(), prog.winners.Load())
					}
					return nil
				}
				dc := driveConfig{Addr: srv.addr, Agencies: k, Sets: sets, Keys: driverKeys, DialConcurrency: 3, Timeout: time.Minute,
					Progress: prog, Sources: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 3)}}
				dc.Connected = func() error {
					return check("connected", prog.connected.Load() == k && prog.acked.Load() == 0)
				}
				dc.Waiting = func() error {
					return check("waiting", prog.acked.Load() == k*bets && prog.finished.Load() == k-1 && prog.winners.Load() == 0)
				}
				dc.Delivered = func() error { return check("delivered", prog.winners.Load() == k) }
				res, err := drive(context.Background(), dc)
				if err != nil {
					t.Fatal(err)
				}
				if hooks.Load() != 3 {
					t.Errorf("%d hooks ran, want 3", hooks.Load())
				}
				if res.Bets != k*bets || res.WireBytes != wire || len(res.Latencies) != k*5 || len(res.Handshakes) != k {
					t.Errorf("result: %d bets, %d wire bytes, %d ACKs, %d handshakes; want %d, %d, %d, %d",
						res.Bets, res.WireBytes, len(res.Latencies), len(res.Handshakes), k*bets, wire, k*5, k)
				}
				if res.Window != 3 {
					t.Errorf("window %d, want the 3 the server announced", res.Window)
				}
				if res.Upload <= 0 || res.Connect <= 0 || res.DrawToLastWinners <= 0 || res.Root == (frame.Hash{}) {
					t.Errorf("connect %v, upload %v, draw %v, root %x; want all set", res.Connect, res.Upload, res.DrawToLastWinners, res.Root)
				}
				if err := srv.stop(t); err != nil {
					t.Fatalf("drain: %v", err)
				}
				if _, err := checkStore(srv.dataDir, wantFromSets(sets, k)); err != nil {
					t.Fatal(err)
				}

				// The same data, a restarted server: everyone reconnects at once.
				again := st.start(t, cfg)
				sres, err := storm(context.Background(), stormConfig{Addr: again.addr, Agencies: k, Sets: sets, Keys: driverKeys,
					Concurrency: 4, Timeout: time.Minute, Root: res.Root})
				if err != nil {
					t.Fatal(err)
				}
				if sres.Took <= 0 || len(sres.Handshakes) != k {
					t.Errorf("storm took %v with %d handshakes, want > 0 and %d", sres.Took, len(sres.Handshakes), k)
				}
				// A storm expecting another commitment fails.
				_, err = storm(context.Background(), stormConfig{Addr: again.addr, Agencies: 2, Sets: sets, Keys: driverKeys,
					Concurrency: 2, Timeout: time.Minute, Root: frame.Hash{1}})
				if !errors.Is(err, ErrBrokenRun) || !strings.Contains(err.Error(), "commitment root") {
					t.Errorf("storm with the wrong root: %v, want ErrBrokenRun about the root", err)
				}
				if err := again.stop(t); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestDriveAnswersTheServersPings(t *testing.T) {
	keys := testKeys(t)
	sets, err := buildDatasets(datasetPlan{Distinct: 2, Bets: 30, Batch: 10, WinningNumber: 7574, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range starters {
		t.Run(st.impl, func(t *testing.T) {
			cfg := secureConfig(t, 3, keys)
			cfg.PingInterval = 50 * time.Millisecond
			srv := st.start(t, cfg)
			res, err := drive(context.Background(), driveConfig{Addr: srv.addr, Agencies: 3, Sets: sets, Keys: keys, DialConcurrency: 3,
				Timeout: time.Minute, Waiting: func() error { time.Sleep(400 * time.Millisecond); return nil }})
			if err != nil {
				t.Fatal(err)
			}
			// Two agencies wait for the draw for 400ms: PINGed every 50ms of silence.
			if res.Pings < 2 {
				t.Errorf("%d PINGs answered, want several", res.Pings)
			}
		})
	}
}

// TestDriveKeepsAgenciesAliveAtBarriers holds the barriers for longer than
// the server's read timeout: the agencies waiting there PING, so the server
// does not time them out.
func TestDriveKeepsAgenciesAliveAtBarriers(t *testing.T) {
	sets, err := buildDatasets(datasetPlan{Distinct: 2, Bets: 20, Batch: 10, WinningNumber: 7574, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range starters {
		t.Run(st.impl, func(t *testing.T) {
			cfg := testConfig(t, 3)
			cfg.ReadTimeout = 300 * time.Millisecond
			srv := st.start(t, cfg)
			hold := func() error { time.Sleep(800 * time.Millisecond); return nil }
			if _, err := drive(context.Background(), driveConfig{Addr: srv.addr, Agencies: 3, Sets: sets, DialConcurrency: 3,
				Timeout: time.Minute, Connected: hold, Waiting: hold}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReadAnswersPingsInPlace checks the driver's reader on a scripted
// server: a PING between two frames is answered with its payload and the
// frames around it come through in order.
func TestReadAnswersPingsInPlace(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	var pings atomic.Int64
	c := &agencyConn{id: 7, nc: client, src: frame.NewReader(client), w: client, pings: &pings}
	script := []frame.Frame{&frame.Ping{Payload: []byte("one")}, &frame.NotReady{RetryAfter: time.Second},
		&frame.Pong{Payload: []byte("unasked")}, &frame.Ping{Payload: []byte("two")}, &frame.Error{Code: frame.CodeTimeout, Reason: "late"}}
	pongs := make(chan []string, 1)
	go func() {
		var got []string
		src := frame.NewReader(server)
		var dec frame.Decoder
		for _, f := range script {
			if err := frame.Write(server, f); err != nil {
				break
			}
			if _, ok := f.(*frame.Ping); ok {
				reply, err := dec.Next(src)
				if err != nil {
					break
				}
				if p, ok := reply.(*frame.Pong); ok {
					got = append(got, string(p.Payload))
				}
			}
		}
		pongs <- got
	}()
	f, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.(*frame.NotReady); !ok {
		t.Fatalf("read %s, want NOT_READY after the PING", f.Type())
	}
	if _, err := c.read(); !errors.Is(err, ErrBrokenRun) || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("ERROR frame read as %v, want ErrBrokenRun naming the code", err)
	}
	if got := <-pongs; strings.Join(got, ",") != "one,two" || pings.Load() != 2 {
		t.Errorf("PONGs %q (%d counted), want one,two", got, pings.Load())
	}
}

// TestUploadKeepsTheWindow runs the upload against a scripted server that
// acknowledges nothing until it has read as many frames as the window
// allows, then checks no more arrive before the next ACK.
func TestUploadKeepsTheWindow(t *testing.T) {
	sets, err := buildDatasets(datasetPlan{Distinct: 1, Bets: 70, Batch: 10, WinningNumber: 7574, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	ds := sets[0]
	const window = 3
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	var pings atomic.Int64
	c := &agencyConn{id: 1, nc: client, src: frame.NewReader(client), w: client, pings: &pings}
	served := make(chan error, 1)
	go func() {
		served <- func() error {
			src := frame.NewReader(server)
			var dec frame.Decoder
			first, read, acked := uint64(0), 0, 0
			for acked < len(ds.frames) {
				for read-acked < window && read < len(ds.frames)+1 {
					f, err := dec.Next(src)
					if err != nil {
						return err
					}
					if _, ok := f.(*frame.Finished); ok && read < len(ds.frames) {
						return errors.New("FINISHED before the last batch")
					}
					read++
				}
				// The window is full: nothing more may come until an ACK.
				server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := src.Peek(1); err == nil {
					return errors.New("a frame beyond the window arrived before any ACK")
				}
				server.SetReadDeadline(time.Time{})
				n := ds.counts[acked]
				ack := &frame.Ack{First: first, Count: uint16(n), Held: first + uint64(n), Chain: ds.chains[acked]}
				if err := frame.Write(server, ack); err != nil {
					return err
				}
				first += uint64(n)
				acked++
			}
			return nil
		}()
	}()
	var res agencyResult
	if err := c.upload(ds, window, true, &res, &progress{}); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if len(res.latencies) != len(ds.frames) {
		t.Errorf("%d latencies, want %d", len(res.latencies), len(ds.frames))
	}
}

func TestUploadFailsOnAWrongChain(t *testing.T) {
	sets, err := buildDatasets(datasetPlan{Distinct: 3, Bets: 40, Batch: 10, WinningNumber: 7574, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range starters {
		t.Run(st.impl, func(t *testing.T) {
			cfg := testConfig(t, 3)
			cfg.Tamper = func(agency uint32, first uint64, bets []frame.Bet) {
				if agency == 2 && first == 10 {
					bets[3].LastName += "x" // stored, and chained, as something the agency never sent
				}
			}
			srv := st.start(t, cfg)
			_, err := drive(context.Background(), driveConfig{Addr: srv.addr, Agencies: 3, Sets: sets, DialConcurrency: 3, Timeout: time.Minute})
			if !errors.Is(err, ErrBrokenRun) || !strings.Contains(err.Error(), "agency 2 got ACK") {
				t.Fatalf("a tampered bet: %v, want ErrBrokenRun about agency 2's ACK", err)
			}
		})
	}
}

func TestDriveFailsLoudlyOnWrongWinners(t *testing.T) {
	sets, err := buildDatasets(datasetPlan{Distinct: 2, Bets: 30, Batch: 10, WinningNumber: 7574, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	sets[1].winners = append(sets[1].winners, "12345678") // the server cannot know this one
	srv := startStd(t, testConfig(t, 4))
	_, err = drive(context.Background(), driveConfig{Addr: srv.addr, Agencies: 4, Sets: sets, DialConcurrency: 4, Timeout: time.Minute})
	if !errors.Is(err, ErrBrokenRun) || !strings.Contains(err.Error(), "winners") {
		t.Fatalf("wrong winners: %v, want ErrBrokenRun about winners", err)
	}
}

func TestDriveFailsWhenTheServerRefusesAnAgency(t *testing.T) {
	keys := testKeys(t)
	sets, err := buildDatasets(datasetPlan{Distinct: 1, Bets: 10, Batch: 10, WinningNumber: 7574, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		cfg        func(*testing.T) eventserver.Config
		driverKeys *keyring
		want       string
	}{
		// Three agencies, but the server knows two.
		{"unknown agency", func(t *testing.T) eventserver.Config { return testConfig(t, 2) }, nil, "unknown_agency"},
		{"unknown key", func(t *testing.T) eventserver.Config { return secureConfig(t, 2, keys) }, keys, "unknown_key"},
		// Plaintext agencies at a secured server, keyed ones at a plaintext server.
		{"plaintext to secured", func(t *testing.T) eventserver.Config { return secureConfig(t, 3, keys) }, nil, "secure_required"},
		{"keyed to insecure", func(t *testing.T) eventserver.Config { return testConfig(t, 3) }, keys, "insecure_server"},
	} {
		for _, st := range starters {
			t.Run(tc.name+"/"+st.impl, func(t *testing.T) {
				srv := st.start(t, tc.cfg(t))
				_, err := drive(context.Background(), driveConfig{Addr: srv.addr, Agencies: 3, Sets: sets, Keys: tc.driverKeys,
					DialConcurrency: 3, Timeout: time.Minute})
				if !errors.Is(err, ErrBrokenRun) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%v, want ErrBrokenRun naming %s", err, tc.want)
				}
			})
		}
	}
}

func TestDriveStopsOnAHookError(t *testing.T) {
	sets, err := buildDatasets(datasetPlan{Distinct: 1, Bets: 20, Batch: 10, WinningNumber: 7574, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := startStd(t, testConfig(t, 3))
	sampling := errors.New("sampling failed")
	_, err = drive(context.Background(), driveConfig{Addr: srv.addr, Agencies: 3, Sets: sets, DialConcurrency: 3,
		Timeout: time.Minute, Waiting: func() error { return sampling }})
	if !errors.Is(err, sampling) {
		t.Fatalf("drive = %v, want the hook's error", err)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestDialerSpreadsOverSourceAddresses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := &driver{cfg: driveConfig{Sources: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2)}}}
	for id, want := range map[uint32]string{1: "127.0.0.1", 2: "127.0.0.2", 3: "127.0.0.1", 4: "127.0.0.2"} {
		c, err := d.dialer(id).Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("agency %d: %v", id, err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got := s.RemoteAddr().(*net.TCPAddr).IP.String(); got != want {
			t.Errorf("agency %d connected from %s, want %s", id, got, want)
		}
		c.Close()
		s.Close()
	}
	if dl := (&driver{}).dialer(1); dl.LocalAddr != nil || dl.Control != nil {
		t.Error("with no sources the kernel should choose the address")
	}
}

func TestDriveOneAgency(t *testing.T) {
	keys := testKeys(t)
	sets, err := buildDatasets(datasetPlan{Distinct: 4, Bets: 25, Batch: 10, WinningNumber: 7574, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	srv := startGnet(t, secureConfig(t, 1, keys))
	res, err := drive(context.Background(), driveConfig{Addr: srv.addr, Agencies: 1, Sets: sets, Keys: keys, DialConcurrency: 1, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bets != 25 || len(res.Latencies) != 3 || res.DrawToLastWinners <= 0 {
		t.Errorf("one agency: %d bets, %d ACKs, draw %v", res.Bets, len(res.Latencies), res.DrawToLastWinners)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, err := checkStore(srv.dataDir, wantFromSets(sets, 1)); err != nil {
		t.Fatal(err)
	}
}

// slowWriter returns from each write only after a pause, as a writer
// goroutine descheduled after its write would.
type slowWriter struct {
	io.Writer
	pause time.Duration
}

func (w slowWriter) Write(p []byte) (int, error) {
	n, err := w.Writer.Write(p)
	time.Sleep(w.pause)
	return n, err
}

// TestUploadAlwaysSendsTheFinished: with a window of one, the FINISHED goes
// out on the credit of the last ACK; the upload must not end before the
// writer has sent it, however late the writer comes back to take that
// credit (at 10,000 agencies some never sent it, and the server timed them
// out 30 s later).
func TestUploadAlwaysSendsTheFinished(t *testing.T) {
	sets, err := buildDatasets(datasetPlan{Distinct: 1, Bets: 10, Batch: 10, WinningNumber: 7574, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	ds := sets[0]
	for i := range 20 {
		client, server := net.Pipe()
		var pings atomic.Int64
		c := &agencyConn{id: 1, nc: client, src: frame.NewReader(client), w: slowWriter{client, 20 * time.Millisecond}, pings: &pings}
		served := make(chan error, 1)
		go func() {
			served <- func() error {
				src := frame.NewReader(server)
				var dec frame.Decoder
				if _, err := dec.Next(src); err != nil {
					return err
				}
				n := ds.counts[0]
				if err := frame.Write(server, &frame.Ack{Count: uint16(n), Held: uint64(n), Chain: ds.chains[0]}); err != nil {
					return err
				}
				server.SetReadDeadline(time.Now().Add(time.Second))
				f, err := dec.Next(src)
				if err != nil {
					return fmt.Errorf("no FINISHED after the last ACK: %w", err)
				}
				if _, ok := f.(*frame.Finished); !ok {
					return fmt.Errorf("%s after the last ACK, want FINISHED", f.Type())
				}
				return nil
			}()
		}()
		var res agencyResult
		uerr := c.upload(ds, 1, true, &res, &progress{})
		serr := <-served
		client.Close()
		server.Close()
		if uerr != nil || serr != nil {
			t.Fatalf("upload %d: %v; server: %v", i, uerr, serr)
		}
	}
}
