// Package server is the HTTP and WebSocket wiring of umplug: it mounts the
// metadata server on /meta, the media server on /media, the web app on /,
// health and metrics, and adapts gorilla/websocket connections to the
// transport-agnostic cores in packages meta and media (the tailscale derphttp
// cut: the cores never see HTTP).
package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/user-media-plug/umplug/internal/media"
	"github.com/user-media-plug/umplug/internal/meta"
	"github.com/user-media-plug/umplug/internal/plug"
	"github.com/user-media-plug/umplug/internal/server/connlimit"
	"github.com/user-media-plug/umplug/internal/server/metaws"
	"github.com/user-media-plug/umplug/protocol"
	"github.com/user-media-plug/umplug/web"
)

// Config configures a Server. Zero values mean the stated defaults.
type Config struct {
	// Meta configures the metadata server; Meta.Store is required. Its Media,
	// Logger and Registerer are set by New.
	Meta meta.Config
	// Media configures the media server; its Ender, Clock, Logger and
	// Registerer are set by New.
	Media media.Config
	// AllowedOrigins lists extra browser origins (e.g. "https://app.example")
	// allowed to open /meta and /media. The server's own host is always
	// allowed, and so are clients that send no Origin (non-browsers). Any other
	// Origin is refused with 403: cross-site WebSocket hijacking protection.
	AllowedOrigins []string
	// PingInterval and IdleTimeout are the /meta liveness rule: ping this
	// often, drop a connection silent for IdleTimeout. Defaults 25 s and 60 s.
	PingInterval time.Duration
	IdleTimeout  time.Duration
	// WriteTimeout bounds one frame write to a client; default 10 s.
	WriteTimeout time.Duration
	// MaxFrameBytes bounds a /meta frame; default 64 KiB (close 1009 above).
	MaxFrameBytes int64
	// FrameTimeout bounds how long a /meta frame that arrived in part, or a
	// fragmented message, may take to complete (close 1008 after); default
	// 10 s.
	FrameTimeout time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Registry serves /metrics; nil makes a fresh one with Go and process
	// collectors.
	Registry *prometheus.Registry
	// Tap, when set, also receives every pair and unpair event after the
	// media server has: an observation point for tests and auditing.
	Tap plug.Media

	// MaxConns bounds the open TCP connections of the HTTP server (plain
	// HTTP, /meta and /media together). 0 derives it from RLIMIT_NOFILE:
	// the soft limit minus FDReserve, so that accept never fails for lack
	// of descriptors; negative means unlimited. It also becomes
	// Meta.MaxConns when that is 0.
	MaxConns int
	// MaxConnsPerAddr bounds the open TCP connections of one remote
	// address (IPv6: one /64), loopback included; default
	// DefaultMaxConnsPerAddr, at most half of MaxConns; negative means
	// unlimited. Trusted proxies are exempt (their clients are bounded by
	// Meta.MaxConnsPerAddr, which counts the forwarded client address and
	// defaults to this value).
	MaxConnsPerAddr int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed: for a request whose TCP peer is in one of these prefixes,
	// the client address is the rightmost X-Forwarded-For entry that is not
	// itself a trusted proxy. For any other request it is the TCP peer.
	TrustedProxies []netip.Prefix
	// PublicURL is the URL clients use (e.g. https://calls.example.com);
	// its host is an allowed Host. Optional.
	PublicURL string
	// AllowedHosts lists the other names the server answers to in the Host
	// header ("calls.example.com", "calls.example.com:8443", "*.example.com").
	// IP literals and localhost (and *.localhost) are always allowed; any
	// other Host is answered 421 on every path: DNS rebinding protection.
	AllowedHosts []string
	// HTTP holds the HTTP server's timeouts.
	HTTP HTTPConfig
}

