package agency

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/receipt"
	"github.com/tp0/loteria/secure"
)

// Ways to wait for the draw after FINISHED.
const (
	WaitHold = "hold" // stay connected; the server pushes WINNERS
	WaitPoll = "poll" // disconnect; ask again with QUERY_WINNERS, backing off
)

// Defaults for Config.
const (
	DefaultServer         = "server:12345"
	DefaultBatchMaxAmount = 100
	DefaultRetryBase      = 100 * time.Millisecond
	DefaultRetryMax       = 5 * time.Second
	DefaultGiveUp         = 2 * time.Minute
	DefaultIOTimeout      = 30 * time.Second
	DefaultProgress       = 2 * time.Second
)

// Errors of an upload; match them with errors.Is or errors.As.
var (
	ErrGaveUp   = errors.New("gave up reconnecting")
	ErrProtocol = errors.New("protocol violation by the server")
	ErrChain    = errors.New("the server's copy of this agency's bets differs from its file")
	ErrAhead    = errors.New("the server holds more bets than the file")
	ErrReceipt  = errors.New("the server's receipt does not check")
)

// RejectError is a REJECT from the server: the batch was not stored.
type RejectError struct{ Reject frame.Reject }

func (e *RejectError) Error() string {
	return fmt.Sprintf("batch rejected (%s) at bet %d: %s", e.Reject.Code, e.Reject.Index, e.Reject.Reason)
}

// ServerError is an ERROR from the server, which then closed the connection.
type ServerError struct{ Err frame.Error }

func (e *ServerError) Error() string {
	return fmt.Sprintf("server error (%s): %s", e.Err.Code, e.Err.Reason)
}

// Temporary reports whether reconnecting may help.
func (e *ServerError) Temporary() bool { return e.Err.Code.Temporary() }

// Config configures an agency's upload.
type Config struct {
	Agency         uint32
	Servers        []string // host:port of each event server, tried in turn
	BatchMaxAmount int      // most bets per batch
	Wait           string   // WaitHold or WaitPoll
	RetryBase      time.Duration
	RetryMax       time.Duration
	GiveUp         time.Duration // longest stretch without progress before giving up
	IOTimeout      time.Duration // dial and handshake timeout, longest wait for an answer
	LogEachBet     bool          // log apuesta_enviada for every acknowledged bet
	Progress       time.Duration // at most this often an upload in_progress line
	Logger         *zap.Logger
	// Key and ServerPub secure the connection (Noise IK); a nil Key speaks
	// the plaintext protocol, for servers run with --insecure.
	Key       *secure.PrivateKey
	ServerPub secure.PublicKey
	// SignPub, when set, is the server's signing key: receipts and the
	// commitment must carry its signature.
	SignPub ed25519.PublicKey
	// ReceiptFile is where the receipt is saved; "" saves none.
	ReceiptFile string
	// Dial opens connections; nil means a TCP dialer with IOTimeout.
	Dial func(ctx context.Context, address string) (net.Conn, error)
}

