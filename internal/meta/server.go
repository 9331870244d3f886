// Package meta is the metadata server: the broker behind /meta. It
// authenticates devices, tracks presence, answers every client message,
// forwards presence and call signalling between mutual peers, runs the
// server-side call state machine and emits pair/unpair events to the media
// side (package plug). It knows nothing about HTTP or WebSocket libraries: a
// transport adapter feeds it frames through a Session and gives it a Conn to
// write to.
package meta

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/keylock"
	"github.com/user-media-plug/umplug/internal/password"
	"github.com/user-media-plug/umplug/internal/plug"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// Config configures a Server. The zero value of every field but Store means
// "the default" stated in its comment.
type Config struct {
	// Store holds users, password hashes and peer lists. Required.
	Store store.Store
	// Hasher hashes and verifies passwords; nil means argon2id with OWASP
	// parameters and at most one hash per two CPUs at a time.
	Hasher *password.Hasher
	// Media receives pair/unpair events; nil discards them (signalling only).
	Media plug.Media
	// Clock drives ringing timeouts and rate limits; nil is the wall clock.
	Clock clock.Clock
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the server's Prometheus metrics; nil registers none.
	Registerer prometheus.Registerer

	// RegistrationClosed makes reg-user answer forbidden: only the admin CLI
	// creates users. Default open (anyone who reaches the server may register).
	RegistrationClosed bool
	// RingingTimeout ends an unanswered call; default protocol.RingingTimeout.
	RingingTimeout time.Duration
	// MaxDevices bounds identified connections per user; default 8.
	MaxDevices int
	// RateLimit and RateBurst bound messages per connection (token bucket);
	// defaults 20/s and 50; a negative RateLimit means unlimited (for load
	// tests on a trusted network only). A connection that keeps going over
	// the limit (AbuseLimit refused messages in a row, default 100) is closed.
	RateLimit  float64
	RateBurst  int
	AbuseLimit int
	// MaxQueueBytes bounds the bytes waiting to be written to one
	// connection; a client that stops reading is disconnected (1008 "slow
	// consumer") when it is exceeded, so it cannot make the server buffer
	// without bound. Default 1 MiB.
	MaxQueueBytes int
	// MaxInbox and MaxInboxBytes bound the messages received but not yet
	// handled on one connection (they wait while an earlier message waits
	// for the store or the password hasher). A client over either bound is
	// closed (1008). Defaults 256 messages and 1 MiB.
	MaxInbox      int
	MaxInboxBytes int
	// SessionTTL is how long a session lives after its last use (a whoami
	// with it, or the end of a connection identified by it); default
	// protocol.SessionTTL (30 days).
	SessionTTL time.Duration
	// IdentifyTimeout closes a connection that has not identified (whoami)
	// this long after it opened, unless a whoami is still being checked:
	// an unauthenticated socket cannot be held open by answering pings.
	// Default 10 s.
	IdentifyTimeout time.Duration
	// ResumeGrace is how long a device whose connection dropped (anything
	// but a close 1000 from the client, or a close the server initiated
	// with 1008) keeps its place: its device id, its presence and its call,
	// waiting for a whoami with resume (contract section 8). Default
	// protocol.ResumeGrace (20 s); negative disables resume (v1: a drop is
	// a disconnect at once).
	ResumeGrace time.Duration

	// Login limits (docs/protocol.md, "Login limits"). Every whoami is
	// counted before its password is hashed and refunded if it succeeds, so
	// parallel guesses get no more tries than sequential ones. A refused
	// attempt answers rate-limited without checking the password. Unknown
	// users are counted exactly like known ones. An address is an IPv4
	// address or an IPv6 /64. A negative count disables that limit (load
	// tests on a trusted network only).
	//
	// AuthFailuresPerPair failures for one user from one address are free;
	// after them each attempt from that address for that user must wait
	// AuthBackoff after the last failure, doubling with every further
	// failure up to AuthBackoffMax (defaults 10, 1m, 15m). A success clears
	// the count. This slows the attacker's address, not the victim's.
	AuthFailuresPerPair int
	AuthBackoff         time.Duration
	AuthBackoffMax      time.Duration
	// AuthFailuresPerAddr bounds failures from one address across all users
	// (password spraying): a bucket of that many (default 50) that refills
	// one per AuthAddrRefill (default 12s, 300 an hour).
	AuthFailuresPerAddr int
	AuthAddrRefill      time.Duration
	// AuthFailuresPerUser bounds failures for one user across all addresses
	// (a distributed guess): a bucket of that many (default 100) that refills
	// one per AuthUserRefill (default 36s, 100 an hour). One address cannot
	// empty it. Addresses the user logged in from within AuthTrustFor
	// (default 30 days, remembered in memory) skip this bucket and the
	// address bucket, so a user keeps logging in from home while others
	// hammer the account.
	AuthFailuresPerUser int
	AuthUserRefill      time.Duration
	AuthTrustFor        time.Duration
	// AuthConcurrentPerUser bounds password checks for one user at once
	// (default 2); up to 16 more whoami wait their turn, further ones are
	// refused. AuthConcurrentPerAddr bounds whoami in progress from one
	// address (default 64). Hashing slots are shared fairly between
	// addresses in any case (password.Hasher).
	AuthConcurrentPerUser int
	AuthConcurrentPerAddr int
	// LookupUnknownPerUser and LookupUnknownPerAddr bound how many unknown
	// names not-found may reveal (user enumeration through add-peers and
	// reg-user's initial peers) per identified user and per address: buckets
	// refilled in full every hour, defaults 50 and 100. Over them, requests
	// that name peers answer rate-limited and reveal nothing.
	LookupUnknownPerUser int
	LookupUnknownPerAddr int
	// RegistrationsPerAddr bounds reg-user attempts per remote address per
	// AuthWindow; default 20.
	RegistrationsPerAddr int
	// AuthWindow is the window of the registration limit; default 1m.
	AuthWindow time.Duration
	// MaxConns and MaxConnsPerAddr bound open connections in total and per
	// remote address; defaults 50,000 and 20,000 (0 means default; negative
	// means unlimited).
	MaxConns        int
	MaxConnsPerAddr int
}

