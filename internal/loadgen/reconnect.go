package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
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
// is the cheap path being measured, not resume). Time zero is when the new
// server accepted connections: its first /healthz answer, or the first
// connection a device came back on if that was earlier (the storm starts
// as soon as the server listens, and slows the health check down); a device
// is back when its whoami with the session is answered. While down, each
// device retries its dial every 250–500 ms (jittered) after a first random
// wait of up to ReconnectJitter.
//
// Identification by session has a target per server core (≥ 5,000/s), so
// the scenario also reads the server's CPU time (Config.PID: /proc, else
// /metrics) around the setup's password logins and its session logins, and
// the new server's from its first accepted connection to the last device
// back (/proc when the restart command prints the new server's pid as its
// last line of output: the new server's CPU is read every millisecond
// until a device connects, so that its start-up stays out; else /metrics,
// start-up included): identifications per server-core-second, over real
// sockets, connection set-up included. The password figure is there to show
// that path still pays argon2id.

// ReconnectResult is the outcome of the reconnect scenario.
type ReconnectResult struct {
	Devices int `json:"devices"` // identified before the restart
	Back    int `json:"back"`    // identified again
	Users   int `json:"users"`
	Sources int `json:"sources"`
	// Setup is how long the first identification of all devices took.
	Setup time.Duration `json:"setup_ns"`
	// Down is from the first dropped connection to time zero.
	Down time.Duration `json:"down_ns"`
	// Last is when the last device was back, after time zero.
	Last time.Duration `json:"last_ns"`
	// Curve is how many devices were back at every CurveStep after time
	// zero, up to the step that has them all.
	Curve     []CurvePoint  `json:"curve"`
	CurveStep time.Duration `json:"curve_step_ns"`
	// PeakRSS is the new server's highest process_resident_memory_bytes
	// seen while the devices came back (read every CurveStep).
	PeakRSS  float64        `json:"peak_rss_bytes"`
	Failures map[string]int `json:"failures"`

	// Server CPU per identification over real sockets (dial, WebSocket
	// upgrade, whoami and its answer, the presence it causes), in three
	// phases: the password logins of the setup (argon2id), its session
	// logins (Concurrency in flight, the old server), and the storm (the
	// new server, from its first accepted connection to the last device
	// back). CPUSource and
	// StormCPUSource say where the CPU was read: /proc (nanoseconds, with
	// -pid, and for the storm a pid printed by the restart command) or
	// /metrics (10 ms).
	PasswordLogins int           `json:"password_logins"`
	PasswordCPU    time.Duration `json:"password_cpu_ns"`
	SessionLogins  int           `json:"session_logins"`
	SessionCPU     time.Duration `json:"session_cpu_ns"`
	StormCPU       time.Duration `json:"storm_cpu_ns"`
	CPUSource      string        `json:"cpu_source"`
	StormCPUSource string        `json:"storm_cpu_source"`
	// RestartedPID is the new server's pid, as the restart command
	// printed it; 0 when unknown.
	RestartedPID int `json:"restarted_pid"`
}

// perCoreSec is n identifications per second of one server core: n over
// the server CPU time they took; 0 when no CPU was measured.
func perCoreSec(n int, cpu time.Duration) float64 {
	if cpu <= 0 {
		return 0
	}
	return float64(n) / cpu.Seconds()
}

// PasswordPerCoreSec is password logins per server-core-second (setup).
func (r *ReconnectResult) PasswordPerCoreSec() float64 {
	return perCoreSec(r.PasswordLogins, r.PasswordCPU)
}

// SessionPerCoreSec is session logins per server-core-second during the
// setup: steady, Concurrency in flight.
func (r *ReconnectResult) SessionPerCoreSec() float64 {
	return perCoreSec(r.SessionLogins, r.SessionCPU)
}

// StormPerCoreSec is session logins per server-core-second of the new
// server during the storm.
func (r *ReconnectResult) StormPerCoreSec() float64 {
	return perCoreSec(r.Back, r.StormCPU)
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

		"password_logins":              float64(r.PasswordLogins),
		"password_login_cpu_ns":        float64(cpuPer(r.PasswordCPU, int64(r.PasswordLogins))),
		"password_logins_per_core_sec": r.PasswordPerCoreSec(),
		"session_logins":               float64(r.SessionLogins),
		"session_login_cpu_ns":         float64(cpuPer(r.SessionCPU, int64(r.SessionLogins))),
		"session_logins_per_core_sec":  r.SessionPerCoreSec(),
		"storm_cpu_ns":                 float64(r.StormCPU),
		"storm_login_cpu_ns":           float64(cpuPer(r.StormCPU, int64(r.Back))),
		"storm_logins_per_core_sec":    r.StormPerCoreSec(),
	}
}

