package filestore

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/persisttest"
	"github.com/tp0/loteria/receipt"
)

// crashChildEnv, when set, makes TestCrashRecoveryKill the child process
// writing to the data dir it names.
const crashChildEnv = "FILESTORE_CRASH_CHILD_DIR"

const (
	crashAgencies = 4
	crashFinishAt = 150 // the last agency finishes once it holds this many bets
	crashRounds   = 8
	crashBudget   = 12 * time.Second
)

// TestCrashRecoveryKill runs a child process that stores batches through
// the writer and prints each batch it submits and each acknowledgement
// with its chain value, SIGKILLs it at a random moment, reopens the data
// dir and checks it against what the child printed: every acknowledged bet
// is there exactly once, in order, no batch is there in part, and the
// chain values match.
func TestCrashRecoveryKill(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	opts := Options{Agencies: crashAgencies, WinningNumber: winning}
	before := make([]uint64, crashAgencies+1) // held per agency after the last round
	finishedAck := map[uint32]uint64{}        // FINISHED acknowledged in any round
	killed, acks := 0, 0
	start := time.Now()
	for round := range crashRounds {
		if round >= 4 && time.Since(start) > crashBudget {
			t.Logf("stopping after %d rounds to stay within %v on a slow machine", round, crashBudget)
			break
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashRecoveryKill$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		stdout := &childOutput{ready: make(chan struct{})}
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Most rounds kill a busy writer; every fourth may kill the child
		// while it starts or recovers.
		delay := time.Duration(rng.IntN(250)) * time.Millisecond
		if round%4 != 3 {
			select {
			case <-stdout.ready:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: child never opened the store\nstderr:\n%s", round, stderr.String())
			}
		}
		time.Sleep(delay) // a random moment to kill at, not a synchronisation
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("round %d: kill child: %v", round, err)
		}
		err := cmd.Wait()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
			killed++
		case err != nil:
			t.Fatalf("round %d: child failed: %v\nstdout:\n%s\nstderr:\n%s", round, err, stdout.String(), stderr.String())
		}

		log := parseChildLog(t, stdout.String())
		acks += log.acks
		window := unvouched(t, dir)
		s := open(t, dir, opts)
		st, _ := s.State()
		finished := map[uint32]uint64{}
		rows := readBets(t, dir)
		per := byAgency(rows)
		for a := uint32(1); a <= crashAgencies; a++ {
			ag := st.Agencies[a-1]
			held := ag.Held
			// The rows are exactly the first held bets of the stream: none
			// lost, none twice, none out of order.
			if len(per[a]) != int(held) {
				t.Fatalf("round %d agency %d: %d rows in bets.csv, the store holds %d", round, a, len(per[a]), held)
			}
			sameBets(t, tagged(a, per[a]), tagged(a, persisttest.Bets(a, 0, int(held))))
			if ag.Chain.Sum() != receipt.ChainOf(persisttest.Bets(a, 0, int(held))) {
				t.Fatalf("round %d agency %d: chain after recovery differs from the chain of its %d bets", round, a, held)
			}
			if held < log.acked[a] {
				t.Fatalf("round %d agency %d: holds %d bets, but %d were acknowledged", round, a, held, log.acked[a])
			}
			// No batch is there in part: held ends where a batch ended.
			if held != before[a] && !log.ends[a][held] {
				t.Fatalf("round %d agency %d: holds %d bets, which is no batch boundary (was %d)", round, a, held, before[a])
			}
			if total, ok := log.finished[a]; ok {
				finishedAck[a] = total
			}
			if total, ok := finishedAck[a]; ok && (!ag.Finished || ag.Total != total) {
				t.Fatalf("round %d agency %d: FINISHED %d was acknowledged, the store says %t with %d", round, a, total, ag.Finished, ag.Total)
			}
			if ag.Finished {
				// A FINISHED stored just before the kill may not have been
				// acknowledged yet; either way its total is what is held.
				finished[a] = ag.Total
			}
			before[a] = held
		}
		for _, ack := range log.chains {
			if want := receipt.ChainOf(persisttest.Bets(ack.agency, 0, int(ack.held))); ack.chain != hex.EncodeToString(want[:]) {
				t.Fatalf("round %d agency %d: acknowledged chain %s over %d bets, want %x", round, ack.agency, ack.chain, ack.held, want)
			}
		}
		if len(per) > crashAgencies {
			t.Fatalf("round %d: rows of %d agencies", round, len(per))
		}
		checkState(t, s, rows, finished)
		t.Logf("round %d: killed after %v, %d batches acknowledged, %d bytes of bets.csv past the journal, held %v",
			round, delay, log.acks, window, before[1:])
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if killed == 0 || acks == 0 {
		t.Fatalf("no round killed a busy child (killed %d, acknowledgements %d)", killed, acks)
	}
}

