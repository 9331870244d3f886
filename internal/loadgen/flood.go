package loadgen

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/user-media-plug/umplug/protocol"
)

// FloodResult is the outcome of the login-flood scenario.
type FloodResult struct {
	Pairs        int            `json:"pairs"`
	Flood        int            `json:"flood"`
	Identified   int            `json:"identified"` // flood whoami answered ok
	Failures     map[string]int `json:"failures"`
	FloodTime    time.Duration  `json:"flood_time_ns"` // release → last whoami answered
	Whoami       latencies      `json:"whoami"`
	Setups       int            `json:"setups"`
	CallsBefore  latencies      `json:"calls_before"` // setups started before the flood
	CallsDuring  latencies      `json:"calls_during"` // setups started during the flood
	CallFailures map[string]int `json:"call_failures"`
	RSSBaseline  float64        `json:"rss_baseline_bytes"` // before the flood
	RSSPeak      float64        `json:"rss_peak_bytes"`     // highest of /metrics polled every 100 ms
	Elapsed      time.Duration  `json:"elapsed_ns"`
}

// Summary implements Result.
func (r *FloodResult) Summary() map[string]float64 {
	return map[string]float64{
		"identified":          float64(r.Identified),
		"flood_time_ns":       float64(r.FloodTime),
		"whoami_p99_ns":       float64(r.Whoami.P99),
		"calls_before_p99_ns": float64(r.CallsBefore.P99),
		"calls_during_n":      float64(r.CallsDuring.N),
		"calls_during_p99_ns": float64(r.CallsDuring.P99),
		"rss_baseline_bytes":  r.RSSBaseline,
		"rss_peak_bytes":      r.RSSPeak,
		"failures":            float64(sumCounts(r.Failures) + sumCounts(r.CallFailures)),
	}
}

// Rows implements Result.
func (r *FloodResult) Rows() []Row {
	return []Row{
		{"pairs running calls", strconv.Itoa(r.Pairs), ""},
		{"whoami fired at once / ok", fmt.Sprintf("%d / %d", r.Flood, r.Identified), ""},
		{"whoami failures", formatCounts(r.Failures), ""},
		{"flood duration (last answer)", r.FloodTime.Round(time.Millisecond).String(), ""},
		{"whoami latency p50 / p99 / max", ms(r.Whoami.P50) + " / " + ms(r.Whoami.P99) + " / " + ms(r.Whoami.Max), ""},
		{"call setups (total)", strconv.Itoa(r.Setups), ""},
		{"calls p50 / p99 before flood", ms(r.CallsBefore.P50) + " / " + ms(r.CallsBefore.P99), ""},
		{"calls during flood (n)", strconv.Itoa(r.CallsDuring.N), ""},
		{"calls p50 during flood", ms(r.CallsDuring.P50), ""},
		{"calls p99 during flood", ms(r.CallsDuring.P99), "≤ 20 ms"},
		{"calls max during flood", ms(r.CallsDuring.Max), ""},
		{"call failures", formatCounts(r.CallFailures), ""},
		{"server RSS baseline", mib(r.RSSBaseline), ""},
		{"server RSS peak", mib(r.RSSPeak), "≤ 512 MiB"},
		{"elapsed", r.Elapsed.Round(time.Millisecond).String(), ""},
	}
}

// rssPoller polls the server's RSS every 100 ms and keeps the peak.
type rssPoller struct {
	peak atomic.Uint64 // float64 bits
	stop chan struct{}
	wg   sync.WaitGroup
}

