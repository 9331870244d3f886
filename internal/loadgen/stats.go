package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// latencies summarises durations.
type latencies struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

func summarize(d []time.Duration) latencies {
	if len(d) == 0 {
		return latencies{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	q := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return latencies{N: len(s), P50: q(0.50), P99: q(0.99), Max: s[len(s)-1]}
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
}

func formatCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

func mib(bytes float64) string {
	return strconv.FormatFloat(bytes/(1<<20), 'f', 1, 64) + " MiB"
}

// metricsSnap is one scrape of /metrics: series text (name or
// name{labels}) → value.
type metricsSnap map[string]float64

// get returns the unlabelled series name, and whether it was there.
func (m metricsSnap) get(name string) (float64, bool) {
	v, ok := m[name]
	return v, ok
}

// sum adds every series of name, whatever its labels.
func (m metricsSnap) sum(name string) float64 {
	t := 0.0
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			t += v
		}
	}
	return t
}

// scrape reads the server's /metrics (Prometheus text format).
func (g *gen) scrape(ctx context.Context) (metricsSnap, error) {
	u := strings.TrimSuffix(strings.Replace(strings.Replace(g.metaURL, "ws", "http", 1), "/meta", "", 1), "/") + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMetrics, err)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: get %s: %w", ErrMetrics, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: get %s: HTTP %s", ErrMetrics, u, resp.Status)
	}
	m := metricsSnap{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrMetrics, u, err)
	}
	return m, nil
}

// mustGet scrapes and returns one unlabelled series.
func (g *gen) metric(ctx context.Context, name string) (float64, error) {
	m, err := g.scrape(ctx)
	if err != nil {
		return 0, err
	}
	v, ok := m.get(name)
	if !ok {
		return 0, fmt.Errorf("%w: no series %s", ErrMetrics, name)
	}
	return v, nil
}

// serverCPU returns the server's CPU time so far: from /proc when PID is
// set (nanosecond schedstat of every thread), else from /metrics.
func (g *gen) serverCPU(ctx context.Context) (time.Duration, string, error) {
	if g.cfg.PID > 0 {
		d, err := procCPU(g.cfg.PID)
		return d, "/proc schedstat", err
	}
	v, err := g.metric(ctx, "process_cpu_seconds_total")
	return time.Duration(v * float64(time.Second)), "/metrics process_cpu_seconds_total", err
}

// procCPU sums the on-CPU time of every thread of pid. Go's threads live as
// long as the process, so no exited thread's time is lost in practice.
func procCPU(pid int) (time.Duration, error) {
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(files) == 0 {
		return 0, fmt.Errorf("%w: no threads of pid %d", ErrMetrics, pid)
	}
	var total int64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended meanwhile
		}
		fields := strings.Fields(string(b))
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: parse %s: %w", ErrMetrics, f, err)
		}
		total += n
	}
	return time.Duration(total), nil
}

// selfCPU is the load generator's own CPU time, to show how much of the
// two cores the client side took.
func selfCPU() time.Duration {
	d, err := procCPU(os.Getpid())
	if err != nil {
		return 0
	}
	return d
}

// cpuPer is cpu per unit of work; 0 when none was done.
func cpuPer(cpu time.Duration, n int64) time.Duration {
	if n == 0 {
		return 0
	}
	return cpu / time.Duration(n)
}
