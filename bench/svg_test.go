package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
)

type svgPolyline struct {
	Name   string `xml:"data-name,attr"`
	Points string `xml:"points,attr"`
	Dash   string `xml:"stroke-dasharray,attr"`
}

type svgPanel struct {
	Lines []svgPolyline `xml:"polyline"`
}

type svgDoc struct {
	XMLName xml.Name   `xml:"svg"`
	Width   int        `xml:"width,attr"`
	Height  int        `xml:"height,attr"`
	Panels  []svgPanel `xml:"g"`
}

func parsePoints(t *testing.T, s string) [][2]float64 {
	t.Helper()
	var out [][2]float64
	for _, p := range strings.Fields(s) {
		xs, ys, ok := strings.Cut(p, ",")
		x, err1 := strconv.ParseFloat(xs, 64)
		y, err2 := strconv.ParseFloat(ys, 64)
		if !ok || err1 != nil || err2 != nil {
			t.Fatalf("bad point %q", p)
		}
		out = append(out, [2]float64{x, y})
	}
	return out
}

func scaleRuns() []RunResult {
	var runs []RunResult
	for i, k := range []int{10, 100, 1000, 10000} {
		runs = append(runs,
			RunResult{Impl: ImplGnet, Agencies: k, BetsPerSec: float64(100000 * (i + 1)), RSSPerWaitingConnBytes: 2048, DrawToLastWinnersMs: float64(10 * (i + 1))},
			RunResult{Impl: ImplStdlib, Agencies: k, BetsPerSec: float64(90000 * (i + 1)), RSSPerWaitingConnBytes: 8192, DrawToLastWinnersMs: float64(12 * (i + 1))})
	}
	return runs
}

func TestSVGIsWellFormedWithOneLinePerServerAndPanel(t *testing.T) {
	r := &Report{Runs: scaleRuns(), Limits: Limits{CeilingBetsPerSec: 600000}}
	var buf bytes.Buffer
	if err := r.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
	}
	var doc svgDoc
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Panels) != 3 {
		t.Fatalf("%d panels, want 3", len(doc.Panels))
	}
	wantLines := []int{3, 4, 2} // the ceiling on throughput; the idle measure on memory
	for i, p := range doc.Panels {
		if len(p.Lines) != wantLines[i] {
			t.Errorf("panel %d has %d lines, want %d", i, len(p.Lines), wantLines[i])
		}
		for _, l := range p.Lines {
			pts := parsePoints(t, l.Points)
			if len(pts) != 4 {
				t.Errorf("panel %d line %s has %d points, want 4", i, l.Name, len(pts))
			}
			for j, pt := range pts {
				if pt[0] < 0 || pt[0] > float64(doc.Width) || pt[1] < 0 || pt[1] > float64(doc.Height) {
					t.Errorf("panel %d line %s point %v outside the %dx%d canvas", i, l.Name, pt, doc.Width, doc.Height)
				}
				if j > 0 && pt[0] <= pts[j-1][0] {
					t.Errorf("panel %d line %s: x does not grow with K: %v", i, l.Name, pts)
				}
			}
		}
	}
	// Log scale: 10 -> 100 -> 1000 -> 10000 are evenly spaced.
	pts := parsePoints(t, doc.Panels[0].Lines[0].Points)
	d1, d3 := pts[1][0]-pts[0][0], pts[3][0]-pts[2][0]
	if d1 < d3*0.99 || d1 > d3*1.01 {
		t.Errorf("x steps %v and %v differ: not a log scale", d1, d3)
	}
	// Higher throughput is drawn higher (smaller y): gnet over stdlib.
	g, s := parsePoints(t, doc.Panels[0].Lines[0].Points), parsePoints(t, doc.Panels[0].Lines[1].Points)
	if doc.Panels[0].Lines[0].Name != ImplGnet || g[3][1] >= s[3][1] {
		t.Errorf("gnet at K=10000 drawn at y=%v, stdlib at y=%v; want gnet higher", g[3][1], s[3][1])
	}
	// Memory panel: 2 KiB (gnet) is drawn lower than 8 KiB (stdlib).
	gm, sm := parsePoints(t, doc.Panels[1].Lines[0].Points), parsePoints(t, doc.Panels[1].Lines[1].Points)
	if gm[0][1] <= sm[0][1] {
		t.Errorf("memory: gnet y=%v, stdlib y=%v; want gnet lower", gm[0][1], sm[0][1])
	}
	if c := doc.Panels[0].Lines[2]; c.Name != "machine ceiling" || c.Dash == "" {
		t.Errorf("third throughput line = %+v, want the dashed ceiling", c)
	}
	if l := doc.Panels[1].Lines[2]; l.Name != "gnet idle (after HELLO)" || l.Dash == "" {
		t.Errorf("third memory line = %+v, want gnet's dotted idle measure", l)
	}
	for _, label := range []string{"bets/s, log scale", "KiB, log scale", "ms, log scale"} {
		if strings.Contains(buf.String(), label) {
			t.Errorf("values within a factor of 20 got a log y axis: %q", label)
		}
	}
}

