// Package eventserver is the lottery's central server: a gnet event loop
// decodes frames into per-connection sessions, a single writer stores bets,
// and the draw pushes each agency its winners once all have finished.
package eventserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
)

// Defaults for Config.
const (
	DefaultListen        = "0.0.0.0:12345"
	DefaultAgencies      = 5
	DefaultWinningNumber = 7574
	DefaultReadTimeout   = 30 * time.Second
	DefaultMaxConns      = 16384
	DefaultShutdownGrace = 8 * time.Second
	DefaultRetryAfter    = time.Second
)

// FloodLimit is how many unprocessed bytes a peer may pile up while one of
// its batches is in flight before it is disconnected.
const FloodLimit = 64 << 10

// Config is the server's configuration.
type Config struct {
	Listen        string        // host:port
	Agencies      int           // agencies the draw waits for
	DataDir       string        // where bets.csv and its journal live
	WinningNumber uint16        // a bet wins when its number equals this
	ReadTimeout   time.Duration // longest wait for a complete frame when one is expected
	MaxConns      int           // connections beyond this are refused with an ERROR
	MaxFrame      int           // largest frame accepted, at most frame.MaxSize
	ShutdownGrace time.Duration // how long a drain waits for connections to finish
	RetryAfter    time.Duration // hint sent in NOT_READY
	Logger        *zap.Logger
}

// Server is the gnet event server. Create it with New and run it with Serve.
type Server struct {
	gnet.BuiltinEventEngine

	cfg   Config
	log   *zap.Logger
	store *persist.Store
	hub   *Hub

	eng      gnet.Engine
	addr     string
	ready    chan struct{}
	draining atomic.Bool
	conns    atomic.Int64
	idle     chan struct{} // signalled when the last connection closes while draining

}

// New opens (and recovers) the store in cfg.DataDir.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	store, err := OpenStore(cfg)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg:   cfg,
		log:   cfg.Logger,
		store: store,
		hub:   NewHub(store, cfg.Logger),
		ready: make(chan struct{}),
		idle:  make(chan struct{}, 1),
	}, nil
}

// Ready is closed once the server listens.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the address the server listens on, valid after Ready.
func (s *Server) Addr() string { return s.addr }

// Hub exposes the shared state, for tests and tools.
func (s *Server) Hub() *Hub { return s.hub }

// Serve runs the event loops until ctx is cancelled, then drains: it refuses
// new connections, lets in-flight batches finish, closes every connection,
// stops the engine and closes the store. A clean drain returns nil.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		errc <- gnet.Run(s, "tcp://"+s.cfg.Listen,
			gnet.WithMulticore(true),
			gnet.WithTicker(true),
			gnet.WithReuseAddr(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLogger(gnetLogger{s.log}),
		)
	}()
	select {
	case err := <-errc:
		s.hub.Close()
		_ = s.store.Close()
		if err == nil {
			err = errors.New("engine stopped before it started")
		}
		s.log.Error("listen", logging.Fail, zap.String("address", s.cfg.Listen), zap.Error(err))
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	case <-s.ready:
	}
	select {
	case <-ctx.Done():
		return s.shutdown(errc)
	case err := <-errc:
		// The engine stopped by itself, its connections with it: only the store is left.
		if err == nil {
			err = errors.New("stopped without being asked")
		}
		s.log.Error("engine", logging.Fail, zap.Error(err))
		return errors.Join(fmt.Errorf("engine: %w", err), s.closeStore(nil))
	}
}

func (s *Server) shutdown(errc chan error) error {
	s.log.Info("shutdown", logging.InProgress, zap.String("step", "stop_accepting"),
		zap.Int64("connections", s.conns.Load()))
	s.draining.Store(true)
	s.hub.Broadcast(ShuttingDown{})
	if s.conns.Load() > 0 {
		s.log.Info("shutdown", logging.InProgress, zap.String("step", "finish_in_flight"),
			zap.Int64("connections", s.conns.Load()))
		timer := time.NewTimer(s.cfg.ShutdownGrace)
	wait:
		for s.conns.Load() > 0 {
			select {
			case <-s.idle:
			case <-timer.C:
				s.log.Warn("shutdown", logging.Fail, zap.String("step", "finish_in_flight"),
					zap.Int64("connections_left", s.conns.Load()), zap.Duration("grace", s.cfg.ShutdownGrace))
				break wait
			}
		}
		timer.Stop()
	}
	var errs []error
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.eng.Stop(stopCtx); err != nil {
		s.log.Error("engine_stop", logging.Fail, zap.Error(err))
		errs = append(errs, fmt.Errorf("stop engine: %w", err))
	} else {
		if err := <-errc; err != nil {
			errs = append(errs, fmt.Errorf("engine: %w", err))
		}
		s.log.Info("engine_stop", logging.Success)
	}
	return s.closeStore(errs)
}

