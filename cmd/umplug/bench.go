package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/user-media-plug/umplug/internal/loadgen"
	"github.com/user-media-plug/umplug/protocol"
)

// runBench parses `umplug bench` flags into a loadgen.Config, runs the
// scenario against a running server, and prints its summary table to
// stdout; progress lines go to stderr once a second.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c loadgen.Config
	var rate float64
	var verbose bool
	fs := flag.NewFlagSet("umplug bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Scenario, "scenario", "calls", "scenario: "+strings.Join(loadgen.Scenarios, ", "))
	fs.StringVar(&c.Server, "server", "http://127.0.0.1:8080", "base URL of the running server")
	fs.DurationVar(&c.Duration, "duration", 0, "calls: how long to loop (default 10s); login-flood: least run time; media: how long to stream")
	fs.IntVar(&c.Pairs, "pairs", 0, "calls, login-flood, media: concurrent caller/callee pairs (default 20; media 50)")
	fs.IntVar(&c.FrameBytes, "frame-bytes", 0, "media: bytes per frame, 16..65536 (default 1024)")
	fs.Float64Var(&c.FPS, "fps", 0, "media: frames/s each side sends (video-like: -fps 30 -frame-bytes 10240); 0: as fast as possible")
	fs.IntVar(&c.Conns, "conns", 0, "idle: identified connections to hold (default 10000; needs as many open files)")
	fs.IntVar(&c.Peers, "peers", 0, "presence: online mutual peers of the status-changing user (default 1000, max 1000)")
	fs.IntVar(&c.Changes, "changes", 0, "presence: status changes (default 200)")
	fs.IntVar(&c.Flood, "flood", 0, "login-flood: whoami fired at once from separate connections (default 1000)")
	fs.Float64Var(&rate, "rate", protocol.DefaultRateLimit, "messages/s each connection is paced to, under the server's per-connection limit; 0: unpaced (for a server with the limit raised)")
	fs.IntVar(&c.Sources, "sources", 0, "spread connections over loopback source addresses 127.0.0.1..127.0.0.N (default one per 10000 connections)")
	fs.IntVar(&c.Concurrency, "concurrency", 0, "logins in flight while connecting (default 64)")
	fs.IntVar(&c.PID, "pid", 0, "server process id: read its CPU time from /proc (ns) instead of /metrics (10 ms)")
	fs.DurationVar(&c.Settle, "settle", 0, "idle: wait before reading server memory (default 5s)")
	fs.DurationVar(&c.Timeout, "timeout", 0, "bound of one step: request or awaited event (default 10s; logins 10x)")
	fs.StringVar(&c.Password, "password", "", "password of the bench users (default bench-password)")
	fs.StringVar(&c.Prefix, "prefix", "", "prefix of the bench user names (default bench)")
	fs.BoolVar(&verbose, "v", false, "debug logs to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	c.Rate = rate
	if rate == 0 {
		c.Rate = -1
	}
	c.Progress = stderr
	if verbose {
		c.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	res, err := loadgen.Run(ctx, c)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return loadgen.WriteTable(stdout, fmt.Sprintf("umplug bench -scenario %s  (server %s)", c.Scenario, c.Server), res)
}
