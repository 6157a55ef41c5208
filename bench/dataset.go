package bench

import (
	"fmt"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
)

// dataset is one synthetic agency's bets, encoded into BETS frames once.
// A BETS frame carries no agency id, so agencies that upload the same
// dataset send the same bytes and the frames are shared read-only. The
// chain values an ACK must carry are computed here, once per dataset.
type dataset struct {
	bets      int
	frames    [][]byte     // BETS frames in stream order
	counts    []int        // bets in each frame
	chains    []frame.Hash // the chain over the stream up to the end of each frame
	final     frame.Hash   // the chain over every bet
	finished  []byte       // the FINISHED frame for every bet
	winners   []string     // documents of the winning bets, in stream order
	wireBytes int          // sum of the BETS frames' sizes
	sample    []frame.Bet  // the bets themselves, kept for the first dataset only (hashing cost)
}

// datasetPlan says how the synthetic bets of a run are made.
type datasetPlan struct {
	Distinct      int // datasets generated; agency a uploads dataset (a-1) % Distinct
	Bets          int // per agency
	Batch         int // bets per BETS frame
	WinningNumber uint16
	Seed          int64
}

// winnersFor is how many winning bets dataset i holds: 0 to 3, so some
// agencies get an empty WINNERS and some several documents.
func winnersFor(i, bets int) int { return min(i%4, bets) }

// buildDatasets generates and encodes the datasets of plan.
func buildDatasets(plan datasetPlan) ([]*dataset, error) {
	if plan.Batch < 1 {
		return nil, fmt.Errorf("batch must be at least 1 bet, got %d", plan.Batch)
	}
	sets := make([]*dataset, plan.Distinct)
	for i := range sets {
		bets, err := agency.SyntheticBets(agency.SynthOptions{
			Agency:        uint32(i + 1),
			Bets:          plan.Bets,
			Winners:       winnersFor(i, plan.Bets),
			WinningNumber: plan.WinningNumber,
			Seed:          plan.Seed,
		})
		if err != nil {
			return nil, fmt.Errorf("generate dataset %d: %w", i+1, err)
		}
		ds, err := newDataset(bets, plan.Batch, plan.WinningNumber)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			ds.sample = bets
		}
		sets[i] = ds
	}
	return sets, nil
}

// newDataset cuts bets into BETS frames of batch bets and computes the
// chain after each frame.
func newDataset(bets []frame.Bet, batch int, winning uint16) (*dataset, error) {
	ds := &dataset{bets: len(bets)}
	chain := receipt.NewChain()
	for first := 0; first < len(bets); first += batch {
		chunk := bets[first:min(first+batch, len(bets))]
		b, err := frame.Encode(&frame.Bets{First: uint64(first), Bets: chunk})
		if err != nil {
			return nil, fmt.Errorf("encode a batch of %d bets: %w (lower --batch)", len(chunk), err)
		}
		for i := range chunk {
			chain.Add(&chunk[i])
		}
		ds.frames = append(ds.frames, b)
		ds.counts = append(ds.counts, len(chunk))
		ds.chains = append(ds.chains, chain.Sum())
		ds.wireBytes += len(b)
	}
	ds.final = chain.Sum()
	var err error
	if ds.finished, err = frame.Encode(&frame.Finished{Total: uint64(len(bets))}); err != nil {
		return nil, err
	}
	for _, b := range bets {
		if b.Number == winning {
			ds.winners = append(ds.winners, b.Document)
		}
	}
	return ds, nil
}
