package eventserver

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
)

// This file is the session tests' harness: a View whose answers a test sets
// directly, an Observer that records its calls, and a runner for scripts
// that step a Session and check every output, in the style of etcd-io/raft's
// data-driven tests.

// Hashes in scripts have names: scriptHash("c6") is a fixed hash that describe
// prints back as "c6". By convention cN is the chain over N bets, pN the
// Merkle proof of agency N, "root" the draw's root.
var (
	hashNamesMu sync.Mutex
	hashNames   = map[frame.Hash]string{}
)

func scriptHash(name string) frame.Hash {
	h := frame.Hash(sha256.Sum256([]byte("script hash " + name)))
	hashNamesMu.Lock()
	hashNames[h] = name
	hashNamesMu.Unlock()
	return h
}

func scriptHashName(h frame.Hash) string {
	hashNamesMu.Lock()
	defer hashNamesMu.Unlock()
	if n, ok := hashNames[h]; ok {
		return n
	}
	return hex.EncodeToString(h[:4])
}

// scriptChain is the scripts' chain over held bets.
func scriptChain(held uint64) frame.Hash { return scriptHash(fmt.Sprintf("c%d", held)) }

// fakeView is a View whose answers a test sets directly.
type fakeView struct {
	agencies int
	held     map[uint32]uint64
	finished map[uint32]bool
	count    int // FinishedCount
	drawn    bool
	winners  map[uint32][]string
	receipts []string // what Receipt was asked to sign, as "a/bets/chain"
}

func newFakeView(agencies int) *fakeView {
	return &fakeView{
		agencies: agencies,
		held:     map[uint32]uint64{},
		finished: map[uint32]bool{},
		winners:  map[uint32][]string{},
	}
}

func (v *fakeView) Agencies() int { return v.agencies }

func (v *fakeView) Status(agency uint32) (uint64, bool, frame.Hash) {
	return v.held[agency], v.finished[agency], scriptChain(v.held[agency])
}

func (v *fakeView) FinishedCount() int { return v.count }

func (v *fakeView) Window(limit int) int { return limit }

// Receipt marks its receipts as the view's own with a signature that
// names the agency, so a test can tell the session passed them on as made.
func (v *fakeView) Receipt(agency uint32, bets uint64, chain frame.Hash) *frame.Receipt {
	v.receipts = append(v.receipts, fmt.Sprintf("%d/%d/%s", agency, bets, scriptHashName(chain)))
	r := &frame.Receipt{Lottery: scriptHash("lottery"), Agency: agency, Bets: bets, Chain: chain}
	copy(r.Signature[:], fmt.Sprintf("view signed for %d", agency))
	return r
}

func (v *fakeView) Winners(agency uint32) ([]string, *frame.Commitment, bool) {
	if !v.drawn {
		return nil, nil, false
	}
	c := &frame.Commitment{Lottery: scriptHash("lottery"), Agencies: uint32(v.agencies), Root: scriptHash("root"),
		Proof: []frame.Hash{scriptHash(fmt.Sprintf("p%d", agency))}}
	return v.winners[agency], c, true
}

// recObserver is an Observer that records its calls as short strings.
type recObserver struct {
	mu    sync.Mutex
	calls []string
}

func (o *recObserver) add(format string, args ...any) {
	o.mu.Lock()
	o.calls = append(o.calls, fmt.Sprintf(format, args...))
	o.mu.Unlock()
}

// take returns the calls recorded since the last take.
func (o *recObserver) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	calls := o.calls
	o.calls = nil
	return calls
}

