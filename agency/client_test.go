package agency_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
	"github.com/tp0/loteria/secure"
)

// These tests run the agency against fake servers speaking plaintext
// frames, so that every answer, fault and timing is the test's choice.

func TestRunHold(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	h.winners = []string{"10000007", "10000042"}
	h.notReady = 2  // pushed while the agency holds the connection
	h.holdPings = 2 // and PINGed in between: each PING must get its PONG
	s := h.start()
	bets := testBets(250, 10)
	cfg, log := h.config(t, s)
	cfg.ReceiptFile = filepath.Join(t.TempDir(), "agency-1.csv.receipt.json")
	o := run(t, cfg, fileSource(t, bets))
	if o.err != nil {
		t.Fatalf("Run: %v", o.err)
	}
	if o.res.Bets != 250 || !slices.Equal(o.res.Winners, h.winners) {
		t.Errorf("Result %+v, want 250 bets and winners %v", o.res, h.winners)
	}
	stored, got, finished, queries := h.snapshot()
	sameBets(t, stored, bets)
	want := []received{{0, 0, 100}, {0, 100, 100}, {0, 200, 50}}
	if !slices.Equal(got, want) {
		t.Errorf("server got BETS %v, want %v", got, want)
	}
	if !slices.Equal(finished, []uint64{250}) || queries != 0 || s.connCount() != 1 {
		t.Errorf("FINISHED %v, %d queries, %d connections; want [250], 0, 1", finished, queries, s.connCount())
	}
	wantReceipt := receipt.Receipt(*h.lottery.receipt(1, bets))
	if o.res.Receipt == nil || *o.res.Receipt != wantReceipt {
		t.Errorf("Result.Receipt %+v, want %+v", o.res.Receipt, wantReceipt)
	}
	root := h.lottery.commitment(1, bets).Root
	if o.res.Root != root {
		t.Errorf("Result.Root %x, want the commitment's %x", o.res.Root, root)
	}
	f, err := receipt.ReadFile(cfg.ReceiptFile)
	if err != nil {
		t.Fatalf("receipt file: %v", err)
	}
	if f.Receipt != wantReceipt || f.Root == nil || *f.Root != root {
		t.Errorf("receipt file holds %+v root %v, want %+v root %x", f.Receipt, f.Root, wantReceipt, root)
	}
	out := log.String()
	for _, p := range []string{
		`hello \| result: success \| agency: 1 \| server: \S+ \| held: 0 \| finished: false \| window: 16`,
		`upload \| result: success \| agency: 1 \| bets: 250 \| chain: ` + fmt.Sprintf("%x", receipt.ChainOf(bets)),
		`receipt \| result: success \| agency: 1 \| bets: 250 \| chain: [0-9a-f]{64} \| signed: true \| file: ` + regexp.QuoteMeta(cfg.ReceiptFile),
		`consulta_ganadores \| result: in_progress \| agency: 1 \| finished: 1 \| agencies: 5 \| wait: hold`,
		fmt.Sprintf(`consulta_ganadores \| result: success \| agency: 1 \| cant_ganadores: 2 \| root: %x \| dni: 10000007,10000042`, root),
	} {
		if !hasLine(out, p) {
			t.Errorf("log has no line matching %q", p)
		}
	}
	if strings.Contains(out, "apuesta_enviada") {
		t.Error("apuesta_enviada logged per bet without LogEachBet")
	}
}

// A holding agency whose server PINGs it is on a live connection, however
// long the draw takes: each PING restarts the silence it allows, so the
// agency never drops the connection to reconnect.
func TestRunHoldPingsKeepTheConnection(t *testing.T) {
	noLeaks(t)
	bets := testBets(10, 10)
	lot := newFakeLottery(t, 5)
	const ping, read, pings = 50 * time.Millisecond, 50 * time.Millisecond, 30
	s := newFakeServer(t, func(p *peer) {
		if _, ok := expect[*frame.Hello](p); !ok {
			return
		}
		if p.n > 0 { // the agency gave up on the live connection: let it finish, and the test fail
			p.send(&frame.Welcome{Held: 10, Finished: true, Window: 4, MaxFrame: frame.MaxSize,
				Chain: receipt.ChainOf(bets), PingInterval: ping, ReadTimeout: read})
			if _, ok := expect[*frame.QueryWinners](p); ok {
				p.send(lot.commitment(1, bets), &frame.Winners{Last: true})
			}
			return
		}
		p.send(&frame.Welcome{Window: 4, MaxFrame: frame.MaxSize, Chain: receipt.Empty(), PingInterval: ping, ReadTimeout: read})
		b, ok := expect[*frame.Bets](p)
		if !ok {
			return
		}
		p.send(ack(bets, b.First, len(b.Bets), 10))
		if _, ok := expect[*frame.Finished](p); !ok {
			return
		}
		p.send(lot.receipt(1, bets), &frame.NotReady{Finished: 1, Agencies: 5})
		for i := range pings { // the draw comes after 1.5 s, four times the silence the agency allows
			time.Sleep(ping)
			if extra, ok := p.fence(fmt.Sprint("hold ", i)); !ok || len(extra) > 0 {
				return
			}
		}
		p.send(lot.commitment(1, bets), &frame.Winners{Last: true})
	})
	// Silence allowed while holding: PingInterval + ReadTimeout + IOTimeout = 350 ms.
	cfg := agency.Config{Agency: 1, Servers: []string{s.addr()}, IOTimeout: 250 * time.Millisecond,
		RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond, GiveUp: hangGuard, SignPub: lot.signPub}
	o := run(t, cfg, agency.NewSliceSource(bets))
	if o.err != nil {
		t.Fatalf("Run: %v", o.err)
	}
	if n := s.connCount(); n != 1 {
		t.Errorf("connected %d times while the server PINGed every %v; want 1", n, ping)
	}
}

func TestRunNoWinners(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	s := h.start()
	cfg, log := h.config(t, s)
	o := run(t, cfg, agency.NewSliceSource(testBets(3, 10)))
	if o.err != nil || o.res.Bets != 3 || len(o.res.Winners) != 0 {
		t.Fatalf("Run = %+v, %v", o.res, o.err)
	}
	if !hasLine(log.String(), `consulta_ganadores \| result: success \| agency: 1 \| cant_ganadores: 0 \| root: [0-9a-f]{64}`) {
		t.Error("no consulta_ganadores line with 0 winners")
	}
}

func TestRunManyWinnersInChunks(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	for i := range 3000 { // several WINNERS frames
		h.winners = append(h.winners, fmt.Sprintf("%010d", i))
	}
	s := h.start()
	cfg, log := h.config(t, s)
	o := run(t, cfg, agency.NewSliceSource(testBets(1, 10)))
	if o.err != nil || !slices.Equal(o.res.Winners, h.winners) {
		t.Fatalf("Run: %v, %d winners; want %d", o.err, len(o.res.Winners), len(h.winners))
	}
	// The line names the first 50 documents only.
	if !hasLine(log.String(), `consulta_ganadores \| result: success \| agency: 1 \| cant_ganadores: 3000 \| root: [0-9a-f]{64} \| dni: (\d{10},){49}\d{10}`) {
		t.Error("no consulta_ganadores line for 3000 winners naming 50 documents")
	}
}

// Poll mode hangs up after NOT_READY and asks again later with
// QUERY_WINNERS, backing off from the server's hint up to RetryMax. Waiting
// for the draw is not failing: polling for longer than GiveUp is fine.
func TestRunPoll(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	h.poll = true
	h.notReady = 12 // FINISHED and eleven queries are answered NOT_READY
	h.retryHint = 40 * time.Millisecond
	h.winners = []string{"10000003"}
	s := h.start()
	bets := testBets(120, 10)
	cfg, log := h.config(t, s)
	cfg.Wait = agency.WaitPoll
	cfg.RetryMax = 40 * time.Millisecond
	cfg.GiveUp = 200 * time.Millisecond // the polls take longer than this
	start := time.Now()
	o := run(t, cfg, fileSource(t, bets))
	if o.err != nil {
		t.Fatalf("Run: %v", o.err)
	}
	if took := time.Since(start); took <= cfg.GiveUp {
		t.Fatalf("polling took %v, not longer than GiveUp %v: the test proves nothing", took, cfg.GiveUp)
	}
	if o.res.Bets != 120 || !slices.Equal(o.res.Winners, h.winners) {
		t.Errorf("Result %+v", o.res)
	}
	stored, got, finished, queries := h.snapshot()
	sameBets(t, stored, bets)
	if len(got) != 2 || len(finished) != 1 || queries != 12 || s.connCount() != 13 {
		t.Errorf("server saw %d BETS, FINISHED %v, %d queries over %d connections; want 2, [120], 12, 13",
			len(got), finished, queries, s.connCount())
	}
	re := regexp.MustCompile(`action: consulta_ganadores \| result: in_progress \| agency: 1 \| finished: 1 \| agencies: 5 \| retry_in: (\S+)`)
	m := re.FindAllStringSubmatch(log.String(), -1)
	if len(m) != 12 {
		t.Fatalf("%d poll lines, want 12", len(m))
	}
	for _, sub := range m {
		d, err := time.ParseDuration(sub[1])
		if err != nil {
			t.Fatal(err)
		}
		if d < h.retryHint || d > cfg.RetryMax {
			t.Errorf("poll delay %v, want from the hint %v (the server's retry_after is a floor) up to %v", d, h.retryHint, cfg.RetryMax)
		}
	}
	if !hasLine(log.String(), `hello \| result: success \| agency: 1 \| server: \S+ \| held: 120 \| finished: true \| window: 16`) {
		t.Error("no hello line of a poll connection")
	}
}

