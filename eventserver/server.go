// Package eventserver is the lottery's central server: a gnet event loop
// decodes frames into per-connection sessions, a single writer stores bets,
// and the draw pushes each agency its winners once all have finished.
package eventserver

import (
	"container/list"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/secure"
)

// Defaults for Config.
const (
	DefaultListen        = "0.0.0.0:12345"
	DefaultAgencies      = 5
	DefaultWinningNumber = 7574
	DefaultReadTimeout   = 30 * time.Second
	DefaultHelloTimeout  = 10 * time.Second
	DefaultPingInterval  = 60 * time.Second
	DefaultMaxPending    = 1024
	DefaultWindow        = 64
	DefaultShutdownGrace = 8 * time.Second
	DefaultRetryAfter    = time.Second
)

// Per-connection byte limits. While the server is not reading a connection
// (its window is full, the server's budget of requests in flight is spent,
// or the peer does not read its answers), the peer may leave unread at most
// its window of frames plus FloodLimit bytes; the server stops reading a
// connection whose unsent answers pass OutboundLimit, until its peer reads
// them.
const (
	FloodLimit    = 64 << 10
	OutboundLimit = 64 << 10
)

// floodLimit is how many unread bytes cs's peer may leave: a peer within the
// window its WELCOME gave can have that many frames waiting while the server
// is not reading. Windows are shares of the server's budget of requests in
// flight, so all connections together hold at most about that budget of
// frames plus FloodLimit each.
func (s *Server) floodLimit(cs *conn) int { return cs.sess.Window()*s.cfg.MaxFrame + FloodLimit }

// ErrStoreFailed is returned by Serve when the store failed: the process
// should exit non-zero so that its supervisor restarts it and recovery runs.
var ErrStoreFailed = errors.New("store failed")

// Config is the server's configuration.
type Config struct {
	Listen         string             // host:port
	Agencies       int                // agencies the draw waits for
	DataDir        string             // where bets.csv and its journal live (the file store)
	Store          string             // postgres:// URL of a store shared with other servers; "" for the file store
	WinningNumber  uint16             // a bet wins when its number equals this
	ReadTimeout    time.Duration      // longest wait for a frame, or for a PONG, when one is due
	HelloTimeout   time.Duration      // a new connection must complete HELLO within this
	PingInterval   time.Duration      // a waiting agency is PINGed after this much silence
	MaxPending     int                // connections that have not completed HELLO, at most
	MaxFrame       int                // largest frame accepted, at most frame.MaxSize
	Window         int                // most unanswered frames per connection
	MaxInFlight    int                // most store requests unanswered, all connections together (DefaultMaxInFlight)
	ShutdownGrace  time.Duration      // how long a drain waits for connections to finish
	RetryAfter     time.Duration      // hint sent in NOT_READY
	RebuildJournal bool               // accept a damaged journal, rebuilding it from bets.csv
	MetricsListen  string             // host:port of the metrics and health HTTP server; "" for none
	Keys           *secure.KeyStore   // agency keys; nil runs the plaintext protocol (--insecure)
	SignKey        ed25519.PrivateKey // signs receipts and the commitment; nil leaves them unsigned
	Logger         *zap.Logger
	Observer       Observer
	// StoreSync and Tamper inject faults into the store, for tests.
	StoreSync func(*os.File) error
	Tamper    func(agency uint32, first uint64, bets []frame.Bet)
}

// Server is the gnet event server. Create it with New and run it with Serve.
type Server struct {
	gnet.BuiltinEventEngine

	cfg   Config
	log   *zap.Logger
	obs   Observer
	store *persist.Store
	hub   *Hub

	eng      gnet.Engine
	addr     string
	ready    chan struct{}
	draining atomic.Bool
	conns    atomic.Int64
	pending  pendingSet
	idle     chan struct{} // signalled when the last connection closes while draining
	refused  refusals
	tick     atomic.Int64 // unix nanoseconds of the last tick
	loops    loopWatch    // whether each event loop still runs tasks

	mem MemoryReleaser // ticked on the ticker's loop

	pmu     sync.Mutex
	paused  map[*conn]struct{} // connections not read until their peer reads its answers
	starved map[*conn]struct{} // connections not read until the hub has room for requests
}