// unvouched is how many bytes of bets.csv lie past the offset of the
// journal's last whole record: a kill between the two fsyncs of a commit.
func unvouched(t *testing.T, dir string) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, JournalFile))
	if err != nil {
		return -1
	}
	var last int64
	for off := 0; off < len(data); {
		r, n, err := parseRecord(data[off:])
		if err != nil {
			break
		}
		last, off = r.offset, off+n
	}
	return fileSize(t, dir, BetsFile) - last
}

type ackLine struct {
	agency uint32
	held   uint64
	chain  string
}

type childLog struct {
	acks     int                        // acknowledged batches
	acked    map[uint32]uint64          // highest held acknowledged per agency
	ends     map[uint32]map[uint64]bool // where each submitted batch ends
	finished map[uint32]uint64          // FINISHED acknowledged this round
	chains   []ackLine
}

// childOutput collects the child's stdout and says when it is ready.
type childOutput struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	seen  bool
}

func (o *childOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	if !o.seen && bytes.Contains(o.buf.Bytes(), []byte("ready\n")) {
		o.seen = true
		close(o.ready)
	}
	return len(p), nil
}

func (o *childOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// parseChildLog reads the child's complete lines; the last one may have
// been cut by the kill.
func parseChildLog(t *testing.T, out string) childLog {
	log := childLog{acked: map[uint32]uint64{}, ends: map[uint32]map[uint64]bool{}, finished: map[uint32]uint64{}}
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[:i+1]
	} else {
		out = ""
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var kind, chain string
		var agency uint32
		var first, count, held uint64
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "sub "):
			if _, err := fmt.Sscanf(line, "%s %d %d %d", &kind, &agency, &first, &count); err != nil {
				t.Fatalf("child line %q: %v", line, err)
			}
			if log.ends[agency] == nil {
				log.ends[agency] = map[uint64]bool{}
			}
			log.ends[agency][first+count] = true
		case strings.HasPrefix(line, "ack "):
			if _, err := fmt.Sscanf(line, "%s %d %d %d %d %s", &kind, &agency, &first, &count, &held, &chain); err != nil {
				t.Fatalf("child line %q: %v", line, err)
			}
			log.acked[agency] = max(log.acked[agency], held)
			log.chains = append(log.chains, ackLine{agency, held, chain})
			log.acks++
		case strings.HasPrefix(line, "fin "):
			if _, err := fmt.Sscanf(line, "%s %d %d", &kind, &agency, &held); err != nil {
				t.Fatalf("child line %q: %v", line, err)
			}
			log.finished[agency] = held
		}
	}
	return log
}

// crashChild stores batches of every agency's stream until it is killed,
// resuming from what the store holds. Some batches resend bets it holds.
func crashChild(t *testing.T, dir string) {
	b, err := Open(dir, Options{Agencies: crashAgencies, WinningNumber: winning})
	if err != nil {
		t.Fatal(err)
	}
	w, err := persist.New(b, persist.Options{Agencies: crashAgencies, WinningNumber: winning, MaxGroup: 16})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...) // one write per line
	}
	say("ready")
	deadline := time.Now().Add(20 * time.Second) // only if nobody kills us
	var wg sync.WaitGroup
	for a := uint32(1); a <= crashAgencies; a++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(a), rand.Uint64()))
			results := make(chan persist.Result, 1)
			send := func(r persist.Request) persist.Result {
				r.Done = func(res persist.Result) { results <- res }
				if err := w.Submit(&r); err != nil {
					return persist.Result{Err: err}
				}
				return <-results
			}
			held, finished, _ := w.Status(a)
			for time.Now().Before(deadline) {
				if a == crashAgencies && (finished || held >= crashFinishAt) {
					if res := send(persist.Request{Agency: a, Finish: true, Total: held}); res.Err != nil {
						t.Errorf("agency %d finish: %v", a, res.Err)
						return
					}
					say("fin %d %d", a, held)
					return
				}
				first, count := held, 1+rng.IntN(20)
				if rng.IntN(5) == 0 {
					back := min(held, uint64(1+rng.IntN(3)))
					first, count = held-back, count+int(back)
				}
				say("sub %d %d %d", a, first, count)
				res := send(persist.Request{Agency: a, First: first, Bets: persisttest.Bets(a, first, count)})
				if res.Err != nil {
					t.Errorf("agency %d batch at %d: %v", a, first, res.Err)
					return
				}
				say("ack %d %d %d %d %x", a, first, count, res.Held, res.Chain)
				held = res.Held
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Error(err)
	}
}