func TestRunLogEachBet(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	s := h.start()
	bets := testBets(3, 10)
	cfg, log := h.config(t, s)
	cfg.LogEachBet = true
	if o := run(t, cfg, agency.NewSliceSource(bets)); o.err != nil {
		t.Fatal(o.err)
	}
	for _, b := range bets {
		if !hasLine(log.String(), fmt.Sprintf(`apuesta_enviada \| result: success \| dni: %s \| numero: %d`, b.Document, b.Number)) {
			t.Errorf("no apuesta_enviada line for %s", b.Document)
		}
	}
}

// finishScript answers FINISHED as an honest server does, with no winners.
func finishScript(p *peer, lot *fakeLottery, bets []frame.Bet) {
	p.t.Helper()
	f, ok := expect[*frame.Finished](p)
	if !ok {
		return
	}
	if f.Total != uint64(len(bets)) {
		p.errorf("FINISHED total %d, want %d", f.Total, len(bets))
	}
	p.send(lot.receipt(1, bets), lot.commitment(1, bets), &frame.Winners{Last: true})
}

// The agency keeps up to WELCOME's window of BETS unanswered, never more,
// and matches ACKs to its batches in order, one at a time or several in one
// read. Each step blocks until the agency has filled its window (so a
// client waiting for every ACK would hang here), then fences with a PING:
// nothing may arrive before the PONG.
func TestRunWindow(t *testing.T) {
	for _, window := range []int{1, 3, 8} {
		t.Run(strconv.Itoa(window), func(t *testing.T) {
			noLeaks(t)
			bets := testBets(1000, 10) // 10 batches of 100
			lot := newFakeLottery(t, 5)
			var steps atomic.Int64
			s := newFakeServer(t, func(p *peer) {
				if _, ok := expect[*frame.Hello](p); !ok {
					return
				}
				p.send(&frame.Welcome{Window: uint16(window), MaxFrame: frame.MaxSize, Chain: receipt.Empty()})
				var outstanding []*frame.Bets
				next, held := uint64(0), uint64(0)
				for step := 0; held < uint64(len(bets)); step++ {
					for len(outstanding) < window && next < uint64(len(bets)) {
						b, ok := expect[*frame.Bets](p)
						if !ok {
							return
						}
						if b.First != next || len(b.Bets) != 100 || !slices.Equal(b.Bets, bets[next:next+100]) {
							p.errorf("BETS %d+%d, want the 100 bets from %d", b.First, len(b.Bets), next)
							return
						}
						outstanding = append(outstanding, b)
						next += 100
					}
					extra, ok := p.fence(fmt.Sprintf("step %d", step))
					if !ok {
						return
					}
					if len(extra) > 0 {
						p.errorf("window %d, %d BETS unanswered: %d more frames before the PONG", window, len(outstanding), len(extra))
						return
					}
					k := 1 // release one place, or every place at once
					if step%2 == 1 {
						k = len(outstanding)
					}
					var acks []frame.Frame
					for _, b := range outstanding[:k] {
						held = b.First + uint64(len(b.Bets))
						acks = append(acks, &frame.Ack{First: b.First, Count: uint16(len(b.Bets)), Held: held, Chain: receipt.ChainOf(bets[:held])})
					}
					outstanding = outstanding[k:]
					if p.send(acks...) != nil {
						return
					}
					steps.Add(1)
				}
				finishScript(p, lot, bets)
			})
			cfg := agency.Config{Agency: 1, Servers: []string{s.addr()}, BatchMaxAmount: 100, IOTimeout: hangGuard, SignPub: lot.signPub}
			o := run(t, cfg, fileSource(t, bets))
			if o.err != nil || o.res.Bets != 1000 {
				t.Fatalf("Run = %+v, %v", o.res, o.err)
			}
			if s.connCount() != 1 || steps.Load() < int64(10/window) {
				t.Errorf("%d connections, %d steps", s.connCount(), steps.Load())
			}
		})
	}
}

// ackScript accepts three batches of 100 at window 3, sends replies(bets)
// and, when the agency is expected to carry on, answers FINISHED.
func ackScript(bets []frame.Bet, lot *fakeLottery, replies func([]frame.Bet) []frame.Frame, ok bool) func(p *peer) {
	return func(p *peer) {
		if _, good := expect[*frame.Hello](p); !good {
			return
		}
		p.send(&frame.Welcome{Window: 3, MaxFrame: frame.MaxSize, Chain: receipt.Empty()})
		for range 3 {
			if _, good := expect[*frame.Bets](p); !good {
				return
			}
		}
		if p.send(replies(bets)...) != nil {
			return
		}
		if ok {
			finishScript(p, lot, bets)
			return
		}
		for { // the agency hangs up
			if _, err := p.recv(); err != nil {
				return
			}
		}
	}
}

func ack(bets []frame.Bet, first uint64, count int, held uint64) *frame.Ack {
	return &frame.Ack{First: first, Count: uint16(count), Held: held, Chain: receipt.ChainOf(bets[:held])}
}

// Every ACK is checked: it must answer the oldest batch in flight, and its
// chain must be this file's over the bets it says the server holds. A
// mismatch is never retried.
func TestRunAckChecks(t *testing.T) {
	other := testBets(300, 11)
	tests := []struct {
		name    string
		replies func(b []frame.Bet) []frame.Frame
		want    error // nil: the upload succeeds
	}{
		{"in order", func(b []frame.Bet) []frame.Frame {
			return []frame.Frame{ack(b, 0, 100, 100), ack(b, 100, 100, 200), ack(b, 200, 100, 300)}
		}, nil},
		{"held at a later batch's end", func(b []frame.Bet) []frame.Frame {
			return []frame.Frame{ack(b, 0, 100, 300), ack(b, 100, 100, 300), ack(b, 200, 100, 300)}
		}, nil},
		{"a later batch first", func(b []frame.Bet) []frame.Frame { return []frame.Frame{ack(b, 100, 100, 200)} }, agency.ErrProtocol},
		{"another count", func(b []frame.Bet) []frame.Frame { return []frame.Frame{ack(b, 0, 99, 99)} }, agency.ErrProtocol},
		{"twice the same", func(b []frame.Bet) []frame.Frame { return []frame.Frame{ack(b, 0, 100, 100), ack(b, 0, 100, 100)} }, agency.ErrProtocol},
		{"held short of the batch it acknowledges", func(b []frame.Bet) []frame.Frame {
			return []frame.Frame{&frame.Ack{First: 0, Count: 100, Held: 40, Chain: receipt.ChainOf(b[:40])}}
		}, agency.ErrProtocol},
		{"wrong chain", func(b []frame.Bet) []frame.Frame {
			return []frame.Frame{&frame.Ack{First: 0, Count: 100, Held: 100, Chain: receipt.ChainOf(other[:100])}}
		}, agency.ErrChain},
		{"wrong chain at a later batch's end", func(b []frame.Bet) []frame.Frame {
			return []frame.Frame{ack(b, 0, 100, 100), &frame.Ack{First: 100, Count: 100, Held: 300, Chain: receipt.ChainOf(b[:299])}}
		}, agency.ErrChain},
		{"WELCOME", func([]frame.Bet) []frame.Frame { return []frame.Frame{&frame.Welcome{Window: 3}} }, agency.ErrProtocol},
		{"RECEIPT", func(b []frame.Bet) []frame.Frame { return []frame.Frame{newFakeLottery(t, 5).receipt(1, b)} }, agency.ErrProtocol},
		{"NOT_READY", func([]frame.Bet) []frame.Frame { return []frame.Frame{&frame.NotReady{}} }, agency.ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			bets := testBets(300, 10)
			lot := newFakeLottery(t, 5)
			s := newFakeServer(t, ackScript(bets, lot, tc.replies, tc.want == nil))
			cfg := agency.Config{Agency: 1, Servers: []string{s.addr()}, RetryBase: time.Millisecond, IOTimeout: hangGuard, SignPub: lot.signPub}
			o := run(t, cfg, agency.NewSliceSource(bets))
			if tc.want == nil {
				if o.err != nil || o.res.Bets != 300 {
					t.Fatalf("Run = %+v, %v; want success", o.res, o.err)
				}
				return
			}
			if !errors.Is(o.err, tc.want) {
				t.Fatalf("Run error %v, want %v", o.err, tc.want)
			}
			if s.connCount() != 1 {
				t.Errorf("%d connections, want 1 (no retry)", s.connCount())
			}
		})
	}
}