// New opens (and recovers) the store: PostgreSQL at cfg.Store, or the data
// directory cfg.DataDir.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	store, err := OpenStore(cfg)
	if err != nil {
		return nil, err
	}
	hub := NewHub(store, cfg.Logger, cfg.Observer, cfg.SignKey)
	hub.SetMaxInFlight(cfg.MaxInFlight)
	return &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		obs:     observerOr(cfg.Observer),
		store:   store,
		hub:     hub,
		ready:   make(chan struct{}),
		idle:    make(chan struct{}, 1),
		paused:  map[*conn]struct{}{},
		starved: map[*conn]struct{}{},
	}, nil
}

// Ready is closed once the server listens.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the address the server listens on, valid after Ready.
func (s *Server) Addr() string { return s.addr }

// Hub exposes the shared state, for tests and tools.
func (s *Server) Hub() *Hub { return s.hub }

// Store exposes the store, for health checks and tests.
func (s *Server) Store() *persist.Store { return s.store }

// Draining reports whether a shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// Stuck is nil while the server's ticker and every event loop that has
// served a connection have run within limit of now, and otherwise names the
// one that has not: the liveness check behind /healthz.
func (s *Server) Stuck(now time.Time, limit time.Duration) error {
	if since := now.Sub(time.Unix(0, s.tick.Load())); since > limit {
		return fmt.Errorf("the server's ticker has not run for %v", since.Round(time.Millisecond))
	}
	return s.loops.stuck(now, limit)
}

// Serve runs the event loops until ctx is cancelled or the store fails, then
// drains: it refuses new connections, lets in-flight batches finish, closes
// every connection, stops the engine and closes the store. A clean drain
// after ctx is cancelled returns nil; a failed store returns ErrStoreFailed.
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
	fed := make(chan struct{})
	defer close(fed)
	go s.feed(fed)
	select {
	case <-ctx.Done():
		return s.shutdown(errc, nil)
	case <-s.store.Failed():
		err := fmt.Errorf("%w: %w", ErrStoreFailed, s.store.Err())
		s.log.Error("store", logging.Fail, zap.Error(err), zap.String("next", "drain and exit so that a restart recovers"))
		return s.shutdown(errc, err)
	case err := <-errc:
		// The engine stopped by itself, its connections with it: only the store is left.
		if err == nil {
			err = errors.New("stopped without being asked")
		}
		s.log.Error("engine", logging.Fail, zap.Error(err))
		return errors.Join(fmt.Errorf("engine: %w", err), s.closeStore(nil))
	}
}

func (s *Server) shutdown(errc chan error, cause error) error {
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
	if cause != nil {
		errs = append(errs, cause)
	}
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
	s.mem.Wait()
	s.hub.Close()
	if err := s.store.Close(); err != nil && !errors.Is(err, persist.ErrBroken) {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	} else if err != nil && len(errs) == 0 {
		errs = append(errs, err)
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
	s.tick.Store(time.Now().UnixNano())
	mode := "secure"
	if s.cfg.Keys == nil {
		mode = "insecure"
	}
	s.log.Info("listen", logging.Success, zap.String("address", s.addr), zap.Int("agencies", s.cfg.Agencies),
		zap.Int("finished", s.hub.FinishedCount()), zap.String("mode", mode))
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

// OnOpen admits a connection into the budget of connections that have not
// completed HELLO, or refuses it with an ERROR while draining or when that
// budget is spent. Agencies that have said HELLO do not count against it.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	refuse := func(code frame.Code, reason string) ([]byte, gnet.Action) {
		s.refused.add(code)
		s.obs.ConnectionRefused(code.String())
		s.obs.ErrorSent(code)
		b, _ := frame.Encode(&frame.Error{Code: code, Reason: reason})
		return b, gnet.Close
	}
	if s.draining.Load() {
		return refuse(frame.CodeShuttingDown, "server is shutting down; retry later")
	}
	now := time.Now()
	s.loops.see(c.EventLoop(), now)
	remote := c.RemoteAddr().String()
	cs := &conn{srv: s, c: c, remote: remote, opened: now, dec: frame.Decoder{MaxSize: s.cfg.MaxFrame}}
	evicted, ok := s.pending.admit(cs, now, s.cfg.MaxPending, evictAfter(s.cfg.HelloTimeout))
	if !ok {
		return refuse(frame.CodeTooManyConns, fmt.Sprintf("server has %d connections that have not said HELLO yet; retry later",
			s.cfg.MaxPending))
	}
	if evicted != nil {
		s.refused.add(frame.CodeTooManyConns) // logged in the refusal summary, like the refusals above
		evicted.Deliver(evict{})
	}
	s.conns.Add(1)
	cs.sess = NewSession(s.hub, logging.WithField(s.log, zap.String("remote", remote)), s.obs, s.limits())
	cs.tr = s.newTransport(cs)
	c.SetContext(cs)
	cs.rearm(now, false)
	s.hub.Join(cs)
	if s.draining.Load() {
		cs.Deliver(ShuttingDown{}) // the drain's broadcast may have missed this connection
	}
	if ce := s.log.Check(zap.DebugLevel, "connection_open"); ce != nil {
		ce.Write(logging.Success, zap.String("remote", remote))
	}
	return nil, gnet.None
}

