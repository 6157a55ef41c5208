package eventserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
)

// State is where a session is in the protocol.
type State uint8

// Session states.
const (
	AwaitingHello State = iota // connected, no HELLO yet
	Uploading                  // HELLO done, the agency's FINISHED is not on record
	Waiting                    // the agency's FINISHED is on record; the draw is pending
	WinnersSent                // the agency has its winners
	Closed                     // an ERROR was sent or the connection is closing
)

var stateNames = [...]string{"awaiting_hello", "uploading", "waiting", "winners_sent", "closed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state_%d", uint8(s))
}

// gauge is the state's label in the connections gauge; closed is not counted.
func (s State) gauge() string {
	if s >= Closed {
		return ""
	}
	return stateNames[s]
}

// View is what a session reads of the server-wide state.
type View interface {
	Agencies() int
	// Status is the agency's durable progress.
	Status(agency uint32) (held uint64, finished bool, chain frame.Hash)
	FinishedCount() int
	// Receipt is the signed receipt of an agency that finished with bets.
	Receipt(agency uint32, bets uint64, chain frame.Hash) *frame.Receipt
	// Winners returns the agency's winning documents and the commitment
	// (with the agency's proof) once the draw is done.
	Winners(agency uint32) (documents []string, commitment *frame.Commitment, drawn bool)
	// Window is the window to give an agency saying HELLO now, at most limit.
	Window(limit int) int
}

// Event is an input to Session.Step.
type Event interface{ event() }

// Received is a frame, or the error decoding it, from the peer.
type Received struct {
	Frame frame.Frame
	Err   error
}

// Stored is the store's answer to the oldest request the session emitted.
type Stored struct{ Result persist.Result }

// SubmitFailed says the store refused a request the session emitted.
type SubmitFailed struct{ Err error }

// Drawn says the draw has happened.
type Drawn struct{}

// Replaced says a newer connection took over the session's agency.
type Replaced struct{}

// TimedOut says the deadline the session asked for (Session.Wait) passed.
type TimedOut struct{}

// Flooded says the peer sent too much without reading, or stopped reading.
type Flooded struct{ Reason string }

// ShuttingDown asks the session to finish what is in flight and close.
type ShuttingDown struct{}

// Authenticated says the transport has proven the peer holds agency's key.
type Authenticated struct{ Agency uint32 }

// Plaintext says the peer of a secured server speaks without encryption:
// it may only PING.
type Plaintext struct{}

// Hangup says the connection is gone.
type Hangup struct{}

// Refused says the transport turned the peer away before any frame. A
// quiet refusal sends its ERROR without a line of its own: the server
// counts it in its connection_refused summary instead.
type Refused struct {
	Code   frame.Code
	Reason string
	Quiet  bool
}

func (Received) event()      {}
func (Stored) event()        {}
func (SubmitFailed) event()  {}
func (Drawn) event()         {}
func (Replaced) event()      {}
func (TimedOut) event()      {}
func (Flooded) event()       {}
func (ShuttingDown) event()  {}
func (Authenticated) event() {}
func (Plaintext) event()     {}
func (Hangup) event()        {}
func (Refused) event()       {}

// Output is what the caller must do after a step, in this order: register
// the agency, submit the request, send the frames, then close if asked.
type Output struct {
	Register uint32           // nonzero: this connection now speaks for the agency
	Request  *persist.Request // to submit; its result comes back as Stored
	Send     []frame.Frame
	Close    bool
}

// Wait is what a session waits for from its peer, which decides the
// deadline its connection arms.
type Wait uint8

// Kinds of Wait.
const (
	WaitNone  Wait = iota // the server owes answers, or the session is over
	WaitHello             // HELLO, within the hello timeout counted from the connection's start
	WaitFrame             // the next frame, within the read timeout counted from the last one
	WaitIdle              // nothing: an agency waiting for the draw; PING it after the ping interval
	WaitPong              // a PONG to the server's PING, within the read timeout
)

// Limits are the session's settings; WELCOME tells the agency most of them.
type Limits struct {
	Window       int           // most frames unanswered at once; the View may give an agency less
	MaxFrame     int           // largest frame accepted
	ReadTimeout  time.Duration // see Wait
	PingInterval time.Duration // see Wait
	RetryAfter   time.Duration // hint sent in NOT_READY
	Secure       bool          // HELLO must match the agency proven by the transport
}

// Observer is told what sessions do, for metrics; calls must not block.
type Observer interface {
	Batch(result string, bets int)
	FrameRejected(code frame.Code)
	ErrorSent(code frame.Code)
	ConnectionMoved(from, to string)
	ConnectionRefused(reason string)
	Handshake(ok bool, took time.Duration)
	AgenciesFinished(n int)
	Drawn(took time.Duration)
	WinnersSent(documents int)
}