// closeStore ends the draw and the store, after which nothing is left
// running, and logs how the shutdown went given the earlier errs.
func (s *Server) closeStore(errs []error) error {
	s.hub.Close()
	if err := s.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Error("shutdown", logging.Fail, zap.Error(err))
		return err
	}
	s.log.Info("shutdown", logging.Success)
	return nil
}

// OnBoot records the engine and the bound address.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	s.addr = s.cfg.Listen
	if a, err := boundAddr(eng); err == nil {
		s.addr = a
	}
	s.log.Info("listen", logging.Success, zap.String("address", s.addr), zap.Int("agencies", s.cfg.Agencies),
		zap.Int("finished", s.hub.FinishedCount()))
	close(s.ready)
	return gnet.None
}

// boundAddr asks the kernel which address the listener got (port 0 resolves here).
func boundAddr(eng gnet.Engine) (string, error) {
	fd, err := eng.Dup()
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "", err
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), fmt.Sprint(sa.Port)), nil
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), fmt.Sprint(sa.Port)), nil
	}
	return "", fmt.Errorf("unexpected socket address %T", sa)
}

// OnOpen admits a connection, or refuses it with an ERROR while draining or
// at the connection limit.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	remote := c.RemoteAddr().String()
	refuse := func(code frame.Code, reason string) ([]byte, gnet.Action) {
		s.log.Warn("connection_open", logging.Fail, zap.String("remote", remote), zap.Stringer("code", code))
		b, _ := frame.Encode(&frame.Error{Code: code, Reason: reason})
		return b, gnet.Close
	}
	if s.draining.Load() {
		return refuse(frame.CodeShuttingDown, "server is shutting down; retry later")
	}
	if s.conns.Add(1) > int64(s.cfg.MaxConns) {
		s.conns.Add(-1)
		return refuse(frame.CodeTooManyConns, fmt.Sprintf("server is at its limit of %d connections", s.cfg.MaxConns))
	}
	cs := &conn{
		srv:    s,
		c:      c,
		remote: remote,
		sess:   NewSession(s.hub, s.log.With(zap.String("remote", remote)), s.cfg.RetryAfter),
		dec:    frame.Decoder{MaxSize: s.cfg.MaxFrame},
	}
	c.SetContext(cs)
	cs.arm(time.Now())
	s.hub.Join(cs)
	if s.draining.Load() {
		cs.Deliver(ShuttingDown{}) // the drain's broadcast may have missed this connection
	}
	if ce := s.log.Check(zap.DebugLevel, "connection_open"); ce != nil {
		ce.Write(logging.Success, zap.String("remote", remote))
	}
	return nil, gnet.None
}

// OnClose forgets the connection.
func (s *Server) OnClose(c gnet.Conn, err error) gnet.Action {
	cs, ok := c.Context().(*conn)
	if !ok {
		return gnet.None // refused in OnOpen
	}
	cs.closed.Store(true)
	s.hub.Leave(cs, cs.sess.Agency())
	// A peer that leaves mid-frame loses those bytes: say so with a fail line.
	unread := c.InboundBuffered()
	dropped := unread > 0 && cs.sess.State() != Closed
	result := logging.Success
	if dropped {
		result = logging.Fail
	}
	fields := []zap.Field{result, zap.Uint32("agency", cs.sess.Agency()), zap.String("remote", cs.remote),
		zap.Stringer("state", cs.sess.State())}
	if dropped {
		fields = append(fields, zap.Int("unread_bytes", unread))
	}
	if err != nil && !errors.Is(err, io.EOF) {
		fields = append(fields, zap.Error(err))
	}
	if cs.sess.Agency() == 0 && !dropped {
		// Never said HELLO: a health check's PING, say; not worth an INFO line each second.
		s.log.Debug("connection_closed", fields...)
	} else {
		s.log.Info("connection_closed", fields...)
	}
	if s.conns.Add(-1) == 0 && s.draining.Load() {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
	return gnet.None
}

// OnTraffic runs queued events, then decodes frames until the session is
// busy, the buffer holds no whole frame, or the connection must close.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	cs, ok := c.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	now := time.Now()
	for _, ev := range cs.takeMailbox() {
		if _, timeout := ev.(TimedOut); timeout && !cs.expired(now) {
			continue // a frame arrived after the sweep saw the deadline pass
		}
		if cs.do(cs.sess.Step(ev)) {
			return gnet.Close
		}
	}
	for !cs.sess.Busy() && cs.sess.State() != Closed {
		f, err := cs.dec.Next(c)
		if errors.Is(err, frame.ErrIncomplete) {
			break
		}
		cs.disarm()
		if cs.do(cs.sess.Step(Received{Frame: f, Err: err})) {
			return gnet.Close
		}
	}
	if cs.sess.Busy() && c.InboundBuffered() > FloodLimit {
		cs.do(cs.sess.Step(Flooded{Buffered: c.InboundBuffered()}))
		return gnet.Close
	}
	switch {
	case cs.sess.Busy():
		cs.disarm()
	case cs.sess.ExpectsInput() || c.InboundBuffered() > 0:
		cs.armIfIdle(now)
	default:
		cs.disarm()
	}
	return gnet.None
}

