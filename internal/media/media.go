// Package media is the mediadata server (contract section 6): it joins the
// two media WebSockets of a paired call and relays their binary frames.
//
// The metadata server decides who talks to whom; it tells this package
// through plug.Media (Pair before it sends force-call, Unpair when the call
// ends for any reason). A device then opens /media and presents its
// single-use ticket; when both devices of the call are there, each gets
// {type:"paired",peer} and every binary message of one is written, unchanged
// and in order, to the other. When the media side fails (a connection closes
// or errors, a receiver stops draining, the peer never arrives) the call is
// ended through plug.CallEnder, exactly once.
//
// Life of a media connection:
//
//	device                                  server
//	WebSocket upgrade (done by the HTTP layer) -> ServeConn
//	{type:"media",ticket}              ->   (within HelloTimeout; bad ticket: close 1008)
//	                                   ...  waits for the peer (not reading: TCP holds early frames)
//	                                   <-   {type:"paired",peer}
//	binary frames                      <->  relayed to the peer (streamed, backpressured)
//	                                   <-   close 1000 "unpaired" (Unpair, a failure, or Close)
//
// Decisions the contract leaves open:
//   - Binary frames a device sends before "paired" are not read: the server
//     does not read the socket until the call is paired, so TCP flow control
//     holds them in the sender's buffers; they are relayed once paired. A
//     consequence is that a side that leaves while waiting is noticed only
//     when it is paired (or when MediaWait or Unpair ends the call).
//   - Text frames after the hello are read and ignored in relay mode; they
//     are never relayed. A hello with mode "webrtc" runs the WebRTC mode
//     instead (contract section 10, webrtc.go), where text frames carry the
//     SDP and ICE signalling.
//   - A binary message larger than MaxFrameBytes closes that connection with
//     1009 and ends the call as disconnected, blaming its sender. A hello
//     larger than 4 KiB is closed with 1009 too (gorilla's read limit).
//   - A message is streamed, never buffered whole: it may leave the server
//     split into several WebSocket fragments, but it is still one message
//     (one ReadMessage, one browser "message" event) on the receiving side.
//   - There is no ping on /media: the device's /meta connection carries
//     liveness, and the metadata server unpairs a call whose device died.
//   - Close (server shutdown) closes paired and waiting media connections
//     with 1000 "unpaired" like any other end of a call (section 6.4 lists
//     shutdown among the unpairs), and connections still in the hello with
//     1001 going away. It does not call EndCall: the metadata server is
//     shutting down as well and tells its clients itself.
package media

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/plug"
	"github.com/user-media-plug/umplug/protocol"
)

// Defaults of Config fields left zero.
const (
	// DefaultHelloTimeout is short: a device presents its ticket right
	// after the upgrade, and until it does the connection is anonymous.
	DefaultHelloTimeout  = 5 * time.Second
	DefaultWriteTimeout  = 10 * time.Second
	DefaultMaxFrameBytes = 1 << 20
)

const (
	// helloLimit bounds the first frame: a ticket hello is a few dozen bytes.
	helloLimit = 4 << 10
	// drainLimit bounds what is read (and discarded) from a connection after
	// the server sent its close frame, while it waits for the close reply.
	// Without it a sender that never reads could make the server discard
	// gigabytes during the grace period.
	drainLimit = 1 << 20
	// defaultCloseGrace is how long a close frame may wait for the socket,
	// and half of how long the reply is awaited before the socket is cut.
	defaultCloseGrace = time.Second
)

// Config configures a Server. The zero value of each field means its default.
type Config struct {
	// Ender is told when the media side ends a call. Required.
	Ender plug.CallEnder
	// Clock measures TicketTTL and MediaWait. Nil means clock.Real{}.
	// Socket deadlines (HelloTimeout, WriteTimeout) always use the wall clock.
	Clock clock.Clock
	// TicketTTL is how long an unused ticket stays valid after Pair.
	// Zero means protocol.TicketTTL (30 s).
	TicketTTL time.Duration
	// MediaWait is how long after Pair both sides have to be connected;
	// then the call ends as disconnected, naming a side that did not arrive.
	// Zero means protocol.MediaWait (30 s).
	MediaWait time.Duration
	// HelloTimeout is how long a new connection has to send its ticket.
	// Zero means 5 s. It bounds how long an unauthenticated socket is held.
	HelloTimeout time.Duration
	// WriteTimeout is how long a receiver may take to drain one chunk of a
	// relayed frame; a slower receiver is cut and the call ends as
	// disconnected, naming the receiver. Zero means 10 s.
	WriteTimeout time.Duration
	// MaxFrameBytes is the largest binary message a device may send; a
	// larger one closes its connection with 1009 and ends the call. Zero
	// means 1 MiB. Memory per relay does not depend on it: frames are
	// streamed.
	MaxFrameBytes int64
	// Logger receives diagnostics; tickets are never logged. Nil discards.
	Logger *slog.Logger
	// Registerer receives the umplug_media_* metrics. Nil: not registered.
	Registerer prometheus.Registerer
	// WebRTC enables the WebRTC mode (contract section 10) and opens its
	// ICE ports in New (closed by Close). Nil: the mode is refused.
	WebRTC *WebRTCConfig
}