type nopObserver struct{}

func (nopObserver) Batch(string, int)              {}
func (nopObserver) FrameRejected(frame.Code)       {}
func (nopObserver) ErrorSent(frame.Code)           {}
func (nopObserver) ConnectionMoved(string, string) {}
func (nopObserver) ConnectionRefused(string)       {}
func (nopObserver) Handshake(bool, time.Duration)  {}
func (nopObserver) AgenciesFinished(int)           {}
func (nopObserver) Drawn(time.Duration)            {}
func (nopObserver) WinnersSent(int)                {}

// observerOr is o, or an observer that does nothing when o is nil.
func observerOr(o Observer) Observer {
	if o == nil {
		return nopObserver{}
	}
	return o
}

// slot is one frame in the window, answered in the order received: a
// request waiting for the store, or a frame handled when it reaches the front.
type slot struct {
	req   *persist.Request
	frame frame.Frame
	send  []frame.Frame // an answer ready before the slot reaches the front (a REJECT)
}

// Session is the per-connection protocol state machine. It does no I/O: the
// caller feeds it events and carries out its outputs.
type Session struct {
	view   View
	log    *zap.Logger
	obs    Observer
	limits Limits

	state      State
	agency     uint32
	identity   uint32 // the agency the transport proved, 0 when none
	pingOnly   bool   // a plaintext peer of a secured server
	ring       []slot // answers owed, oldest first; at most Window
	subscribed bool   // asked for winners before the draw: push them
	draining   bool   // close once every owed answer is sent
	pinged     bool   // a liveness PING is unanswered
	pings      uint64
}

// NewSession returns a session awaiting HELLO.
func NewSession(view View, log *zap.Logger, obs Observer, limits Limits) *Session {
	s := &Session{view: view, log: log, obs: observerOr(obs), limits: limits}
	s.limits.Window = max(s.limits.Window, 1)
	s.obs.ConnectionMoved("", AwaitingHello.gauge())
	return s
}

// State is the session's current state.
func (s *Session) State() State { return s.state }

// Agency is the agency named in HELLO, or 0 before it.
func (s *Session) Agency() uint32 { return s.agency }

// Busy reports whether the window is full; while it is, the caller must not
// feed the session further frames (they wait in the connection buffer).
func (s *Session) Busy() bool { return len(s.ring) >= s.limits.Window }

// Window is how many frames the peer may have unanswered: the window its
// WELCOME announced, or one (its HELLO) before that.
func (s *Session) Window() int {
	if s.agency == 0 {
		return 1
	}
	return s.limits.Window
}

// Wait says what the session waits for from its peer.
func (s *Session) Wait() Wait {
	switch {
	case s.state == Closed || len(s.ring) > 0:
		return WaitNone
	case s.state == AwaitingHello:
		return WaitHello
	case s.pinged && s.state == Waiting: // once the winners are sent, liveness no longer matters
		return WaitPong
	case s.state == Waiting:
		return WaitIdle
	}
	return WaitFrame
}

func (s *Session) become(st State) {
	if st != s.state {
		s.obs.ConnectionMoved(s.state.gauge(), st.gauge())
		s.state = st
	}
}

// Step applies one event and returns what to do about it.
func (s *Session) Step(ev Event) Output {
	if s.state == Closed {
		return Output{}
	}
	switch ev := ev.(type) {
	case Received:
		if s.draining {
			// A header that does not parse consumed nothing: the stream cannot
			// go on. A frame read whole but malformed is dropped like the rest.
			if ev.Frame == nil && ev.Err != nil && decodeCode(ev.Err) != frame.CodeMalformed {
				return s.fail(decodeCode(ev.Err), ev.Err.Error())
			}
			return Output{} // nothing new is taken on: the peer resends it to the next server
		}
		return s.receive(ev.Frame, ev.Err)
	case Stored:
		return s.stored(ev.Result)
	case SubmitFailed:
		return s.fail(storeCode(ev.Err), "request not queued: "+ev.Err.Error())
	case Drawn:
		if s.subscribed && len(s.ring) == 0 {
			return Output{Send: s.winnersOrNotReady(nil)}
		}
		return Output{}
	case Replaced:
		s.log.Warn("connection_replaced", logging.Success, zap.Uint32("agency", s.agency))
		return s.fail(frame.CodeReplaced, "a newer connection for this agency took over")
	case TimedOut:
		return s.timedOut()
	case Flooded:
		return s.fail(frame.CodeFlood, ev.Reason)
	case ShuttingDown:
		if len(s.ring) > 0 {
			s.draining = true
			return Output{}
		}
		return s.fail(frame.CodeShuttingDown, "server is shutting down; retry later")
	case Authenticated:
		s.identity = ev.Agency
		return Output{}
	case Plaintext:
		s.pingOnly = true
		return Output{}
	case Hangup:
		s.become(Closed)
		return Output{}
	case Refused:
		if ev.Quiet {
			return s.end(ev.Code, ev.Reason)
		}
		return s.fail(ev.Code, ev.Reason)
	}
	panic(fmt.Sprintf("eventserver: unknown event %T", ev))
}

