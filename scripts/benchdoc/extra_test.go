package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGlass parses the lines web/g2g_test.go logs, and says why there are
// no figures when the test was skipped, did not run, or failed early.
func TestGlass(t *testing.T) {
	const out = `=== RUN   TestGlassToGlass
=== RUN   TestGlassToGlass/webrtc
    g2g_test.go:158: webrtc: g2g-a-webrtc: accept to first remote frame shown: 412 ms
    g2g_test.go:158: webrtc: g2g-b-webrtc: accept to first remote frame shown: 530 ms
    g2g_test.go:176: webrtc: glass-to-glass g2g-a-webrtc -> g2g-b-webrtc over 10 s: median 95 ms, p95 180 ms, min 60 ms, max 250 ms (290 frames read, 0 unreadable); load average 1.5
=== RUN   TestGlassToGlass/relay
    g2g_test.go:158: relay: g2g-a-relay: accept to first remote frame shown: 900 ms
    g2g_test.go:158: relay: g2g-b-relay: accept to first remote frame shown: 700 ms
    g2g_test.go:176: relay: glass-to-glass g2g-a-relay -> g2g-b-relay over 10 s: median 610 ms, p95 820 ms, min 500 ms, max 900 ms (280 frames read, 1 unreadable); load average 1.7
--- PASS: TestGlassToGlass (30.00s)
`
	for _, tc := range []struct {
		name     string
		files    map[string]string
		measured bool
		note     string
	}{
		{"measured", map[string]string{"g2g.txt": out, "g2g.status": "0\n"}, true, ""},
		{"failed after figures", map[string]string{"g2g.txt": out, "g2g.status": "1\n"}, true, "exit status 1"},
		{"chromium missing", map[string]string{"g2g.skipped": "chromium not found\n"}, false, "chromium not found"},
		{"not run", map[string]string{}, false, "no g2g.txt"},
		{"skipped", map[string]string{"g2g.txt": "=== RUN   TestGlassToGlass\n    g2g_test.go:12: no chromium on PATH\n--- SKIP: TestGlassToGlass (0.00s)\n", "g2g.status": "0\n"}, false, "no chromium on PATH"},
		{"no figure lines", map[string]string{"g2g.txt": "--- PASS: TestGlassToGlass (3.00s)\n", "g2g.status": "0\n"}, false, "log wording"},
		{"failed early", map[string]string{"g2g.txt": "--- FAIL: TestGlassToGlass (3.00s)\n", "g2g.status": "1\n"}, false, "exit status 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			g, err := loadGlass(dir)
			if err != nil {
				t.Fatal(err)
			}
			if g.Measured != tc.measured || !strings.Contains(g.Note, tc.note) || (tc.note == "" && g.Note != "") {
				t.Fatalf("measured %v note %q, want %v and a note with %q", g.Measured, g.Note, tc.measured, tc.note)
			}
			if tc.measured {
				want := glass{WebRTC: glassMode{true, 95, 180, 530}, Relay: glassMode{true, 610, 820, 900}}
				if g.WebRTC != want.WebRTC || g.Relay != want.Relay {
					t.Errorf("got %+v %+v, want %+v %+v", g.WebRTC, g.Relay, want.WebRTC, want.Relay)
				}
			}
		})
	}
}

// TestBaseline renders the comparison from alternating runs, and nothing
// when the run had no BASELINE.
func TestBaseline(t *testing.T) {
	dir := t.TempDir()
	report := func(ns string) string {
		return `{"header":{"time":"2026-11-26T12:00:00Z"},"summary":{"server_cpu_per_setup_ns":` + ns + `}}`
	}
	writeFiles(t, dir, map[string]string{
		"cmp-paced-baseline-1.json":   report("100000"),
		"cmp-paced-current-1.json":    report("50000"),
		"cmp-paced-baseline-2.json":   report("120000"),
		"cmp-paced-current-2.json":    report("60000"),
		"cmp-unpaced-baseline-1.json": report("40000"),
		"cmp-unpaced-current-1.json":  report("40000"),
	})
	d, err := load(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := d.loadComparison(); c != nil || err != nil {
		t.Fatalf("without baseline.commit: %v, %v", c, err)
	}
	writeFiles(t, dir, map[string]string{"baseline.commit": "9571b55 old\n", "current.commit": "574c029 new\n"})
	c, err := d.loadComparison()
	if err != nil {
		t.Fatal(err)
	}
	got := c.Table()
	for _, want := range []string{
		"baseline `9571b55` | current `574c029`",
		"| **110.0 µs** (runs: 100.0, 120.0) | **55.0 µs** (runs: 50.0, 60.0) | **0.50** |",
		"| **40.0 µs** (runs: 40.0) | **40.0 µs** (runs: 40.0) | **1.00** |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

// TestCurve renders the reconnect curve from a report: every point of a
// short storm, a long one thinned with its last point kept, and an error
// (not a blank table) when the report has no curve.
func TestCurve(t *testing.T) {
	report := func(curve string) string {
		return `{"header":{"time":"2026-11-26T12:00:00Z"},"result":{"devices":10000` + curve + `}}`
	}
	var long []string
	for i := 1; i <= 240; i++ {
		long = append(long, fmt.Sprintf(`{"at_ns":%d,"back":%d}`, i*250_000_000, min(10000, i*42)))
	}
	for _, tc := range []struct {
		name, json string
		rows       int
		want       []string
		err        string
	}{
		{"short", report(`,"curve":[{"at_ns":250000000,"back":1200},{"at_ns":500000000,"back":5000},{"at_ns":3270000000,"back":10000}]`), 3, []string{
			"| 0.25 s | 1,200 (12 %) | `████" + strings.Repeat("·", 26) + "` |",
			"| 0.50 s | 5,000 (50 %) | `" + strings.Repeat("█", 15) + strings.Repeat("·", 15) + "` |",
			"| 3.27 s | 10,000 (100 %) | `" + strings.Repeat("█", 30) + "` |",
		}, ""},
		{"long, thinned", report(`,"curve":[` + strings.Join(long, ",") + `]`), 25, []string{
			"| 0.25 s | 42 (0 %) |", "| 60.00 s | 10,000 (100 %) |",
		}, ""},
		{"no curve", report(``), 0, nil, "no result field curve"},
		{"empty curve", report(`,"curve":[]`), 0, nil, "empty curve"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"reconnect.json": tc.json})
			d, err := load(dir, false)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.curveTable("reconnect")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(got, "\n") - 2; n != tc.rows {
				t.Errorf("%d rows, want %d:\n%s", n, tc.rows, got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("table lacks %q:\n%s", w, got)
				}
			}
		})
	}
}
