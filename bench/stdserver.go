package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/secure"
)

// StdServer is the baseline: a goroutine-per-connection server over Go's
// net package that does the gnet server's work with the same pieces — the
// same eventserver.Session (window, read and hello timeouts, liveness
// PINGs), the same Hub and store, the same secure.ServerConn for Noise —
// so only the transport differs.
//
// Each connection has two goroutines: one blocked in Read, handing the
// bytes it got to the other, which owns everything else — a buffer of
// received bytes that reports io.ErrShortBuffer when a record or frame is
// incomplete (like gnet's), the handshake, the decoder, the session, its
// deadline and every write. While the session's window is full it takes
// no bytes, so the reader waits and TCP flow control holds the peer back.
type StdServer struct {
	cfg   eventserver.Config
	log   *zap.Logger
	store *persist.Store
	hub   *eventserver.Hub

	ready    chan struct{}
	addr     string
	draining atomic.Bool
	count    atomic.Int64
	idle     chan struct{} // signalled when the last connection closes while draining

	mu    sync.Mutex
	conns map[*stdConn]struct{}

	mem eventserver.MemoryReleaser // as the gnet server: ticked every 100 ms
}

// NewStdServer opens (and recovers) the store in cfg.DataDir. Zero fields of
// cfg take the eventserver defaults; cfg.Keys nil runs the plaintext
// protocol (--insecure).
func NewStdServer(cfg eventserver.Config) (*StdServer, error) {
	cfg = cfg.WithDefaults()
	store, err := eventserver.OpenStore(cfg)
	if err != nil {
		return nil, err
	}
	return &StdServer{
		cfg:   cfg,
		log:   cfg.Logger,
		store: store,
		hub:   eventserver.NewHub(store, cfg.Logger, cfg.Observer, cfg.SignKey),
		ready: make(chan struct{}),
		idle:  make(chan struct{}, 1),
		conns: map[*stdConn]struct{}{},
	}, nil
}

// Ready is closed once the server listens.
func (s *StdServer) Ready() <-chan struct{} { return s.ready }

// Addr is the address the server listens on, valid after Ready.
func (s *StdServer) Addr() string { return s.addr }

// Hub exposes the shared state, for tests.
func (s *StdServer) Hub() *eventserver.Hub { return s.hub }

// Serve accepts connections until ctx is cancelled, then drains like the
// gnet server: it stops accepting, lets in-flight batches finish, closes
// every connection (forcibly after ShutdownGrace) and closes the store.
func (s *StdServer) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		s.hub.Close()
		_ = s.store.Close()
		s.log.Error("listen", logging.Fail, zap.String("address", s.cfg.Listen), zap.Error(err))
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	s.addr = ln.Addr().String()
	mode := "secure"
	if s.cfg.Keys == nil {
		mode = "insecure"
	}
	s.log.Info("listen", logging.Success, zap.String("address", s.addr), zap.Int("agencies", s.cfg.Agencies),
		zap.Int("finished", s.hub.FinishedCount()), zap.String("mode", mode))
	close(s.ready)
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		s.accept(ln)
	}()
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		s.tick(ctx)
	}()
	<-ctx.Done()
	<-ticked
	s.log.Info("shutdown", logging.InProgress, zap.String("step", "stop_accepting"), zap.Int64("connections", s.count.Load()))
	s.draining.Store(true)
	ln.Close()
	<-accepted
	return s.shutdown()
}

// tick gives an upload burst's memory back once the store is idle, as the
// gnet server's ticker does, until ctx is done.
func (s *StdServer) tick(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.mem.Tick(now, s.hub.InFlight() > 0)
		}
	}
}

// accept runs until the listener is closed; a failing Accept (out of file
// descriptors, say) is retried after a pause instead of ending the server.
func (s *StdServer) accept(ln net.Listener) {
	pause := 5 * time.Millisecond
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Error("accept", logging.Fail, zap.Error(err), zap.Duration("retry_in", pause))
			time.Sleep(pause)
			pause = min(pause*2, time.Second)
			continue
		}
		pause = 5 * time.Millisecond
		go s.serveConn(nc)
	}
}

func (s *StdServer) shutdown() error {
	s.hub.Broadcast(eventserver.ShuttingDown{})
	if s.count.Load() > 0 {
		s.log.Info("shutdown", logging.InProgress, zap.String("step", "finish_in_flight"),
			zap.Int64("connections", s.count.Load()))
		if !s.waitIdle(s.cfg.ShutdownGrace) {
			s.log.Warn("shutdown", logging.Fail, zap.String("step", "finish_in_flight"),
				zap.Int64("connections_left", s.count.Load()), zap.Duration("grace", s.cfg.ShutdownGrace))
			s.mu.Lock()
			for c := range s.conns {
				c.nc.Close()
			}
			s.mu.Unlock()
			s.waitIdle(2 * time.Second)
		}
	}
	s.mem.Wait()
	s.hub.Close()
	if err := s.store.Close(); err != nil {
		s.log.Error("shutdown", logging.Fail, zap.Error(err))
		return fmt.Errorf("close store: %w", err)
	}
	s.log.Info("shutdown", logging.Success)
	return nil
}

