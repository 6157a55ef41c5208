package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
	"github.com/tp0/loteria/secure"
)

// ErrBrokenRun is the cause of every error saying the server under test
// did not do its job: a bench must not report numbers for such a run.
var ErrBrokenRun = errors.New("server under test misbehaved")

// driveConfig says how drive runs the agencies against one server.
type driveConfig struct {
	Addr string
	// Addrs, when set, are front ends sharing one store: agency id tries
	// them in turn from Addrs[(id-1) % len(Addrs)] on, moving to the next
	// when a dial fails, as bin/agency --server a,b does; each agency's
	// answers are checked the same whichever front end it lands on.
	Addrs           []string
	Agencies        int
	Sets            []*dataset // agency a uploads Sets[(a-1) % len(Sets)]
	Keys            *keyring   // the agencies' keys; nil speaks plaintext to an --insecure server
	Sources         []net.IP   // client source addresses; nil lets the kernel choose
	DialConcurrency int        // connections being opened (dial, handshake, HELLO) at once
	Timeout         time.Duration
	Progress        *progress

	// Hooks run while every agency waits at a barrier, so the server can be
	// sampled in a known state; an error from a hook ends the run.
	Connected func() error // every agency got WELCOME; no bet sent yet
	Waiting   func() error // every agency but the last waits for the draw; the last has uploaded but not finished
	Delivered func() error // every agency has its winners; connections still open
}

// driveResult is what the agencies measured.
type driveResult struct {
	Connect           time.Duration   // opening every connection: dial, handshake, HELLO, WELCOME
	Handshakes        []time.Duration // dial to WELCOME, every agency
	Upload            time.Duration   // from the start signal to the last ACK
	Latencies         []time.Duration // BETS written to its ACK read, every batch
	Bets              int64           // acknowledged
	WireBytes         int64           // of the acknowledged BETS frames
	DrawToLastWinners time.Duration   // last FINISHED written to the last WINNERS read
	Window            int             // the largest window WELCOME announced
	Pings             int64           // the server's PINGs answered
	Root              frame.Hash      // the commitment every agency got
	PerFront          []int           // with Addrs: agencies that ended on each front end
}

// agencyResult is what one agency measured; written by its goroutine only.
type agencyResult struct {
	front      int // index in Addrs of the front end it ended on
	handshake  time.Duration
	window     int
	latencies  []time.Duration
	lastAck    time.Time
	finishAt   time.Time
	winnersAt  time.Time
	receipt    *frame.Receipt
	commitment *frame.Commitment
}

// barrier is released once n parties have arrived.
type barrier struct {
	left atomic.Int64
	done chan struct{}
}

func newBarrier(n int) *barrier {
	b := &barrier{done: make(chan struct{})}
	b.left.Store(int64(n))
	if n == 0 {
		close(b.done)
	}
	return b
}

func (b *barrier) arrive() {
	if b.left.Add(-1) == 0 {
		close(b.done)
	}
}

// driver is the state the agencies of one drive or storm share.
type driver struct {
	cfg                           driveConfig
	sem                           chan struct{}
	connected, waiting, delivered *barrier
	start, finish, release        chan struct{}
	results                       []agencyResult
	pings                         atomic.Int64
}

func newDriver(cfg driveConfig) *driver {
	if cfg.Progress == nil {
		cfg.Progress = &progress{}
	}
	return &driver{
		cfg:       cfg,
		sem:       make(chan struct{}, max(cfg.DialConcurrency, 1)),
		connected: newBarrier(cfg.Agencies),
		waiting:   newBarrier(cfg.Agencies),
		delivered: newBarrier(cfg.Agencies),
		start:     make(chan struct{}),
		finish:    make(chan struct{}),
		release:   make(chan struct{}),
		results:   make([]agencyResult, cfg.Agencies),
	}
}