// WELCOME's chain must be this file's over the held bets before the agency
// sends anything; a server holding more bets than the file is an error too.
func TestRunWelcomeChecks(t *testing.T) {
	bets := testBets(100, 10)
	altered := slices.Clone(bets[:50])
	altered[20].LastName = "Otro"
	tests := []struct {
		name    string
		welcome *frame.Welcome
		want    error
	}{
		{"chain of no bets is not zero", &frame.Welcome{Held: 0, Window: 4}, agency.ErrChain},
		{"held bets altered", &frame.Welcome{Held: 50, Window: 4, Chain: receipt.ChainOf(altered)}, agency.ErrChain},
		{"chain of one bet fewer", &frame.Welcome{Held: 50, Window: 4, Chain: receipt.ChainOf(bets[:49])}, agency.ErrChain},
		{"more than the file", &frame.Welcome{Held: 101, Window: 4, Chain: receipt.ChainOf(bets)}, agency.ErrAhead},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			sent := make(chan frame.Frame, 10)
			s := newFakeServer(t, func(p *peer) {
				if _, ok := expect[*frame.Hello](p); !ok {
					return
				}
				p.send(tc.welcome)
				for {
					f, err := p.recv()
					if err != nil {
						return
					}
					sent <- f
				}
			})
			cfg := agency.Config{Agency: 1, Servers: []string{s.addr()}, RetryBase: time.Millisecond, IOTimeout: hangGuard}
			o := run(t, cfg, fileSource(t, bets))
			if !errors.Is(o.err, tc.want) {
				t.Fatalf("Run error %v, want %v", o.err, tc.want)
			}
			if !strings.Contains(o.err.Error(), strconv.FormatUint(tc.welcome.Held, 10)) {
				t.Errorf("error %q does not say how many bets the server holds", o.err)
			}
			if s.connCount() != 1 || o.res.Bets != 0 {
				t.Errorf("%d connections, %d bets; want 1 (no retry), 0", s.connCount(), o.res.Bets)
			}
			s.stop() // the agency hung up: everything it sent is in
			if len(sent) != 0 {
				t.Errorf("the agency sent %d frames after a WELCOME it should have refused", len(sent))
			}
		})
	}
}

// mutateReceipt returns an honest server's RECEIPT changed by edit.
func mutateReceipt(lot *fakeLottery, bets []frame.Bet, edit func(r *receipt.Receipt)) *frame.Receipt {
	r := receipt.Receipt(*lot.receipt(1, bets))
	edit(&r)
	f := frame.Receipt(r)
	return &f
}

// The RECEIPT must be this agency's, for exactly its bets and chain, and
// signed with the configured key; a bad one is never saved nor retried.
func TestRunReceiptChecks(t *testing.T) {
	bets := testBets(30, 10)
	stranger := newFakeLottery(t, 5)
	tests := []struct {
		name    string
		answer  func(lot *fakeLottery) []frame.Frame
		signPub bool
		want    []error // all must match; none: success
	}{
		{"other agency", func(lot *fakeLottery) []frame.Frame {
			return []frame.Frame{mutateReceipt(lot, bets, func(r *receipt.Receipt) { r.Agency = 2; r.Sign(lot.sign) })}
		}, true, []error{agency.ErrReceipt}},
		{"one bet fewer", func(lot *fakeLottery) []frame.Frame { return []frame.Frame{lot.receipt(1, bets[:29])} }, true, []error{agency.ErrReceipt}},
		{"other chain", func(lot *fakeLottery) []frame.Frame {
			other := slices.Clone(bets)
			other[7].Number++
			return []frame.Frame{lot.receipt(1, other)}
		}, true, []error{agency.ErrChain}},
		{"signature flipped", func(lot *fakeLottery) []frame.Frame {
			return []frame.Frame{mutateReceipt(lot, bets, func(r *receipt.Receipt) { r.Signature[5] ^= 1 })}
		}, true, []error{agency.ErrReceipt, receipt.ErrSignature}},
		{"signed by another key", func(*fakeLottery) []frame.Frame { return []frame.Frame{stranger.receipt(1, bets)} }, true,
			[]error{agency.ErrReceipt, receipt.ErrSignature}},
		{"unsigned", func(lot *fakeLottery) []frame.Frame {
			return []frame.Frame{mutateReceipt(lot, bets, func(r *receipt.Receipt) { r.Signature = frame.Signature{} })}
		}, true, []error{agency.ErrReceipt, receipt.ErrUnsigned}},
		{"NOT_READY first", func(*fakeLottery) []frame.Frame { return []frame.Frame{&frame.NotReady{}} }, true, []error{agency.ErrProtocol}},
		{"unsigned, no key to check it", func(lot *fakeLottery) []frame.Frame {
			unsigned := *lot
			unsigned.sign = nil
			return []frame.Frame{unsigned.receipt(1, bets), unsigned.commitment(1, bets), &frame.Winners{Last: true}}
		}, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			h := newHonest(t)
			h.onFinished = func(*peer, uint64) []frame.Frame { return tc.answer(h.lottery) }
			s := h.start()
			cfg, _ := h.config(t, s)
			if !tc.signPub {
				cfg.SignPub = nil
			}
			cfg.ReceiptFile = filepath.Join(t.TempDir(), "receipt.json")
			o := run(t, cfg, agency.NewSliceSource(bets))
			if len(tc.want) == 0 {
				if o.err != nil || o.res.Receipt == nil || o.res.Receipt.Signature != (frame.Signature{}) {
					t.Fatalf("Run = %+v, %v; want success with the unsigned receipt", o.res, o.err)
				}
				return
			}
			for _, want := range tc.want {
				if !errors.Is(o.err, want) {
					t.Errorf("Run error %v, want %v", o.err, want)
				}
			}
			if s.connCount() != 1 || o.res.Receipt != nil {
				t.Errorf("%d connections, receipt %+v; want 1 (no retry) and none", s.connCount(), o.res.Receipt)
			}
			if _, err := os.Stat(cfg.ReceiptFile); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a receipt that does not check was saved (stat: %v)", err)
			}
		})
	}
}

// The COMMITMENT must hold this agency's leaf (proof up to the root) and
// carry the server's signature; WINNERS never come before it.
func TestRunCommitmentChecks(t *testing.T) {
	bets := testBets(30, 10)
	tests := []struct {
		name string
		edit func(lot *fakeLottery, c *frame.Commitment) []frame.Frame
		want []error
	}{
		{"proof of another leaf", func(lot *fakeLottery, _ *frame.Commitment) []frame.Frame {
			return []frame.Frame{lot.commitment(1, bets[:29])}
		}, []error{agency.ErrReceipt, receipt.ErrProof}},
		{"proof cut short", func(_ *fakeLottery, c *frame.Commitment) []frame.Frame {
			c.Proof = c.Proof[:len(c.Proof)-1]
			return []frame.Frame{c}
		}, []error{agency.ErrReceipt, receipt.ErrProof}},
		{"root changed", func(_ *fakeLottery, c *frame.Commitment) []frame.Frame {
			c.Root[0] ^= 1
			return []frame.Frame{c}
		}, []error{agency.ErrReceipt, receipt.ErrProof}},
		{"signature flipped", func(_ *fakeLottery, c *frame.Commitment) []frame.Frame {
			c.Signature[63] ^= 0x80
			return []frame.Frame{c}
		}, []error{agency.ErrReceipt, receipt.ErrSignature}},
		{"agency outside the tree", func(_ *fakeLottery, c *frame.Commitment) []frame.Frame {
			c.Agencies = 0
			return []frame.Frame{c}
		}, []error{agency.ErrReceipt, receipt.ErrProof}},
		{"commitment of another lottery", func(lot *fakeLottery, _ *frame.Commitment) []frame.Frame {
			other := *lot // same signing key, another lottery
			other.id = sha256.Sum256([]byte("another lottery"))
			return []frame.Frame{other.commitment(1, bets)}
		}, []error{agency.ErrReceipt}},
		{"WINNERS before COMMITMENT", func(*fakeLottery, *frame.Commitment) []frame.Frame {
			return []frame.Frame{&frame.Winners{Last: true}}
		}, []error{agency.ErrProtocol}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			h := newHonest(t)
			h.onFinished = func(*peer, uint64) []frame.Frame {
				c := h.lottery.commitment(1, bets)
				return append([]frame.Frame{h.lottery.receipt(1, bets)}, append(tc.edit(h.lottery, c), &frame.Winners{Last: true, Documents: []string{"1"}})...)
			}
			s := h.start()
			cfg, _ := h.config(t, s)
			cfg.ReceiptFile = filepath.Join(t.TempDir(), "receipt.json")
			o := run(t, cfg, agency.NewSliceSource(bets))
			for _, want := range tc.want {
				if !errors.Is(o.err, want) {
					t.Errorf("Run error %v, want %v", o.err, want)
				}
			}
			if s.connCount() != 1 || len(o.res.Winners) != 0 {
				t.Errorf("%d connections, winners %v; want 1 (no retry), none", s.connCount(), o.res.Winners)
			}
			// The receipt checked and was kept; no root was proven.
			f, err := receipt.ReadFile(cfg.ReceiptFile)
			if err != nil || f.Root != nil {
				t.Errorf("receipt file: %+v, %v; want the receipt without a root", f, err)
			}
		})
	}
}