func (s *Server) limits() Limits {
	return Limits{Window: s.cfg.Window, MaxFrame: s.cfg.MaxFrame, ReadTimeout: s.cfg.ReadTimeout,
		PingInterval: s.cfg.PingInterval, RetryAfter: s.cfg.RetryAfter, Secure: s.cfg.Keys != nil}
}

// OnClose forgets the connection.
func (s *Server) OnClose(c gnet.Conn, err error) gnet.Action {
	cs, ok := c.Context().(*conn)
	if !ok {
		return gnet.None // refused in OnOpen
	}
	cs.closed.Store(true)
	s.unpause(cs)
	s.pmu.Lock()
	delete(s.starved, cs)
	s.pmu.Unlock()
	s.hub.Leave(cs, cs.sess.Agency())
	s.pending.remove(cs)
	state := cs.sess.State()
	cs.sess.Step(Hangup{})
	// A peer that leaves mid-frame loses those bytes: say so with a fail line.
	unread := cs.tr.unread() // raw bytes and any frame the transport decrypted already
	dropped := unread > 0 && state != Closed
	result := logging.Success
	if dropped {
		result = logging.Fail
	}
	fields := []zap.Field{result, zap.Uint32("agency", cs.sess.Agency()), zap.String("remote", cs.remote),
		zap.Stringer("state", state)}
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

// OnTraffic runs queued events, then decodes frames until the session's
// window is full, its peer stops reading, the buffer holds no whole frame,
// or the connection must close.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	cs, ok := c.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	cs.takeOut()
	act := s.traffic(cs, c, time.Now())
	if !cs.flush() {
		return gnet.Close
	}
	return act
}

