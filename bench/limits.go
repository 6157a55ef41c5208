package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// measureLoopback moves total bytes from one side of `streams` loopback TCP
// connections to the other, inside this process, and returns bytes/s.
func measureLoopback(ctx context.Context, streams int, total int64) (float64, error) {
	if streams < 1 || total < int64(streams) {
		return 0, fmt.Errorf("loopback test: %d streams for %d bytes", streams, total)
	}
	conns, closeAll, err := loopbackPairs(ctx, streams)
	if err != nil {
		return 0, fmt.Errorf("loopback test: %w", err)
	}
	defer closeAll()
	var readers sync.WaitGroup
	received := make([]int64, streams)
	readErrs := make([]error, streams)
	for i, p := range conns {
		readers.Go(func() {
			received[i], readErrs[i] = io.CopyBuffer(io.Discard, p.accepted, make([]byte, 256<<10))
		})
	}

	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	var writers sync.WaitGroup
	writeErrs := make([]error, streams)
	start := time.Now()
	for i, p := range conns {
		c := p.dialed
		share := total / int64(streams)
		if i == 0 {
			share += total % int64(streams)
		}
		writers.Go(func() {
			defer c.(*net.TCPConn).CloseWrite()
			for share > 0 {
				n := min(share, int64(len(chunk)))
				if _, err := c.Write(chunk[:n]); err != nil {
					writeErrs[i] = err
					return
				}
				share -= n
			}
		})
	}
	writers.Wait()
	readers.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(append(writeErrs, readErrs...)...); err != nil {
		return 0, fmt.Errorf("loopback test: %w", err)
	}
	var got int64
	for _, n := range received {
		got += n
	}
	if got != total {
		return 0, fmt.Errorf("loopback test: received %d bytes of %d", got, total)
	}
	return float64(total) / elapsed.Seconds(), nil
}

// diskResult is what the append+fsync test measured.
type diskResult struct {
	BytesPerSec  float64
	FsyncsPerSec float64
	Fsyncs       int
}

// measureDisk appends blocks of `block` bytes to a new file in dir, each
// followed by an fsync, for at least minTime (and at least 5 fsyncs) or
// until maxBytes are written, then removes the file.
func measureDisk(dir string, block int, minTime time.Duration, maxBytes int64) (diskResult, error) {
	if block < 1 {
		return diskResult{}, fmt.Errorf("disk test: block of %d bytes", block)
	}
	f, err := os.CreateTemp(dir, "fsync-test-*.csv")
	if err != nil {
		return diskResult{}, fmt.Errorf("disk test: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, block)
	row := []byte("1,María Del Carmen,González,30123456,1990-05-17,1234\r\n")
	for i := range buf {
		buf[i] = row[i%len(row)]
	}
	var written int64
	n := 0
	start := time.Now()
	for n < 5 || (time.Since(start) < minTime && written+int64(block) <= maxBytes) {
		if _, err := f.Write(buf); err != nil {
			return diskResult{}, fmt.Errorf("disk test: write: %w", err)
		}
		if err := f.Sync(); err != nil {
			return diskResult{}, fmt.Errorf("disk test: fsync: %w", err)
		}
		written += int64(block)
		n++
	}
	secs := time.Since(start).Seconds()
	return diskResult{BytesPerSec: float64(written) / secs, FsyncsPerSec: float64(n) / secs, Fsyncs: n}, nil
}

// connPair is the two ends of one loopback TCP connection.
type connPair struct{ dialed, accepted net.Conn }

// loopbackPairs opens n loopback TCP connections inside this process and
// returns both ends of each, with a function that closes them all.
func loopbackPairs(ctx context.Context, n int) ([]connPair, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	pairs := make([]connPair, 0, n)
	closeAll := func() {
		for _, p := range pairs {
			p.dialed.Close()
			p.accepted.Close()
		}
	}
	var d net.Dialer
	for range n {
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		a, err := ln.Accept()
		if err != nil {
			c.Close()
			closeAll()
			return nil, nil, fmt.Errorf("accept: %w", err)
		}
		pairs = append(pairs, connPair{c, a})
	}
	return pairs, closeAll, nil
}

// fanOutRounds is how many times measureFanOut sends its message round;
// the fastest round is the floor.
const fanOutRounds = 3

// measureFanOut opens conns loopback TCP connections inside this process,
// with a goroutine blocked reading on each (as the bench's agencies wait
// for WINNERS), then writes one size-byte message to every connection from
// as many writers as there are CPUs (as the event loops push WINNERS) and
// returns the fastest of fanOutRounds rounds from the first write to the
// last reader holding its message: what pushing one frame to every waiting
// agency costs this machine, with no protocol, store or draw at all.
func measureFanOut(ctx context.Context, conns, size, writers int) (time.Duration, error) {
	if conns < 1 || size < 1 || writers < 1 {
		return 0, fmt.Errorf("fan-out test: %d connections of %d bytes", conns, size)
	}
	pairs, closeAll, err := loopbackPairs(ctx, conns)
	if err != nil {
		return 0, fmt.Errorf("fan-out test: %w", err)
	}
	defer closeAll()

	var rounds [fanOutRounds]sync.WaitGroup
	var last [fanOutRounds]atomic.Int64 // unix nanoseconds of the latest read
	readErrs := make([]error, conns)
	var readers sync.WaitGroup
	for r := range rounds {
		rounds[r].Add(conns)
	}
	for i, p := range pairs {
		c := p.dialed
		readers.Go(func() {
			buf := make([]byte, size)
			for r := range fanOutRounds {
				if _, err := io.ReadFull(c, buf); err != nil && readErrs[i] == nil {
					readErrs[i] = err
				}
				now := time.Now().UnixNano()
				for {
					seen := last[r].Load()
					if now <= seen || last[r].CompareAndSwap(seen, now) {
						break
					}
				}
				rounds[r].Done()
			}
		})
	}
	msg := make([]byte, size)
	best := time.Duration(math.MaxInt64)
	for r := range fanOutRounds {
		start := time.Now()
		writeErrs := make([]error, writers)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := w; i < conns; i += writers {
					if _, err := pairs[i].accepted.Write(msg); err != nil {
						writeErrs[w] = err
						for ; i < conns; i += writers {
							pairs[i].accepted.Close() // its reader gets an error instead of waiting
						}
						return
					}
				}
			})
		}
		wg.Wait()
		if err := errors.Join(writeErrs...); err != nil {
			return 0, fmt.Errorf("fan-out test: %w", err)
		}
		rounds[r].Wait()
		best = min(best, time.Unix(0, last[r].Load()).Sub(start))
	}
	readers.Wait()
	if err := errors.Join(readErrs...); err != nil {
		return 0, fmt.Errorf("fan-out test: %w", err)
	}
	return best, nil
}
