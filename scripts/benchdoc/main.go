// Command benchdoc renders docs/benchmarks.md from what scripts/bench.sh
// measured: the -json reports of umplug bench (NAME.json), the commands that
// produced them (NAME.cmd), and benchstat outputs (NAME.benchstat), all in
// one directory. Every figure in the document comes from those files, so
// the document cannot drift from a run.
//
//	go run ./scripts/benchdoc -dir REPORTS -template scripts/benchmarks.md.tmpl -out docs/benchmarks.md
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchdoc:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("benchdoc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory of the run's reports (NAME.json, NAME.cmd, NAME.benchstat)")
	tmpl := fs.String("template", "scripts/benchmarks.md.tmpl", "document template")
	out := fs.String("out", "docs/benchmarks.md", "document to write")
	quick := fs.Bool("quick", false, "the run used QUICK=1 sizes: label the document so")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-dir is required")
	}
	d, err := load(*dir, *quick)
	if err != nil {
		return err
	}
	t, err := template.New(filepath.Base(*tmpl)).Funcs(d.funcs()).ParseFiles(*tmpl)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, d); err != nil {
		return err
	}
	return os.WriteFile(*out, buf.Bytes(), 0o644)
}

// report is the part of an umplug bench -json report the document uses.
type report struct {
	Header struct {
		Time           time.Time      `json:"time"`
		Commit         string         `json:"commit"`
		CommitModified bool           `json:"commit_modified"`
		CommitSource   string         `json:"commit_source"`
		GoVersion      string         `json:"go_version"`
		GOOS           string         `json:"goos"`
		GOARCH         string         `json:"goarch"`
		GOMAXPROCS     int            `json:"gomaxprocs"`
		NumCPU         int            `json:"num_cpu"`
		CPUModel       string         `json:"cpu_model"`
		Config         map[string]any `json:"config"`
	} `json:"header"`
	Summary map[string]float64 `json:"summary"`
	Result  map[string]any     `json:"result"`
	Rows    []struct {
		Metric string `json:"metric"`
		Value  string `json:"value"`
		Target string `json:"target"`
	} `json:"rows"`
}

// doc is the template's data.
type doc struct {
	dir     string
	Quick   bool
	reports map[string]*report
	// Of the first report: the build and machine every scenario ran on.
	Commit, CommitSource string
	Go, Platform, CPU    string
	GOMAXPROCS, NumCPU   int
	MemTotal             string
	Date                 string
	TotalMinutes         string
	// LoadStart and LoadEnd are the machine's load averages (1, 5, 15
	// min) when the run started and ended: how busy it was besides.
	LoadStart, LoadEnd string
}

func load(dir string, quick bool) (*doc, error) {
	d := &doc{dir: dir, Quick: quick, reports: map[string]*report{}}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no reports (*.json) in %s", dir)
	}
	var first *report
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		d.reports[strings.TrimSuffix(filepath.Base(f), ".json")] = &r
		if first == nil || r.Header.Time.Before(first.Header.Time) {
			first = &r
		}
	}
	h := first.Header
	d.Commit = h.Commit
	if d.Commit == "" {
		d.Commit = "unknown"
	}
	if h.CommitModified {
		d.Commit += " (with uncommitted changes)"
	}
	d.CommitSource = h.CommitSource
	d.Go = h.GoVersion
	d.Platform = h.GOOS + "/" + h.GOARCH
	d.CPU = h.CPUModel
	d.GOMAXPROCS, d.NumCPU = h.GOMAXPROCS, h.NumCPU
	d.MemTotal = memTotal()
	d.Date = h.Time.Format("2006-01-02")
	for _, l := range []struct {
		file string
		dst  *string
	}{{"load.start", &d.LoadStart}, {"load.end", &d.LoadEnd}} {
		if b, err := os.ReadFile(filepath.Join(dir, l.file)); err == nil {
			*l.dst = strings.TrimSpace(string(b))
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "total.seconds")); err == nil {
		if s, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			d.TotalMinutes = strconv.Itoa((s + 59) / 60)
		}
	}
	return d, nil
}