// waitIdle waits up to d for every connection to close.
func (s *StdServer) waitIdle(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for s.count.Load() > 0 {
		select {
		case <-s.idle:
		case <-timer.C:
			return s.count.Load() == 0
		}
	}
	return true
}

// serveConn admits a connection, or refuses it with an ERROR while draining
// or beyond the agencies plus the connections allowed before HELLO, then
// runs it.
func (s *StdServer) serveConn(nc net.Conn) {
	remote := nc.RemoteAddr().String()
	refuse := func(code frame.Code, reason string) {
		s.log.Warn("connection_open", logging.Fail, zap.String("remote", remote), zap.Stringer("code", code))
		_ = frame.Write(nc, &frame.Error{Code: code, Reason: reason})
		nc.Close()
	}
	if s.draining.Load() {
		refuse(frame.CodeShuttingDown, "server is shutting down; retry later")
		return
	}
	if limit := s.cfg.MaxPending + s.cfg.Agencies; s.count.Add(1) > int64(limit) {
		s.count.Add(-1)
		refuse(frame.CodeTooManyConns, fmt.Sprintf("server is at its limit of %d connections", limit))
		return
	}
	c := &stdConn{
		srv:    s,
		nc:     nc,
		remote: remote,
		opened: time.Now(),
		sess: eventserver.NewSession(s.hub, logging.WithField(s.log, zap.String("remote", remote)), s.cfg.Observer, eventserver.Limits{
			Window: s.cfg.Window, MaxFrame: s.cfg.MaxFrame, ReadTimeout: s.cfg.ReadTimeout,
			PingInterval: s.cfg.PingInterval, RetryAfter: s.cfg.RetryAfter, Secure: s.cfg.Keys != nil}),
		dec:   frame.Decoder{MaxSize: s.cfg.MaxFrame},
		data:  make(chan []byte),
		taken: make(chan struct{}, 1),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	c.src = &c.in
	if s.cfg.Keys != nil {
		c.sc = secure.NewServerConn(s.cfg.Keys, &c.in)
	}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.hub.Join(c)
	if s.draining.Load() {
		c.Deliver(eventserver.ShuttingDown{}) // the drain's broadcast may have missed this connection
	}
	if ce := s.log.Check(zap.DebugLevel, "connection_open"); ce != nil {
		ce.Write(logging.Success, zap.String("remote", remote))
	}
	go c.readBytes()
	err := c.run()
	c.close(err)
}

// readBuffer is how much one Read takes from the socket at most.
const readBuffer = frame.MaxSize

// inbox holds the bytes received and not yet decoded. As a frame.Source it
// behaves like gnet's connection buffer: a Peek beyond what is held returns
// what is held and io.ErrShortBuffer, never blocks.
type inbox struct {
	b   []byte
	off int
}

func (in *inbox) Peek(n int) ([]byte, error) {
	held := in.b[in.off:]
	if n <= 0 {
		return held, nil
	}
	if len(held) < n {
		return held, io.ErrShortBuffer
	}
	return held[:n], nil
}

func (in *inbox) Discard(n int) (int, error) {
	held := len(in.b) - in.off
	var err error
	switch {
	case n <= 0:
		n = held
	case n > held:
		n, err = held, io.ErrShortBuffer
	}
	in.off += n
	if in.off == len(in.b) {
		// Nothing held: keep a small buffer, let a large one go, so a
		// connection waiting for the draw does not keep its upload's.
		in.off = 0
		if cap(in.b) > 2*readBuffer {
			in.b = nil
		} else {
			in.b = in.b[:0]
		}
	}
	return n, err
}

// add appends received bytes, first moving what is held to the front.
func (in *inbox) add(p []byte) {
	if in.off > 0 {
		in.b = in.b[:copy(in.b, in.b[in.off:])]
		in.off = 0
	}
	in.b = append(in.b, p...)
}

func (in *inbox) held() int { return len(in.b) - in.off }

// stdConn is one connection. readBytes runs on one goroutine; everything
// else runs on the goroutine of run.
type stdConn struct {
	srv    *StdServer
	nc     net.Conn
	remote string
	opened time.Time
	sess   *eventserver.Session

	in       inbox
	src      frame.Source       // in, or sc once the handshake is done
	sc       *secure.ServerConn // nil when the server runs --insecure
	dec      frame.Decoder
	started  bool // the transport is set up: frames may flow
	sealed   bool // frames go out as Noise transport records
	plain    bool // a plaintext peer of a secured server (it may only PING)
	proven   bool // the session has been told the agency the handshake proved
	out      []byte
	scratch  []byte
	wait     eventserver.Wait
	deadline time.Time
	timer    *time.Timer

	data  chan []byte   // from the reader: bytes it got; closed when the stream ends
	taken chan struct{} // to the reader: the bytes were copied, its buffer is free
	wake  chan struct{} // something is in the mailbox
	done  chan struct{} // closed when run is over

	mu      sync.Mutex
	mailbox []eventserver.Event
	closed  bool
}

// Deliver queues ev for the session. Safe from any goroutine; never blocks.
func (c *stdConn) Deliver(ev eventserver.Event) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.mailbox = append(c.mailbox, ev)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *stdConn) takeMailbox() []eventserver.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	evs := c.mailbox
	c.mailbox = nil
	return evs
}