func (c *Config) setDefaults() {
	if c.Hasher == nil {
		c.Hasher = password.New(password.Config{})
	}
	if c.Media == nil {
		c.Media = plug.Discard{}
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.RingingTimeout <= 0 {
		c.RingingTimeout = protocol.RingingTimeout
	}
	if c.MaxDevices <= 0 {
		c.MaxDevices = protocol.DefaultDevices
	}
	if c.RateLimit == 0 {
		c.RateLimit = protocol.DefaultRateLimit
	}
	if c.RateBurst <= 0 {
		c.RateBurst = protocol.DefaultRateBurst
	}
	if c.AbuseLimit <= 0 {
		c.AbuseLimit = 100
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = 1 << 20
	}
	if c.MaxInbox <= 0 {
		c.MaxInbox = 256
	}
	if c.MaxInbox > math.MaxInt16 {
		c.MaxInbox = math.MaxInt16 // Session.authing counts at most this many
	}
	if c.MaxInboxBytes <= 0 {
		c.MaxInboxBytes = 1 << 20
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = protocol.SessionTTL
	}
	if c.IdentifyTimeout <= 0 {
		c.IdentifyTimeout = 10 * time.Second
	}
	if c.ResumeGrace == 0 {
		c.ResumeGrace = protocol.ResumeGrace
	}
	c.setAuthDefaults()
	if c.RegistrationsPerAddr <= 0 {
		c.RegistrationsPerAddr = 20
	}
	if c.AuthWindow <= 0 {
		c.AuthWindow = time.Minute
	}
	if c.MaxConns == 0 {
		c.MaxConns = 50000
	}
	if c.MaxConnsPerAddr == 0 {
		c.MaxConnsPerAddr = 20000
	}
}

// Server is the metadata server. It is safe for concurrent use.
//
// Invariants (what the locks promise; every handler keeps them):
//
//  1. mu guards all dynamic state: users (online users, their devices,
//     statuses and cached peer lists), calls, conns, and each Session's
//     user, device, gone and identification fields. Nothing blocking runs
//     under mu: no store access, no hashing, no socket I/O. Queueing a frame
//     (Session.send) never blocks, so it is done under mu.
//  2. Causality: every frame a decision causes is queued while mu is held
//     by that decision, the response first. So a client never receives an
//     event before the response of the request that caused it, and a
//     response computed from the dynamic state (peers, peers-online) is
//     never older than an event already queued to that connection.
//  3. A cached peer list is never older than the store's acknowledged list:
//     every store write of a user's peers, and the store read that builds
//     the cache at whoami, happens under that user's userLocks stripe
//     together with the cache update (taken before mu, never the other way
//     round), and the whoami read happens after the password check, however
//     long that waited. While a user is online, only this server writes its
//     list (the admin CLI cannot open a store a server holds). A cluster
//     will need a change feed for the other nodes' writes.
//  4. A session that Close has removed (gone) is never added as a device
//     and never becomes part of a call; its handlers still running on the
//     worker find it gone under mu and change nothing for it.
//  5. pair is emitted to the media side before force-call is queued, so a
//     device can never present a ticket the media server does not know.
//     The same holds for rebind and the fresh force-call of a resume.
//  6. Resume: a device whose connection dropped stays in its user's devices
//     and in its call (inGrace) until a resume takes its place or its grace
//     timer removes it. devs maps every device id to the session that holds
//     it (live or in grace); a device id moves to a new session only under
//     mu, so two resumes of one device cannot both win.
type Server struct {
	cfg       Config
	log       *slog.Logger
	m         *metrics
	auth      *authState     // login limits, lookup budgets, case-folded names
	regLim    *windowLimiter // registrations per address
	userLocks *keylock.Stripes
	hooks     testHooks
	bg        *bgWriter // missed calls and session upkeep, off the request path
	devSeq    atomic.Uint64
	callSeq   atomic.Uint64
	idTag     string    // random per Server: device and call ids never repeat across restarts (or nodes)
	epoch     time.Time // the clock's time at New: sessions keep offsets from it

	mu       sync.Mutex // guards the following (see the invariants above)
	users    map[string]*userState
	calls    map[string]*call // by call id
	conns    map[*Session]struct{}
	devs     map[string]*Session // by device id: identified devices, live or in grace
	perAddr  map[string]addrCount
	shutdown bool
	// open counts the sessions Open returned whose Close has not finished
	// (one counter instead of a done channel per session); allClosed,
	// made by Shutdown, is closed when it reaches 0.
	open      int
	allClosed chan struct{}
}

// addrCount counts the open connections from one address; its name is the
// address string every one of their Sessions shares.
type addrCount struct {
	name string
	n    int
}

// testHooks let in-package tests force interleavings; nil in production.
// They are set before the server is used and never changed.
type testHooks struct {
	beforeInstall func(user string) // whoami: password checked, user lock held, before the re-read
}

// userState is the dynamic state of a user with at least one identified
// device. It exists only while the user is online.
type userState struct {
	name    string
	devices []*Session // identified devices, in login order
	status  string
	peers   map[string]struct{} // the user's stored peer list, cached while online
	call    *call               // the call this user rings, is rung by, or is in
}

func (u *userState) lists(name string) bool { _, ok := u.peers[name]; return ok }

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("meta: Config.Store is required")
	}
	cfg.setDefaults()
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		auth:      newAuthState(&cfg),
		regLim:    newWindowLimiter(cfg.Clock, cfg.AuthWindow),
		userLocks: keylock.New(),
		epoch:     cfg.Clock.Now(),
		users:     make(map[string]*userState),
		calls:     make(map[string]*call),
		conns:     make(map[*Session]struct{}),
		devs:      make(map[string]*Session),
		perAddr:   make(map[string]addrCount),
		idTag:     newIDTag(),
	}
	s.bg = newBgWriter(s)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("meta: register metrics: %w", err)
	}
	s.m = m
	return s, nil
}