// OnTick sweeps for connections whose read deadline has passed.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	now := time.Now()
	for _, p := range s.hub.Peers() {
		if cs, ok := p.(*conn); ok && cs.expired(now) {
			cs.Deliver(TimedOut{}) // the loop checks the deadline again before acting
		}
	}
	tick := s.cfg.ReadTimeout / 4
	if tick > time.Second {
		tick = time.Second
	}
	return tick, gnet.None
}

// conn is a connection's context: its session, its decoder, and a mailbox
// through which other goroutines hand it events.
type conn struct {
	srv    *Server
	c      gnet.Conn
	remote string
	sess   *Session
	dec    frame.Decoder
	out    []byte

	mu      sync.Mutex
	mailbox []Event

	deadline atomic.Int64 // unix nanoseconds; 0 when no frame is awaited
	closed   atomic.Bool
}

// Deliver queues ev for the session and wakes the connection's event loop,
// which runs it in OnTraffic. Safe from any goroutine.
func (cs *conn) Deliver(ev Event) {
	if cs.closed.Load() {
		return
	}
	cs.mu.Lock()
	cs.mailbox = append(cs.mailbox, ev)
	cs.mu.Unlock()
	_ = cs.c.Wake(nil)
}

func (cs *conn) takeMailbox() []Event {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	evs := cs.mailbox
	cs.mailbox = nil
	return evs
}

// do carries out a session's output on the event loop and reports whether
// the connection must close.
func (cs *conn) do(out Output) bool {
	wire, closing, err := cs.srv.hub.Carry(cs, cs.sess, out, cs.out[:0])
	cs.out = wire
	if len(wire) > 0 {
		if _, werr := cs.c.Write(wire); werr != nil {
			return true
		}
	}
	return closing || err != nil
}

func (cs *conn) arm(now time.Time) {
	cs.deadline.Store(now.Add(cs.srv.cfg.ReadTimeout).UnixNano())
}

func (cs *conn) armIfIdle(now time.Time) {
	if cs.deadline.Load() == 0 {
		cs.arm(now)
	}
}

func (cs *conn) disarm() { cs.deadline.Store(0) }

func (cs *conn) expired(now time.Time) bool {
	d := cs.deadline.Load()
	return d != 0 && now.UnixNano() > d
}

// gnetLogger sends gnet's own messages through zap as action lines.
type gnetLogger struct{ log *zap.Logger }

func (g gnetLogger) Debugf(format string, args ...any) {
	g.log.Debug("gnet", logging.Success, zap.String("message", fmt.Sprintf(format, args...)))
}

func (g gnetLogger) Infof(format string, args ...any) {
	g.log.Debug("gnet", logging.Success, zap.String("message", fmt.Sprintf(format, args...)))
}

func (g gnetLogger) Warnf(format string, args ...any) {
	g.log.Warn("gnet", logging.Fail, zap.String("message", fmt.Sprintf(format, args...)))
}

func (g gnetLogger) Errorf(format string, args ...any) {
	g.log.Error("gnet", logging.Fail, zap.String("message", fmt.Sprintf(format, args...)))
}

func (g gnetLogger) Fatalf(format string, args ...any) {
	g.log.Fatal("gnet", logging.Fail, zap.String("message", fmt.Sprintf(format, args...)))
}
