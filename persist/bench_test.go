package persist_test

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
	"github.com/tp0/loteria/persist/filestore"
)

const batchBets = 100

// realisticBatch is 100 bets like the course's agency files: plain names,
// some accents, 8-digit documents.
func realisticBatch(agency uint32) []frame.Bet {
	first := []string{"Santiago Lionel", "María", "Juan Pablo", "Lucía", "Martín", "Sofía Belén", "Agustín", "Valentina"}
	last := []string{"Lorca", "González", "Rodríguez", "Fernández", "López", "Martínez", "Pérez", "Gómez"}
	bets := make([]frame.Bet, batchBets)
	for i := range bets {
		bets[i] = frame.Bet{
			FirstName: first[i%len(first)],
			LastName:  last[(i/3)%len(last)],
			Document:  fmt.Sprintf("%08d", 30000000+int(agency)*1000+i),
			Birthdate: frame.NewDate(1950+i%50, 1+i%12, 1+i%28),
			Number:    uint16((i * 7919) % 10000),
		}
	}
	return bets
}

// fileWriter opens a file store in a new directory and starts the writer.
func fileWriter(tb testing.TB, agencies int, fsync bool, obs persist.Observer) *persist.Store {
	tb.Helper()
	opts := filestore.Options{Agencies: agencies, WinningNumber: winning}
	if !fsync {
		opts.Sync = func(*os.File) error { return nil }
	}
	b, err := filestore.Open(tb.TempDir(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := persist.New(b, persist.Options{Agencies: agencies, WinningNumber: winning, Observer: obs})
	if err != nil {
		b.Close()
		tb.Fatal(err)
	}
	return s
}

// producer is one agency keeping one batch in flight, as a session does;
// it allocates nothing per batch.
type producer struct {
	s       *persist.Store
	req     persist.Request
	results chan persist.Result
}

func newProducer(s *persist.Store, agency uint32) *producer {
	p := &producer{s: s, results: make(chan persist.Result, 1)}
	p.req = persist.Request{Agency: agency, Bets: realisticBatch(agency), Done: func(r persist.Result) { p.results <- r }}
	return p
}

// send stores the next batch and waits until it is durable.
func (p *producer) send() error {
	if err := p.s.Submit(&p.req); err != nil {
		return err
	}
	res := <-p.results
	if res.Err != nil || res.Stored != batchBets {
		return fmt.Errorf("agency %d batch at %d: %+v", p.req.Agency, p.req.First, res)
	}
	p.req.First += batchBets
	return nil
}

// BenchmarkCommit measures bets stored per second through the writer and
// the file store, with producers each keeping one batch of 100 in flight;
// allocs/bet is every allocation of the process during the run divided by
// the bets stored. One op is one batch.
func BenchmarkCommit(b *testing.B) {
	for _, fsync := range []bool{true, false} {
		for _, producers := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("fsync=%t/producers=%d", fsync, producers), func(b *testing.B) {
				obs := &commits{}
				s := fileWriter(b, producers, fsync, obs)
				ps := make([]*producer, producers)
				for i := range ps {
					ps[i] = newProducer(s, uint32(i+1))
				}
				var left atomic.Int64
				left.Store(int64(b.N))
				var wg sync.WaitGroup
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				b.ResetTimer()
				for _, p := range ps {
					wg.Go(func() {
						for left.Add(-1) >= 0 {
							if err := p.send(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				runtime.ReadMemStats(&after)
				bets := float64(b.N * batchBets)
				b.ReportMetric(bets/b.Elapsed().Seconds(), "bets/s")
				b.ReportMetric(float64(after.Mallocs-before.Mallocs)/bets, "allocs/bet")
				b.ReportMetric(bets/float64(len(obs.groups())), "bets/commit")
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// TestCommitAllocations guards the goal of the writer and the file store:
// no allocation per bet. A request costs the same allocations whether its
// batch holds 10 bets or 1000.
func TestCommitAllocations(t *testing.T) {
	s := fileWriter(t, 1, false, nil)
	t.Cleanup(func() { s.Close() })
	results := make(chan persist.Result, 1)
	req := persist.Request{Agency: 1, Done: func(r persist.Result) { results <- r }}
	allocsFor := func(n int) float64 {
		req.Bets = make([]frame.Bet, 0, n)
		for len(req.Bets) < n {
			req.Bets = append(req.Bets, realisticBatch(1)...)
		}
		req.Bets = req.Bets[:n]
		for i := range req.Bets {
			req.Bets[i].Number = winning + 1 // winners grow a list: not what is measured
		}
		return testing.AllocsPerRun(20, func() {
			if err := s.Submit(&req); err != nil {
				t.Fatal(err)
			}
			if res := <-results; res.Err != nil || res.Stored != n {
				t.Fatalf("batch of %d at %d: %+v", n, req.First, res)
			}
			req.First += uint64(n)
		})
	}
	small, large := allocsFor(10), allocsFor(1000)
	t.Logf("allocations a request: %.1f with 10 bets, %.1f with 1000", small, large)
	if large-small >= 1 {
		t.Errorf("a request of 1000 bets allocates %.1f times, one of 10 bets %.1f: something allocates per bet", large, small)
	}
}