// drive runs cfg.Agencies agencies concurrently, each on its own
// connection: handshake (when keyed), HELLO, every batch with up to the
// window announced in WELCOME in flight, FINISHED, then it holds the
// connection until the server pushes its winners. Every answer is checked:
// each ACK's range and chain, the receipt, the commitment and its proof,
// the exact winners; the server's PINGs are answered.
func drive(ctx context.Context, cfg driveConfig) (driveResult, error) {
	if cfg.Agencies < 1 || len(cfg.Sets) == 0 {
		return driveResult{}, errors.New("drive: no agencies or no datasets")
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d := newDriver(cfg)
	var wg sync.WaitGroup
	began := time.Now()
	for i := range cfg.Agencies {
		wg.Go(func() {
			if err := d.agency(ctx, uint32(i+1)); err != nil {
				cancel(err)
			}
		})
	}
	var res driveResult
	var startAt time.Time
	err := func() error {
		steps := []struct {
			b    *barrier
			hook func() error
			open chan struct{}
		}{
			{d.connected, cfg.Connected, d.start},
			{d.waiting, cfg.Waiting, d.finish},
			{d.delivered, cfg.Delivered, d.release},
		}
		for i, s := range steps {
			if err := wait(ctx, s.b.done); err != nil {
				return err
			}
			if i == 0 {
				res.Connect = time.Since(began)
				d.cfg.Progress.setPhase("upload")
			}
			if s.hook != nil {
				if err := s.hook(); err != nil {
					return err
				}
			}
			if i == 0 {
				startAt = time.Now()
			}
			close(s.open)
		}
		return nil
	}()
	if err != nil {
		cancel(err)
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return driveResult{}, err
	}
	return d.summarize(res, startAt)
}

// summarize gathers what the agencies measured and checks what they must
// agree on: one commitment. Windows differ (the server shares its budget of
// requests in flight among the agencies connected); the largest is kept.
func (d *driver) summarize(res driveResult, startAt time.Time) (driveResult, error) {
	var lastAck, lastWinners time.Time
	finishAt := d.results[len(d.results)-1].finishAt
	total := 0
	for _, r := range d.results {
		total += len(r.latencies)
	}
	res.Latencies = make([]time.Duration, 0, total)
	res.Handshakes = make([]time.Duration, 0, len(d.results))
	res.Window = d.results[0].window
	res.Root = d.results[0].commitment.Root
	if n := len(d.cfg.Addrs); n > 0 {
		res.PerFront = make([]int, n)
	}
	for i, r := range d.results {
		id := i + 1
		res.Window = max(res.Window, r.window)
		if r.commitment.Root != res.Root {
			return driveResult{}, fmt.Errorf("%w: agency %d got commitment root %x%s, agency 1 got %x%s", ErrBrokenRun, id,
				r.commitment.Root, d.onFront(r.front), res.Root, d.onFront(d.results[0].front))
		}
		if res.PerFront != nil {
			res.PerFront[r.front]++
		}
		res.Latencies = append(res.Latencies, r.latencies...)
		res.Handshakes = append(res.Handshakes, r.handshake)
		if r.lastAck.After(lastAck) {
			lastAck = r.lastAck
		}
		if r.winnersAt.After(lastWinners) {
			lastWinners = r.winnersAt
		}
		ds := d.set(uint32(id))
		res.Bets += int64(ds.bets)
		res.WireBytes += int64(ds.wireBytes)
	}
	res.Upload = lastAck.Sub(startAt)
	res.DrawToLastWinners = lastWinners.Sub(finishAt)
	res.Pings = d.pings.Load()
	return res, nil
}

func (d *driver) set(id uint32) *dataset { return d.cfg.Sets[int(id-1)%len(d.cfg.Sets)] }

// route is the addresses agency id tries, in order, with the index in
// Addrs of the first.
func (d *driver) route(id uint32) ([]string, int) {
	n := len(d.cfg.Addrs)
	if n == 0 {
		return []string{d.cfg.Addr}, 0
	}
	first := int(id-1) % n
	return append(slices.Clone(d.cfg.Addrs[first:]), d.cfg.Addrs[:first]...), first
}

// onFront names front end i in messages about agencies, when there are several.
func (d *driver) onFront(i int) string {
	if len(d.cfg.Addrs) == 0 {
		return ""
	}
	return fmt.Sprintf(" from front end %d (%s)", i+1, d.cfg.Addrs[i])
}

func (d *driver) dialer(id uint32) *net.Dialer {
	dl := &net.Dialer{Timeout: 30 * time.Second}
	if n := len(d.cfg.Sources); n > 0 {
		dl.LocalAddr = &net.TCPAddr{IP: d.cfg.Sources[int(id-1)%n]}
		dl.Control = bindAddressNoPort
	}
	return dl
}

// bindAddressNoPort lets the kernel pick the source port at connect time,
// so a port is only unique per destination and TIME_WAIT sockets of an
// earlier run do not use up the range.
func bindAddressNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	return errors.Join(err, serr)
}