// Server is the media server. It is safe for concurrent use.
type Server struct {
	ender        plug.CallEnder
	loser        plug.MediaLoser // nil: a dropped side ends its call (v1)
	clock        clock.Clock
	ticketTTL    time.Duration
	mediaWait    time.Duration
	helloTimeout time.Duration
	writeTimeout time.Duration
	maxFrame     int64
	closeGrace   time.Duration
	log          *slog.Logger
	m            *metrics
	hooks        testHooks
	rtc          *rtcEngine // nil: WebRTC mode off

	// wg counts ServeConn calls and closer goroutines, so that Close
	// returns only when no goroutine of the server is left. Add is only
	// called under mu while !closed, or while the count is already positive.
	wg sync.WaitGroup

	closeICE sync.Once

	mu      sync.Mutex // guards the following
	closed  bool
	calls   map[string]*call
	tickets map[string]*side             // live, unused tickets only
	pending map[*websocket.Conn]struct{} // connections not yet past the hello
}

var _ plug.Media = (*Server)(nil)

// testHooks let tests wait for events instead of polling; nil in production.
// They are set before the server is used and never changed.
type testHooks struct {
	pending func()                   // a connection is waiting for its hello
	arrived func(call string, n int) // n sides of call presented their ticket
}

// call is one paired call's media state. Fields are guarded by Server.mu
// unless noted.
type call struct {
	id      string
	sides   [2]*side
	arrived int
	timer   clock.Timer   // MediaWait; nil once both arrived
	paired  bool          // ready was closed (counted in the active gauge)
	ended   bool          // torn down; set once
	webrtc  bool          // a side arrived in webrtc mode (the other must too)
	ready   chan struct{} // closed when both sides got "paired": relay now
	done    chan struct{} // closed when the call is torn down
	changed chan struct{} // closed (and replaced) when a side's conn changes: relays waiting for a side wake up
	rtc     rtcCall       // WebRTC forwarding state; has its own locks
}

// side is one device of a call.
type side struct {
	call   *call
	idx    int
	user   string
	ticket string // a credential: never log it
	issued time.Time
	conn   *websocket.Conn // set once at the hello, under Server.mu
	mode   string          // protocol.MediaModeRelay or MediaModeWebRTC, set with conn
	rp     *rtcPeer        // webrtc: set while its ServeConn runs the peer connection
	rtcUp  bool            // webrtc: its peer connection reached connected
	// back ends the call if a side that dropped (conn nil while paired)
	// or was rebound does not connect again within MediaWait.
	back clock.Timer
	// live mirrors conn for the other side's relay, which checks it before
	// every message without taking Server.mu.
	live atomic.Pointer[websocket.Conn]
}

func (sd *side) peer() *side { return sd.call.sides[1-sd.idx] }