// traffic does OnTraffic's work; what the session sends gathers in cs.out
// and leaves in one write when it returns.
func (s *Server) traffic(cs *conn, c gnet.Conn, now time.Time) gnet.Action {
	lateDeadline := false
	for _, ev := range cs.takeMailbox() {
		if _, ok := ev.(evict); ok {
			if act := cs.evict(); act == gnet.Close {
				return act
			}
			continue
		}
		if _, timeout := ev.(TimedOut); timeout {
			switch {
			case cs.stuck(now):
				ev = Flooded{Reason: fmt.Sprintf("did not read %d bytes of answers within %v", c.OutboundBuffered(), s.cfg.ReadTimeout)}
			case !cs.expired(now):
				continue // a frame arrived after the sweep saw the deadline pass
			case cs.tr.unread() > 0:
				lateDeadline = true // judged after reading what the peer already sent
				continue
			}
		}
		if cs.do(cs.sess.Step(ev)) {
			return gnet.Close
		}
		// The sweep may have queued another TimedOut meanwhile: judge it by
		// what the session waits for now (a PING just sent arms its PONG's).
		cs.rearm(now, false)
	}
	if ready, closeConn := cs.tr.start(cs, now); closeConn {
		return gnet.Close
	} else if !ready {
		// No frame can be read yet (a handshake still arriving): a deadline
		// put off until the bytes waiting were read is judged now.
		if lateDeadline && cs.expired(now) && cs.do(cs.sess.Step(TimedOut{})) {
			return gnet.Close
		}
		cs.rearm(now, false)
		return gnet.None
	}
	received := false
	starved := false
	for !cs.sess.Busy() && cs.sess.State() != Closed && c.OutboundBuffered()+len(cs.out) < OutboundLimit {
		if s.hub.Saturated() {
			starved = true
			break
		}
		f, err := cs.dec.Next(cs.tr)
		if errors.Is(err, frame.ErrIncomplete) {
			break
		}
		if err != nil && cs.tr.fatal(err) {
			return cs.closeLost(err)
		}
		if agency := cs.tr.proven(); agency != 0 {
			cs.sess.Step(Authenticated{Agency: agency})
		}
		received = true
		if cs.do(cs.sess.Step(Received{Frame: f, Err: err})) {
			return gnet.Close
		}
	}
	if c.OutboundBuffered()+len(cs.out) >= OutboundLimit {
		s.pause(cs, now)
	} else {
		s.unpause(cs)
	}
	if starved && cs.tr.unread() > 0 {
		s.starve(cs)
	}
	waiting := false
	if lateDeadline && starved {
		var err error
		if waiting, err = cs.frameWaiting(); err != nil {
			return cs.closeLost(err)
		}
	}
	if lateDeadline && !waiting {
		cs.rearm(now, received)
		if cs.expired(now) && cs.do(cs.sess.Step(TimedOut{})) {
			return gnet.Close
		}
	}
	if unread := c.InboundBuffered(); unread > s.floodLimit(cs) && (cs.sess.Busy() || starved || cs.stalled.Load() != 0) {
		cs.do(cs.sess.Step(Flooded{Reason: fmt.Sprintf("%d unread bytes piled up while the server was not reading", unread)}))
		return gnet.Close
	}
	cs.rearm(now, received)
	return gnet.None
}

// frameWaiting reports whether a whole frame, or a header that does not
// parse, waits unread: while the store's budget is spent the server reads
// nothing, and a deadline is not judged against a peer that did answer. A
// partial frame (a peer trickling bytes, or gone) does not count.
func (cs *conn) frameWaiting() (bool, error) {
	hb, err := cs.tr.Peek(frame.HeaderSize)
	if err == nil {
		h, herr := frame.ParseHeader(hb, cs.srv.cfg.MaxFrame)
		if herr != nil {
			return true, nil // whole enough: reading it ends the session with its error
		}
		_, err = cs.tr.Peek(h.Size())
	}
	if err != nil && cs.tr.fatal(err) {
		return false, err // a record that does not decrypt: the stream is lost
	}
	return err == nil, nil
}

// evict tells a connection that has not said HELLO that a newer one took
// its place in the budget. It is a refusal, counted in the connection_refused
// summary when it happens, so the connection ends without a log line of its
// own: a loop of connections evicting each other must not flood the logs.
type evict struct{}

func (evict) event() {}

// evict ends a place-holder with ERROR too_many_connections. A connection
// that said HELLO meanwhile is an agency, no longer in the budget: it stays.
func (cs *conn) evict() gnet.Action {
	if cs.agency || cs.sess.State() == Closed {
		return gnet.None
	}
	b, err := cs.tr.appendFrame(cs.out, &frame.Error{Code: frame.CodeTooManyConns,
		Reason: "this connection did not say HELLO and a newer one needed its place"})
	if err == nil {
		cs.out = b
		cs.srv.obs.ErrorSent(frame.CodeTooManyConns)
	}
	cs.srv.obs.ConnectionRefused(frame.CodeTooManyConns.String())
	cs.sess.Step(Hangup{})
	return gnet.Close
}

