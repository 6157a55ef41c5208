package bench

import (
	"fmt"

	"github.com/tp0/loteria/agency"
	"github.com/tp0/loteria/frame"
)

// dataset is one synthetic agency's bets, encoded into BETS frames once.
// A BETS frame carries no agency id, so agencies that upload the same
// dataset send the same bytes and the frames are shared read-only.
type dataset struct {
	bets      int
	frames    [][]byte // BETS frames in stream order
	counts    []int    // bets in each frame
	winners   []string // documents of the winning bets, in stream order
	wireBytes int      // sum of the frames' sizes
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
		ds := &dataset{bets: len(bets)}
		for first := 0; first < len(bets); first += plan.Batch {
			chunk := bets[first:min(first+plan.Batch, len(bets))]
			b, err := frame.Encode(&frame.Bets{First: uint64(first), Bets: chunk})
			if err != nil {
				return nil, fmt.Errorf("encode a batch of %d bets: %w (lower --batch)", len(chunk), err)
			}
			ds.frames = append(ds.frames, b)
			ds.counts = append(ds.counts, len(chunk))
			ds.wireBytes += len(b)
		}
		for _, b := range bets {
			if b.Number == plan.WinningNumber {
				ds.winners = append(ds.winners, b.Document)
			}
		}
		sets[i] = ds
	}
	return sets, nil
}