func gaugeName(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (o *recObserver) Batch(result string, bets int)      { o.add("batch(%s,%d)", result, bets) }
func (o *recObserver) FrameRejected(code frame.Code)      { o.add("rejected(%s)", code) }
func (o *recObserver) ErrorSent(code frame.Code)          { o.add("error(%s)", code) }
func (o *recObserver) ConnectionRefused(r string)         { o.add("refused(%s)", r) }
func (o *recObserver) AgenciesFinished(n int)             { o.add("finished(%d)", n) }
func (o *recObserver) Drawn(time.Duration)                { o.add("drawn") }
func (o *recObserver) WinnersSent(documents int)          { o.add("winners(%d)", documents) }
func (o *recObserver) Handshake(ok bool, _ time.Duration) { o.add("handshake(%t)", ok) }
func (o *recObserver) ConnectionMoved(from, to string) {
	o.add("moved(%s,%s)", gaugeName(from), gaugeName(to))
}

// scriptLimits are the limits a script's session starts with.
var scriptLimits = Limits{
	Window:       3,
	MaxFrame:     frame.MaxSize,
	ReadTimeout:  30 * time.Second,
	PingInterval: time.Minute,
	RetryAfter:   time.Second,
}

// newTestSession returns a session over view whose log lines, debug ones
// included, are observed, and whose observer calls are recorded.
func newTestSession(view View, limits Limits) (*Session, *observer.ObservedLogs, *recObserver) {
	core, logs := observer.New(zap.DebugLevel)
	obs := &recObserver{}
	return NewSession(view, zap.New(core), obs, limits), logs, obs
}

// received runs f through the encoder and the real decoder, so the session
// sees exactly what the server's decode loop would hand it.
func received(t testing.TB, f frame.Frame) Received {
	t.Helper()
	b, err := frame.Encode(f)
	if err != nil {
		t.Fatalf("encode %s: %v", f.Type(), err)
	}
	return receivedRaw(t, b)
}

// receivedRaw decodes one frame from b as the server would.
func receivedRaw(t testing.TB, b []byte) Received {
	t.Helper()
	var d frame.Decoder
	got, err := d.Next(bufio.NewReader(bytes.NewReader(b)))
	if errors.Is(err, frame.ErrIncomplete) {
		t.Fatalf("decoding %x: incomplete", b)
	}
	return Received{Frame: got, Err: err}
}

// sessionBets returns n valid bets whose documents and numbers depend on first.
func sessionBets(first uint64, n int) []frame.Bet {
	bets := make([]frame.Bet, n)
	for i := range bets {
		k := first + uint64(i)
		bets[i] = frame.Bet{
			FirstName: "Ana",
			LastName:  "Paz",
			Document:  strconv.FormatUint(30000000+k, 10),
			Birthdate: frame.NewDate(1980, 1+int(k%12), 1+int(k%28)),
			Number:    uint16(k * 37 % 10000),
		}
	}
	return bets
}

// describeFrame renders the parts of a frame a script checks; reasons are
// left out (they are sentences for people), codes, indexes and hashes (by
// name) are kept.
func describeFrame(f frame.Frame) string {
	switch f := f.(type) {
	case *frame.Welcome:
		finished := ""
		if f.Finished {
			finished = "finished,"
		}
		return fmt.Sprintf("WELCOME(held=%d,%sw=%d,%s)", f.Held, finished, f.Window, scriptHashName(f.Chain))
	case *frame.Ack:
		return fmt.Sprintf("ACK(%d+%d,held=%d,%s)", f.First, f.Count, f.Held, scriptHashName(f.Chain))
	case *frame.Reject:
		return fmt.Sprintf("REJECT(%s@%d)", f.Code, f.Index)
	case *frame.Error:
		return fmt.Sprintf("ERROR(%s)", f.Code)
	case *frame.NotReady:
		return fmt.Sprintf("NOT_READY(%d/%d,retry=%v)", f.Finished, f.Agencies, f.RetryAfter)
	case *frame.Receipt:
		return fmt.Sprintf("RECEIPT(a=%d,bets=%d,%s)", f.Agency, f.Bets, scriptHashName(f.Chain))
	case *frame.Commitment:
		proof := make([]string, len(f.Proof))
		for i, h := range f.Proof {
			proof[i] = scriptHashName(h)
		}
		return fmt.Sprintf("COMMITMENT(%s,%s)", scriptHashName(f.Root), strings.Join(proof, " "))
	case *frame.Winners:
		last := ""
		if f.Last {
			last = ",last"
		}
		if len(f.Documents) > 4 {
			return fmt.Sprintf("WINNERS(n=%d%s)", len(f.Documents), last)
		}
		return fmt.Sprintf("WINNERS([%s]%s)", strings.Join(f.Documents, " "), last)
	case *frame.Ping:
		if len(f.Payload) == 8 { // the server's own: a counter
			return fmt.Sprintf("PING(#%d)", binary.BigEndian.Uint64(f.Payload))
		}
		return fmt.Sprintf("PING(%s)", f.Payload)
	case *frame.Pong:
		return fmt.Sprintf("PONG(%s)", f.Payload)
	}
	return f.Type().String()
}

// describeOutput renders an Output in the order the caller carries it out.
func describeOutput(o Output) string {
	var parts []string
	if o.Register != 0 {
		parts = append(parts, fmt.Sprintf("register=%d", o.Register))
	}
	if r := o.Request; r != nil {
		if r.Finish {
			parts = append(parts, fmt.Sprintf("request=finish(a=%d,total=%d)", r.Agency, r.Total))
		} else {
			parts = append(parts, fmt.Sprintf("request=bets(a=%d,%d+%d)", r.Agency, r.First, len(r.Bets)))
		}
	}
	for _, f := range o.Send {
		parts = append(parts, describeFrame(f))
	}
	if o.Close {
		parts = append(parts, "close")
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

var waitNames = map[Wait]string{WaitNone: "none", WaitHello: "hello", WaitFrame: "frame", WaitIdle: "idle", WaitPong: "pong"}

// describeState renders what a script checks after each step: the state,
// "busy" when the window is full, and what the session waits for.
func describeState(s *Session) string {
	busy := ""
	if s.Busy() {
		busy = " busy"
	}
	return fmt.Sprintf("%s%s %s", s.State(), busy, waitNames[s.Wait()])
}

// storeErrors are the store's answers a script can name.
var storeErrors = map[string]error{
	"gap":      fmt.Errorf("%w: batch starts at bet 9, server holds 3", persist.ErrIndexGap),
	"finished": fmt.Errorf("%w with 3 bets; batch adds bets 3..5", persist.ErrAlreadyFinished),
	"mismatch": fmt.Errorf("%w: says 7 bets, server holds 6", persist.ErrTotalMismatch),
	"storage":  fmt.Errorf("%w: write bets.csv: no space left on device", persist.ErrBroken),
	"stale":    fmt.Errorf("%w: agency 1", persist.ErrStale),
	"closed":   persist.ErrClosed,
}

// rawFrames are undecodable inputs a script can name.
var rawFrames = map[string][]byte{
	"malformed":   {frame.Version, byte(frame.TypeHello), 0, 2, 0, 1}, // HELLO payload of 2 bytes
	"badversion":  {1, byte(frame.TypeHello), 0, 4, 0, 0, 0, 1},       // the course's first protocol
	"unknowntype": {frame.Version, 0x7F, 0, 0},
	"toolarge":    {frame.Version, byte(frame.TypeBets), 0xFF, 0xFF},
}

// codeNamed returns the code whose name is name.
func codeNamed(t testing.TB, name string) frame.Code {
	t.Helper()
	for c := frame.Code(1); c < 64; c++ {
		if c.String() == name {
			return c
		}
	}
	t.Fatalf("no code named %q", name)
	return 0
}

// sessionScript steps one session through a script. A line is one of
//
//	<event> [args] => <output> ; <state> [busy] <wait>
//	observed => <observer calls since the last check, or ->
//	view status <agency> <held> <finished>   view count <n>   view draw
//	view winners <agency> <doc>...
//	limits [window=<n>] [secure]   (before the first event only)
//
// Events: hello <a>, ping <text>, pong <text>, bets <first> <n>,
// badbets <first> <n> <pos>, emptybets <first>, finished <total>, query,
// ack (a frame only the server sends), raw <name> (see rawFrames),
// stored <n> <held>, stored-err <name> <held> (see storeErrors),
// submit-failed <name>, drawn, replaced, timeout, flood, shutdown,
// auth <a>, plaintext, refused <code>, hangup.
//
// A stored event's chain is scriptChain(held). The state column is the state,
// "busy" when the window is full, and Wait(): none, hello, frame, idle, pong.
type sessionScript struct {
	t      *testing.T
	view   *fakeView
	limits Limits
	s      *Session
	logs   *observer.ObservedLogs
	obs    *recObserver
}

// runScript runs script against a fresh session over view with
// scriptLimits (a limits line may change them), and returns it for further
// checks.
func runScript(t *testing.T, view *fakeView, script string) *sessionScript {
	t.Helper()
	r := &sessionScript{t: t, view: view, limits: scriptLimits}
	r.run(script)
	return r
}

func (r *sessionScript) session() *Session {
	if r.s == nil {
		r.s, r.logs, r.obs = newTestSession(r.view, r.limits)
	}
	return r.s
}

func (r *sessionScript) run(script string) {
	t := r.t
	t.Helper()
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, want, isStep := strings.Cut(line, "=>")
		args := strings.Fields(cmd)
		switch {
		case !isStep && args[0] == "view":
			r.viewCommand(args)
			continue
		case !isStep && args[0] == "limits":
			r.limitsCommand(args)
			continue
		case !isStep:
			t.Fatalf("line %d %q: not a step, view or limits line", n+1, line)
		case args[0] == "observed":
			r.session()
			got := strings.Join(r.obs.take(), " ")
			if got == "" {
				got = "-"
			}
			if w := strings.Join(strings.Fields(want), " "); got != w {
				t.Errorf("line %d: observed\n %s\nwant\n %s", n+1, got, w)
			}
			if t.Failed() {
				return
			}
			continue
		}
		wantOut, wantState, _ := strings.Cut(want, ";")
		s := r.session()
		out := s.Step(r.event(args))
		got := describeOutput(out)
		if w := strings.Join(strings.Fields(wantOut), " "); got != w {
			t.Errorf("line %d %q:\n output %s\n want   %s", n+1, strings.TrimSpace(cmd), got, w)
		}
		if w := strings.Join(strings.Fields(wantState), " "); describeState(s) != w {
			t.Errorf("line %d %q: state %q, want %q", n+1, strings.TrimSpace(cmd), describeState(s), w)
		}
		if t.Failed() {
			return // later lines depend on this one
		}
	}
}

func (r *sessionScript) limitsCommand(args []string) {
	r.t.Helper()
	if r.s != nil {
		r.t.Fatalf("limits after the session started: %q", args)
	}
	for _, a := range args[1:] {
		switch {
		case a == "secure":
			r.limits.Secure = true
		case strings.HasPrefix(a, "window="):
			r.limits.Window = r.atoi(strings.TrimPrefix(a, "window="))
		default:
			r.t.Fatalf("unknown limit %q", a)
		}
	}
}

func (r *sessionScript) viewCommand(args []string) {
	r.t.Helper()
	v := r.view
	switch args[1] {
	case "status":
		a := uint32(r.atoi(args[2]))
		v.held[a] = uint64(r.atoi(args[3]))
		v.finished[a] = args[4] == "true"
	case "count":
		v.count = r.atoi(args[2])
	case "draw":
		v.drawn = true
	case "winners":
		v.winners[uint32(r.atoi(args[2]))] = args[3:]
	default:
		r.t.Fatalf("unknown view command %q", args)
	}
}

func (r *sessionScript) event(args []string) Event {
	t := r.t
	t.Helper()
	arg := func(i int) int {
		if i >= len(args) {
			t.Fatalf("event %q needs argument %d", args, i)
		}
		return r.atoi(args[i])
	}
	switch args[0] {
	case "hello":
		return received(t, &frame.Hello{Agency: uint32(arg(1))})
	case "ping":
		return received(t, &frame.Ping{Payload: []byte(args[1])})
	case "pong":
		return received(t, &frame.Pong{Payload: []byte(args[1])})
	case "bets":
		return received(t, &frame.Bets{First: uint64(arg(1)), Bets: sessionBets(uint64(arg(1)), arg(2))})
	case "badbets":
		bets := sessionBets(uint64(arg(1)), arg(2))
		bets[arg(3)].Document = "12a45"
		return received(t, &frame.Bets{First: uint64(arg(1)), Bets: bets})
	case "emptybets":
		return received(t, &frame.Bets{First: uint64(arg(1))})
	case "finished":
		return received(t, &frame.Finished{Total: uint64(arg(1))})
	case "query":
		return received(t, &frame.QueryWinners{})
	case "ack":
		return received(t, &frame.Ack{First: 0, Count: 1, Held: 1})
	case "raw":
		b, ok := rawFrames[args[1]]
		if !ok {
			t.Fatalf("unknown raw frame %q", args[1])
		}
		return receivedRaw(t, b)
	case "stored":
		held := uint64(arg(2))
		return Stored{Result: persist.Result{Stored: arg(1), Held: held, Chain: scriptChain(held)}}
	case "stored-err":
		err, ok := storeErrors[args[1]]
		if !ok {
			t.Fatalf("unknown store error %q", args[1])
		}
		return Stored{Result: persist.Result{Held: uint64(arg(2)), Err: err}}
	case "submit-failed":
		err, ok := storeErrors[args[1]]
		if !ok {
			t.Fatalf("unknown store error %q", args[1])
		}
		return SubmitFailed{Err: err}
	case "drawn":
		return Drawn{}
	case "replaced":
		return Replaced{}
	case "timeout":
		return TimedOut{}
	case "flood":
		return Flooded{Reason: "70000 unread bytes piled up"}
	case "shutdown":
		return ShuttingDown{}
	case "auth":
		return Authenticated{Agency: uint32(arg(1))}
	case "plaintext":
		return Plaintext{}
	case "refused":
		return Refused{Code: codeNamed(t, args[1]), Reason: "refused by the transport"}
	case "refused-quietly":
		return Refused{Code: codeNamed(t, args[1]), Reason: "refused by the transport", Quiet: true}
	case "hangup":
		return Hangup{}
	}
	t.Fatalf("unknown event %q", args)
	return nil
}

func (r *sessionScript) atoi(s string) int {
	r.t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		r.t.Fatalf("bad number %q in script", s)
	}
	return n
}
