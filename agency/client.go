package agency

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
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
func (e *ServerError) Temporary() bool {
	switch e.Err.Code {
	case frame.CodeShuttingDown, frame.CodeBusy, frame.CodeTimeout, frame.CodeStorage, frame.CodeTooManyConns:
		return true
	}
	return false
}

// Config configures an agency's upload.
type Config struct {
	Agency         uint32
	Server         string // host:port
	BatchMaxAmount int    // most bets per batch
	Wait           string // WaitHold or WaitPoll
	RetryBase      time.Duration
	RetryMax       time.Duration
	GiveUp         time.Duration // longest stretch of failed attempts before giving up
	IOTimeout      time.Duration // dial timeout and longest wait for an ACK
	LogEachBet     bool          // log apuesta_enviada for every acknowledged bet
	Progress       time.Duration // at most this often an upload in_progress line
	Logger         *zap.Logger
	// Dial opens connections; nil means a TCP dialer with IOTimeout.
	Dial func(ctx context.Context, address string) (net.Conn, error)
}

func (c *Config) setDefaults() {
	if c.Server == "" {
		c.Server = DefaultServer
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
	Bets    uint64   // bets the server holds for the agency
	Winners []string // documents of the agency's winning bets
}

// Run uploads every bet of src, sends FINISHED and waits for the winners,
// reconnecting and resuming after faults. It returns ctx's error if ctx is
// cancelled first.
func Run(ctx context.Context, cfg Config, src Source) (Result, error) {
	cfg.setDefaults()
	c := &client{cfg: cfg, log: cfg.Logger, batcher: NewBatcher(src, cfg.BatchMaxAmount), src: src}
	return c.run(ctx)
}

type client struct {
	cfg     Config
	log     *zap.Logger
	src     Source
	batcher *Batcher

	pending      []frame.Bet // batch sent but not acknowledged
	pendingFirst uint64
	acked        uint64
	total        uint64
	finishedSent bool // the server has our FINISHED on record
	progressed   bool // this attempt got somewhere: reset the backoff
	lastProgress time.Time
	winners      []string
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
			return Result{Bets: c.total, Winners: c.winners}, nil
		}
		if ctx.Err() != nil {
			return Result{Bets: c.acked}, ctx.Err()
		}
		var nr *notReady
		if errors.As(err, &nr) {
			lastOK, attempt = time.Now(), 0
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
		if c.progressed {
			lastOK, attempt, c.progressed = time.Now(), 0, false
		}
		if time.Since(lastOK) > c.cfg.GiveUp {
			c.log.Error("connect", logging.Fail, zap.String("server", c.cfg.Server), zap.Int("attempts", attempt), zap.Error(err))
			return Result{Bets: c.acked}, fmt.Errorf("%w after %v: %w", ErrGaveUp, c.cfg.GiveUp, err)
		}
		attempt++
		wait := backoff(c.cfg.RetryBase, c.cfg.RetryMax, attempt)
		c.log.Info("connect", logging.InProgress, zap.String("server", c.cfg.Server), zap.Int("attempt", attempt),
			zap.Duration("retry_in", wait), zap.Error(err))
		if !sleep(ctx, wait) {
			return Result{Bets: c.acked}, ctx.Err()
		}
	}
}

// pollDelay starts at the server's hint and doubles up to RetryMax.
func (c *client) pollDelay(prev, hint time.Duration) time.Duration {
	d := max(prev*2, hint, c.cfg.RetryBase)
	return jitter(min(d, max(c.cfg.RetryMax, hint)))
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
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reject.Code == frame.CodeIndexGap // our view of what the server holds is stale
	}
	var row *RowError
	if errors.As(err, &row) || errors.Is(err, ErrProtocol) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed)
}

// session runs one connection: handshake, upload what is missing, FINISHED,
// then wait for or ask for the winners.
func (c *client) session(ctx context.Context) (err error) {
	conn, err := c.cfg.Dial(ctx, c.cfg.Server)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer func() {
		stop()
		cerr := conn.Close()
		if ctx.Err() != nil {
			c.log.Info("close_socket", logging.Success, zap.String("server", c.cfg.Server))
		} else if ce := c.log.Check(zap.DebugLevel, "close_socket"); ce != nil {
			ce.Write(logging.Success, zap.String("server", c.cfg.Server), zap.NamedError("close_error", cerr))
		}
	}()
	s := &wire{ctx: ctx, conn: conn, r: frame.NewReader(conn), timeout: c.cfg.IOTimeout}
	reply, err := s.call(&frame.Hello{Agency: c.cfg.Agency})
	if err != nil {
		return err
	}
	w, ok := reply.(*frame.Welcome)
	if !ok {
		return fmt.Errorf("%w: %s in answer to HELLO", ErrProtocol, reply.Type())
	}
	c.log.Info("hello", logging.Success, zap.Uint32("agency", c.cfg.Agency), zap.Uint64("held", w.Held),
		zap.Bool("finished", w.Finished))

	if !c.finishedSent {
		if err := c.upload(s, w.Held); err != nil {
			return err
		}
		reply, err = s.call(&frame.Finished{Total: c.total})
	} else {
		reply, err = s.call(&frame.QueryWinners{})
	}
	if err != nil {
		return err
	}
	return c.awaitWinners(ctx, s, reply)
}