// The receipt file is written as soon as the RECEIPT checks, before the
// draw, and rewritten with the commitment's root once the winners arrive.
func TestRunReceiptFileRewritten(t *testing.T) {
	noLeaks(t)
	bets := testBets(42, 10)
	h := newHonest(t)
	path := filepath.Join(t.TempDir(), "agency-1.csv.receipt.json")
	var before atomic.Pointer[receipt.File]
	h.onFinished = func(p *peer, _ uint64) []frame.Frame {
		// RECEIPT, NOT_READY, then a fence: once the PONG is back the
		// agency has handled the RECEIPT.
		if p.send(h.lottery.receipt(1, bets), &frame.NotReady{Finished: 1, Agencies: 5}) != nil {
			return nil
		}
		if _, ok := p.fence("holding"); !ok {
			return nil
		}
		f, err := receipt.ReadFile(path)
		if err != nil {
			p.errorf("receipt file while holding: %v", err)
		}
		before.Store(&f)
		return []frame.Frame{h.lottery.commitment(1, bets), &frame.Winners{Last: true}}
	}
	s := h.start()
	cfg, _ := h.config(t, s)
	cfg.ReceiptFile = path
	o := run(t, cfg, agency.NewSliceSource(bets))
	if o.err != nil {
		t.Fatal(o.err)
	}
	want := receipt.Receipt(*h.lottery.receipt(1, bets))
	if f := before.Load(); f == nil || f.Receipt != want || f.Root != nil {
		t.Errorf("receipt file while holding: %+v; want the receipt, no root", f)
	}
	after, err := receipt.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if root := h.lottery.commitment(1, bets).Root; after.Receipt != want || after.Root == nil || *after.Root != root {
		t.Errorf("receipt file after the winners: %+v, want root %x", after, root)
	}
	if err := after.Receipt.Verify(h.lottery.signPub); err != nil {
		t.Errorf("saved receipt: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("%d files beside the receipt, want none (temporary files left?)", len(entries)-1)
	}
}

// A receipt the agency cannot save (its folder is missing) stops it: the
// evidence would be lost, and reconnecting cannot help.
func TestRunReceiptFileUnwritable(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	s := h.start()
	cfg, log := h.config(t, s)
	cfg.ReceiptFile = filepath.Join(t.TempDir(), "missing", "receipt.json")
	o := run(t, cfg, agency.NewSliceSource(testBets(12, 10)))
	if !errors.Is(o.err, agency.ErrReceipt) || !errors.Is(o.err, os.ErrNotExist) {
		t.Fatalf("Run error %v, want ErrReceipt wrapping the missing folder", o.err)
	}
	if s.connCount() != 1 {
		t.Errorf("%d connections, want 1 (no retry)", s.connCount())
	}
	if !hasLine(log.String(), `receipt \| result: fail \| file: `+regexp.QuoteMeta(cfg.ReceiptFile)+` \| error: .*`) {
		t.Error("no receipt fail line naming the file")
	}
}

// The server may PING at any time: before WELCOME, between batches, while
// the agency waits for its RECEIPT and while it holds for the draw. Each
// PING gets a PONG with its payload; an unsolicited PONG is ignored.
func TestRunAnswersPings(t *testing.T) {
	noLeaks(t)
	bets := testBets(300, 10)
	lot := newFakeLottery(t, 5)
	s := newFakeServer(t, func(p *peer) {
		if _, ok := expect[*frame.Hello](p); !ok {
			return
		}
		if extra, ok := p.fence("before welcome"); !ok || len(extra) > 0 {
			p.errorf("frames %v before the PONG, want none", extra)
			return
		}
		p.send(&frame.Welcome{Window: 2, MaxFrame: frame.MaxSize, Chain: receipt.Empty()})
		var got []*frame.Bets
		b, ok := expect[*frame.Bets](p)
		if !ok {
			return
		}
		got = append(got, b)
		extra, ok := p.fence(strings.Repeat("u", 5000)) // a large payload comes back whole
		if !ok {
			return
		}
		for _, f := range extra {
			if b, isBets := f.(*frame.Bets); isBets {
				got = append(got, b)
				continue
			}
			p.errorf("%s while uploading", f.Type())
		}
		p.send(&frame.Pong{Payload: []byte("unsolicited")})
		for held := uint64(0); held < 300; {
			for len(got) == 0 {
				b, ok := expect[*frame.Bets](p)
				if !ok {
					return
				}
				got = append(got, b)
			}
			held = got[0].First + uint64(len(got[0].Bets))
			p.send(ack(bets, got[0].First, len(got[0].Bets), held))
			got = got[1:]
		}
		if _, ok := expect[*frame.Finished](p); !ok {
			return
		}
		if extra, ok := p.fence("before receipt"); !ok || len(extra) > 0 {
			p.errorf("frames %v before the PONG, want none", extra)
			return
		}
		p.send(lot.receipt(1, bets), &frame.NotReady{Finished: 1, Agencies: 5})
		for i := range 3 {
			if extra, ok := p.fence(fmt.Sprint("hold ", i)); !ok || len(extra) > 0 {
				p.errorf("frames %v before the PONG, want none", extra)
				return
			}
		}
		p.send(lot.commitment(1, bets), &frame.Winners{Last: true})
	})
	cfg := agency.Config{Agency: 1, Servers: []string{s.addr()}, IOTimeout: hangGuard, SignPub: lot.signPub}
	o := run(t, cfg, agency.NewSliceSource(bets))
	if o.err != nil || o.res.Bets != 300 || s.connCount() != 1 {
		t.Fatalf("Run = %+v, %v over %d connections", o.res, o.err, s.connCount())
	}
}

// After a fault the agency resumes from what WELCOME says the server holds:
// nothing acknowledged is sent again and nothing is skipped (the honest
// server reports both). When held is where a batch the agency sent ends, it
// resumes from that batch's checkpoint without reading the file again;
// otherwise it reads the file from the start up to held.
func TestRunReconnectResumes(t *testing.T) {
	storageErr := &frame.Error{Code: frame.CodeStorage, Reason: "disk"}
	tests := []struct {
		name    string
		fault   verdict
		resume  uint64 // First of the second connection's first BETS
		rewinds int64
	}{
		{"closed before storing", verdict{store: 0, close: true}, 100, 0},
		{"stored, closed before ACK", verdict{store: -1, reply: &frame.Pong{}, close: true}, 200, 0},
		{"stored part, closed", verdict{store: 30, close: true}, 130, 1},
		{"storage error", verdict{store: 0, reply: storageErr, close: true}, 100, 0},
		{"stored, then storage error", verdict{store: -1, reply: storageErr, close: true}, 200, 0},
		{"flood", verdict{store: 0, reply: &frame.Error{Code: frame.CodeFlood, Reason: "unread"}, close: true}, 100, 0},
		{"busy", verdict{store: 0, reply: &frame.Error{Code: frame.CodeBusy, Reason: "queue full"}, close: true}, 100, 0},
		{"timeout", verdict{store: 0, reply: &frame.Error{Code: frame.CodeTimeout, Reason: "slow"}, close: true}, 100, 0},
		{"shutting down", verdict{store: 0, reply: &frame.Error{Code: frame.CodeShuttingDown, Reason: "drain"}, close: true}, 100, 0},
		{"index gap", verdict{store: 0, reply: &frame.Reject{Code: frame.CodeIndexGap, Index: 100, Reason: "gap"}}, 100, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			h := newHonest(t)
			h.onBets = func(p *peer, b *frame.Bets) verdict {
				if p.n == 0 && b.First == 100 {
					return tc.fault
				}
				if p.n == 0 && b.First > 100 {
					return verdict{store: 0} // behind the fault: not stored, not answered
				}
				return pass
			}
			s := h.start()
			bets := testBets(450, 10)
			src := &countingSource{Source: fileSource(t, bets)}
			cfg, log := h.config(t, s)
			o := run(t, cfg, src)
			if o.err != nil {
				t.Fatalf("Run: %v", o.err)
			}
			stored, got, finished, _ := h.snapshot()
			sameBets(t, stored, bets)
			i := slices.IndexFunc(got, func(r received) bool { return r.conn == 1 })
			if i < 0 || got[i].first != tc.resume {
				t.Errorf("BETS %v: the second connection should start at %d", got, tc.resume)
			}
			if s.connCount() != 2 || !slices.Equal(finished, []uint64{450}) {
				t.Errorf("%d connections, FINISHED %v; want 2, [450]", s.connCount(), finished)
			}
			if n := src.rewinds.Load(); n != tc.rewinds {
				t.Errorf("the file was read from the start %d times, want %d", n, tc.rewinds)
			}
			if !hasLine(log.String(), `connect \| result: in_progress \| server: \S+ \| next: \S+ \| attempt: 1 \| retry_in: \S+ \| error: .*`) {
				t.Error("no connect in_progress line")
			}
		})
	}
}

