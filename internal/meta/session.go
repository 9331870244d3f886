package meta

import (
	"errors"
	"sync"
	"time"

	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// Session is one client connection. The transport calls Handle for each text
// frame, in order, from a single goroutine, and Close when the connection
// ends. Handle returns only after the frame's response is queued, which is
// what makes per-connection processing strictly ordered.
type Session struct {
	s    *Server
	conn Conn
	addr string
	done chan struct{} // closed when the session is fully closed

	// Written once by the reader goroutine inside whoami (under s.mu);
	// read by the reader goroutine, and by others under s.mu.
	user   string
	device string

	// Token bucket; touched only by the reader goroutine.
	tokens  float64
	last    time.Time
	refused int // consecutive rate-limited messages

	qmu     sync.Mutex // guards the following
	queue   [][]byte   // frames waiting to be written
	writing bool       // a writer goroutine is draining queue
	closing bool       // no more frames are accepted
	closeAt *closeReq  // close once the queue is drained
	closed  bool
}

type closeReq struct {
	code   int
	reason string
}

func newSession(s *Server, c Conn, addr string) *Session {
	return &Session{s: s, conn: c, addr: addr, done: make(chan struct{}),
		tokens: float64(s.cfg.RateBurst), last: s.cfg.Clock.Now()}
}

// User returns the identified user, or "" before whoami.
func (x *Session) User() string { return x.user }

// Device returns the device id, or "" before whoami.
func (x *Session) Device() string { return x.device }

// send queues a frame for writing. It never blocks: a writer goroutine is
// started when the queue goes from empty to non-empty and exits once it is
// drained, so an idle connection costs no goroutine for writing. A client that
// lets MaxQueue frames pile up is disconnected as a slow consumer.
func (x *Session) send(b []byte) {
	x.qmu.Lock()
	if x.closing {
		x.qmu.Unlock()
		return
	}
	if len(x.queue) >= x.s.cfg.MaxQueue {
		x.closing = true
		x.queue = nil
		x.qmu.Unlock()
		x.s.m.slowConsumers.Inc()
		x.s.log.Warn("slow consumer disconnected", "user", x.user, "device", x.device, "addr", x.addr)
		x.conn.Close(protocol.ClosePolicy, "slow consumer")
		return
	}
	x.queue = append(x.queue, b)
	if !x.writing {
		x.writing = true
		go x.writeLoop()
	}
	x.qmu.Unlock()
}

func (x *Session) writeLoop() {
	for {
		x.qmu.Lock()
		if len(x.queue) == 0 {
			x.writing = false
			req := x.closeAt
			x.closeAt = nil
			x.qmu.Unlock()
			if req != nil {
				x.conn.Close(req.code, req.reason)
			}
			return
		}
		b := x.queue[0]
		x.queue[0] = nil
		x.queue = x.queue[1:]
		x.qmu.Unlock()
		if err := x.conn.WriteText(b); err != nil {
			x.qmu.Lock()
			x.closing = true
			x.queue = nil
			x.writing = false
			x.qmu.Unlock()
			x.conn.Close(protocol.CloseInternal, "write failed")
			return
		}
	}
}

// closeAfterFlush stops accepting frames and closes the connection once the
// queued ones are written.
func (x *Session) closeAfterFlush(code int, reason string) {
	x.qmu.Lock()
	x.closing = true
	if x.writing {
		x.closeAt = &closeReq{code, reason}
		x.qmu.Unlock()
		return
	}
	x.qmu.Unlock()
	x.conn.Close(code, reason)
}

// reply queues the response to req.
func (x *Session) reply(req *protocol.Request, res protocol.Response) {
	res.Type = protocol.TypeRes
	if req != nil {
		res.For = req.Type
		res.Tx = req.Tx
	}
	if !res.OK {
		x.s.m.errors(res.Error)
	}
	x.send(res.AppendJSON(make([]byte, 0, 128)))
}

func (x *Session) fail(req *protocol.Request, e *protocol.Error) {
	x.reply(req, protocol.Response{OK: false, Error: e.Code, Reason: e.Reason, Missing: e.Missing})
}

func (x *Session) ok(req *protocol.Request) { x.reply(req, protocol.Response{OK: true}) }

// allow takes a token from the connection's bucket.
func (x *Session) allow() bool {
	if x.s.cfg.RateLimit < 0 {
		return true
	}
	now := x.s.cfg.Clock.Now()
	x.tokens += now.Sub(x.last).Seconds() * x.s.cfg.RateLimit
	x.last = now
	if max := float64(x.s.cfg.RateBurst); x.tokens > max {
		x.tokens = max
	}
	if x.tokens < 1 {
		return false
	}
	x.tokens--
	return true
}

// Handle processes one text frame completely: its response (and any events
// it causes) are queued before Handle returns.
func (x *Session) Handle(frame []byte) {
	start := x.s.cfg.Clock.Now()
	req, perr := protocol.DecodeRequest(frame)
	if perr != nil {
		x.s.m.message("")
		x.fail(nil, perr)
		return
	}
	if !x.allow() {
		x.refused++
		x.s.m.message(req.Type)
		x.fail(req, protocol.Errorf(protocol.ErrRateLimited, "more than %g messages per second", x.s.cfg.RateLimit))
		if x.refused >= x.s.cfg.AbuseLimit {
			x.s.log.Warn("closing rate-limit abuser", "addr", x.addr, "user", x.user)
			x.closeAfterFlush(protocol.ClosePolicy, "rate limit exceeded")
		}
		return
	}
	x.refused = 0
	if perr := req.CheckEnvelope(); perr != nil {
		x.s.m.message("")
		x.fail(req, perr)
		return
	}
	x.s.m.message(req.Type)
	if x.user == "" && req.Type != protocol.TypeWhoami && req.Type != protocol.TypeRegUser {
		x.fail(req, protocol.Errorf(protocol.ErrUnauthenticated, "send whoami first"))
		return
	}
	if perr := req.Validate(); perr != nil {
		x.fail(req, perr)
		return
	}
	if x.user != "" && req.Type != protocol.TypeWhoami && req.Type != protocol.TypeRegUser && req.User != x.user {
		x.fail(req, protocol.Errorf(protocol.ErrForbidden, "user: this connection is identified as another user"))
		return
	}
	h := handlers[req.Type]
	h(x, req)
	x.s.m.observe(req.Type, x.s.cfg.Clock.Now().Sub(start))
}

var handlers map[string]func(*Session, *protocol.Request)

func init() {
	handlers = map[string]func(*Session, *protocol.Request){
		protocol.TypeRegUser:     (*Session).handleRegUser,
		protocol.TypeWhoami:      (*Session).handleWhoami,
		protocol.TypeAddPeers:    (*Session).handleAddPeers,
		protocol.TypeDelPeers:    (*Session).handleDelPeers,
		protocol.TypePeers:       (*Session).handlePeers,
		protocol.TypePeersOnline: (*Session).handlePeersOnline,
		protocol.TypeStatus:      (*Session).handleStatus,
		protocol.TypeCall:        (*Session).handleCall,
		protocol.TypeAccept:      (*Session).handleAccept,
		protocol.TypeReject:      (*Session).handleReject,
		protocol.TypeCancel:      (*Session).handleCancel,
		protocol.TypeUnpair:      (*Session).handleUnpair,
	}
}

// Close is called by the transport when the connection has ended (read
// error, close frame, dead peer). It ends the device's calls, updates
// presence and releases the session. It is idempotent.
func (x *Session) Close() {
	x.qmu.Lock()
	if x.closed {
		x.qmu.Unlock()
		return
	}
	x.closed = true
	x.closing = true
	x.queue = nil
	x.qmu.Unlock()

	s := x.s
	s.mu.Lock()
	delete(s.conns, x)
	if s.perAddr[x.addr]--; s.perAddr[x.addr] <= 0 {
		delete(s.perAddr, x.addr)
	}
	s.m.conns.Dec()
	if x.user != "" {
		s.removeDeviceLocked(x)
	}
	s.mu.Unlock()
	x.conn.Close(protocol.CloseNormal, "")
	close(x.done)
}

// unavailable answers a store failure.
func (x *Session) unavailable(req *protocol.Request, err error) {
	if errors.Is(err, store.ErrClosed) {
		x.fail(req, protocol.Errorf(protocol.ErrUnavailable, "the server is shutting down"))
		return
	}
	x.s.log.Error("store failure", "type", req.Type, "user", req.User, "err", err)
	x.fail(req, protocol.Errorf(protocol.ErrUnavailable, "the user store failed; nothing was changed"))
}
