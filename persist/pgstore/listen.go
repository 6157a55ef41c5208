package pgstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"
	"go.uber.org/zap"

	"github.com/tp0/loteria/internal/logging"
	"github.com/tp0/loteria/persist"
)

// notices merges what other servers announced until the hub takes it.
type notices struct {
	signal chan struct{}

	mu       sync.Mutex
	agencies map[uint32]struct{}
	all      bool
	drawn    bool
}

func (n *notices) init() {
	n.signal = make(chan struct{}, 1)
	n.agencies = map[uint32]struct{}{}
}

func (n *notices) add(agencies []uint32, all, drawn bool) {
	n.mu.Lock()
	for _, a := range agencies {
		n.agencies[a] = struct{}{}
	}
	n.all = n.all || all
	n.drawn = n.drawn || drawn
	n.mu.Unlock()
	select {
	case n.signal <- struct{}{}:
	default:
	}
}

func (n *notices) take() persist.Changes {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := persist.Changes{All: n.all, Drawn: n.drawn}
	if !n.all {
		for a := range n.agencies {
			c.Agencies = append(c.Agencies, a)
		}
		slices.Sort(c.Agencies)
	}
	clear(n.agencies)
	n.all, n.drawn = false, false
	return c
}

// listen follows the other servers' notices on a connection of its own,
// reconnecting after failures until Close. Each (re)connection counts as
// "every agency may have changed", since notices sent while it was down
// are lost.
func (s *Store) listen() {
	defer s.wg.Done()
	cfg := s.pool.Config().ConnConfig.Copy()
	down := false
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			return pgx.ConnectConfig(ctx, cfg)
		},
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() != nil || down {
				return
			}
			down = true
			s.listenErr.Store(&err)
			s.log.Warn("pg_listen", logging.Fail, zap.String("database", s.target), zap.Error(err),
				zap.Duration("retry_in", s.opts.ListenRetry))
		},
		ReconnectDelay: s.opts.ListenRetry,
	}
	l.Handle(Channel, &listenHandler{s: s, up: func() {
		s.listenErr.Store(nil)
		if down {
			down = false
			s.log.Info("pg_listen", logging.Success, zap.String("database", s.target), zap.String("state", "reconnected"))
		}
	}})
	_ = l.Listen(s.ctx) // returns only once Close cancels s.ctx
}

// Health is nil while the listener holds its connection, or why it lost it:
// the database is unreachable for this server until it reconnects.
func (s *Store) Health() error {
	if p := s.listenErr.Load(); p != nil {
		return fmt.Errorf("%w: listener: %w", persist.ErrUnavailable, *p)
	}
	return nil
}

type listenHandler struct {
	s  *Store
	up func()
}

// HandleBacklog runs after each LISTEN: what was missed is unknown.
func (h *listenHandler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	h.up()
	h.s.notes.add(nil, true, false)
	return nil
}

func (h *listenHandler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	agencies, all, drawn, own := parseNotice(n.Payload, h.s.id)
	if !own {
		h.s.notes.add(agencies, all, drawn)
	}
	return nil
}

// parseNotice reads a notice's payload; one it does not understand (a
// newer server's) counts as "every agency may have changed".
func parseNotice(payload, self string) (agencies []uint32, all, drawn, own bool) {
	f := strings.Fields(payload)
	if len(f) < 3 || f[0] != "1" {
		return nil, true, false, false
	}
	if f[1] == self {
		return nil, false, false, true
	}
	switch {
	case f[2] == "d" && len(f) == 3:
		return nil, false, true, false
	case f[2] == "p" && len(f) == 4 && f[3] == "*":
		return nil, true, false, false
	case f[2] == "p" && len(f) == 4:
		for _, part := range strings.Split(f[3], ",") {
			a, err := strconv.ParseUint(part, 10, 32)
			if err != nil || a == 0 {
				return nil, true, false, false
			}
			agencies = append(agencies, uint32(a))
		}
		return agencies, false, false, false
	}
	return nil, true, false, false
}
