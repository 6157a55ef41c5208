package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/internal/proctest"
	"github.com/tp0/loteria/persist/filestore"
)

// checkRecovery checks a new server run's recovery after a SIGKILL. before
// is bets.csv as the killed run left it. The store_open line names the
// bets bets.csv keeps; anything after them must have been moved, byte for
// byte, to a bets.csv.torn-* file beside it (never destroyed); what is kept
// is, per agency, the start of the agency's file, and holds at least held
// plus what the killed run logged as stored. It returns the bets held per
// agency.
func (c *cluster) checkRecovery(held, logged map[uint32]int, before []byte) map[uint32]int {
	c.t.Helper()
	lines := c.server.Lines()
	opens := proctest.Find(lines, "store_open", "success")
	if len(opens) != 1 {
		c.t.Fatalf("%s: %d store_open success lines", c.server.Name, len(opens))
	}
	committed, bets := opens[0].Int("committed_bytes"), opens[0].Int("bets")
	betsPath := filepath.Join(c.dataDir, filestore.BetsFile)
	var moved []logging.Line
	for _, l := range proctest.Find(lines, "store_recover", "success", "file", filestore.BetsFile) {
		if _, ok := l.Fields["moved_bytes"]; ok {
			moved = append(moved, l)
		}
	}
	size := int64(len(before))
	switch {
	case size > committed:
		if len(moved) != 1 || moved[0].Int("moved_bytes") != size-committed {
			c.t.Errorf("%s: bets.csv had %d bytes, %d kept; want one store_recover line moving %d bytes aside, got %v",
				c.server.Name, size, committed, size-committed, moved)
		} else if aside, err := os.ReadFile(moved[0].Fields["moved_to"]); err != nil || !bytes.Equal(aside, before[committed:]) {
			c.t.Errorf("%s: %s does not hold the %d bytes cut from bets.csv (%v)", c.server.Name, moved[0].Fields["moved_to"],
				size-committed, err)
		}
	case size == committed:
		if len(moved) != 0 {
			c.t.Errorf("%s: store_recover %v but bets.csv had no torn tail", c.server.Name, moved)
		}
	default:
		c.t.Fatalf("%s: keeps %d bytes but bets.csv had only %d", c.server.Name, committed, size)
	}
	// The server runs and agencies upload again: only the kept part of
	// the file can be compared with what the killed run left.
	if now := readFile(c.t, betsPath); int64(len(now)) < committed || !bytes.Equal(now[:committed], before[:committed]) {
		c.t.Errorf("%s: recovery changed the %d bytes of bets.csv it keeps", c.server.Name, committed)
	}
	prefix := storedByAgency(c.t, betsPath, committed)
	now := map[uint32]int{}
	total := 0
	for id := uint32(1); id <= uint32(len(c.data.bets)); id++ {
		got, want := prefix[id], c.data.bets[id-1]
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
			c.t.Errorf("%s: recovered bets of agency %d are not the start of its file (first difference at %d)",
				c.server.Name, id, firstDiff(got, want))
		}
		if len(got) < held[id]+logged[id] {
			c.t.Errorf("%s: agency %d has %d bets after recovery; %d were held and %d more acknowledged: acknowledged bets lost",
				c.server.Name, id, len(got), held[id], logged[id])
		}
		now[id] = len(got)
		total += len(got)
	}
	if int64(total) != bets {
		c.t.Errorf("%s: store_open says %d bets, bets.csv holds %d", c.server.Name, bets, total)
	}
	c.t.Logf("%s: recovered %d bets (%d bytes kept, %d moved aside)", c.server.Name, bets, committed, size-committed)
	return now
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// proxyRate is the bandwidth of the proxy the fault tests put between the
// agencies and the server: slow enough for an upload to outlast the faults.
const proxyRate = 48 << 10

