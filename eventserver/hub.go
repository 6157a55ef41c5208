package eventserver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/receipt"
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
	obs   Observer
	sign  ed25519.PrivateKey // nil: receipts and the commitment go unsigned

	mu       sync.Mutex
	byAgency map[uint32]Peer
	peers    map[Peer]uint64 // every open connection, with the order it joined in
	joined   uint64
	finished map[uint32]bool // agencies whose FINISHED the store has answered as recorded
	drawing  bool            // the draw has started
	closed   bool

	drawn  chan struct{} // closed once result is set
	result *drawResult
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// The budget of requests handed to the store and not yet answered,
	// shared by every connection: past it connections stop reading, so that
	// thousands of agencies with full windows cannot pile up gigabytes of
	// decoded batches (and the garbage collector's work with them).
	inflight atomic.Int64
	budget   int64
	roomMu   sync.Mutex
	room     chan struct{} // closed when inflight falls to half the budget
}

// DefaultMaxInFlight is the server-wide budget of unanswered store requests.
const DefaultMaxInFlight = 2048

// Window is the window for an agency saying HELLO now: the budget of
// requests in flight shared among the agencies connected, at most limit,
// so that many agencies together cannot have much more than the budget
// unanswered.
func (h *Hub) Window(limit int) int {
	h.mu.Lock()
	n := int64(len(h.byAgency)) + 1
	h.mu.Unlock()
	return int(min(max(h.budget/n, 1), int64(limit)))
}

// InFlight is how many store requests are unanswered.
func (h *Hub) InFlight() int64 { return h.inflight.Load() }

// Saturated reports whether the budget of unanswered store requests is
// spent; connections then stop reading until Room says there is room.
func (h *Hub) Saturated() bool { return h.inflight.Load() >= h.budget }

// Room is closed once the requests in flight fall to half the budget.
func (h *Hub) Room() <-chan struct{} {
	h.roomMu.Lock()
	defer h.roomMu.Unlock()
	return h.room
}

// SetMaxInFlight changes the budget of unanswered store requests.
func (h *Hub) SetMaxInFlight(n int) { h.budget = int64(max(n, 1)) }

func (h *Hub) answered() {
	if h.inflight.Add(-1) == h.budget/2 {
		h.roomMu.Lock()
		close(h.room)
		h.room = make(chan struct{})
		h.roomMu.Unlock()
	}
}

// drawResult is the draw: every agency's winners and the signed commitment
// over every agency's (bets, chain), fixed before any winner is sent.
type drawResult struct {
	winners    [][]string // by agency; index 0 unused
	tree       *receipt.Tree
	commitment receipt.Commitment
}

// NewHub returns a hub over an open store, signing receipts with sign (nil
// for none). If every agency had already finished (a restart after the
// draw), the draw runs again right away, with the same result.
func NewHub(store *persist.Store, log *zap.Logger, obs Observer, sign ed25519.PrivateKey) *Hub {
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		store:    store,
		log:      log,
		obs:      observerOr(obs),
		sign:     sign,
		byAgency: map[uint32]Peer{},
		peers:    map[Peer]uint64{},
		finished: map[uint32]bool{},
		drawn:    make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		budget:   DefaultMaxInFlight,
		room:     make(chan struct{}),
	}
	for a := uint32(1); a <= uint32(store.Agencies()); a++ {
		if _, done, _ := store.Status(a); done {
			h.finished[a] = true
		}
	}
	h.obs.AgenciesFinished(len(h.finished))
	h.maybeDraw()
	if changed := store.Changed(); changed != nil {
		h.wg.Add(1)
		go h.follow(changed)
	}
	return h
}

// Agencies is how many agencies the lottery waits for.
func (h *Hub) Agencies() int { return h.store.Agencies() }

// Status is the store's view of an agency.
func (h *Hub) Status(agency uint32) (uint64, bool, frame.Hash) { return h.store.Status(agency) }

// FinishedCount is how many agencies have finished, durably.
func (h *Hub) FinishedCount() int { return h.store.FinishedCount() }

// Receipt is the signed receipt of an agency that finished with bets.
func (h *Hub) Receipt(agency uint32, bets uint64, chain frame.Hash) *frame.Receipt {
	r := receipt.Receipt{Lottery: h.store.Lottery(), Agency: agency, Bets: bets, Chain: chain}
	r.Sign(h.sign)
	f := frame.Receipt(r)
	return &f
}