// New returns a Server; it fails without cfg.Ender or when the metrics
// cannot be registered.
func New(cfg Config) (*Server, error) {
	if cfg.Ender == nil {
		return nil, ErrNoEnder
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	loser, _ := cfg.Ender.(plug.MediaLoser)
	s := &Server{
		ender:        cfg.Ender,
		loser:        loser,
		clock:        cfg.Clock,
		ticketTTL:    cfg.TicketTTL,
		mediaWait:    cfg.MediaWait,
		helloTimeout: cfg.HelloTimeout,
		writeTimeout: cfg.WriteTimeout,
		maxFrame:     cfg.MaxFrameBytes,
		closeGrace:   defaultCloseGrace,
		log:          cfg.Logger,
		m:            m,
		calls:        map[string]*call{},
		tickets:      map[string]*side{},
		pending:      map[*websocket.Conn]struct{}{},
	}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	if s.ticketTTL <= 0 {
		s.ticketTTL = protocol.TicketTTL
	}
	if s.mediaWait <= 0 {
		s.mediaWait = protocol.MediaWait
	}
	if s.helloTimeout <= 0 {
		s.helloTimeout = DefaultHelloTimeout
	}
	if s.writeTimeout <= 0 {
		s.writeTimeout = DefaultWriteTimeout
	}
	if s.maxFrame <= 0 {
		s.maxFrame = DefaultMaxFrameBytes
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.WebRTC != nil {
		e, err := newRTCEngine(*cfg.WebRTC, s.log, cfg.Registerer)
		if err != nil {
			return nil, err
		}
		s.rtc = e
	}
	return s, nil
}

// Pair registers the call's two tickets and starts its MediaWait. A call id
// already known is ignored (the metadata server never reuses one; a repeat
// is a duplicate event). Pair never blocks.
func (s *Server) Pair(p plug.Pair) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if _, ok := s.calls[p.Call]; ok {
		s.log.Warn("media: pair for a known call ignored", "call", p.Call)
		return
	}
	now := s.clock.Now()
	cl := &call{id: p.Call, ready: make(chan struct{}), done: make(chan struct{}), changed: make(chan struct{})}
	for i, ps := range p.Sides {
		sd := &side{call: cl, idx: i, user: ps.User, ticket: ps.Ticket, issued: now}
		cl.sides[i] = sd
		if ps.Ticket == "" || s.tickets[ps.Ticket] != nil {
			// Unusable ticket: this side can never connect, so MediaWait
			// will end the call. Not expected from the metadata server.
			s.log.Error("media: pair with an empty or duplicate ticket", "call", p.Call, "user", ps.User)
			sd.ticket = ""
			continue
		}
		s.tickets[ps.Ticket] = sd
	}
	s.calls[p.Call] = cl
	cl.timer = s.clock.AfterFunc(s.mediaWait, func() { s.mediaWaitExpired(cl) })
}

// Unpair tears the call down: its tickets die at once and its media
// connections are closed with 1000 "unpaired". An unknown or already ended
// call is a no-op, so Unpair may follow the EndCall this server made. Unpair
// never blocks: close frames are written by their own goroutines.
func (s *Server) Unpair(u plug.Unpair) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl, ok := s.calls[u.Call]; ok {
		s.endLocked(cl, u.Reason)
	}
}

// Close shuts the server down: every call is torn down (close 1000
// "unpaired"), connections still in the hello get 1001 going away, timers
// stop, and later ServeConn calls are refused with 1001. Close returns once
// every ServeConn has returned, at most a couple of close grace periods.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for _, cl := range s.calls {
			s.endLocked(cl, protocol.ReasonShutdown)
		}
		for c := range s.pending {
			s.closeAsyncLocked(c, websocket.CloseGoingAway, "server shutdown")
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	if s.rtc != nil {
		s.closeICE.Do(s.rtc.close)
	}
}

// endLocked tears cl down: no EndCall here, the caller decides.
func (s *Server) endLocked(cl *call, reason string) {
	if cl.ended {
		return
	}
	cl.ended = true
	delete(s.calls, cl.id)
	if cl.timer != nil {
		cl.timer.Stop()
		cl.timer = nil
	}
	s.endRTCLocked(cl)
	for _, sd := range cl.sides {
		if sd.back != nil {
			sd.back.Stop()
			sd.back = nil
		}
		if sd.ticket != "" && s.tickets[sd.ticket] == sd {
			delete(s.tickets, sd.ticket)
		}
		if sd.conn != nil {
			s.closeAsyncLocked(sd.conn, protocol.CloseNormal, protocol.CloseReasonUnpaired)
		}
	}
	if cl.paired {
		s.m.active.Dec()
	}
	close(cl.done)
	s.m.ended.WithLabelValues(reasonLabel(reason)).Inc()
}

// closeAsyncLocked sends c a close frame from a new goroutine (a receiver
// that does not drain could block it for the grace period) and bounds the
// wait for the close reply read by c's ServeConn. If the close frame cannot
// be written, the socket is cut.
func (s *Server) closeAsyncLocked(c *websocket.Conn, code int, reason string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = c.SetReadDeadline(time.Now().Add(2 * s.closeGrace))
		msg := websocket.FormatCloseMessage(code, reason)
		if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(s.closeGrace)); err != nil {
			_ = c.Close()
		}
	}()
}

// fail ends cl from the media side, blaming user: tear down, then tell the
// metadata server, once. EndCall is made without holding mu, so the
// metadata server may call Unpair from inside it.
func (s *Server) fail(cl *call, user string) {
	s.mu.Lock()
	if cl.ended {
		s.mu.Unlock()
		return
	}
	s.endLocked(cl, protocol.ReasonDisconnected)
	s.mu.Unlock()
	s.log.Info("media: call ended by the media side", "call", cl.id, "user", user)
	s.ender.EndCall(cl.id, user, protocol.ReasonDisconnected)
}

