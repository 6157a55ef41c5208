package agency_test

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
)

// fakeServer is a plaintext listener whose every connection is handled by
// a function of the test, which decides every frame the agency gets.
type fakeServer struct {
	t      *testing.T
	ln     net.Listener
	handle func(p *peer)
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

// newFakeServer listens on 127.0.0.1 and serves every connection with
// handle, in a goroutine of its own, until the test ends.
func newFakeServer(t *testing.T, handle func(p *peer)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, handle: handle}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.stop)
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		n := len(s.conns)
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.handle(&peer{t: s.t, n: n, c: c, r: frame.NewReader(c)})
		}()
	}
}

func (s *fakeServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *fakeServer) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// peer is the server's end of one connection.
type peer struct {
	t   *testing.T
	n   int // 0 for the first connection
	c   net.Conn
	r   *bufio.Reader
	dec frame.Decoder
}

// recv returns the next frame the agency sent.
func (p *peer) recv() (frame.Frame, error) {
	p.c.SetReadDeadline(time.Now().Add(hangGuard))
	return p.dec.Next(p.r)
}

// send writes frames in one write, as a server coalescing its answers does.
func (p *peer) send(fs ...frame.Frame) error {
	var b []byte
	for _, f := range fs {
		var err error
		if b, err = frame.Append(b, f); err != nil {
			return err
		}
	}
	p.c.SetWriteDeadline(time.Now().Add(hangGuard))
	_, err := p.c.Write(b)
	return err
}

// errorf reports a broken expectation of the script and returns false.
func (p *peer) errorf(format string, a ...any) bool {
	p.t.Helper()
	p.t.Errorf("conn %d: "+format, append([]any{p.n}, a...)...)
	return false
}

// expect receives the next frame, which must be a T.
func expect[T frame.Frame](p *peer) (T, bool) {
	p.t.Helper()
	var zero T
	f, err := p.recv()
	if err != nil {
		return zero, p.errorf("want %T: %v", zero, err)
	}
	v, ok := f.(T)
	if !ok {
		return zero, p.errorf("want %T, got %s %+v", zero, f.Type(), f)
	}
	return v, true
}

// fence PINGs the agency and returns the frames it sent before the PONG
// carrying the same payload: the agency answers frames in order, so when
// the PONG arrives it has sent everything it meant to send before it read
// the PING.
func (p *peer) fence(payload string) ([]frame.Frame, bool) {
	p.t.Helper()
	if err := p.send(&frame.Ping{Payload: []byte(payload)}); err != nil {
		return nil, p.errorf("send PING: %v", err)
	}
	var before []frame.Frame
	for {
		f, err := p.recv()
		if err != nil {
			return before, p.errorf("waiting for PONG %q: %v", payload, err)
		}
		if pong, ok := f.(*frame.Pong); ok {
			if string(pong.Payload) != payload {
				return before, p.errorf("PONG %q to PING %q", pong.Payload, payload)
			}
			return before, true
		}
		before = append(before, f)
	}
}

// fakeLottery is what a fake server tells an agency about the draw: the
// lottery id, the other agencies' leaves and the signing key.
type fakeLottery struct {
	id       frame.Hash
	agencies uint32
	sign     ed25519.PrivateKey
	signPub  ed25519.PublicKey
}

func newFakeLottery(t testing.TB, agencies uint32) *fakeLottery {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeLottery{id: sha256.Sum256([]byte(t.Name())), agencies: agencies, sign: key, signPub: pub}
}

// receipt is the signed RECEIPT for agency's bets.
func (l *fakeLottery) receipt(agency uint32, bets []frame.Bet) *frame.Receipt {
	r := receipt.Receipt{Lottery: l.id, Agency: agency, Bets: uint64(len(bets)), Chain: receipt.ChainOf(bets)}
	r.Sign(l.sign)
	f := frame.Receipt(r)
	return &f
}

// commitment is the signed COMMITMENT holding agency's leaf over bets,
// with made-up leaves for the other agencies.
func (l *fakeLottery) commitment(agency uint32, bets []frame.Bet) *frame.Commitment {
	leaves := make([]receipt.Leaf, l.agencies)
	for i := range leaves {
		a := uint32(i + 1)
		leaves[i] = receipt.Leaf{Agency: a, Bets: uint64(a) * 7, Chain: sha256.Sum256([]byte{byte(a)})}
	}
	leaves[agency-1] = receipt.Leaf{Agency: agency, Bets: uint64(len(bets)), Chain: receipt.ChainOf(bets)}
	tree := receipt.NewTree(leaves)
	c := receipt.Commitment{Lottery: l.id, Agencies: l.agencies, Root: tree.Root()}
	c.Sign(l.sign)
	return &frame.Commitment{Lottery: c.Lottery, Agencies: c.Agencies, Root: c.Root, Signature: c.Signature,
		Proof: tree.Proof(int(agency - 1))}
}