func (s *Session) timedOut() Output {
	switch s.Wait() {
	case WaitHello:
		return s.fail(frame.CodeTimeout, "no HELLO within the hello timeout")
	case WaitFrame:
		if s.state == WinnersSent {
			s.log.Debug("session_idle", logging.Success, zap.Uint32("agency", s.agency))
			s.become(Closed) // done: the agency should have hung up
			return Output{Close: true}
		}
		return s.fail(frame.CodeTimeout, "no complete frame within the read timeout")
	case WaitIdle:
		s.pinged, s.pings = true, s.pings+1
		return Output{Send: []frame.Frame{&frame.Ping{Payload: binary.BigEndian.AppendUint64(nil, s.pings)}}}
	case WaitPong:
		return s.fail(frame.CodeTimeout, "no PONG to the server's PING within the read timeout")
	}
	return Output{}
}

func (s *Session) receive(f frame.Frame, err error) Output {
	if err != nil {
		var fe *frame.FieldError
		if bets, ok := f.(*frame.Bets); ok && errors.As(err, &fe) && s.state != AwaitingHello && !s.pingOnly {
			s.log.Warn("apuesta_recibida", logging.Fail, zap.Int("cantidad", len(bets.Bets)),
				zap.Uint32("agency", s.agency), zap.Error(err))
			s.obs.Batch("rejected", len(bets.Bets))
			return s.enqueue(slot{send: s.reject(frame.CodeInvalidBet, bets.First+uint64(fe.Bet), err.Error())})
		}
		if f != nil && s.pingOnly {
			return s.secureRequired(f)
		}
		if f != nil {
			// A BETS with a bad bet where no BETS is allowed: the state is the problem.
			return s.fail(frame.CodeUnexpected, fmt.Sprintf("%s not allowed while %s", f.Type(), s.state))
		}
		return s.fail(decodeCode(err), err.Error())
	}
	switch f := f.(type) {
	case *frame.Pong:
		s.pinged = false // any PONG shows the peer is alive; unsolicited ones are ignored
		return Output{}
	case *frame.Ping:
		return s.enqueue(slot{frame: f})
	}
	if s.pingOnly {
		return s.secureRequired(f)
	}
	if s.state == AwaitingHello {
		if h, ok := f.(*frame.Hello); ok {
			return s.hello(h)
		}
		return s.fail(frame.CodeUnexpected, f.Type().String()+" before HELLO")
	}
	switch f := f.(type) {
	case *frame.Bets:
		if len(f.Bets) == 0 {
			s.log.Warn("apuesta_recibida", logging.Fail, zap.Int("cantidad", 0), zap.Uint32("agency", s.agency),
				zap.String("error", "empty batch"))
			s.obs.Batch("rejected", 0)
			return s.enqueue(slot{send: s.reject(frame.CodeMalformed, f.First, "batch has no bets")})
		}
		return s.enqueue(slot{req: &persist.Request{Agency: s.agency, First: f.First, Bets: f.Bets}})
	case *frame.Finished:
		return s.enqueue(slot{req: &persist.Request{Agency: s.agency, Finish: true, Total: f.Total}})
	case *frame.QueryWinners:
		return s.enqueue(slot{frame: f})
	}
	return s.fail(frame.CodeUnexpected, fmt.Sprintf("%s not allowed while %s", f.Type(), s.state))
}

// secureRequired ends the session of a plaintext peer that sent f, which is not a PING.
func (s *Session) secureRequired(f frame.Frame) Output {
	return s.fail(frame.CodeSecureRequired, fmt.Sprintf("%s sent without encryption; this server only "+
		"accepts agencies with keys (give the agency --key and --server-pub)", f.Type()))
}

// enqueue puts sl at the back of the window and answers what is ready at
// its front.
func (s *Session) enqueue(sl slot) Output {
	s.ring = append(s.ring, sl)
	out := s.flush()
	if sl.req != nil {
		out.Request = sl.req
	}
	return out
}

