package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/user-media-plug/umplug/protocol"
)

// PresenceResult is the outcome of the presence scenario.
type PresenceResult struct {
	Peers      int            `json:"peers"`     // asked for
	Online     int            `json:"online"`    // peers logged in and listening
	Changes    int            `json:"changes"`   // status changes sent
	Completed  int            `json:"completed"` // changes every online peer received
	Deliveries int64          `json:"deliveries"`
	Elapsed    time.Duration  `json:"elapsed_ns"` // first send → last delivery
	Busy       time.Duration  `json:"busy_ns"`    // sum over changes of send → last delivery
	LastPeer   latencies      `json:"last_peer"`  // per change: send → the last peer has it
	FirstPeer  latencies      `json:"first_peer"` // per change: send → the first peer has it
	Failures   map[string]int `json:"failures"`
	Rate       float64        `json:"rate"` // the hub's pacing (msg/s), 0: unpaced
}

// DeliveriesPerSec is the fan-out rate while a change is being delivered:
// deliveries over the summed send → last-delivery times. Changes are sent
// one after the other, so this is the server's fan-out speed, not the
// hub's (rate-limited) sending speed.
func (r *PresenceResult) DeliveriesPerSec() float64 {
	if r.Busy <= 0 {
		return 0
	}
	return float64(r.Deliveries) / r.Busy.Seconds()
}

// Summary implements Result.
func (r *PresenceResult) Summary() map[string]float64 {
	return map[string]float64{
		"deliveries":         float64(r.Deliveries),
		"deliveries_per_sec": r.DeliveriesPerSec(),
		"last_peer_p50_ns":   float64(r.LastPeer.P50),
		"last_peer_p99_ns":   float64(r.LastPeer.P99),
		"last_peer_max_ns":   float64(r.LastPeer.Max),
		"first_peer_p99_ns":  float64(r.FirstPeer.P99),
		"completed":          float64(r.Completed),
		"failures":           float64(sumCounts(r.Failures)),
	}
}

// Rows implements Result.
func (r *PresenceResult) Rows() []Row {
	wall := 0.0
	if r.Elapsed > 0 {
		wall = float64(r.Deliveries) / r.Elapsed.Seconds()
	}
	return []Row{
		{"online mutual peers", fmt.Sprintf("%d / %d", r.Online, r.Peers), ""},
		{"status changes sent / complete", fmt.Sprintf("%d / %d", r.Changes, r.Completed), ""},
		{"deliveries", strconv.FormatInt(r.Deliveries, 10), ""},
		{"fan-out deliveries/s", fmt.Sprintf("%.0f", r.DeliveriesPerSec()), "≥ 50,000"},
		{"wall deliveries/s (hub paced)", fmt.Sprintf("%.0f", wall), ""},
		{"last peer p50", ms(r.LastPeer.P50), ""},
		{"last peer p99", ms(r.LastPeer.P99), "≤ 20 ms"},
		{"last peer max", ms(r.LastPeer.Max), ""},
		{"first peer p50 / p99", ms(r.FirstPeer.P50) + " / " + ms(r.FirstPeer.P99), ""},
		{"failures", formatCounts(r.Failures), ""},
	}
}

// change tracks the deliveries of one status change.
type change struct {
	sent  time.Time // set before the status is sent, read after done
	want  int32
	got   atomic.Int32
	first atomic.Int64 // unix nanos of the first delivery
	last  atomic.Int64 // unix nanos of the latest delivery
	done  chan struct{}
}

func (c *change) deliver(at time.Time) {
	t := at.UnixNano()
	for {
		f := c.first.Load()
		if (f != 0 && f <= t) || c.first.CompareAndSwap(f, t) {
			break
		}
	}
	for {
		l := c.last.Load()
		if l >= t || c.last.CompareAndSwap(l, t) {
			break
		}
	}
	// After the updates above: whoever completes the count sees them all.
	if c.got.Add(1) == c.want {
		close(c.done)
	}
}

