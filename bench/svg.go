package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// point is one measurement: X is the number of agencies.
type point struct{ X, Y float64 }

// series is one line of a panel.
type series struct {
	Name   string
	Color  string
	Dashed bool // a reference line, drawn without markers
	Dotted bool
	Points []point
}

// panel is one chart: series against a log-scale x axis.
type panel struct {
	Title  string
	YLabel string
	Series []series
}

// Colors of the lines, by variant: the main ones strong, --insecure ones light.
var variantColors = map[string]string{
	ImplGnet: "#1f77b4", ImplStdlib: "#d62728",
	ImplGnet + " insecure": "#7fb2dc", ImplStdlib + " insecure": "#ec9191",
}

// WriteSVG draws throughput, memory per connection, draw latency and the
// reconnect storm against the number of agencies (log scale), one line per
// server variant (runs with metrics on are left out); the throughput panel
// also shows the machine's ceiling when it was measured, and the memory
// panel both the waiting (solid) and the idle (dotted) measure.
func (r *Report) WriteSVG(w io.Writer) error {
	return writeChart(w, "Event servers vs agencies", chartPanels(r.Runs, &r.Limits))
}

// chartPanels turns runs into the panels of the chart; the storm panel only
// when some run had a storm.
func chartPanels(runs []RunResult, limits *Limits) []panel {
	panels := []panel{
		{Title: "Durable throughput", YLabel: "bets/s"},
		{Title: "Server memory per connection", YLabel: "KiB"},
		{Title: "Last FINISHED to last WINNERS", YLabel: "ms"},
		{Title: "Reconnect storm after a restart", YLabel: "s to the last WELCOME"},
	}
	var names []string
	var ks []float64
	var idleSeries []series
	storms := false
	for _, r := range runs {
		if r.Metrics || r.VariantLogLevel != "" {
			continue
		}
		if name := r.variant().String(); !slices.Contains(names, name) {
			names = append(names, name)
		}
		if !slices.Contains(ks, float64(r.Agencies)) {
			ks = append(ks, float64(r.Agencies))
		}
		storms = storms || r.StormSec > 0
	}
	slices.Sort(ks)
	for _, name := range names {
		color := variantColors[name]
		if color == "" {
			color = "#555555"
		}
		var tp, mem, idle, draw, storm []point
		for _, r := range runs {
			if r.Metrics || r.VariantLogLevel != "" || r.variant().String() != name {
				continue
			}
			x := float64(r.Agencies)
			tp = append(tp, point{x, r.BetsPerSec})
			mem = append(mem, point{x, r.RSSPerWaitingConnBytes / 1024})
			idle = append(idle, point{x, r.RSSPerIdleConnBytes / 1024})
			draw = append(draw, point{x, r.DrawToLastWinnersMs})
			if r.StormSec > 0 {
				storm = append(storm, point{x, r.StormSec})
			}
		}
		for _, pts := range [][]point{tp, mem, idle, draw, storm} {
			slices.SortFunc(pts, func(a, b point) int { return cmpFloat(a.X, b.X) })
		}
		panels[0].Series = append(panels[0].Series, series{Name: name, Color: color, Points: tp})
		panels[1].Series = append(panels[1].Series, series{Name: name, Color: color, Points: mem})
		panels[2].Series = append(panels[2].Series, series{Name: name, Color: color, Points: draw})
		if len(storm) > 0 {
			panels[3].Series = append(panels[3].Series, series{Name: name, Color: color, Points: storm})
		}
		idleSeries = append(idleSeries, series{Name: name + " idle (after HELLO)", Color: color, Dotted: true, Points: idle})
	}
	panels[1].Series = append(panels[1].Series, idleSeries...)
	if limits.CeilingBetsPerSec > 0 && len(ks) > 0 {
		pts := make([]point, len(ks))
		for i, k := range ks {
			pts[i] = point{k, limits.ceiling(int(k))}
		}
		panels[0].Series = append(panels[0].Series, series{Name: "machine ceiling", Color: "#777777", Dashed: true, Points: pts})
	}
	if !storms {
		panels = panels[:3]
	}
	return panels
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Chart geometry, in SVG user units.
const (
	panelW, panelH           = 420, 320
	marginL, marginR         = 72, 16
	marginT, marginB         = 34, 46
	legendH                  = 52 // with one line of legend
	legendLine               = 18
	plotW                    = panelW - marginL - marginR
	plotH                    = panelH - marginT - marginB
	chartFont                = "font-family=\"sans-serif\""
	chartMinX, chartMinRange = 1.0, 0.5
)

// chartColumns is how many panels a row of the chart holds at most.
const chartColumns = 3

// writeChart writes the panels as one SVG document, up to chartColumns
// side by side, in as many rows as needed (2 by 2 for four).
func writeChart(w io.Writer, title string, panels []panel) error {
	var b bytes.Buffer
	cols := max(min(len(panels), chartColumns), 1)
	if len(panels) == 4 {
		cols = 2
	}
	rows := max((len(panels)+cols-1)/cols, 1)
	width := panelW * cols
	// One legend for every panel: the series names in order of appearance,
	// wrapped to the chart's width.
	var names []series
	for _, p := range panels {
		for _, s := range p.Series {
			if !slices.ContainsFunc(names, func(x series) bool { return x.Name == s.Name }) {
				names = append(names, s)
			}
		}
	}
	type entry struct {
		s    series
		x, y int
	}
	var legend []entry
	lx, ly := 10, 38
	for _, s := range names {
		w := 40 + 7*len(s.Name)
		if lx > 10 && lx+w > width {
			lx, ly = 10, ly+legendLine
		}
		legend = append(legend, entry{s, lx, ly})
		lx += w
	}
	top := legendH + ly - 38
	height := top + panelH*rows
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s font-size="12">`+"\n",
		width, height, width, height, chartFont)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="16" font-weight="bold">%s</text>`+"\n", 10, esc(title))
	for _, e := range legend {
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2.5"%s/>`, e.x, e.y, e.x+24, e.y, e.s.Color, dash(e.s))
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", e.x+30, e.y+4, esc(e.s.Name))
	}
	for i, p := range panels {
		writePanel(&b, p, float64((i%cols)*panelW), float64(top+(i/cols)*panelH))
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	if err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}

func dash(s series) string {
	switch {
	case s.Dashed:
		return ` stroke-dasharray="6 4"`
	case s.Dotted:
		return ` stroke-dasharray="2 4"`
	}
	return ""
}

// axes maps data to plot coordinates: x on a log10 scale; y linear from 0,
// or log10 when the values span more than logYSpan.
type axes struct {
	x0, y0         float64 // top-left corner of the plot
	logLo, logHi   float64
	yMax           float64
	logY           bool
	yLo, yHi       float64 // log10 bounds of y when logY
	xTicks, yTicks []float64
}

// logYSpan is the ratio of largest to smallest positive value beyond which
// a panel's y axis is logarithmic.
const logYSpan = 20

func newAxes(p panel, x0, y0 float64) axes {
	a := axes{x0: x0 + marginL, y0: y0 + marginT}
	var xs []float64
	yMax, yMinPos := 0.0, math.Inf(1)
	for _, s := range p.Series {
		for _, pt := range s.Points {
			if !slices.Contains(xs, pt.X) {
				xs = append(xs, pt.X)
			}
			if !math.IsNaN(pt.Y) && !math.IsInf(pt.Y, 0) {
				yMax = max(yMax, pt.Y)
				if pt.Y > 0 {
					yMinPos = min(yMinPos, pt.Y)
				}
			}
		}
	}
	slices.Sort(xs)
	lo, hi := chartMinX, chartMinX
	if len(xs) > 0 {
		lo, hi = math.Log10(max(xs[0], chartMinX)), math.Log10(max(xs[len(xs)-1], chartMinX))
	}
	pad := max((hi-lo)*0.08, chartMinRange/2)
	a.logLo, a.logHi = lo-pad, hi+pad
	a.xTicks = xs
	if len(xs) > 8 { // too many to label: powers of ten instead
		a.xTicks = nil
		for e := math.Ceil(a.logLo); e <= a.logHi; e++ {
			a.xTicks = append(a.xTicks, math.Pow(10, e))
		}
	}
	if yMinPos > 0 && yMax/yMinPos > logYSpan {
		a.logY = true
		a.yLo, a.yHi = math.Floor(math.Log10(yMinPos)), math.Ceil(math.Log10(yMax))
		a.yMax = math.Pow(10, a.yHi)
		mults := []float64{1, 2, 5}
		if a.yHi-a.yLo > 3 {
			mults = []float64{1}
		}
		for e := a.yLo; e <= a.yHi; e++ {
			for _, m := range mults {
				if v := m * math.Pow(10, e); v <= a.yMax*1.0001 {
					a.yTicks = append(a.yTicks, v)
				}
			}
		}
		return a
	}
	step := niceStep(yMax / 5)
	a.yMax = step * math.Max(math.Ceil(yMax*1.05/step), 1)
	for v := 0.0; v <= a.yMax*1.0001; v += step {
		a.yTicks = append(a.yTicks, v)
	}
	return a
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p*1.0000001 {
			return m * p
		}
	}
	return 10 * p
}