func (c *Config) setDefaults() {
	if len(c.Servers) == 0 {
		c.Servers = []string{DefaultServer}
	}
	if c.BatchMaxAmount <= 0 {
		c.BatchMaxAmount = DefaultBatchMaxAmount
	}
	if c.Wait == "" {
		c.Wait = WaitHold
	}
	if c.RetryBase <= 0 {
		c.RetryBase = DefaultRetryBase
	}
	if c.RetryMax < c.RetryBase {
		c.RetryMax = max(DefaultRetryMax, c.RetryBase)
	}
	if c.GiveUp <= 0 {
		c.GiveUp = DefaultGiveUp
	}
	if c.IOTimeout <= 0 {
		c.IOTimeout = DefaultIOTimeout
	}
	if c.Progress <= 0 {
		c.Progress = DefaultProgress
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Dial == nil {
		d := &net.Dialer{Timeout: c.IOTimeout, KeepAlive: 15 * time.Second}
		c.Dial = func(ctx context.Context, address string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", address)
		}
	}
}

// Result is what a finished upload learned.
type Result struct {
	Bets    uint64           // bets the server holds for the agency
	Winners []string         // documents of the agency's winning bets
	Receipt *receipt.Receipt // the server's receipt for those bets
	Root    frame.Hash       // the draw's commitment, which holds the receipt's leaf
}

// Run uploads every bet of src, sends FINISHED and waits for the winners,
// reconnecting and resuming after faults. It returns ctx's error if ctx is
// cancelled first.
func Run(ctx context.Context, cfg Config, src Source) (Result, error) {
	cfg.setDefaults()
	c := &client{cfg: cfg, log: cfg.Logger, src: src, batcher: NewBatcher(src, cfg.BatchMaxAmount)}
	if cfg.Key != nil {
		c.identity = secure.NewIdentity(*cfg.Key)
	}
	c.base = c.batcher.Checkpoint()
	return c.run(ctx)
}

type client struct {
	cfg      Config
	log      *zap.Logger
	identity *secure.Identity // cfg.Key, kept between connections; nil: plaintext
	src      Source
	batcher  *Batcher
	server   int // index in cfg.Servers of the address to dial

	base     Checkpoint   // the batcher at the last acknowledged bet
	unacked  []Checkpoint // after each batch sent but not acknowledged when the connection broke
	acked    uint64       // the most bets ever acknowledged
	total    uint64       // bets in the file, once read to its end
	complete bool         // total and final are known
	final    frame.Hash   // chain over every bet of the file

	receipt  *receipt.Receipt
	winners  []string
	root     frame.Hash
	progress bool // this attempt got somewhere: reset the give-up clock
	shown    time.Time
	read     float64 // share of the source read up to the last acknowledged batch
}

type notReady struct{ frame.NotReady }

func (n *notReady) Error() string {
	return fmt.Sprintf("draw not done: %d of %d agencies finished", n.Finished, n.Agencies)
}

func (c *client) run(ctx context.Context) (Result, error) {
	attempt := 0
	lastOK := time.Now()
	delay := time.Duration(0)
	for {
		err := c.session(ctx)
		if err == nil {
			return Result{Bets: c.total, Winners: c.winners, Receipt: c.receipt, Root: c.root}, nil
		}
		if ctx.Err() != nil {
			return Result{Bets: c.acked}, ctx.Err()
		}
		if c.progress {
			lastOK, attempt, c.progress = time.Now(), 0, false
		}
		var nr *notReady
		if errors.As(err, &nr) {
			delay = c.pollDelay(delay, nr.RetryAfter)
			c.log.Info("consulta_ganadores", logging.InProgress, zap.Uint32("agency", c.cfg.Agency),
				zap.Uint32("finished", nr.Finished), zap.Uint32("agencies", nr.Agencies), zap.Duration("retry_in", delay))
			if !sleep(ctx, delay) {
				return Result{Bets: c.acked}, ctx.Err()
			}
			continue
		}
		delay = 0
		if !retryable(err) {
			return Result{Bets: c.acked}, err
		}
		if time.Since(lastOK) > c.cfg.GiveUp {
			c.log.Error("connect", logging.Fail, zap.String("server", c.addr()), zap.Int("attempts", attempt), zap.Error(err))
			return Result{Bets: c.acked}, fmt.Errorf("%w: no progress for %v: %w", ErrGaveUp, c.cfg.GiveUp, err)
		}
		attempt++
		failed := c.addr()
		c.server = (c.server + 1) % len(c.cfg.Servers)
		wait := backoff(c.cfg.RetryBase, c.cfg.RetryMax, attempt)
		c.log.Info("connect", logging.InProgress, zap.String("server", failed), zap.String("next", c.addr()),
			zap.Int("attempt", attempt), zap.Duration("retry_in", wait), zap.Error(err))
		if !sleep(ctx, wait) {
			return Result{Bets: c.acked}, ctx.Err()
		}
	}
}

func (c *client) addr() string { return c.cfg.Servers[c.server] }

// pollDelay starts at the server's hint and doubles up to RetryMax.
func (c *client) pollDelay(prev, hint time.Duration) time.Duration {
	d := max(prev*2, hint, c.cfg.RetryBase)
	d = min(d, max(c.cfg.RetryMax, hint))
	return max(jitter(d), hint) // retry_after is a floor: jitter only above it
}

// backoff is exponential in attempt, capped, with jitter.
func backoff(base, limit time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	return jitter(min(d, limit))
}

// jitter returns a duration uniformly in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// retryable says whether a failed attempt is worth another connection.
func retryable(err error) bool {
	var se *ServerError
	if errors.As(err, &se) {
		return se.Temporary()
	}
	var refused *secure.RefusedError
	if errors.As(err, &refused) {
		return refused.Code.Temporary()
	}
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reject.Code == frame.CodeIndexGap // our view of what the server holds is stale
	}
	var row *RowError
	if errors.As(err, &row) || errors.Is(err, ErrProtocol) || errors.Is(err, ErrChain) ||
		errors.Is(err, ErrAhead) || errors.Is(err, ErrReceipt) || errors.Is(err, secure.ErrHandshake) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, secure.ErrDecrypt) || errors.Is(err, secure.ErrRecord) ||
		errors.Is(err, errNoAnswer)
}