func (g *gen) runPresence(ctx context.Context) (*PresenceResult, error) {
	k, m := g.cfg.Peers, g.cfg.Changes
	hubName := g.cfg.Prefix + "-pres-hub"
	peers := make([]userSpec, k)
	names := make([]string, k)
	for i := range k {
		names[i] = g.userName("pres", i)
		peers[i] = userSpec{name: names[i], peers: []string{hubName}}
	}
	if err := g.ensureUsers(ctx, "presence", []userSpec{{name: hubName}}, peers); err != nil {
		return nil, err
	}
	hub, err := g.loginClient(ctx, hubName)
	if err != nil {
		return nil, fmt.Errorf("%w: presence: %w", ErrSetup, err)
	}
	defer hub.Close()
	go func() {
		for range hub.Events() { // the peers' online statuses: not measured
		}
	}()
	hp := g.newPacer()
	actx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	err = hub.AddPeers(actx, names...)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w: presence: hub add-peers: %w", ErrSetup, err)
	}

	changes := make([]*change, m)
	for i := range changes {
		changes[i] = &change{done: make(chan struct{})}
	}
	var deliveries atomic.Int64
	tag := []byte(g.nonce)
	prefix := g.nonce + "-"
	onFrame := func(at time.Time, data []byte) {
		if !bytes.Contains(data, tag) {
			return
		}
		var ev struct{ Type, User, Status string }
		if json.Unmarshal(data, &ev) != nil || ev.Type != protocol.TypeStatus || ev.User != hubName {
			return
		}
		s, ok := strings.CutPrefix(ev.Status, prefix)
		if !ok {
			return
		}
		i, err := strconv.Atoi(s)
		if err != nil || i < 0 || i >= m {
			return
		}
		deliveries.Add(1)
		changes[i].deliver(at)
	}

	// The peers: raw connections whose read loops timestamp each frame.
	conns := make([]*rawConn, k)
	errs := newErrCounter()
	var online atomic.Int64
	stop := g.progress(func() string {
		return fmt.Sprintf("presence: %d/%d peers online, failures: %s", online.Load(), k, errs)
	})
	g.workers(ctx, k, func(i int) {
		c, err := g.loginRaw(ctx, g.connSource(i), names[i])
		if err != nil {
			errs.add(err)
			return
		}
		conns[i] = c
		online.Add(1)
	})
	stop()
	defer closeAll(conns)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	want := int32(online.Load())
	if want == 0 {
		return nil, fmt.Errorf("%w: presence: no peer could log in: %s", ErrSetup, errs)
	}
	for _, ch := range changes {
		ch.want = want
	}
	for _, c := range conns {
		if c != nil {
			go c.readLoop(onFrame)
		}
	}

	var sent, completed atomic.Int64
	stop = g.progress(func() string {
		return fmt.Sprintf("presence: %d/%d changes sent, %d complete, %d deliveries, failures: %s",
			sent.Load(), m, completed.Load(), deliveries.Load(), errs)
	})
	var lastPeer, firstPeer []time.Duration
	var busy time.Duration
	start := time.Now()
	var end time.Time
	for i, ch := range changes {
		if err := hp.wait(ctx); err != nil {
			stop()
			return nil, err
		}
		sctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
		ch.sent = time.Now()
		err := hub.SetStatus(sctx, prefix+strconv.Itoa(i))
		sent.Add(1)
		if err != nil {
			cancel()
			errs.add(fmt.Errorf("status: %w", err))
			continue
		}
		select {
		case <-ch.done:
			completed.Add(1)
			last := time.Unix(0, ch.last.Load())
			lastPeer = append(lastPeer, last.Sub(ch.sent))
			firstPeer = append(firstPeer, time.Unix(0, ch.first.Load()).Sub(ch.sent))
			busy += last.Sub(ch.sent)
			end = last
		case <-sctx.Done():
			errs.add(fmt.Errorf("%w: change %d reached %d/%d peers", ErrTimeout, i, ch.got.Load(), want))
		}
		cancel()
	}
	stop()
	if end.IsZero() {
		end = time.Now()
	}
	return &PresenceResult{
		Peers: k, Online: int(want), Changes: m, Completed: int(completed.Load()),
		Deliveries: deliveries.Load(), Elapsed: end.Sub(start), Busy: busy,
		LastPeer: summarize(lastPeer), FirstPeer: summarize(firstPeer),
		Failures: errs.snapshot(), Rate: g.cfg.pacing(),
	}, nil
}
