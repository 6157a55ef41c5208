package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tp0/loteria/frame"
	"github.com/tp0/loteria/receipt"
)

// betsStoredMetric is the counter of bets written to the store.
const betsStoredMetric = "lottery_bets_stored_total"

// scrapeMetric fetches http://addr/metrics and returns the value of the
// sample of name that has no labels.
func scrapeMetric(ctx context.Context, addr, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("scrape metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape metrics: %s answered %s", req.URL, resp.Status)
	}
	return findSample(resp.Body, name)
}

// findSample reads the Prometheus text format and returns the value of the
// unlabelled sample of name.
func findSample(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // the value, then an optional timestamp
		if len(fields) == 0 {
			break
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("scrape metrics: %s: %w", name, err)
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("scrape metrics: %w", err)
	}
	return 0, fmt.Errorf("scrape metrics: no sample %s", name)
}

// chainCost is what receipt.Chain costs per bet over bets, in nanoseconds:
// the best of three rounds, each adding bets again and again for at least
// minTime.
func chainCost(bets []frame.Bet, minTime time.Duration) float64 {
	if len(bets) == 0 {
		return 0
	}
	best := 0.0
	for range 3 {
		c := receipt.NewChain()
		n := 0
		start := time.Now()
		for time.Since(start) < minTime {
			for i := range bets {
				c.Add(&bets[i])
			}
			n += len(bets)
		}
		_ = c.Sum()
		ns := float64(time.Since(start).Nanoseconds()) / float64(n)
		if best == 0 || ns < best {
			best = ns
		}
	}
	return best
}
