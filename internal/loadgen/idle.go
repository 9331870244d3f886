package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// IdleResult is the outcome of the idle scenario. Memory is read from the
// server's /metrics at three points: with no bench connection open (after a
// warm-up), at ConnsBase connections, and at Conns connections. The
// per-connection figures are slopes between the last two, so that what the
// server holds whatever the connection count (the argon2 arena of the
// logins, runtime caches, the baseline itself) is not divided among them.
type IdleResult struct {
	Conns     int `json:"conns"`      // asked for at the second measurement
	ConnsBase int `json:"conns_base"` // asked for at the first measurement
	// Identified and open at each measurement: the slope's x values.
	Connected     int            `json:"connected"`
	ConnectedBase int            `json:"connected_base"`
	Users         int            `json:"users"` // users, each with up to protocol.DefaultDevices devices
	Sources       int            `json:"sources"`
	Failures      map[string]int `json:"failures"`
	// ConnectTime is dial + whoami of all connections, both steps.
	ConnectTime time.Duration `json:"connect_time_ns"`
	// Server figures with no bench connection, at ConnectedBase and at
	// Connected.
	Before MemSnap `json:"before"`
	Base   MemSnap `json:"base"`
	After  MemSnap `json:"after"`
}

// MemSnap is one reading of the server's memory series from /metrics.
type MemSnap struct {
	RSS        float64 `json:"rss_bytes"`        // process_resident_memory_bytes
	Heap       float64 `json:"heap_inuse_bytes"` // go_memstats_heap_inuse_bytes
	Stack      float64 `json:"stack_inuse_bytes"`
	Goroutines float64 `json:"goroutines"`
	Devices    float64 `json:"devices"`     // umplug_meta_devices
	Conns      float64 `json:"connections"` // umplug_meta_connections
	// Steady is set when RSS had stopped moving (3 readings up to 1 s
	// apart within 1 MiB) before this reading; false when it still moved
	// after 60 s.
	Steady bool `json:"steady"`
}

// Slope is (y2-y1)/(x2-x1): the growth of y per unit of x between two
// measurements. ok is false when x did not grow, the slope is then 0.
func Slope(x1, y1, x2, y2 float64) (slope float64, ok bool) {
	if x2 <= x1 {
		return 0, false
	}
	return (y2 - y1) / (x2 - x1), true
}

// perConn is the slope of one series between the base and the second
// measurement, per identified connection.
func (r *IdleResult) perConn(f func(MemSnap) float64) float64 {
	s, _ := Slope(float64(r.ConnectedBase), f(r.Base), float64(r.Connected), f(r.After))
	return s
}

// RSSPerConn is the server's RSS growth per connection between the two
// connection counts, in bytes.
func (r *IdleResult) RSSPerConn() float64 { return r.perConn(func(m MemSnap) float64 { return m.RSS }) }

// HeapPerConn is the heap-in-use growth per connection, in bytes.
func (r *IdleResult) HeapPerConn() float64 {
	return r.perConn(func(m MemSnap) float64 { return m.Heap })
}

// StackPerConn is the stack growth per connection, in bytes.
func (r *IdleResult) StackPerConn() float64 {
	return r.perConn(func(m MemSnap) float64 { return m.Stack })
}

// GoroutinesPerConn is the goroutine growth per connection.
func (r *IdleResult) GoroutinesPerConn() float64 {
	return r.perConn(func(m MemSnap) float64 { return m.Goroutines })
}

// RSSPerConnFromZero is the RSS growth from no connection to Connected,
// per connection: the old figure, fixed costs included.
func (r *IdleResult) RSSPerConnFromZero() float64 {
	s, _ := Slope(0, r.Before.RSS, float64(r.Connected), r.After.RSS)
	return s
}

// Summary implements Result.
func (r *IdleResult) Summary() map[string]float64 {
	return map[string]float64{
		"rss_per_conn_bytes":           r.RSSPerConn(),
		"heap_per_conn_bytes":          r.HeapPerConn(),
		"stack_per_conn_bytes":         r.StackPerConn(),
		"goroutines_per_conn":          r.GoroutinesPerConn(),
		"rss_per_conn_from_zero_bytes": r.RSSPerConnFromZero(),
		"connected":                    float64(r.Connected),
		"connected_base":               float64(r.ConnectedBase),
		"failures":                     float64(sumCounts(r.Failures)),
	}
}

