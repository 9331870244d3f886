package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// glassMode is what the glass-to-glass browser test logged for one media
// mode (webrtc or relay).
type glassMode struct {
	Found       bool
	Median, P95 float64 // ms, camera clock to the receiver's presented frame
	// FirstFrame is accept → first remote frame shown, ms, of the slower
	// of the two sides.
	FirstFrame float64
}

// glass is the glass-to-glass section's data: Measured, or a Note saying
// why not.
type glass struct {
	Measured      bool
	Note          string
	WebRTC, Relay glassMode
}

var (
	g2gLine   = regexp.MustCompile(`(\w+): glass-to-glass .*: median (\d+(?:\.\d+)?) ms, p95 (\d+(?:\.\d+)?) ms`)
	firstLine = regexp.MustCompile(`(\w+): \S+: accept to first remote frame shown: (\d+(?:\.\d+)?) ms`)
	skipLine  = regexp.MustCompile(`--- SKIP: TestGlassToGlass|^\s+\S+_test\.go:\d+: (.*)$`)
)

// loadGlass reads the test's output (g2g.txt, its exit status g2g.status)
// or the reason it did not run (g2g.skipped). The test prints its figures
// with t.Logf; the lines it parses are those of web/g2g_test.go.
func loadGlass(dir string) (*glass, error) {
	g := &glass{}
	if b, err := os.ReadFile(filepath.Join(dir, "g2g.skipped")); err == nil {
		g.Note = "not measured in this run: " + strings.TrimSpace(string(b)) + " (the test drives headless Chromium)."
		return g, nil
	}
	f, err := os.Open(filepath.Join(dir, "g2g.txt"))
	if os.IsNotExist(err) {
		g.Note = "not measured in this run (no g2g.txt)."
		return g, nil
	} else if err != nil {
		return nil, err
	}
	defer f.Close()
	modes := map[string]*glassMode{"webrtc": &g.WebRTC, "relay": &g.Relay}
	skipped, lastLog := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := g2gLine.FindStringSubmatch(line); m != nil && modes[m[1]] != nil {
			gm := modes[m[1]]
			gm.Found = true
			gm.Median, _ = strconv.ParseFloat(m[2], 64)
			gm.P95, _ = strconv.ParseFloat(m[3], 64)
		} else if m := firstLine.FindStringSubmatch(line); m != nil && modes[m[1]] != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			modes[m[1]].FirstFrame = max(modes[m[1]].FirstFrame, v)
		} else if m := skipLine.FindStringSubmatch(line); m != nil {
			if m[1] != "" {
				lastLog = m[1]
			} else {
				skipped = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	status := "0"
	if b, err := os.ReadFile(filepath.Join(dir, "g2g.status")); err == nil {
		status = strings.TrimSpace(string(b))
	}
	switch {
	case skipped:
		g.Note = "not measured in this run: the test skipped (" + lastLog + ")."
	case !g.WebRTC.Found && !g.Relay.Found && status == "0":
		g.Note = "not measured in this run: the test passed but printed no line benchdoc reads (did web/g2g_test.go's log wording change?)."
	case !g.WebRTC.Found && !g.Relay.Found:
		g.Note = fmt.Sprintf("not measured in this run: the test failed (exit status %s) before printing figures (its output: g2g.txt in the work dir, KEEP=1).", status)
	default:
		g.Measured = true
		if status != "0" {
			g.Note = fmt.Sprintf("the test then failed (exit status %s); the figures below are those it printed.", status)
		}
	}
	return g, nil
}

// comparison is the baseline section's data: server CPU per call setup of
// the baseline's server against this build's, from runs that alternated.
type comparison struct {
	Baseline, Current string // "abc1234 subject"
	Rows              []comparisonRow
}

type comparisonRow struct {
	Name              string
	Baseline, Current []float64 // ns per setup, one per run, in run order
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// Table renders the comparison as a markdown table.
func (c *comparison) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| server CPU per setup | baseline `%s` | current `%s` | ratio current / baseline |\n|---|---|---|---|\n",
		strings.Fields(c.Baseline + " ?")[0], strings.Fields(c.Current + " ?")[0])
	runs := func(v []float64) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = fmt.Sprintf("%.1f", x/1e3)
		}
		return fmt.Sprintf("**%.1f µs** (runs: %s)", mean(v)/1e3, strings.Join(s, ", "))
	}
	for _, r := range c.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | **%.2f** |\n", r.Name, runs(r.Baseline), runs(r.Current), mean(r.Current)/mean(r.Baseline))
	}
	return b.String()
}