func (g *gen) pollRSS(ctx context.Context) *rssPoller {
	p := &rssPoller{stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := g.metric(ctx, "process_resident_memory_bytes"); err == nil && uint64(v) > p.peak.Load() {
				p.peak.Store(uint64(v))
			}
			select {
			case <-t.C:
			case <-p.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return p
}

func (p *rssPoller) done() float64 {
	close(p.stop)
	p.wg.Wait()
	return float64(p.peak.Load())
}

func (g *gen) runFlood(ctx context.Context) (*FloodResult, error) {
	f := g.cfg.Flood
	if _, err := g.ensureDeviceUsers(ctx, "login-flood", "flood", f); err != nil {
		return nil, err
	}
	calls, err := g.prepareCalls(ctx)
	if err != nil {
		return nil, err
	}
	defer calls.close()

	// Dial the flood's connections first: the flood is of logins, not of
	// TCP handshakes.
	conns := make([]*rawConn, f)
	errs := newErrCounter()
	var dialed atomic.Int64
	stop := g.progress(func() string { return fmt.Sprintf("login-flood: dialed %d/%d", dialed.Load(), f) })
	g.workers(ctx, f, func(i int) {
		c, err := g.dialRaw(ctx, g.connSource(i))
		if err != nil {
			errs.add(err)
			return
		}
		conns[i] = c
		dialed.Add(1)
	})
	stop()
	defer closeAll(conns)

	base, err := g.metric(ctx, "process_resident_memory_bytes")
	if err != nil {
		return nil, err
	}
	rss := g.pollRSS(ctx)
	start := time.Now()
	stopCalls := make(chan struct{})
	callsDone := make(chan struct{})
	go func() {
		defer close(callsDone)
		calls.run(ctx, stopCalls)
	}()
	var floodStart, floodEnd time.Time
	var answered atomic.Int64
	phase := "warm-up"
	var phaseMu sync.Mutex
	stop = g.progress(func() string {
		phaseMu.Lock()
		defer phaseMu.Unlock()
		return fmt.Sprintf("login-flood [%s]: %d setups, %d/%d whoami answered, call failures: %s, whoami failures: %s",
			phase, calls.setups.Load(), answered.Load(), f, calls.errs, errs)
	})
	defer stop()

	warm := min(2*time.Second, g.cfg.Duration/3)
	if err := sleep(ctx, warm); err != nil {
		return nil, err
	}
	phaseMu.Lock()
	phase = "flood"
	phaseMu.Unlock()
	release := make(chan struct{})
	var lmu sync.Mutex
	var lats []time.Duration
	var wg sync.WaitGroup
	for i, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			wctx, cancel := context.WithTimeout(ctx, 10*g.cfg.Timeout)
			defer cancel()
			t0 := time.Now()
			_, err := c.request(wctx, map[string]any{
				"type": protocol.TypeWhoami, "user": g.deviceUser("flood", i), "password": g.cfg.Password,
			})
			d := time.Since(t0)
			answered.Add(1)
			if err != nil {
				errs.add(err)
				return
			}
			lmu.Lock()
			lats = append(lats, d)
			lmu.Unlock()
		}()
	}
	floodStart = time.Now()
	close(release)
	wg.Wait()
	floodEnd = time.Now()
	phaseMu.Lock()
	phase = "after flood"
	phaseMu.Unlock()

	rest := max(start.Add(g.cfg.Duration).Sub(time.Now()), warm)
	if err := sleep(ctx, rest); err != nil {
		return nil, err
	}
	close(stopCalls)
	<-callsDone
	elapsed := time.Since(start)
	peak := rss.done()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	samples, _ := calls.results()
	return &FloodResult{
		Pairs: len(calls.pairs), Flood: f, Identified: len(lats),
		Failures: errs.snapshot(), FloodTime: floodEnd.Sub(floodStart), Whoami: summarize(lats),
		Setups:       int(calls.setups.Load()),
		CallsBefore:  summarize(durations(samples, time.Time{}, floodStart)),
		CallsDuring:  summarize(durations(samples, floodStart, floodEnd)),
		CallFailures: calls.errs.snapshot(),
		RSSBaseline:  base, RSSPeak: max(peak, base),
		Elapsed: elapsed,
	}, nil
}
