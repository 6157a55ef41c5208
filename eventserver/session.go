package eventserver

import (
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
	Uploading                  // HELLO done; BETS and FINISHED accepted
	Waiting                    // this session's FINISHED is on record; the draw is pending
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

// View is what a session reads of the server-wide state.
type View interface {
	Agencies() int
	Status(agency uint32) (held uint64, finished bool)
	// Winners returns the agency's winning documents once the draw is done.
	Winners(agency uint32) (documents []string, drawn bool)
	FinishedCount() int
}

// Event is an input to Session.Step.
type Event interface{ event() }

// Received is a frame, or the error decoding it, from the peer.
type Received struct {
	Frame frame.Frame
	Err   error
}

// Stored is the store's answer to the request the session emitted.
type Stored struct{ Result persist.Result }

// Drawn says the draw has happened.
type Drawn struct{}

// Replaced says a newer connection took over the session's agency.
type Replaced struct{}

// TimedOut says no complete frame arrived within the read timeout.
type TimedOut struct{}

// Flooded says the peer sent too much while a batch was in flight.
type Flooded struct{ Buffered int }

// ShuttingDown asks the session to finish what is in flight and close.
type ShuttingDown struct{}

func (Received) event()     {}
func (Stored) event()       {}
func (Drawn) event()        {}
func (Replaced) event()     {}
func (TimedOut) event()     {}
func (Flooded) event()      {}
func (ShuttingDown) event() {}

// Output is what the caller must do after a step, in this order: register
// the agency, submit the request, send the frames, then close if asked.
type Output struct {
	Register uint32           // nonzero: this connection now speaks for the agency
	Request  *persist.Request // to submit to the store; its result comes back as Stored
	Send     []frame.Frame
	Close    bool
}

// Session is the per-connection protocol state machine. It does no I/O: the
// caller feeds it events and carries out its outputs.
type Session struct {
	view       View
	log        *zap.Logger
	retryAfter time.Duration

	state      State
	agency     uint32
	inflight   *persist.Request // at most one batch or FINISHED at a time
	subscribed bool             // asked for winners before the draw: push them
	draining   bool             // close once the in-flight request is answered
}

// NewSession returns a session awaiting HELLO. retryAfter is the hint sent
// in NOT_READY.
func NewSession(view View, log *zap.Logger, retryAfter time.Duration) *Session {
	return &Session{view: view, log: log, retryAfter: retryAfter}
}

// State is the session's current state.
func (s *Session) State() State { return s.state }

// Agency is the agency named in HELLO, or 0 before it.
func (s *Session) Agency() uint32 { return s.agency }

// Busy reports whether a request is in flight; while it is, the caller must
// not feed the session further frames (they wait in the connection buffer).
func (s *Session) Busy() bool { return s.inflight != nil }

// ExpectsInput reports whether the session is waiting for the peer to send a
// frame, which is when a read timeout applies.
func (s *Session) ExpectsInput() bool {
	return s.inflight == nil && (s.state == AwaitingHello || s.state == Uploading)
}

// Step applies one event and returns what to do about it.
func (s *Session) Step(ev Event) Output {
	if s.state == Closed {
		return Output{}
	}
	switch ev := ev.(type) {
	case Received:
		if s.inflight != nil {
			return s.fail(frame.CodeUnexpected, "frame received while a batch is in flight")
		}
		return s.receive(ev.Frame, ev.Err)
	case Stored:
		return s.stored(ev.Result)
	case Drawn:
		if s.subscribed && (s.state == Uploading || s.state == Waiting) && s.inflight == nil {
			return s.winnersOrNotReady()
		}
		return Output{}
	case Replaced:
		s.log.Warn("connection_replaced", logging.Success, zap.Uint32("agency", s.agency))
		return s.fail(frame.CodeReplaced, "a newer connection for this agency took over")
	case TimedOut:
		return s.fail(frame.CodeTimeout, "no complete frame within the read timeout")
	case Flooded:
		return s.fail(frame.CodeFlood, fmt.Sprintf("%d bytes sent while a batch was in flight", ev.Buffered))
	case ShuttingDown:
		if s.inflight != nil {
			s.draining = true
			return Output{}
		}
		return s.fail(frame.CodeShuttingDown, "server is shutting down; retry later")
	}
	panic(fmt.Sprintf("eventserver: unknown event %T", ev))
}

func (s *Session) receive(f frame.Frame, err error) Output {
	if err != nil {
		var fe *frame.FieldError
		if bets, ok := f.(*frame.Bets); ok && errors.As(err, &fe) && s.state == Uploading {
			s.log.Warn("apuesta_recibida", logging.Fail, zap.Int("cantidad", len(bets.Bets)),
				zap.Uint32("agency", s.agency), zap.Error(err))
			return Output{Send: []frame.Frame{&frame.Reject{
				Code: frame.CodeInvalidBet, Index: bets.First + uint64(fe.Bet), Reason: err.Error(),
			}}}
		}
		if f != nil {
			// A BETS with a bad bet where no BETS is allowed: the state is the problem.
			return s.fail(frame.CodeUnexpected, fmt.Sprintf("%s not allowed while %s", f.Type(), s.state))
		}
		return s.fail(decodeCode(err), err.Error())
	}
	if p, ok := f.(*frame.Ping); ok {
		return Output{Send: []frame.Frame{&frame.Pong{Payload: p.Payload}}}
	}
	switch s.state {
	case AwaitingHello:
		if h, ok := f.(*frame.Hello); ok {
			return s.hello(h)
		}
		return s.fail(frame.CodeUnexpected, f.Type().String()+" before HELLO")
	case Uploading:
		switch f := f.(type) {
		case *frame.Bets:
			return s.bets(f)
		case *frame.Finished:
			s.inflight = &persist.Request{Agency: s.agency, Finish: true, Total: f.Total}
			return Output{Request: s.inflight}
		case *frame.QueryWinners:
			return s.winnersOrNotReady()
		}
	case Waiting, WinnersSent:
		switch f.(type) {
		case *frame.QueryWinners:
			return s.winnersOrNotReady()
		case *frame.Finished:
			return s.fail(frame.CodeAlreadyFinished, "FINISHED sent twice in one session")
		}
	}
	return s.fail(frame.CodeUnexpected, fmt.Sprintf("%s not allowed while %s", f.Type(), s.state))
}

func (s *Session) hello(h *frame.Hello) Output {
	n := s.view.Agencies()
	if h.Agency < 1 || int(h.Agency) > n {
		s.log.Warn("hello", logging.Fail, zap.Uint32("agency", h.Agency), zap.Int("agencies", n))
		return s.fail(frame.CodeUnknownAgency, fmt.Sprintf("agency %d is outside 1..%d", h.Agency, n))
	}
	s.agency, s.state = h.Agency, Uploading
	held, finished := s.view.Status(h.Agency)
	s.log.Info("hello", logging.Success, zap.Uint32("agency", h.Agency), zap.Uint64("held", held),
		zap.Bool("finished", finished))
	return Output{Register: h.Agency, Send: []frame.Frame{&frame.Welcome{Held: held, Finished: finished}}}
}

func (s *Session) bets(f *frame.Bets) Output {
	if len(f.Bets) == 0 {
		s.log.Warn("apuesta_recibida", logging.Fail, zap.Int("cantidad", 0), zap.Uint32("agency", s.agency),
			zap.String("error", "empty batch"))
		return Output{Send: []frame.Frame{&frame.Reject{Code: frame.CodeMalformed, Index: f.First, Reason: "batch has no bets"}}}
	}
	s.inflight = &persist.Request{Agency: s.agency, First: f.First, Bets: f.Bets}
	return Output{Request: s.inflight}
}

func (s *Session) stored(r persist.Result) Output {
	req := s.inflight
	if req == nil {
		return Output{} // answer for a request this session no longer waits for
	}
	s.inflight = nil
	var out Output
	if req.Finish {
		out = s.finished(r)
	} else {
		out = s.batchStored(req, r)
	}
	if s.subscribed && !out.Close && s.state != WinnersSent {
		if _, drawn := s.view.Winners(s.agency); drawn {
			// The draw's push came while this request was in flight.
			out.Send = append(out.Send, s.winnersOrNotReady().Send...)
		}
	}
	if s.draining && !out.Close {
		closing := s.fail(frame.CodeShuttingDown, "server is shutting down; retry later")
		out.Send = append(out.Send, closing.Send...)
		out.Close = true
	}
	return out
}

func (s *Session) batchStored(req *persist.Request, r persist.Result) Output {
	n := len(req.Bets)
	switch {
	case r.Err == nil:
		s.log.Info("apuesta_recibida", logging.Success, zap.Int("cantidad", n),
			zap.Uint32("agency", s.agency), zap.Int("stored", r.Stored))
		if ce := s.log.Check(zap.DebugLevel, "apuesta_almacenada"); ce != nil {
			for _, b := range req.Bets[n-r.Stored:] {
				s.log.Debug("apuesta_almacenada", logging.Success, zap.String("dni", b.Document),
					zap.Uint16("numero", b.Number))
			}
		}
		return Output{Send: []frame.Frame{&frame.Ack{First: req.First, Count: uint16(n)}}}
	case errors.Is(r.Err, persist.ErrIndexGap):
		s.log.Warn("apuesta_recibida", logging.Fail, zap.Int("cantidad", n), zap.Uint32("agency", s.agency), zap.Error(r.Err))
		return Output{Send: []frame.Frame{&frame.Reject{Code: frame.CodeIndexGap, Index: r.Held, Reason: r.Err.Error()}}}
	case errors.Is(r.Err, persist.ErrAlreadyFinished):
		s.log.Warn("apuesta_recibida", logging.Fail, zap.Int("cantidad", n), zap.Uint32("agency", s.agency), zap.Error(r.Err))
		return Output{Send: []frame.Frame{&frame.Reject{Code: frame.CodeAlreadyFinished, Index: r.Held, Reason: r.Err.Error()}}}
	}
	s.log.Error("apuesta_recibida", logging.Fail, zap.Int("cantidad", n), zap.Uint32("agency", s.agency), zap.Error(r.Err))
	return s.fail(storeCode(r.Err), "bets not stored: "+r.Err.Error())
}

func (s *Session) finished(r persist.Result) Output {
	if r.Err != nil { // the hub logs agency_finished, in the store's order
		if errors.Is(r.Err, persist.ErrTotalMismatch) {
			return s.fail(frame.CodeTotalMismatch, r.Err.Error())
		}
		return s.fail(storeCode(r.Err), "FINISHED not recorded: "+r.Err.Error())
	}
	s.state = Waiting
	return s.winnersOrNotReady()
}

// winnersOrNotReady answers a request for winners: the documents once the
// draw is done, NOT_READY (and a push later) before it.
func (s *Session) winnersOrNotReady() Output {
	docs, drawn := s.view.Winners(s.agency)
	if !drawn {
		s.subscribed = true
		return Output{Send: []frame.Frame{&frame.NotReady{
			RetryAfter: s.retryAfter,
			Finished:   uint32(s.view.FinishedCount()),
			Agencies:   uint32(s.view.Agencies()),
		}}}
	}
	s.state, s.subscribed = WinnersSent, false
	chunks := frame.WinnersFrames(docs)
	out := Output{Send: make([]frame.Frame, len(chunks))}
	for i, c := range chunks {
		out.Send[i] = c
	}
	s.log.Info("winners_sent", logging.Success, zap.Uint32("agency", s.agency), zap.Int("cant_ganadores", len(docs)))
	return out
}

// fail ends the session with an ERROR frame.
func (s *Session) fail(code frame.Code, reason string) Output {
	s.log.Warn("session_error", logging.Fail, zap.Uint32("agency", s.agency), zap.Stringer("state", s.state),
		zap.Stringer("code", code), zap.String("reason", reason))
	s.state = Closed
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
	switch {
	case errors.Is(err, persist.ErrBusy):
		return frame.CodeBusy
	case errors.Is(err, persist.ErrClosed):
		return frame.CodeShuttingDown
	}
	return frame.CodeStorage
}