func (a axes) x(v float64) float64 {
	l := math.Log10(max(v, chartMinX))
	return a.x0 + (l-a.logLo)/(a.logHi-a.logLo)*plotW
}

func (a axes) y(v float64) float64 {
	if a.logY {
		l := a.yLo
		if v > 0 {
			l = min(max(math.Log10(v), a.yLo), a.yHi)
		}
		return a.y0 + plotH - (l-a.yLo)/(a.yHi-a.yLo)*plotH
	}
	v = min(max(v, 0), a.yMax)
	return a.y0 + plotH - v/a.yMax*plotH
}

func writePanel(b *bytes.Buffer, p panel, x0, y0 float64) {
	a := newAxes(p, x0, y0)
	fmt.Fprintf(b, `<g class="panel">`+"\n")
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="14" font-weight="bold">%s</text>`+"\n", a.x0, y0+18, esc(p.Title))
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%d" height="%d" fill="none" stroke="#333333"/>`+"\n", a.x0, a.y0, plotW, plotH)
	for _, v := range a.yTicks {
		y := a.y(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dddddd"/>`, a.x0, y, a.x0+plotW, y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", a.x0-6, y+4, esc(compact(v)))
	}
	for _, v := range a.xTicks {
		x := a.x(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dddddd"/>`, x, a.y0, x, a.y0+plotH)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, a.y0+plotH+16, esc(group(v)))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">agencies (connections), log scale</text>`+"\n",
		a.x0+plotW/2, a.y0+plotH+36)
	ylabel := p.YLabel
	if a.logY {
		ylabel += ", log scale"
	}
	fmt.Fprintf(b, `<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n",
		x0+14, a.y0+plotH/2, esc(ylabel))
	for _, s := range p.Series {
		var pts []string
		for _, pt := range s.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", a.x(pt.X), a.y(pt.Y)))
		}
		fmt.Fprintf(b, `<polyline class="series" data-name="%s" fill="none" stroke="%s" stroke-width="2.5"%s points="%s"/>`+"\n",
			esc(s.Name), s.Color, dash(s), strings.Join(pts, " "))
		if s.Dashed || s.Dotted {
			continue
		}
		for _, pt := range s.Points {
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s K=%s: %s %s</title></circle>`+"\n",
				a.x(pt.X), a.y(pt.Y), s.Color, esc(s.Name), group(pt.X), esc(compact(pt.Y)), esc(p.YLabel))
		}
	}
	b.WriteString("</g>\n")
}

// compact formats a non-negative number briefly: 950, 1.2k, 3.4M.
func compact(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e9:
		return trimZero(v/1e9) + "G"
	case a >= 1e6:
		return trimZero(v/1e6) + "M"
	case a >= 1e4:
		return trimZero(v/1e3) + "k"
	case a >= 100 || a == 0:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func trimZero(v float64) string {
	s := strconv.FormatFloat(v, 'f', 1, 64)
	return strings.TrimSuffix(s, ".0")
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