// readBytes reads the socket and hands each chunk to run, waiting until run
// has copied it; it closes data at the end of the stream.
func (c *stdConn) readBytes() {
	defer close(c.data)
	buf := make([]byte, readBuffer)
	for {
		n, err := c.nc.Read(buf)
		if n > 0 {
			select {
			case c.data <- buf[:n]:
			case <-c.done:
				return
			}
			select {
			case <-c.taken:
			case <-c.done:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// run is the connection's loop: it returns when the session asks to close
// or the peer goes away.
func (c *stdConn) run() error {
	c.timer = time.NewTimer(time.Hour)
	c.timer.Stop()
	defer c.timer.Stop()
	c.rearm(time.Now(), false)
	for {
		var data <-chan []byte
		if !c.sess.Busy() && c.sess.State() != eventserver.Closed {
			data = c.data
		}
		received, closing := false, false
		select {
		case p, ok := <-data:
			if !ok {
				return io.EOF
			}
			c.in.add(p)
			c.taken <- struct{}{}
			received, closing = c.traffic()
		case <-c.wake:
			for _, ev := range c.takeMailbox() {
				if closing = c.do(c.sess.Step(ev)); closing {
					break
				}
			}
			if !closing {
				// A store answer frees a place in the window: frames
				// already received may be decoded now.
				received, closing = c.traffic()
			}
		case now := <-c.timer.C:
			if !c.deadline.IsZero() && !now.Before(c.deadline) {
				c.deadline = time.Time{}
				closing = c.do(c.sess.Step(eventserver.TimedOut{}))
			}
		}
		if err := c.flush(); err != nil {
			return err
		}
		if closing {
			return nil
		}
		c.rearm(time.Now(), received)
	}
}

// traffic sets up the transport when it is not, then decodes frames until
// the window is full, no whole frame is held, or the connection must close.
func (c *stdConn) traffic() (received, closing bool) {
	if !c.started {
		if ready, closing := c.begin(); closing || !ready {
			return false, closing
		}
	}
	for !c.sess.Busy() && c.sess.State() != eventserver.Closed {
		f, err := c.dec.Next(c.src)
		if errors.Is(err, frame.ErrIncomplete) {
			break
		}
		if err != nil && c.lost(err) {
			c.srv.log.Warn("connection_lost", logging.Fail, zap.Uint32("agency", c.sess.Agency()),
				zap.String("remote", c.remote), zap.Stringer("state", c.sess.State()), zap.Error(err))
			c.sess.Step(eventserver.Hangup{})
			return received, true
		}
		if c.sc != nil && !c.plain && !c.proven {
			if a := c.sc.Agency(); a != 0 {
				c.proven = true
				c.sess.Step(eventserver.Authenticated{Agency: a})
			}
		}
		received = true
		if c.do(c.sess.Step(eventserver.Received{Frame: f, Err: err})) {
			return received, true
		}
	}
	return received, false
}

// begin looks at the first bytes: a plaintext server refuses a peer that
// opens a handshake; a secured one answers message 1 with message 2, or
// lets a plaintext peer PING. It reports whether frames may flow.
func (c *stdConn) begin() (ready, closing bool) {
	if c.sc == nil {
		b, _ := c.in.Peek(1)
		if len(b) == 0 {
			return false, false
		}
		c.started = true
		if b[0] == secure.KindHandshake1 {
			return false, c.do(c.sess.Step(eventserver.Refused{Code: frame.CodeInsecureServer,
				Reason: "this server runs --insecure and speaks plaintext; start the agency with --insecure, or give the server --keys"}))
		}
		return true, false
	}
	reply, err := c.sc.Handshake()
	switch {
	case errors.Is(err, frame.ErrIncomplete):
		return false, false
	case errors.Is(err, secure.ErrPlaintext):
		c.started, c.plain = true, true
		c.sess.Step(eventserver.Plaintext{})
		return true, false
	case err != nil:
		code, reason := frame.CodeHandshake, "handshake failed: "+err.Error()
		var uk *secure.UnknownKeyError
		if errors.As(err, &uk) {
			code = frame.CodeUnknownKey
			reason = fmt.Sprintf("no agency has the key %s; ask the operator to add your agency's public key", uk.Key.Fingerprint())
		}
		return false, c.do(c.sess.Step(eventserver.Refused{Code: code, Reason: reason}))
	}
	c.out = append(c.out, reply...)
	c.started, c.sealed, c.src = true, true, c.sc
	return true, false
}

// lost reports whether a decoding error means the encrypted stream cannot
// be trusted: the connection closes with no answer and nothing of it is stored.
func (c *stdConn) lost(err error) bool {
	return c.sealed && (errors.Is(err, secure.ErrDecrypt) || errors.Is(err, secure.ErrRecord) || errors.Is(err, secure.ErrExhausted))
}

// encode appends f in the connection's wire form: sealed into a transport
// record once the handshake is done, as it is before (a refusal) and for a
// plaintext peer.
func (c *stdConn) encode(dst []byte, f frame.Frame) ([]byte, error) {
	if !c.sealed {
		return frame.Append(dst, f)
	}
	var err error
	if c.scratch, err = frame.Append(c.scratch[:0], f); err != nil {
		return dst, err
	}
	return c.sc.Seal(dst, c.scratch)
}

// do carries out a session's output, adding the frames to send to c.out,
// and reports whether the connection must close once they are written.
func (c *stdConn) do(out eventserver.Output) bool {
	wire, closing, err := c.srv.hub.Carry(c, c.sess, out, c.out, c.encode)
	c.out = wire
	return closing || err != nil
}

// flush writes what the session said in one loop turn with one Write.
func (c *stdConn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.out)
	if cap(c.out) > 16<<10 {
		c.out = nil // do not keep a large buffer for a connection that is mostly idle
	} else {
		c.out = c.out[:0]
	}
	return err
}

// rearm sets the deadline for what the session waits for, as the gnet
// server does: HELLO within the hello timeout of the connection's start, a
// frame within the read timeout of the last one, a PING after the ping
// interval of silence while waiting for the draw, its PONG within the
// read timeout.
func (c *stdConn) rearm(now time.Time, received bool) {
	cfg := &c.srv.cfg
	w := c.sess.Wait()
	changed := w != c.wait
	c.wait = w
	keep := !received && !changed && !c.deadline.IsZero()
	var at time.Time
	switch w {
	case eventserver.WaitNone:
	case eventserver.WaitHello:
		at = c.opened.Add(cfg.HelloTimeout) // frames before HELLO (PINGs) do not extend it
	case eventserver.WaitFrame:
		at = now.Add(cfg.ReadTimeout)
	case eventserver.WaitIdle:
		at = now.Add(cfg.PingInterval)
	case eventserver.WaitPong:
		keep = !changed && !c.deadline.IsZero() // only the PONG ends this wait
		at = now.Add(cfg.ReadTimeout)
	}
	if keep || at.Equal(c.deadline) {
		return
	}
	c.deadline = at
	if at.IsZero() {
		c.timer.Stop()
		return
	}
	c.timer.Reset(at.Sub(now))
}

// close ends the connection and forgets it.
func (c *stdConn) close(err error) {
	c.mu.Lock()
	c.closed = true
	c.mailbox = nil
	c.mu.Unlock()
	close(c.done)
	c.nc.Close()
	s := c.srv
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.hub.Leave(c, c.sess.Agency())
	state := c.sess.State()
	c.sess.Step(eventserver.Hangup{})
	fields := []zap.Field{logging.Success, zap.Uint32("agency", c.sess.Agency()), zap.String("remote", c.remote),
		zap.Stringer("state", state)}
	if n := c.in.held(); n > 0 && state != eventserver.Closed {
		// A peer that leaves mid-frame loses those bytes: say so with a fail line.
		fields[0] = logging.Fail
		fields = append(fields, zap.Int("unread_bytes", n))
	}
	if err != nil && !errors.Is(err, io.EOF) {
		fields = append(fields, zap.Error(err))
	}
	if c.sess.Agency() == 0 {
		s.log.Debug("connection_closed", fields...) // a health check's PING, say
	} else {
		s.log.Info("connection_closed", fields...)
	}
	if s.count.Add(-1) == 0 && s.draining.Load() {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
}
