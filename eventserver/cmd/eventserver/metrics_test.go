package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tp0/loteria/internal/proctest"
	"github.com/tp0/loteria/persist/filestore"
)

// scrape fetches /metrics and parses it with the Prometheus text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body, err := httpGet("http://" + addr + "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return families
}

// metricValue is the value of the family's series whose labels include
// labels (name, value pairs): a counter's or gauge's value, a histogram's
// sample count; found is false when there is no such series.
func metricValue(families map[string]*dto.MetricFamily, name string, labels ...string) (value float64, found bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
series:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					ok = true
				}
			}
			if !ok {
				continue series
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// metricSum adds the value of every series of a counter or gauge family.
func metricSum(families map[string]*dto.MetricFamily, name string) float64 {
	var total float64
	if f := families[name]; f != nil {
		for _, m := range f.GetMetric() {
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return total
}

func histogram(t *testing.T, families map[string]*dto.MetricFamily, name string) *dto.Histogram {
	t.Helper()
	f := families[name]
	if f == nil || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetHistogram() == nil {
		t.Fatalf("no histogram %s in /metrics", name)
	}
	return f.GetMetric()[0].GetHistogram()
}

// TestMetricsAfterCourseUpload runs the secured server binary with
// --metrics-listen 127.0.0.1:0, uploads the course-shaped files bin/gendata
// writes (five agencies, one polling) and scrapes /metrics after the draw
// (issue 11 §Tests): the counters equal what bets.csv holds, the finished
// gauge equals N, both commit histograms have observations (and the bets
// they count add up to bets.csv), the winners sent equal the winners, and
// no error or reject was sent.
func TestMetricsAfterCourseUpload(t *testing.T) {
	t.Parallel()
	data := gendata(t, 5)
	c := newCluster(t, data)
	c.batch = "106" // the course's client config.yaml
	c.extra = []string{"--metrics-listen", "127.0.0.1:0"}
	c.startServer()
	if c.metrics == "" || strings.HasSuffix(c.metrics, ":0") {
		t.Fatalf("no bound metrics address in the log: %q", c.metrics)
	}
	before := scrape(t, c.metrics)
	if v, ok := metricValue(before, "lottery_agencies"); !ok || v != 5 {
		t.Errorf("lottery_agencies %v before any agency, want 5", v)
	}
	c.startAgencies()
	roots := c.finishAgencies()

	betsCSV, err := os.ReadFile(filepath.Join(c.dataDir, filestore.BetsFile))
	if err != nil {
		t.Fatal(err)
	}
	rows := float64(bytes.Count(betsCSV, []byte("\n")))
	if int(rows) != data.total() {
		t.Fatalf("bets.csv has %v rows, the files %d", rows, data.total())
	}
	var m map[string]*dto.MetricFamily
	// Connections close a moment after the agencies exit; the rest is fixed by then.
	proctest.WaitFor(t, hangGuard, "every connection to leave lottery_connections", func() bool {
		m = scrape(t, c.metrics)
		return metricSum(m, "lottery_connections") == 0
	})
	check := func(name string, got, want float64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		v, ok := metricValue(m, name, labels...)
		if !ok {
			t.Errorf("/metrics has no %s%v", name, labels)
		}
		return v
	}
	check("lottery_bets_stored_total", value("lottery_bets_stored_total"), rows)
	check("lottery_agencies", value("lottery_agencies"), 5)
	check("lottery_agencies_finished", value("lottery_agencies_finished"), 5)
	check("lottery_winners_sent_total", value("lottery_winners_sent_total"), float64(data.allWinners()))
	check("lottery_store_bytes", value("lottery_store_bytes"), float64(len(betsCSV)))
	if stored := value("lottery_batches_total", "result", "stored"); stored <= 0 {
		t.Errorf(`lottery_batches_total{result="stored"} = %v, want > 0`, stored)
	}
	check(`lottery_batch_bets_total{result="stored"}`, value("lottery_batch_bets_total", "result", "stored"), rows)
	check(`lottery_batches_total{result="rejected"}`, value("lottery_batches_total", "result", "rejected"), 0)
	check("lottery_errors_sent_total (all codes)", metricSum(m, "lottery_errors_sent_total"), 0)
	check("lottery_frames_rejected_total (all codes)", metricSum(m, "lottery_frames_rejected_total"), 0)
	if ok := value("lottery_handshakes_total", "result", "success"); ok < 5 {
		t.Errorf(`lottery_handshakes_total{result="success"} = %v, want at least one per agency`, ok)
	}
	commits := histogram(t, m, "lottery_commit_duration_seconds")
	if commits.GetSampleCount() == 0 || commits.GetSampleSum() <= 0 {
		t.Errorf("lottery_commit_duration_seconds: %d observations, sum %v", commits.GetSampleCount(), commits.GetSampleSum())
	}
	groups := histogram(t, m, "lottery_commit_bets")
	if groups.GetSampleCount() != commits.GetSampleCount() || groups.GetSampleSum() != rows {
		t.Errorf("lottery_commit_bets: %d observations adding up to %v bets; want one per commit (%d), adding up to %v",
			groups.GetSampleCount(), groups.GetSampleSum(), commits.GetSampleCount(), rows)
	}
	if d, ok := metricValue(m, "lottery_draw_duration_seconds"); !ok || d <= 0 {
		t.Errorf("lottery_draw_duration_seconds = %v after the draw", d)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := m[name]; !ok {
			t.Errorf("/metrics lacks %s (Go runtime and process collectors)", name)
		}
	}
	c.stopServer()
	c.checkStore()
	c.checkEvidence(roots)
}