// Server is the whole umplug service behind one http.Handler.
type Server struct {
	cfg     Config
	log     *slog.Logger
	meta    *meta.Server
	media   *media.Server
	metaUp  *metaws.Loop
	mediaUp *websocket.Upgrader
	mux     *http.ServeMux
	allowed map[string]bool

	// The HTTP layer (limits.go, hosts.go, proxy.go).
	handler     http.Handler // mux behind the Host check and client address
	hs          *http.Server
	limiter     *connlimit.Limiter
	maxConns    int // resolved Config.MaxConns (negative: unlimited)
	maxPerAddr  int // resolved Config.MaxConnsPerAddr
	hosts       *hostPolicy
	proxies     []netip.Prefix
	hostRefused prometheus.Counter

	lnMu      sync.Mutex // guards listeners
	listeners []net.Listener
}

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = protocol.PingInterval
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = protocol.IdleTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = protocol.MaxFrameBytes
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), allowed: map[string]bool{}}
	for _, o := range cfg.AllowedOrigins {
		s.allowed[strings.ToLower(strings.TrimRight(o, "/"))] = true
	}

	// The media server needs the meta server (to end calls) and the meta
	// server needs the media server (to pair): break the cycle with a
	// forwarding ender set once both exist.
	ender := &lateEnder{}
	mc := cfg.Media
	mc.Ender = ender
	if mc.Clock == nil {
		mc.Clock = cfg.Meta.Clock
	}
	mc.Logger = cfg.Logger.With("part", "media")
	mc.Registerer = cfg.Registry
	md, err := media.New(mc)
	if err != nil {
		return nil, fmt.Errorf("server: media: %w", err)
	}
	tc := cfg.Meta
	s.maxConns, s.maxPerAddr = connLimits(cfg.MaxConns, cfg.MaxConnsPerAddr)
	if tc.MaxConns == 0 && s.maxConns > 0 {
		tc.MaxConns = s.maxConns
	}
	if tc.MaxConnsPerAddr == 0 {
		tc.MaxConnsPerAddr = s.maxPerAddr
	}
	tc.Media = md
	if cfg.Tap != nil {
		tc.Media = tee{md, cfg.Tap}
	}
	tc.Logger = cfg.Logger.With("part", "meta")
	tc.Registerer = cfg.Registry
	mt, err := meta.New(tc)
	if err != nil {
		return nil, fmt.Errorf("server: meta: %w", err)
	}
	ender.s = mt
	s.meta, s.media = mt, md

	// /meta connections are idle nearly all the time: an epoll event loop
	// serves them without a goroutine or a read buffer each, and a frame
	// that arrived in part costs only its bytes (package metaws). Writes
	// never block.
	s.metaUp = metaws.New(metaws.Config{
		PingInterval:    cfg.PingInterval,
		IdleTimeout:     cfg.IdleTimeout,
		FrameTimeout:    cfg.FrameTimeout,
		WriteTimeout:    cfg.WriteTimeout,
		MaxMessageBytes: cfg.MaxFrameBytes,
		Logger:          cfg.Logger.With("part", "meta-ws"),
	})
	s.mediaUp = media.Upgrader(s.checkOrigin)

	s.mux.HandleFunc("GET /meta", s.serveMeta)
	s.mux.HandleFunc("GET /media", s.serveMedia)
	s.mux.HandleFunc("GET /healthz", s.serveHealthz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	s.mux.Handle("/", web.Handler())
	if err := s.setupHTTP(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return s, nil
}

// tee forwards pair/unpair events to two consumers in order.
type tee [2]plug.Media

func (t tee) Pair(p plug.Pair)     { t[0].Pair(p); t[1].Pair(p) }
func (t tee) Unpair(u plug.Unpair) { t[0].Unpair(u); t[1].Unpair(u) }

// Rebind forwards to the consumers that re-pair (plug.Rebinder).
func (t tee) Rebind(r plug.Rebind) {
	for _, m := range t {
		if rb, ok := m.(plug.Rebinder); ok {
			rb.Rebind(r)
		}
	}
}

type lateEnder struct{ s *meta.Server }

func (l *lateEnder) EndCall(call, user, reason string) { l.s.EndCall(call, user, reason) }
func (l *lateEnder) MediaLost(call, user string)       { l.s.MediaLost(call, user) }

// Handler returns the HTTP handler of the whole service, behind the Host
// check. Prefer HTTPServer, which also has the timeouts and connection
// accounting.
func (s *Server) Handler() http.Handler { return s.handler }

// Meta returns the metadata server (for tests and the admin tools).
func (s *Server) Meta() *meta.Server { return s.meta }

// Media returns the media server (e.g. for its ICE addresses).
func (s *Server) Media() *media.Server { return s.media }

// checkOrigin allows non-browser clients (no Origin), the server's own
// origin, and the configured ones.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return s.allowed[strings.ToLower(strings.TrimRight(origin, "/"))]
}

func (s *Server) serveMeta(w http.ResponseWriter, r *http.Request) {
	if !s.checkOrigin(r) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	c, err := s.metaUp.Upgrade(w, r)
	if err != nil {
		return // the client has been answered
	}
	sess, err := s.meta.Open(c, remoteHost(r))
	if err != nil {
		code := protocol.CloseGoingAway
		if errors.Is(err, meta.ErrTooManyConns) {
			code = protocol.ClosePolicy
		}
		c.Start(nopHandler{})
		c.Close(code, err.Error())
		return
	}
	// The handler returns at once: net/http's per-connection state (its
	// buffers, the request, the response, the handler's stack) is freed,
	// and while the client is idle no goroutine or buffer is held for it.
	// (c.NetConn() is the socket, for its addresses; the handler's Close is
	// the end-of-connection notification.)
	c.Start(sess)
}

// nopHandler serves a refused connection until its close handshake ends.
type nopHandler struct{}

func (nopHandler) Handle([]byte) {}
func (nopHandler) Close()        {}

func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request) {
	c, err := s.mediaUp.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	// No WaitGroup here: media.Server counts ServeConn calls itself, under
	// its lock, and refuses them once closed, so Shutdown's media.Close
	// cannot race an Add after an upgrade.
	// ServeConn closes c, which releases its connection-limit count;
	// releaseConn makes that explicit and holds for any future path.
	defer s.releaseConn(c.NetConn())
	s.media.ServeConn(media.WithRemote(r.Context(), remoteHost(r)), c)
}