// verdict is what the honest server does with one BETS frame.
type verdict struct {
	store int         // how many of its bets to store; -1 means all
	reply frame.Frame // nil means ACK when all were stored, nothing otherwise
	close bool        // close the connection afterwards
}

var pass = verdict{store: -1}

// received is one BETS frame as the honest server saw it.
type received struct {
	conn  int
	first uint64
	count int
}

// honest is a fake server that follows the protocol (stores batches by
// their stream index, ACKs with the chain, answers FINISHED with a signed
// RECEIPT, then NOT_READY or COMMITMENT and WINNERS), with hooks for
// faults. It keeps what it stored across connections and reports any
// frame the agency should not have sent.
type honest struct {
	t       *testing.T
	lottery *fakeLottery

	// Knobs, set before the agency starts.
	agency       uint32
	window       uint16
	maxFrame     int
	pingInterval time.Duration
	winners      []string
	notReady     int  // NOT_READY answers before the draw is done
	poll         bool // answer one NOT_READY per FINISHED/QUERY_WINNERS (the agency hangs up)
	retryHint    time.Duration
	holdPings    int                                  // PINGs sent (and PONGs required) after each NOT_READY in hold mode
	onHello      func(p *peer) frame.Frame            // nil reply: WELCOME with what is held
	onBets       func(p *peer, b *frame.Bets) verdict // nil: pass
	onFinished   func(p *peer, total uint64) []frame.Frame
	onQuery      func(p *peer) []frame.Frame // nil answer: as the draw says

	mu        sync.Mutex
	stored    []frame.Bet
	got       []received
	ackedUpTo uint64 // highest stream index acknowledged
	finished  []uint64
	queries   int
	gotBets   chan struct{} // one token per BETS frame received
}

func newHonest(t *testing.T) *honest {
	return &honest{t: t, lottery: newFakeLottery(t, 5), agency: 1, window: 16, maxFrame: frame.MaxSize,
		retryHint: time.Millisecond, gotBets: make(chan struct{}, 10000)}
}

// start serves h on a new fake server.
func (h *honest) start() *fakeServer { return newFakeServer(h.t, h.serve) }

func (h *honest) snapshot() (stored []frame.Bet, got []received, finished []uint64, queries int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.stored), slices.Clone(h.got), slices.Clone(h.finished), h.queries
}

// config is an agency configuration for s with tiny delays and generous
// timeouts.
func (h *honest) config(t testing.TB, s *fakeServer) (agency.Config, *syncBuffer) {
	log, buf := testLogger(t)
	return agency.Config{
		Agency:         h.agency,
		Servers:        []string{s.addr()},
		BatchMaxAmount: 100,
		RetryBase:      time.Millisecond,
		RetryMax:       10 * time.Millisecond,
		GiveUp:         hangGuard,
		IOTimeout:      hangGuard,
		Logger:         log,
		SignPub:        h.lottery.signPub,
	}, buf
}

func (h *honest) welcome() *frame.Welcome {
	h.mu.Lock()
	defer h.mu.Unlock()
	return &frame.Welcome{Held: uint64(len(h.stored)), Finished: len(h.finished) > 0, Window: h.window,
		MaxFrame: uint16(h.maxFrame), ReadTimeout: time.Second, PingInterval: h.pingInterval,
		Chain: receipt.ChainOf(h.stored)}
}

