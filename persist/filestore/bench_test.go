package filestore

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/persist"
)

// realisticBets is n bets like the course's agency files: plain names,
// some accents, 8-digit documents.
func realisticBets(agency uint32, n int) []frame.Bet {
	first := []string{"Santiago Lionel", "María", "Juan Pablo", "Lucía", "Martín", "Sofía Belén", "Agustín", "Valentina"}
	last := []string{"Lorca", "González", "Rodríguez", "Fernández", "López", "Martínez", "Pérez", "Gómez"}
	bets := make([]frame.Bet, n)
	for i := range bets {
		bets[i] = frame.Bet{
			FirstName: first[i%len(first)],
			LastName:  last[(i/3)%len(last)],
			Document:  fmt.Sprintf("%08d", 30000000+int(agency)*1000+i%1000),
			Birthdate: frame.NewDate(1950+i%50, 1+i%12, 1+i%28),
			Number:    uint16((i * 7919) % 10000),
		}
	}
	return bets
}

// BenchmarkAppendRow measures encoding one bets.csv row.
func BenchmarkAppendRow(b *testing.B) {
	bets := realisticBets(1, 100)
	buf := make([]byte, 0, 256)
	size := 0
	for i := range bets {
		size += len(AppendRow(buf[:0], 1, &bets[i]))
	}
	b.SetBytes(int64(size / len(bets)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buf = AppendRow(buf[:0], 1, &bets[i%len(bets)])
	}
}

// BenchmarkLoadBets measures reading back a bets.csv of 100,000 bets.
func BenchmarkLoadBets(b *testing.B) {
	const n = 100_000
	var data []byte
	for i := range n / 100 {
		agency := uint32(1 + i%5)
		for _, bet := range realisticBets(agency, 100) {
			data = AppendRow(data, agency, &bet)
		}
	}
	path := filepath.Join(b.TempDir(), BetsFile)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
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

// BenchmarkOpen measures recovery: Open re-reads every row of a store of
// 200,000 bets (parsing, validating, chaining, indexing winners) and
// checks it against the journal, then Close.
func BenchmarkOpen(b *testing.B) {
	const (
		agencies = 5
		n        = 200_000
	)
	dir := b.TempDir()
	opts := Options{Agencies: agencies, WinningNumber: winning, Sync: noSync}
	s, err := Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	w, err := persist.New(s, persist.Options{Agencies: agencies, WinningNumber: winning})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan persist.Result, n/100)
	for i := range n / 100 {
		agency := uint32(1 + i%agencies)
		first := uint64(i / agencies * 100)
		r := &persist.Request{Agency: agency, First: first, Bets: realisticBets(agency, 100), Done: func(r persist.Result) { done <- r }}
		if err := w.Submit(r); err != nil {
			b.Fatal(err)
		}
	}
	for range n / 100 {
		if r := <-done; r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, BetsFile))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(info.Size())
	for b.Loop() {
		s, err := Open(dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		st, _ := s.State()
		if held := st.Agencies[0].Held; held != n/agencies {
			b.Fatalf("agency 1 holds %d bets, want %d", held, n/agencies)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "bets/s")
}
