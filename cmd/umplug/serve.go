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
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/user-media-plug/umplug/internal/admin"
	"github.com/user-media-plug/umplug/internal/media"
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
	maxConns        int
	maxConnsPerAddr int
	trustedProxies  string
	publicURL       string
	allowedHosts    string
	webrtc          bool
	iceUDPPort      int
	iceTCPPort      int
	icePublicIPs    string
	iceIPs          string
	iceInterfaces   string
	sessionTTL      time.Duration
	resumeGrace     time.Duration
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
	fs.IntVar(&c.maxConns, "max-conns", envInt("UMPLUG_MAX_CONNS", 0), "open TCP connections in total (HTTP, /meta, /media); 0: the file descriptor limit minus 512; negative: unlimited (env UMPLUG_MAX_CONNS)")
	fs.IntVar(&c.maxConnsPerAddr, "max-conns-per-addr", envInt("UMPLUG_MAX_CONNS_PER_ADDR", server.DefaultMaxConnsPerAddr), "open TCP connections per remote address (IPv6: per /64), loopback included, at most half of -max-conns; trusted proxies exempt; negative: unlimited (env UMPLUG_MAX_CONNS_PER_ADDR)")
	fs.StringVar(&c.trustedProxies, "trusted-proxies", envOr("UMPLUG_TRUSTED_PROXIES", ""), "comma-separated CIDRs or addresses of reverse proxies whose X-Forwarded-For gives the client address (env UMPLUG_TRUSTED_PROXIES)")
	fs.StringVar(&c.publicURL, "public-url", envOr("UMPLUG_PUBLIC_URL", ""), "URL clients use, e.g. https://calls.example.com; its host is an allowed Host (env UMPLUG_PUBLIC_URL)")
	fs.StringVar(&c.allowedHosts, "allowed-hosts", envOr("UMPLUG_ALLOWED_HOSTS", ""), "comma-separated other host names (name, name:port, *.domain) accepted in the Host header; IP addresses and localhost always are (env UMPLUG_ALLOWED_HOSTS)")
	fs.BoolVar(&c.webrtc, "webrtc", envOr("UMPLUG_WEBRTC", "true") == "true", "offer the WebRTC media mode on /media (env UMPLUG_WEBRTC)")
	fs.IntVar(&c.iceUDPPort, "ice-udp-port", envInt("UMPLUG_ICE_UDP_PORT", media.DefaultICEPort), "UDP port for all WebRTC (ICE) media; open it in the firewall; 0: any free port (env UMPLUG_ICE_UDP_PORT)")
	fs.IntVar(&c.iceTCPPort, "ice-tcp-port", envInt("UMPLUG_ICE_TCP_PORT", media.DefaultICEPort), "TCP port for WebRTC media over TCP (networks that block UDP); negative: off; 0: any free port (env UMPLUG_ICE_TCP_PORT)")
	fs.StringVar(&c.icePublicIPs, "ice-public-ip", envOr("UMPLUG_ICE_PUBLIC_IP", ""), "comma-separated public IPs to advertise instead of the local ones, for a server behind 1:1 NAT (cloud VMs) (env UMPLUG_ICE_PUBLIC_IP)")
	fs.StringVar(&c.iceIPs, "ice-ips", envOr("UMPLUG_ICE_IPS", ""), "comma-separated local IPs WebRTC media may use; default: the -addr IP, or every address when -addr listens on all (env UMPLUG_ICE_IPS)")
	fs.StringVar(&c.iceInterfaces, "ice-interfaces", envOr("UMPLUG_ICE_INTERFACES", ""), "comma-separated network interfaces WebRTC media may use, e.g. eth0 (env UMPLUG_ICE_INTERFACES)")
	fs.DurationVar(&c.resumeGrace, "resume-grace", envDuration("UMPLUG_RESUME_GRACE", 20*time.Second), "a device whose connection dropped may resume its device id, presence and call this long; negative disables resume (env UMPLUG_RESUME_GRACE)")
	fs.DurationVar(&c.sessionTTL, "session-ttl", envDuration("UMPLUG_SESSION_TTL", 30*24*time.Hour), "a login session expires this long after its last use (env UMPLUG_SESSION_TTL)")
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

