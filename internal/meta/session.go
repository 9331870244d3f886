package meta

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// Session is one client connection. The transport calls Handle for each text
// frame, in order, from one goroutine at a time, and Close once when the
// connection has ended.
//
// Handle never blocks: a message whose handler only touches memory is
// handled at once on the caller's goroutine when nothing is queued before it;
// a message that needs the store or the password hasher (which may wait for a
// long time under a login flood) is queued for the session's worker, a
// goroutine that exists only while the session has queued messages. Every
// later message waits behind it, so processing stays strictly ordered (each
// message's response is queued before the next message is handled), while
// the transport keeps reading: pongs, pings and close frames are never held
// up by a slow handler.
type Session struct {
	// Field order keeps the struct small: it is held for every connection
	// (see docs/architecture.md, "Memory per idle connection").
	s    *Server
	conn Conn
	addr string // remote address; one string per address (Server.perAddr)

	// Written under s.mu by the goroutine handling whoami; read under s.mu,
	// or without it by the goroutine handling this session's messages (the
	// only writer). user is the userState's name string, shared by the
	// user's devices.
	user   string
	device string

	// The session (its hash, compacted: compactHash) this connection was
	// identified with or given, and when its last use was stored. Written
	// under s.mu by this session's handlers; read under s.mu, or by those
	// handlers.
	sessHash string
	sessUsed int64 // clock time, UnixNano (8 bytes instead of 24)

	// Guarded by s.mu (and the bools below marked so).
	identTimer clock.Timer // the identification deadline; nil once identified or gone
	graceTimer clock.Timer // ends the grace; nil when not in grace

	// lastIn is the clock time (UnixNano) of the last message received, or
	// of the open: a resume takes over a still-open connection only when
	// it has been quiet for takeoverQuiet (a half-open socket, not a racing
	// resume).
	lastIn atomic.Int64

	// authing counts the whoami and reg-user requests queued or running
	// (at most MaxInbox, which New caps); regExtended: a reg-user answered
	// after the identification deadline gave the connection one more
	// IdentifyTimeout for its whoami. Both guarded by s.mu; 16 bits and a
	// bool keep Session in its size class.
	authing     int16
	regExtended bool
	refused     int32 // touched only by Handle: consecutive rate-limited messages

	// terminal: the server closed this connection for a policy reason
	// (1008): its end is never a drop that may be resumed.
	terminal    atomic.Bool
	gone        bool // s.mu: Close has run: never install this session as a device
	identLapsed bool // s.mu: the deadline passed while a whoami or reg-user was in flight
	inGrace     bool // s.mu: dropped, still a device: waiting for a resume (invariant 6)
	replaced    bool // s.mu: a resume took this session's device while it was still open

	// Token bucket (touched only by Handle, which the transport serialises).
	// last is the clock time of the last refill as an offset from the
	// server's epoch (monotonic, 8 bytes instead of a time.Time's 24).
	tokens float64
	last   time.Duration

	// The inbound side (guarded by imu) and the outbound side (guarded by
	// qmu); their flags share one word.
	imu       sync.Mutex
	qmu       sync.Mutex
	working   bool // imu: a worker goroutine is draining inbox
	inDone    bool // imu: Close has run: drop inbound messages
	writing   bool // qmu: a writer goroutine is draining queue
	closing   bool // qmu: no more frames are accepted
	closed    bool // qmu
	buffering bool // qmu: in grace: events go to graceBuf

	inbox   []inbound // imu: messages waiting for the worker, in order
	inBytes int       // imu: frame bytes held in inbox

	queue   [][]byte  // qmu: frames waiting to be written
	queued  int       // qmu: bytes in queue
	closeAt *closeReq // qmu: close once the queue is drained
	// qmu: while the device is in grace (dropped, waiting for a resume),
	// the events sent to it are kept here, up to maxGraceBuf, and replayed
	// to the connection that resumes it.
	graceBuf [][]byte
}

// maxGraceBuf bounds the events kept for a device in grace; later ones are
// dropped (the resumed device asks peers for the presence it missed).
const maxGraceBuf = 256

