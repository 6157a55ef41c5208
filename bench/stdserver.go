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
)

// StdServer is the baseline: a goroutine-per-connection server over Go's
// net package that runs the same eventserver.Session, eventserver.Hub and
// persist.Store as the gnet server, so only the transport differs.
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
}

// NewStdServer opens (and recovers) the store in cfg.DataDir. Zero fields of
// cfg take the eventserver defaults.
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
	s.log.Info("listen", logging.Success, zap.String("address", s.addr), zap.Int("agencies", s.cfg.Agencies),
		zap.Int("finished", s.hub.FinishedCount()))
	close(s.ready)
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		s.accept(ln)
	}()
	<-ctx.Done()
	s.log.Info("shutdown", logging.InProgress, zap.String("step", "stop_accepting"), zap.Int64("connections", s.count.Load()))
	s.draining.Store(true)
	ln.Close()
	<-accepted
	return s.shutdown()
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
// or at the connection limit, then runs it.
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
		sess: eventserver.NewSession(s.hub, s.log.With(zap.String("remote", remote)), s.cfg.Observer, eventserver.Limits{
			Window: s.cfg.Window, MaxFrame: s.cfg.MaxFrame, ReadTimeout: s.cfg.ReadTimeout,
			PingInterval: s.cfg.PingInterval, RetryAfter: s.cfg.RetryAfter}),
		frames: make(chan eventserver.Received, 1),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
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
	go c.readFrames()
	err := c.run()
	c.close(err)
}

// stdConn is one connection: a reader goroutine decoding frames, and the
// session loop (the goroutine that called run) which alone steps the
// session and writes to the socket.
type stdConn struct {
	srv    *StdServer
	nc     net.Conn
	remote string
	sess   *eventserver.Session
	out    []byte

	frames chan eventserver.Received // from the reader; closed when the stream ends
	wake   chan struct{}             // something is in the mailbox
	done   chan struct{}             // closed when the session loop is over

	mu      sync.Mutex
	mailbox []eventserver.Event
	closed  bool
}

// Deliver queues ev for the session loop. Safe from any goroutine; never blocks.
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

// readFrames decodes frames and hands them to the session loop, which takes
// the next one only when the session is not busy: until then the reader
// waits and TCP flow control holds the peer back. A frame-level error is
// passed on for the session to answer; the end of the stream closes frames.
func (c *stdConn) readFrames() {
	defer close(c.frames)
	r := frame.NewReader(c.nc)
	dec := frame.Decoder{MaxSize: c.srv.cfg.MaxFrame}
	for {
		f, err := dec.Next(r)
		if err != nil && !frameError(err) {
			return // end of stream or a socket error: nothing for the session to answer
		}
		select {
		case c.frames <- eventserver.Received{Frame: f, Err: err}:
		case <-c.done:
			return
		}
		if err != nil && f == nil {
			return // the stream cannot be trusted past this frame
		}
	}
}

// frameError reports whether err is about the bytes the peer sent, as
// opposed to the connection ending.
func frameError(err error) bool {
	var fe *frame.FieldError
	return errors.As(err, &fe) || errors.Is(err, frame.ErrMalformed) || errors.Is(err, frame.ErrVersion) ||
		errors.Is(err, frame.ErrTooLarge) || errors.Is(err, frame.ErrUnknownType)
}

// run is the session loop: it returns when the session asks to close or
// the peer goes away.
func (c *stdConn) run() error {
	timeout := time.NewTimer(c.srv.cfg.ReadTimeout)
	defer timeout.Stop()
	armed := true
	for {
		var frames <-chan eventserver.Received
		if !c.sess.Busy() && c.sess.State() != eventserver.Closed {
			frames = c.frames
		}
		select {
		case rf, ok := <-frames:
			if !ok {
				return io.EOF
			}
			if armed {
				timeout.Stop()
				armed = false
			}
			if close, err := c.do(c.sess.Step(rf)); close {
				return err
			}
		case <-c.wake:
			for _, ev := range c.takeMailbox() {
				if close, err := c.do(c.sess.Step(ev)); close {
					return err
				}
			}
		case <-timeout.C:
			armed = false
			if close, err := c.do(c.sess.Step(eventserver.TimedOut{})); close {
				return err
			}
		}
		// The read deadline runs only while the session waits for the peer,
		// counted from the last frame or from when the session stopped being busy.
		switch expects := c.sess.Wait() != eventserver.WaitNone; {
		case expects && !armed:
			timeout.Reset(c.srv.cfg.ReadTimeout)
			armed = true
		case !expects && armed:
			timeout.Stop()
			armed = false
		}
	}
}

// do carries out a session's output and reports whether the connection
// must close (with the write error, if that is why).
func (c *stdConn) do(out eventserver.Output) (bool, error) {
	wire, closing, err := c.srv.hub.Carry(c, c.sess, out, c.out[:0], frame.Append)
	c.out = wire
	if err != nil {
		return true, err
	}
	if len(wire) > 0 {
		if _, err := c.nc.Write(wire); err != nil {
			return true, err
		}
	}
	return closing, nil
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
	fields := []zap.Field{logging.Success, zap.Uint32("agency", c.sess.Agency()), zap.String("remote", c.remote),
		zap.Stringer("state", c.sess.State())}
	if err != nil && !errors.Is(err, io.EOF) {
		fields = append(fields, zap.Error(err))
	}
	s.log.Info("connection_closed", fields...)
	if s.count.Add(-1) == 0 && s.draining.Load() {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
}
