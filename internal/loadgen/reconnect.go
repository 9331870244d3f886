package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/user-media-plug/umplug/protocol"
)

// The reconnect scenario measures a reconnect storm (issue 11): Conns
// identified devices (8 per user: one password login per user, the other
// devices with its session), then the server is restarted — by
// RestartCmd, or by whoever runs the bench (the scenario waits for every
// connection to drop) — and every device identifies again with its session
// (and asks to resume its device, which a restarted server cannot grant: it
// is the cheap path being measured, not resume). Time zero is the first
// /healthz answer of the new server; a device is back when its whoami with
// the session succeeds. While down, each device retries its dial every
// 250–500 ms (jittered) after a first random wait of up to ReconnectJitter.

// ReconnectResult is the outcome of the reconnect scenario.
type ReconnectResult struct {
	Devices int `json:"devices"` // identified before the restart
	Back    int `json:"back"`    // identified again
	Users   int `json:"users"`
	Sources int `json:"sources"`
	// Setup is how long the first identification of all devices took.
	Setup time.Duration `json:"setup_ns"`
	// Down is from the first dropped connection to the new server's first
	// /healthz answer.
	Down time.Duration `json:"down_ns"`
	// Last is when the last device was back, after time zero.
	Last time.Duration `json:"last_ns"`
	// Curve is how many devices were back, about every CurveStep.
	Curve     []CurvePoint  `json:"curve"`
	CurveStep time.Duration `json:"curve_step_ns"`
	// PeakRSS is the new server's highest process_resident_memory_bytes
	// seen while the devices came back (read every CurveStep).
	PeakRSS  float64        `json:"peak_rss_bytes"`
	Failures map[string]int `json:"failures"`
}

// Summary implements Result.
func (r *ReconnectResult) Summary() map[string]float64 {
	return map[string]float64{
		"devices":        float64(r.Devices),
		"back":           float64(r.Back),
		"last_back_s":    r.Last.Seconds(),
		"peak_rss_bytes": r.PeakRSS,
		"down_s":         r.Down.Seconds(),
		"failures":       float64(sumCounts(r.Failures)),
	}
}

// Rows implements Result.
func (r *ReconnectResult) Rows() []Row {
	rows := []Row{
		{"devices identified before the restart", fmt.Sprintf("%d (%d users × ≤8)", r.Devices, r.Users), ""},
		{"source addresses", fmt.Sprint(r.Sources), ""},
		{"first identification (password per user, then sessions)", r.Setup.Round(time.Millisecond).String(), ""},
		{"server down (first drop → first /healthz)", r.Down.Round(time.Millisecond).String(), ""},
		{"devices back with their session", fmt.Sprintf("%d / %d", r.Back, r.Devices), "all"},
		{"last device back after the new server answered", r.Last.Round(time.Millisecond).String(), "≤ 10s (10,000 devices)"},
		{"server peak RSS during the storm", mib(r.PeakRSS), ""},
		{"failures (retried)", formatCounts(r.Failures), ""},
	}
	var b strings.Builder
	for i, pt := range r.Curve {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.2fs:%d", pt.At.Seconds(), pt.Back)
	}
	rows = append(rows, Row{"devices back vs time", b.String(), ""})
	return rows
}

// CurvePoint is one point of the reconnect curve: Back devices were
// identified again At after time zero.
type CurvePoint struct {
	At   time.Duration `json:"at_ns"`
	Back int           `json:"back"`
}

// reconnDevice is one bench device across the restart.
type reconnDevice struct {
	user, session, device string
	conn                  *rawConn
	dropped               chan struct{}
}

