package e2e_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/pgstore"
	"github.com/tp0/loteria/persist/pgstore/pgtest"
)

// peer collects what the hub delivers to one connection.
type peer struct{ events chan eventserver.Event }

func (p *peer) Deliver(ev eventserver.Event) { p.events <- ev }

// stored waits for the store's answer to the peer's request.
func (p *peer) stored(t *testing.T) persist.Result {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev := <-p.events:
			if s, ok := ev.(eventserver.Stored); ok {
				return s.Result
			}
		case <-deadline:
			t.Fatal("no answer from the store within 20s")
		}
	}
}

// hubOn opens a store on url and a hub over it, closed with the test.
func hubOn(t *testing.T, url string, agencies int, sign ed25519.PrivateKey) *eventserver.Hub {
	t.Helper()
	return hubOver(t, url, agencies, sign, func(b *pgstore.Store) persist.Backend { return b })
}

// deaf is a PostgreSQL backend whose hub hears nothing of the other
// servers' notices: not a persist.Watcher, it still keeps the draw.
type deaf struct {
	persist.Backend
	persist.DrawKeeper
}

// hubOver is hubOn with the backend the store gets wrapped by wrap.
func hubOver(t *testing.T, url string, agencies int, sign ed25519.PrivateKey, wrap func(*pgstore.Store) persist.Backend) *eventserver.Hub {
	t.Helper()
	b, err := pgstore.Open(context.Background(), url, pgstore.Options{Agencies: agencies, WinningNumber: winning})
	if err != nil {
		t.Fatal(err)
	}
	s, err := persist.New(wrap(b), persist.Options{Agencies: agencies, WinningNumber: winning})
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	h := eventserver.NewHub(s, zap.NewNop(), nil, sign)
	t.Cleanup(func() {
		h.Close()
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return h
}

// Two hubs on one database, each hearing from its own agencies only: the
// FINISHED recorded through one reaches the other, whichever completes the
// set draws, the other publishes the same statement, and both answer every
// agency with the same winners and the same root. A hub started after the
// draw publishes it again, identically.
func TestHubsShareOneDraw(t *testing.T) {
	url := pgtest.NewDatabase(t)
	_, sign, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	const agencies = 4
	a, b := hubOn(t, url, agencies, sign), hubOn(t, url, agencies, sign)
	want := map[uint32][]string{}
	for id := uint32(1); id <= agencies; id++ {
		h := a
		if id%2 == 0 {
			h = b
		}
		var bets []frame.Bet
		for i := range 50 + int(id) {
			n := uint16((i*37 + int(id)) % 10000)
			if i%(10+int(id)) == 3 {
				n = winning
			}
			bets = append(bets, frame.Bet{FirstName: "Ana", LastName: "Sosa", Document: fmt.Sprintf("%d%04d", id, i),
				Birthdate: frame.NewDate(1980, 1+i%12, 1+i%28), Number: n})
			if n == winning {
				want[id] = append(want[id], bets[i].Document)
			}
		}
		p := &peer{events: make(chan eventserver.Event, 16)}
		if err := h.Submit(p, &persist.Request{Agency: id, First: 0, Bets: bets}); err != nil {
			t.Fatal(err)
		}
		if r := p.stored(t); r.Err != nil {
			t.Fatal(r.Err)
		}
		if err := h.Submit(p, &persist.Request{Agency: id, Finish: true, Total: uint64(len(bets))}); err != nil {
			t.Fatal(err)
		}
		if r := p.stored(t); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	for _, h := range []*eventserver.Hub{a, b} {
		select {
		case <-h.Drawn():
		case <-time.After(20 * time.Second):
			t.Fatalf("a hub did not draw; it counts %d of %d agencies finished", h.FinishedCount(), agencies)
		}
	}
	ca, _ := a.Commitment()
	cb, _ := b.Commitment()
	if ca != cb || ca.Root == (frame.Hash{}) {
		t.Fatalf("the hubs published different commitments:\n%+v\n%+v", ca, cb)
	}
	late := hubOn(t, url, agencies, sign)
	select {
	case <-late.Drawn():
	case <-time.After(20 * time.Second):
		t.Fatal("a hub started after the draw did not publish it")
	}
	if cl, _ := late.Commitment(); cl != ca {
		t.Fatalf("the late hub published another commitment:\n%+v\n%+v", cl, ca)
	}
	for id := uint32(1); id <= agencies; id++ {
		for i, h := range []*eventserver.Hub{a, b, late} {
			docs, c, drawn := h.Winners(id)
			if !drawn || !slices.Equal(docs, want[id]) || c.Root != ca.Root {
				t.Errorf("hub %d, agency %d: winners %v (drawn %v), want %v under root %x", i, id, docs, drawn, want[id], ca.Root)
			}
		}
	}
}

// The last FINISHED reaches a hub that has heard nothing of the others (its
// notices are cut): committing it shows the agencies the other hub finished,
// so this hub draws before it answers, and that agency gets its winners at
// once instead of NOT_READY.
func TestLastFinishedDrawsAtOnce(t *testing.T) {
	url := pgtest.NewDatabase(t)
	const agencies = 3
	a := hubOn(t, url, agencies, nil)
	b := hubOver(t, url, agencies, nil, func(s *pgstore.Store) persist.Backend { return deaf{s, s} })
	for id := uint32(1); id <= agencies; id++ {
		h := a
		if id == agencies {
			h = b
		}
		bets := []frame.Bet{{FirstName: "Ana", LastName: "Sosa", Document: fmt.Sprint(id), Birthdate: frame.NewDate(1980, 1, 1), Number: winning}}
		p := &peer{events: make(chan eventserver.Event, 16)}
		for _, r := range []*persist.Request{{Agency: id, Bets: bets}, {Agency: id, Finish: true, Total: 1}} {
			if err := h.Submit(p, r); err != nil {
				t.Fatal(err)
			}
			if res := p.stored(t); res.Err != nil {
				t.Fatal(res.Err)
			}
		}
	}
	select {
	case <-b.Drawn():
	default:
		t.Fatalf("the hub of the last FINISHED answered it undrawn, counting %d of %d agencies finished", b.FinishedCount(), agencies)
	}
	for id := uint32(1); id <= agencies; id++ {
		if docs, _, drawn := b.Winners(id); !drawn || !slices.Equal(docs, []string{fmt.Sprint(id)}) {
			t.Errorf("agency %d: winners %v (drawn %v), want [%d]", id, docs, drawn, id)
		}
	}
}
