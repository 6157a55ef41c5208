package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/proctest"
)

// floodLimit is the peak resident memory allowed to a server under the
// PING flood (issue 8 §1: it used to reach 2.9 GiB in 10 s).
const floodLimit = 128 << 20

// vmHWM reads the peak resident set size of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the server's status: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// pingFlood is peers that send 8 KiB PINGs in plaintext as fast as the
// server takes them and never read a byte; when the server cuts one off,
// it connects again.
type pingFlood struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
	sent  atomic.Int64 // bytes written
	dials atomic.Int64
}

func startPingFlood(t *testing.T, addr string, peers int) *pingFlood {
	t.Helper()
	ping, err := frame.Encode(&frame.Ping{Payload: bytes.Repeat([]byte{'p'}, frame.MaxSize-frame.HeaderSize)})
	if err != nil || len(ping) != frame.MaxSize {
		t.Fatalf("encode an 8 KiB PING: %d bytes, %v", len(ping), err)
	}
	f := &pingFlood{stop: make(chan struct{}), conns: map[net.Conn]bool{}}
	for range peers {
		f.wg.Add(1)
		go f.peer(addr, ping)
	}
	t.Cleanup(f.end)
	return f
}

func (f *pingFlood) stopped() bool {
	select {
	case <-f.stop:
		return true
	default:
		return false
	}
}

func (f *pingFlood) peer(addr string, ping []byte) {
	defer f.wg.Done()
	for !f.stopped() {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		f.dials.Add(1)
		f.mu.Lock()
		if f.stopped() {
			f.mu.Unlock()
			c.Close()
			return
		}
		f.conns[c] = true
		f.mu.Unlock()
		// Writes block once the server stops reading; end closes the
		// connection to free them.
		for {
			n, err := c.Write(ping)
			f.sent.Add(int64(n))
			if err != nil {
				break
			}
		}
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		c.Close()
		time.Sleep(100 * time.Millisecond) // cut off: come back, a little later
	}
}

// end stops the peers and waits for them.
func (f *pingFlood) end() {
	f.mu.Lock()
	if !f.stopped() {
		close(f.stop)
	}
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// TestPingFloodMemory: two clients send 8 KiB PINGs and never read their
// PONGs for 10 s, connecting again whenever they are cut off, while five
// agencies upload and get their winners (issue 8 §1). The server must stop
// reading a client once its unread answers pile up and cut it off (ERROR
// flood) when its unread bytes pile up in turn; its peak RSS stays under
// 128 MiB. Secured (the plaintext PING a secured server answers without a
// key) and --insecure.
func TestPingFloodMemory(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"secure", "insecure"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			data := makeFaultData(t, []int{1500, 1200, 1000, 800, 200}, 27)
			var c *cluster
			if mode == "secure" {
				c = newCluster(t, data)
			} else {
				c = newInsecureCluster(t, data)
			}
			c.startServer()
			start := time.Now()
			flood := startPingFlood(t, c.addr, 2)
			time.Sleep(500 * time.Millisecond)
			c.startAgencies()
			roots := c.finishAgencies()
			// The attack lasts 30 s; the --insecure run repeats it
			// shorter, the path being the same but for the handshake.
			attack := 30 * time.Second
			if mode != "secure" {
				attack = 10 * time.Second
			}
			if rest := attack - time.Since(start); rest > 0 {
				time.Sleep(rest)
			}
			hwm := vmHWM(t, c.server.Pid())
			flood.end()
			t.Logf("%s server: peak RSS %.1f MiB after %v of flood (%.1f MiB written by %d connections)",
				mode, float64(hwm)/(1<<20), time.Since(start).Round(time.Millisecond), float64(flood.sent.Load())/(1<<20), flood.dials.Load())
			if hwm > floodLimit {
				t.Errorf("peak RSS %d MiB under a PING flood, want under %d MiB", hwm>>20, floodLimit>>20)
			}
			if flood.sent.Load() < 1<<20 {
				t.Errorf("the flood wrote only %d bytes: it did not exercise the server", flood.sent.Load())
			}
			if cut := proctest.Find(c.server.Lines(), "session_error", "fail", "code", frame.CodeFlood.String()); len(cut) == 0 {
				t.Errorf("no flooding peer was cut off with ERROR flood")
			}
			c.stopServer()
			c.checkStore()
			c.checkEvidence(roots)
		})
	}
}
