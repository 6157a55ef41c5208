package eventserver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
)

// fakeView is a View whose answers a test sets directly.
type fakeView struct {
	agencies int
	held     map[uint32]uint64
	finished map[uint32]bool
	count    int // FinishedCount
	drawn    bool
	winners  map[uint32][]string
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

func (v *fakeView) Status(agency uint32) (uint64, bool) { return v.held[agency], v.finished[agency] }

func (v *fakeView) Winners(agency uint32) ([]string, bool) {
	if !v.drawn {
		return nil, false
	}
	return v.winners[agency], true
}

func (v *fakeView) FinishedCount() int { return v.count }

// newTestSession returns a session over view whose log lines, debug ones
// included, are observed.
func newTestSession(view View) (*Session, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return NewSession(view, zap.New(core), time.Second), logs
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
// left out (they are sentences for people), codes and indexes are kept.
func describeFrame(f frame.Frame) string {
	switch f := f.(type) {
	case *frame.Welcome:
		return fmt.Sprintf("WELCOME(held=%d,finished=%t)", f.Held, f.Finished)
	case *frame.Ack:
		return fmt.Sprintf("ACK(%d+%d)", f.First, f.Count)
	case *frame.Reject:
		return fmt.Sprintf("REJECT(%s@%d)", f.Code, f.Index)
	case *frame.Error:
		return fmt.Sprintf("ERROR(%s)", f.Code)
	case *frame.NotReady:
		return fmt.Sprintf("NOT_READY(%d/%d,retry=%v)", f.Finished, f.Agencies, f.RetryAfter)
	case *frame.Winners:
		last := ""
		if f.Last {
			last = ",last"
		}
		if len(f.Documents) > 4 {
			return fmt.Sprintf("WINNERS(n=%d%s)", len(f.Documents), last)
		}
		return fmt.Sprintf("WINNERS([%s]%s)", strings.Join(f.Documents, " "), last)
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

func describeState(s *Session) string {
	if s.Busy() {
		return s.State().String() + " busy"
	}
	return s.State().String()
}

// storeErrors are the store's answers a script can name.
var storeErrors = map[string]error{
	"gap":      fmt.Errorf("%w: batch starts at bet 9, server holds 3", persist.ErrIndexGap),
	"finished": fmt.Errorf("%w with 3 bets; batch adds bets 3..5", persist.ErrAlreadyFinished),
	"mismatch": fmt.Errorf("%w: says 7 bets, server holds 6", persist.ErrTotalMismatch),
	"storage":  fmt.Errorf("%w: write bets.csv: no space left on device", persist.ErrBroken),
	"busy":     persist.ErrBusy,
	"closed":   persist.ErrClosed,
}

// rawFrames are undecodable inputs a script can name.
var rawFrames = map[string][]byte{
	"malformed":   {frame.Version, byte(frame.TypeHello), 0, 2, 0, 1}, // HELLO payload of 2 bytes
	"badversion":  {9, byte(frame.TypeHello), 0, 4, 0, 0, 0, 1},
	"unknowntype": {frame.Version, 0x7F, 0, 0},
	"toolarge":    {frame.Version, byte(frame.TypeBets), 0xFF, 0xFF},
}

// runScript feeds a session the events of script and checks every output
// and the state after it, in the style of a data-driven test. A line is
//
//	<event> [args] => <output> ; <state>
//
// or a view command (no "=>") that changes what the fake view answers:
//
//	view status <agency> <held> <finished>   view count <n>   view draw
//	view winners <agency> <doc>...
//
// Events: hello <a>, ping <text>, bets <first> <n>, badbets <first> <n> <pos>,
// emptybets <first>, finished <total>, query, raw <name> (see rawFrames),
// stored <n> <held>, stored-err <name> <held> (see storeErrors), drawn,
// replaced, timeout, flood <bytes>, shutdown.
func runScript(t *testing.T, view *fakeView, script string) {
	t.Helper()
	s, _ := newTestSession(view)
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, want, isStep := strings.Cut(line, "=>")
		args := strings.Fields(cmd)
		if !isStep {
			applyViewCommand(t, view, args)
			continue
		}
		wantOut, wantState, _ := strings.Cut(want, ";")
		ev := scriptEvent(t, args)
		out := s.Step(ev)
		got := describeOutput(out)
		if w := strings.TrimSpace(wantOut); got != w {
			t.Errorf("line %d %q:\n output %s\n want   %s", n+1, strings.TrimSpace(cmd), got, w)
		}
		if w := strings.TrimSpace(wantState); describeState(s) != w {
			t.Errorf("line %d %q: state %q, want %q", n+1, strings.TrimSpace(cmd), describeState(s), w)
		}
		if t.Failed() {
			return // later lines depend on this one
		}
	}
}

func applyViewCommand(t *testing.T, v *fakeView, args []string) {
	t.Helper()
	if len(args) < 2 || args[0] != "view" {
		t.Fatalf("bad view command %q", args)
	}
	switch args[1] {
	case "status":
		a := uint32(atoi(t, args[2]))
		v.held[a] = uint64(atoi(t, args[3]))
		v.finished[a] = args[4] == "true"
	case "count":
		v.count = atoi(t, args[2])
	case "draw":
		v.drawn = true
	case "winners":
		v.winners[uint32(atoi(t, args[2]))] = args[3:]
	default:
		t.Fatalf("unknown view command %q", args)
	}
}

func scriptEvent(t *testing.T, args []string) Event {
	t.Helper()
	arg := func(i int) int { return atoi(t, args[i]) }
	switch args[0] {
	case "hello":
		return received(t, &frame.Hello{Agency: uint32(arg(1))})
	case "ping":
		return received(t, &frame.Ping{Payload: []byte(args[1])})
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
	case "raw":
		b, ok := rawFrames[args[1]]
		if !ok {
			t.Fatalf("unknown raw frame %q", args[1])
		}
		return receivedRaw(t, b)
	case "stored":
		return Stored{Result: persist.Result{Stored: arg(1), Held: uint64(arg(2))}}
	case "stored-err":
		err, ok := storeErrors[args[1]]
		if !ok {
			t.Fatalf("unknown store error %q", args[1])
		}
		return Stored{Result: persist.Result{Held: uint64(arg(2)), Err: err}}
	case "drawn":
		return Drawn{}
	case "replaced":
		return Replaced{}
	case "timeout":
		return TimedOut{}
	case "flood":
		return Flooded{Buffered: arg(1)}
	case "shutdown":
		return ShuttingDown{}
	}
	t.Fatalf("unknown event %q", args)
	return nil
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("bad number %q in script", s)
	}
	return n
}

// TestSessionTransitions walks every transition of the session's state
// machine, one short script per case, over a fake view of 5 agencies.
func TestSessionTransitions(t *testing.T) {
	tests := []struct {
		name   string
		script string
	}{
		{"hello opens the agency's session", `
			hello 1 => register=1 WELCOME(held=0,finished=false) ; uploading`},
		{"hello reports what the store holds", `
			view status 3 7 true
			hello 3 => register=3 WELCOME(held=7,finished=true) ; uploading`},
		{"hello for the last agency", `
			hello 5 => register=5 WELCOME(held=0,finished=false) ; uploading`},
		{"hello for agency 0", `
			hello 0 => ERROR(unknown_agency) close ; closed`},
		{"hello for agency N+1", `
			hello 6 => ERROR(unknown_agency) close ; closed`},
		{"nothing happens after close", `
			hello 6    => ERROR(unknown_agency) close ; closed
			hello 1    => - ; closed
			ping x     => - ; closed
			shutdown   => - ; closed
			stored 1 1 => - ; closed`},
		{"ping before hello", `
			ping abc => PONG(abc) ; awaiting_hello
			hello 2  => register=2 WELCOME(held=0,finished=false) ; uploading`},
		{"ping in every state", `
			ping a     => PONG(a) ; awaiting_hello
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			ping b     => PONG(b) ; uploading
			finished 0 => request=finish(a=1,total=0) ; uploading busy
			stored 0 0 => NOT_READY(0/5,retry=1s) ; waiting
			ping c     => PONG(c) ; waiting
			view draw
			drawn      => WINNERS([],last) ; winners_sent
			ping d     => PONG(d) ; winners_sent`},
		{"bets before hello", `
			bets 0 3 => ERROR(unexpected_frame) close ; closed`},
		{"finished before hello", `
			finished 0 => ERROR(unexpected_frame) close ; closed`},
		{"query before hello", `
			query => ERROR(unexpected_frame) close ; closed`},
		{"hello twice", `
			hello 1 => register=1 WELCOME(held=0,finished=false) ; uploading
			hello 1 => ERROR(unexpected_frame) close ; closed`},
		{"bets are requested and acknowledged", `
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 0 3   => request=bets(a=1,0+3) ; uploading busy
			stored 3 3 => ACK(0+3) ; uploading
			bets 3 2   => request=bets(a=1,3+2) ; uploading busy
			stored 2 5 => ACK(3+2) ; uploading`},
		{"a replayed batch is acknowledged", `
			view status 1 5 false
			hello 1    => register=1 WELCOME(held=5,finished=false) ; uploading
			bets 0 3   => request=bets(a=1,0+3) ; uploading busy
			stored 0 5 => ACK(0+3) ; uploading`},
		{"a frame while busy ends the session", `
			hello 1  => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 0 3 => request=bets(a=1,0+3) ; uploading busy
			ping x   => ERROR(unexpected_frame) close ; closed busy`},
		{"an invalid bet rejects the batch at its stream index", `
			view status 1 10 false
			hello 1         => register=1 WELCOME(held=10,finished=false) ; uploading
			badbets 10 4 2  => REJECT(invalid_bet@12) ; uploading
			badbets 10 4 0  => REJECT(invalid_bet@10) ; uploading
			bets 10 4       => request=bets(a=1,10+4) ; uploading busy`},
		{"an empty batch is rejected", `
			hello 1     => register=1 WELCOME(held=0,finished=false) ; uploading
			emptybets 4 => REJECT(malformed@4) ; uploading`},
		{"index gap", `
			hello 1            => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 9 2           => request=bets(a=1,9+2) ; uploading busy
			stored-err gap 3   => REJECT(index_gap@3) ; uploading`},
		{"bets after the agency finished", `
			view status 1 3 true
			hello 1                => register=1 WELCOME(held=3,finished=true) ; uploading
			bets 3 3               => request=bets(a=1,3+3) ; uploading busy
			stored-err finished 3  => REJECT(already_finished@3) ; uploading`},
		{"storage failure", `
			hello 1              => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 0 3             => request=bets(a=1,0+3) ; uploading busy
			stored-err storage 0 => ERROR(storage) close ; closed`},
		{"store queue full", `
			hello 1           => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 0 3          => request=bets(a=1,0+3) ; uploading busy
			stored-err busy 0 => ERROR(busy) close ; closed`},
		{"store closed", `
			hello 1             => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 0 3            => request=bets(a=1,0+3) ; uploading busy
			stored-err closed 0 => ERROR(shutting_down) close ; closed`},
		{"finished before the draw", `
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 0 6   => request=bets(a=1,0+6) ; uploading busy
			stored 6 6 => ACK(0+6) ; uploading
			finished 6 => request=finish(a=1,total=6) ; uploading busy
			view count 2
			stored 0 6 => NOT_READY(2/5,retry=1s) ; waiting`},
		{"finished after the draw", `
			view status 1 6 false
			hello 1    => register=1 WELCOME(held=6,finished=false) ; uploading
			finished 6 => request=finish(a=1,total=6) ; uploading busy
			view count 5
			view winners 1 30000004 30000001
			view draw
			stored 0 6 => WINNERS([30000004 30000001],last) ; winners_sent`},
		{"finished twice in one session", `
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			finished 0 => request=finish(a=1,total=0) ; uploading busy
			stored 0 0 => NOT_READY(0/5,retry=1s) ; waiting
			finished 0 => ERROR(already_finished) close ; closed`},
		{"finished twice after the winners", `
			view draw
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			finished 0 => request=finish(a=1,total=0) ; uploading busy
			stored 0 0 => WINNERS([],last) ; winners_sent
			finished 0 => ERROR(already_finished) close ; closed`},
		{"finished with the wrong total", `
			hello 1               => register=1 WELCOME(held=0,finished=false) ; uploading
			finished 7            => request=finish(a=1,total=7) ; uploading busy
			stored-err mismatch 6 => ERROR(total_mismatch) close ; closed`},
		{"finished fails in storage", `
			hello 1              => register=1 WELCOME(held=0,finished=false) ; uploading
			finished 0           => request=finish(a=1,total=0) ; uploading busy
			stored-err storage 0 => ERROR(storage) close ; closed`},
		{"bets while waiting", `
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			finished 0 => request=finish(a=1,total=0) ; uploading busy
			stored 0 0 => NOT_READY(0/5,retry=1s) ; waiting
			bets 0 1   => ERROR(unexpected_frame) close ; closed`},
		{"drawn pushes the winners to a waiting session", `
			hello 2    => register=2 WELCOME(held=0,finished=false) ; uploading
			finished 0 => request=finish(a=2,total=0) ; uploading busy
			view count 4
			stored 0 0 => NOT_READY(4/5,retry=1s) ; waiting
			view winners 2 20000001 20000001 20000002
			view draw
			drawn      => WINNERS([20000001 20000001 20000002],last) ; winners_sent
			drawn      => - ; winners_sent`},
		{"drawn is ignored by a session that did not ask", `
			drawn   => - ; awaiting_hello
			hello 1 => register=1 WELCOME(held=0,finished=false) ; uploading
			view draw
			drawn   => - ; uploading`},
		{"drawn waits for the answer in flight", `
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			finished 0 => request=finish(a=1,total=0) ; uploading busy
			view draw
			drawn      => - ; uploading busy
			stored 0 0 => WINNERS([],last) ; winners_sent`},
		{"query before the draw, then drawn", `
			hello 3 => register=3 WELCOME(held=0,finished=false) ; uploading
			view count 1
			query   => NOT_READY(1/5,retry=1s) ; uploading
			view winners 3 44
			view draw
			drawn   => WINNERS([44],last) ; winners_sent
			query   => WINNERS([44],last) ; winners_sent`},
		{"query after the draw", `
			view status 3 2 true
			view draw
			view winners 3 44 45
			hello 3 => register=3 WELCOME(held=2,finished=true) ; uploading
			query   => WINNERS([44 45],last) ; winners_sent`},
		{"replaced", `
			hello 1  => register=1 WELCOME(held=0,finished=false) ; uploading
			replaced => ERROR(replaced) close ; closed`},
		{"replaced while busy", `
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 0 1   => request=bets(a=1,0+1) ; uploading busy
			replaced   => ERROR(replaced) close ; closed busy
			stored 1 1 => - ; closed busy`},
		{"timed out before hello", `
			timeout => ERROR(timeout) close ; closed`},
		{"timed out uploading", `
			hello 1 => register=1 WELCOME(held=0,finished=false) ; uploading
			timeout => ERROR(timeout) close ; closed`},
		{"flooded", `
			hello 1      => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 0 1     => request=bets(a=1,0+1) ; uploading busy
			flood 70000  => ERROR(flood) close ; closed busy`},
		{"shutting down before hello", `
			shutdown => ERROR(shutting_down) close ; closed`},
		{"shutting down idle", `
			hello 1  => register=1 WELCOME(held=0,finished=false) ; uploading
			shutdown => ERROR(shutting_down) close ; closed`},
		{"shutting down while waiting", `
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			finished 0 => request=finish(a=1,total=0) ; uploading busy
			stored 0 0 => NOT_READY(0/5,retry=1s) ; waiting
			shutdown   => ERROR(shutting_down) close ; closed`},
		{"shutting down while busy finishes the batch first", `
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 0 3   => request=bets(a=1,0+3) ; uploading busy
			shutdown   => - ; uploading busy
			stored 3 3 => ACK(0+3) ERROR(shutting_down) close ; closed`},
		{"shutting down while a batch is refused", `
			hello 1          => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 5 3         => request=bets(a=1,5+3) ; uploading busy
			shutdown         => - ; uploading busy
			stored-err gap 0 => REJECT(index_gap@0) ERROR(shutting_down) close ; closed`},
		{"shutting down while the batch fails", `
			hello 1              => register=1 WELCOME(held=0,finished=false) ; uploading
			bets 0 3             => request=bets(a=1,0+3) ; uploading busy
			shutdown             => - ; uploading busy
			stored-err storage 0 => ERROR(storage) close ; closed`},
		{"shutting down while finishing", `
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			finished 0 => request=finish(a=1,total=0) ; uploading busy
			shutdown   => - ; uploading busy
			stored 0 0 => NOT_READY(0/5,retry=1s) ERROR(shutting_down) close ; closed`},
		{"an answer nobody waits for", `
			hello 1    => register=1 WELCOME(held=0,finished=false) ; uploading
			stored 3 3 => - ; uploading`},
		{"malformed frame", `
			raw malformed => ERROR(malformed) close ; closed`},
		{"unsupported version", `
			hello 1        => register=1 WELCOME(held=0,finished=false) ; uploading
			raw badversion => ERROR(bad_version) close ; closed`},
		{"unknown frame type", `
			raw unknowntype => ERROR(unknown_type) close ; closed`},
		{"frame over the size limit", `
			raw toolarge => ERROR(too_large) close ; closed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runScript(t, newFakeView(5), tt.script)
		})
	}
}

// TestSessionScript is one agency's whole life, golden style: upload with a
// refused batch and a gap, a replay, FINISHED, NOT_READY, the push, queries.
func TestSessionScript(t *testing.T) {
	runScript(t, newFakeView(5), `
		# connect, check the server is alive, say hello
		ping hi               => PONG(hi) ; awaiting_hello
		hello 4               => register=4 WELCOME(held=0,finished=false) ; uploading

		# two batches stored
		bets 0 3              => request=bets(a=4,0+3) ; uploading busy
		stored 3 3            => ACK(0+3) ; uploading
		bets 3 3              => request=bets(a=4,3+3) ; uploading busy
		stored 3 6            => ACK(3+3) ; uploading

		# an invalid bet: nothing is requested, the agency fixes it
		badbets 6 3 1         => REJECT(invalid_bet@7) ; uploading
		bets 6 3              => request=bets(a=4,6+3) ; uploading busy
		stored 3 9            => ACK(6+3) ; uploading

		# a gap, then a replay of something already held
		bets 12 1             => request=bets(a=4,12+1) ; uploading busy
		stored-err gap 9      => REJECT(index_gap@9) ; uploading
		bets 6 3              => request=bets(a=4,6+3) ; uploading busy
		stored 0 9            => ACK(6+3) ; uploading

		# asking early is allowed and subscribes
		view count 3
		query                 => NOT_READY(3/5,retry=1s) ; uploading

		# finish with the right total
		finished 9            => request=finish(a=4,total=9) ; uploading busy
		view count 4
		stored 0 9            => NOT_READY(4/5,retry=1s) ; waiting
		ping still-there      => PONG(still-there) ; waiting
		query                 => NOT_READY(4/5,retry=1s) ; waiting

		# the last agency finishes elsewhere; the draw is pushed once
		view count 5
		view winners 4 30000002 30000002 30000008
		view draw
		drawn                 => WINNERS([30000002 30000002 30000008],last) ; winners_sent
		drawn                 => - ; winners_sent
		query                 => WINNERS([30000002 30000002 30000008],last) ; winners_sent

		# the server drains
		shutdown              => ERROR(shutting_down) close ; closed
		query                 => - ; closed
	`)
}

// TestSessionRequestCarriesTheBatch checks the request holds the decoded
// bets, and that the ACK counts them.
func TestSessionRequestCarriesTheBatch(t *testing.T) {
	s, _ := newTestSession(newFakeView(5))
	s.Step(received(t, &frame.Hello{Agency: 2}))
	sent := sessionBets(0, 5)
	out := s.Step(received(t, &frame.Bets{First: 0, Bets: sent}))
	if out.Request == nil {
		t.Fatalf("BETS gave %s, want a request", describeOutput(out))
	}
	if !s.Busy() || s.ExpectsInput() {
		t.Errorf("after BETS: Busy %t ExpectsInput %t, want true and false", s.Busy(), s.ExpectsInput())
	}
	if out.Request.Agency != 2 || out.Request.First != 0 || out.Request.Finish {
		t.Errorf("request %+v, want agency 2 first 0 not finish", out.Request)
	}
	if !reflect.DeepEqual(out.Request.Bets, sent) {
		t.Errorf("request bets %+v\nwant %+v", out.Request.Bets, sent)
	}
	out = s.Step(Stored{Result: persist.Result{Stored: 5, Held: 5}})
	if got := describeOutput(out); got != "ACK(0+5)" {
		t.Errorf("stored gave %s, want ACK(0+5)", got)
	}
	if s.Busy() || !s.ExpectsInput() {
		t.Errorf("after ACK: Busy %t ExpectsInput %t, want false and true", s.Busy(), s.ExpectsInput())
	}
}

// TestSessionExpectsInput checks when the read timeout applies: while the
// peer owes a frame, not while it waits for the draw.
func TestSessionExpectsInput(t *testing.T) {
	v := newFakeView(5)
	s, _ := newTestSession(v)
	check := func(when string, want bool) {
		t.Helper()
		if got := s.ExpectsInput(); got != want {
			t.Errorf("%s (%s): ExpectsInput %t, want %t", when, s.State(), got, want)
		}
	}
	check("new", true)
	s.Step(received(t, &frame.Hello{Agency: 1}))
	check("after hello", true)
	s.Step(received(t, &frame.Finished{Total: 0}))
	check("finish in flight", false)
	s.Step(Stored{Result: persist.Result{}})
	check("waiting for the draw", false)
	v.drawn = true
	s.Step(Drawn{})
	check("winners sent", false)
	s.Step(ShuttingDown{})
	check("closed", false)
}

// TestSessionWinnersChunks checks a long winners list is split into frames
// that each fit, in order, with only the last marked.
func TestSessionWinnersChunks(t *testing.T) {
	v := newFakeView(1)
	docs := make([]string, 2000)
	for i := range docs {
		docs[i] = strconv.Itoa(1000000000 + i)
	}
	v.winners[1] = docs
	v.drawn = true
	s, _ := newTestSession(v)
	s.Step(received(t, &frame.Hello{Agency: 1}))
	out := s.Step(received(t, &frame.QueryWinners{}))
	if len(out.Send) < 2 {
		t.Fatalf("%d documents sent in %d frames, want several", len(docs), len(out.Send))
	}
	var got []string
	for i, f := range out.Send {
		w, ok := f.(*frame.Winners)
		if !ok {
			t.Fatalf("frame %d is %s, want WINNERS", i, f.Type())
		}
		if w.Last != (i == len(out.Send)-1) {
			t.Errorf("frame %d of %d has Last %t", i, len(out.Send), w.Last)
		}
		b, err := frame.Encode(w)
		if err != nil {
			t.Fatalf("frame %d does not encode: %v", i, err)
		}
		if len(b) > frame.MaxSize {
			t.Errorf("frame %d is %d bytes, limit %d", i, len(b), frame.MaxSize)
		}
		got = append(got, w.Documents...)
	}
	if !reflect.DeepEqual(got, docs) {
		t.Errorf("documents across chunks differ from the winners (%d vs %d)", len(got), len(docs))
	}
	if s.State() != WinnersSent {
		t.Errorf("state %s, want winners_sent", s.State())
	}
}

// logLine is what a test checks of one observed entry.
type logLine struct {
	level   zapcore.Level
	message string
	fields  map[string]any
}

func logLines(logs *observer.ObservedLogs, message string) []logLine {
	var out []logLine
	for _, e := range logs.FilterMessage(message).All() {
		out = append(out, logLine{level: e.Level, message: e.Message, fields: e.ContextMap()})
	}
	return out
}

// checkFields fails unless every field in want has that value in line.
func checkFields(t *testing.T, line logLine, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got, ok := line.fields[k]; !ok || !reflect.DeepEqual(got, v) {
			t.Errorf("%s line: field %s = %#v, want %#v (fields %v)", line.message, k, got, v, line.fields)
		}
	}
}

// TestSessionBetLogs checks the contract lines about bets: one
// apuesta_recibida per batch, success or fail with its size, and one DEBUG
// apuesta_almacenada per newly stored bet.
func TestSessionBetLogs(t *testing.T) {
	t.Run("stored batch", func(t *testing.T) {
		s, logs := newTestSession(newFakeView(5))
		s.Step(received(t, &frame.Hello{Agency: 1}))
		bets := sessionBets(0, 3)
		s.Step(received(t, &frame.Bets{First: 0, Bets: bets}))
		if n := logs.FilterMessage("apuesta_recibida").Len(); n != 0 {
			t.Fatalf("apuesta_recibida logged %d times before the store answered", n)
		}
		s.Step(Stored{Result: persist.Result{Stored: 3, Held: 3}})
		got := logLines(logs, "apuesta_recibida")
		if len(got) != 1 {
			t.Fatalf("apuesta_recibida logged %d times, want 1", len(got))
		}
		if got[0].level != zapcore.InfoLevel {
			t.Errorf("apuesta_recibida at %s, want INFO", got[0].level)
		}
		checkFields(t, got[0], map[string]any{"result": "success", "cantidad": int64(3)})
		stored := logLines(logs, "apuesta_almacenada")
		if len(stored) != len(bets) {
			t.Fatalf("apuesta_almacenada logged %d times, want %d", len(stored), len(bets))
		}
		for i, line := range stored {
			if line.level != zapcore.DebugLevel {
				t.Errorf("apuesta_almacenada at %s, want DEBUG", line.level)
			}
			checkFields(t, line, map[string]any{"result": "success", "dni": bets[i].Document, "numero": bets[i].Number})
		}
	})
	t.Run("partly held batch logs only the new bets", func(t *testing.T) {
		s, logs := newTestSession(newFakeView(5))
		s.Step(received(t, &frame.Hello{Agency: 1}))
		bets := sessionBets(0, 4)
		s.Step(received(t, &frame.Bets{First: 0, Bets: bets}))
		s.Step(Stored{Result: persist.Result{Stored: 1, Held: 4}})
		checkFields(t, logLines(logs, "apuesta_recibida")[0], map[string]any{"result": "success", "cantidad": int64(4)})
		stored := logLines(logs, "apuesta_almacenada")
		if len(stored) != 1 {
			t.Fatalf("apuesta_almacenada logged %d times, want 1 (the only new bet)", len(stored))
		}
		checkFields(t, stored[0], map[string]any{"dni": bets[3].Document, "numero": bets[3].Number})
	})
	t.Run("replayed batch stores nothing", func(t *testing.T) {
		s, logs := newTestSession(newFakeView(5))
		s.Step(received(t, &frame.Hello{Agency: 1}))
		s.Step(received(t, &frame.Bets{First: 0, Bets: sessionBets(0, 2)}))
		s.Step(Stored{Result: persist.Result{Stored: 0, Held: 2}})
		if n := logs.FilterMessage("apuesta_almacenada").Len(); n != 0 {
			t.Errorf("apuesta_almacenada logged %d times for a replay, want 0", n)
		}
	})
	t.Run("invalid bet", func(t *testing.T) {
		s, logs := newTestSession(newFakeView(5))
		s.Step(received(t, &frame.Hello{Agency: 1}))
		bets := sessionBets(0, 5)
		bets[4].Number = 10000
		s.Step(received(t, &frame.Bets{First: 0, Bets: bets}))
		got := logLines(logs, "apuesta_recibida")
		if len(got) != 1 {
			t.Fatalf("apuesta_recibida logged %d times, want 1", len(got))
		}
		checkFields(t, got[0], map[string]any{"result": "fail", "cantidad": int64(5)})
		if n := logs.FilterMessage("apuesta_almacenada").Len(); n != 0 {
			t.Errorf("apuesta_almacenada logged %d times for a refused batch", n)
		}
	})
	for _, refusal := range []string{"gap", "finished"} {
		t.Run("refused by the store: "+refusal, func(t *testing.T) {
			s, logs := newTestSession(newFakeView(5))
			s.Step(received(t, &frame.Hello{Agency: 1}))
			s.Step(received(t, &frame.Bets{First: 7, Bets: sessionBets(7, 2)}))
			s.Step(Stored{Result: persist.Result{Held: 3, Err: storeErrors[refusal]}})
			got := logLines(logs, "apuesta_recibida")
			if len(got) != 1 {
				t.Fatalf("apuesta_recibida logged %d times, want 1", len(got))
			}
			checkFields(t, got[0], map[string]any{"result": "fail", "cantidad": int64(2)})
			if n := logs.FilterMessage("apuesta_almacenada").Len(); n != 0 {
				t.Errorf("apuesta_almacenada logged %d times for a refused batch", n)
			}
		})
	}
	t.Run("debug off", func(t *testing.T) {
		core, logs := observer.New(zap.InfoLevel)
		s := NewSession(newFakeView(5), zap.New(core), time.Second)
		s.Step(received(t, &frame.Hello{Agency: 1}))
		s.Step(received(t, &frame.Bets{First: 0, Bets: sessionBets(0, 2)}))
		s.Step(Stored{Result: persist.Result{Stored: 2, Held: 2}})
		if logs.FilterMessage("apuesta_recibida").Len() != 1 || logs.FilterMessage("apuesta_almacenada").Len() != 0 {
			t.Errorf("at INFO: %d apuesta_recibida and %d apuesta_almacenada, want 1 and 0",
				logs.FilterMessage("apuesta_recibida").Len(), logs.FilterMessage("apuesta_almacenada").Len())
		}
	})
}

// TestSessionLogResults checks every line a session writes uses one of the
// contract's three result words.
func TestSessionLogResults(t *testing.T) {
	v := newFakeView(2)
	s, logs := newTestSession(v)
	for _, ev := range []Event{
		received(t, &frame.Hello{Agency: 1}),
		received(t, &frame.Bets{First: 0, Bets: sessionBets(0, 2)}),
		Stored{Result: persist.Result{Stored: 2, Held: 2}},
		received(t, &frame.Finished{Total: 2}),
		Stored{Result: persist.Result{Held: 2}},
		Replaced{},
	} {
		s.Step(ev)
	}
	s2, logs2 := newTestSession(v)
	s2.Step(received(t, &frame.Hello{Agency: 9}))
	for _, e := range append(logs.All(), logs2.All()...) {
		r, _ := e.ContextMap()["result"].(string)
		if r != "success" && r != "fail" && r != "in_progress" {
			t.Errorf("%s line has result %q", e.Message, r)
		}
	}
}

// TestSessionUnknownEvent checks an event type the session does not know
// is a programming error, reported loudly.
func TestSessionUnknownEvent(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Step accepted an unknown event")
		}
	}()
	s, _ := newTestSession(newFakeView(1))
	s.Step(strangeEvent{})
}

type strangeEvent struct{}

func (strangeEvent) event() {}

// Found in review: a push must not be lost to a request in flight, and an
// invalid BETS where no BETS is allowed is a state error, not a bad frame.
func TestSessionReviewFixes(t *testing.T) {
	runScript(t, newFakeView(5), `
		hello 2               => register=2 WELCOME(held=0,finished=false) ; uploading
		bets 0 3              => request=bets(a=2,0+3) ; uploading busy
		stored 3 3            => ACK(0+3) ; uploading
		view count 4
		query                 => NOT_READY(4/5,retry=1s) ; uploading

		# a replay is in flight when the draw is pushed: the push waits for its answer
		bets 0 3              => request=bets(a=2,0+3) ; uploading busy
		view count 5
		view winners 2 30000001
		view draw
		drawn                 => - ; uploading busy
		stored 0 3            => ACK(0+3) WINNERS([30000001],last) ; winners_sent
		drawn                 => - ; winners_sent

		# BETS with a bad bet after the winners: the state is what is wrong
		badbets 3 2 0         => ERROR(unexpected_frame) close ; closed
	`)
}
