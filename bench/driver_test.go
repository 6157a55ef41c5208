package bench

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestDriveBothServersEndToEnd(t *testing.T) {
	const k, bets = 9, 120
	sets, err := buildDatasets(datasetPlan{Distinct: 4, Bets: bets, Batch: 50, WinningNumber: 7574, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	wire := int64(0)
	for a := range k {
		wire += int64(sets[a%len(sets)].wireBytes)
	}
	for _, tc := range []struct {
		impl  string
		start func(*testing.T, int) *inProcess
	}{
		{ImplGnet, func(t *testing.T, k int) *inProcess { return startGnet(t, testConfig(t, k)) }},
		{ImplStdlib, func(t *testing.T, k int) *inProcess { return startStd(t, testConfig(t, k)) }},
	} {
		t.Run(tc.impl, func(t *testing.T) {
			srv := tc.start(t, k)
			prog := &progress{}
			var hooks atomic.Int32
			check := func(name string, cond bool) func() error {
				return func() error {
					hooks.Add(1)
					if !cond {
						t.Errorf("at %s: connected %d, acked %d, finished %d, winners %d", name,
							prog.connected.Load(), prog.acked.Load(), prog.finished.Load(), prog.winners.Load())
					}
					return nil
				}
			}
			cfg := driveConfig{Addr: srv.addr, Agencies: k, Sets: sets, DialConcurrency: 3, Timeout: time.Minute, Progress: prog,
				Sources: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 3)}}
			cfg.Connected = func() error {
				return check("connected", prog.connected.Load() == k && prog.acked.Load() == 0)()
			}
			cfg.Waiting = func() error {
				return check("waiting", prog.acked.Load() == k*bets && prog.finished.Load() == k-1 && prog.winners.Load() == 0)()
			}
			cfg.Delivered = func() error { return check("delivered", prog.winners.Load() == k)() }
			res, err := drive(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if hooks.Load() != 3 {
				t.Errorf("%d hooks ran, want 3", hooks.Load())
			}
			if res.Bets != k*bets || res.WireBytes != wire || len(res.Latencies) != k*3 {
				t.Errorf("result: %d bets, %d wire bytes, %d ACKs; want %d, %d, %d", res.Bets, res.WireBytes, len(res.Latencies), k*bets, wire, k*3)
			}
			if res.Upload <= 0 || res.Connect <= 0 || res.DrawToLastWinners <= 0 {
				t.Errorf("durations: connect %v, upload %v, draw %v; want all positive", res.Connect, res.Upload, res.DrawToLastWinners)
			}
			if err := srv.stop(t); err != nil {
				t.Fatalf("drain: %v", err)
			}
			if _, err := checkStore(srv.dataDir, k, bets); err != nil {
				t.Fatal(err)
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
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestDriveFailsWhenTheServerRefusesAnAgency(t *testing.T) {
	sets, err := buildDatasets(datasetPlan{Distinct: 1, Bets: 10, Batch: 10, WinningNumber: 7574, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := startGnet(t, testConfig(t, 2)) // three agencies, but the server knows two
	_, err = drive(context.Background(), driveConfig{Addr: srv.addr, Agencies: 3, Sets: sets, DialConcurrency: 3, Timeout: time.Minute})
	if !errors.Is(err, ErrBrokenRun) || !strings.Contains(err.Error(), "unknown_agency") {
		t.Fatalf("unknown agency: %v, want ErrBrokenRun naming unknown_agency", err)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
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
	sets, err := buildDatasets(datasetPlan{Distinct: 4, Bets: 25, Batch: 10, WinningNumber: 7574, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	srv := startGnet(t, testConfig(t, 1))
	res, err := drive(context.Background(), driveConfig{Addr: srv.addr, Agencies: 1, Sets: sets, DialConcurrency: 1, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bets != 25 || len(res.Latencies) != 3 || res.DrawToLastWinners <= 0 {
		t.Errorf("one agency: %d bets, %d ACKs, draw %v", res.Bets, len(res.Latencies), res.DrawToLastWinners)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, err := checkStore(srv.dataDir, 1, 25); err != nil {
		t.Fatal(err)
	}
}