// inbound is one received message waiting for the worker: a decoded request,
// or a decided failure (bad JSON, rate limit) whose answer must still keep
// its place in the order.
type inbound struct {
	req   *protocol.Request
	fail  *protocol.Error
	bytes int
	at    time.Time
}

type closeReq struct {
	code   int
	reason string
}

func newSession(s *Server, c Conn, addr string) *Session {
	now := s.cfg.Clock.Now()
	x := &Session{s: s, conn: c, addr: addr, tokens: float64(s.cfg.RateBurst), last: now.Sub(s.epoch)}
	x.lastIn.Store(now.UnixNano())
	return x
}

// User returns the identified user, or "" before whoami.
func (x *Session) User() string {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	return x.user
}

// Device returns the device id, or "" before whoami.
func (x *Session) Device() string {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	return x.device
}

// BatchWriter is implemented by transports that can write several frames
// with one system call; the session's writer then hands them all queued
// frames at once.
type BatchWriter interface {
	WriteTexts(frames [][]byte) error
}

// send queues a frame for writing. It never blocks, so it may be called
// under s.mu (which is what orders a response before the events it causes):
// a writer goroutine is started when the queue goes from empty to non-empty
// and exits once it is drained, so an idle connection costs no goroutine for
// writing. A client that lets more than MaxQueueBytes pile up is disconnected
// as a slow consumer; its close is sent from another goroutine, never under
// the caller's locks.
func (x *Session) send(b []byte) {
	x.qmu.Lock()
	if x.closing {
		if x.buffering && len(x.graceBuf) < maxGraceBuf && !bytes.HasPrefix(b, resPrefix) {
			x.graceBuf = append(x.graceBuf, b)
		}
		x.qmu.Unlock()
		return
	}
	if x.queued+len(b) > x.s.cfg.MaxQueueBytes && x.queued > 0 {
		x.closing = true
		x.queue = nil
		x.queued = 0
		x.qmu.Unlock()
		x.s.m.slowConsumers.Inc()
		x.s.log.Warn("slow consumer disconnected", "user", x.user, "device", x.device, "addr", x.addr)
		x.terminal.Store(true)
		go x.conn.Close(protocol.ClosePolicy, "slow consumer")
		return
	}
	x.queue = append(x.queue, b)
	x.queued += len(b)
	if !x.writing {
		x.writing = true
		go x.writeLoop()
	}
	x.qmu.Unlock()
}

