package agency_test

import (
	"context"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/eventserver"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/internal/logging"
)

// Run with: go test -run '^$' -bench . -benchmem ./agency/
//
// Each benchmark's op is a whole file (or upload); bets/s and allocs/bet
// are per bet, so that files of any size compare.

// perBet reports throughput and allocations per bet for a loop that
// handled bets bets in all; call it right after the loop.
func perBet(b *testing.B, bets int, before *runtime.MemStats) {
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(bets)/b.Elapsed().Seconds(), "bets/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(bets), "allocs/bet")
}

func memStats() *runtime.MemStats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return &m
}

// courseFileFor writes agency 1 of the course's shape (26,936 bets, CRLF)
// and returns its path.
func courseFileFor(b *testing.B, n int) (string, []frame.Bet) {
	b.Helper()
	bets := courseLike(b, 1, n, 2)
	return courseFile(b, 1, bets), bets
}

// BenchmarkFileSourceNext reads and validates a course-shaped CSV file:
// the agency's cost per row before any batching.
func BenchmarkFileSourceNext(b *testing.B) {
	path, bets := courseFileFor(b, agency.CourseSizes[0])
	src, err := agency.OpenFile(path)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	b.SetBytes(src.Size())
	before := memStats()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := src.Rewind(); err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			_, err := src.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != len(bets) {
			b.Fatalf("read %d bets, want %d", n, len(bets))
		}
	}
	b.StopTimer()
	perBet(b, b.N*len(bets), before)
}

// BenchmarkBatcherNext cuts bets into batches of 100, extends the chain and
// encodes each BETS frame: what the agency's reader goroutine does per
// batch, from memory (slice) and from the file.
func BenchmarkBatcherNext(b *testing.B) {
	path, bets := courseFileFor(b, agency.CourseSizes[0])
	file, err := agency.OpenFile(path)
	if err != nil {
		b.Fatal(err)
	}
	defer file.Close()
	sources := []struct {
		name string
		src  agency.Source
	}{{"slice", agency.NewSliceSource(bets)}, {"file", file}}
	for _, s := range sources {
		b.Run(s.name, func(b *testing.B) {
			var wire []byte
			before := memStats()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.src.Rewind(); err != nil {
					b.Fatal(err)
				}
				batcher := agency.NewBatcher(s.src, agency.DefaultBatchMaxAmount)
				for {
					first, batch, err := batcher.Next()
					if err != nil {
						b.Fatal(err)
					}
					if len(batch) == 0 {
						break
					}
					if wire, err = frame.Append(wire[:0], &frame.Bets{First: first, Bets: batch}); err != nil {
						b.Fatal(err)
					}
				}
				if batcher.Index() != uint64(len(bets)) {
					b.Fatalf("batched %d bets, want %d", batcher.Index(), len(bets))
				}
			}
			b.StopTimer()
			perBet(b, b.N*len(bets), before)
		})
	}
}

// BenchmarkUpload uploads 100,000 bets from a file to an in-process server
// (secured, and --insecure for comparison) and waits for the winners: the
// whole agency, end to end on loopback, at the server's and agency's
// default window and batch size. Server start and stop are not timed.
func BenchmarkUpload(b *testing.B) {
	const n = 100_000
	path, _ := courseFileFor(b, n)
	for _, secured := range []bool{true, false} {
		name := map[bool]string{true: "secure", false: "insecure"}[secured]
		b.Run(name, func(b *testing.B) {
			var ks *keySet
			if secured {
				ks = newKeySet(b, 1)
			}
			quiet, err := logging.New("info", logging.FormatConsole, io.Discard)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs() // the server runs in this process: its allocations count too
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				rs := startServer(b, eventserver.Config{Agencies: 1, Logger: quiet}, ks)
				cfg := agency.Config{Agency: 1, Servers: []string{rs.Addr()}, Logger: quiet}
				if ks != nil {
					cfg = ks.secured(cfg, 1)
				}
				src, err := agency.OpenFile(path)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				res, err := agency.Run(context.Background(), cfg, src)
				b.StopTimer()
				src.Close()
				if err != nil || res.Bets != n {
					b.Fatalf("upload: %d bets, %v", res.Bets, err)
				}
				rs.stop(b)
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "bets/s")
		})
	}
}
