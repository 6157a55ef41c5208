package eventserver

import (
	"context"
	"fmt"
	"iter"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
)

// Peer is a connection as the hub sees it: something events can be
// delivered to from any goroutine.
type Peer interface {
	Deliver(Event)
}

// Hub is the server-wide state every session shares: the store, which
// connection speaks for each agency, and the draw. It is safe for
// concurrent use and implements View.
type Hub struct {
	store *persist.Store
	log   *zap.Logger

	mu       sync.Mutex
	byAgency map[uint32]Peer
	peers    map[Peer]uint64 // every open connection, with the order it joined in
	joined   uint64
	finished map[uint32]bool // agencies whose FINISHED the store has answered as recorded

	drawOnce sync.Once
	drawn    chan struct{} // closed when winners is set
	winners  map[uint32][]string
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// NewHub returns a hub over an open store. If every agency had already
// finished (a restart after the draw), the draw runs again right away.
func NewHub(store *persist.Store, log *zap.Logger) *Hub {
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		store:    store,
		log:      log,
		byAgency: map[uint32]Peer{},
		peers:    map[Peer]uint64{},
		finished: map[uint32]bool{},
		drawn:    make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
	}
	for a := uint32(1); a <= uint32(store.Agencies()); a++ {
		if _, done := store.Status(a); done {
			h.finished[a] = true
		}
	}
	h.maybeDraw()
	return h
}

// Agencies is how many agencies the lottery waits for.
func (h *Hub) Agencies() int { return h.store.Agencies() }

// Status is the store's view of an agency.
func (h *Hub) Status(agency uint32) (uint64, bool) { return h.store.Status(agency) }

// FinishedCount is how many agencies have finished, durably.
func (h *Hub) FinishedCount() int { return h.store.FinishedCount() }

// Winners returns the agency's winning documents once the draw is done.
func (h *Hub) Winners(agency uint32) ([]string, bool) {
	select {
	case <-h.drawn:
		return h.winners[agency], true
	default:
		return nil, false
	}
}

// Drawn is closed once the draw is done.
func (h *Hub) Drawn() <-chan struct{} { return h.drawn }

// Join adds an open connection; connections are numbered in the order they join.
func (h *Hub) Join(p Peer) {
	h.mu.Lock()
	h.joined++
	h.peers[p] = h.joined
	h.mu.Unlock()
}

// Leave removes a closed connection, and its claim on an agency if it still
// holds it.
func (h *Hub) Leave(p Peer, agency uint32) {
	h.mu.Lock()
	delete(h.peers, p)
	if agency != 0 && h.byAgency[agency] == p {
		delete(h.byAgency, agency)
	}
	h.mu.Unlock()
}

// Claim makes p the connection of agency, telling the one it displaces that
// it was replaced, and reports true. If the holder joined after p, p is the
// stale one (its HELLO arrived late, say from a connection its agency had
// already given up on): nothing changes and Claim reports false.
func (h *Hub) Claim(p Peer, agency uint32) bool {
	h.mu.Lock()
	old := h.byAgency[agency]
	if old != nil && old != p {
		mine, joined := h.peers[p]
		theirs, holderJoined := h.peers[old]
		if joined && holderJoined && mine < theirs {
			h.mu.Unlock()
			return false
		}
	}
	h.byAgency[agency] = p
	h.mu.Unlock()
	if old != nil && old != p {
		old.Deliver(Replaced{})
	}
	return true
}

// Peers returns every open connection.
func (h *Hub) Peers() []Peer {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Peer, 0, len(h.peers))
	for p := range h.peers {
		out = append(out, p)
	}
	return out
}

// Broadcast delivers ev to every open connection.
func (h *Hub) Broadcast(ev Event) {
	for _, p := range h.Peers() {
		p.Deliver(ev)
	}
}

// Submit hands a session's request to the store; the result comes back to p
// as a Stored event, and a recorded FINISHED may start the draw.
func (h *Hub) Submit(p Peer, r *persist.Request) error {
	agency, finish, total := r.Agency, r.Finish, r.Total
	r.Done = func(res persist.Result) {
		if finish {
			h.recordFinish(agency, total, res)
		}
		p.Deliver(Stored{Result: res})
		if finish && res.Err == nil {
			h.maybeDraw()
		}
	}
	return h.store.Submit(r)
}

