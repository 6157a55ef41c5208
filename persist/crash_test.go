package persist

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// crashChildEnv, when set, makes TestCrashRecoveryKill the child process
// writing to the data dir it names.
const crashChildEnv = "PERSIST_CRASH_CHILD_DIR"

const (
	crashAgencies = 4
	crashFinishAt = 150 // the last agency finishes once it holds this many bets
	crashRounds   = 8
)

// TestCrashRecoveryKill runs a child process that stores batches and
// prints each one it submits and each one acknowledged, SIGKILLs it at a
// random moment, and checks the reopened store against what it printed.
func TestCrashRecoveryKill(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	before := make([]uint64, crashAgencies+1) // held per agency after the last round
	killed, acks := 0, 0
	start := time.Now()
	for round := range crashRounds {
		if round >= 4 && time.Since(start) > 12*time.Second {
			t.Logf("stopping after %d rounds to stay within the time budget on a slow machine", round)
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
		delay := time.Duration(20+rng.IntN(400)) * time.Millisecond
		if round%4 != 3 {
			select {
			case <-stdout.ready:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: child never opened the store\nstderr:\n%s", round, stderr.String())
			}
		}
		time.Sleep(delay)
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
		core, recovery := observer.New(zap.WarnLevel)
		s := openStore(t, dir, Options{Agencies: crashAgencies, WinningNumber: 7574, Logger: zap.New(core)})
		rows := byAgency(readBets(t, dir))
		for a := uint32(1); a <= crashAgencies; a++ {
			held, finished := s.Status(a)
			// Rows on disk are exactly the first held bets of the stream:
			// none lost, none twice, none out of order.
			if len(rows[a]) != int(held) {
				t.Fatalf("round %d agency %d: %d rows on disk, Status says %d", round, a, len(rows[a]), held)
			}
			sameBets(t, tagged(a, rows[a]), tagged(a, stream(a, 0, int(held))))
			// Every acknowledged batch is on disk.
			if held < log.acked[a] {
				t.Fatalf("round %d agency %d: holds %d bets, but batches up to %d were acknowledged", round, a, held, log.acked[a])
			}
			// No batch is on disk in part: held ends where a batch ended.
			if held != before[a] && !log.ends[a][held] {
				t.Fatalf("round %d agency %d: holds %d bets, which is no batch boundary (was %d, batch ends %v)",
					round, a, held, before[a], log.ends[a])
			}
			if total, ok := log.finished[a]; ok && (!finished || held != total) {
				t.Fatalf("round %d agency %d: FINISHED %d was acknowledged, Status says %d, %t", round, a, total, held, finished)
			}
			before[a] = held
		}
		if len(rows) > crashAgencies {
			t.Fatalf("round %d: rows of unknown agencies: %d agencies on disk", round, len(rows))
		}
		var cut []string
		for _, e := range recovery.FilterMessage("store_recover").All() {
			cut = append(cut, fmt.Sprintf("%v of %v", e.ContextMap()["cut_bytes"], e.ContextMap()["file"]))
		}
		t.Logf("round %d: killed after %v, %d batches acknowledged, held %v, recovery cut %v",
			round, delay, log.acks, before[1:], cut)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if killed == 0 || acks == 0 {
		t.Fatalf("no round killed a busy child (killed %d, acknowledgements %d)", killed, acks)
	}
}

type childLog struct {
	acks     int                        // acknowledged batches
	acked    map[uint32]uint64          // highest held acknowledged per agency
	ends     map[uint32]map[uint64]bool // where each submitted batch ends
	finished map[uint32]uint64
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
		var kind string
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
			if _, err := fmt.Sscanf(line, "%s %d %d %d %d", &kind, &agency, &first, &count, &held); err != nil {
				t.Fatalf("child line %q: %v", line, err)
			}
			log.acked[agency] = max(log.acked[agency], held)
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
// resuming from what the store holds. Some batches overlap what is held.
func crashChild(t *testing.T, dir string) {
	s, err := Open(dir, Options{Agencies: crashAgencies, WinningNumber: 7574, QueueSize: 64, MaxGroup: 16})
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
			rng := rand.New(rand.NewPCG(uint64(a), uint64(time.Now().UnixNano())))
			results := make(chan Result, 1)
			send := func(r Request) Result {
				r.Done = func(res Result) { results <- res }
				for {
					err := s.Submit(&r)
					if errors.Is(err, ErrBusy) {
						time.Sleep(time.Millisecond)
						continue
					}
					if err != nil {
						return Result{Err: err}
					}
					return <-results
				}
			}
			held, finished := s.Status(a)
			for time.Now().Before(deadline) {
				if a == crashAgencies && (finished || held >= crashFinishAt) {
					if res := send(Request{Agency: a, Finish: true, Total: held}); res.Err != nil {
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
				res := send(Request{Agency: a, First: first, Bets: stream(a, first, count)})
				if res.Err != nil {
					t.Errorf("agency %d batch at %d: %v", a, first, res.Err)
					return
				}
				say("ack %d %d %d %d", a, first, count, res.Held)
				held = res.Held
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}