// loadComparison returns nil when the run had no BASELINE.
func (d *doc) loadComparison() (*comparison, error) {
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(d.dir, name))
		return strings.TrimSpace(string(b)), err
	}
	base, err := read("baseline.commit")
	if os.IsNotExist(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	cur, err := read("current.commit")
	if err != nil {
		return nil, err
	}
	c := &comparison{Baseline: base, Current: cur}
	for _, m := range []struct{ key, name string }{
		{"paced", "20 pairs, paced (default limit)"},
		{"unpaced", "20 pairs, unpaced (`-msg-rate -1`)"},
	} {
		row := comparisonRow{Name: m.name}
		for i := 1; ; i++ {
			b, okb := d.reports[fmt.Sprintf("cmp-%s-baseline-%d", m.key, i)]
			c, okc := d.reports[fmt.Sprintf("cmp-%s-current-%d", m.key, i)]
			if !okb || !okc {
				break
			}
			row.Baseline = append(row.Baseline, b.Summary["server_cpu_per_setup_ns"])
			row.Current = append(row.Current, c.Summary["server_cpu_per_setup_ns"])
		}
		if len(row.Baseline) == 0 {
			return nil, fmt.Errorf("baseline.commit but no cmp-%s-baseline-1.json and cmp-%s-current-1.json in %s", m.key, m.key, d.dir)
		}
		c.Rows = append(c.Rows, row)
	}
	return c, nil
}

// curvePoint is one point of the reconnect scenario's curve, as its -json
// report holds it (result.curve).
type curvePoint struct {
	At   float64 `json:"at_ns"`
	Back float64 `json:"back"`
}

// maxCurveRows bounds the curve table: a slow storm (a point every 250 ms
// for up to 60 s) is thinned to about this many rows, the last point kept.
const maxCurveRows = 24

// curveTable renders a reconnect report's curve (devices back against time
// after the new server first answered) as a markdown table with a bar per
// row.
func (d *doc) curveTable(name string) (string, error) {
	r, err := d.report(name)
	if err != nil {
		return "", err
	}
	raw, ok := r.Result["curve"]
	if !ok {
		return "", fmt.Errorf("report %s has no result field curve", name)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return "", err
	}
	var pts []curvePoint
	if err := json.Unmarshal(b, &pts); err != nil {
		return "", fmt.Errorf("report %s: curve: %w", name, err)
	}
	devices, _ := r.Result["devices"].(float64)
	if len(pts) == 0 || devices <= 0 {
		return "", fmt.Errorf("report %s: an empty curve (%d points, %g devices)", name, len(pts), devices)
	}
	return renderCurve(pts, devices), nil
}

func renderCurve(pts []curvePoint, devices float64) string {
	step := (len(pts) + maxCurveRows - 1) / maxCurveRows
	var sb strings.Builder
	sb.WriteString("| after the new server accepted connections | devices back | |\n|---|---|---|\n")
	for i, p := range pts {
		if i%step != 0 && i != len(pts)-1 {
			continue
		}
		frac := p.Back / devices
		bar := int(math.Round(30 * min(max(frac, 0), 1)))
		fmt.Fprintf(&sb, "| %.2f s | %s (%.0f %%) | `%s%s` |\n", p.At/1e9, group(fmt.Sprintf("%.0f", p.Back)), 100*frac,
			strings.Repeat("█", bar), strings.Repeat("·", 30-bar))
	}
	return sb.String()
}