// Rows implements Result.
func (r *IdleResult) Rows() []Row {
	kib := func(b float64) string { return fmt.Sprintf("%.2f KiB", b/1024) }
	rate := 0.0
	if r.ConnectTime > 0 {
		rate = float64(r.Connected) / r.ConnectTime.Seconds()
	}
	slope := fmt.Sprintf("slope %d → %d", r.ConnectedBase, r.Connected)
	return []Row{
		{"connections asked", fmt.Sprintf("%d, then %d", r.ConnsBase, r.Conns), ""},
		{"connections identified", fmt.Sprintf("%d, then %d", r.ConnectedBase, r.Connected), ""},
		{"users × devices", fmt.Sprintf("%d × ≤8", r.Users), ""},
		{"source addresses", strconv.Itoa(r.Sources), ""},
		{"connect + login time", r.ConnectTime.Round(time.Millisecond).String(), ""},
		{"logins/s", fmt.Sprintf("%.1f", rate), ""},
		{"failures", formatCounts(r.Failures), ""},
		{"umplug_meta_devices / _connections", fmt.Sprintf("%.0f / %.0f, then %.0f / %.0f", r.Base.Devices, r.Base.Conns, r.After.Devices, r.After.Conns), ""},
		{"server RSS none → first → second", mib(r.Before.RSS) + " → " + mib(r.Base.RSS) + " → " + mib(r.After.RSS), ""},
		{"RSS steady at first / second reading", fmt.Sprintf("%v / %v", r.Base.Steady, r.After.Steady), "true / true"},
		{"RSS per idle connection (" + slope + ")", kib(r.RSSPerConn()), "≤ 2 KiB (slope 5,000 → 10,000)"},
		{"heap in use per connection (" + slope + ")", kib(r.HeapPerConn()), ""},
		{"stacks per connection (" + slope + ")", kib(r.StackPerConn()), ""},
		{"goroutines per connection (" + slope + ")", fmt.Sprintf("%.3f", r.GoroutinesPerConn()), ""},
		{"RSS per connection from none (fixed costs included)", kib(r.RSSPerConnFromZero()), ""},
	}
}

func (g *gen) memory(ctx context.Context) (MemSnap, error) {
	m, err := g.scrape(ctx)
	if err != nil {
		return MemSnap{}, err
	}
	rss, ok := m.get("process_resident_memory_bytes")
	if !ok {
		return MemSnap{}, fmt.Errorf("%w: no process_resident_memory_bytes (is the process collector registered?)", ErrMetrics)
	}
	var s MemSnap
	s.RSS = rss
	s.Heap, _ = m.get("go_memstats_heap_inuse_bytes")
	s.Stack, _ = m.get("go_memstats_stack_inuse_bytes")
	s.Goroutines, _ = m.get("go_goroutines")
	s.Devices, _ = m.get("umplug_meta_devices")
	s.Conns, _ = m.get("umplug_meta_connections")
	return s, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

const devicesPerUser = 8 // protocol.DefaultDevices: one argon2 registration per 8 connections

// ensureDeviceUsers registers the users behind n connections of kind,
// devicesPerUser connections to a user, and returns how many users that is.
func (g *gen) ensureDeviceUsers(ctx context.Context, label, kind string, n int) (int, error) {
	users := make([]userSpec, (n+devicesPerUser-1)/devicesPerUser)
	for u := range users {
		users[u] = userSpec{name: g.userName(kind, u)}
	}
	return len(users), g.ensureUsers(ctx, label, users)
}

// deviceUser is the user connection i of kind logs in as (ensureDeviceUsers).
func (g *gen) deviceUser(kind string, i int) string {
	return g.userName(kind, i/devicesPerUser)
}

// openIdle logs in raw connections from..to-1, connection i as user
// kind-(i/8) from the spread source addresses, and keeps them alive (pings
// answered). The slice has to-from entries, nil where a login failed.
func (g *gen) openIdle(ctx context.Context, kind string, from, to int, label string, errs *errCounter) ([]*rawConn, time.Duration) {
	n := to - from
	conns := make([]*rawConn, n)
	var ok atomic.Int64
	start := time.Now()
	stop := g.progress(func() string {
		c := ok.Load()
		return fmt.Sprintf("%s: %d/%d identified (%.0f logins/s), failures: %s",
			label, c, n, float64(c)/time.Since(start).Seconds(), errs)
	})
	defer stop()
	// Each user's first device first: it logs in with the password and
	// the user's other devices then use its session (loginRaw).
	var order []int
	for pass := 0; pass < 2; pass++ {
		for j := 0; j < n; j++ {
			if first := (from+j)%devicesPerUser == 0; first == (pass == 0) {
				order = append(order, j)
			}
		}
	}
	firsts := 0
	for _, j := range order {
		if (from+j)%devicesPerUser != 0 {
			break
		}
		firsts++
	}
	login := func(j int) {
		i := from + j
		c, err := g.loginRaw(ctx, g.connSource(i), g.deviceUser(kind, i))
		if err != nil {
			if ctx.Err() == nil {
				code := errs.add(err)
				g.log.Debug("idle connection failed", "i", i, "code", code, "err", err)
			}
			return
		}
		c.discard()
		conns[j] = c
		ok.Add(1)
	}
	g.workers(ctx, firsts, func(k int) { login(order[k]) })
	g.workers(ctx, n-firsts, func(k int) { login(order[firsts+k]) })
	return conns, time.Since(start)
}

// countOpen counts the connections that logged in.
func countOpen(conns []*rawConn) int {
	n := 0
	for _, c := range conns {
		if c != nil {
			n++
		}
	}
	return n
}

func closeAll(conns []*rawConn) {
	var wg sync.WaitGroup
	const workers = 16
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(conns); i += workers {
				if conns[i] != nil {
					conns[i].close()
				}
			}
		}()
	}
	wg.Wait()
}

