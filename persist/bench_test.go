package persist

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tp0/loteria/frame"
)

// realisticBatch is 100 bets like the course's agency files: plain names,
// some accents, 8-digit documents.
func realisticBatch(agency uint32) []frame.Bet {
	first := []string{"Santiago Lionel", "María", "Juan Pablo", "Lucía", "Martín", "Sofía Belén", "Agustín", "Valentina"}
	last := []string{"Lorca", "González", "Rodríguez", "Fernández", "López", "Martínez", "Pérez", "Gómez"}
	bets := make([]frame.Bet, 100)
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

// BenchmarkCommit measures stored bets per second with producers each
// keeping one batch of 100 in flight, as sessions do.
func BenchmarkCommit(b *testing.B) {
	for _, producers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{Agencies: producers})
			if err != nil {
				b.Fatal(err)
			}
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			b.ResetTimer()
			for p := range producers {
				agency := uint32(p + 1)
				batch := realisticBatch(agency)
				wg.Go(func() {
					results := make(chan Result, 1)
					var first uint64
					for left.Add(-1) >= 0 {
						r := &Request{Agency: agency, First: first, Bets: batch, Done: func(r Result) { results <- r }}
						if err := s.Submit(r); err != nil {
							b.Error(err)
							return
						}
						if res := <-results; res.Err != nil || res.Stored != len(batch) {
							b.Errorf("batch at %d: %+v", first, res)
							return
						}
						first += uint64(len(batch))
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "bets/s")
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkLoadBets measures reading back a bets.csv of 100,000 bets.
func BenchmarkLoadBets(b *testing.B) {
	const n = 100_000
	var data []byte
	for i := range n / 100 {
		agency := uint32(1 + i%5)
		batch := realisticBatch(agency)
		for j := range batch {
			data = appendRow(data, agency, &batch[j])
		}
	}
	path := filepath.Join(b.TempDir(), BetsFile)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		count := 0
		for _, err := range LoadBetsFile(path) {
			if err != nil {
				b.Fatal(err)
			}
			count++
		}
		if count != n {
			b.Fatalf("read %d bets, want %d", count, n)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "bets/s")
}