// Conn is the transport of one client connection, a WebSocket in production.
type Conn interface {
	// WriteText writes one text frame, giving up after a write deadline. The
	// server calls it from one goroutine at a time.
	WriteText(b []byte) error
	// Close closes the connection with a WebSocket close code and reason. It
	// may be called concurrently with WriteText and more than once.
	Close(code int, reason string)
}

// Open registers a new connection from remoteAddr (host only, no port) and
// returns its Session, or an error if the server is shutting down or a
// connection limit is reached (the transport then refuses the upgrade).
func (s *Server) Open(c Conn, remoteAddr string) (*Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return nil, ErrShutdown
	}
	if s.cfg.MaxConns > 0 && len(s.conns) >= s.cfg.MaxConns {
		return nil, ErrTooManyConns
	}
	ac := s.perAddr[remoteAddr]
	if s.cfg.MaxConnsPerAddr > 0 && ac.n >= s.cfg.MaxConnsPerAddr {
		return nil, ErrTooManyConns
	}
	if ac.n == 0 {
		ac.name = strings.Clone(remoteAddr) // not the request's whole RemoteAddr
	}
	ac.n++
	s.perAddr[ac.name] = ac
	sess := newSession(s, c, ac.name)
	sess.identTimer = s.cfg.Clock.AfterFunc(s.cfg.IdentifyTimeout, sess.identDeadline)
	s.conns[sess] = struct{}{}
	s.open++
	s.m.conns.Inc()
	return sess, nil
}