// TestServerKilledMidUpload SIGKILLs the server 4 to 6 times at random
// moments while five secured agency processes (one polling) upload over a
// slow link, restarting it each time on the same data directory and port. Once a
// crash inside a commit is imitated: a row without its line break after
// bets.csv's last row, half a record after the journal's. The agencies must
// finish on their own with their winners; the store must hold each
// agency's file exactly; receipts, roots and the commitment must agree
// (issues 8, 9 and 13: chains stay exact across resumes).
func TestServerKilledMidUpload(t *testing.T) {
	t.Parallel()
	data := makeFaultData(t, []int{4000, 3000, 2500, 2000, 500}, 21)
	c := newCluster(t, data)
	r := faultRand(t)
	c.startServer()
	c.dialTo = startCutProxy(t, c.addr, proxyRate).addr()
	c.startAgencies()
	c.uploading(1)

	held := map[uint32]int{}
	betsPath := filepath.Join(c.dataDir, filestore.BetsFile)
	journalPath := filepath.Join(c.dataDir, filestore.JournalFile)
	kills := 4 + r.IntN(3)
	midUpload := 0 // kills that found bets still to store
	for k := range kills {
		if k == 0 {
			time.Sleep(time.Duration(50+r.IntN(101)) * time.Millisecond) // early enough to land mid-upload
		} else {
			pause(r)
		}
		c.server.Kill(t)
		logged := storedLogged(c.server.Lines())
		if k == 1 {
			appendFile(t, betsPath, []byte("3,Torn,Row,3012"))
			appendFile(t, journalPath, []byte{0, 0, 0, 40, 0xAB})
		}
		before := readFile(t, betsPath)
		c.startServer()
		held = c.checkRecovery(held, logged, before)
		if sum(held) < data.total() {
			midUpload++
		}
		if k == 1 {
			j := proctest.Find(c.server.Lines(), "store_recover", "success", "file", filestore.JournalFile)
			if len(j) != 1 || j[0].Int("torn_bytes") < 5 {
				t.Errorf("%s: want a store_recover line dropping the torn journal record, got %v", c.server.Name, j)
			}
		}
	}
	if midUpload < 4 {
		t.Errorf("only %d of %d kills came before the upload was complete; want at least 4", midUpload, kills)
	}
	roots := c.finishAgencies()
	reconnects := 0
	for id := 1; id <= len(data.bets); id++ {
		reconnects += len(proctest.Find(c.agencies[id].Lines(), "connect", "in_progress"))
	}
	if reconnects == 0 {
		t.Errorf("no agency logged a reconnect; the kills went unnoticed")
	}
	c.stopServer()
	c.checkStore()
	c.checkEvidence(roots)
	t.Logf("%d kills (%d mid-upload), %d reconnect attempts logged by agencies", kills, midUpload, reconnects)
}

// TestAgencyKilledMidUpload SIGKILLs agency processes at random moments of
// their upload (over a slow link) and starts them again: each new process
// must resume where the server's WELCOME says (its chain checked against
// the file), and the store must end up holding every file once. It runs secured and, once,
// --insecure (the plaintext protocol keeps working when asked for).
func TestAgencyKilledMidUpload(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"secure", "insecure"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			data := makeFaultData(t, []int{3000, 2500, 2000, 1500, 400}, 22)
			var c *cluster
			if mode == "secure" {
				c = newCluster(t, data)
			} else {
				c = newInsecureCluster(t, data)
			}
			r := faultRand(t)
			c.startServer()
			if got := proctest.Find(c.server.Lines(), "listen", "success")[0].Fields["mode"]; got != mode {
				t.Errorf("server listens in mode %q, want %q", got, mode)
			}
			c.dialTo = startCutProxy(t, c.addr, proxyRate).addr()
			c.startAgencies()
			c.uploading(1)

			resumed := 0
			for range 5 + r.IntN(2) {
				pause(r)
				var running []int // agencies still uploading
				for id, p := range c.agencies {
					if !p.Exited() && len(proctest.Find(p.Lines(), "upload", "success")) == 0 {
						running = append(running, id)
					}
				}
				if len(running) == 0 {
					break
				}
				slices.Sort(running)
				id := running[r.IntN(len(running))]
				c.agencies[id].Kill(t)
				acked := storedLogged(c.server.Lines())[uint32(id)]
				p := c.startAgency(id)
				var hello logging.Line
				proctest.WaitFor(t, hangGuard, p.Name+" to say hello", func() bool {
					h := proctest.Find(p.Lines(), "hello", "success")
					if len(h) > 0 {
						hello = h[0]
					}
					return len(h) > 0
				})
				got := int(hello.Int("held"))
				if got < acked || got > len(data.bets[id-1]) {
					t.Errorf("%s: WELCOME held %d; the server had acknowledged %d of %d bets", p.Name, got, acked, len(data.bets[id-1]))
				}
				if got > 0 && got < len(data.bets[id-1]) {
					resumed++
				}
			}
			if resumed < 2 {
				t.Errorf("%d restarted agencies resumed mid-file; want at least 2", resumed)
			}
			roots := c.finishAgencies()
			c.stopServer()
			c.checkStore()
			c.checkEvidence(roots)
		})
	}
}