// starve parks cs, which has frames waiting while the server's budget of
// requests in flight is spent, until the hub says there is room.
func (s *Server) starve(cs *conn) {
	s.pmu.Lock()
	s.starved[cs] = struct{}{}
	s.pmu.Unlock()
	if !s.hub.Saturated() { // room came before cs was parked
		_ = cs.c.Wake(nil)
	}
}

// feed wakes the parked connections whenever the hub has room, until done.
// It takes the room signal before it looks at the budget, so a signal given
// while it was waking the previous ones is never missed: connections parked
// then would otherwise wait for a next signal that may never come (the last
// agencies of an upload, timed out after the read timeout).
func (s *Server) feed(done <-chan struct{}) {
	for {
		room := s.hub.Room()
		if !s.hub.Saturated() {
			s.pmu.Lock()
			for cs := range s.starved {
				_ = cs.c.Wake(nil)
			}
			clear(s.starved)
			s.pmu.Unlock()
		}
		select {
		case <-done:
			return
		case <-room:
		}
	}
}

// pause stops reading cs until its peer reads its answers; the tick wakes it
// to look again, and it is cut off if it stays stuck past the read timeout.
func (s *Server) pause(cs *conn, now time.Time) {
	if cs.stalled.CompareAndSwap(0, now.UnixNano()) {
		s.pmu.Lock()
		s.paused[cs] = struct{}{}
		s.pmu.Unlock()
	}
}

func (s *Server) unpause(cs *conn) {
	if cs.stalled.Swap(0) != 0 {
		s.pmu.Lock()
		delete(s.paused, cs)
		s.pmu.Unlock()
	}
}

// OnTick wakes paused connections to see whether their peers have read,
// sweeps for connections whose deadline has passed, and logs refused
// connections as one summary line per code.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	now := time.Now()
	s.tick.Store(now.UnixNano())
	s.loops.probe()
	s.pmu.Lock()
	for cs := range s.paused {
		_ = cs.c.Wake(nil)
	}
	s.pmu.Unlock()
	for _, p := range s.hub.Peers() {
		if cs, ok := p.(*conn); ok && (cs.expired(now) || cs.stuck(now)) {
			cs.Deliver(TimedOut{}) // the loop checks the deadline again before acting
		}
	}
	s.refused.report(s.log, now)
	s.mem.Tick(now, s.hub.InFlight() > 0)
	return min(100*time.Millisecond, s.cfg.ReadTimeout/4, s.cfg.HelloTimeout/4), gnet.None
}

// pendingSet is the budget of connections that have not said HELLO. When it
// is spent, a newcomer takes the place of the oldest connection still
// waiting if that one has had long enough to say HELLO (an agency needs
// milliseconds), so connections holding places idle cannot lock agencies
// out; only when every place is young is the newcomer refused.
type pendingSet struct {
	mu   sync.Mutex
	list list.List // of *conn, oldest first
}

// evictAfter is how long a connection keeps its place before HELLO for sure.
func evictAfter(helloTimeout time.Duration) time.Duration {
	return min(max(helloTimeout/10, 100*time.Millisecond), time.Second)
}

// admit gives cs a place, taking it from the oldest connection if it is
// older than minAge; it returns that connection, or false when full.
func (p *pendingSet) admit(cs *conn, now time.Time, limit int, minAge time.Duration) (*conn, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var evicted *conn
	if p.list.Len() >= limit {
		oldest := p.list.Front()
		if oldest == nil || now.Sub(oldest.Value.(*conn).opened) < minAge {
			return nil, false
		}
		evicted = oldest.Value.(*conn)
		p.list.Remove(oldest)
		evicted.place = nil
	}
	cs.place = p.list.PushBack(cs)
	return evicted, true
}

// remove gives cs's place back, if it has one.
func (p *pendingSet) remove(cs *conn) {
	p.mu.Lock()
	if cs.place != nil {
		p.list.Remove(cs.place)
		cs.place = nil
	}
	p.mu.Unlock()
}