// cpuRow formats n identifications that took cpu of server CPU: per
// identification and per server-core-second.
func cpuRow(n int, cpu time.Duration) string {
	if cpu <= 0 || n == 0 {
		return "not measured"
	}
	per := cpuPer(cpu, int64(n))
	return fmt.Sprintf("%s each, %.0f/s per core (%d in %s)", fmtCPU(per), perCoreSec(n, cpu), n, cpu.Round(time.Millisecond))
}

// fmtCPU prints a per-identification CPU time in µs, or in ms from 1 ms.
func fmtCPU(d time.Duration) string {
	if d >= time.Millisecond {
		return ms(d)
	}
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 1, 64) + " µs"
}

// Rows implements Result.
func (r *ReconnectResult) Rows() []Row {
	rows := []Row{
		{"devices identified before the restart", fmt.Sprintf("%d (%d users × ≤8)", r.Devices, r.Users), ""},
		{"source addresses", fmt.Sprint(r.Sources), ""},
		{"first identification (password per user, then sessions)", r.Setup.Round(time.Millisecond).String(), ""},
		{"server down (first drop → new server accepts)", r.Down.Round(time.Millisecond).String(), ""},
		{"devices back with their session", fmt.Sprintf("%d / %d", r.Back, r.Devices), "all"},
		{"last device back after the new server accepted", r.Last.Round(time.Millisecond).String(), "≤ 10s (10,000 devices)"},
		{"server peak RSS during the storm", mib(r.PeakRSS), ""},
		{"failures (retried)", formatCounts(r.Failures), ""},
		{"server CPU per session identification, storm", cpuRow(r.Back, r.StormCPU), "≥ 5000/s per core"},
		{"server CPU per session identification, setup (steady)", cpuRow(r.SessionLogins, r.SessionCPU), "≥ 5000/s per core"},
		{"server CPU per password identification (argon2id), setup", cpuRow(r.PasswordLogins, r.PasswordCPU), ""},
		{"server CPU read from", r.cpuSources(), ""},
	}
	// The curve, curvePerRow points a row so that the table stays narrow.
	metric := "devices back vs time"
	for i := 0; i < len(r.Curve); i += curvePerRow {
		var b strings.Builder
		for j, pt := range r.Curve[i:min(i+curvePerRow, len(r.Curve))] {
			if j > 0 {
				b.WriteString(" ")
			}
			fmt.Fprintf(&b, "%.2fs:%d", pt.At.Seconds(), pt.Back)
		}
		rows = append(rows, Row{metric, b.String(), ""})
		metric = ""
	}
	return rows
}

// curvePerRow is how many curve points a table row holds.
const curvePerRow = 5

// cpuSources says where the server CPU figures came from.
func (r *ReconnectResult) cpuSources() string {
	src := r.CPUSource
	if src == "" {
		src = "not read"
	}
	storm := r.StormCPUSource
	if storm == "" {
		storm = "not read"
	}
	if r.RestartedPID > 0 {
		storm += fmt.Sprintf(" (pid %d)", r.RestartedPID)
	}
	// Short: the row's value sets the table's width.
	short := strings.NewReplacer("/proc schedstat", "/proc", "/metrics process_cpu_seconds_total", "/metrics")
	return short.Replace("setup: " + src + "; storm: " + storm)
}