func (g *gen) runReconnect(ctx context.Context) (*ReconnectResult, error) {
	n := g.cfg.Conns
	users, err := g.ensureDeviceUsers(ctx, "reconnect", "reconnect", n)
	if err != nil {
		return nil, err
	}
	devs := make([]*reconnDevice, n)
	errs := newErrCounter()

	// Identify: the first device of each user with the password, the
	// others with its session.
	start := time.Now()
	var ok atomic.Int64
	stop := g.progress(func() string {
		return fmt.Sprintf("reconnect: %d/%d identified, failures: %s", ok.Load(), n, errs)
	})
	sessions := make([]string, users)
	g.workers(ctx, users, func(u int) {
		i := u * devicesPerUser
		c, res, err := g.loginPassword(ctx, i)
		if err != nil {
			errs.add(err)
			return
		}
		sessions[u] = res.Session
		devs[i] = g.watch(c, g.deviceUser("reconnect", i), res)
		ok.Add(1)
	})
	g.workers(ctx, n, func(i int) {
		if i%devicesPerUser == 0 || sessions[i/devicesPerUser] == "" {
			return
		}
		c, res, err := g.loginSession(ctx, i, sessions[i/devicesPerUser], "")
		if err != nil {
			errs.add(err)
			return
		}
		devs[i] = g.watch(c, g.deviceUser("reconnect", i), res)
		ok.Add(1)
	})
	stop()
	setup := time.Since(start)
	identified := int(ok.Load())
	if identified == 0 {
		return nil, fmt.Errorf("reconnect: no device identified (failures: %s)", errs)
	}
	fmt.Fprintf(g.cfg.Progress, "reconnect: %d devices identified in %s; restarting the server\n", identified, setup.Round(time.Millisecond))

	// Restart.
	var firstDrop atomic.Int64
	for _, d := range devs {
		if d != nil {
			go func() {
				<-d.dropped
				firstDrop.CompareAndSwap(0, time.Now().UnixNano())
			}()
		}
	}
	restartErr := make(chan error, 1)
	if g.cfg.RestartCmd != "" {
		go func() {
			out, err := exec.CommandContext(ctx, "sh", "-c", g.cfg.RestartCmd).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("reconnect: restart command: %w: %s", err, out)
			}
			restartErr <- err
		}()
	} else {
		fmt.Fprintf(g.cfg.Progress, "reconnect: restart the server now (waiting for the connections to drop)\n")
	}
	// Every device waits for its drop, then retries with jitter.
	var back atomic.Int64
	backAt := make([]int64, n)
	var wg sync.WaitGroup
	for i, d := range devs {
		if d == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-d.dropped:
			case <-ctx.Done():
				return
			}
			if err := sleep(ctx, time.Duration(rand.Int64N(int64(g.cfg.ReconnectJitter)+1))); err != nil {
				return
			}
			for ctx.Err() == nil {
				c, _, err := g.loginSession(ctx, i, d.session, d.device)
				if err == nil {
					backAt[i] = time.Now().UnixNano()
					back.Add(1)
					c.discard()
					d.conn = c
					return
				}
				if code := errCode(err); code != "transport" && code != "closed" && code != "timeout" {
					errs.add(err)
				}
				if sleep(ctx, 250*time.Millisecond+time.Duration(rand.Int64N(int64(250*time.Millisecond)))) != nil {
					return
				}
			}
		}()
	}
	defer func() {
		for _, d := range devs {
			if d != nil && d.conn != nil {
				d.conn.close()
			}
		}
	}()

	// Time zero: the new server's first /healthz answer after the drop.
	for firstDrop.Load() == 0 {
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
	t0, err := g.healthzAfter(ctx)
	if err != nil {
		return nil, err
	}
	down := t0.Sub(time.Unix(0, firstDrop.Load()))

	// The curve and the peak RSS, until every device is back or 60 s.
	const step = 250 * time.Millisecond
	res := &ReconnectResult{Devices: identified, Users: users, Sources: g.cfg.Sources,
		Setup: setup, Down: down, CurveStep: step}
	// The RSS is read on its own goroutine: a scrape may take a while
	// during the storm and must not delay the curve's points.
	var peak atomic.Uint64
	rssDone := make(chan struct{})
	rssCtx, rssStop := context.WithCancel(ctx)
	go func() {
		defer close(rssDone)
		for rssCtx.Err() == nil {
			if m, err := g.scrape(rssCtx); err == nil {
				if rss, ok := m.get("process_resident_memory_bytes"); ok && uint64(rss) > peak.Load() {
					peak.Store(uint64(rss))
				}
			}
			_ = sleep(rssCtx, step)
		}
	}()
	tick := time.NewTicker(step)
	defer tick.Stop()
	deadline := t0.Add(60 * time.Second)
	for int(back.Load()) < identified && time.Now().Before(deadline) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			rssStop()
			return nil, ctx.Err()
		}
		res.Curve = append(res.Curve, CurvePoint{At: time.Since(t0), Back: int(back.Load())})
	}
	if n := len(res.Curve); n == 0 || res.Curve[n-1].Back != int(back.Load()) {
		res.Curve = append(res.Curve, CurvePoint{At: time.Since(t0), Back: int(back.Load())})
	}
	rssStop()
	<-rssDone
	res.PeakRSS = float64(peak.Load())
	res.Back = int(back.Load())
	var last int64
	for _, at := range backAt {
		last = max(last, at)
	}
	if last > 0 {
		res.Last = time.Unix(0, last).Sub(t0)
	}
	if g.cfg.RestartCmd != "" {
		if err := <-restartErr; err != nil {
			return nil, err
		}
	}
	res.Failures = errs.snapshot()
	return res, nil
}

// watch starts reading c until it ends and returns the device.
func (g *gen) watch(c *rawConn, user string, res *protocol.Response) *reconnDevice {
	d := &reconnDevice{user: user, session: res.Session, device: res.Device, conn: c, dropped: make(chan struct{})}
	go func() {
		c.readLoop(nil)
		close(d.dropped)
	}()
	return d
}

// loginPassword logs device i in with the password and keeps the response.
func (g *gen) loginPassword(ctx context.Context, i int) (*rawConn, *protocol.Response, error) {
	return g.whoami(ctx, i, map[string]any{"password": g.cfg.Password})
}

// loginSession logs device i in with session, resuming device if set.
func (g *gen) loginSession(ctx context.Context, i int, session, device string) (*rawConn, *protocol.Response, error) {
	m := map[string]any{"session": session}
	if device != "" {
		m["resume"] = device
	}
	return g.whoami(ctx, i, m)
}

func (g *gen) whoami(ctx context.Context, i int, cred map[string]any) (*rawConn, *protocol.Response, error) {
	c, err := g.dialRaw(ctx, g.connSource(i))
	if err != nil {
		return nil, nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, 10*g.cfg.Timeout)
	defer cancel()
	cred["type"], cred["user"] = protocol.TypeWhoami, g.deviceUser("reconnect", i)
	res, err := c.request(lctx, cred)
	if err != nil {
		c.close()
		return nil, nil, fmt.Errorf("login %s: %w", cred["user"], err)
	}
	return c, res, nil
}

// healthzAfter polls the server's /healthz every 10 ms and returns when it
// first answers 200.
func (g *gen) healthzAfter(ctx context.Context) (time.Time, error) {
	u := strings.TrimSuffix(strings.Replace(strings.Replace(g.metaURL, "ws", "http", 1), "/meta", "", 1), "/") + "/healthz"
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return time.Time{}, err
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), nil
			}
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
	return time.Time{}, errors.New("reconnect: the server did not come back within 5 minutes")
}