var errNoAnswer = errors.New("the server did not answer in time")

// link is one connection's framed stream, plaintext or encrypted.
type link interface {
	frame.Source
	Write(frames []byte) (int, error) // one or more whole encoded frames
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	Close() error
}

type plainLink struct {
	net.Conn
	r *bufio.Reader
}

func (l *plainLink) Peek(n int) ([]byte, error)        { return l.r.Peek(n) }
func (l *plainLink) Discard(n int) (int, error)        { return l.r.Discard(n) }
func (l *plainLink) Write(b []byte) (int, error)       { return l.Conn.Write(b) }
func (l *plainLink) SetReadDeadline(t time.Time) error { return l.Conn.SetReadDeadline(t) }

// inbound is a frame read, or the error that ended reading.
type inbound struct {
	f   frame.Frame
	err error
}

// conn is one session's connection: a reader goroutine feeding frames in,
// and the session's goroutine writing and reading them.
type conn struct {
	ctx     context.Context
	link    link
	in      chan inbound
	done    chan struct{}
	wg      sync.WaitGroup
	timeout time.Duration
	wait    time.Duration // the last expect's d: how long the peer may stay silent
	out     []byte
}

func (c *client) dial(ctx context.Context) (*conn, error) {
	nc, err := c.cfg.Dial(ctx, c.addr())
	if err != nil {
		return nil, err
	}
	var l link
	if c.identity != nil {
		stopHS := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
		sc, err := c.identity.Client(nc, c.cfg.ServerPub, c.cfg.IOTimeout)
		if !stopHS() && err == nil {
			err = ctx.Err()
		}
		if err != nil {
			nc.Close()
			return nil, err
		}
		l = sc
	} else {
		l = &plainLink{Conn: nc, r: frame.NewReader(nc)}
	}
	k := &conn{ctx: ctx, link: l, in: make(chan inbound, 64), done: make(chan struct{}), timeout: c.cfg.IOTimeout}
	k.wg.Add(1)
	go k.read()
	return k, nil
}