// restartPID is the restarted server's pid in a restart command's output:
// its last non-empty line, when that is a positive integer; 0 otherwise.
func restartPID(out []byte) int {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(lines[len(lines)-1]))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
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
	// Server CPU around each phase; a failed reading leaves the phase's
	// figure unmeasured rather than failing the storm.
	var cpuSrc string
	cpuNow := func() (time.Duration, bool) {
		d, src, err := g.serverCPU(ctx)
		if err != nil {
			g.log.Warn("reconnect: server CPU", "err", err)
			return 0, false
		}
		cpuSrc = src
		return d, true
	}
	var passwordOK, sessionOK atomic.Int64
	cpu0, ok0 := cpuNow()
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
		passwordOK.Add(1)
	})
	cpu1, ok1 := cpuNow()
	g.workers(ctx, n, func(i int) {
		if i%devicesPerUser == 0 || sessions[i/devicesPerUser] == "" {
			return
		}
		c, res, err := g.loginSession(ctx, i, sessions[i/devicesPerUser])
		if err != nil {
			errs.add(err)
			return
		}
		devs[i] = g.watch(c, g.deviceUser("reconnect", i), res)
		ok.Add(1)
		sessionOK.Add(1)
	})
	cpu2, ok2 := cpuNow()
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
	// The restart command's pid, once it has returned (normally right
	// after spawning the new server, before that listens).
	rr := &restartRun{done: make(chan struct{})}
	if g.cfg.RestartCmd != "" {
		go func() {
			rr.pid, rr.err = g.restart(ctx)
			close(rr.done)
		}()
	} else {
		close(rr.done)
		fmt.Fprintf(g.cfg.Progress, "reconnect: restart the server now (waiting for the connections to drop)\n")
	}
	// firstConnect is the first TCP connection a device made after its
	// drop: the new server's listener is open (or, conservatively, the old
	// one still was). The storm's CPU counts from the new server's last
	// CPU reading before it.
	var firstConnect atomic.Int64
	stormCtx, stormStop := context.WithCancel(ctx) // the devices' and the sampler's
	defer stormStop()
	startCPU := g.sampleStartCPU(stormCtx, rr, &firstConnect)

	// Every device waits for its drop, then retries with jitter.
	var back atomic.Int64
	allBack := make(chan struct{}) // closed by the last device back
	backAt := make([]int64, n)     // when its whoami was answered
	connAt := make([]int64, n)     // when the connection it came back on was made
	var wg sync.WaitGroup
	for i, d := range devs {
		if d == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := stormCtx
			select {
			case <-d.dropped:
			case <-ctx.Done():
				return
			}
			if err := sleep(ctx, time.Duration(rand.Int64N(int64(g.cfg.ReconnectJitter)+1))); err != nil {
				return
			}
			for ctx.Err() == nil {
				var dialed int64
				c, _, err := g.loginSessionDialed(ctx, i, d.session, d.device, func() {
					dialed = time.Now().UnixNano()
					firstConnect.CompareAndSwap(0, dialed)
				})
				if err == nil {
					c.discard()
					d.conn = c
					backAt[i], connAt[i] = time.Now().UnixNano(), dialed
					if back.Add(1) == int64(identified) {
						close(allBack)
					}
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
	// The devices' goroutines end before their connections are closed:
	// d.conn is theirs until then.
	defer func() {
		stormStop()
		wg.Wait()
		for _, d := range devs {
			if d != nil && d.conn != nil {
				d.conn.close()
			}
		}
	}()

	// Time zero: the new server's first /healthz answer after the drop, or
	// the first connection a device came back on if that was earlier (the
	// storm begins as soon as the server listens, and slows the health
	// check down).
	for firstDrop.Load() == 0 {
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
	healthAt, err := g.healthzAfter(ctx)
	if err != nil {
		return nil, err
	}
	// The peak RSS is read on its own goroutine, every step, until all
	// devices are back or 60 s have passed.
	const step = 250 * time.Millisecond
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
	end := time.NewTimer(time.Until(healthAt.Add(60 * time.Second)))
	defer end.Stop()
	select {
	case <-allBack:
	case <-end.C:
	case <-ctx.Done():
		rssStop()
		<-rssDone
		return nil, ctx.Err()
	}
	// The storm's CPU, read at once: later would add idle time.
	stormEnd, stormEndErr := g.stormCPUEnd(ctx, startCPU)
	rssStop()
	<-rssDone
	// Devices not back by the deadline stop trying: backAt and connAt are
	// read below.
	stormStop()
	wg.Wait()

	select {
	case <-rr.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if rr.err != nil {
		return nil, rr.err
	}
	res := &ReconnectResult{Devices: identified, Users: users, Sources: g.cfg.Sources,
		Setup: setup, CurveStep: step, RestartedPID: rr.pid,
		PasswordLogins: int(passwordOK.Load()), SessionLogins: int(sessionOK.Load()),
		PeakRSS: float64(peak.Load()), Back: int(back.Load()), Failures: errs.snapshot()}
	if ok0 && ok1 && ok2 {
		res.PasswordCPU, res.SessionCPU, res.CPUSource = cpu1-cpu0, cpu2-cpu1, cpuSrc
	}
	if stormEndErr != nil {
		g.log.Warn("reconnect: storm CPU", "err", stormEndErr)
	} else {
		res.StormCPU, res.StormCPUSource = stormEnd.cpu, stormEnd.source
	}
	t0 := healthAt.UnixNano()
	for _, at := range connAt {
		if at > 0 && at < t0 {
			t0 = at
		}
	}
	res.Down = time.Duration(t0 - firstDrop.Load())
	res.Curve, res.Last = reconnectCurve(backAt, t0, step)
	return res, nil
}

// reconnectCurve is how many devices were back (backAt, Unix ns; 0: never)
// at every step after t0, up to the step that has them all, and when the
// last one came back after t0.
func reconnectCurve(backAt []int64, t0 int64, step time.Duration) ([]CurvePoint, time.Duration) {
	var at []int64
	for _, b := range backAt {
		if b > 0 {
			at = append(at, b-t0)
		}
	}
	if len(at) == 0 {
		return nil, 0
	}
	slices.Sort(at)
	last := time.Duration(at[len(at)-1])
	var curve []CurvePoint
	i := 0
	for t := step; ; t += step {
		for i < len(at) && at[i] <= int64(t) {
			i++
		}
		curve = append(curve, CurvePoint{At: t, Back: i})
		if i == len(at) {
			return curve, last
		}
	}
}

// restartRun is the restart command's outcome: pid and err are set when
// done is closed.
type restartRun struct {
	done chan struct{}
	pid  int // the new server's, as the command printed it; 0: unknown
	err  error
}

// stormStart is the restarted server's CPU when its storm began.
type stormStart struct {
	pid int           // 0: unknown, the storm's CPU comes from /metrics
	cpu time.Duration // its CPU before the first device connected
	// fromStart: no reading came before the first connection, so the
	// storm's CPU counts from the process's start (its start-up included).
	fromStart bool
}

// sampleStartCPU waits for the restart command's pid, then reads that
// process's CPU every millisecond until a device has connected
// (firstConnect): the last reading taken before is where the storm's CPU
// counts from. The new server listens only once it has started, so what
// it spent starting up stays out of the storm.
func (g *gen) sampleStartCPU(ctx context.Context, rr *restartRun, firstConnect *atomic.Int64) <-chan stormStart {
	out := make(chan stormStart, 1)
	go func() {
		select {
		case <-rr.done:
		case <-ctx.Done():
			out <- stormStart{}
			return
		}
		if rr.err != nil || rr.pid == 0 {
			out <- stormStart{}
			return
		}
		s := stormStart{pid: rr.pid, fromStart: true}
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for ctx.Err() == nil {
			readAt := time.Now().UnixNano()
			cpu, err := procCPU(rr.pid)
			if fc := firstConnect.Load(); fc != 0 && fc <= readAt {
				break
			}
			if err == nil {
				s.cpu, s.fromStart = cpu, false
			}
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
		out <- s
	}()
	return out
}

// stormCPU is the restarted server's CPU over the storm and where it was
// read.
type stormCPU struct {
	cpu    time.Duration
	source string
}

// stormCPUEnd reads the restarted server's CPU now and returns what it
// spent since start: from /proc with its pid, else from /metrics (then
// since the process started).
func (g *gen) stormCPUEnd(ctx context.Context, start <-chan stormStart) (stormCPU, error) {
	var s stormStart
	select {
	case s = <-start:
	case <-ctx.Done():
		return stormCPU{}, ctx.Err()
	}
	if s.pid > 0 {
		d, err := procCPU(s.pid)
		if err == nil {
			src := "/proc schedstat"
			if s.fromStart {
				src += ", since the server started"
			}
			return stormCPU{d - s.cpu, src}, nil
		}
		g.log.Warn("reconnect: restarted server's CPU from /proc; trying /metrics", "pid", s.pid, "err", err)
	}
	v, err := g.metric(ctx, "process_cpu_seconds_total")
	if err != nil {
		return stormCPU{}, err
	}
	return stormCPU{time.Duration(v * float64(time.Second)), "/metrics process_cpu_seconds_total, since the server started"}, nil
}

// restart runs RestartCmd and returns the restarted server's pid if the
// command printed one (its last line of output). The command should start
// the new server in the background with its output redirected: a server
// holding the command's stdout open would keep it from ending (after the
// shell exits, the bench waits 2 s more, then goes on with what it read).
func (g *gen) restart(ctx context.Context) (int, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", g.cfg.RestartCmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		g.log.Warn("reconnect: the restart command's output stayed open after it exited (redirect the server's output)")
		err = nil
	}
	if err != nil {
		return 0, fmt.Errorf("reconnect: restart command: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return restartPID(stdout.Bytes()), nil
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
	return g.whoami(ctx, i, map[string]any{"password": g.cfg.Password}, nil)
}

// loginSession logs device i in with session.
func (g *gen) loginSession(ctx context.Context, i int, session string) (*rawConn, *protocol.Response, error) {
	return g.loginSessionDialed(ctx, i, session, "", nil)
}

// loginSessionDialed logs device i in with session, resuming device if
// set; dialed, if not nil, is called once the connection is made.
func (g *gen) loginSessionDialed(ctx context.Context, i int, session, device string, dialed func()) (*rawConn, *protocol.Response, error) {
	m := map[string]any{"session": session}
	if device != "" {
		m["resume"] = device
	}
	return g.whoami(ctx, i, m, dialed)
}

// whoami dials for device i and identifies it with cred; dialed, if not
// nil, is called once the connection is made.
func (g *gen) whoami(ctx context.Context, i int, cred map[string]any, dialed func()) (*rawConn, *protocol.Response, error) {
	c, err := g.dialRaw(ctx, g.connSource(i))
	if err != nil {
		return nil, nil, err
	}
	if dialed != nil {
		dialed()
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