// upload sends every batch from stream index held on, one at a time, each
// after the previous one's ACK.
func (c *client) upload(s *wire, held uint64) error {
	if err := c.align(held); err != nil {
		return err
	}
	for {
		if len(c.pending) == 0 {
			first, batch, err := c.batcher.Next()
			if err != nil {
				c.log.Error("upload", logging.Fail, zap.Uint64("bets", c.acked), zap.Error(err))
				return err
			}
			if len(batch) == 0 {
				break
			}
			c.pending, c.pendingFirst = batch, first
		}
		reply, err := s.call(&frame.Bets{First: c.pendingFirst, Bets: c.pending})
		if err != nil {
			return err
		}
		switch r := reply.(type) {
		case *frame.Ack:
			if r.First != c.pendingFirst || int(r.Count) != len(c.pending) {
				return fmt.Errorf("%w: ACK for bets %d+%d, sent %d+%d", ErrProtocol, r.First, r.Count, c.pendingFirst, len(c.pending))
			}
			c.acked = c.pendingFirst + uint64(len(c.pending))
			if c.cfg.LogEachBet {
				for _, b := range c.pending {
					c.log.Info("apuesta_enviada", logging.Success, zap.String("dni", b.Document), zap.Uint16("numero", b.Number))
				}
			}
			c.pending = nil
			c.progressed = true
			c.reportProgress(false)
		case *frame.Reject:
			err := &RejectError{Reject: *r}
			level := zap.ErrorLevel
			if retryable(err) {
				level = zap.WarnLevel // the reconnect resynchronises
			}
			c.log.Log(level, "apuesta_enviada", logging.Fail, zap.Int("cantidad", len(c.pending)),
				zap.Stringer("code", r.Code), zap.Uint64("index", r.Index), zap.String("reason", r.Reason))
			return err
		default:
			return fmt.Errorf("%w: %s in answer to BETS", ErrProtocol, reply.Type())
		}
	}
	c.total = c.batcher.Index()
	c.acked = c.total
	c.reportProgress(true)
	return nil
}

// align makes the next batch start where the server's holdings end.
func (c *client) align(held uint64) error {
	if c.pending != nil && held >= c.pendingFirst && held <= c.pendingFirst+uint64(len(c.pending)) {
		c.pending = c.pending[held-c.pendingFirst:]
		c.pendingFirst = held
		if len(c.pending) == 0 {
			c.pending = nil
		}
		c.acked = held
		return nil
	}
	c.pending = nil
	if err := c.batcher.Seek(held); err != nil {
		return err
	}
	c.acked = held
	return nil
}

func (c *client) reportProgress(done bool) {
	if done {
		c.log.Info("upload", logging.Success, zap.Uint32("agency", c.cfg.Agency), zap.Uint64("bets", c.total))
		return
	}
	if now := time.Now(); now.Sub(c.lastProgress) >= c.cfg.Progress {
		if !c.lastProgress.IsZero() {
			c.log.Info("upload", logging.InProgress, zap.Uint32("agency", c.cfg.Agency), zap.Uint64("bets", c.acked),
				zap.String("percent", fmt.Sprintf("%.1f", 100*c.src.Progress())))
		}
		c.lastProgress = now
	}
}

// awaitWinners handles the answer to FINISHED or QUERY_WINNERS: WINNERS
// chunks end the upload; NOT_READY means waiting here (hold) or later (poll).
func (c *client) awaitWinners(ctx context.Context, s *wire, reply frame.Frame) error {
	c.finishedSent = true
	c.progressed = true
	var docs []string
	for {
		switch r := reply.(type) {
		case *frame.Winners:
			docs = append(docs, r.Documents...)
			if r.Last {
				c.winners = docs
				shown := docs
				if len(shown) > 50 {
					shown = shown[:50]
				}
				fields := []zap.Field{logging.Success, zap.Uint32("agency", c.cfg.Agency), zap.Int("cant_ganadores", len(docs))}
				if len(shown) > 0 {
					fields = append(fields, zap.String("dni", strings.Join(shown, ",")))
				}
				c.log.Info("consulta_ganadores", fields...)
				return nil
			}
		case *frame.NotReady:
			if c.cfg.Wait == WaitPoll {
				return &notReady{*r}
			}
			c.log.Info("consulta_ganadores", logging.InProgress, zap.Uint32("agency", c.cfg.Agency),
				zap.Uint32("finished", r.Finished), zap.Uint32("agencies", r.Agencies), zap.String("wait", WaitHold))
		case *frame.Pong:
		default:
			return fmt.Errorf("%w: %s while waiting for winners", ErrProtocol, reply.Type())
		}
		var err error
		if reply, err = s.read(0); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

// wire is one connection's framed request/response exchange.
type wire struct {
	ctx     context.Context // cancelled: a deadline set after the cancel must not outlive it
	conn    net.Conn
	r       frame.Source
	dec     frame.Decoder
	timeout time.Duration
}

// call writes f and reads the reply, within the timeout.
func (w *wire) call(f frame.Frame) (frame.Frame, error) {
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	if err := frame.Write(w.conn, f); err != nil {
		return nil, fmt.Errorf("send %s: %w", f.Type(), err)
	}
	return w.read(w.timeout)
}

// read returns the next frame, turning an ERROR frame into a *ServerError;
// timeout 0 waits indefinitely.
func (w *wire) read(timeout time.Duration) (frame.Frame, error) {
	deadline := time.Time{}
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	w.conn.SetReadDeadline(deadline)
	// The cancel's own deadline may have come just before ours: check after.
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	f, err := w.dec.Next(w.r)
	if err != nil {
		var fe *frame.FieldError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if errors.Is(err, frame.ErrVersion) || errors.Is(err, frame.ErrTooLarge) ||
			errors.Is(err, frame.ErrUnknownType) || errors.Is(err, frame.ErrMalformed) {
			return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return nil, fmt.Errorf("receive: %w", err)
	}
	if e, ok := f.(*frame.Error); ok {
		return nil, &ServerError{Err: *e}
	}
	return f, nil
}