// Winners returns the agency's winning documents and the commitment with
// the agency's Merkle proof once the draw is done.
func (h *Hub) Winners(agency uint32) ([]string, *frame.Commitment, bool) {
	select {
	case <-h.drawn:
	default:
		return nil, nil, false
	}
	r := h.result
	c := &frame.Commitment{Lottery: r.commitment.Lottery, Agencies: r.commitment.Agencies, Root: r.commitment.Root,
		Signature: r.commitment.Signature}
	if agency < 1 || agency > r.commitment.Agencies {
		return nil, c, true
	}
	c.Proof = r.tree.Proof(int(agency - 1))
	return r.winners[agency], c, true
}

// Drawn is closed once the draw is done.
func (h *Hub) Drawn() <-chan struct{} { return h.drawn }

// Commitment is the draw's signed commitment, once the draw is done.
func (h *Hub) Commitment() (receipt.Commitment, bool) {
	select {
	case <-h.drawn:
		return h.result.commitment, true
	default:
		return receipt.Commitment{}, false
	}
}

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

// broadcastDrawn delivers Drawn to every open connection, the agencies' in
// agency order first, so that the pushes read the commitment's proofs from
// neighbouring parts of the tree rather than from all over it.
func (h *Hub) broadcastDrawn() {
	h.mu.Lock()
	order := make([]Peer, 0, len(h.peers))
	agency := make(map[Peer]bool, len(h.byAgency))
	for a := uint32(1); a <= uint32(h.store.Agencies()); a++ {
		if p, ok := h.byAgency[a]; ok {
			order = append(order, p)
			agency[p] = true
		}
	}
	for p := range h.peers {
		if !agency[p] {
			order = append(order, p)
		}
	}
	h.mu.Unlock()
	for _, p := range order {
		p.Deliver(Drawn{})
	}
}

// Submit hands a session's request to the store; the result comes back to p
// as a Stored event. A FINISHED that completes the set runs the draw before
// its own answer is delivered, so that agency gets its winners at once.
func (h *Hub) Submit(p Peer, r *persist.Request) error {
	agency, finish, total := r.Agency, r.Finish, r.Total
	r.Done = func(res persist.Result) {
		if finish {
			h.recordFinish(agency, total, res)
			if res.Err == nil {
				h.maybeDraw()
			}
		}
		h.answered()
		p.Deliver(Stored{Result: res})
	}
	h.inflight.Add(1)
	if err := h.store.Submit(r); err != nil {
		h.answered()
		return err
	}
	return nil
}

// Encoder appends one frame to dst in a connection's wire form.
type Encoder func(dst []byte, f frame.Frame) ([]byte, error)

// Carry does the hub's part of a session's output for connection p — claim
// the agency, submit the request — and appends the frames to send, encoded
// by enc, to dst. It returns the bytes and whether the connection must
// close after writing them; every transport uses it so they behave alike.
func (h *Hub) Carry(p Peer, s *Session, out Output, dst []byte, enc Encoder) ([]byte, bool, error) {
	if out.Register != 0 && !h.Claim(p, out.Register) {
		out = s.Step(Replaced{}) // a connection opened after this one speaks for the agency
	}
	if out.Request != nil {
		if err := h.Submit(p, out.Request); err != nil {
			// Not queued, so Done will never run: the session ends.
			follow := s.Step(SubmitFailed{Err: err})
			out.Send = append(out.Send, follow.Send...)
			out.Close = out.Close || follow.Close
		}
	}
	for _, f := range out.Send {
		var err error
		if dst, err = enc(dst, f); err != nil {
			h.log.Error("frame_encode", logging.Fail, zap.Stringer("type", f.Type()), zap.Error(err))
			return dst, true, err
		}
	}
	return dst, out.Close, nil
}

// recordFinish logs the store's answer to a FINISHED. It runs in the store's
// callbacks, one at a time, so every agency_finished line precedes the draw
// the last one starts, even if the agency has already disconnected.
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
	h.obs.AgenciesFinished(n)
	h.log.Info("agency_finished", logging.Success, zap.Uint32("agency", agency), zap.Uint64("bets", res.Held),
		zap.Int("finished", n), zap.Int("agencies", h.store.Agencies()))
	// Other servers' FINISHED that this one's commit saw count before the
	// draw check, so the last FINISHED across servers gets its winners.
	for _, a := range res.OthersFinished {
		held, _, _ := h.store.Status(a)
		h.markFinished(a, held)
	}
}

