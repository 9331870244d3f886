package loadgen

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/protocol"
)

// CallsResult is the outcome of the calls scenario.
type CallsResult struct {
	Pairs     int            `json:"pairs"`
	Elapsed   time.Duration  `json:"elapsed_ns"` // wall time of the measured loop
	Setups    int            `json:"setups"`     // complete setups: both force-calls received
	Hangups   int            `json:"hangups"`    // hang-ups whose unpair reached the other side
	Failures  map[string]int `json:"failures"`
	Setup     latencies      `json:"setup"`  // call sent → both force-calls received
	Hangup    latencies      `json:"hangup"` // unpair sent → the other side's unpair event
	ServerCPU time.Duration  `json:"server_cpu_ns"`
	CPUSource string         `json:"cpu_source"`
	ClientCPU time.Duration  `json:"client_cpu_ns"` // the load generator's own CPU meanwhile
	Rate      float64        `json:"rate"`          // per-connection pacing (msg/s), 0: unpaced
}

// SetupsPerSec is the setup throughput.
func (r *CallsResult) SetupsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Setups) / r.Elapsed.Seconds()
}

// CPUPerSetup is server CPU time per setup.
func (r *CallsResult) CPUPerSetup() time.Duration {
	return cpuPer(r.ServerCPU, int64(r.Setups))
}

// Summary implements Result.
func (r *CallsResult) Summary() map[string]float64 {
	return map[string]float64{
		"setups":                  float64(r.Setups),
		"setups_per_sec":          r.SetupsPerSec(),
		"setup_p50_ns":            float64(r.Setup.P50),
		"setup_p99_ns":            float64(r.Setup.P99),
		"setup_max_ns":            float64(r.Setup.Max),
		"hangup_p99_ns":           float64(r.Hangup.P99),
		"server_cpu_per_setup_ns": float64(r.CPUPerSetup()),
		"failures":                float64(sumCounts(r.Failures)),
	}
}

// Rows implements Result.
func (r *CallsResult) Rows() []Row {
	pacing := "unpaced"
	if r.Rate > 0 {
		pacing = fmt.Sprintf("%g msg/s per connection (max %.1f setups/s per pair)", r.Rate, r.Rate/1.5)
	}
	return []Row{
		{"pairs", strconv.Itoa(r.Pairs), ""},
		{"pacing", pacing, ""},
		{"elapsed", r.Elapsed.Round(time.Millisecond).String(), ""},
		{"setups", strconv.Itoa(r.Setups), ""},
		{"setups/s", fmt.Sprintf("%.1f", r.SetupsPerSec()), "≥ 8000"},
		{"setup latency p50", ms(r.Setup.P50), ""},
		{"setup latency p99", ms(r.Setup.P99), "≤ 5 ms"},
		{"setup latency max", ms(r.Setup.Max), ""},
		{"hang-up latency p50/p99", ms(r.Hangup.P50) + " / " + ms(r.Hangup.P99), ""},
		{"failures", formatCounts(r.Failures), ""},
		{"server CPU", r.ServerCPU.Round(time.Millisecond).String() + " (" + r.CPUSource + ")", ""},
		{"server CPU per setup", fmt.Sprintf("%.1f µs", float64(r.CPUPerSetup())/1e3), "≤ 100 µs"},
		{"load generator CPU", r.ClientCPU.Round(time.Millisecond).String(), ""},
	}
}

// stamped is an event with its arrival time.
type stamped struct {
	ev protocol.Event
	at time.Time
}

// stamp timestamps a client's events as soon as they are delivered.
func stamp(c *client.Client) <-chan stamped {
	out := make(chan stamped, 256)
	go func() {
		defer close(out)
		for ev := range c.Events() {
			out <- stamped{ev, time.Now()}
		}
	}()
	return out
}

type callPair struct {
	a, b         *client.Client
	aName, bName string
	aEv, bEv     <-chan stamped
	aP, bP       *pacer
}

type callSample struct {
	t0 time.Time
	d  time.Duration
}

// callRunner runs the call loops of calls and login-flood.
type callRunner struct {
	g       *gen
	pairs   []*callPair
	setups  atomic.Int64
	hangups atomic.Int64
	errs    *errCounter

	mu      sync.Mutex // guards samples and hangs
	samples []callSample
	hangs   []time.Duration
}