// Batches of a connection that died are remembered as checkpoints: after a
// second fault the agency still resumes without reading the file again,
// even from a batch the server stored on the first connection.
func TestRunResumesAcrossTwoFaults(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	h.window = 4
	h.onBets = func(p *peer, b *frame.Bets) verdict {
		switch {
		case p.n == 0 && b.First == 0:
			return pass
		case p.n == 0 && b.First <= 200:
			return verdict{store: -1, reply: &frame.Pong{}} // stored, never acknowledged
		case p.n == 0:
			return verdict{store: 0, close: true}
		case p.n == 1:
			return verdict{store: 0, close: true} // dies at once
		}
		return pass
	}
	s := h.start()
	bets := testBets(700, 10)
	src := &countingSource{Source: fileSource(t, bets)}
	cfg, _ := h.config(t, s)
	o := run(t, cfg, src)
	if o.err != nil {
		t.Fatal(o.err)
	}
	stored, got, _, _ := h.snapshot()
	sameBets(t, stored, bets)
	firstOf := func(conn int) uint64 {
		i := slices.IndexFunc(got, func(r received) bool { return r.conn == conn })
		if i < 0 {
			return 1 << 63
		}
		return got[i].first
	}
	if firstOf(1) != 300 || firstOf(2) != 300 {
		t.Errorf("BETS %v: connections 1 and 2 should both start at 300", got)
	}
	if n := src.rewinds.Load(); n != 0 {
		t.Errorf("the file was read from the start %d times, want 0", n)
	}
}

// A server that lost acknowledged bets (restored from an older copy) gets
// them again from where it says it is: the agency warns and reads its file
// from the start up to there, since no checkpoint of its own is that old.
func TestRunServerBehindRewinds(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	h.window = 2
	h.onBets = func(p *peer, b *frame.Bets) verdict {
		if p.n == 0 && b.First == 200 {
			return verdict{store: 0, close: true}
		}
		return pass
	}
	h.onHello = func(p *peer) frame.Frame {
		if p.n == 1 {
			h.mu.Lock()
			h.stored, h.ackedUpTo = h.stored[:50], 50
			h.mu.Unlock()
		}
		return nil
	}
	s := h.start()
	bets := testBets(250, 10)
	src := &countingSource{Source: fileSource(t, bets)}
	cfg, log := h.config(t, s)
	o := run(t, cfg, src)
	if o.err != nil {
		t.Fatal(o.err)
	}
	stored, got, _, _ := h.snapshot()
	sameBets(t, stored, bets)
	if i := slices.IndexFunc(got, func(r received) bool { return r.conn == 1 }); i < 0 || got[i].first != 50 {
		t.Errorf("BETS %v: the second connection should start at 50", got)
	}
	if n := src.rewinds.Load(); n != 1 {
		t.Errorf("the file was read from the start %d times, want 1", n)
	}
	if !hasLine(log.String(), `hello \| result: fail \| agency: 1 \| held: 50 \| acknowledged: 200 \| next: sending the missing bets again`) {
		t.Error("no warning that the server holds fewer bets than it acknowledged")
	}
}

func TestRunEverythingHeld(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	bets := testBets(150, 10)
	h.stored = slices.Clone(bets)
	h.ackedUpTo = 150
	h.winners = []string{"10000001"}
	s := h.start()
	cfg, log := h.config(t, s)
	o := run(t, cfg, fileSource(t, bets))
	if o.err != nil || o.res.Bets != 150 || !slices.Equal(o.res.Winners, h.winners) {
		t.Fatalf("Run = %+v, %v", o.res, o.err)
	}
	_, got, finished, _ := h.snapshot()
	if len(got) != 0 || !slices.Equal(finished, []uint64{150}) {
		t.Errorf("server got BETS %v and FINISHED %v; want none and [150]", got, finished)
	}
	if !hasLine(log.String(), `upload \| result: success \| agency: 1 \| bets: 150 \| chain: [0-9a-f]{64}`) {
		t.Error("no upload success line")
	}
}

func TestRunHeldMoreThanSource(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	h.stored = testBets(20, 10)
	h.ackedUpTo = 20
	s := h.start()
	cfg, _ := h.config(t, s)
	o := run(t, cfg, agency.NewSliceSource(testBets(10, 10)))
	if !errors.Is(o.err, agency.ErrAhead) || !strings.Contains(o.err.Error(), "20") || s.connCount() != 1 {
		t.Fatalf("Run with a source shorter than the server's holdings: %v over %d connections", o.err, s.connCount())
	}
}

// A REJECT stops the agency at once; only index_gap is worth a reconnect.
func TestRunRejects(t *testing.T) {
	tests := []struct {
		code  frame.Code
		index uint64
		retry bool
	}{
		{frame.CodeInvalidBet, 117, false},
		{frame.CodeMalformed, 100, false},
		{frame.CodeAlreadyFinished, 100, false},
		{frame.CodeIndexGap, 100, true},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			noLeaks(t)
			h := newHonest(t)
			reason := "bet 17: field document"
			h.onBets = func(p *peer, b *frame.Bets) verdict {
				if p.n == 0 && b.First == 100 {
					return verdict{store: 0, reply: &frame.Reject{Code: tc.code, Index: tc.index, Reason: reason}}
				}
				if p.n == 0 && b.First > 100 {
					return verdict{store: 0, reply: &frame.Reject{Code: frame.CodeIndexGap, Index: 100, Reason: "gap"}}
				}
				return pass
			}
			s := h.start()
			bets := testBets(250, 10)
			cfg, log := h.config(t, s)
			o := run(t, cfg, agency.NewSliceSource(bets))
			if tc.retry {
				stored, _, _, _ := h.snapshot()
				if o.err != nil || s.connCount() != 2 {
					t.Fatalf("Run: %v over %d connections; want success on the second", o.err, s.connCount())
				}
				sameBets(t, stored, bets)
				return
			}
			var re *agency.RejectError
			if !errors.As(o.err, &re) || re.Reject.Code != tc.code || re.Reject.Index != tc.index {
				t.Fatalf("Run error %v, want a RejectError %s at %d", o.err, tc.code, tc.index)
			}
			for _, want := range []string{tc.code.String(), strconv.FormatUint(tc.index, 10), reason} {
				if !strings.Contains(o.err.Error(), want) {
					t.Errorf("error %q does not mention %q", o.err, want)
				}
			}
			if o.res.Bets != 100 || s.connCount() != 1 {
				t.Errorf("Result %+v over %d connections; want 100 bets, 1 connection (no retry)", o.res, s.connCount())
			}
			if !hasLine(log.String(), fmt.Sprintf(`apuesta_enviada \| result: fail \| cantidad: 100 \| code: %s \| index: %d \| reason: %s`, tc.code, tc.index, reason)) {
				t.Error("no apuesta_enviada fail line")
			}
		})
	}
}

// An ERROR ends the session; the temporary ones are retried (and the upload
// finishes), the others stop the agency on the first connection.
func TestRunServerErrors(t *testing.T) {
	tests := []struct {
		code   frame.Code
		retry  bool
		atBets bool // at the first BETS rather than in answer to HELLO
	}{
		{frame.CodeShuttingDown, true, false},
		{frame.CodeTooManyConns, true, false},
		{frame.CodeStorage, true, false},
		{frame.CodeTimeout, true, true},
		{frame.CodeStorage, true, true},
		{frame.CodeFlood, true, true},
		{frame.CodeBusy, true, true},
		{frame.CodeUnknownAgency, false, false},
		{frame.CodeUnknownKey, false, false},
		{frame.CodeWrongAgency, false, false},
		{frame.CodeSecureRequired, false, false},
		{frame.CodeInsecureServer, false, false},
		{frame.CodeHandshake, false, false},
		{frame.CodeReplaced, false, true},
		{frame.CodeUnexpected, false, true},
		{frame.CodeMalformed, false, true},
		{frame.CodeTooLarge, false, true},
	}
	for _, tc := range tests {
		where := "hello"
		if tc.atBets {
			where = "bets"
		}
		t.Run(tc.code.String()+"_at_"+where, func(t *testing.T) {
			noLeaks(t)
			h := newHonest(t)
			e := &frame.Error{Code: tc.code, Reason: "because " + tc.code.String()}
			if tc.atBets {
				h.onBets = func(p *peer, b *frame.Bets) verdict {
					if p.n == 0 {
						return verdict{store: 0, reply: e, close: true}
					}
					return pass
				}
			} else {
				h.onHello = func(p *peer) frame.Frame {
					if p.n == 0 {
						return e
					}
					return nil
				}
			}
			s := h.start()
			bets := testBets(30, 10)
			cfg, _ := h.config(t, s)
			o := run(t, cfg, agency.NewSliceSource(bets))
			if tc.retry {
				if o.err != nil || o.res.Bets != 30 || s.connCount() != 2 {
					t.Fatalf("Run = %+v, %v over %d connections; want success on the second", o.res, o.err, s.connCount())
				}
				stored, _, _, _ := h.snapshot()
				sameBets(t, stored, bets)
				return
			}
			var se *agency.ServerError
			if !errors.As(o.err, &se) || se.Err.Code != tc.code || se.Temporary() {
				t.Fatalf("Run error %v, want a permanent ServerError %s", o.err, tc.code)
			}
			if !strings.Contains(o.err.Error(), tc.code.String()) || !strings.Contains(o.err.Error(), e.Reason) {
				t.Errorf("error %q does not name the code and reason", o.err)
			}
			if s.connCount() != 1 {
				t.Errorf("%d connections, want 1 (no retry)", s.connCount())
			}
		})
	}
}

func TestServerErrorTemporary(t *testing.T) {
	temporary := map[frame.Code]bool{
		frame.CodeShuttingDown: true, frame.CodeBusy: true, frame.CodeTimeout: true,
		frame.CodeStorage: true, frame.CodeTooManyConns: true, frame.CodeFlood: true,
	}
	for c := frame.Code(0); c <= frame.CodeHandshake+1; c++ {
		e := &agency.ServerError{Err: frame.Error{Code: c}}
		if e.Temporary() != temporary[c] {
			t.Errorf("%s: Temporary() = %v", c, e.Temporary())
		}
	}
}