// mediaWaitExpired ends cl if both sides are not connected yet, naming the
// first side (caller before callee) that did not arrive.
func (s *Server) mediaWaitExpired(cl *call) {
	s.mu.Lock()
	if cl.ended || cl.paired || cl.arrived == 2 && !cl.webrtc {
		s.mu.Unlock()
		return
	}
	// In webrtc mode a side is there once its peer connection is up.
	missing := cl.sides[1].user
	for _, sd := range cl.sides {
		if sd.conn == nil || cl.webrtc && !sd.rtcUp {
			missing = sd.user
			break
		}
	}
	s.endLocked(cl, protocol.ReasonDisconnected)
	s.mu.Unlock()
	s.log.Info("media: peer media did not arrive in time", "call", cl.id, "user", missing)
	s.ender.EndCall(cl.id, missing, protocol.ReasonDisconnected)
}

// ServeConn runs one media connection, already upgraded (origin checked) by
// the HTTP layer, until it is over; it always closes c. Cancelling ctx closes
// the connection with 1001 and counts as its side leaving.
func (s *Server) ServeConn(ctx context.Context, c *websocket.Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.m.refused.WithLabelValues("shutdown").Inc()
		s.refuse(c, websocket.CloseGoingAway, "server shutdown")
		_ = c.Close()
		return
	}
	s.wg.Add(1)
	s.pending[c] = struct{}{}
	s.mu.Unlock()
	defer s.wg.Done()
	defer c.Close() // before wg.Done: Close returns with every socket closed
	if s.hooks.pending != nil {
		s.hooks.pending()
	}

	remote := remoteOf(ctx, c)
	stop := context.AfterFunc(ctx, func() {
		_ = c.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutdown"),
			time.Now().Add(s.closeGrace))
		_ = c.Close()
	})
	defer stop()

	sd := s.hello(c, remote)
	if sd == nil {
		return
	}
	cl := sd.call
	if sd.mode == protocol.MediaModeWebRTC {
		blamed, clean := s.serveRTC(sd)
		switch {
		case blamed != nil && !s.current(sd, c):
			// Rebound: a newer connection of this side took over.
		case blamed != nil && !clean && s.loser != nil && s.isPaired(cl):
			s.lose(sd, c) // dropped: the side may come back (resume.go)
		case blamed != nil:
			s.fail(cl, blamed.user)
		default:
			// The call ended first: wait for the reply to our close frame
			// (a no-op when the signalling loop already read it).
			s.drain(c)
		}
		return
	}
	select {
	case <-cl.ready:
	case <-cl.done:
		s.drain(c)
		return
	case <-ctx.Done():
		s.fail(cl, sd.user)
		return
	}
	blamed, clean := s.relay(sd, c)
	switch {
	case blamed == nil:
		s.drain(c) // the call ended
	case !s.current(sd, c):
		// Rebound: a newer connection of this side took over.
	case blamed == sd && !clean && s.loser != nil:
		// Dropped without a close frame: the side may come back (resume).
		s.lose(sd, c)
	default:
		s.fail(cl, blamed.user)
		if blamed != sd {
			// Our read side is intact: wait for the device's close reply.
			s.drain(c)
		}
	}
}

// current reports whether c is still sd's connection.
func (s *Server) current(sd *side, c *websocket.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sd.conn == c
}

type remoteKey struct{}

// WithRemote returns ctx carrying the client's address (after trusted
// proxies) for ServeConn's logs; without it they show the TCP peer.
func WithRemote(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, remoteKey{}, addr)
}

func remoteOf(ctx context.Context, c *websocket.Conn) string {
	if a, ok := ctx.Value(remoteKey{}).(string); ok {
		return a
	}
	return c.RemoteAddr().String()
}

