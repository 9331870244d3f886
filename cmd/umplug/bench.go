package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/user-media-plug/umplug/internal/loadgen"
	"github.com/user-media-plug/umplug/protocol"
)

const benchUsage = `usage: umplug bench [flags]

Drives a running umplug server over real sockets and prints figures: first
a header (commit of this build, Go version, GOOS/GOARCH, GOMAXPROCS, CPUs,
CPU model, the scenario's configuration, the server's pid, flags and build
with -pid), then a summary table; progress lines go to stderr. -json prints
one JSON object (header, summary, result, rows) instead.

Pacing: the server allows 20 messages/s per connection by default, so every
connection is paced at -rate (default 20/s). Against a server started with
-msg-rate -1 (limit off, load tests only), pass -unpaced. -rate must be > 0:
0 never means "unpaced".

Flags:
`

// runBench parses `umplug bench` flags into a loadgen.Config, runs the
// scenario against a running server, and prints its header and summary
// table (or, with -json, one JSON report) to stdout; progress lines go to
// stderr once a second.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c loadgen.Config
	var verbose, asJSON bool
	conns := connCounts{}
	fs := flag.NewFlagSet("umplug bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Scenario, "scenario", "calls", "scenario: "+strings.Join(loadgen.Scenarios, ", "))
	fs.StringVar(&c.Server, "server", "http://127.0.0.1:8080", "base URL of the running server")
	fs.DurationVar(&c.Duration, "duration", 0, "calls: how long to loop (default 10s); login-flood: least run time; media: how long to stream")
	fs.IntVar(&c.Pairs, "pairs", 0, "calls, login-flood, media: concurrent caller/callee pairs (default 20; media 50)")
	fs.IntVar(&c.FrameBytes, "frame-bytes", 0, "media: bytes per frame, 16..65536 (default 1024)")
	fs.Float64Var(&c.FPS, "fps", 0, "media: frames/s each side sends (video-like: -fps 30 -frame-bytes 10240); 0: as fast as possible")
	fs.Var(&conns, "conns", "idle: `N` or A,B: measure server memory at A and at B identified connections; per-connection figures are the slope (B-A) (default 5000,10000; N means N/2,N; needs B open files); reconnect: N identified devices (default 10000)")
	fs.StringVar(&c.RestartCmd, "restart", "", "reconnect: shell `command` run once all devices are identified; it must restart the server on the same data, in the background with its output redirected, and may print the new server's pid as its last line (then the storm's server CPU is read from /proc) (empty: restart it yourself, the bench waits for the drop)")
	fs.DurationVar(&c.ReconnectJitter, "reconnect-jitter", 0, "reconnect: each device first waits a random time up to this before reconnecting (default 1s)")
	fs.IntVar(&c.Peers, "peers", 0, "presence: online mutual peers of the status-changing user (default 1000, max 1000)")
	fs.IntVar(&c.Changes, "changes", 0, "presence: status changes (default 200)")
	fs.IntVar(&c.Flood, "flood", 0, "login-flood: whoami fired at once from separate connections (default 1000)")
	fs.Float64Var(&c.Rate, "rate", protocol.DefaultRateLimit, "messages/s each connection is paced to, under the server's per-connection limit; must be > 0 (see -unpaced)")
	fs.BoolVar(&c.Unpaced, "unpaced", false, "no pacing: send each message once the last is answered (for a server run with -msg-rate -1); -rate is ignored")
	fs.IntVar(&c.Sources, "sources", 0, "spread connections over loopback source addresses 127.0.0.1..127.0.0.N (default one per 500 connections)")
	fs.IntVar(&c.Concurrency, "concurrency", 0, "logins in flight while connecting (default 64)")
	fs.IntVar(&c.PID, "pid", 0, "server process id: read its CPU time from /proc (ns) instead of /metrics (10 ms), and its flags and build for the header")
	fs.DurationVar(&c.Settle, "settle", 0, "idle: wait before each reading of server memory (default 5s), then until RSS is steady")
	fs.StringVar(&c.GCURL, "gc-url", "", "idle: `URL` fetched before each memory reading to make the server collect garbage, e.g. http://127.0.0.1:6060/debug/freeosmemory (serve -debug-addr 127.0.0.1:6060)")
	fs.DurationVar(&c.Timeout, "timeout", 0, "bound of one step: request or awaited event (default 10s; logins 10x)")
	fs.StringVar(&c.Password, "password", "", "password of the bench users (default bench-password)")
	fs.StringVar(&c.Prefix, "prefix", "", "prefix of the bench user names (default bench)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object (header, summary, result, rows) instead of the text header and table")
	fs.BoolVar(&verbose, "v", false, "debug logs to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	if c.Rate <= 0 {
		return fmt.Errorf("bench: -rate %g: must be > 0 (for no pacing, use -unpaced)", c.Rate)
	}
	c.ConnsBase, c.Conns = conns.a, conns.b
	c.Progress = stderr
	if verbose {
		c.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h, err := loadgen.NewHeader(ctx, c, append([]string{"umplug", "bench"}, args...))
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if !asJSON {
		if err := loadgen.WriteHeader(stdout, h); err != nil {
			return err
		}
		fmt.Fprintln(stdout)
	}
	res, err := loadgen.Run(ctx, c)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if asJSON {
		return loadgen.WriteJSON(stdout, loadgen.NewReport(h, res))
	}
	return loadgen.WriteTable(stdout, fmt.Sprintf("umplug bench -scenario %s  (server %s)", h.Config["scenario"], h.Server.URL), res)
}

// connCounts is the -conns flag: "N" (first count N/2) or "A,B".
type connCounts struct{ a, b int }

func (c *connCounts) String() string {
	if c == nil || c.b == 0 {
		return ""
	}
	return fmt.Sprintf("%d,%d", c.a, c.b)
}

func (c *connCounts) Set(s string) error {
	first, second, two := strings.Cut(s, ",")
	b, err := strconv.Atoi(strings.TrimSpace(second))
	if !two {
		b, err = strconv.Atoi(strings.TrimSpace(first))
	}
	if err != nil || b < 2 {
		return fmt.Errorf("want N or A,B with 0 < A < B, got %q", s)
	}
	a := b / 2
	if two {
		if a, err = strconv.Atoi(strings.TrimSpace(first)); err != nil || a < 1 || a >= b {
			return fmt.Errorf("want A,B with 0 < A < B, got %q", s)
		}
	}
	c.a, c.b = a, b
	return nil
}