// refuseHandshakes answers a Noise message 1 with the plaintext ERROR that
// codes[n] names for the n-th connection (the last one from then on), as a
// secured server refuses a handshake.
func refuseHandshakes(codes ...frame.Code) func(p *peer) {
	return func(p *peer) {
		msg1 := make([]byte, secure.HeaderSize+secure.Handshake1Size)
		p.c.SetReadDeadline(time.Now().Add(hangGuard))
		if _, err := io.ReadFull(p.r, msg1); err != nil {
			p.errorf("read handshake: %v", err)
			return
		}
		if msg1[0] != secure.KindHandshake1 {
			p.errorf("first byte 0x%02X, want a handshake record", msg1[0])
			return
		}
		code := codes[min(p.n, len(codes)-1)]
		p.send(&frame.Error{Code: code, Reason: "refused: " + code.String()})
	}
}

// A secured agency refused at the handshake: temporary refusals are
// retried, the others stop it at once.
func TestRunHandshakeRefused(t *testing.T) {
	ks := newKeySet(t, 1)
	tests := []struct {
		codes []frame.Code
		conns int
	}{
		{[]frame.Code{frame.CodeUnknownKey}, 1},
		{[]frame.Code{frame.CodeHandshake}, 1},
		{[]frame.Code{frame.CodeInsecureServer}, 1},
		{[]frame.Code{frame.CodeTooManyConns, frame.CodeUnknownKey}, 2},
		{[]frame.Code{frame.CodeShuttingDown, frame.CodeShuttingDown, frame.CodeHandshake}, 3},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.codes), func(t *testing.T) {
			noLeaks(t)
			s := newFakeServer(t, refuseHandshakes(tc.codes...))
			cfg := ks.secured(agency.Config{Servers: []string{s.addr()}, RetryBase: time.Millisecond, RetryMax: time.Millisecond,
				IOTimeout: hangGuard}, 1)
			o := run(t, cfg, agency.NewSliceSource(testBets(5, 10)))
			var refused *secure.RefusedError
			last := tc.codes[len(tc.codes)-1]
			if !errors.As(o.err, &refused) || refused.Code != last {
				t.Fatalf("Run error %v, want a handshake refused with %s", o.err, last)
			}
			if s.connCount() != tc.conns {
				t.Errorf("%d connections, want %d", s.connCount(), tc.conns)
			}
		})
	}
}

// refusedAddr returns a loopback address nobody listens on.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// countDials wraps cfg's dialer to count connection attempts.
func countDials(cfg *agency.Config) *atomic.Int64 {
	var n atomic.Int64
	d := net.Dialer{Timeout: cfg.IOTimeout}
	cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		n.Add(1)
		return d.DialContext(ctx, "tcp", addr)
	}
	return &n
}

// An agency that makes no progress gives up after about GiveUp (plus one
// backoff), however the server fails it: what counts as progress is a new
// bet acknowledged, the first receipt, NOT_READY or the winners, never a
// connection, a WELCOME or a replayed ACK (issue 8: it retried forever).
func TestRunGivesUp(t *testing.T) {
	noLeaks(t)
	const giveUp = time.Second
	const bound = 8 * time.Second // generous for a busy machine; the old agency never stopped
	storage := &frame.Error{Code: frame.CodeStorage, Reason: "disk full"}
	ks := newKeySet(t, 1)
	tests := []struct {
		name  string
		setup func(t *testing.T, cfg *agency.Config)
		cause func(err error) bool
	}{
		{"connection refused", func(t *testing.T, cfg *agency.Config) {
			cfg.Servers = []string{refusedAddr(t)}
		}, func(err error) bool {
			var op *net.OpError
			return errors.As(err, &op) && strings.Contains(err.Error(), "refused")
		}},
		{"WELCOME then ERROR storage", func(t *testing.T, cfg *agency.Config) {
			h := newHonest(t)
			h.onBets = func(*peer, *frame.Bets) verdict { return verdict{store: 0, reply: storage, close: true} }
			cfg.Servers = []string{h.start().addr()}
		}, isServerError(frame.CodeStorage)},
		{"WELCOME then the connection drops", func(t *testing.T, cfg *agency.Config) {
			h := newHonest(t)
			h.onBets = func(*peer, *frame.Bets) verdict { return verdict{store: 0, close: true} }
			cfg.Servers = []string{h.start().addr()}
		}, func(err error) bool { return errors.Is(err, io.EOF) || strings.Contains(err.Error(), "reset") }},
		{"ERROR storage instead of WELCOME", func(t *testing.T, cfg *agency.Config) {
			h := newHonest(t)
			h.onHello = func(*peer) frame.Frame { return storage }
			cfg.Servers = []string{h.start().addr()}
		}, isServerError(frame.CodeStorage)},
		{"bets stored, FINISHED answered ERROR storage", func(t *testing.T, cfg *agency.Config) {
			h := newHonest(t)
			h.onFinished = func(*peer, uint64) []frame.Frame { return []frame.Frame{storage} }
			cfg.Servers = []string{h.start().addr()}
		}, isServerError(frame.CodeStorage)},
		{"receipt kept, every query answered ERROR storage", func(t *testing.T, cfg *agency.Config) {
			h := newHonest(t)
			h.onFinished = func(_ *peer, total uint64) []frame.Frame {
				return []frame.Frame{h.lottery.receipt(1, testBets(int(total), 10)), storage}
			}
			h.onQuery = func(*peer) []frame.Frame { return []frame.Frame{storage} }
			cfg.Servers = []string{h.start().addr()}
			cfg.SignPub = h.lottery.signPub
		}, isServerError(frame.CodeStorage)},
		{"handshake refused, too many connections", func(t *testing.T, cfg *agency.Config) {
			*cfg = ks.secured(*cfg, 1)
			cfg.Servers = []string{newFakeServer(t, refuseHandshakes(frame.CodeTooManyConns)).addr()}
		}, func(err error) bool {
			var r *secure.RefusedError
			return errors.As(err, &r) && r.Code == frame.CodeTooManyConns
		}},
		{"no answer to BETS", func(t *testing.T, cfg *agency.Config) {
			h := newHonest(t)
			h.onBets = func(*peer, *frame.Bets) verdict { return verdict{store: 0} }
			cfg.Servers = []string{h.start().addr()}
			cfg.IOTimeout = 200 * time.Millisecond
		}, func(err error) bool { var ne net.Error; return errors.As(err, &ne) && ne.Timeout() }},
	}
	// Every case runs at once (each takes GiveUp); the subtests check them.
	// An agency that does not give up is stopped a little after the bound.
	ctx, cancel := context.WithTimeout(context.Background(), bound+2*time.Second)
	defer cancel()
	type ended struct {
		o    outcome
		took time.Duration
	}
	results := make([]chan ended, len(tests))
	dials := make([]*atomic.Int64, len(tests))
	logs := make([]*syncBuffer, len(tests))
	for i, tc := range tests {
		log, buf := testLogger(t)
		cfg := agency.Config{Agency: 1, RetryBase: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond,
			GiveUp: giveUp, IOTimeout: 2 * time.Second, Logger: log}
		tc.setup(t, &cfg)
		dials[i], logs[i], results[i] = countDials(&cfg), buf, make(chan ended, 1)
		go func() {
			start := time.Now()
			res, err := agency.Run(ctx, cfg, agency.NewSliceSource(testBets(30, 10)))
			results[i] <- ended{outcome{res, err}, time.Since(start)}
		}()
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e ended
			select {
			case e = <-results[i]:
			case <-time.After(hangGuard):
				t.Fatal("agency.Run did not return")
			}
			if !errors.Is(e.o.err, agency.ErrGaveUp) {
				t.Fatalf("Run error %v after %v, want ErrGaveUp", e.o.err, e.took)
			}
			if !tc.cause(e.o.err) {
				t.Errorf("error %v does not carry the last failure", e.o.err)
			}
			if e.took < giveUp || e.took > bound {
				t.Errorf("gave up after %v, want between GiveUp %v and %v", e.took, giveUp, bound)
			}
			if dials[i].Load() < 2 {
				t.Errorf("%d connection attempts, want retries before giving up", dials[i].Load())
			}
			if !hasLine(logs[i].String(), `connect \| result: fail \| server: \S+ \| attempts: \d+ \| error: .*`) {
				t.Error("no connect fail line")
			}
		})
	}
}

func isServerError(code frame.Code) func(error) bool {
	return func(err error) bool {
		var se *agency.ServerError
		return errors.As(err, &se) && se.Err.Code == code
	}
}