// MemoryReleaser gives the memory of an upload burst back to the system
// once the store has been idle for a second, once per idle stretch: the
// decoded batches and the connections' buffers are garbage by then, and
// agencies waiting for the draw should cost only what they hold. A server
// ticks it from one goroutine; the zero value is ready.
type MemoryReleaser struct {
	idle idleTracker
	bg   sync.WaitGroup
}

// Tick says whether store requests are in flight at now, and starts the
// release, on a goroutine of its own (full collections are slow), when it
// is due.
func (m *MemoryReleaser) Tick(now time.Time, busy bool) {
	if !m.idle.due(now, busy) {
		return
	}
	m.bg.Go(returnMemory)
}

// Wait waits for a release under way, for a server that is shutting down.
func (m *MemoryReleaser) Wait() { m.bg.Wait() }

// idleTracker says when the store has been idle long enough to give
// memory back: once per idle stretch of at least a second.
type idleTracker struct {
	lastBusy time.Time // when requests were last in flight
	released bool      // memory given back since
}

// due records whether requests are in flight now and reports whether
// memory should be given back now.
func (t *idleTracker) due(now time.Time, busy bool) bool {
	if busy {
		t.lastBusy, t.released = now, false
		return false
	}
	if t.released || t.lastBusy.IsZero() || now.Sub(t.lastBusy) < time.Second {
		return false
	}
	t.released = true
	return true
}

// returnMemory collects twice and returns freed memory to the system: the
// first collection only moves what sync.Pools hold (gnet's ring buffers,
// the plaintext buffers) to their victim caches, the second frees it.
func returnMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// refusals counts refused connections per code between summary lines.
type refusals struct {
	counts [frame.CodeHandshake + 1]atomic.Int64
	lines  [frame.CodeHandshake + 1]atomic.Int64 // refusals logged one by one since the last report
	last   time.Time                             // event loop of the ticker only
}

// RefusalLines is how many handshake refusals of one code a second get a
// session_error line each (with the peer's address and the reason); the
// rest are only counted in the connection_refused summary, so peers
// failing handshakes on purpose cannot flood the log.
const RefusalLines = 10

func (r *refusals) add(code frame.Code) {
	if int(code) < len(r.counts) {
		r.counts[code].Add(1)
	}
}

// logOne reports whether a refusal with code may have its own line now.
func (r *refusals) logOne(code frame.Code) bool {
	return int(code) >= len(r.lines) || r.lines[code].Add(1) <= RefusalLines
}

// refusal is the Refused event of a handshake the transport turned away:
// quiet, and counted in the summary, past RefusalLines a second.
func (s *Server) refusal(code frame.Code, reason string) Refused {
	if s.refused.logOne(code) {
		return Refused{Code: code, Reason: reason}
	}
	s.refused.add(code)
	return Refused{Code: code, Reason: reason, Quiet: true}
}

// report logs, at most once a second, how many connections were refused
// since the last report, one line per code.
func (r *refusals) report(log *zap.Logger, now time.Time) {
	if now.Sub(r.last) < time.Second {
		return
	}
	elapsed := now.Sub(r.last)
	if r.last.IsZero() {
		elapsed = time.Second
	}
	r.last = now
	for code := range r.lines {
		r.lines[code].Store(0)
	}
	for code := range r.counts {
		if n := r.counts[code].Swap(0); n > 0 {
			log.Warn("connection_refused", logging.Fail, zap.Stringer("code", frame.Code(code)), zap.Int64("count", n),
				zap.Float64("per_second", float64(n)/elapsed.Seconds()))
		}
	}
}

// conn is a connection's context: its session, its transport, its decoder,
// and a mailbox through which other goroutines hand it events.
type conn struct {
	srv    *Server
	c      gnet.Conn
	remote string
	opened time.Time
	sess   *Session
	tr     transport
	dec    frame.Decoder
	out    []byte        // answers of the running callback; see takeOut
	outBuf *[]byte       // the pooled buffer out came from
	place  *list.Element // in the server's budget of connections before HELLO; guarded by pendingSet.mu
	agency bool          // said HELLO
	wait   Wait          // what the deadline was armed for

	mu      sync.Mutex
	mailbox []Event

	deadline atomic.Int64 // unix nanoseconds; 0 when none
	stalled  atomic.Int64 // unix nanoseconds since the peer stopped reading its answers; 0 when it reads
	closed   atomic.Bool
}