// flush answers the slots at the front of the window that need no store.
func (s *Session) flush() Output {
	var out Output
	for len(s.ring) > 0 && s.ring[0].req == nil {
		sl := s.ring[0]
		s.pop()
		if sl.frame != nil {
			out.Send = append(out.Send, s.handle(sl.frame)...)
		} else {
			out.Send = append(out.Send, sl.send...)
		}
	}
	if len(s.ring) == 0 {
		if s.subscribed && s.state != WinnersSent {
			if _, _, drawn := s.view.Winners(s.agency); drawn {
				out.Send = append(out.Send, s.winnersOrNotReady(nil)...) // the draw came while answers were owed
			}
		}
		if s.draining {
			closing := s.fail(frame.CodeShuttingDown, "server is shutting down; retry later")
			out.Send = append(out.Send, closing.Send...)
			out.Close = true
		}
	}
	return out
}

func (s *Session) pop() {
	s.ring[0] = slot{}
	s.ring = s.ring[1:]
	if len(s.ring) == 0 {
		s.ring = s.ring[:0:0] // let go of the backing array while idle
	}
}

// handle answers a frame that needs no store, once the answers owed before
// it are sent.
func (s *Session) handle(f frame.Frame) []frame.Frame {
	switch f := f.(type) {
	case *frame.Ping:
		return []frame.Frame{&frame.Pong{Payload: f.Payload}}
	case *frame.QueryWinners:
		return s.winnersOrNotReady(nil)
	}
	panic(fmt.Sprintf("eventserver: no handler for deferred %T", f))
}

func (s *Session) hello(h *frame.Hello) Output {
	n := s.view.Agencies()
	if h.Agency < 1 || int(h.Agency) > n {
		s.log.Warn("hello", logging.Fail, zap.Uint32("agency", h.Agency), zap.Int("agencies", n))
		return s.fail(frame.CodeUnknownAgency, fmt.Sprintf("agency %d is outside 1..%d", h.Agency, n))
	}
	if s.limits.Secure && h.Agency != s.identity {
		s.log.Warn("hello", logging.Fail, zap.Uint32("agency", h.Agency), zap.Uint32("key_agency", s.identity))
		return s.fail(frame.CodeWrongAgency, fmt.Sprintf("HELLO names agency %d but the connection's key is agency %d's",
			h.Agency, s.identity))
	}
	s.agency = h.Agency
	s.limits.Window = min(max(s.view.Window(s.limits.Window), 1), 0xFFFF) // what WELCOME can say
	held, finished, chain := s.view.Status(h.Agency)
	if finished {
		s.become(Waiting)
	} else {
		s.become(Uploading)
	}
	s.log.Info("hello", logging.Success, zap.Uint32("agency", h.Agency), zap.Uint64("held", held),
		zap.Bool("finished", finished))
	return Output{Register: h.Agency, Send: []frame.Frame{&frame.Welcome{
		Held: held, Finished: finished, Window: uint16(s.limits.Window),
		MaxFrame: uint16(s.limits.MaxFrame), ReadTimeout: s.limits.ReadTimeout, PingInterval: s.limits.PingInterval,
		Chain: chain,
	}}}
}

func (s *Session) stored(r persist.Result) Output {
	if len(s.ring) == 0 || s.ring[0].req == nil {
		panic("eventserver: a store answer with no request waiting for it")
	}
	req := s.ring[0].req
	s.pop()
	var answer Output
	if req.Finish {
		answer = s.finished(req, r)
	} else {
		answer = s.batchStored(req, r)
		frame.RecycleBets(req.Bets) // the store called Done: it is through with them, and so is this session
		req.Bets = nil
	}
	if answer.Close {
		return answer
	}
	out := s.flush()
	out.Send = append(answer.Send, out.Send...)
	return out
}