// read decodes frames until the stream ends, handing each to the session.
func (k *conn) read() {
	defer k.wg.Done()
	var dec frame.Decoder
	for {
		f, err := dec.Next(k.link)
		if err != nil {
			var fe *frame.FieldError
			if errors.As(err, &fe) || errors.Is(err, frame.ErrVersion) || errors.Is(err, frame.ErrTooLarge) ||
				errors.Is(err, frame.ErrUnknownType) || errors.Is(err, frame.ErrMalformed) {
				err = fmt.Errorf("%w: %w", ErrProtocol, err)
			} else {
				err = fmt.Errorf("receive: %w", err)
			}
		} else if e, ok := f.(*frame.Error); ok {
			err = &ServerError{Err: *e}
		}
		select {
		case k.in <- inbound{f, err}:
		case <-k.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// close ends the connection and waits for its reader.
func (k *conn) close() error {
	close(k.done)
	err := k.link.Close()
	k.wg.Wait()
	return err
}

// send writes k.out (whole frames) and clears it.
func (k *conn) send() error {
	if err := k.ctx.Err(); err != nil {
		return err
	}
	k.link.SetWriteDeadline(time.Now().Add(k.timeout))
	_, err := k.link.Write(k.out)
	k.out = k.out[:0]
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

func (k *conn) queue(f frame.Frame) error {
	var err error
	k.out, err = frame.Append(k.out, f)
	return err
}

// ask sends f alone and returns the server's answer, due within d.
func (k *conn) ask(f frame.Frame, d time.Duration) (frame.Frame, error) {
	if err := k.queue(f); err != nil {
		return nil, err
	}
	if err := k.send(); err != nil {
		return nil, err
	}
	k.expect(d)
	return k.next()
}

// expect arms the read deadline: an answer is due within d (0: none is).
func (k *conn) expect(d time.Duration) {
	k.wait = d
	if d <= 0 {
		k.link.SetReadDeadline(time.Time{})
		return
	}
	k.link.SetReadDeadline(time.Now().Add(d))
}

// next returns the next frame, answering the server's PINGs on the way.
func (k *conn) next() (frame.Frame, error) {
	for {
		var m inbound
		select {
		case m = <-k.in:
		case <-k.ctx.Done():
			return nil, k.ctx.Err()
		}
		if m.err != nil {
			if err := k.ctx.Err(); err != nil {
				return nil, err
			}
			var ne net.Error
			if errors.As(m.err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("%w: %w", errNoAnswer, m.err)
			}
			return nil, m.err
		}
		if p, ok := m.f.(*frame.Ping); ok {
			if err := k.queue(&frame.Pong{Payload: p.Payload}); err != nil {
				return nil, err
			}
			if err := k.send(); err != nil {
				return nil, err
			}
			k.expect(k.wait) // the peer is alive: silence is counted from its PING
			continue
		}
		if _, ok := m.f.(*frame.Pong); ok {
			continue
		}
		return m.f, nil
	}
}

// session runs one connection: handshake, HELLO, upload what is missing,
// FINISHED, then wait for or ask for the winners.
func (c *client) session(ctx context.Context) (err error) {
	k, err := c.dial(ctx)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { k.link.SetReadDeadline(time.Now()); k.link.SetWriteDeadline(time.Now()) })
	defer func() {
		stop()
		cerr := k.close()
		if ctx.Err() != nil {
			c.log.Info("close_socket", logging.Success, zap.String("server", c.addr()))
		} else if ce := c.log.Check(zap.DebugLevel, "close_socket"); ce != nil {
			ce.Write(logging.Success, zap.String("server", c.addr()), zap.NamedError("close_error", cerr))
		}
	}()
	reply, err := k.ask(&frame.Hello{Agency: c.cfg.Agency}, c.cfg.IOTimeout)
	if err != nil {
		return err
	}
	w, ok := reply.(*frame.Welcome)
	if !ok {
		return fmt.Errorf("%w: %s in answer to HELLO", ErrProtocol, reply.Type())
	}
	c.log.Info("hello", logging.Success, zap.Uint32("agency", c.cfg.Agency), zap.String("server", c.addr()),
		zap.Uint64("held", w.Held), zap.Bool("finished", w.Finished), zap.Uint16("window", w.Window))
	if err := c.align(w); err != nil {
		return err
	}
	if c.receipt != nil && w.Finished {
		reply, err := k.ask(&frame.QueryWinners{}, c.cfg.IOTimeout)
		if err != nil {
			return err
		}
		return c.awaitWinners(k, w, reply)
	}
	if err := c.upload(k, w); err != nil {
		return err
	}
	return c.finish(k, w)
}

// align puts the batcher where the server's holdings end and checks that
// the server's chain over them equals this file's.
func (c *client) align(w *frame.Welcome) error {
	held := w.Held
	if held < c.acked {
		c.log.Warn("hello", logging.Fail, zap.Uint32("agency", c.cfg.Agency), zap.Uint64("held", held),
			zap.Uint64("acknowledged", c.acked), zap.String("next", "sending the missing bets again"))
	}
	restored := false
	for _, cp := range append([]Checkpoint{c.base}, c.unacked...) {
		if cp.Index == held {
			if err := c.batcher.Restore(cp); err != nil {
				return err
			}
			restored = true
			break
		}
	}
	if !restored {
		if err := c.batcher.Seek(held); err != nil {
			return err
		}
	}
	c.unacked = nil
	if got := c.batcher.Chain(); got != w.Chain {
		return fmt.Errorf("%w: the server holds %d bets of agency %d with chain %x, and the first %d bets of this "+
			"file give %x: the server's store or this file changed", ErrChain, held, c.cfg.Agency, w.Chain, held, got)
	}
	if c.cfg.LogEachBet && held > c.base.Index {
		// Stored on a connection that broke before their ACK: WELCOME
		// confirms them, so they are logged as an ACK would have.
		if err := c.logConfirmed(c.base, held); err != nil {
			return err
		}
	}
	c.base = c.batcher.Checkpoint()
	c.acked = max(c.acked, held)
	return nil
}

// logConfirmed logs apuesta_enviada for the bets from checkpoint from up to
// stream index to, then puts the batcher back where it was.
func (c *client) logConfirmed(from Checkpoint, to uint64) error {
	back := c.batcher.Checkpoint()
	if err := c.batcher.Restore(from); err != nil {
		return err
	}
	for i := from.Index; i < to; i++ {
		bet, err := c.batcher.read()
		if err != nil {
			return err
		}
		c.log.Info("apuesta_enviada", logging.Success, zap.String("dni", bet.Document), zap.Uint16("numero", bet.Number))
	}
	return c.batcher.Restore(back)
}

// batchBuffers are an ACKed batch's slices, handed back to the producer so
// an upload does not allocate a batch's worth of memory per batch.
type batchBuffers struct {
	bets []frame.Bet
	wire []byte
}

// batch is one BETS frame ready to send, and the batcher after it.
type batch struct {
	first uint64
	count int         // bets in the batch
	bets  []frame.Bet // kept until the ACK only to log each bet (LogEachBet)
	wire  []byte
	after Checkpoint
	read  float64 // the source's Progress once the batch was read
	err   error
	last  bool // the source is exhausted; no bets
}

// recycle hands a batch's buffers back to the producer, when it has room
// for them, so that reading ahead reuses a few buffers instead of making
// new ones.
func recycle(free chan<- batchBuffers, b *batch) {
	select {
	case free <- batchBuffers{bets: b.bets[:0], wire: b.wire[:0]}:
	default:
	}
	b.bets, b.wire = nil, nil
}

// produce reads and encodes batches ahead of the sender, so reading the
// file, sending and waiting for ACKs overlap. It owns the batcher until it
// returns.
func (c *client) produce(out chan<- batch, free <-chan batchBuffers, stop <-chan struct{}, frameCap int) {
	defer close(out)
	for {
		var reuse batchBuffers
		select {
		case reuse = <-free:
		default:
		}
		first, bets, err := c.batcher.NextInto(reuse.bets)
		b := batch{first: first, count: len(bets), bets: bets, err: err, last: err == nil && len(bets) == 0}
		if err == nil && len(bets) > 0 {
			if reuse.wire == nil {
				reuse.wire = make([]byte, 0, frameCap) // sized once: growing it faulted in fresh pages batch after batch
			}
			b.wire, b.err = frame.Append(reuse.wire[:0], &frame.Bets{First: first, Bets: bets})
			b.after = c.batcher.Checkpoint()
			b.read = c.src.Progress() // here: the source is this goroutine's
		}
		select {
		case out <- b:
		case <-stop:
			return
		}
		if b.err != nil || b.last {
			return
		}
	}
}

// upload sends every batch from the server's count on, up to the window
// announced in WELCOME in flight, checking each ACK's chain.
func (c *client) upload(k *conn, w *frame.Welcome) error {
	window := max(int(w.Window), 1)
	c.batcher.SetMaxFrame(int(w.MaxFrame))
	batches := make(chan batch, window)
	free := make(chan batchBuffers, window+1)
	stop := make(chan struct{})
	go c.produce(batches, free, stop, int(w.MaxFrame))
	defer func() {
		close(stop)
		for range batches { // wait for the producer to let go of the batcher
		}
	}()
	var inflight []batch
	exhausted := false
	for !exhausted || len(inflight) > 0 {
		var ready <-chan batch
		if !exhausted && len(inflight) < window {
			ready = batches
		}
		select {
		case b := <-ready:
			for {
				if b.err != nil {
					c.log.Error("upload", logging.Fail, zap.Uint64("bets", c.acked), zap.Error(b.err))
					return b.err
				}
				if b.last {
					exhausted = true
					break
				}
				k.out = append(k.out, b.wire...)
				if !c.cfg.LogEachBet {
					recycle(free, &b) // copied: nothing needs its buffers until the ACK
				}
				inflight = append(inflight, b)
				if len(inflight) >= window {
					break
				}
				var more bool
				select {
				case b, more = <-batches:
				default:
				}
				if !more {
					break
				}
			}
			if len(k.out) > 0 {
				if err := k.send(); err != nil {
					err = c.lastWords(k, &inflight, err)
					c.keep(inflight)
					return err
				}
				k.expect(c.cfg.IOTimeout)
			}
		case m := <-k.in:
			before := len(inflight)
			done := inflight
			if err := c.onAnswer(k, m, &inflight); err != nil {
				c.keep(inflight)
				return err
			}
			if len(inflight) < before && done[0].bets != nil { // the oldest was ACKed and logged
				recycle(free, &done[0])
			}
			if len(inflight) > 0 {
				k.expect(c.cfg.IOTimeout)
			}
		case <-k.ctx.Done():
			return k.ctx.Err()
		}
	}
	c.total, c.final, c.complete = c.batcher.Index(), c.batcher.Chain(), true
	c.base = c.batcher.Checkpoint()
	c.report(true)
	return nil
}

// lastWords reads what the server said before a write to it failed — ACKs
// of earlier batches, and often the ERROR that explains the broken pipe —
// so that the agency knows how far it got and why it must reconnect.
func (c *client) lastWords(k *conn, inflight *[]batch, writeErr error) error {
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	for {
		select {
		case m := <-k.in:
			if m.err != nil {
				var se *ServerError
				if errors.As(m.err, &se) {
					return se
				}
				return writeErr // the stream ended: nothing more to learn
			}
			if err := c.onAnswer(k, m, inflight); err != nil {
				return err
			}
		case <-timer.C:
			return writeErr
		case <-k.ctx.Done():
			return writeErr
		}
	}
}

// keep remembers where the batches still in flight end, so that a reconnect
// finding the server past some of them resumes without re-reading the file.
func (c *client) keep(inflight []batch) {
	for _, b := range inflight {
		c.unacked = append(c.unacked, b.after)
	}
}

// onAnswer handles what the server said while batches are in flight.
func (c *client) onAnswer(k *conn, m inbound, inflight *[]batch) error {
	if m.err != nil {
		var ne net.Error
		if errors.As(m.err, &ne) && ne.Timeout() && k.ctx.Err() == nil {
			return fmt.Errorf("%w: no ACK within %v: %w", errNoAnswer, c.cfg.IOTimeout, m.err)
		}
		return m.err
	}
	switch f := m.f.(type) {
	case *frame.Ping:
		if err := k.queue(&frame.Pong{Payload: f.Payload}); err != nil {
			return err
		}
		return k.send()
	case *frame.Pong:
		return nil
	case *frame.Ack:
		if len(*inflight) == 0 {
			return fmt.Errorf("%w: ACK for bets %d+%d with nothing in flight", ErrProtocol, f.First, f.Count)
		}
		b := (*inflight)[0]
		if f.First != b.first || int(f.Count) != b.count {
			return fmt.Errorf("%w: ACK for bets %d+%d, oldest sent is %d+%d", ErrProtocol, f.First, f.Count, b.first, b.count)
		}
		if err := c.checkAck(f, *inflight); err != nil {
			return err
		}
		*inflight = (*inflight)[1:]
		end := b.first + uint64(b.count)
		if end > c.acked {
			c.acked, c.progress = end, true
		}
		c.base, c.read = b.after, b.read
		if c.cfg.LogEachBet {
			for _, bet := range b.bets {
				c.log.Info("apuesta_enviada", logging.Success, zap.String("dni", bet.Document), zap.Uint16("numero", bet.Number))
			}
		}
		c.report(false)
		return nil
	case *frame.Reject:
		err := &RejectError{Reject: *f}
		level := zap.ErrorLevel
		if retryable(err) {
			level = zap.WarnLevel // the reconnect resynchronises
		}
		n := 0
		if len(*inflight) > 0 {
			n = (*inflight)[0].count
		}
		c.log.Log(level, "apuesta_enviada", logging.Fail, zap.Int("cantidad", n),
			zap.Stringer("code", f.Code), zap.Uint64("index", f.Index), zap.String("reason", f.Reason))
		return err
	}
	return fmt.Errorf("%w: %s while uploading", ErrProtocol, m.f.Type())
}

// checkAck compares the chain an ACK carries with this file's: the ACK
// covers Held bets, the end of one of the batches in flight unless a
// connection the server has not forgotten stored more.
func (c *client) checkAck(f *frame.Ack, inflight []batch) error {
	if f.Held < f.First+uint64(f.Count) {
		return fmt.Errorf("%w: ACK for bets %d+%d says the server holds only %d", ErrProtocol, f.First, f.Count, f.Held)
	}
	for _, b := range inflight {
		if b.after.Index == f.Held {
			if got := b.after.Chain(); got != f.Chain {
				return fmt.Errorf("%w: the ACK for bets %d..%d says the server's chain over agency %d's first %d bets is %x, "+
					"this file gives %x: something between the file and the server's disk changed a bet",
					ErrChain, f.First, f.First+uint64(f.Count)-1, c.cfg.Agency, f.Held, f.Chain, got)
			}
			return nil
		}
	}
	if ce := c.log.Check(zap.DebugLevel, "chain_check"); ce != nil {
		ce.Write(logging.Success, zap.Uint64("held", f.Held), zap.String("note", "not a batch end of this connection; checked later"))
	}
	return nil
}

func (c *client) report(done bool) {
	if done {
		c.log.Info("upload", logging.Success, zap.Uint32("agency", c.cfg.Agency), zap.Uint64("bets", c.total),
			zap.String("chain", hex.EncodeToString(c.final[:])))
		return
	}
	if now := time.Now(); now.Sub(c.shown) >= c.cfg.Progress {
		if !c.shown.IsZero() {
			c.log.Info("upload", logging.InProgress, zap.Uint32("agency", c.cfg.Agency), zap.Uint64("bets", c.acked),
				zap.String("percent", fmt.Sprintf("%.1f", 100*c.read)))
		}
		c.shown = now
	}
}

// finish sends FINISHED, checks and keeps the receipt, then waits for the
// winners or hangs up to poll.
func (c *client) finish(k *conn, w *frame.Welcome) error {
	reply, err := k.ask(&frame.Finished{Total: c.total}, c.cfg.IOTimeout)
	if err != nil {
		return err
	}
	r, ok := reply.(*frame.Receipt)
	if !ok {
		return fmt.Errorf("%w: %s in answer to FINISHED, want RECEIPT", ErrProtocol, reply.Type())
	}
	if err := c.checkReceipt(r); err != nil {
		return err
	}
	k.expect(c.cfg.IOTimeout)
	if reply, err = k.next(); err != nil {
		return err
	}
	return c.awaitWinners(k, w, reply)
}

func (c *client) checkReceipt(f *frame.Receipt) error {
	r := receipt.Receipt(*f)
	switch {
	case r.Agency != c.cfg.Agency:
		return fmt.Errorf("%w: it is for agency %d", ErrReceipt, r.Agency)
	case r.Bets != c.total:
		return fmt.Errorf("%w: it says %d bets, this agency sent %d", ErrReceipt, r.Bets, c.total)
	case r.Chain != c.final:
		return fmt.Errorf("%w: its chain %x differs from this file's %x", ErrChain, r.Chain, c.final)
	}
	if c.cfg.SignPub != nil {
		if err := r.Verify(c.cfg.SignPub); err != nil {
			return fmt.Errorf("%w: %w", ErrReceipt, err)
		}
	}
	first := c.receipt == nil
	c.receipt = &r
	if first {
		c.progress = true
	}
	fields := []zap.Field{logging.Success, zap.Uint32("agency", r.Agency), zap.Uint64("bets", r.Bets),
		zap.String("chain", hex.EncodeToString(r.Chain[:])), zap.Bool("signed", r.Signature != frame.Signature{})}
	if c.cfg.ReceiptFile != "" {
		if err := receipt.WriteFile(c.cfg.ReceiptFile, receipt.File{Receipt: r}); err != nil {
			c.log.Error("receipt", logging.Fail, zap.String("file", c.cfg.ReceiptFile), zap.Error(err))
			return fmt.Errorf("%w: cannot keep it: %w", ErrReceipt, err) // a person must fix the path
		}
		fields = append(fields, zap.String("file", c.cfg.ReceiptFile))
	}
	c.log.Info("receipt", fields...)
	return nil
}

// awaitWinners handles the answer to FINISHED or QUERY_WINNERS: the
// commitment and WINNERS chunks end the upload; NOT_READY means waiting
// here (hold, answering the server's PINGs) or later (poll).
func (c *client) awaitWinners(k *conn, w *frame.Welcome, reply frame.Frame) error {
	var docs []string
	committed := false
	for {
		switch r := reply.(type) {
		case *frame.Commitment:
			if c.receipt != nil && r.Lottery != c.receipt.Lottery {
				return fmt.Errorf("%w: the commitment is for lottery %x, the receipt for %x", ErrReceipt, r.Lottery, c.receipt.Lottery)
			}
			leaf := receipt.Leaf{Agency: c.cfg.Agency, Bets: c.total, Chain: c.final}
			if err := receipt.Check(r, leaf, c.cfg.SignPub); err != nil {
				return fmt.Errorf("%w: the draw's commitment: %w", ErrReceipt, err)
			}
			c.root, committed = r.Root, true
		case *frame.Winners:
			if !committed {
				return fmt.Errorf("%w: WINNERS before the draw's COMMITMENT", ErrProtocol)
			}
			docs = append(docs, r.Documents...)
			if r.Last {
				return c.gotWinners(docs)
			}
		case *frame.NotReady:
			c.progress = true // the server answers: waiting for the draw is not failing
			if c.cfg.Wait == WaitPoll {
				return &notReady{*r}
			}
			c.log.Info("consulta_ganadores", logging.InProgress, zap.Uint32("agency", c.cfg.Agency),
				zap.Uint32("finished", r.Finished), zap.Uint32("agencies", r.Agencies), zap.String("wait", WaitHold))
		default:
			return fmt.Errorf("%w: %s while waiting for winners", ErrProtocol, reply.Type())
		}
		// While it waits for the draw the server PINGs every PingInterval
		// and expects a PONG within ReadTimeout: silence for longer than
		// both means the connection is gone.
		k.expect(w.PingInterval + w.ReadTimeout + c.cfg.IOTimeout)
		var err error
		if reply, err = k.next(); err != nil {
			return err
		}
	}
}

func (c *client) gotWinners(docs []string) error {
	c.winners, c.progress = docs, true
	if c.cfg.ReceiptFile != "" && c.receipt != nil {
		root := c.root
		if err := receipt.WriteFile(c.cfg.ReceiptFile, receipt.File{Receipt: *c.receipt, Root: &root}); err != nil {
			c.log.Error("receipt", logging.Fail, zap.String("file", c.cfg.ReceiptFile), zap.Error(err))
			return fmt.Errorf("%w: cannot keep it: %w", ErrReceipt, err)
		}
	}
	shown := docs
	if len(shown) > 50 {
		shown = shown[:50]
	}
	fields := []zap.Field{logging.Success, zap.Uint32("agency", c.cfg.Agency), zap.Int("cant_ganadores", len(docs)),
		zap.String("root", hex.EncodeToString(c.root[:]))}
	if len(shown) > 0 {
		fields = append(fields, zap.String("dni", strings.Join(shown, ",")))
	}
	c.log.Info("consulta_ganadores", fields...)
	return nil
}