func (h *honest) serve(p *peer) {
	p.dec.MaxSize = h.maxFrame
	hello, ok := expect[*frame.Hello](p)
	if !ok {
		return
	}
	if hello.Agency != h.agency {
		p.errorf("HELLO for agency %d, want %d", hello.Agency, h.agency)
		return
	}
	var reply frame.Frame
	if h.onHello != nil {
		reply = h.onHello(p)
	}
	if reply == nil {
		reply = h.welcome()
	}
	if p.send(reply) != nil {
		return
	}
	if _, isErr := reply.(*frame.Error); isErr {
		return
	}
	firstBets := true
	for {
		f, err := p.recv()
		if err != nil {
			var ne net.Error
			if !errors.Is(err, io.EOF) && !errors.As(err, &ne) && !strings.Contains(err.Error(), "reset") {
				p.errorf("%v", err)
			}
			return
		}
		switch f := f.(type) {
		case *frame.Bets:
			if !h.bets(p, f, firstBets) {
				return
			}
			firstBets = false
		case *frame.Finished:
			if !h.finish(p, f.Total) {
				return
			}
		case *frame.QueryWinners:
			h.mu.Lock()
			h.queries++
			h.mu.Unlock()
			if h.onQuery != nil {
				if answer := h.onQuery(p); answer != nil {
					if _, isErr := answer[len(answer)-1].(*frame.Error); p.send(answer...) != nil || isErr {
						return
					}
					continue
				}
			}
			if !h.answerWinners(p) {
				return
			}
		case *frame.Ping:
			if p.send(&frame.Pong{Payload: f.Payload}) != nil {
				return
			}
		case *frame.Pong: // an answer to a PING of ours outside a fence
		default:
			p.errorf("unexpected %s", f.Type())
			return
		}
	}
}

func (h *honest) bets(p *peer, b *frame.Bets, first bool) bool {
	h.gotBets <- struct{}{}
	v := pass
	if h.onBets != nil {
		v = h.onBets(p, b)
	}
	h.mu.Lock()
	h.got = append(h.got, received{conn: p.n, first: b.First, count: len(b.Bets)})
	if b.First < h.ackedUpTo {
		p.errorf("BETS from %d re-sends bets acknowledged up to %d", b.First, h.ackedUpTo)
	}
	if b.First > uint64(len(h.stored)) {
		// Behind a batch that was not stored the gap is expected; the
		// first batch of a connection must start at WELCOME's held.
		if first {
			p.errorf("BETS from %d leaves a gap after %d held", b.First, len(h.stored))
		}
		held := uint64(len(h.stored))
		h.mu.Unlock()
		return p.send(&frame.Reject{Code: frame.CodeIndexGap, Index: held, Reason: "gap"}) == nil
	}
	keep := len(b.Bets)
	if v.store >= 0 {
		keep = min(v.store, keep)
	}
	for i, bet := range b.Bets[:keep] { // a batch may overlap what is held
		if b.First+uint64(i) == uint64(len(h.stored)) {
			h.stored = append(h.stored, bet)
		}
	}
	reply := v.reply
	if reply == nil && v.store < 0 {
		reply = &frame.Ack{First: b.First, Count: uint16(len(b.Bets)), Held: uint64(len(h.stored)),
			Chain: receipt.ChainOf(h.stored)}
		h.ackedUpTo = max(h.ackedUpTo, b.First+uint64(len(b.Bets)))
	}
	h.mu.Unlock()
	if reply != nil && p.send(reply) != nil {
		return false
	}
	return !v.close
}

func (h *honest) finish(p *peer, total uint64) bool {
	h.mu.Lock()
	h.finished = append(h.finished, total)
	if total != uint64(len(h.stored)) {
		p.errorf("FINISHED total %d, server holds %d", total, len(h.stored))
	}
	stored := slices.Clone(h.stored)
	h.mu.Unlock()
	if h.onFinished != nil {
		if answer := h.onFinished(p, total); answer != nil {
			if p.send(answer...) != nil {
				return false
			}
			_, isErr := answer[len(answer)-1].(*frame.Error)
			return !isErr
		}
	}
	if p.send(h.lottery.receipt(h.agency, stored)) != nil {
		return false
	}
	return h.answerWinners(p)
}

// answerWinners sends NOT_READY while the draw is pending (PINGing the
// agency in between when holdPings says so), then COMMITMENT and WINNERS.
func (h *honest) answerWinners(p *peer) bool {
	for {
		h.mu.Lock()
		pending := h.notReady > 0
		if pending {
			h.notReady--
		}
		h.mu.Unlock()
		if !pending {
			break
		}
		if p.send(&frame.NotReady{RetryAfter: h.retryHint, Finished: 1, Agencies: h.lottery.agencies}) != nil {
			return false
		}
		if h.poll {
			return true // the agency hangs up and asks again later
		}
		for i := range h.holdPings {
			payload := fmt.Sprintf("hold %d", i)
			if extra, ok := p.fence(payload); !ok || len(extra) > 0 {
				return p.errorf("PING %q while holding: frames %v before the PONG", payload, extra)
			}
		}
	}
	h.mu.Lock()
	stored := slices.Clone(h.stored)
	h.mu.Unlock()
	out := []frame.Frame{h.lottery.commitment(h.agency, stored)}
	for _, w := range frame.WinnersFrames(h.winners) {
		out = append(out, w)
	}
	return p.send(out...) == nil
}