func (g *gen) runIdle(ctx context.Context) (*IdleResult, error) {
	n1, n2 := g.cfg.ConnsBase, g.cfg.Conns
	users, err := g.ensureDeviceUsers(ctx, "idle", "idle", n2)
	if err != nil {
		return nil, err
	}

	// Warm-up: a few logins put password hashing's memory into the heap
	// before the baseline. The slope does not need it; the from-none
	// figure is less wrong with it.
	pre, err := g.memory(ctx)
	if err != nil {
		return nil, err
	}
	warm, _ := g.openIdle(ctx, "idle", 0, min(2*devicesPerUser, n2), "idle warm-up", newErrCounter())
	closeAll(warm)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		s, err := g.memory(ctx)
		if err != nil {
			return nil, err
		}
		if s.Conns <= pre.Conns {
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(g.cfg.Progress, "idle: warm-up done\n")
	before, _, err := g.settleAndMeasure(ctx)
	if err != nil {
		return nil, err
	}

	errs := newErrCounter()
	first, took1 := g.openIdle(ctx, "idle", 0, n1, "idle (first count)", errs)
	defer closeAll(first)
	base, c1, err := g.settleAndMeasure(ctx, first, nil)
	if err != nil {
		return nil, err
	}
	second, took2 := g.openIdle(ctx, "idle", n1, n2, "idle (second count)", errs)
	defer closeAll(second)
	after, c2, err := g.settleAndMeasure(ctx, first, second)
	if err != nil {
		return nil, err
	}
	return &IdleResult{
		Conns: n2, ConnsBase: n1, Connected: c2, ConnectedBase: c1,
		Users: users, Sources: g.cfg.Sources,
		Failures: errs.snapshot(), ConnectTime: took1 + took2,
		Before: before, Base: base, After: after,
	}, nil
}

// Settling: after Settle, RSS is read every Settle (at most every second)
// until the last
// stableReads readings lie within stableBytes of each other, for at most
// stableMax. The logins just before leave freed argon2 memory that the Go
// runtime returns to the OS over seconds; a reading in the middle of that
// would move the slope by ΔRSS/Δconnections.
const (
	stableReads = 3
	stableBytes = 1 << 20
	stableMax   = 60 * time.Second
)

// settleAndMeasure waits Settle with the connections open, then until the
// server's RSS is steady, and reads its memory; it returns the reading and
// how many connections are open.
func (g *gen) settleAndMeasure(ctx context.Context, sets ...[]*rawConn) (MemSnap, int, error) {
	n := 0
	for _, s := range sets {
		n += countOpen(s)
	}
	fmt.Fprintf(g.cfg.Progress, "idle: %d connections open, settling %s before measuring\n", n, g.cfg.Settle)
	if err := sleep(ctx, g.cfg.Settle); err != nil {
		return MemSnap{}, 0, err
	}
	if err := g.serverGC(ctx); err != nil {
		return MemSnap{}, 0, err
	}
	var last []MemSnap
	deadline := time.Now().Add(stableMax)
	for {
		m, err := g.memory(ctx)
		if err != nil {
			return MemSnap{}, 0, err
		}
		last = append(last, m)
		if len(last) > stableReads {
			last = last[1:]
		}
		if steady(last) || !time.Now().Before(deadline) {
			m.Steady = steady(last)
			return m, n, nil
		}
		if err := sleep(ctx, min(g.cfg.Settle, time.Second)); err != nil {
			return MemSnap{}, 0, err
		}
	}
}

// serverGC makes the server collect garbage through GCURL, if set.
func (g *gen) serverGC(ctx context.Context) error {
	if g.cfg.GCURL == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.cfg.GCURL, nil)
	if err != nil {
		return fmt.Errorf("%w: gc URL: %w", ErrBadConfig, err)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: get %s: %w", ErrMetrics, g.cfg.GCURL, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: get %s: HTTP %s", ErrMetrics, g.cfg.GCURL, resp.Status)
	}
	return nil
}

// steady reports whether stableReads readings of RSS lie within
// stableBytes of each other.
func steady(m []MemSnap) bool {
	if len(m) < stableReads {
		return false
	}
	lo, hi := m[0].RSS, m[0].RSS
	for _, s := range m[1:] {
		lo, hi = min(lo, s.RSS), max(hi, s.RSS)
	}
	return hi-lo <= stableBytes
}
