package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// measureLoopback moves total bytes from one side of `streams` loopback TCP
// connections to the other, inside this process, and returns bytes/s.
func measureLoopback(ctx context.Context, streams int, total int64) (float64, error) {
	if streams < 1 || total < int64(streams) {
		return 0, fmt.Errorf("loopback test: %d streams for %d bytes", streams, total)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("loopback test: %w", err)
	}
	defer ln.Close()

	var readers sync.WaitGroup
	received := make([]int64, streams)
	readErrs := make([]error, streams)
	accepted := make(chan error, 1)
	go func() {
		for i := range streams {
			c, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			readers.Go(func() {
				defer c.Close()
				received[i], readErrs[i] = io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
			})
		}
		accepted <- nil
	}()

	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var d net.Dialer
	for range streams {
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return 0, fmt.Errorf("loopback test: %w", err)
		}
		conns = append(conns, c)
	}
	if err := <-accepted; err != nil {
		return 0, fmt.Errorf("loopback test: accept: %w", err)
	}

	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	var writers sync.WaitGroup
	writeErrs := make([]error, streams)
	start := time.Now()
	for i, c := range conns {
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
