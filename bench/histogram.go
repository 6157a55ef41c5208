package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Histograms the scale-out runs read from each front end's /metrics.
const (
	commitSecondsMetric = "lottery_commit_duration_seconds"
	commitBetsMetric    = "lottery_commit_bets"
)

// histogram is a Prometheus histogram as /metrics shows it: cumulative
// counts at ascending upper bounds, +Inf last, with the sum and count.
type histogram struct {
	Bounds, Counts []float64
	Sum, Count     float64
}

// fetchMetrics reads http://addr/metrics.
func fetchMetrics(ctx context.Context, addr string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: %s answered %s", req.URL, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	return b, nil
}

// parseHistogram finds the unlabelled histogram name in a page of the
// Prometheus text format.
func parseHistogram(page []byte, name string) (histogram, error) {
	var h histogram
	var haveSum, haveCount bool
	sc := bufio.NewScanner(bytes.NewReader(page))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"_") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f := strings.Fields(value); len(f) > 0 { // the value, then an optional timestamp
			value = f[0]
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return h, fmt.Errorf("metrics: %s: %w", series, err)
		}
		switch {
		case series == name+"_sum":
			h.Sum, haveSum = v, true
		case series == name+"_count":
			h.Count, haveCount = v, true
		case strings.HasPrefix(series, name+`_bucket{le="`) && strings.HasSuffix(series, `"}`):
			le := strings.TrimSuffix(strings.TrimPrefix(series, name+`_bucket{le="`), `"}`)
			bound, err := strconv.ParseFloat(le, 64) // ParseFloat reads "+Inf"
			if err != nil {
				return h, fmt.Errorf("metrics: %s: bucket bound %q: %w", name, le, err)
			}
			h.Bounds = append(h.Bounds, bound)
			h.Counts = append(h.Counts, v)
		}
	}
	if err := sc.Err(); err != nil {
		return h, fmt.Errorf("metrics: %w", err)
	}
	switch {
	case len(h.Bounds) == 0 || !haveSum || !haveCount:
		return h, fmt.Errorf("metrics: no histogram %s", name)
	case !math.IsInf(h.Bounds[len(h.Bounds)-1], 1) || !slices.IsSorted(h.Bounds) || !slices.IsSorted(h.Counts):
		return h, fmt.Errorf("metrics: histogram %s: buckets out of order or no +Inf bucket", name)
	case h.Counts[len(h.Counts)-1] != h.Count:
		return h, fmt.Errorf("metrics: histogram %s: +Inf bucket %v, count %v", name, h.Counts[len(h.Counts)-1], h.Count)
	}
	return h, nil
}

// merge adds o, which must have the same buckets, to h.
func (h *histogram) merge(o histogram) error {
	if h.Bounds == nil {
		h.Bounds, h.Counts = slices.Clone(o.Bounds), make([]float64, len(o.Counts))
	}
	if !slices.Equal(h.Bounds, o.Bounds) {
		return fmt.Errorf("metrics: histograms with different buckets: %v and %v", h.Bounds, o.Bounds)
	}
	for i := range h.Counts {
		h.Counts[i] += o.Counts[i]
	}
	h.Sum += o.Sum
	h.Count += o.Count
	return nil
}

// quantile estimates the q-quantile (0 < q < 1) as PromQL's
// histogram_quantile does: linear interpolation within the bucket holding
// it, from 0 for the first bucket; in the +Inf bucket, the largest finite
// bound. It is 0 for an empty histogram.
func (h *histogram) quantile(q float64) float64 {
	if h.Count == 0 || len(h.Bounds) == 0 {
		return 0
	}
	rank := q * h.Count
	i, _ := slices.BinarySearch(h.Counts, rank) // the first bucket holding at least rank observations
	i = min(i, len(h.Counts)-1)
	if math.IsInf(h.Bounds[i], 1) {
		if i == 0 {
			return 0
		}
		return h.Bounds[i-1]
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = h.Bounds[i-1], h.Counts[i-1]
	}
	in := h.Counts[i] - below
	if in <= 0 {
		return h.Bounds[i]
	}
	return lower + (h.Bounds[i]-lower)*(rank-below)/in
}