// maybeDraw runs the draw, once, when every agency's FINISHED is recorded
// and the hub is still open. It counts the answers recordFinish saw rather
// than the store's count, which a group commit publishes before the
// callbacks of the group's other agencies.
func (h *Hub) maybeDraw() {
	h.mu.Lock()
	if h.closed || h.drawing || len(h.finished) < h.store.Agencies() {
		h.mu.Unlock()
		return
	}
	h.drawing = true
	h.mu.Unlock()
	if err := h.draw(); err != nil {
		h.log.Error("sorteo", logging.Fail, zap.Int("attempt", 1), zap.Error(err))
		h.mu.Lock()
		defer h.mu.Unlock()
		if !h.closed { // Close waits only for retries started before it
			h.wg.Add(1)
			go h.retryDraw()
		}
	}
}

// retryDraw repeats a failed draw (a store that could not list its
// winners) until it succeeds or the hub is closed.
func (h *Hub) retryDraw() {
	defer h.wg.Done()
	for attempt := 2; ; attempt++ {
		select {
		case <-h.ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		err := h.draw()
		if err == nil {
			return
		}
		h.log.Error("sorteo", logging.Fail, zap.Int("attempt", attempt), zap.Error(err))
	}
}

// draw looks up the winners the store indexed as it committed, commits to
// every agency's bets with a signed Merkle root, publishes both and pushes
// them to the connections that asked.
func (h *Hub) draw() error {
	start := time.Now()
	found, err := h.store.Winners()
	if err != nil {
		return err
	}
	n := h.store.Agencies()
	winners := make([][]string, n+1)
	for a, docs := range found {
		if a >= 1 && int(a) <= n {
			winners[a] = docs
		}
	}
	leaves := make([]receipt.Leaf, n)
	var bets uint64
	for i := range leaves {
		held, _, chain := h.store.Status(uint32(i + 1))
		leaves[i] = receipt.Leaf{Agency: uint32(i + 1), Bets: held, Chain: chain}
		bets += held
	}
	tree := receipt.NewTree(leaves)
	statementOf := "computed" // "adopted" when the store kept another server's
	c := receipt.Commitment{Lottery: h.store.Lottery(), Agencies: uint32(n), Root: tree.Root()}
	c.Sign(h.sign)
	statement, err := receipt.Statement{Commitment: c, Leaves: leaves}.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode the draw's statement: %w", err)
	}
	kept, err := h.store.SaveDraw(statement) // kept before any winner leaves
	if err != nil {
		return fmt.Errorf("save the draw's statement: %w", err)
	}
	if !bytes.Equal(kept, statement) {
		// Another server sharing the store drew first, or this store
		// kept an earlier statement: publish the statement of record, so
		// that every server, and every start, pushes the same root.
		var st receipt.Statement
		if err := st.UnmarshalJSON(kept); err != nil {
			return fmt.Errorf("read the draw's statement of record: %w", err)
		}
		if err := st.Check(nil); err != nil || int(st.Agencies) != n || st.Lottery != c.Lottery {
			return fmt.Errorf("the draw's statement of record does not fit this lottery (%d agencies, lottery %x): %w",
				st.Agencies, st.Lottery[:], errors.Join(err, errForeignStatement))
		}
		if st.Root != c.Root {
			h.log.Warn("sorteo", logging.Fail, zap.String("root", hex.EncodeToString(c.Root[:])),
				zap.String("root_of_record", hex.EncodeToString(st.Root[:])),
				zap.String("next", "publishing the statement of record; this server's view of the agencies differed"))
		}
		if h.sign != nil && st.Commitment.Verify(h.sign.Public().(ed25519.PublicKey)) != nil {
			h.log.Warn("sorteo", logging.Fail, zap.String("root", hex.EncodeToString(st.Root[:])),
				zap.String("signature", "the statement of record is not signed with this server's key"),
				zap.String("next", "publishing it as it is; agencies checking with this server's server-sign.pub "+
					"refuse it: run the server with the key that signed the draw"))
		}
		leaves, c = st.Leaves, st.Commitment
		tree = receipt.NewTree(leaves)
		bets = 0
		for _, l := range leaves {
			bets += l.Bets
		}
		statementOf = "adopted"
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.result = &drawResult{winners: winners, tree: tree, commitment: c}
	close(h.drawn)
	h.mu.Unlock()
	total := 0
	for _, w := range winners {
		total += len(w)
	}
	took := time.Since(start)
	h.obs.Drawn(took)
	h.log.Info("sorteo", logging.Success, zap.Int("agencies", n), zap.Uint64("bets", bets),
		zap.Uint16("winning_number", h.store.WinningNumber()), zap.Int("winners", total),
		zap.String("root", hex.EncodeToString(c.Root[:])), zap.Bool("signed", c.Signature != (frame.Signature{})), zap.Duration("took", took),
		zap.String("statement", statementOf))
	h.broadcastDrawn() // first: the per-agency lines below must not delay the pushes
	if ce := h.log.Check(zap.InfoLevel, "ganadores"); ce != nil {
		for a := uint32(1); a <= uint32(n); a++ {
			h.log.Info("ganadores", logging.Success, zap.Uint32("agency", a), zap.Int("cant_ganadores", len(winners[a])))
		}
	}
	return nil
}

// errForeignStatement says the store's draw statement is not this lottery's.
var errForeignStatement = errors.New("statement of another lottery")

// followRetry is how long follow waits before trying again to bring its
// view up to date after the store could not be read.
const followRetry = time.Second

// follow keeps the hub in step with the other servers sharing the store
// (persist.Watcher): each time they change something, the agencies they
// changed are reloaded so that WELCOME shows what they stored, agencies
// they recorded as finished count here too (and may complete the set, which
// starts the draw here), and their draw is published here: the store keeps
// one statement, which every server pushes.
func (h *Hub) follow(changed <-chan struct{}) {
	defer h.wg.Done()
	var pending persist.Changes
	var retry <-chan time.Time
	failures := 0
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-changed:
			pending.Merge(h.store.TakeChanges())
			if retry != nil {
				continue
			}
		case <-retry:
			retry = nil
		}
		if pending.Empty() {
			continue
		}
		err := h.catchUp(pending)
		if h.ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			if failures == 1 {
				h.log.Warn("peers_follow", logging.Fail, zap.Error(err), zap.Duration("retry_in", followRetry))
			}
			retry = time.After(followRetry)
			continue
		}
		if failures > 0 {
			h.log.Info("peers_follow", logging.Success, zap.Int("failed_attempts", failures))
		}
		failures, pending = 0, persist.Changes{}
	}
}