func (s *Session) batchStored(req *persist.Request, r persist.Result) Output {
	n := len(req.Bets)
	var unstorable *persist.BetError
	switch {
	case r.Err == nil:
		result := "stored"
		if r.Stored == 0 {
			result = "replay"
		}
		s.obs.Batch(result, n)
		s.log.Info("apuesta_recibida", logging.Success, zap.Int("cantidad", n),
			zap.Uint32("agency", s.agency), zap.Int("stored", r.Stored))
		if ce := s.log.Check(zap.DebugLevel, "apuesta_almacenada"); ce != nil {
			for _, b := range req.Bets[n-r.Stored:] {
				s.log.Debug("apuesta_almacenada", logging.Success, zap.String("dni", b.Document),
					zap.Uint16("numero", b.Number))
			}
		}
		return Output{Send: []frame.Frame{&frame.Ack{First: req.First, Count: uint16(n), Held: r.Held, Chain: r.Chain}}}
	case errors.Is(r.Err, persist.ErrIndexGap):
		s.obs.Batch("rejected", n)
		s.log.Warn("apuesta_recibida", logging.Fail, zap.Int("cantidad", n), zap.Uint32("agency", s.agency), zap.Error(r.Err))
		return Output{Send: s.reject(frame.CodeIndexGap, r.Held, r.Err.Error())}
	case errors.As(r.Err, &unstorable):
		s.obs.Batch("rejected", n)
		s.log.Warn("apuesta_recibida", logging.Fail, zap.Int("cantidad", n), zap.Uint32("agency", s.agency), zap.Error(r.Err))
		return Output{Send: s.reject(frame.CodeInvalidBet, unstorable.Index, r.Err.Error())}
	case errors.Is(r.Err, persist.ErrAlreadyFinished):
		s.obs.Batch("rejected", n)
		s.log.Warn("apuesta_recibida", logging.Fail, zap.Int("cantidad", n), zap.Uint32("agency", s.agency), zap.Error(r.Err))
		return Output{Send: s.reject(frame.CodeAlreadyFinished, r.Held, r.Err.Error())}
	}
	s.log.Error("apuesta_recibida", logging.Fail, zap.Int("cantidad", n), zap.Uint32("agency", s.agency), zap.Error(r.Err))
	return s.fail(storeCode(r.Err), "bets not stored: "+r.Err.Error())
}

func (s *Session) reject(code frame.Code, index uint64, reason string) []frame.Frame {
	s.obs.FrameRejected(code)
	return []frame.Frame{&frame.Reject{Code: code, Index: index, Reason: reason}}
}

func (s *Session) finished(req *persist.Request, r persist.Result) Output {
	if r.Err != nil { // the hub logs agency_finished, in the store's order
		if errors.Is(r.Err, persist.ErrTotalMismatch) {
			return s.fail(frame.CodeTotalMismatch, r.Err.Error())
		}
		return s.fail(storeCode(r.Err), "FINISHED not recorded: "+r.Err.Error())
	}
	if s.state == Uploading {
		s.become(Waiting)
	}
	receipt := s.view.Receipt(s.agency, req.Total, r.Chain)
	return Output{Send: s.winnersOrNotReady(receipt)}
}

// winnersOrNotReady answers a request for winners, after first if given:
// the commitment and the documents once the draw is done, NOT_READY (and a
// push later) before it.
func (s *Session) winnersOrNotReady(first frame.Frame) []frame.Frame {
	var send []frame.Frame
	if first != nil {
		send = append(send, first)
	}
	docs, commitment, drawn := s.view.Winners(s.agency)
	if !drawn {
		s.subscribed = true
		return append(send, &frame.NotReady{
			RetryAfter: s.limits.RetryAfter,
			Finished:   uint32(s.view.FinishedCount()),
			Agencies:   uint32(s.view.Agencies()),
		})
	}
	s.subscribed = false
	if s.state == Uploading || s.state == Waiting {
		s.become(WinnersSent)
	}
	send = append(send, commitment)
	for _, c := range frame.WinnersFrames(docs) {
		send = append(send, c)
	}
	s.obs.WinnersSent(len(docs))
	s.log.Info("winners_sent", logging.Success, zap.Uint32("agency", s.agency), zap.Int("cant_ganadores", len(docs)))
	return send
}

// fail ends the session with an ERROR frame.
func (s *Session) fail(code frame.Code, reason string) Output {
	s.log.Warn("session_error", logging.Fail, zap.Uint32("agency", s.agency), zap.Stringer("state", s.state),
		zap.Stringer("code", code), zap.String("reason", reason))
	return s.end(code, reason)
}

// end is fail without the log line.
func (s *Session) end(code frame.Code, reason string) Output {
	s.obs.ErrorSent(code)
	s.become(Closed)
	s.ring = nil
	return Output{Send: []frame.Frame{&frame.Error{Code: code, Reason: reason}}, Close: true}
}

func decodeCode(err error) frame.Code {
	switch {
	case errors.Is(err, frame.ErrVersion):
		return frame.CodeVersion
	case errors.Is(err, frame.ErrTooLarge):
		return frame.CodeTooLarge
	case errors.Is(err, frame.ErrUnknownType):
		return frame.CodeUnknownType
	}
	return frame.CodeMalformed
}

func storeCode(err error) frame.Code {
	if errors.Is(err, persist.ErrClosed) {
		return frame.CodeShuttingDown
	}
	return frame.CodeStorage
}