// prepareCalls registers and logs in the pairs: bench-call-a-i and
// bench-call-b-i, mutual peers.
func (g *gen) prepareCalls(ctx context.Context) (*callRunner, error) {
	pairs, err := g.preparePairs(ctx, "calls", "call", g.loginClient)
	if err != nil {
		return nil, err
	}
	return &callRunner{g: g, pairs: pairs, errs: newErrCounter()}, nil
}

// preparePairs registers Pairs mutual caller/callee pairs,
// <prefix>-<kind>-a-i and <prefix>-<kind>-b-i, and logs each side in with
// login (calls and media differ only in their WebSocket buffers). label
// names the scenario in progress lines and errors. On error no client is
// left open.
func (g *gen) preparePairs(ctx context.Context, label, kind string, login func(context.Context, string) (*client.Client, error)) ([]*callPair, error) {
	n := g.cfg.Pairs
	as, bs := make([]userSpec, n), make([]userSpec, n)
	for i := range n {
		as[i] = userSpec{name: g.userName(kind+"-a", i)}
		bs[i] = userSpec{name: g.userName(kind+"-b", i), peers: []string{as[i].name}}
	}
	if err := g.ensureUsers(ctx, label, as, bs); err != nil {
		return nil, err
	}
	pairs := make([]*callPair, n)
	var logged atomic.Int64
	stop := g.progress(func() string { return fmt.Sprintf("%s: logged in %d/%d", label, logged.Load(), 2*n) })
	defer stop()
	err := g.eachPair(ctx, n, func(i int) error {
		p := &callPair{aName: as[i].name, bName: bs[i].name, aP: g.newPacer(), bP: g.newPacer()}
		var err error
		if p.a, err = login(ctx, p.aName); err != nil {
			return err
		}
		logged.Add(1)
		if p.b, err = login(ctx, p.bName); err != nil {
			p.a.Close()
			return err
		}
		logged.Add(1)
		// a was registered first, without peers: make them mutual.
		actx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
		defer cancel()
		p.aP.wait(ctx)
		if err := p.a.AddPeers(actx, p.bName); err != nil {
			p.a.Close()
			p.b.Close()
			return fmt.Errorf("add-peers: %w", err)
		}
		p.aEv, p.bEv = stamp(p.a), stamp(p.b)
		pairs[i] = p
		return nil
	})
	if err != nil {
		closePairs(pairs)
		return nil, fmt.Errorf("%w: %s: %w", ErrSetup, label, err)
	}
	return pairs, nil
}

// closePairs closes both clients of every pair that got that far.
func closePairs(pairs []*callPair) {
	for _, p := range pairs {
		if p != nil {
			p.a.Close()
			p.b.Close()
		}
	}
}

func (r *callRunner) close() { closePairs(r.pairs) }

// run loops every pair until stop is closed; a setup under way finishes.
func (r *callRunner) run(ctx context.Context, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for _, p := range r.pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.loop(ctx, stop, p)
		}()
	}
	wg.Wait()
}

func (r *callRunner) loop(ctx context.Context, stop <-chan struct{}, p *callPair) {
	for iter := 0; ; iter++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		if err := r.setup(ctx, p, iter); err != nil {
			if ctx.Err() != nil {
				return
			}
			code := r.errs.add(err)
			r.g.log.Debug("call setup failed", "caller", p.aName, "code", code, "err", err)
			r.recover(ctx, p)
		}
	}
}

// setup does one full call: call → call event → accept → accept event →
// both force-calls → hang-up (alternating sides) → unpair event.
func (r *callRunner) setup(ctx context.Context, p *callPair, iter int) error {
	timeout := r.g.cfg.Timeout
	// Both sides' pacing is waited for before the clock starts: the call's
	// and the accept's slots are taken now, so pacing never counts as
	// latency.
	if err := p.aP.wait(ctx); err != nil {
		return err
	}
	if err := p.bP.wait(ctx); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	if _, err := p.a.Call(sctx, p.bName); err != nil {
		return fmt.Errorf("call: %w", err)
	}
	ring, err := waitEv(sctx, p.bEv, protocol.TypeCall)
	if err != nil {
		return err
	}
	if err := p.b.Accept(sctx, p.aName, ring.ev.Tx); err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	if _, err := waitEv(sctx, p.aEv, protocol.TypeAccept); err != nil {
		return err
	}
	fa, err := waitEv(sctx, p.aEv, protocol.TypeForceCall)
	if err != nil {
		return err
	}
	fb, err := waitEv(sctx, p.bEv, protocol.TypeForceCall)
	if err != nil {
		return err
	}
	done := fa.at
	if fb.at.After(done) {
		done = fb.at
	}
	r.setups.Add(1)
	sample := callSample{t0: t0, d: done.Sub(t0)}

	// Hang up from alternating sides: each connection then sends 1.5
	// messages per setup, which halves the cost of pacing.
	hanger, hp, otherName, otherEv := p.a, p.aP, p.bName, p.bEv
	if iter%2 == 1 {
		hanger, hp, otherName, otherEv = p.b, p.bP, p.aName, p.aEv
	}
	if err := hp.wait(ctx); err != nil {
		return err
	}
	h0 := time.Now()
	if err := hanger.Unpair(sctx, otherName); err != nil {
		r.addSample(sample, 0)
		return fmt.Errorf("unpair: %w", err)
	}
	up, err := waitEv(sctx, otherEv, protocol.TypeUnpair)
	if err != nil {
		r.addSample(sample, 0)
		return err
	}
	r.hangups.Add(1)
	r.addSample(sample, up.at.Sub(h0))
	return nil
}

