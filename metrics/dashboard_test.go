package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

const dashboardPath = "../eventserver/dashboard/lottery.json"

// PromQL words that are never metric names: aggregations (which may stand
// before their parentheses with a by/without clause in between), binary
// operators and modifiers, and special values.
var promqlWords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"inf": true, "nan": true,
}

// Words followed by a parenthesized list of label names.
var labelListWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// metricNames returns the metric names a PromQL expression selects, in order
// of appearance: identifiers that are not functions (followed by "("), not
// PromQL words, not label names in a by/on list, and not inside a label
// matcher, a range, a string or a Grafana variable.
func metricNames(expr string) []string {
	var names []string
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || 'a' <= c|0x20 && c|0x20 <= 'z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || '0' <= c && c <= '9' }
	// skipTo returns the index just past the byte closing what opens at i,
	// stepping over strings.
	skipTo := func(i int, closing byte) int {
		for i++; i < len(expr) && expr[i] != closing; {
			if q := expr[i]; q == '"' || q == '\'' || q == '`' {
				i = skipString(expr, i)
			} else {
				i++
			}
		}
		return i + 1
	}
	nextNonSpace := func(i int) int {
		for i < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[i])) {
			i++
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(expr, i)
		case c == '{':
			i = skipTo(i, '}')
		case c == '[':
			i = skipTo(i, ']')
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				i = skipTo(i, '}')
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case '0' <= c && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			word, next := expr[start:i], nextNonSpace(i)
			switch {
			case labelListWords[strings.ToLower(word)]:
				if next < len(expr) && expr[next] == '(' {
					i = skipTo(next, ')')
				}
			case promqlWords[strings.ToLower(word)]:
			case next < len(expr) && expr[next] == '(':
				// a function call
			default:
				names = append(names, word)
			}
		default:
			i++
		}
	}
	return names
}

// skipString returns the index just past the string literal that opens at i;
// backquoted strings have no escapes.
func skipString(expr string, i int) int {
	q := expr[i]
	for i++; i < len(expr) && expr[i] != q; i++ {
		if expr[i] == '\\' && q != '`' {
			i++
		}
	}
	return i + 1
}

// missingMetrics returns the names in exprs that no family in families
// provides; a histogram provides its _bucket, _sum and _count series and a
// summary its _sum and _count.
func missingMetrics(exprs []string, families map[string]*dto.MetricFamily) []string {
	var missing []string
	for _, expr := range exprs {
		for _, name := range metricNames(expr) {
			if !provided(name, families) && !slices.Contains(missing, name) {
				missing = append(missing, name)
			}
		}
	}
	return missing
}

func provided(name string, families map[string]*dto.MetricFamily) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch families[base].GetType() {
		case dto.MetricType_HISTOGRAM:
			return true
		case dto.MetricType_SUMMARY:
			return suffix != "_bucket"
		}
	}
	return false
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`lottery_agencies`, []string{"lottery_agencies"}},
		{`sum(rate(lottery_bets_stored_total{instance=~"$instance"}[$__rate_interval]))`, []string{"lottery_bets_stored_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(lottery_commit_duration_seconds_bucket[5m])))`,
			[]string{"lottery_commit_duration_seconds_bucket"}},
		{`sum(rate(x_sum[1m])) without (code, instance) / on(job) group_left(instance) sum(rate(x_count[1m]))`,
			[]string{"x_sum", "x_count"}},
		{`max(a) / max(b) > 0.5 and c offset 5m`, []string{"a", "b", "c"}},
		{`sum by (code) (rate(d{code!="by (x)", le="{[}"}[$__interval])) > 1e3`, []string{"d"}},
		{`topk(5, sum without(le) (e)) or vector(0) unless bool f`, []string{"e", "f"}},
		{`rate(g[5m:30s] @ end()) * Inf + NaN - ${window_seconds}`, []string{"g"}},
		{`label_replace(h, "dst", "$1", "src", "(.*)")`, []string{"h"}},
		{`ns:recorded:rate5m{instance="x"}`, []string{"ns:recorded:rate5m"}},
		{`0x1F + 1.5 - .25`, nil},
	}
	for _, tt := range tests {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

// TestMissingMetricsCatchesUnknownNames is the negative test: made-up names
// and a histogram suffix on a plain counter must be reported.
func TestMissingMetricsCatchesUnknownNames(t *testing.T) {
	fam := gather(t, New(1))
	exprs := []string{
		`sum(rate(lottery_bets_stored_total[5m]))`,
		`histogram_quantile(0.9, sum by (le) (rate(lottery_commit_duration_seconds_bucket[5m])))`,
		`sum(rate(lottery_bets_discarded_total{instance=~"$instance"}[5m]))`,
		`rate(lottery_bets_stored_total_bucket[5m])`,
		`lottery_commit_duration_seconds_bucket_bucket`,
		`go_gc_duration_seconds_bucket`,
		`go_gc_duration_seconds_count`,
	}
	want := []string{"lottery_bets_discarded_total", "lottery_bets_stored_total_bucket",
		"lottery_commit_duration_seconds_bucket_bucket", "go_gc_duration_seconds_bucket"}
	if got := missingMetrics(exprs, fam); !slices.Equal(got, want) {
		t.Errorf("missingMetrics = %q, want %q", got, want)
	}
}

// dashPanel is the part of a Grafana panel the test reads.
type dashPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"`
}

type dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Definition string          `json:"definition"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// walk calls fn for every panel, rows' nested panels included.
func walk(panels []dashPanel, fn func(dashPanel)) {
	for _, p := range panels {
		fn(p)
		walk(p.Panels, fn)
	}
}

// TestDashboardQueriesExistingMetrics fails when a panel queries a metric the
// registry does not provide, or when a lottery metric has no panel.
func TestDashboardQueriesExistingMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatalf("read dashboard: %v", err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("parse dashboard: %v", err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("dashboard uid %q, title %q, schemaVersion %d", d.UID, d.Title, d.SchemaVersion)
	}

	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Fatalf("no datasource variable: the dashboard would not import into another Grafana")
	}

	fam := gather(t, New(1))
	var exprs []string
	ids := map[int]string{}
	used := map[string]bool{}
	walk(d.Panels, func(p dashPanel) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panel %q reuses id %d of %q", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			return
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricNames(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q selects no metric", p.Title, tg.Expr)
			}
			if missing := missingMetrics([]string{tg.Expr}, fam); len(missing) > 0 {
				t.Errorf("panel %q queries %q, which the registry does not provide", p.Title, missing)
			}
			for _, n := range names {
				for _, s := range []string{"", "_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(n, s); ok && fam[base] != nil {
						used[base] = true
					}
				}
			}
			exprs = append(exprs, tg.Expr)
		}
	})
	if len(exprs) == 0 {
		t.Fatal("dashboard has no queries")
	}

	// Variable queries use Grafana's label_values(metric, label).
	labelValues := regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: unexpected query %q", v.Name, v.Definition)
		} else if !provided(m[1], fam) {
			t.Errorf("variable %s queries %s, which the registry does not provide", v.Name, m[1])
		}
	}

	for name := range fam {
		if strings.HasPrefix(name, "lottery_") && !used[name] {
			t.Errorf("metric %s has no panel", name)
		}
	}
}