// Carry does the hub's part of a session's output for connection p — claim
// the agency, submit the request — and appends the frames to send, encoded,
// to dst. It returns the bytes and whether the connection must close after
// writing them; both transports use it so they behave alike.
func (h *Hub) Carry(p Peer, s *Session, out Output, dst []byte) ([]byte, bool, error) {
	if out.Register != 0 && !h.Claim(p, out.Register) {
		out = s.Step(Replaced{}) // a connection opened after this one speaks for the agency
	}
	if out.Request != nil {
		if err := h.Submit(p, out.Request); err != nil {
			// Not queued, so Done will never run: answer the session now.
			follow := s.Step(Stored{Result: persist.Result{Err: err}})
			out.Send = append(out.Send, follow.Send...)
			out.Close = out.Close || follow.Close
		}
	}
	for _, f := range out.Send {
		var err error
		if dst, err = frame.Append(dst, f); err != nil {
			h.log.Error("frame_encode", logging.Fail, zap.Stringer("type", f.Type()), zap.Error(err))
			return dst, true, err
		}
	}
	return dst, out.Close, nil
}

// recordFinish logs the store's answer to a FINISHED. It runs in the store's
// callbacks, one at a time, so every agency_finished line precedes the
// draw the last one starts, even if the agency has already disconnected.
func (h *Hub) recordFinish(agency uint32, total uint64, res persist.Result) {
	if res.Err != nil {
		h.log.Warn("agency_finished", logging.Fail, zap.Uint32("agency", agency), zap.Uint64("total", total),
			zap.Error(res.Err))
		return
	}
	h.mu.Lock()
	h.finished[agency] = true
	n := len(h.finished)
	h.mu.Unlock()
	h.log.Info("agency_finished", logging.Success, zap.Uint32("agency", agency), zap.Uint64("bets", res.Held),
		zap.Int("finished", n), zap.Int("agencies", h.store.Agencies()))
}

// maybeDraw starts the draw, once, when every agency's FINISHED is recorded.
// It counts the answers recordFinish saw rather than the store's count, which
// a group commit publishes before the callbacks of the group's other agencies.
func (h *Hub) maybeDraw() {
	h.mu.Lock()
	n := len(h.finished)
	h.mu.Unlock()
	if n < h.store.Agencies() {
		return
	}
	h.drawOnce.Do(func() {
		h.wg.Add(1)
		go h.runDraw()
	})
}

// runDraw reads the stored bets until it succeeds (retrying a failing read)
// or the hub is closed, then publishes the winners and pushes them.
func (h *Hub) runDraw() {
	defer h.wg.Done()
	for attempt := 1; ; attempt++ {
		start := time.Now()
		winners, bets, err := Draw(h.store.Bets(), h.store.WinningNumber())
		if err == nil {
			h.winners = winners
			close(h.drawn)
			total := 0
			for _, w := range winners {
				total += len(w)
			}
			h.log.Info("sorteo", logging.Success, zap.Int("agencies", h.store.Agencies()), zap.Int("bets", bets),
				zap.Uint16("winning_number", h.store.WinningNumber()), zap.Int("winners", total),
				zap.Duration("took", time.Since(start)))
			for a := uint32(1); a <= uint32(h.store.Agencies()); a++ {
				h.log.Info("ganadores", logging.Success, zap.Uint32("agency", a), zap.Int("cant_ganadores", len(winners[a])))
			}
			h.Broadcast(Drawn{})
			return
		}
		h.log.Error("sorteo", logging.Fail, zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-h.ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// Close stops a draw that is retrying and waits for it to end.
func (h *Hub) Close() {
	h.cancel()
	h.wg.Wait()
}

// Draw groups the documents of the winning bets by agency, in stored order.
// One document appears once per winning bet: documents repeat, never dedupe.
func Draw(bets iter.Seq2[persist.Bet, error], winningNumber uint16) (map[uint32][]string, int, error) {
	winners := map[uint32][]string{}
	n := 0
	for b, err := range bets {
		if err != nil {
			return nil, n, fmt.Errorf("draw: %w", err)
		}
		n++
		if persist.HasWon(b, winningNumber) {
			winners[b.Agency] = append(winners[b.Agency], b.Document)
		}
	}
	return winners, n, nil
}