// Shutdown ends every call with reason shutdown, tells every device, and
// closes every connection with 1001 once its queued messages are written or
// ctx ends. New connections are refused from the start.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for _, c := range s.calls {
		s.endCallLocked(c, "", protocol.ReasonShutdown)
	}
	// Devices in grace cannot come back to this server: stop their timers
	// (their calls ended above; presence dies with the process).
	for _, d := range s.devs {
		if d.graceTimer != nil {
			d.graceTimer.Stop()
			d.graceTimer = nil
		}
	}
	sessions := make([]*Session, 0, len(s.conns))
	for sess := range s.conns {
		sessions = append(sessions, sess)
	}
	if s.allClosed == nil {
		s.allClosed = make(chan struct{})
		if s.open == 0 {
			close(s.allClosed)
		}
	}
	allClosed := s.allClosed
	s.mu.Unlock()
	// Calls that were ringing are missed calls now: write them (and any
	// other pending upkeep) before the caller closes the store, and let
	// their missed-call events go out before the connections close.
	if err := s.bg.flush(ctx); err != nil {
		s.log.Warn("shutdown: missed calls and session updates not all written", "err", err)
	}
	for _, sess := range sessions {
		sess.closeAfterFlush(protocol.CloseGoingAway, "server shutdown")
	}
	select {
	case <-allClosed:
		return nil
	case <-ctx.Done():
		for _, sess := range sessions {
			sess.conn.Close(protocol.CloseGoingAway, "server shutdown")
		}
		return fmt.Errorf("meta: shutdown: %w", ctx.Err())
	}
}

// Stats is a snapshot of the server's dynamic state, for tests and the load
// generator.
type Stats struct {
	Conns, Users, Calls int
}

// Stats returns current counts.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Conns: len(s.conns), Users: len(s.users), Calls: len(s.calls)}
}

// newDeviceID returns a device id no earlier run of the server gave: a
// counter plus this Server's random tag. With a counter alone a restarted
// server hands out "d7" again, and a device presenting the d7 it had before
// the restart would take the new d7 for its own resumed device (the client
// learns it resumed by getting its id back) or, within the grace window,
// resume another new device of the same user.
func (s *Server) newDeviceID() string {
	return "d" + strconv.FormatUint(s.devSeq.Add(1), 36) + "-" + s.idTag
}

func (s *Server) newCallID() string {
	return "c" + strconv.FormatUint(s.callSeq.Add(1), 36) + "-" + s.idTag
}

// newIDTag returns 40 random bits in lowercase base32 (8 characters).
func newIDTag() string {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("meta: crypto/rand failed: %v", err)) // never on Linux ≥ 3.17
	}
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
}

// newTicket returns a single-use media credential of 192 random bits.
func newTicket() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("meta: crypto/rand failed: %v", err)) // never on Linux ≥ 3.17
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// online reports whether user has an identified device here.
func (s *Server) online(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users[user] != nil
}

// Devices returns how many identified devices user has on this server.
func (s *Server) Devices(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if us := s.users[user]; us != nil {
		return len(us.devices)
	}
	return 0
}