// Progress resets the give-up clock: a server that stores one more batch
// per connection and then fails is slow, not stuck, and the agency finishes
// however long that takes beyond GiveUp.
func TestRunProgressResetsGiveUp(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	h.onBets = func(p *peer, b *frame.Bets) verdict {
		if b.First == uint64(p.n)*10 {
			return pass
		}
		return verdict{store: 0, reply: &frame.Error{Code: frame.CodeStorage, Reason: "flaky disk"}, close: true}
	}
	s := h.start()
	bets := testBets(300, 10)
	cfg, _ := h.config(t, s)
	cfg.BatchMaxAmount = 10
	cfg.RetryBase, cfg.RetryMax = 20*time.Millisecond, 20*time.Millisecond
	cfg.GiveUp = 150 * time.Millisecond
	start := time.Now()
	o := run(t, cfg, agency.NewSliceSource(bets))
	if o.err != nil {
		t.Fatalf("Run: %v", o.err)
	}
	if took := time.Since(start); took <= cfg.GiveUp {
		t.Fatalf("the upload took %v, not longer than GiveUp %v: the test proves nothing", took, cfg.GiveUp)
	}
	stored, _, _, _ := h.snapshot()
	sameBets(t, stored, bets)
	if s.connCount() != 30 {
		t.Errorf("%d connections, want 30 (one batch each)", s.connCount())
	}
}

// The backoff between attempts grows from RetryBase and stays within RetryMax.
func TestRunBackoff(t *testing.T) {
	noLeaks(t)
	log, buf := testLogger(t)
	cfg := agency.Config{Agency: 2, Servers: []string{refusedAddr(t)}, RetryBase: time.Millisecond,
		RetryMax: 8 * time.Millisecond, GiveUp: 150 * time.Millisecond, Logger: log}
	o := run(t, cfg, agency.NewSliceSource(testBets(3, 10)))
	if !errors.Is(o.err, agency.ErrGaveUp) {
		t.Fatalf("Run error %v, want ErrGaveUp", o.err)
	}
	re := regexp.MustCompile(`attempt: (\d+) \| retry_in: (\S+)`)
	m := re.FindAllStringSubmatch(buf.String(), -1)
	if len(m) < 5 {
		t.Fatalf("%d retries logged, want several", len(m))
	}
	for _, sub := range m {
		attempt, _ := strconv.Atoi(sub[1])
		d, err := time.ParseDuration(sub[2])
		ceiling := cfg.RetryBase
		for i := 1; i < attempt && ceiling < cfg.RetryMax; i++ {
			ceiling *= 2
		}
		ceiling = min(ceiling, cfg.RetryMax)
		if err != nil || d < ceiling/2 || d > ceiling {
			t.Errorf("attempt %s waits %s, want [%v, %v]", sub[1], sub[2], ceiling/2, ceiling)
		}
	}
}

// With several addresses the agency moves to the next one after a failure
// and finishes there.
func TestRunFailover(t *testing.T) {
	tests := map[string]func(t *testing.T) string{
		"nobody listens": refusedAddr,
		"shutting down": func(t *testing.T) string {
			h := newHonest(t)
			h.onHello = func(*peer) frame.Frame { return &frame.Error{Code: frame.CodeShuttingDown, Reason: "draining"} }
			return h.start().addr()
		},
	}
	for name, dead := range tests {
		t.Run(name, func(t *testing.T) {
			noLeaks(t)
			deadAddr := dead(t)
			h := newHonest(t)
			s := h.start()
			cfg, log := h.config(t, s)
			cfg.Servers = []string{deadAddr, s.addr()}
			bets := testBets(120, 10)
			o := run(t, cfg, agency.NewSliceSource(bets))
			if o.err != nil || o.res.Bets != 120 {
				t.Fatalf("Run = %+v, %v", o.res, o.err)
			}
			stored, _, _, _ := h.snapshot()
			sameBets(t, stored, bets)
			if s.connCount() != 1 {
				t.Errorf("%d connections to the live server, want 1", s.connCount())
			}
			want := fmt.Sprintf(`connect \| result: in_progress \| server: %s \| next: %s \| attempt: 1 \| .*`,
				regexp.QuoteMeta(deadAddr), regexp.QuoteMeta(s.addr()))
			if !hasLine(log.String(), want) {
				t.Errorf("no line matching %q", want)
			}
		})
	}
}

func TestRunProtocolViolations(t *testing.T) {
	tests := map[string]func(h *honest){
		"ACK to HELLO": func(h *honest) {
			h.onHello = func(*peer) frame.Frame { return &frame.Ack{} }
		},
		"WINNERS to HELLO": func(h *honest) {
			h.onHello = func(*peer) frame.Frame { return &frame.Winners{Last: true} }
		},
		"ACK to FINISHED": func(h *honest) {
			h.onFinished = func(*peer, uint64) []frame.Frame { return []frame.Frame{&frame.Ack{}} }
		},
		"ACK after RECEIPT": func(h *honest) {
			h.onFinished = func(_ *peer, total uint64) []frame.Frame {
				return []frame.Frame{h.lottery.receipt(1, testBets(int(total), 10)), &frame.Ack{}}
			}
		},
	}
	for name, setup := range tests {
		t.Run(name, func(t *testing.T) {
			noLeaks(t)
			h := newHonest(t)
			setup(h)
			s := h.start()
			cfg, _ := h.config(t, s)
			o := run(t, cfg, agency.NewSliceSource(testBets(5, 10)))
			if !errors.Is(o.err, agency.ErrProtocol) {
				t.Fatalf("Run error %v, want ErrProtocol", o.err)
			}
			if s.connCount() != 1 {
				t.Errorf("%d connections, want 1 (no retry)", s.connCount())
			}
		})
	}
}

func TestRunFinishedRefused(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	h.onFinished = func(*peer, uint64) []frame.Frame {
		return []frame.Frame{&frame.Error{Code: frame.CodeTotalMismatch, Reason: "total 5, held 4"}}
	}
	s := h.start()
	cfg, _ := h.config(t, s)
	o := run(t, cfg, agency.NewSliceSource(testBets(5, 10)))
	var se *agency.ServerError
	if !errors.As(o.err, &se) || se.Err.Code != frame.CodeTotalMismatch || s.connCount() != 1 {
		t.Fatalf("Run error %v over %d connections, want total_mismatch and no retry", o.err, s.connCount())
	}
}