// Deliver queues ev for the session and wakes the connection's event loop,
// which runs it in OnTraffic. Safe from any goroutine. Events that arrive
// before the loop has taken the mailbox ride on the wake already on its
// way: a group commit answering many batches of one agency costs one gnet
// task and callback instead of one per batch, all but the first of which
// found the mailbox already emptied.
func (cs *conn) Deliver(ev Event) {
	if cs.closed.Load() {
		return
	}
	cs.mu.Lock()
	wake := len(cs.mailbox) == 0
	cs.mailbox = append(cs.mailbox, ev)
	cs.mu.Unlock()
	if wake {
		_ = cs.c.Wake(nil)
	}
}

func (cs *conn) takeMailbox() []Event {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	evs := cs.mailbox
	cs.mailbox = nil
	return evs
}

// do carries out a session's output on the event loop, adding the frames
// to send to cs.out, and reports whether the connection must close.
func (cs *conn) do(out Output) bool {
	wire, closing, err := cs.srv.hub.Carry(cs, cs.sess, out, cs.out, cs.tr.appendFrame)
	cs.out = wire
	if !cs.agency && cs.sess.Agency() != 0 && cs.sess.State() != Closed {
		cs.agency = true // an agency now: it no longer counts against the budget before HELLO
		cs.srv.pending.remove(cs)
	}
	return closing || err != nil
}

// flush writes what the session said during one callback in a single write
// and reports whether the connection is still usable.
func (cs *conn) flush() bool {
	var err error
	if len(cs.out) > 0 {
		_, err = cs.c.Write(cs.out) // what the socket does not take, gnet copies
	}
	if cs.outBuf != nil && cap(cs.out) <= maxPooledOut {
		*cs.outBuf = cs.out[:0]
		outPool.Put(cs.outBuf)
	}
	cs.out, cs.outBuf = nil, nil
	return err == nil
}

// takeOut gives the callback a pooled buffer to gather its answers in. They
// leave in one write when the callback returns, so no connection keeps a
// buffer between callbacks (an agency may wait for the draw for hours), and
// a burst of answers to thousands of connections (the draw's WINNERS) reuses
// a few buffers instead of faulting in fresh memory for each.
func (cs *conn) takeOut() {
	if cs.outBuf == nil {
		cs.outBuf = outPool.Get().(*[]byte)
		cs.out = (*cs.outBuf)[:0]
	}
}

// maxPooledOut is the largest answer buffer outPool keeps.
const maxPooledOut = 16 << 10

var outPool = sync.Pool{New: func() any { return new([]byte) }}

// rearm sets the deadline for what the session waits for.
func (cs *conn) rearm(now time.Time, received bool) {
	cfg := &cs.srv.cfg
	w := cs.sess.Wait()
	changed := w != cs.wait
	cs.wait = w
	var at time.Time
	switch w {
	case WaitNone:
		cs.deadline.Store(0)
		return
	case WaitHello:
		at = cs.opened.Add(cfg.HelloTimeout) // frames before HELLO (PINGs) do not extend it
	case WaitFrame:
		if !received && !changed && cs.deadline.Load() != 0 {
			return
		}
		at = now.Add(cfg.ReadTimeout)
	case WaitIdle:
		if !received && !changed && cs.deadline.Load() != 0 {
			return
		}
		at = now.Add(cfg.PingInterval)
	case WaitPong:
		if !changed && cs.deadline.Load() != 0 {
			return
		}
		at = now.Add(cfg.ReadTimeout)
	}
	cs.deadline.Store(at.UnixNano())
}

func (cs *conn) expired(now time.Time) bool {
	d := cs.deadline.Load()
	return d != 0 && now.UnixNano() > d
}

// stuck reports whether the peer has not read its answers for the read timeout.
func (cs *conn) stuck(now time.Time) bool {
	since := cs.stalled.Load()
	return since != 0 && now.UnixNano() > since+int64(cs.srv.cfg.ReadTimeout)
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
