package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/user-media-plug/umplug/internal/meta"
	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/store"
)

// serveConfig is what `umplug serve` is told by flags and environment.
type serveConfig struct {
	addr            string
	data            string
	logFormat       string
	logLevel        string
	registration    string
	allowedOrigins  string
	ringingTimeout  time.Duration
	maxDevices      int
	regsPerMinute   int
	msgRate         float64
	msgBurst        int
	debugAddr       string
	tlsCert, tlsKey string
	shutdownTimeout time.Duration
}

// envOr returns the environment variable's value, or def.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, ok := os.LookupEnv(name); ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v, ok := os.LookupEnv(name); ok {
		var f float64
		if _, err := fmt.Sscan(v, &f); err == nil {
			return f
		}
	}
	return def
}

func envInt(name string, def int) int {
	if v, ok := os.LookupEnv(name); ok {
		var n int
		if _, err := fmt.Sscan(v, &n); err == nil {
			return n
		}
	}
	return def
}

func parseServe(args []string, stderr io.Writer) (*serveConfig, error) {
	c := &serveConfig{}
	fs := flag.NewFlagSet("umplug serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", envOr("UMPLUG_ADDR", "127.0.0.1:8080"), "listen address (env UMPLUG_ADDR)")
	fs.StringVar(&c.data, "data", envOr("UMPLUG_DATA", "./umplug-data"), "data directory of the user store (env UMPLUG_DATA)")
	fs.StringVar(&c.logFormat, "log-format", envOr("UMPLUG_LOG_FORMAT", "text"), "log format: text or json (env UMPLUG_LOG_FORMAT)")
	fs.StringVar(&c.logLevel, "log-level", envOr("UMPLUG_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env UMPLUG_LOG_LEVEL)")
	fs.StringVar(&c.registration, "registration", envOr("UMPLUG_REGISTRATION", "open"), "open: anyone may reg-user; closed: only 'umplug user add' creates users (env UMPLUG_REGISTRATION)")
	fs.StringVar(&c.allowedOrigins, "allowed-origins", envOr("UMPLUG_ALLOWED_ORIGINS", ""), "comma-separated extra browser origins allowed to connect, besides the server's own (env UMPLUG_ALLOWED_ORIGINS)")
	fs.DurationVar(&c.ringingTimeout, "ringing-timeout", envDuration("UMPLUG_RINGING_TIMEOUT", 30*time.Second), "how long a call rings before it times out (env UMPLUG_RINGING_TIMEOUT)")
	fs.IntVar(&c.maxDevices, "max-devices", envInt("UMPLUG_MAX_DEVICES", 8), "identified connections per user (env UMPLUG_MAX_DEVICES)")
	fs.IntVar(&c.regsPerMinute, "registrations-per-minute", envInt("UMPLUG_REGISTRATIONS_PER_MINUTE", 20), "reg-user attempts allowed per remote address per minute (env UMPLUG_REGISTRATIONS_PER_MINUTE)")
	fs.Float64Var(&c.msgRate, "msg-rate", envFloat("UMPLUG_MSG_RATE", 20), "messages per second allowed per connection; negative: unlimited, for load tests only (env UMPLUG_MSG_RATE)")
	fs.IntVar(&c.msgBurst, "msg-burst", envInt("UMPLUG_MSG_BURST", 50), "burst of messages over -msg-rate per connection (env UMPLUG_MSG_BURST)")
	fs.StringVar(&c.debugAddr, "debug-addr", envOr("UMPLUG_DEBUG_ADDR", ""), "if set, serve Go's /debug/pprof profiles on this separate address; keep it on loopback (env UMPLUG_DEBUG_ADDR)")
	fs.StringVar(&c.tlsCert, "tls-cert", envOr("UMPLUG_TLS_CERT", ""), "TLS certificate file (PEM); with -tls-key serves https/wss (env UMPLUG_TLS_CERT)")
	fs.StringVar(&c.tlsKey, "tls-key", envOr("UMPLUG_TLS_KEY", ""), "TLS private key file (PEM) (env UMPLUG_TLS_KEY)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", envDuration("UMPLUG_SHUTDOWN_TIMEOUT", 10*time.Second), "how long a graceful shutdown may take (env UMPLUG_SHUTDOWN_TIMEOUT)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	if c.registration != "open" && c.registration != "closed" {
		return nil, fmt.Errorf("serve: -registration must be open or closed, not %q", c.registration)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("serve: -tls-cert and -tls-key go together")
	}
	return c, nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format must be text or json, not %q", format)
}

// runServe runs the server until ctx ends (SIGINT/SIGTERM), then shuts down
// gracefully: new connections are refused, calls end with reason shutdown,
// devices are told, the store is flushed and closed. A second signal kills
// the process at once (main's signal context is stopped by then).
func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	c, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, c.logFormat, c.logLevel)
	if err != nil {
		return err
	}
	st, err := store.OpenPebble(c.data, log.With("part", "store"))
	if err != nil {
		return fmt.Errorf("open user store: %w", err)
	}
	defer st.Close()

	var origins []string
	for _, o := range strings.Split(c.allowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	srv, err := server.New(server.Config{
		Meta: meta.Config{
			Store:                st,
			RegistrationClosed:   c.registration == "closed",
			RingingTimeout:       c.ringingTimeout,
			MaxDevices:           c.maxDevices,
			RegistrationsPerAddr: c.regsPerMinute,
			RateLimit:            c.msgRate,
			RateBurst:            c.msgBurst,
		},
		AllowedOrigins: origins,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	if c.debugAddr != "" {
		dln, err := net.Listen("tcp", c.debugAddr)
		if err != nil {
			return fmt.Errorf("listen debug: %w", err)
		}
		defer dln.Close()
		dmux := http.NewServeMux()
		dmux.HandleFunc("/debug/pprof/", pprof.Index)
		dmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		dmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		dmux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		go http.Serve(dln, dmux)
		log.Info("serving pprof", "addr", dln.Addr().String())
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if c.tlsCert != "" {
		scheme = "https"
	}
	log.Info("serving", "addr", ln.Addr().String(), "url", scheme+"://"+ln.Addr().String()+"/",
		"data", c.data, "registration", c.registration)
	errc := make(chan error, 1)
	go func() {
		if c.tlsCert != "" {
			errc <- hs.ServeTLS(ln, c.tlsCert, c.tlsKey)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	herr := hs.Shutdown(sctx) // stops accepting; hijacked WebSockets are ours to end
	serr := srv.Shutdown(sctx)
	if err := st.Close(); err != nil {
		return fmt.Errorf("close user store: %w", err)
	}
	if err := errors.Join(herr, serr); err != nil {
		log.Warn("shutdown incomplete", "err", err)
	}
	log.Info("stopped")
	return nil
}
