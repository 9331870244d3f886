package server

import (
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/user-media-plug/umplug/internal/server/connlimit"
)

// HTTPConfig are the HTTP server's limits. Zero values mean the defaults.
// They bound what a client that connects and then stalls can hold: without
// them an idle keep-alive connection lived for ever (a goroutine and about
// 20 KB each).
type HTTPConfig struct {
	// ReadHeaderTimeout bounds reading a request's headers; default 10 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included; default
	// 30 s. A WebSocket upgrade clears it when it takes the connection over.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one response (from the end of its
	// request's headers); default 30 s. A WebSocket upgrade clears it when
	// it takes the connection over, so it never cuts /meta or /media.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long between
	// requests; default 60 s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers; default 64 KiB.
	MaxHeaderBytes int
}

// Defaults of the connection limits.
const (
	// DefaultMaxConnsPerAddr is the default of Config.MaxConnsPerAddr.
	DefaultMaxConnsPerAddr = 1000
	// FDReserve is how many file descriptors the derived MaxConns leaves
	// for everything else: the store's files, listeners, the debug server,
	// connections being refused.
	FDReserve = 512
)

func (c *HTTPConfig) setDefaults() {
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 64 << 10
	}
}

// connLimits resolves Config.MaxConns and MaxConnsPerAddr (see their doc).
func connLimits(maxConns, perAddr int) (int, int) {
	if maxConns == 0 {
		maxConns = -1
		if soft, ok := fdSoftLimit(); ok {
			maxConns = fromFDLimit(soft)
		}
	}
	if perAddr == 0 {
		perAddr = DefaultMaxConnsPerAddr
	}
	if maxConns > 0 && perAddr > 0 {
		perAddr = min(perAddr, max(1, maxConns/2))
	}
	return maxConns, perAddr
}

// fromFDLimit is the connection cap a descriptor limit allows.
func fromFDLimit(soft uint64) int {
	const ceiling = 1 << 24 // RLIM_INFINITY and the like
	if soft > ceiling {
		soft = ceiling
	}
	if soft >= 2*FDReserve {
		return int(soft) - FDReserve
	}
	return max(1, int(soft)/2)
}

// setupHTTP builds the connection limiter, the handler chain (Host check,
// client address) and the http.Server. Called by New.
func (s *Server) setupHTTP() error {
	cfg := &s.cfg
	cfg.HTTP.setDefaults()
	hosts, err := newHostPolicy(cfg.PublicURL, cfg.AllowedHosts)
	if err != nil {
		return err
	}
	s.hosts = hosts
	s.proxies = cfg.TrustedProxies

	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "umplug_http_connections_refused_total",
		Help: "TCP connections closed at accept because a connection limit was reached, by limit (total, per-addr).",
	}, []string{"limit"})
	s.hostRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "umplug_http_host_refused_total",
		Help: "Requests answered 421 because their Host header is not one of the server's names (DNS rebinding protection).",
	})
	s.limiter = connlimit.New(connlimit.Config{
		MaxConns:   s.maxConns,
		MaxPerAddr: s.maxPerAddr,
		Exempt:     s.trustedProxy,
		Refused:    func(limit string) { refused.WithLabelValues(limit).Inc() },
	})
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "umplug_http_connections",
		Help: "Open TCP connections counted by the connection limiter (HTTP, /meta and /media).",
	}, func() float64 { return float64(s.limiter.Open()) })
	for _, c := range []prometheus.Collector{refused, s.hostRefused, open} {
		if err := cfg.Registry.Register(c); err != nil {
			return err
		}
	}
	s.log.Info("connection limits", "max_conns", s.maxConns, "max_conns_per_addr", s.maxPerAddr,
		"trusted_proxies", len(s.proxies))

	s.handler = s.checkHost(s.withClientAddr(s.mux))
	s.hs = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		ReadTimeout:       cfg.HTTP.ReadTimeout,
		WriteTimeout:      cfg.HTTP.WriteTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    cfg.HTTP.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.With("part", "http").Handler(), slog.LevelWarn),
		// A connection net/http closes itself is released by its wrapper's
		// Close already; this covers any path that bypasses it. Hijacked
		// connections are released by their new owner.
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed {
				connlimit.Release(c)
			}
		},
	}
	return nil
}

// HTTPServer returns the http.Server that serves s, with its timeouts and
// connection accounting: `umplug serve` and the tests both run this one.
// Serve it on a listener from Listen. Shutdown shuts it down (last phase).
func (s *Server) HTTPServer() *http.Server { return s.hs }

// Listen wraps ln with the connection limits (MaxConns, MaxConnsPerAddr).
// Shutdown closes it first, so no connection is accepted while devices are
// told.
func (s *Server) Listen(ln net.Listener) net.Listener {
	l := &onceListener{Listener: s.limiter.Listener(ln)}
	s.lnMu.Lock()
	s.listeners = append(s.listeners, l)
	s.lnMu.Unlock()
	return l
}

// OpenConns returns how many TCP connections the limiter counts now.
func (s *Server) OpenConns() int { return s.limiter.Open() }

// releaseConn releases the connection-limit count of a connection taken over
// from net/http (a hijacked WebSocket) when it ends. Idempotent; c may be
// the hijacked net.Conn or a *tls.Conn around it.
func (s *Server) releaseConn(c net.Conn) { connlimit.Release(c) }

// detachConn is for a transport that dup(2)s a hijacked connection's
// descriptor and closes c (nbio does): call it before handing c over, and
// call the returned function (idempotent) when the transport's connection
// ends. Without it closing c would release the count while the connection
// still holds a descriptor.
func (s *Server) detachConn(c net.Conn) (release func()) { return connlimit.Detach(c) }
