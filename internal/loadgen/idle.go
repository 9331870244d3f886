package loadgen

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// IdleResult is the outcome of the idle scenario.
type IdleResult struct {
	Conns       int // asked for
	Connected   int // identified and open at measurement
	Users       int // users, each with up to protocol.DefaultDevices devices
	Sources     int
	Failures    map[string]int
	ConnectTime time.Duration // dial + whoami of all connections
	// Server memory before (after a warm-up, no bench connection open) and
	// after, from /metrics.
	RSSBefore, RSSAfter     float64 // process_resident_memory_bytes
	HeapBefore, HeapAfter   float64 // go_memstats_heap_inuse_bytes
	StackBefore, StackAfter float64 // go_memstats_stack_inuse_bytes
	GoroutinesBefore        float64 // go_goroutines
	GoroutinesAfter         float64
	Devices                 float64 // umplug_meta_devices at measurement
	ServerConns             float64 // umplug_meta_connections at measurement
}

func perConn(before, after float64, n int) float64 {
	if n == 0 {
		return 0
	}
	return (after - before) / float64(n)
}

// RSSPerConn is the server's RSS growth per connection, in bytes.
func (r *IdleResult) RSSPerConn() float64 { return perConn(r.RSSBefore, r.RSSAfter, r.Connected) }

// Rows implements Result.
func (r *IdleResult) Rows() []Row {
	kib := func(b float64) string { return fmt.Sprintf("%.2f KiB", b/1024) }
	rate := 0.0
	if r.ConnectTime > 0 {
		rate = float64(r.Connected) / r.ConnectTime.Seconds()
	}
	return []Row{
		{"connections asked / identified", fmt.Sprintf("%d / %d", r.Conns, r.Connected), ""},
		{"users × devices", fmt.Sprintf("%d × ≤8", r.Users), ""},
		{"source addresses", strconv.Itoa(r.Sources), ""},
		{"connect + login time", r.ConnectTime.Round(time.Millisecond).String(), ""},
		{"logins/s", fmt.Sprintf("%.1f", rate), ""},
		{"failures", formatCounts(r.Failures), ""},
		{"umplug_meta_devices / _connections", fmt.Sprintf("%.0f / %.0f", r.Devices, r.ServerConns), ""},
		{"server RSS before → after", mib(r.RSSBefore) + " → " + mib(r.RSSAfter), ""},
		{"RSS per idle connection", kib(r.RSSPerConn()), "≤ 8 KiB (at 15,000)"},
		{"heap in use per connection", kib(perConn(r.HeapBefore, r.HeapAfter, r.Connected)), ""},
		{"stacks per connection", kib(perConn(r.StackBefore, r.StackAfter, r.Connected)), ""},
		{"goroutines per connection", fmt.Sprintf("%.2f", perConn(r.GoroutinesBefore, r.GoroutinesAfter, r.Connected)), ""},
	}
}

// memSnap is the memory series idle reads.
type memSnap struct{ rss, heap, stack, goroutines, devices, conns float64 }

func (g *gen) memory(ctx context.Context) (memSnap, error) {
	m, err := g.scrape(ctx)
	if err != nil {
		return memSnap{}, err
	}
	rss, ok := m.get("process_resident_memory_bytes")
	if !ok {
		return memSnap{}, fmt.Errorf("%w: no process_resident_memory_bytes (is the process collector registered?)", ErrMetrics)
	}
	var s memSnap
	s.rss = rss
	s.heap, _ = m.get("go_memstats_heap_inuse_bytes")
	s.stack, _ = m.get("go_memstats_stack_inuse_bytes")
	s.goroutines, _ = m.get("go_goroutines")
	s.devices, _ = m.get("umplug_meta_devices")
	s.conns, _ = m.get("umplug_meta_connections")
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

// openIdle logs in n raw connections as users kind-(i/8) from the
// spread source addresses, and keeps them alive (pings answered).
func (g *gen) openIdle(ctx context.Context, kind string, n int, label string, errs *errCounter) ([]*rawConn, time.Duration) {
	conns := make([]*rawConn, n)
	var ok atomic.Int64
	start := time.Now()
	stop := g.progress(func() string {
		c := ok.Load()
		return fmt.Sprintf("%s: %d/%d identified (%.0f logins/s), failures: %s",
			label, c, n, float64(c)/time.Since(start).Seconds(), errs)
	})
	defer stop()
	g.workers(ctx, n, func(i int) {
		c, err := g.loginRaw(ctx, g.connSource(i), g.deviceUser(kind, i))
		if err != nil {
			if ctx.Err() == nil {
				code := errs.add(err)
				g.log.Debug("idle connection failed", "i", i, "code", code, "err", err)
			}
			return
		}
		c.discard()
		conns[i] = c
		ok.Add(1)
	})
	return conns, time.Since(start)
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
	n := g.cfg.Conns
	users, err := g.ensureDeviceUsers(ctx, "idle", "idle", n)
	if err != nil {
		return nil, err
	}

	// Warm-up: a few logins put password hashing's memory into the heap
	// before the baseline, so that it is not counted per connection.
	pre, err := g.memory(ctx)
	if err != nil {
		return nil, err
	}
	warm, _ := g.openIdle(ctx, "idle", min(2*devicesPerUser, n), "idle warm-up", newErrCounter())
	closeAll(warm)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		s, err := g.memory(ctx)
		if err != nil {
			return nil, err
		}
		if s.conns <= pre.conns {
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(g.cfg.Progress, "idle: warm-up done, settling %s for the baseline\n", g.cfg.Settle)
	if err := sleep(ctx, g.cfg.Settle); err != nil {
		return nil, err
	}
	before, err := g.memory(ctx)
	if err != nil {
		return nil, err
	}

	errs := newErrCounter()
	conns, took := g.openIdle(ctx, "idle", n, "idle", errs)
	defer closeAll(conns)
	connected := 0
	for _, c := range conns {
		if c != nil {
			connected++
		}
	}
	fmt.Fprintf(g.cfg.Progress, "idle: %d connections open, settling %s before measuring\n", connected, g.cfg.Settle)
	if err := sleep(ctx, g.cfg.Settle); err != nil {
		return nil, err
	}
	after, err := g.memory(ctx)
	if err != nil {
		return nil, err
	}
	return &IdleResult{
		Conns: n, Connected: connected, Users: users, Sources: g.cfg.Sources,
		Failures: errs.snapshot(), ConnectTime: took,
		RSSBefore: before.rss, RSSAfter: after.rss,
		HeapBefore: before.heap, HeapAfter: after.heap,
		StackBefore: before.stack, StackAfter: after.stack,
		GoroutinesBefore: before.goroutines, GoroutinesAfter: after.goroutines,
		Devices: after.devices, ServerConns: after.conns,
	}, nil
}