// wait blocks until ch is closed or ctx is done.
func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// acquire takes a place in sem, or gives up when ctx is done.
func acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// agency is one agency's whole session.
func (d *driver) agency(ctx context.Context, id uint32) error {
	ds := d.set(id)
	last := int(id) == d.cfg.Agencies
	res := &d.results[id-1]
	prog := d.cfg.Progress

	if err := acquire(ctx, d.sem); err != nil {
		return err
	}
	began := time.Now()
	c, w, err := d.connect(ctx, id)
	<-d.sem
	if err != nil {
		return err
	}
	defer c.close()
	res.handshake = time.Since(began)
	res.front = c.front
	if w.Held != 0 || w.Finished || w.Chain != receipt.Empty() || w.Window < 1 {
		return c.unexpected(w, "WELCOME holding nothing, with a window (the data directory is fresh)")
	}
	res.window = int(w.Window)
	prog.connected.Add(1)
	d.connected.arrive()
	if err := c.idle(ctx, d.start, w.ReadTimeout); err != nil {
		return err
	}

	// Every agency but the last pipelines its FINISHED behind its batches.
	if err := c.upload(ds, res.window, !last, res, prog); err != nil {
		return err
	}
	if last {
		d.waiting.arrive()
		if err := c.idle(ctx, d.finish, w.ReadTimeout); err != nil {
			return err
		}
		prog.setPhase("draw")
		res.finishAt = time.Now()
		if _, err := c.w.Write(ds.finished); err != nil {
			return fmt.Errorf("agency %d: send FINISHED: %w", id, err)
		}
		prog.finished.Add(1)
	}
	f, err := c.read()
	if err != nil {
		return err
	}
	r, ok := f.(*frame.Receipt)
	if !ok || r.Agency != id || r.Bets != uint64(ds.bets) || r.Chain != ds.final {
		return c.unexpected(f, fmt.Sprintf("RECEIPT for agency %d, %d bets, chain %x", id, ds.bets, ds.final))
	}
	res.receipt = r
	if !last {
		// The last agency has not finished, so the draw cannot have happened.
		if f, err = c.read(); err != nil {
			return err
		}
		if _, ok := f.(*frame.NotReady); !ok {
			return c.unexpected(f, "NOT_READY (the last agency has not finished)")
		}
		prog.finished.Add(1) // counted before arriving, so the barrier's hook sees it
		d.waiting.arrive()
	}
	commitment, docs, err := c.winners()
	if err != nil {
		return err
	}
	res.winnersAt = time.Now()
	res.commitment = commitment
	if !slices.Equal(docs, ds.winners) {
		return fmt.Errorf("%w: agency %d got %d winners %v%s, want %d %v", ErrBrokenRun, id, len(docs), clip(docs), d.onFront(c.front),
			len(ds.winners), clip(ds.winners))
	}
	prog.winners.Add(1)
	d.delivered.arrive()
	if err := wait(ctx, d.release); err != nil {
		return err
	}
	return d.verify(id, res) // signatures and proofs, off the clock
}

// verify checks the receipt's signature and the commitment's proof and
// signature, as an agency does; a server run --insecure signs nothing.
func (d *driver) verify(id uint32, res *agencyResult) error {
	ds := d.set(id)
	var pub []byte
	if d.cfg.Keys != nil {
		pub = d.cfg.Keys.Sign
		rc := receipt.Receipt(*res.receipt)
		if err := rc.Verify(d.cfg.Keys.Sign); err != nil {
			return fmt.Errorf("%w: agency %d: %w", ErrBrokenRun, id, err)
		}
	}
	leaf := receipt.Leaf{Agency: id, Bets: uint64(ds.bets), Chain: ds.final}
	if err := receipt.Check(res.commitment, leaf, pub); err != nil {
		return fmt.Errorf("%w: agency %d: the draw's commitment: %w", ErrBrokenRun, id, err)
	}
	if res.commitment.Lottery != res.receipt.Lottery {
		return fmt.Errorf("%w: agency %d: the commitment's lottery %x is not the receipt's %x", ErrBrokenRun, id,
			res.commitment.Lottery, res.receipt.Lottery)
	}
	return nil
}