// writeLoop writes everything queued, batch by batch, then exits.
func (x *Session) writeLoop() {
	bw, _ := x.conn.(BatchWriter)
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
		batch := x.queue
		x.queue = nil
		x.queued = 0
		x.qmu.Unlock()
		var err error
		if bw != nil && len(batch) > 1 {
			err = bw.WriteTexts(batch)
		} else {
			for _, b := range batch {
				if err = x.conn.WriteText(b); err != nil {
					break
				}
			}
		}
		if err != nil {
			x.qmu.Lock()
			x.closing = true
			x.queue = nil
			x.queued = 0
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
	if code == protocol.ClosePolicy {
		x.terminal.Store(true)
	}
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
func (x *Session) allow(now time.Time) bool {
	if x.s.cfg.RateLimit < 0 {
		return true
	}
	t := now.Sub(x.s.epoch)
	x.tokens += (t - x.last).Seconds() * x.s.cfg.RateLimit
	x.last = t
	if max := float64(x.s.cfg.RateBurst); x.tokens > max {
		x.tokens = max
	}
	if x.tokens < 1 {
		return false
	}
	x.tokens--
	return true
}

// slowTypes are the messages whose handlers may wait on the store or the
// password hasher: they always run on the session's worker.
var slowTypes = map[string]bool{
	protocol.TypeRegUser:     true,
	protocol.TypeWhoami:      true,
	protocol.TypeAddPeers:    true,
	protocol.TypeDelPeers:    true,
	protocol.TypePeers:       true,
	protocol.TypePasswd:      true,
	protocol.TypeLogout:      true,
	protocol.TypeMissedCalls: true,
}

// Handle takes one text frame. It decides at once what needs no handler (bad
// JSON, the rate limit), then either handles the message on the caller's
// goroutine (memory-only handlers, nothing queued before it) or queues it for
// the worker. It never blocks on the store, the hasher or a socket.
func (x *Session) Handle(frame []byte) {
	now := x.s.cfg.Clock.Now()
	x.lastIn.Store(now.UnixNano())
	in := inbound{bytes: len(frame), at: now}
	req, perr := protocol.DecodeRequest(frame)
	switch {
	case perr != nil:
		in.fail = perr
	case !x.allow(now):
		x.refused++
		in.req = req
		in.fail = protocol.Errorf(protocol.ErrRateLimited, "more than %g messages per second", x.s.cfg.RateLimit)
		if int(x.refused) >= x.s.cfg.AbuseLimit {
			x.s.log.Warn("closing rate-limit abuser", "addr", x.addr)
			x.enqueue(in)
			x.closeAfterFlush(protocol.ClosePolicy, "rate limit exceeded")
			return
		}
	default:
		x.refused = 0
		in.req = req
		if req.Type == protocol.TypeWhoami || req.Type == protocol.TypeRegUser {
			x.s.mu.Lock()
			x.authing++
			x.s.mu.Unlock()
		}
	}

	x.imu.Lock()
	inline := !x.working && len(x.inbox) == 0 && !x.inDone &&
		(in.fail != nil || !slowTypes[req.Type])
	x.imu.Unlock()
	if inline && x.process(in, true) {
		return
	}
	x.enqueue(in)
}

// enqueue queues in for the worker, starting it if needed. A client that
// keeps more than MaxInbox messages (or MaxInboxBytes) waiting is closed:
// the rate limit already bounds honest clients far below that.
func (x *Session) enqueue(in inbound) {
	x.imu.Lock()
	if x.inDone {
		x.imu.Unlock()
		return
	}
	if len(x.inbox) >= x.s.cfg.MaxInbox || x.inBytes+in.bytes > x.s.cfg.MaxInboxBytes {
		x.inDone = true
		x.inbox = nil
		x.inBytes = 0
		x.imu.Unlock()
		x.s.log.Warn("closing connection with too many messages waiting", "addr", x.addr)
		x.closeAfterFlush(protocol.ClosePolicy, "too many messages waiting")
		return
	}
	x.inbox = append(x.inbox, in)
	x.inBytes += in.bytes
	if !x.working {
		x.working = true
		go x.work()
	}
	x.imu.Unlock()
}

// work handles queued messages in order until none is left.
func (x *Session) work() {
	for {
		x.imu.Lock()
		if len(x.inbox) == 0 || x.inDone {
			x.working = false
			x.inbox = nil
			x.inBytes = 0
			x.imu.Unlock()
			return
		}
		in := x.inbox[0]
		x.inbox[0] = inbound{}
		x.inbox = x.inbox[1:]
		x.inBytes -= in.bytes
		x.imu.Unlock()
		x.process(in, false)
	}
}

// process handles one message completely: its response (and any events it
// causes) are queued when it returns true. inline means the caller is the
// transport's goroutine; a handler that finds it would have to wait (a
// call to a peer who is offline needs the store) returns false instead, and
// the message is queued for the worker.
func (x *Session) process(in inbound, inline bool) bool {
	req := in.req
	if inline && in.fail == nil && req.Type == protocol.TypeCall && !x.s.online(req.Peer) {
		return false // the offline answer reads the store: not on the transport's goroutine
	}
	if in.fail != nil {
		if req == nil {
			x.s.m.message("")
		} else {
			x.s.m.message(req.Type)
		}
		x.fail(req, in.fail)
		return true
	}
	if req.Type == protocol.TypeWhoami || req.Type == protocol.TypeRegUser {
		defer x.authDone(req.Type == protocol.TypeRegUser) // Handle counted it in x.authing
	}
	if perr := req.CheckEnvelope(); perr != nil {
		x.s.m.message("")
		x.fail(req, perr)
		return true
	}
	x.s.m.message(req.Type)
	user := x.user // only this session's handlers write it
	if user == "" && req.Type != protocol.TypeWhoami && req.Type != protocol.TypeRegUser {
		x.fail(req, protocol.Errorf(protocol.ErrUnauthenticated, "send whoami first"))
		return true
	}
	if perr := req.Validate(); perr != nil {
		x.fail(req, perr)
		return true
	}
	if user != "" && req.Type != protocol.TypeWhoami && req.Type != protocol.TypeRegUser && req.User != user {
		x.fail(req, protocol.Errorf(protocol.ErrForbidden, "user: this connection is identified as another user"))
		return true
	}
	handlers[req.Type](x, req)
	x.s.m.observe(req.Type, x.s.cfg.Clock.Now().Sub(in.at))
	return true
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
		protocol.TypePasswd:      (*Session).handlePasswd,
		protocol.TypeLogout:      (*Session).handleLogout,
		protocol.TypeMissedCalls: (*Session).handleMissedCalls,
	}
}

// identDeadline runs when the identification deadline passes: a connection
// that has not identified by then is closed (1008), so that an
// unauthenticated socket cannot be held open for ever by answering pings. A
// whoami or reg-user still in flight (waiting for a hashing slot, which a
// login flood can make take longer than the deadline) is let finish; then
// see authDone.
func (x *Session) identDeadline() {
	s := x.s
	s.mu.Lock()
	x.identTimer = nil
	if x.gone || x.user != "" {
		s.mu.Unlock()
		return
	}
	if x.authing > 0 {
		x.identLapsed = true
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	x.closeAfterFlush(protocol.ClosePolicy, "not identified in time")
}

// authDone settles the identification deadline after a whoami or a
// reg-user was answered. If the deadline passed meanwhile and the
// connection is still not identified, it is closed after the answer;
// except the first time a reg-user is what was in flight: a client
// registers, then logs in on the same connection, so it gets one more
// IdentifyTimeout for that whoami (once: registering again does not extend
// it, so an unidentified socket stays bounded).
func (x *Session) authDone(reg bool) {
	s := x.s
	s.mu.Lock()
	x.authing--
	lapsed := x.identLapsed && x.authing == 0 && x.user == "" && !x.gone
	if lapsed && reg && !x.regExtended {
		x.regExtended, x.identLapsed, lapsed = true, false, false
		x.identTimer = s.cfg.Clock.AfterFunc(s.cfg.IdentifyTimeout, x.identDeadline)
	}
	s.mu.Unlock()
	if lapsed {
		x.closeAfterFlush(protocol.ClosePolicy, "not identified in time")
	}
}

// Close is called by the transport when the connection has ended (read
// error, close frame, dead peer). It ends the device's calls, updates
// presence and releases the session. It is idempotent, and safe while a
// handler of this session is still running on the worker: that handler
// finds the session gone and changes nothing for it.
func (x *Session) Close() {
	x.qmu.Lock()
	if x.closed {
		x.qmu.Unlock()
		return
	}
	x.closed = true
	x.closing = true
	x.queue = nil
	x.queued = 0
	x.qmu.Unlock()
	x.imu.Lock()
	x.inDone = true
	x.inbox = nil
	x.inBytes = 0
	x.imu.Unlock()

	s := x.s
	s.mu.Lock()
	x.gone = true
	if x.identTimer != nil {
		x.identTimer.Stop()
		x.identTimer = nil
	}
	delete(s.conns, x)
	if ac := s.perAddr[x.addr]; ac.n <= 1 {
		delete(s.perAddr, x.addr)
	} else {
		ac.n--
		s.perAddr[x.addr] = ac
	}
	s.m.conns.Dec()
	if x.user != "" {
		x.touchOnCloseLocked()
		switch {
		case x.replaced:
			// A resume holds the device now.
		case s.cfg.ResumeGrace > 0 && !s.shutdown && x.dropped():
			s.enterGraceLocked(x)
		default:
			s.removeDeviceLocked(x)
		}
	}
	s.mu.Unlock()
	x.conn.Close(protocol.CloseNormal, "")
	s.mu.Lock()
	if s.open--; s.open == 0 && s.allClosed != nil {
		close(s.allClosed) // Shutdown waits for it
	}
	s.mu.Unlock()
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