func TestSVGLogYWhenValuesSpanDecades(t *testing.T) {
	runs := scaleRuns()
	limits := &Limits{CeilingBetsPerSec: 1e8, Disk: []DiskLimit{{Agencies: 10, CeilingBetsPerSec: 1e6}, {Agencies: 10000, CeilingBetsPerSec: 1e8}}}
	panels := chartPanels(runs, limits)
	ceil := panels[0].Series[2]
	if ceil.Points[0].Y != 1e6 || ceil.Points[3].Y != 1e8 || ceil.Points[1].Y != 1e8 {
		t.Errorf("ceiling points %v: want the per-K ceiling where measured, the overall one elsewhere", ceil.Points)
	}
	a := newAxes(panels[0], 0, 0)
	if !a.logY {
		t.Fatal("90k to 100M bets/s on a linear axis")
	}
	// Equal ratios are equal distances on a log axis.
	d1, d2 := a.y(1e5)-a.y(1e6), a.y(1e6)-a.y(1e7)
	if math.Abs(d1-d2) > 0.01 || d1 <= 0 {
		t.Errorf("log y: 1e5->1e6 is %v units, 1e6->1e7 is %v", d1, d2)
	}
	if y := a.y(0); y != a.y0+plotH {
		t.Errorf("zero on a log axis at %v, want the bottom %v", y, a.y0+plotH)
	}
	var buf bytes.Buffer
	if err := (&Report{Runs: runs, Limits: *limits}).WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "bets/s, log scale") {
		t.Error("the log axis is not labelled as such")
	}
}

func TestSVGWithOneRun(t *testing.T) {
	r := &Report{Runs: []RunResult{{Impl: ImplGnet, Agencies: 20, BetsPerSec: 5, RSSPerWaitingConnBytes: -100}}}
	var buf bytes.Buffer
	if err := r.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	var doc svgDoc
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("SVG is not XML: %v", err)
	}
	for i, p := range doc.Panels {
		want := 1
		if i == 1 {
			want = 2 // waiting and idle
		}
		if len(p.Lines) != want {
			t.Errorf("panel %d: %d lines, want %d", i, len(p.Lines), want)
		}
		for _, l := range p.Lines {
			if len(parsePoints(t, l.Points)) != 1 {
				t.Errorf("panel %d line %s: %q, want one point", i, l.Name, l.Points)
			}
		}
	}
	if strings.Contains(buf.String(), "NaN") || strings.Contains(buf.String(), "Inf") {
		t.Error("SVG holds NaN or Inf coordinates")
	}
}

func TestNiceStepAndCompact(t *testing.T) {
	for v, want := range map[float64]float64{0: 1, 0.7: 1, 1: 1, 1.5: 2, 3: 5, 7: 10, 120: 200, 45000: 50000} {
		if got := niceStep(v); got != want {
			t.Errorf("niceStep(%v) = %v, want %v", v, got, want)
		}
	}
	for v, want := range map[float64]string{0: "0", 2.5: "2.5", 950: "950", 12000: "12k", 1500000: "1.5M", 2e9: "2G"} {
		if got := compact(v); got != want {
			t.Errorf("compact(%v) = %q, want %q", v, got, want)
		}
	}
	if got := esc(`a<b & "c"`); got != "a&lt;b &amp; &#34;c&#34;" {
		t.Errorf("esc = %q", got)
	}
}

// TestSVGStormPanelAndVariants adds storms, insecure runs and a metrics run
// to the scale runs: four panels two by two, one line per variant, the
// metrics run left out, every point on the canvas.
func TestSVGStormPanelAndVariants(t *testing.T) {
	var runs []RunResult
	for _, r := range scaleRuns() {
		r.Security = Secure
		r.StormSec = float64(r.Agencies) / 2000
		runs = append(runs, r)
		if r.Impl == ImplGnet {
			r.Security, r.BetsPerSec = Insecure, r.BetsPerSec*1.1
			runs = append(runs, r)
			r.Security, r.Metrics = Secure, true
			runs = append(runs, r)
		}
	}
	r := &Report{Runs: runs, Limits: Limits{CeilingBetsPerSec: 600000}}
	var buf bytes.Buffer
	if err := r.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	var doc svgDoc
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("SVG is not XML: %v", err)
	}
	if len(doc.Panels) != 4 || doc.Width != 2*panelW || doc.Height <= 2*panelH {
		t.Fatalf("%d panels on %dx%d, want 4 two by two", len(doc.Panels), doc.Width, doc.Height)
	}
	var names []string
	for _, l := range doc.Panels[3].Lines {
		names = append(names, l.Name)
	}
	if strings.Join(names, ",") != "gnet,gnet insecure,stdlib" {
		t.Errorf("storm panel lines %v, want gnet, gnet insecure, stdlib (no metrics run)", names)
	}
	if n := len(doc.Panels[0].Lines); n != 4 {
		t.Errorf("throughput panel has %d lines, want 3 variants and the ceiling", n)
	}
	for i, p := range doc.Panels {
		for _, l := range p.Lines {
			for _, pt := range parsePoints(t, l.Points) {
				if pt[0] < 0 || pt[0] > float64(doc.Width) || pt[1] < 0 || pt[1] > float64(doc.Height) {
					t.Errorf("panel %d line %s point %v outside the %dx%d canvas", i, l.Name, pt, doc.Width, doc.Height)
				}
			}
		}
	}
	// The bottom row (draw, storm) sits below the top one (throughput, memory).
	lowestTop, highestBottom := 0.0, float64(doc.Height)
	for i, p := range doc.Panels {
		for _, l := range p.Lines {
			for _, pt := range parsePoints(t, l.Points) {
				if i < 2 {
					lowestTop = max(lowestTop, pt[1])
				} else {
					highestBottom = min(highestBottom, pt[1])
				}
			}
		}
	}
	if highestBottom <= lowestTop {
		t.Errorf("a bottom-row point at y %v is not below every top-row point (lowest %v)", highestBottom, lowestTop)
	}
	if !strings.Contains(buf.String(), "Reconnect storm") {
		t.Error("no storm panel title")
	}
}