func clip(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

// agencyConn is an agency's connection, plaintext or secured.
type agencyConn struct {
	id    uint32
	front int // index in driveConfig.Addrs of the front end it is connected to
	nc    net.Conn
	src   frame.Source
	w     io.Writer // takes whole frames; safe for concurrent use (PONGs while the writer sends)
	dec   frame.Decoder
	pings *atomic.Int64
	stop  func() bool
}

// connect dials, handshakes when the run is keyed, sends HELLO and returns
// the WELCOME.
func (d *driver) connect(ctx context.Context, id uint32) (*agencyConn, *frame.Welcome, error) {
	addrs, first := d.route(id)
	var nc net.Conn
	var err error
	front := first
	for i, addr := range addrs {
		if nc, err = d.dialer(id).DialContext(ctx, "tcp", addr); err == nil || ctx.Err() != nil {
			front = (first + i) % len(addrs)
			break
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("agency %d: connect to %s: %w", id, strings.Join(addrs, ","), err)
	}
	c := &agencyConn{id: id, front: front, nc: nc, pings: &d.pings}
	c.stop = context.AfterFunc(ctx, func() { nc.Close() })
	if d.cfg.Timeout > 0 {
		nc.SetDeadline(time.Now().Add(d.cfg.Timeout))
	}
	if k := d.cfg.Keys; k != nil {
		sc, err := k.identity(id).Client(nc, k.Server, 0) // 0: the deadline above stays
		if err != nil {
			c.close()
			var refused *secure.RefusedError
			if errors.As(err, &refused) {
				return nil, nil, fmt.Errorf("%w: agency %d: %w", ErrBrokenRun, id, err)
			}
			return nil, nil, fmt.Errorf("agency %d: handshake: %w", id, err)
		}
		c.src, c.w = sc, sc
	} else {
		c.src, c.w = frame.NewReader(nc), nc
	}
	if err := c.send(&frame.Hello{Agency: id}); err != nil {
		c.close()
		return nil, nil, err
	}
	f, err := c.read()
	if err != nil {
		c.close()
		return nil, nil, err
	}
	w, ok := f.(*frame.Welcome)
	if !ok {
		c.close()
		return nil, nil, c.unexpected(f, "WELCOME")
	}
	return c, w, nil
}

// idle waits for ch to close, or ctx to end, while the server expects a
// frame within readTimeout: a real agency never waits at a barrier, so a
// long one (thousands of slow handshakes) sends a PING now and then, which
// the server answers and counts as a frame; read skips the PONGs.
func (c *agencyConn) idle(ctx context.Context, ch <-chan struct{}, readTimeout time.Duration) error {
	every := max(readTimeout/3, 10*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
			if err := c.send(&frame.Ping{Payload: []byte("bench")}); err != nil {
				return err
			}
		}
	}
}

func (c *agencyConn) close() {
	c.stop()
	c.nc.Close()
}

// send encodes f and writes it in one Write.
func (c *agencyConn) send(f frame.Frame) error {
	if err := frame.Write(c.w, f); err != nil {
		return fmt.Errorf("agency %d: send %s: %w", c.id, f.Type(), err)
	}
	return nil
}

// read returns the next frame, answering PINGs and skipping PONGs on the
// way; an ERROR frame from the server is an error.
func (c *agencyConn) read() (frame.Frame, error) {
	for {
		f, err := c.dec.Next(c.src)
		if err != nil {
			return nil, fmt.Errorf("agency %d: receive: %w", c.id, err)
		}
		switch f := f.(type) {
		case *frame.Ping:
			if err := c.send(&frame.Pong{Payload: f.Payload}); err != nil {
				return nil, err
			}
			c.pings.Add(1)
			continue
		case *frame.Pong:
			continue
		case *frame.Error:
			return nil, fmt.Errorf("%w: agency %d got ERROR %s: %s", ErrBrokenRun, c.id, f.Code, f.Reason)
		}
		return f, nil
	}
}

// upload sends the dataset's batches (and its FINISHED when finish is
// set) with up to window of them unanswered: a writer goroutine sends
// whenever the window has room, coalescing what it may send into one
// write, while this goroutine reads and checks each ACK in order. The
// latency of a batch is from the write that carried it to its ACK.
func (c *agencyConn) upload(ds *dataset, window int, finish bool, res *agencyResult, prog *progress) error {
	total := len(ds.frames)
	if finish {
		total++
	}
	credits := make(chan struct{}, window)
	for range window {
		credits <- struct{}{}
	}
	sent := make(chan time.Time, window) // at most window unanswered, so never full
	stop := make(chan struct{})
	wrote := make(chan error, 1)
	go func() {
		err := c.writeAll(ds, total, credits, sent, stop)
		if err != nil {
			c.nc.Close() // the reader is waiting for ACKs that will not come
		}
		wrote <- err
	}()
	rerr := c.readAcks(ds, credits, sent, res, prog)
	if rerr != nil {
		c.nc.Close() // the writer may be blocked on a full socket
		// Only on failure: after the last ACK the writer still owes the
		// FINISHED its credit made room for, and a select seeing that credit
		// and stop together could pick either.
		close(stop)
	}
	if werr := <-wrote; werr != nil {
		return werr
	}
	return rerr
}

// writeAll writes frames 0..total-1 of ds (frame len(ds.frames) is
// FINISHED), one per credit, as many as the credits allow per write.
func (c *agencyConn) writeAll(ds *dataset, total int, credits <-chan struct{}, sent chan<- time.Time, stop <-chan struct{}) error {
	buf := framePool.Get().(*[]byte)
	defer framePool.Put(buf)
	for i := 0; i < total; {
		select {
		case <-credits:
		case <-stop:
			return nil
		}
		k := 1
	more:
		for i+k < total {
			select {
			case <-credits:
				k++
			default:
				break more
			}
		}
		frames := (*buf)[:0]
		for j := i; j < i+k; j++ {
			if j < len(ds.frames) {
				frames = append(frames, ds.frames[j]...)
			} else {
				frames = append(frames, ds.finished...)
			}
		}
		*buf = frames
		now := time.Now()
		for range k {
			sent <- now
		}
		if _, err := c.w.Write(frames); err != nil {
			return fmt.Errorf("agency %d: send %d frames: %w", c.id, k, err)
		}
		i += k
	}
	return nil
}

// framePool holds the buffers writeAll gathers a write's frames in, shared
// by the agencies: each one growing its own would cost the client side page
// faults the server under test does not cause.
var framePool = sync.Pool{New: func() any { return new([]byte) }}

// readAcks reads the ACK of every batch in order and checks its range,
// the count held and the chain over them.
func (c *agencyConn) readAcks(ds *dataset, credits chan<- struct{}, sent <-chan time.Time, res *agencyResult, prog *progress) error {
	res.latencies = make([]time.Duration, 0, len(ds.frames))
	first := uint64(0)
	for i, n := range ds.counts {
		f, err := c.read()
		if err != nil {
			return err
		}
		got := time.Now()
		end := first + uint64(n)
		a, ok := f.(*frame.Ack)
		if !ok || a.First != first || int(a.Count) != n || a.Held != end || a.Chain != ds.chains[i] {
			return c.unexpected(f, fmt.Sprintf("ACK for bets %d+%d holding %d, chain %x", first, n, end, ds.chains[i]))
		}
		res.latencies = append(res.latencies, got.Sub(<-sent))
		res.lastAck = got
		credits <- struct{}{}
		first = end
		prog.acked.Add(int64(n))
	}
	return nil
}

// winners reads the draw's COMMITMENT and the WINNERS chunks after it.
func (c *agencyConn) winners() (*frame.Commitment, []string, error) {
	f, err := c.read()
	if err != nil {
		return nil, nil, err
	}
	commitment, ok := f.(*frame.Commitment)
	if !ok {
		return nil, nil, c.unexpected(f, "COMMITMENT (the draw)")
	}
	var docs []string
	for {
		if f, err = c.read(); err != nil {
			return nil, nil, err
		}
		w, ok := f.(*frame.Winners)
		if !ok {
			return nil, nil, c.unexpected(f, "WINNERS")
		}
		docs = append(docs, w.Documents...)
		if w.Last {
			return commitment, docs, nil
		}
	}
}

func (c *agencyConn) unexpected(f frame.Frame, want string) error {
	return fmt.Errorf("%w: agency %d got %s %+v, want %s", ErrBrokenRun, c.id, f.Type(), f, want)
}

// stormConfig says how storm reconnects the agencies of a finished run.
type stormConfig struct {
	Addr        string
	Agencies    int
	Sets        []*dataset
	Keys        *keyring
	Sources     []net.IP
	Concurrency int // connections being opened at once
	Timeout     time.Duration
	Root        frame.Hash // the commitment of the run that stored the data
}

// stormResult is what a reconnect storm measured.
type stormResult struct {
	Took       time.Duration   // from the first dial to the last WELCOME
	Handshakes []time.Duration // dial to WELCOME, every agency
}

// storm reconnects every agency of a finished run at once, to a server
// restarted on its data: each dials, handshakes, says HELLO and must get a
// WELCOME holding all its bets, finished, with its chain. Once every
// agency has its WELCOME (the time measured), each asks for its winners and
// must get the same commitment and winners as before.
func storm(ctx context.Context, cfg stormConfig) (stormResult, error) {
	if cfg.Agencies < 1 || len(cfg.Sets) == 0 {
		return stormResult{}, errors.New("storm: no agencies or no datasets")
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d := newDriver(driveConfig{Addr: cfg.Addr, Agencies: cfg.Agencies, Sets: cfg.Sets, Keys: cfg.Keys, Sources: cfg.Sources,
		DialConcurrency: cfg.Concurrency, Timeout: cfg.Timeout})
	handshakes := make([]time.Duration, cfg.Agencies)
	var wg sync.WaitGroup
	began := time.Now()
	for i := range cfg.Agencies {
		id := uint32(i + 1)
		wg.Go(func() {
			if err := d.reconnect(ctx, id, cfg.Root, &handshakes[id-1]); err != nil {
				cancel(err)
			}
		})
	}
	var res stormResult
	if err := wait(ctx, d.connected.done); err == nil {
		res.Took = time.Since(began)
		close(d.start)
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return stormResult{}, err
	}
	res.Handshakes = handshakes
	return res, nil
}

// reconnect is one agency of a storm.
func (d *driver) reconnect(ctx context.Context, id uint32, root frame.Hash, took *time.Duration) error {
	ds := d.set(id)
	if err := acquire(ctx, d.sem); err != nil {
		return err
	}
	began := time.Now()
	c, w, err := d.connect(ctx, id)
	<-d.sem
	if err != nil {
		return err
	}
	defer c.close()
	*took = time.Since(began)
	if w.Held != uint64(ds.bets) || !w.Finished || w.Chain != ds.final {
		return c.unexpected(w, fmt.Sprintf("WELCOME holding all %d bets, finished, chain %x", ds.bets, ds.final))
	}
	d.connected.arrive()
	if err := wait(ctx, d.start); err != nil {
		return err
	}
	if err := c.send(&frame.QueryWinners{}); err != nil {
		return err
	}
	commitment, docs, err := c.winners()
	if err != nil {
		return err
	}
	if commitment.Root != root {
		return fmt.Errorf("%w: agency %d got commitment root %x after the restart, %x before", ErrBrokenRun, id, commitment.Root, root)
	}
	if !slices.Equal(docs, ds.winners) {
		return fmt.Errorf("%w: agency %d got %d winners %v after the restart, want %d %v", ErrBrokenRun, id, len(docs), clip(docs),
			len(ds.winners), clip(ds.winners))
	}
	return nil
}
