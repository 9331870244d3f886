// Package servertest starts a complete umplug server (metadata, media and
// web app) on a real loopback socket for tests and runnable examples, with an
// in-memory store and cheap password hashing so that -race runs stay fast.
package servertest

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/media"
	"github.com/user-media-plug/umplug/internal/meta"
	"github.com/user-media-plug/umplug/internal/password"
	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/internal/testlog"
)

// Server is a running test server.
type Server struct {
	URL     string // "http://127.0.0.1:PORT"
	MetaURL string // "ws://127.0.0.1:PORT/meta"
	Store   store.Store
	Clock   *clock.Fake // nil when the server runs on the real clock
	Server  *server.Server
	HTTP    *httptest.Server
}

// Options tune the test server. The zero value is a server with contract
// defaults (real clock) and open registration.
type Options struct {
	RingingTimeout     time.Duration
	RegistrationClosed bool
	Clock              *clock.Fake // nil → real clock
	Store              store.Store // nil → a fresh in-memory store
	Logger             *slog.Logger
	// ResumeGrace is meta.Config.ResumeGrace. Zero disables resume: most
	// tests were written for the v1 rule that a dropped connection is a
	// disconnect at once; resume tests set it.
	ResumeGrace time.Duration
	// Configure, when set, may change the server config before it starts.
	Configure func(*server.Config)
}

// CheapPassword are argon2id parameters for tests only: real algorithm,
// trivial cost.
var CheapPassword = password.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

// Start runs a server until the test ends.
func Start(t testing.TB, opts *Options) *Server {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	if opts.Logger == nil {
		opts.Logger = testlog.New(t)
	}
	s, err := start(opts)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

// StartExample runs a server for an Example function; call stop when done.
func StartExample(opts *Options) (s *Server, stop func()) {
	if opts == nil {
		opts = &Options{}
	}
	s, err := start(opts)
	if err != nil {
		panic(err)
	}
	return s, s.stop
}

func start(opts *Options) (*Server, error) {
	st := opts.Store
	if st == nil {
		st = store.NewMemory()
	}
	cfg := server.Config{
		Meta: meta.Config{
			Store:              st,
			Hasher:             password.New(password.Config{Params: CheapPassword}),
			RingingTimeout:     opts.RingingTimeout,
			RegistrationClosed: opts.RegistrationClosed,
			ResumeGrace:        opts.ResumeGrace,
		},
		// WebRTC on loopback only, ephemeral ports. Tests that make WebRTC
		// traffic also run in a loopback-only namespace (internal/netns).
		Media: media.Config{WebRTC: &media.WebRTCConfig{
			IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		}},
		Logger: opts.Logger,
	}
	if cfg.Meta.ResumeGrace == 0 {
		cfg.Meta.ResumeGrace = -1
	}
	if opts.Clock != nil {
		cfg.Meta.Clock = opts.Clock
		cfg.Media.Clock = opts.Clock
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		return nil, err
	}
	// The same http.Server (timeouts, Host check) and connection limits as
	// `umplug serve`.
	hs := httptest.NewUnstartedServer(nil)
	hs.Config = srv.HTTPServer()
	hs.Listener = srv.Listen(hs.Listener)
	hs.Start()
	return &Server{
		URL:     hs.URL,
		MetaURL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/meta",
		Store:   st,
		Clock:   opts.Clock,
		Server:  srv,
		HTTP:    hs,
	}, nil
}

func (s *Server) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Server.Shutdown(ctx)
	s.HTTP.CloseClientConnections()
	s.HTTP.Close()
	s.Store.Close()
}