// memTotal is this machine's RAM from /proc/meminfo, e.g. "24 GiB".
func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return fmt.Sprintf("%.0f GiB", kb/(1<<20))
		}
	}
	return "unknown"
}

func (d *doc) report(name string) (*report, error) {
	r, ok := d.reports[name]
	if !ok {
		return nil, fmt.Errorf("no report %s.json in %s", name, d.dir)
	}
	return r, nil
}

func (d *doc) funcs() template.FuncMap {
	return template.FuncMap{
		// table renders a scenario's summary table as a code block.
		"table": func(name string) (string, error) {
			r, err := d.report(name)
			if err != nil {
				return "", err
			}
			var b strings.Builder
			tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
			for _, row := range r.Rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", row.Metric, row.Value, row.Target)
			}
			tw.Flush()
			return "```\n" + trimLines(b.String()) + "```", nil
		},
		// cmd renders the commands of a run (NAME.cmd) as a code block.
		"cmd": func(name string) (string, error) {
			b, err := os.ReadFile(filepath.Join(d.dir, name+".cmd"))
			if err != nil {
				return "", err
			}
			return "```sh\n" + string(b) + "```", nil
		},
		// stat renders a benchstat output as a code block.
		"stat": func(name string) (string, error) {
			b, err := os.ReadFile(filepath.Join(d.dir, name+".benchstat"))
			if err != nil {
				return "", err
			}
			return "```\n" + trimLines(string(b)) + "```", nil
		},
		// sum returns one figure of a report's summary.
		"sum": func(name, key string) (float64, error) {
			r, err := d.report(name)
			if err != nil {
				return 0, err
			}
			v, ok := r.Summary[key]
			if !ok {
				return 0, fmt.Errorf("report %s has no summary figure %s", name, key)
			}
			return v, nil
		},
		// config returns one setting of a report's configuration.
		"config": func(name, key string) (any, error) {
			r, err := d.report(name)
			if err != nil {
				return nil, err
			}
			return r.Header.Config[key], nil
		},
		// glass is the glass-to-glass browser test's figures (g2g.txt).
		"glass": func() (*glass, error) { return loadGlass(d.dir) },
		// curve is the reconnect storm's curve as a table.
		"curve": d.curveTable,
		// baseline is the same-run comparison with BASELINE, or nil.
		"baseline": d.loadComparison,
		// result returns one field of a report's result (for figures the
		// scenario keeps out of its configuration, e.g. webrtc's pairs).
		"result": func(name, key string) (any, error) {
			r, err := d.report(name)
			if err != nil {
				return nil, err
			}
			v, ok := r.Result[key]
			if !ok {
				return nil, fmt.Errorf("report %s has no result field %s", name, key)
			}
			return v, nil
		},
		"seconds": func(name string) string {
			b, _ := os.ReadFile(filepath.Join(d.dir, name+".seconds"))
			return strings.TrimSpace(string(b))
		},
		"kib": func(bytes float64) string { return fmt.Sprintf("%.2f KiB", bytes/1024) },
		"mib": func(bytes float64) string { return fmt.Sprintf("%.1f MiB", bytes/(1<<20)) },
		"ms":  func(ns float64) string { return fmt.Sprintf("%.2f ms", ns/1e6) },
		"us":  func(ns float64) string { return fmt.Sprintf("%.1f µs", ns/1e3) },
		"f0":  func(v float64) string { return group(fmt.Sprintf("%.0f", v)) },
		"f2":  func(v float64) string { return fmt.Sprintf("%.2f", v) },
	}
}

// trimLines drops trailing spaces (tabwriter pads the last column) and
// makes sure the text ends in a newline.
func trimLines(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n") + "\n"
}

// group puts thousands separators into an integer string: 11712 → 11,712.
func group(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
