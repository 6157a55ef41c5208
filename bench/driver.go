package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tp0/loteria/frame"
)

// ErrBrokenRun is the cause of every error saying the server under test
// did not do its job: a bench must not report numbers for such a run.
var ErrBrokenRun = errors.New("server under test misbehaved")

// driveConfig says how drive runs the agencies against one server.
type driveConfig struct {
	Addr            string
	Addrs           []string // when set, agency a connects to Addrs[(a-1) % len(Addrs)] instead of Addr
	Agencies        int
	Sets            []*dataset // agency a uploads Sets[(a-1) % len(Sets)]
	Sources         []net.IP   // client source addresses; nil lets the kernel choose
	DialConcurrency int        // connections being opened at once
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
	Connect           time.Duration   // opening every connection, HELLO included
	Upload            time.Duration   // from the start signal to the last ACK
	Latencies         []time.Duration // BETS written to ACK read, every batch
	Bets              int64           // acknowledged
	WireBytes         int64           // of the acknowledged BETS frames
	DrawToLastWinners time.Duration   // last FINISHED written to the last WINNERS read
}

// agencyResult is what one agency measured; written by its goroutine only.
type agencyResult struct {
	latencies []time.Duration
	lastAck   time.Time
	winnersAt time.Time
	finishAt  time.Time
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

// drive runs cfg.Agencies agencies concurrently, each on its own
// connection: HELLO, every batch, FINISHED, then it holds the connection
// until the server pushes its winners, which must be the right ones.
func drive(ctx context.Context, cfg driveConfig) (driveResult, error) {
	if cfg.Agencies < 1 || len(cfg.Sets) == 0 {
		return driveResult{}, errors.New("drive: no agencies or no datasets")
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d := &driver{
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
	if d.cfg.Progress == nil {
		d.cfg.Progress = &progress{}
	}
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
			select {
			case <-s.b.done:
			case <-ctx.Done():
				return context.Cause(ctx)
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
	var lastAck, lastWinners time.Time
	finishAt := d.results[cfg.Agencies-1].finishAt
	total := 0
	for _, r := range d.results {
		total += len(r.latencies)
	}
	res.Latencies = make([]time.Duration, 0, total)
	for i, r := range d.results {
		res.Latencies = append(res.Latencies, r.latencies...)
		if r.lastAck.After(lastAck) {
			lastAck = r.lastAck
		}
		if r.winnersAt.After(lastWinners) {
			lastWinners = r.winnersAt
		}
		ds := d.set(uint32(i + 1))
		res.Bets += int64(ds.bets)
		res.WireBytes += int64(ds.wireBytes)
	}
	res.Upload = lastAck.Sub(startAt)
	res.DrawToLastWinners = lastWinners.Sub(finishAt)
	return res, nil
}

type driver struct {
	cfg                           driveConfig
	sem                           chan struct{}
	connected, waiting, delivered *barrier
	start, finish, release        chan struct{}
	results                       []agencyResult
}

func (d *driver) set(id uint32) *dataset { return d.cfg.Sets[int(id-1)%len(d.cfg.Sets)] }

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

// agency is one agency's whole session.
func (d *driver) agency(ctx context.Context, id uint32) error {
	ds := d.set(id)
	last := int(id) == d.cfg.Agencies
	res := &d.results[id-1]

	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	addr := d.cfg.Addr
	if n := len(d.cfg.Addrs); n > 0 {
		addr = d.cfg.Addrs[int(id-1)%n]
	}
	nc, err := d.dialer(id).DialContext(ctx, "tcp", addr)
	if err != nil {
		<-d.sem
		return fmt.Errorf("agency %d: connect to %s: %w", id, addr, err)
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	if d.cfg.Timeout > 0 {
		nc.SetDeadline(time.Now().Add(d.cfg.Timeout))
	}
	c := &clientConn{id: id, nc: nc, r: frame.NewReader(nc)}
	hello, err := frame.Encode(&frame.Hello{Agency: id})
	if err != nil {
		return err
	}
	reply, err := c.call(hello)
	<-d.sem
	if err != nil {
		return err
	}
	if w, ok := reply.(*frame.Welcome); !ok || w.Held != 0 || w.Finished {
		return c.unexpected(reply, "WELCOME holding nothing (the data directory is fresh)")
	}
	d.cfg.Progress.connected.Add(1)
	d.connected.arrive()
	if err := wait(ctx, d.start); err != nil {
		return err
	}

	res.latencies = make([]time.Duration, 0, len(ds.frames))
	first := uint64(0)
	for i, b := range ds.frames {
		sent := time.Now()
		reply, err := c.call(b)
		if err != nil {
			return err
		}
		got := time.Now()
		if a, ok := reply.(*frame.Ack); !ok || a.First != first || int(a.Count) != ds.counts[i] {
			return c.unexpected(reply, fmt.Sprintf("ACK for bets %d+%d", first, ds.counts[i]))
		}
		res.latencies = append(res.latencies, got.Sub(sent))
		res.lastAck = got
		first += uint64(ds.counts[i])
		d.cfg.Progress.acked.Add(int64(ds.counts[i]))
	}

	finished, err := frame.Encode(&frame.Finished{Total: uint64(ds.bets)})
	if err != nil {
		return err
	}
	if last {
		d.waiting.arrive()
		if err := wait(ctx, d.finish); err != nil {
			return err
		}
		d.cfg.Progress.setPhase("draw")
		res.finishAt = time.Now()
		if _, err := nc.Write(finished); err != nil {
			return fmt.Errorf("agency %d: send FINISHED: %w", id, err)
		}
		d.cfg.Progress.finished.Add(1)
	} else {
		reply, err := c.call(finished)
		if err != nil {
			return err
		}
		if _, ok := reply.(*frame.Receipt); ok { // protocol 2 answers FINISHED with a RECEIPT first
			if reply, err = c.read(); err != nil {
				return err
			}
		}
		// Not every agency has finished, so the draw cannot have happened.
		if _, ok := reply.(*frame.NotReady); !ok {
			return c.unexpected(reply, "NOT_READY (the last agency has not finished)")
		}
		d.cfg.Progress.finished.Add(1) // counted before arriving, so the barrier's hook sees it
		d.waiting.arrive()
	}

	var docs []string
	for {
		f, err := c.read()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *frame.NotReady, *frame.Pong, *frame.Receipt, *frame.Commitment:
			continue
		case *frame.Winners:
			docs = append(docs, f.Documents...)
			if !f.Last {
				continue
			}
		default:
			return c.unexpected(f, "WINNERS")
		}
		break
	}
	res.winnersAt = time.Now()
	if !slices.Equal(docs, ds.winners) {
		return fmt.Errorf("%w: agency %d got %d winners %v, want %d %v", ErrBrokenRun, id, len(docs), clip(docs), len(ds.winners), clip(ds.winners))
	}
	d.cfg.Progress.winners.Add(1)
	d.delivered.arrive()
	return wait(ctx, d.release)
}

func clip(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

// clientConn is an agency's framed connection.
type clientConn struct {
	id  uint32
	nc  net.Conn
	r   frame.Source
	dec frame.Decoder
}

// call writes one encoded frame and reads the reply.
func (c *clientConn) call(b []byte) (frame.Frame, error) {
	if _, err := c.nc.Write(b); err != nil {
		return nil, fmt.Errorf("agency %d: send %s: %w", c.id, frame.Type(b[1]), err)
	}
	return c.read()
}

// read returns the next frame; an ERROR frame from the server is an error.
func (c *clientConn) read() (frame.Frame, error) {
	f, err := c.dec.Next(c.r)
	if err != nil {
		return nil, fmt.Errorf("agency %d: receive: %w", c.id, err)
	}
	if e, ok := f.(*frame.Error); ok {
		return nil, fmt.Errorf("%w: agency %d got ERROR %s: %s", ErrBrokenRun, c.id, e.Code, e.Reason)
	}
	return f, nil
}

func (c *clientConn) unexpected(f frame.Frame, want string) error {
	return fmt.Errorf("%w: agency %d got %s %+v, want %s", ErrBrokenRun, c.id, f.Type(), f, want)
}