// hello reads the ticket and registers c as its side. On any failure it
// closes c's WebSocket (1008 for a bad hello or ticket) and returns nil.
// Every ticket failure gets the same reason, so that a guesser cannot tell
// a used or expired ticket from one that never existed.
func (s *Server) hello(c *websocket.Conn, remote string) *side {
	unpend := func() {
		s.mu.Lock()
		delete(s.pending, c)
		s.mu.Unlock()
	}
	c.SetReadLimit(helloLimit)
	_ = c.SetReadDeadline(time.Now().Add(s.helloTimeout))
	mt, data, err := c.ReadMessage()
	var h protocol.MediaHello
	if err != nil || mt != websocket.TextMessage || json.Unmarshal(data, &h) != nil ||
		h.Type != protocol.TypeMedia || h.Ticket == "" {
		unpend()
		s.log.Debug("media: bad hello", "remote", remote, "err", err)
		s.m.refused.WithLabelValues("hello").Inc()
		s.refuse(c, protocol.ClosePolicy, "expected media hello")
		return nil
	}
	_ = c.SetReadDeadline(time.Time{})
	c.SetReadLimit(s.maxFrame)
	mode := h.Mode
	if mode == "" {
		mode = protocol.MediaModeRelay
	}
	if mode == protocol.MediaModeWebRTC && s.rtc == nil || mode != protocol.MediaModeWebRTC && mode != protocol.MediaModeRelay {
		// The ticket stays valid: the device may retry in relay mode.
		unpend()
		s.m.refused.WithLabelValues("mode").Inc()
		s.refuse(c, protocol.CloseUnsupported, "media mode not supported")
		return nil
	}

	s.mu.Lock()
	delete(s.pending, c)
	if s.closed {
		s.mu.Unlock()
		s.m.refused.WithLabelValues("shutdown").Inc()
		s.refuse(c, websocket.CloseGoingAway, "server shutdown")
		return nil
	}
	sd := s.tickets[h.Ticket]
	if sd != nil {
		delete(s.tickets, h.Ticket) // single use, whatever happens next
	}
	if sd == nil || !s.clock.Now().Before(sd.issued.Add(s.ticketTTL)) {
		expired := sd != nil
		s.mu.Unlock()
		s.log.Debug("media: ticket refused", "remote", remote, "expired", expired)
		s.m.refused.WithLabelValues("ticket").Inc()
		s.refuse(c, protocol.ClosePolicy, "invalid ticket")
		return nil
	}
	cl := sd.call
	if cl.paired {
		s.mu.Unlock()
		if s.rejoin(sd, c, mode) {
			return sd
		}
		return nil
	}
	sd.conn = c
	sd.live.Store(c)
	sd.mode = mode
	if other := sd.peer(); other.conn != nil && other.mode != mode {
		// Both sides must speak the same mode; this one came second.
		s.endLocked(cl, protocol.ReasonDisconnected)
		s.mu.Unlock()
		s.log.Info("media: sides in different media modes", "call", cl.id, "user", sd.user)
		s.ender.EndCall(cl.id, sd.user, protocol.ReasonDisconnected)
		s.drain(c)
		return nil
	}
	cl.webrtc = mode == protocol.MediaModeWebRTC
	cl.arrived++
	arrived := cl.arrived
	both := arrived == 2 && !cl.webrtc // webrtc: paired when both peer connections are up
	if both && cl.timer != nil {
		cl.timer.Stop()
		cl.timer = nil
	}
	s.mu.Unlock()
	if s.hooks.arrived != nil {
		s.hooks.arrived(cl.id, arrived)
	}
	s.log.Debug("media: side connected", "call", cl.id, "user", sd.user)

	if both {
		s.announce(cl)
	}
	return sd
}

// announce sends "paired" to both sides, then lets both relay. It runs on
// the goroutine of the second side to arrive, before either relay starts,
// so it is the only data writer of both connections at that time.
func (s *Server) announce(cl *call) {
	for _, sd := range cl.sides {
		_ = sd.conn.SetWriteDeadline(time.Now().Add(s.writeTimeout))
		if err := sd.conn.WriteJSON(protocol.Paired{Type: protocol.TypePaired, Peer: sd.peer().user}); err != nil {
			s.fail(cl, sd.user)
			return
		}
	}
	s.mu.Lock()
	if !cl.ended {
		cl.paired = true
		s.m.active.Inc()
		close(cl.ready)
	}
	s.mu.Unlock()
}

// refuse closes an unregistered connection with code and reason and waits
// (briefly) for the close reply. No media is ever read or written.
func (s *Server) refuse(c *websocket.Conn, code int, reason string) {
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason),
		time.Now().Add(s.closeGrace))
	_ = c.SetReadDeadline(time.Now().Add(s.closeGrace))
	s.drain(c)
}

// drain reads and discards until the device's close reply, a read error or
// deadline, or drainLimit bytes, whichever comes first. Reading the reply
// before closing the socket avoids a TCP reset that could make the device
// lose the close frame.
func (s *Server) drain(c *websocket.Conn) {
	var n int64
	for n < drainLimit {
		_, r, err := c.NextReader()
		if err != nil {
			return
		}
		m, err := copyDiscard(r, drainLimit-n)
		n += m
		if err != nil {
			return
		}
	}
}
