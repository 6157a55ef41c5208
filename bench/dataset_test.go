package bench

import (
	"bufio"
	"bytes"
	"slices"
	"testing"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
)

func TestDatasetsDecodeBackToTheSyntheticBets(t *testing.T) {
	plan := datasetPlan{Distinct: 5, Bets: 230, Batch: 100, WinningNumber: 7574, Seed: 3}
	sets, err := buildDatasets(plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 5 {
		t.Fatalf("%d datasets, want 5", len(sets))
	}
	for i, ds := range sets {
		want, err := agency.SyntheticBets(agency.SynthOptions{Agency: uint32(i + 1), Bets: 230, Winners: winnersFor(i, 230),
			WinningNumber: 7574, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ds.counts, []int{100, 100, 30}) {
			t.Errorf("dataset %d: batches of %v, want 100, 100, 30", i, ds.counts)
		}
		var got []frame.Bet
		size := 0
		dec := frame.Decoder{}
		for j, b := range ds.frames {
			size += len(b)
			f, err := dec.Next(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				t.Fatalf("dataset %d frame %d: %v", i, j, err)
			}
			bets, ok := f.(*frame.Bets)
			if !ok || bets.First != uint64(len(got)) {
				t.Fatalf("dataset %d frame %d = %T first %d, want BETS first %d", i, j, f, bets.First, len(got))
			}
			got = append(got, bets.Bets...)
		}
		if !slices.Equal(got, want) {
			t.Errorf("dataset %d: decoded bets differ from the synthetic ones", i)
		}
		// The chain after each frame is the chain over the prefix it ends.
		end := 0
		for j, n := range ds.counts {
			end += n
			if c := receipt.ChainOf(want[:end]); ds.chains[j] != c {
				t.Errorf("dataset %d: chain after frame %d is %x, want %x", i, j, ds.chains[j], c)
			}
		}
		if ds.final != receipt.ChainOf(want) {
			t.Errorf("dataset %d: final chain differs", i)
		}
		if f, err := dec.Next(bufio.NewReader(bytes.NewReader(ds.finished))); err != nil || f.(*frame.Finished).Total != 230 {
			t.Errorf("dataset %d: FINISHED frame %v, %v", i, f, err)
		}
		if (i == 0) != (ds.sample != nil) {
			t.Errorf("dataset %d: sample kept %v, want only for the first", i, ds.sample != nil)
		}
		if size != ds.wireBytes || ds.bets != 230 {
			t.Errorf("dataset %d: wireBytes %d (frames add to %d), bets %d", i, ds.wireBytes, size, ds.bets)
		}
		if len(ds.winners) != winnersFor(i, 230) {
			t.Errorf("dataset %d: %d winners, want %d", i, len(ds.winners), winnersFor(i, 230))
		}
		for _, d := range ds.winners {
			if !frame.ValidDocument(d) {
				t.Errorf("dataset %d: winner %q is not a document", i, d)
			}
		}
	}
	if winnersFor(3, 2) != 2 {
		t.Error("winnersFor must not exceed the bets")
	}
}

func TestDatasetBatchTooLargeForAFrame(t *testing.T) {
	_, err := buildDatasets(datasetPlan{Distinct: 1, Bets: 1000, Batch: 1000, WinningNumber: 7574, Seed: 1})
	if err == nil {
		t.Fatal("a 1000-bet batch fits in an 8 KiB frame?")
	}
	if _, err := buildDatasets(datasetPlan{Distinct: 1, Bets: 10, Batch: 0}); err == nil {
		t.Fatal("batch 0 accepted")
	}
}
