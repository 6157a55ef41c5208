package bench

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// progress counts what the agencies of one run have done; it is updated by
// the agencies and read by the display.
type progress struct {
	connected, acked, finished, winners atomic.Int64

	mu    sync.Mutex
	phase string
}

func (p *progress) setPhase(s string) {
	p.mu.Lock()
	p.phase = s
	p.mu.Unlock()
}

func (p *progress) getPhase() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.phase
}

// display shows a run's progress: one line rewritten in place on a
// terminal, a plain line per phase (and every few seconds) otherwise.
type display struct {
	w     io.Writer
	tty   bool
	label string
	k     int
	bets  int64
	p     *progress
	began time.Time
	stop  chan struct{}
	done  chan struct{}
}

// IsTerminal reports whether f is a character device such as a terminal.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// startDisplay shows p until Stop; w nil shows nothing.
func startDisplay(w io.Writer, tty bool, label string, k int, bets int64, p *progress) *display {
	d := &display{w: w, tty: tty, label: label, k: k, bets: bets, p: p, began: time.Now(),
		stop: make(chan struct{}), done: make(chan struct{})}
	if w == nil {
		close(d.done)
		return d
	}
	go d.loop()
	return d
}

func (d *display) loop() {
	defer close(d.done)
	every := 250 * time.Millisecond
	tick := time.NewTicker(every)
	defer tick.Stop()
	phase, printed := "", time.Time{}
	for {
		select {
		case <-d.stop:
			if d.tty {
				fmt.Fprintf(d.w, "\r\033[K%s\n", d.line())
			} else {
				fmt.Fprintln(d.w, d.line())
			}
			return
		case <-tick.C:
		}
		switch now := d.p.getPhase(); {
		case d.tty:
			fmt.Fprintf(d.w, "\r\033[K%s", d.line())
		case now != phase || time.Since(printed) >= 10*time.Second:
			phase, printed = now, time.Now()
			fmt.Fprintln(d.w, d.line())
		}
	}
}

func (d *display) line() string {
	return fmt.Sprintf("%s %-8s %5.1fs  connected %d/%d  acked %d/%d bets  finished %d/%d  winners %d/%d",
		d.label, d.p.getPhase(), time.Since(d.began).Seconds(), d.p.connected.Load(), d.k,
		d.p.acked.Load(), d.bets, d.p.finished.Load(), d.k, d.p.winners.Load(), d.k)
}

// Stop ends the display, leaving its last line on screen.
func (d *display) Stop() {
	select {
	case <-d.done:
		return
	default:
	}
	close(d.stop)
	<-d.done
}