func TestRunCancel(t *testing.T) {
	t.Run("waiting for ACK", func(t *testing.T) {
		noLeaks(t)
		h := newHonest(t)
		release := make(chan struct{})
		h.onBets = func(*peer, *frame.Bets) verdict {
			<-release // never answer until the test ends
			return verdict{store: 0, close: true}
		}
		s := h.start()
		t.Cleanup(func() { close(release) })
		cfg, log := h.config(t, s)
		cfg.IOTimeout = time.Hour // only the cancel can end the wait
		ctx, cancel := context.WithCancel(context.Background())
		done := runAsync(ctx, cfg, agency.NewSliceSource(testBets(10, 10)))
		select {
		case <-h.gotBets:
		case <-time.After(hangGuard):
			t.Fatal("no BETS reached the server")
		}
		cancel()
		o := wait(t, done)
		if !errors.Is(o.err, context.Canceled) || o.res.Bets != 0 {
			t.Fatalf("Run = %+v, %v; want context.Canceled with 0 bets", o.res, o.err)
		}
		if !hasLine(log.String(), `close_socket \| result: success \| server: \S+`) {
			t.Error("no close_socket line")
		}
	})
	t.Run("holding for winners", func(t *testing.T) {
		noLeaks(t)
		h := newHonest(t)
		h.onFinished = func(_ *peer, total uint64) []frame.Frame {
			return []frame.Frame{h.lottery.receipt(1, testBets(int(total), 10)), &frame.NotReady{Finished: 1, Agencies: 2}}
		}
		s := h.start()
		cfg, log := h.config(t, s)
		ctx, cancel := context.WithCancel(context.Background())
		done := runAsync(ctx, cfg, agency.NewSliceSource(testBets(10, 10)))
		log.await(t, `consulta_ganadores \| result: in_progress .*`)
		cancel()
		o := wait(t, done)
		if !errors.Is(o.err, context.Canceled) || o.res.Bets != 10 {
			t.Fatalf("Run = %+v, %v; want context.Canceled with 10 bets", o.res, o.err)
		}
	})
	t.Run("backing off", func(t *testing.T) {
		noLeaks(t)
		log, buf := testLogger(t)
		cfg := agency.Config{Agency: 1, Servers: []string{refusedAddr(t)}, RetryBase: time.Hour, RetryMax: time.Hour, Logger: log}
		ctx, cancel := context.WithCancel(context.Background())
		done := runAsync(ctx, cfg, agency.NewSliceSource(testBets(1, 10)))
		buf.await(t, `connect \| result: in_progress .*`)
		cancel()
		if o := wait(t, done); !errors.Is(o.err, context.Canceled) {
			t.Fatalf("Run error %v, want context.Canceled", o.err)
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		noLeaks(t)
		h := newHonest(t)
		s := h.start()
		cfg, _ := h.config(t, s)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if o := wait(t, runAsync(ctx, cfg, agency.NewSliceSource(testBets(1, 10)))); !errors.Is(o.err, context.Canceled) {
			t.Fatalf("Run error %v, want context.Canceled", o.err)
		}
	})
}

// A bad row fails the upload with its RowError, naming the file and line;
// no bet of its batch leaves, nothing is FINISHED and nothing is retried.
func TestRunBadRow(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	s := h.start()
	bets := testBets(300, 10)
	content := betsCSV(bets[:149]) + "Ana,Gómez,12a,1990-01-01,1\n" + betsCSV(bets[150:])
	src, path := openFile(t, content)
	cfg, log := h.config(t, s)
	o := run(t, cfg, src)
	var re *agency.RowError
	if !errors.As(o.err, &re) || re.Line != 150 || re.File != path {
		t.Fatalf("Run error %v, want a RowError at %s:150", o.err, path)
	}
	if o.res.Bets > 100 {
		t.Errorf("Result.Bets = %d, more than the 100 before the bad row's batch", o.res.Bets)
	}
	s.stop() // the agency is gone: everything it sent is in
	stored, got, finished, _ := h.snapshot()
	for _, r := range got {
		if r.first != 0 {
			t.Errorf("server got BETS %v; the bad row's batch (from 100) must not leave", got)
		}
	}
	if len(stored) > 0 {
		sameBets(t, stored, bets[:100])
	}
	if len(finished) != 0 || s.connCount() != 1 {
		t.Errorf("FINISHED %v over %d connections; want none, 1", finished, s.connCount())
	}
	if !hasLine(log.String(), fmt.Sprintf(`upload \| result: fail \| bets: \d+ \| error: %s:150: .*document.*`, regexp.QuoteMeta(path))) {
		t.Error("no upload fail line naming the row")
	}
}

// The agency cuts its batches to the max_frame WELCOME announces; the fake
// server's decoder refuses anything larger.
func TestRunMaxFrameFromWelcome(t *testing.T) {
	for _, limit := range []int{2048, 512, frame.MaxSize} {
		t.Run(strconv.Itoa(limit), func(t *testing.T) {
			noLeaks(t)
			h := newHonest(t)
			h.maxFrame = limit
			s := h.start()
			bets := testBets(100, frame.MaxNameLen)
			cfg, _ := h.config(t, s)
			cfg.BatchMaxAmount = 1000
			if o := run(t, cfg, agency.NewSliceSource(bets)); o.err != nil {
				t.Fatal(o.err)
			}
			stored, got, _, _ := h.snapshot()
			sameBets(t, stored, bets)
			per := (limit - frame.BetsFrameSize(nil)) / frame.BetWireSize(&bets[0])
			for i, r := range got {
				if r.count != per && i != len(got)-1 {
					t.Errorf("BETS %d holds %d bets, want %d (as many as %d bytes hold)", i, r.count, per, limit)
				}
			}
			if s.connCount() != 1 {
				t.Errorf("%d connections, want 1", s.connCount())
			}
		})
	}
}

func TestRejectErrorMessage(t *testing.T) {
	e := &agency.RejectError{Reject: frame.Reject{Code: frame.CodeInvalidBet, Index: 7, Reason: "bad"}}
	if got, want := e.Error(), "batch rejected (invalid_bet) at bet 7: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// The in_progress line reports acknowledged bets and the share of the file
// read, growing, and never more often than Config.Progress allows.
func TestRunProgressLines(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	s := h.start()
	bets := testBets(250, 10)
	cfg, log := h.config(t, s)
	cfg.Progress = time.Nanosecond
	if o := run(t, cfg, fileSource(t, bets)); o.err != nil {
		t.Fatalf("Run: %v", o.err)
	}
	re := regexp.MustCompile(`action: upload \| result: in_progress \| agency: 1 \| bets: (\d+) \| percent: (\d+\.\d)`)
	matches := re.FindAllStringSubmatch(log.String(), -1)
	// The first ACK only starts the clock; the next two are reported.
	if len(matches) != 2 {
		t.Fatalf("%d in_progress lines, want 2:\n%s", len(matches), log.String())
	}
	prevBets, prevPct := 0, 0.0
	for i, m := range matches {
		n, _ := strconv.Atoi(m[1])
		pct, _ := strconv.ParseFloat(m[2], 64)
		if n <= prevBets || pct < prevPct || pct > 100 {
			t.Errorf("line %d: bets %d percent %.1f after bets %d percent %.1f", i, n, pct, prevBets, prevPct)
		}
		prevBets, prevPct = n, pct
	}
	if prevBets != 250 {
		t.Errorf("last in_progress line says %d bets, want 250", prevBets)
	}
	// An hour between lines: none in a quick upload.
	h2 := newHonest(t)
	cfg2, buf2 := h2.config(t, h2.start())
	cfg2.Progress = time.Hour
	if o := run(t, cfg2, fileSource(t, bets)); o.err != nil {
		t.Fatal(o.err)
	}
	if n := len(re.FindAllString(buf2.String(), -1)); n != 0 {
		t.Errorf("%d in_progress lines with Progress 1h, want none", n)
	}
}

// The upload reads the file on a goroutine of its own; the progress line
// must not ask the source how far it has read while that goroutine reads it
// (a data race -race reports, on FileSource's csv.Reader and SliceSource
// alike). Many small batches at window 1 keep the reader ahead of every ACK.
// The share reported is the one read when the acknowledged batch was.
func TestRunProgressDoesNotRaceTheReader(t *testing.T) {
	bets := testBets(2000, 8)
	content := betsCSV(bets)
	sources := map[string]struct {
		open  func(t *testing.T) agency.Source
		share func(n int) float64 // of the source read after n bets
	}{
		"slice": {func(*testing.T) agency.Source { return agency.NewSliceSource(bets) },
			func(n int) float64 { return float64(n) / float64(len(bets)) }},
		"file": {func(t *testing.T) agency.Source { src, _ := openFile(t, content); return src },
			func(n int) float64 {
				off := 0
				for _, line := range strings.SplitAfter(content, "\n")[:n] {
					off += len(line)
				}
				return float64(off) / float64(len(content))
			}},
	}
	for name, tc := range sources {
		t.Run(name, func(t *testing.T) {
			noLeaks(t)
			h := newHonest(t)
			h.window = 1
			s := h.start()
			cfg, log := h.config(t, s)
			cfg.BatchMaxAmount = 10
			cfg.Progress = time.Nanosecond
			if o := run(t, cfg, tc.open(t)); o.err != nil || o.res.Bets != 2000 {
				t.Fatalf("Run = %+v, %v", o.res, o.err)
			}
			re := regexp.MustCompile(`action: upload \| result: in_progress \| agency: 1 \| bets: (\d+) \| percent: (\d+\.\d)`)
			m := re.FindAllStringSubmatch(log.String(), -1)
			if len(m) != 199 {
				t.Fatalf("%d in_progress lines, want one per ACK but the first", len(m))
			}
			for _, sub := range m {
				n, _ := strconv.Atoi(sub[1])
				if want := fmt.Sprintf("%.1f", 100*tc.share(n)); sub[2] != want {
					t.Errorf("%d bets acknowledged reported as %s%% of the source read, want %s%%", n, sub[2], want)
				}
			}
		})
	}
}

// Single-bet mode (LogEachBet): the server stores the bet but the connection
// breaks before its ACK. On reconnect WELCOME says held 1 with this bet's
// chain: the agency logs the bet as sent and stored (the course's exercise 5
// line), as the lost ACK would have, and finishes with its winner.
func TestRunSingleBetConfirmedByWelcomeIsLogged(t *testing.T) {
	noLeaks(t)
	h := newHonest(t)
	h.onBets = func(p *peer, b *frame.Bets) verdict {
		if p.n == 0 {
			return verdict{store: -1, reply: &frame.Pong{}, close: true} // stored, ACK lost
		}
		return pass
	}
	bets := testBets(1, 10)
	h.winners = []string{bets[0].Document}
	s := h.start()
	cfg, log := h.config(t, s)
	cfg.LogEachBet = true
	o := run(t, cfg, agency.NewSliceSource(bets))
	if o.err != nil {
		t.Fatalf("Run: %v", o.err)
	}
	stored, _, _, _ := h.snapshot()
	sameBets(t, stored, bets)
	if !hasLine(log.String(), `apuesta_enviada \| result: success \| dni: `+bets[0].Document+` \| numero: 0`) {
		t.Errorf("the stored bet was never logged as apuesta_enviada; log:\n%s", log.String())
	}
}

// SIGTERM (a cancelled context) must stop the agency promptly, also while it
// waits for a server that accepted the TCP connection but has not answered
// the handshake yet (overloaded, or a wrong port). Compose's stop gives 10 s.
func TestRunCancelDuringHandshake(t *testing.T) {
	noLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c // hold it open, say nothing
		}
	}()
	key, _ := secure.GenerateKey(nil)
	server, _ := secure.GenerateKey(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := agency.Config{Agency: 1, Servers: []string{ln.Addr().String()}, Key: &key, ServerPub: server.Public(),
		IOTimeout: 20 * time.Second, RetryBase: time.Millisecond, RetryMax: time.Millisecond, GiveUp: time.Minute}
	done := make(chan error, 1)
	go func() {
		_, err := agency.Run(ctx, cfg, agency.NewSliceSource(testBets(1, 10)))
		done <- err
	}()
	c := <-accepted
	defer c.Close()
	time.Sleep(50 * time.Millisecond)
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if took := time.Since(start); took > 5*time.Second { // far below the 20 s IOTimeout
			t.Errorf("Run returned %v only %v after the cancel (IOTimeout %v)", err, took.Round(time.Millisecond), cfg.IOTimeout)
		}
	case <-time.After(hangGuard):
		t.Fatal("Run never returned")
	}
}