// TestNetworkCutMidUpload puts a proxy between the secured agency
// processes and the server and, at random moments, either resets every
// connection or stops forwarding for a while (so the agencies' waits time
// out) and then resets or resumes. Late bytes of a dead connection may
// still reach the server after the agency reconnected. The agencies must
// finish and the store must hold each file exactly once.
func TestNetworkCutMidUpload(t *testing.T) {
	t.Parallel()
	data := makeFaultData(t, []int{3000, 2500, 2000, 1500, 400}, 25)
	c := newCluster(t, data)
	c.ioWait = "1s"
	r := faultRand(t)
	c.startServer()
	px := startCutProxy(t, c.addr, proxyRate)
	c.dialTo = px.addr()
	c.startAgencies()
	c.uploading(1)

	faults := []int{0, 1, 2, r.IntN(3)} // each kind at least once
	r.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
	cut := 0
	for _, fault := range faults {
		pause(r)
		switch fault {
		case 0:
			n := px.cutAll()
			cut += n
			t.Logf("reset %d connections", n)
		case 1:
			px.freeze()
			time.Sleep(1500 * time.Millisecond)
			n := px.cutAll()
			cut += n
			px.thaw()
			t.Logf("stalled, then reset %d connections", n)
		case 2:
			px.freeze()
			time.Sleep(1500 * time.Millisecond)
			px.thaw()
			t.Logf("stalled, then resumed")
		}
	}
	if uploaded := len(proctest.Find(c.server.Lines(), "agency_finished", "success")); uploaded == len(data.bets) {
		t.Errorf("every agency had finished by the last fault; the faults did not land in the upload")
	}
	if cut == 0 {
		t.Errorf("no reset found a connection to cut; the test exercised nothing")
	}
	roots := c.finishAgencies()
	timeouts := 0
	for id := 1; id <= len(data.bets); id++ {
		for _, l := range proctest.Find(c.agencies[id].Lines(), "connect", "in_progress") {
			if strings.Contains(l.Fields["error"], "timeout") || strings.Contains(l.Fields["error"], "in time") {
				timeouts++
			}
		}
	}
	t.Logf("%d reconnects after a timed-out wait", timeouts)
	c.stopServer()
	c.checkStore()
	c.checkEvidence(roots)
}

// cutProxy forwards TCP connections to a target, each direction of each
// connection at most rate bytes a second (a slow network, so that an
// upload lasts long enough for the faults to land in it), and can stall
// or reset them.
type cutProxy struct {
	ln     net.Listener
	target string
	rate   int
	gate   sync.RWMutex // held for writing while forwarding is stalled
	mu     sync.Mutex
	links  map[net.Conn]net.Conn
	wg     sync.WaitGroup
}

func startCutProxy(t *testing.T, target string, rate int) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, rate: rate, links: map[net.Conn]net.Conn{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cutAll()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.links[in] = out
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

// pipe copies src to dst, waiting at the gate before each write; when
// either side ends, both are closed.
func (p *cutProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, min(32<<10, p.rate/10))
	for {
		n, err := src.Read(buf)
		if n > 0 {
			time.Sleep(time.Duration(n) * time.Second / time.Duration(p.rate))
			p.gate.RLock()
			_, werr := dst.Write(buf[:n])
			p.gate.RUnlock()
			if werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	src.Close()
	dst.Close()
	p.mu.Lock()
	delete(p.links, src)
	delete(p.links, dst)
	p.mu.Unlock()
}

func (p *cutProxy) freeze() { p.gate.Lock() }
func (p *cutProxy) thaw()   { p.gate.Unlock() }

// cutAll closes every forwarded connection on both sides.
func (p *cutProxy) cutAll() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for in, out := range p.links {
		in.Close()
		out.Close()
		n++
	}
	return n
}