func (r *callRunner) addSample(s callSample, hang time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
	if hang > 0 {
		r.hangs = append(r.hangs, hang)
	}
}

// recover brings a pair back to idle after a failure: whatever state the
// call is in, one of these ends it; the answers do not matter.
func (r *callRunner) recover(ctx context.Context, p *callPair) {
	rctx, cancel := context.WithTimeout(ctx, r.g.cfg.Timeout)
	defer cancel()
	if p.aP.wait(rctx) == nil {
		p.a.Cancel(rctx, p.bName)
	}
	if p.aP.wait(rctx) == nil {
		p.a.Unpair(rctx, p.bName)
	}
	if p.bP.wait(rctx) == nil {
		p.b.Unpair(rctx, p.aName)
	}
	// Drop what the failed attempt left queued, until quiet.
	for {
		select {
		case <-p.aEv:
		case <-p.bEv:
		case <-time.After(100 * time.Millisecond):
			return
		case <-rctx.Done():
			return
		}
	}
}

// waitEv returns the next event of type typ, skipping others (presence,
// leftovers of a failed attempt).
func waitEv(ctx context.Context, ch <-chan stamped, typ string) (stamped, error) {
	for {
		select {
		case s, ok := <-ch:
			if !ok {
				return stamped{}, fmt.Errorf("waiting for %s: %w", typ, client.ErrClosed)
			}
			if s.ev.Type == typ {
				return s, nil
			}
		case <-ctx.Done():
			return stamped{}, fmt.Errorf("%w for %s: %w", ErrTimeout, typ, ctx.Err())
		}
	}
}

// results returns the setup samples, and the hang-up latencies.
func (r *callRunner) results() ([]callSample, []time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]callSample(nil), r.samples...), append([]time.Duration(nil), r.hangs...)
}

func durations(s []callSample, from, to time.Time) []time.Duration {
	var d []time.Duration
	for _, x := range s {
		if (from.IsZero() || !x.t0.Before(from)) && (to.IsZero() || x.t0.Before(to)) {
			d = append(d, x.d)
		}
	}
	return d
}

func (g *gen) runCalls(ctx context.Context) (*CallsResult, error) {
	r, err := g.prepareCalls(ctx)
	if err != nil {
		return nil, err
	}
	defer r.close()
	cpu0, src, err := g.serverCPU(ctx)
	if err != nil {
		return nil, err
	}
	self0 := selfCPU()
	start := time.Now()
	stopProgress := g.progress(func() string {
		s := r.setups.Load()
		return fmt.Sprintf("calls: %d setups (%.0f/s), failures: %s", s,
			float64(s)/time.Since(start).Seconds(), r.errs)
	})
	stop := make(chan struct{})
	t := time.AfterFunc(g.cfg.Duration, func() { close(stop) })
	defer t.Stop()
	r.run(ctx, stop)
	elapsed := time.Since(start)
	stopProgress()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cpu1, _, err := g.serverCPU(ctx)
	if err != nil {
		return nil, err
	}
	samples, hangs := r.results()
	return &CallsResult{
		Pairs:     len(r.pairs),
		Elapsed:   elapsed,
		Setups:    int(r.setups.Load()),
		Hangups:   int(r.hangups.Load()),
		Failures:  r.errs.snapshot(),
		Setup:     summarize(durations(samples, time.Time{}, time.Time{})),
		Hangup:    summarize(hangs),
		ServerCPU: cpu1 - cpu0,
		CPUSource: src,
		ClientCPU: selfCPU() - self0,
		Rate:      g.cfg.pacing(),
	}, nil
}