// webrtcConfig turns the ICE flags into the media server's WebRTC config;
// nil when -webrtc=false. Without -ice-ips and -ice-interfaces, ICE uses
// the IP that -addr names (127.0.0.1 by default: two browsers on this
// machine just work), or every address when -addr listens on all of them
// (a LAN server).
func (c *serveConfig) webrtcConfig() (*media.WebRTCConfig, error) {
	if !c.webrtc {
		return nil, nil
	}
	wc := &media.WebRTCConfig{UDPPort: c.iceUDPPort, TCPPort: c.iceTCPPort,
		Interfaces: splitList(c.iceInterfaces), PublicIPs: splitList(c.icePublicIPs)}
	for _, v := range splitList(c.iceIPs) {
		ip := net.ParseIP(v)
		if ip == nil {
			return nil, fmt.Errorf("serve: -ice-ips: %q is not an IP address", v)
		}
		wc.IPs = append(wc.IPs, ip)
	}
	for _, v := range wc.PublicIPs {
		if net.ParseIP(v) == nil {
			return nil, fmt.Errorf("serve: -ice-public-ip: %q is not an IP address", v)
		}
	}
	if len(wc.IPs) == 0 && len(wc.Interfaces) == 0 {
		host, _, err := net.SplitHostPort(c.addr)
		if err == nil {
			if host == "localhost" {
				host = "127.0.0.1"
			}
			if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
				wc.IPs = []net.IP{ip}
			}
		}
	}
	return wc, nil
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

	proxies, err := parsePrefixes(c.trustedProxies)
	if err != nil {
		return fmt.Errorf("serve: -trusted-proxies: %w", err)
	}
	wc, err := c.webrtcConfig()
	if err != nil {
		return err
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
			SessionTTL:           c.sessionTTL,
			ResumeGrace:          c.resumeGrace,
		},
		Media:           media.Config{WebRTC: wc},
		AllowedOrigins:  splitList(c.allowedOrigins),
		Logger:          log,
		MaxConns:        c.maxConns,
		MaxConnsPerAddr: c.maxConnsPerAddr,
		TrustedProxies:  proxies,
		PublicURL:       c.publicURL,
		AllowedHosts:    splitList(c.allowedHosts),
	})
	if err != nil {
		return err
	}
	// The admin socket lets `umplug user passwd` change a password while
	// this server holds the store (and revoke sessions, close connections).
	adm, err := admin.Listen(c.data, srv.Meta(), log.With("part", "admin"))
	if err != nil {
		log.Warn("no admin socket: `umplug user passwd` cannot reach this server", "err", err)
	} else {
		defer adm.Close()
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
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && ta.IP.IsUnspecified() && c.publicURL == "" && c.allowedHosts == "" {
		log.Warn("listening on all interfaces without -public-url or -allowed-hosts: only IP-address and localhost Host headers are accepted (DNS rebinding protection); set -public-url to serve a DNS name")
	}
	hs := srv.HTTPServer()
	ln = srv.Listen(ln)
	scheme := "http"
	if c.tlsCert != "" {
		scheme = "https"
	}
	log.Info("serving", "addr", ln.Addr().String(), "url", scheme+"://"+ln.Addr().String()+"/",
		"data", c.data, "registration", c.registration)
	if udp, tcp := srv.Media().ICEAddrs(); udp != nil {
		log.Info("webrtc media (ICE): open these ports to clients", "udp", fmt.Sprint(udp), "tcp", fmt.Sprint(tcp),
			"public_ips", c.icePublicIPs)
	}
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
	if adm != nil {
		_ = adm.Close() // no admin command may reach a store being closed
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	// Phases (server.Shutdown): stop accepting, tell devices, media, HTTP.
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown incomplete", "err", err)
	}
	// A failed store (a refused write, a corrupted block) kept the server
	// up with logins answering unavailable and /healthz 503; its Close
	// returns the failure, and the exit status says so.
	if err := st.Close(); err != nil {
		return fmt.Errorf("close user store: %w", err)
	}
	log.Info("stopped")
	return nil
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// parsePrefixes parses comma-separated CIDRs; a bare address is its /32
// (or /128).
func parsePrefixes(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range splitList(v) {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an address", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
