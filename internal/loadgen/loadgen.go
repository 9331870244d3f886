// Package loadgen is the load generator behind `umplug bench`: it drives a
// running umplug server over real sockets and prints figures. It measures;
// it never asserts (a test never asserts on wall-clock speed).
//
// Scenarios:
//
//	calls        P caller/callee pairs doing full call setups in a loop
//	idle         identified, idle connections: server RSS per connection, as
//	             the slope between two connection counts
//	presence     one user with K online mutual peers changes status M times
//	login-flood  calls, plus F whoami fired at once from separate connections
//	media        P calls streaming timestamped frames both ways through the
//	             media relay: frames/s, one-way latency, order and loss
//	webrtc       P WebRTC calls through the SFU (webrtc.go), 1 Mbit/s video
//	             and audio each side: packets/s, loss, latency, CPU/packet;
//	             only in a loopback-only network namespace
//	reconnect    N identified devices (sessions), the server restarted
//	             (-restart command, or by hand), every device back with its
//	             session: devices back vs time, last one back, peak RSS,
//	             server CPU per identification by session and by password
//	             (reconnect.go)
//
// Users are created on the fly with reg-user (an existing name is fine, so
// runs reuse them) and named <prefix>-<scenario>-…, all with one password.
// The server limits registrations per remote address (20 a minute by
// default), so against a loopback server registrations are spread over
// source addresses 127.64.0.0–127.127.255.255, and idle connections over
// 127.0.0.1…127.0.0.k (the server also bounds connections per address).
// Linux routes all of 127.0.0.0/8 to the loopback interface, so no set-up is
// needed. Against a non-loopback server no source address is chosen and the
// server's limits apply as they are.
//
// The server's per-connection message rate limit (20/s, burst 50 by default)
// bounds what one connection may send; Config.Rate paces every connection
// below it, so a run measures the server and not its refusals. Against a
// server with the limit off (umplug serve -msg-rate -1), set Config.Unpaced
// (umplug bench -unpaced): a Rate of 0 always means the default, never
// "unpaced".
package loadgen

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/user-media-plug/umplug/protocol"
)

// Scenarios lists the scenario names Run accepts.
var Scenarios = []string{"calls", "idle", "presence", "login-flood", "media", "webrtc", "reconnect"}