// catchUp reloads what c names and acts on what it shows.
func (h *Hub) catchUp(c persist.Changes) error {
	ids := c.Agencies
	if c.All || c.Drawn {
		ids = nil // every agency: a draw means all of them finished
	}
	var err error
	select {
	case err = <-h.store.Refresh(ids):
	case <-h.ctx.Done():
		return nil
	}
	if err != nil {
		return err
	}
	if ids == nil {
		ids = make([]uint32, h.store.Agencies())
		for i := range ids {
			ids[i] = uint32(i + 1)
		}
	}
	for _, a := range ids {
		if held, done, _ := h.store.Status(a); done {
			h.markFinished(a, held)
		}
	}
	h.maybeDraw()
	if c.Drawn {
		select {
		case <-h.drawn:
		default:
			h.mu.Lock()
			missing := h.store.Agencies() - len(h.finished)
			h.mu.Unlock()
			if missing > 0 {
				h.log.Error("sorteo", logging.Fail, zap.String("origin", "other_server"), zap.Int("agencies_not_finished_here", missing),
					zap.String("reason", "another server drew, but the store shows agencies that have not finished"))
			}
		}
	}
	return nil
}

// markFinished counts an agency whose FINISHED another server recorded.
func (h *Hub) markFinished(agency uint32, held uint64) {
	h.mu.Lock()
	if h.finished[agency] {
		h.mu.Unlock()
		return
	}
	h.finished[agency] = true
	n := len(h.finished)
	h.mu.Unlock()
	h.obs.AgenciesFinished(n)
	h.log.Info("agency_finished", logging.Success, zap.Uint32("agency", agency), zap.Uint64("bets", held),
		zap.Int("finished", n), zap.Int("agencies", h.store.Agencies()), zap.String("origin", "other_server"))
}

// Close stops the draw from starting or retrying and waits for a retry to end.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}