// Config configures a run. Zero values mean the stated defaults.
type Config struct {
	// Server is the server's base URL; default http://127.0.0.1:8080.
	Server string
	// Scenario is one of Scenarios; default calls.
	Scenario string
	// Duration of the calls scenario, and the least duration of the calls
	// that run under login-flood; how long media streams; default 10 s.
	Duration time.Duration
	// Pairs is the number of concurrent caller/callee pairs (calls,
	// login-flood, media); default 20, for media 50.
	Pairs int
	// FrameBytes is the size of a media frame; default 1024, at least 16
	// (a timestamp and a sequence number), at most protocol.MaxFrameBytes.
	FrameBytes int
	// FPS paces each media side to this many frames per second (video-like:
	// 30 with FrameBytes 10240); 0 sends as fast as the relay takes them.
	FPS float64
	// Conns is the number of idle identified connections at the second
	// measurement; default 10,000. The load generator needs about as many
	// open files.
	Conns int
	// ConnsBase is the number of idle connections at the first measurement;
	// default Conns/2. Per-connection figures are the slope between the two
	// (ΔRSS/Δconnections), so that fixed costs (the argon2 arena the logins
	// left, runtime caches) are not counted per connection.
	ConnsBase int
	// Peers is the number of online mutual peers of the presence user;
	// default 1000 (at most protocol.MaxPeers).
	Peers int
	// Changes is the number of status changes of the presence user; default 200.
	Changes int
	// Flood is the number of whoami fired at once by login-flood; default 1000.
	Flood int
	// Password of every bench user; default "bench-password".
	Password string
	// Prefix of every bench user name; default "bench".
	Prefix string
	// Rate paces each connection to this many messages per second, to stay
	// under the server's per-connection limit. 0 means
	// protocol.DefaultRateLimit (the server's default limit); negative is an
	// error. Unpaced turns pacing off.
	Rate float64
	// Unpaced sends every message as soon as the previous one is answered,
	// for a server whose per-connection limit is off (-msg-rate -1). Rate is
	// then ignored.
	Unpaced bool
	// RestartCmd (reconnect) is run with sh -c once every device is
	// identified: it must stop the server and start it again on the same
	// data. Empty: the scenario waits for the connections to drop (the
	// operator or a script restarts the server).
	RestartCmd string
	// ReconnectJitter (reconnect) bounds the random wait of each device
	// before its first reconnect attempt; default 1 s.
	ReconnectJitter time.Duration
	// Sources spreads the connections of idle, presence and login-flood
	// over the loopback source addresses 127.0.0.1…127.0.0.Sources; 0
	// means one per connsPerSource connections, under the per-address
	// connection caps servers apply.
	Sources int
	// Concurrency bounds logins in flight while connecting; default 64.
	// The server bounds password hashing to its CPUs anyway.
	Concurrency int
	// PID, when set, is the server's process id on this machine: server CPU
	// is then read from /proc/PID/task/*/schedstat (nanoseconds) instead of
	// /metrics' process_cpu_seconds_total (10 ms resolution).
	PID int
	// GCURL, when set, is fetched before each of idle's memory readings to
	// make the server collect garbage first, e.g.
	// http://127.0.0.1:6060/debug/freeosmemory with umplug serve
	// -debug-addr 127.0.0.1:6060. Without it, how much of the argon2
	// memory the logins just used is still garbage in the heap at a
	// reading is luck, and it moves the slope by tens of MiB over ΔN.
	GCURL string
	// Settle is how long idle waits, connections open, before reading the
	// server's memory (and after the warm-up for the baseline); default 5 s.
	Settle time.Duration
	// Timeout bounds one step (a request, an awaited event); default 10 s.
	// Logins queue behind password hashing and get 10× this.
	Timeout time.Duration
	// Progress receives one progress line a second; nil discards them.
	Progress io.Writer
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Server == "" {
		c.Server = "http://127.0.0.1:8080"
	}
	if c.Scenario == "" {
		c.Scenario = "calls"
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Pairs <= 0 {
		c.Pairs = 20
		if c.Scenario == "media" {
			c.Pairs = 50
		}
	}
	if c.FrameBytes == 0 {
		c.FrameBytes = 1024
	}
	if c.FrameBytes < mediaHeader || c.FrameBytes > protocol.MaxFrameBytes {
		return fmt.Errorf("%w: frame bytes %d not in [%d, %d]", ErrBadConfig, c.FrameBytes, mediaHeader, protocol.MaxFrameBytes)
	}
	if c.FPS < 0 {
		return fmt.Errorf("%w: fps %g < 0", ErrBadConfig, c.FPS)
	}
	if c.Conns <= 0 {
		c.Conns = 10000
	}
	if c.ConnsBase <= 0 {
		c.ConnsBase = c.Conns / 2
	}
	if c.ConnsBase < 1 || c.ConnsBase >= c.Conns {
		return fmt.Errorf("%w: idle connection counts %d, %d: want 0 < first < second", ErrBadConfig, c.ConnsBase, c.Conns)
	}
	if c.Peers <= 0 {
		c.Peers = 1000
	}
	if c.Peers > protocol.MaxPeers {
		return fmt.Errorf("%w: peers %d > %d (a user lists at most %d peers)", ErrBadConfig, c.Peers, protocol.MaxPeers, protocol.MaxPeers)
	}
	if c.Changes <= 0 {
		c.Changes = 200
	}
	if c.Flood <= 0 {
		c.Flood = 1000
	}
	if c.Password == "" {
		c.Password = "bench-password"
	}
	if c.Prefix == "" {
		c.Prefix = "bench"
	}
	if c.Rate < 0 {
		return fmt.Errorf("%w: rate %g < 0 (0 means the default %g msg/s; set Unpaced for no pacing)", ErrBadConfig, c.Rate, float64(protocol.DefaultRateLimit))
	}
	if c.Rate == 0 {
		c.Rate = protocol.DefaultRateLimit
	}
	if c.Sources <= 0 {
		n, per := 1, connsPerSource
		switch c.Scenario {
		case "idle":
			n = c.Conns
		case "reconnect":
			// Every device reconnects at once: spread them so that no
			// address has more logins in progress than the server allows
			// (64), as devices on their own addresses would not.
			n, per = c.Conns, reconnectsPerSource
		case "presence":
			n = c.Peers
		case "login-flood":
			n = c.Flood
		}
		c.Sources = min(254, max(1, (n+per-1)/per))
	}
	if c.Sources > 254 {
		return fmt.Errorf("%w: sources %d > 254", ErrBadConfig, c.Sources)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.ReconnectJitter <= 0 {
		c.ReconnectJitter = time.Second
	}
	if c.Settle <= 0 {
		c.Settle = 5 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// connsPerSource is how many connections share a source address by
// default: half of umplug serve's default per-address cap (1,000).
const connsPerSource = 500

// reconnectsPerSource is how many reconnect devices share a source address
// by default: under umplug serve's default bound on logins in progress
// from one address (64), which a storm from 500 devices per address hits.
const reconnectsPerSource = 50

// Row is one line of a summary table.
type Row struct {
	Metric string `json:"metric"`
	Value  string `json:"value"`
	Target string `json:"target"` // the target, "" when there is none
}

// Result is the outcome of one scenario. Its JSON form (field tags) is
// part of umplug bench -json: durations in nanoseconds, named _ns.
type Result interface {
	// Rows is the summary table.
	Rows() []Row
	// Summary is the key figures by stable name, the unit as suffix.
	Summary() map[string]float64
}

// WriteTable prints a result as an aligned table under a title line.
func WriteTable(w io.Writer, title string, r Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, title)
	fmt.Fprintln(tw, "metric\tvalue\ttarget")
	fmt.Fprintln(tw, "------\t-----\t------")
	for _, row := range r.Rows() {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", row.Metric, row.Value, row.Target)
	}
	return tw.Flush()
}

// Run runs cfg.Scenario against cfg.Server.
func Run(ctx context.Context, cfg Config) (Result, error) {
	g, err := newGen(cfg)
	if err != nil {
		return nil, err
	}
	switch g.cfg.Scenario {
	case "calls":
		return wrap(g.runCalls(ctx))
	case "idle":
		return wrap(g.runIdle(ctx))
	case "presence":
		return wrap(g.runPresence(ctx))
	case "login-flood":
		return wrap(g.runFlood(ctx))
	case "media":
		return wrap(g.runMedia(ctx))
	case "webrtc":
		return wrap(g.runWebRTC(ctx)) // webrtc.go
	case "reconnect":
		return wrap(g.runReconnect(ctx)) // reconnect.go
	}
	return nil, fmt.Errorf("%w: %q (want one of %s)", ErrUnknownScenario, g.cfg.Scenario, strings.Join(Scenarios, ", "))
}

// wrap keeps a failed scenario's nil result a nil Result.
func wrap[T Result](r T, err error) (Result, error) {
	if err != nil {
		return nil, err
	}
	return r, nil
}

// gen is one run's shared machinery.
type gen struct {
	cfg      Config
	log      *slog.Logger
	http     *http.Client
	metaURL  string
	loopback bool   // the server is on loopback: source addresses may be chosen
	nonce    string // tells this run's status strings from stale ones

	sessions sync.Map // user name → session secret from its first login

	regMu   sync.Mutex // guards regNext
	regNext uint32     // next registration source address index
}

func newGen(cfg Config) (*gen, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	metaURL, loopback, err := metaEndpoint(cfg.Server)
	if err != nil {
		return nil, err
	}
	g := &gen{
		cfg:      cfg,
		log:      cfg.Logger,
		http:     &http.Client{Timeout: 5 * time.Second},
		metaURL:  metaURL,
		loopback: loopback,
		nonce:    strconv.FormatUint(rand.Uint64()%1e9, 36),
		// A random start keeps a rerun within the server's window off the
		// addresses the last run used up.
		regNext: rand.Uint32N(1 << 21),
	}
	if !loopback {
		g.log.Warn("server is not on loopback: source addresses are not spread, the server's per-address limits apply")
	}
	return g, nil
}

// progress prints line() to cfg.Progress every second until the returned
// stop is called.
func (g *gen) progress(line func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				fmt.Fprintf(g.cfg.Progress, "[%5.1fs] %s\n", now.Sub(start).Seconds(), line())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// pacer spaces one connection's messages at a steady rate: a steady rate
// never exceeds the server's token bucket, which refills at the same rate
// and starts full.
type pacer struct {
	interval time.Duration
	next     time.Time
}

func (g *gen) newPacer() *pacer {
	if g.cfg.Unpaced {
		return &pacer{}
	}
	return &pacer{interval: time.Duration(float64(time.Second) / g.cfg.Rate)}
}

// wait blocks until the connection may send its next message.
func (p *pacer) wait(ctx context.Context) error {
	if p.interval == 0 {
		return ctx.Err()
	}
	now := time.Now()
	if d := p.next.Sub(now); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		now = p.next
	}
	p.next = now.Add(p.interval)
	return nil
}

// eachPair runs f for pairs 0…n-1, at most Concurrency at once, and returns
// the first error, in pair order.
func (g *gen) eachPair(ctx context.Context, n int, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	sem := make(chan struct{}, g.cfg.Concurrency)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// workers runs f(i) for i in 0…n-1 on at most Concurrency goroutines. Once
// ctx ends, the i not yet handed out are skipped: the caller sees ctx.Err().
func (g *gen) workers(ctx context.Context, n int, f func(i int)) {
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(g.cfg.Concurrency, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				f(i)
			}
		}()
	}
feed:
	for i := range n {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
}
