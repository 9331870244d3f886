// Package metaws is the /meta WebSocket transport: connections that are idle
// nearly all the time, served without a goroutine or a read buffer per
// connection, and whose half-sent frames cost only the bytes sent.
//
// net/http's server does the HTTP part and gobwas/ws the handshake. Then, on
// Linux, the socket's fd goes into one process-wide epoll poller (armed
// one-shot, with a generation number so that an event for a closed fd that
// was reused is dropped). When a connection is readable a pooled worker
// goroutine reads what arrived without blocking, parses it incrementally
// (frames.go: a header of at most 14 bytes is held, payload bytes are
// unmasked into the message being assembled as they arrive), calls the
// handler for each complete message, and re-arms the fd. An idle
// connection therefore costs its socket, a small struct and a slot in the
// process's deadline heap (timers.go); a connection that sent one byte of a
// frame costs that byte.
//
// What the transport enforces (RFC 6455 and the contract):
//   - refusals as soon as a header is complete, with a close frame: 1002
//     for protocol errors (unmasked client frame, reserved bits or opcode,
//     bad fragmentation or control frame, impossible length, bad close
//     payload or code), 1003 for binary, 1009 above the size limit; 1007
//     for text (or a close reason) that is not UTF-8;
//   - liveness from the last byte received (ping every PingInterval, dead
//     after IdleTimeout of silence) and a deadline for completing a frame
//     or a fragmented message (FrameTimeout, close 1008), on one deadline
//     per connection in a heap shared by the process (one runtime timer);
//   - the close handshake with a grace period;
//   - writes that never block: a non-blocking write of what the socket
//     takes, the rest queued for a writer goroutine that exists only while
//     a queue exists, bounded by MaxWriteBufferBytes (a slow consumer is
//     closed with 1008).
//
// Connections that expose no fd (TLS from net/http's server), and every
// connection on platforms without epoll, get a reading goroutine each, with
// the same parsing.
//
// github.com/lesismal/nbio was tried for this (issue 8) and measured; see
// docs/architecture.md for why this package does not use it.
package metaws

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Config configures a Loop. Zero values mean the stated defaults.
type Config struct {
	// PingInterval is how often the server pings; default 25 s.
	PingInterval time.Duration
	// IdleTimeout drops a connection from which no byte arrived for this
	// long; default 60 s.
	IdleTimeout time.Duration
	// FrameTimeout bounds how long a frame that arrived in part, or a
	// fragmented message, may take to complete; then the connection is
	// closed with 1008. Default 10 s. Bytes trickling in do not extend it.
	FrameTimeout time.Duration
	// MaxMessageBytes bounds a message (all its fragments); a larger one is
	// refused with close 1009 and nothing more from the connection is
	// processed. Default 64 KiB.
	MaxMessageBytes int64
	// MaxWriteBufferBytes bounds the bytes written to a connection and not
	// yet taken by its socket; a write that would pass it closes the
	// connection with 1008 "slow consumer" instead. Default 1 MiB.
	MaxWriteBufferBytes int64
	// CloseGrace is how long a connection may take to answer the server's
	// close frame; input is read and discarded meanwhile, so that the peer
	// receives the close frame instead of a reset. Default 2 s.
	CloseGrace time.Duration
	// WriteTimeout bounds the handshake write and each write of the queue's
	// writer goroutine (for a peer that stopped reading); default 10 s.
	WriteTimeout time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
}

// Handler receives one connection's messages.
type Handler interface {
	// Handle is called for each complete, valid UTF-8 text message, in
	// order, never concurrently for one connection, on the goroutine that
	// read it: it must not block. msg is the handler's to keep.
	Handle(msg []byte)
	// Close is called exactly once when the connection has ended (read
	// error, peer's close frame, idle or frame timeout, close grace over).
	// It is never called while Handle runs, and Handle is not called after.
	// It is called from the transport's own goroutines, never from within
	// WriteText, WriteTexts or Close.
	Close()
}

// Errors returned by writes.
var (
	// ErrClosed: a close frame has been sent or the socket is gone.
	ErrClosed = errors.New("metaws: connection closed")
	// ErrSlowConsumer: the write would pass MaxWriteBufferBytes; the
	// connection is being closed with 1008.
	ErrSlowConsumer = errors.New("metaws: slow consumer")
)

// Loop upgrades and serves connections. It is safe for concurrent use and
// needs no closing: the epoll poller is shared by every Loop of the process.
type Loop struct {
	cfg Config
	log *slog.Logger
	up  ws.HTTPUpgrader
	p   *poller // nil: a goroutine per connection
	// onPartial, for tests, sees each start (true) and end of an
	// unfinished frame or message.
	onPartial func(bool)
}

// New returns a Loop. If the platform has no poller it falls back to a
// goroutine per connection.
func New(cfg Config) *Loop {
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 25 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = 10 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 64 << 10
	}
	if cfg.MaxWriteBufferBytes <= 0 {
		cfg.MaxWriteBufferBytes = 1 << 20
	}
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = 2 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l := &Loop{cfg: cfg, log: cfg.Logger, up: ws.HTTPUpgrader{Timeout: cfg.WriteTimeout}}
	p, err := sharedPoller()
	if err != nil {
		l.log.Warn("no epoll poller; serving each WebSocket with a goroutine", "err", err)
	}
	l.p = p
	return l
}

// epoch makes now monotonic.
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

// Connection states; state only moves forward.
const (
	stateOpen     = iota
	stateClosing  // close frame sent; frames are skipped until the peer's close
	stateDraining // close frame sent after broken framing; raw input is discarded
	stateEnded    // socket closed
)

// Conn is one WebSocket connection. WriteText, WriteTexts and Close make it
// a meta.Conn.
type Conn struct {
	// Field order keeps the struct small (fewer padding bytes): it is held
	// for every connection.
	l   *Loop
	nc  net.Conn
	rc  syscall.RawConn // non-blocking reads and writes; nil: goroutine mode
	fd  int32           // -1: goroutine mode
	gen uint32          // tells this connection from a later one with the same fd

	state atomic.Uint32
	// peerClose is the code of the close frame the client sent to start
	// the closing handshake (1000 for one without a code), 0 if it did not
	// (meta's resume tells a goodbye from a drop with it).
	peerClose atomic.Int32
	lastByte  atomic.Int64 // now() of the last byte received
	queued    atomic.Int64 // bytes queued for the writer goroutine

	rmu        sync.Mutex // guards the following; held while input is processed (and Handle runs)
	hclosed    bool       // Handler.Close has been called
	registered bool       // mu: the fd is in the poller
	hidx       int32      // deadlines.mu: 1 + index in the deadline heap; 0: not in it
	h          Handler
	// rs is the parser state (and the bytes that arrived with the
	// handshake, until Start); nil at a frame boundary (idle).
	rs *readState

	mu           sync.Mutex // guards the following, registered above, and state changes
	due          int64      // when tick is due: written holding mu and deadlines.mu, read holding either
	nextPing     int64
	closeBy      int64
	partialSince int64 // 0: no unfinished frame or message

	wmu        sync.Mutex // guards the following and orders writes
	writing    bool       // a writer goroutine runs
	closeAfter bool       // the writer closes the socket when the queue is empty
	wq         [][]byte   // bytes the socket did not take yet
}

// PeerCloseCode returns the code of the close frame with which the client
// started the closing handshake (1000 when the frame had no code: a
// deliberate close), or 0 when the connection ended otherwise (the server
// closed first, a TCP reset or EOF, an idle or frame timeout).
func (c *Conn) PeerCloseCode() int { return int(c.peerClose.Load()) }

// Upgrade answers the WebSocket handshake (checking the Origin is the
// caller's job) and returns the connection, whose input is handled once
// Start is called. On error the client has been answered and the socket
// closed. The caller's HTTP handler should return soon after: net/http's
// buffers and goroutine are then freed.
func (l *Loop) Upgrade(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	nc, rw, _, err := l.up.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, fmt.Errorf("metaws: upgrade: %w", err)
	}
	nc.SetDeadline(time.Time{})
	c := &Conn{l: l, nc: nc, fd: -1}
	if n := rw.Reader.Buffered(); n > 0 {
		// The client did not wait for the handshake response.
		b, _ := rw.Reader.Peek(n)
		rs := readStates.Get().(*readState)
		rs.tr.max = l.cfg.MaxMessageBytes
		rs.pending = append([]byte(nil), b...)
		c.rs = rs
	}
	if l.p != nil {
		if sc, ok := nc.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { c.fd = int32(fd) })
				c.rc = rc
			}
		}
	}
	cfg := &l.cfg
	t := now()
	c.lastByte.Store(t)
	first := min(cfg.PingInterval, cfg.IdleTimeout)
	c.mu.Lock()
	c.nextPing = t + int64(cfg.PingInterval)
	deadlines.set(c, t+int64(first))
	c.mu.Unlock()
	return c, nil
}

// NetConn returns the connection's socket, for its addresses only: reading
// or writing it would break the framing.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Start hands the connection's messages to h; call it once, after Upgrade.
// Bytes that arrived with the handshake are handled first, on the caller's
// goroutine.
func (c *Conn) Start(h Handler) {
	c.rmu.Lock()
	c.h = h
	if rs := c.rs; rs != nil && rs.pending != nil {
		b := rs.pending
		rs.pending = nil
		c.process(b)
	}
	c.rmu.Unlock()
	if c.state.Load() == stateEnded {
		c.finish()
		return
	}
	if c.rc == nil {
		go c.readLoop()
		return
	}
	c.mu.Lock()
	err := c.armLocked()
	c.mu.Unlock()
	if err != nil {
		c.l.log.Error("epoll add", "err", err)
		c.endNow()
		c.finish()
	}
}

// armLocked (re)arms the fd for one readiness event; the caller holds mu.
func (c *Conn) armLocked() error {
	if c.state.Load() == stateEnded {
		return nil
	}
	if c.registered {
		return c.l.p.rearm(c)
	}
	if err := c.l.p.add(c); err != nil {
		return err
	}
	c.registered = true
	return nil
}

// dispatch is called by the poller when the connection is readable; the fd
// stays disarmed until the worker is done with it.
func (c *Conn) dispatch() { work(c) }

// idleWorkers hands a readable connection to a worker that is waiting for
// one. Reusing workers keeps their grown stacks: a fresh goroutine per
// event would grow its stack (a copy) while decoding JSON every time.
var idleWorkers = make(chan *Conn)

// workerIdle is how long a worker waits for more work before it exits.
const workerIdle = time.Second

// work serves c on an idle worker or a new one.
func work(c *Conn) {
	select {
	case idleWorkers <- c:
	default:
		go worker(c)
	}
}

func worker(c *Conn) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		c.serveReadable()
		c = nil
		t.Reset(workerIdle)
		select {
		case c = <-idleWorkers:
		case <-t.C:
			return
		}
	}
}

// readBufs are the read buffers, held only while a worker reads.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// serveReadable reads what arrived without blocking, handles it, and
// re-arms the fd.
func (c *Conn) serveReadable() {
	bp := readBufs.Get().(*[]byte)
	buf := *bp
	for c.state.Load() != stateEnded {
		var n int
		var rerr error
		err := c.rc.Read(func(fd uintptr) bool {
			n, rerr = readFD(fd, buf)
			return true // never wait: the poller tells when there is more
		})
		if err == nil {
			err = rerr
		}
		if n > 0 {
			c.input(buf[:n])
		}
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
			break
		}
		if err != nil || n <= 0 {
			c.endNow() // end of stream or a socket error
			break
		}
		if n < len(buf) {
			break
		}
	}
	readBufs.Put(bp)
	c.mu.Lock()
	ended := c.state.Load() == stateEnded
	var err error
	if !ended {
		err = c.armLocked()
	}
	c.mu.Unlock()
	if err != nil {
		c.l.log.Error("epoll arm", "err", err)
		c.endNow()
		ended = true
	}
	if ended {
		c.finish()
	}
}

// readLoop serves a connection that is not on the poller.
func (c *Conn) readLoop() {
	buf := make([]byte, 4096)
	for {
		n, err := c.nc.Read(buf)
		if n > 0 {
			c.input(buf[:n])
		}
		if c.state.Load() == stateEnded {
			break // ended by us: a queued close frame may still be flushing
		}
		if err != nil {
			c.endNow()
			break
		}
	}
	c.finish()
}

// input handles bytes read from the socket.
func (c *Conn) input(b []byte) {
	c.lastByte.Store(now())
	c.rmu.Lock()
	if !c.hclosed {
		c.process(b)
	}
	c.rmu.Unlock()
}

// readState is a connection's parser state, held only while a frame or
// message is unfinished (or, from Upgrade to Start, while bytes that
// arrived with the handshake wait): an idle connection does not carry it.
type readState struct {
	tr      tracker
	msg     []byte // the text message being assembled (unmasked); nil between messages
	ctl     []byte // the control frame being assembled; nil between frames
	pending []byte // bytes that arrived with the handshake; nil once Start took them
}

var readStates = sync.Pool{New: func() any { return new(readState) }}

// process parses input and acts on it. The caller holds rmu.
func (c *Conn) process(b []byte) {
	if len(b) == 0 {
		return
	}
	rs := c.rs
	if rs == nil {
		rs = readStates.Get().(*readState)
		rs.tr.max = c.l.cfg.MaxMessageBytes
		c.rs = rs
	}
	wasPartial := rs.tr.partial()
	boundary := false // a frame ended with nothing unfinished after it
	defer func() {
		// A new unfinished frame restarts the frame deadline; one that
		// stays unfinished across reads keeps its start.
		switch p := rs.tr.partial(); {
		case p && (boundary || !wasPartial):
			c.setPartial(true)
		case !p && wasPartial:
			c.setPartial(false)
		}
		if c.rs == rs && !rs.tr.partial() && rs.msg == nil && rs.ctl == nil {
			c.rs = nil
			*rs = readState{}
			readStates.Put(rs)
		}
	}()
	for len(b) > 0 {
		st := c.state.Load()
		if st >= stateDraining {
			return // the framing is lost, or the socket is gone
		}
		n, s := rs.tr.step(b)
		b = b[n:]
		if s.done && !rs.tr.partial() {
			boundary = true
		}
		if s.code != 0 {
			if s.fatal {
				rs.msg = nil
				c.closeWith(stateDraining, s.code, s.reason)
				return
			}
			c.closeWith(stateClosing, s.code, s.reason)
			st = c.state.Load()
		}
		if st != stateOpen {
			// Closing: frames are skipped; the peer's close frame ends it.
			if s.done && s.op == opClose {
				c.end()
				return
			}
			continue
		}
		if s.op >= opClose {
			if len(s.payload) > 0 {
				off := len(rs.ctl)
				rs.ctl = append(rs.ctl, s.payload...) // at most 125 bytes
				rs.tr.unmask(rs.ctl[off:], s.off)
			}
			if s.done {
				p := rs.ctl
				rs.ctl = nil
				c.control(s.op, p)
			}
			continue
		}
		if len(s.payload) > 0 {
			off := len(rs.msg)
			rs.msg = append(rs.msg, s.payload...)
			rs.tr.unmask(rs.msg[off:], s.off)
		}
		if s.done && s.fin {
			m := rs.msg
			rs.msg = nil
			if m == nil {
				m = []byte{}
			}
			if !utf8.Valid(m) {
				c.closeWith(stateClosing, closeInvalidData, "invalid UTF-8 in a text message")
				continue
			}
			c.h.Handle(m)
		}
	}
}

// control acts on a complete ping, pong or close frame from an open
// connection.
func (c *Conn) control(op byte, p []byte) {
	switch op {
	case opPing:
		c.sendRaw(appendFrame(nil, opPong, p))
	case opClose:
		// Answer, then hang up (RFC 6455 5.5.1): echo a valid code, refuse
		// an invalid one or a reason that is not UTF-8. A 1-byte payload
		// was refused by the tracker.
		var body []byte
		if len(p) >= 2 {
			code := int(p[0])<<8 | int(p[1])
			switch {
			case !validCloseCode(code):
				body = closeBody(closeProtocol, "invalid close code")
			case !utf8.Valid(p[2:]):
				body = closeBody(closeInvalidData, "invalid UTF-8 in the close reason")
			default:
				body = closeBody(code, "")
			}
		}
		c.mu.Lock()
		if c.state.Load() == stateOpen {
			c.state.Store(stateClosing)
			code := int32(closeNormal)
			if len(p) >= 2 {
				code = int32(p[0])<<8 | int32(p[1])
			}
			c.peerClose.Store(code)
		}
		c.mu.Unlock()
		c.sendRaw(appendFrame(nil, opClose, body))
		c.end()
	}
}

// finish calls Handler.Close once the connection has ended, never while
// Handle runs (it waits for rmu). It is called only from the transport's own
// goroutines (worker, reader, timer) or Start, holding no locks.
func (c *Conn) finish() {
	c.rmu.Lock()
	h := c.h
	call := h != nil && !c.hclosed
	if call {
		c.hclosed = true
	}
	c.rs = nil
	c.rmu.Unlock()
	if call {
		h.Close()
	}
}

// setPartial records the start or end of an unfinished frame or message,
// pulling the timer in to its deadline.
func (c *Conn) setPartial(p bool) {
	if c.l.onPartial != nil {
		c.l.onPartial(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !p {
		c.partialSince = 0
		return
	}
	t := now()
	c.partialSince = t
	if by := t + int64(c.l.cfg.FrameTimeout); by < c.due && c.state.Load() == stateOpen {
		c.resetLocked(t, by)
	}
}

// tick runs when the connection's deadline is due (timers.go): pings, the
// idle timeout, the frame deadline and the close grace. It may run early;
// it acts only on what is due.
func (c *Conn) tick() {
	t := now()
	c.mu.Lock()
	switch c.state.Load() {
	case stateEnded:
		c.mu.Unlock()
		c.finish()
		return
	case stateClosing, stateDraining:
		if t >= c.closeBy {
			c.mu.Unlock()
			c.endNow()
			c.finish()
			return
		}
		c.resetLocked(t, c.closeBy)
		c.mu.Unlock()
		return
	}
	cfg := &c.l.cfg
	last := c.lastByte.Load()
	if t-last >= int64(cfg.IdleTimeout) {
		c.mu.Unlock()
		c.l.log.Debug("idle timeout", "remote", c.nc.RemoteAddr())
		c.endNow() // a dead peer: no close frame
		c.finish()
		return
	}
	if ps := c.partialSince; ps != 0 && t-ps >= int64(cfg.FrameTimeout) {
		c.mu.Unlock()
		c.l.log.Debug("frame timeout", "remote", c.nc.RemoteAddr())
		c.closeWith(stateDraining, closePolicy, "frame timeout")
		return
	}
	ping := t >= c.nextPing
	if ping {
		c.nextPing = t + int64(cfg.PingInterval)
	}
	next := min(c.nextPing, last+int64(cfg.IdleTimeout))
	if ps := c.partialSince; ps != 0 {
		next = min(next, ps+int64(cfg.FrameTimeout))
	}
	c.resetLocked(t, next)
	c.mu.Unlock()
	if ping {
		c.sendRaw(appendFrame(nil, opPing, nil))
	}
}

// resetLocked makes tick due at `at` (t is now); the caller holds mu.
func (c *Conn) resetLocked(t, at int64) {
	deadlines.set(c, at)
}

// abort ends the connection from the timer's goroutine, soon: for failures
// found where the caller may hold locks (Handler.Close must not run there).
func (c *Conn) abort() {
	c.mu.Lock()
	if c.state.Load() != stateEnded {
		if c.state.Load() == stateOpen {
			c.state.Store(stateDraining)
		}
		c.closeBy = now()
		c.resetLocked(c.closeBy, c.closeBy)
	}
	c.mu.Unlock()
}

// end closes the socket; Handler.Close follows from the goroutine that
// notices (worker, reader or timer). A running writer finishes its queue
// first (bounded by WriteTimeout), so that a close frame queued just before
// is sent.
func (c *Conn) end() { c.endWith(false) }

// endNow closes the socket at once, dropping unwritten bytes: for peers
// that are dead or out of time.
func (c *Conn) endNow() { c.endWith(true) }

func (c *Conn) endWith(now bool) {
	c.mu.Lock()
	if c.state.Load() == stateEnded {
		c.mu.Unlock()
		if now {
			c.nc.Close() // a writer may still be flushing
		}
		return
	}
	c.state.Store(stateEnded)
	deadlines.remove(c)
	if c.registered {
		c.l.p.remove(c) // before the fd is closed and maybe reused
		c.registered = false
	}
	c.mu.Unlock()
	if !now {
		c.wmu.Lock()
		if c.writing {
			c.closeAfter = true
			c.wmu.Unlock()
			return
		}
		c.wmu.Unlock()
	}
	c.nc.Close()
}

// Close sends a close frame with code and reason and ends the connection
// when the peer answers or after the close grace. It never blocks (the frame
// is queued if the socket does not take it) and never calls the Handler, so
// it is safe under the caller's locks. Later calls do nothing.
func (c *Conn) Close(code int, reason string) { c.closeWith(stateClosing, code, reason) }

func (c *Conn) closeWith(st uint32, code int, reason string) {
	c.mu.Lock()
	switch cur := c.state.Load(); {
	case cur == stateClosing && st == stateDraining:
		c.state.Store(stateDraining) // the framing is lost too
		fallthrough
	case cur != stateOpen:
		c.mu.Unlock()
		return
	}
	c.state.Store(st)
	t := now()
	c.closeBy = t + int64(c.l.cfg.CloseGrace)
	c.resetLocked(t, c.closeBy)
	c.mu.Unlock()
	c.sendRaw(appendFrame(nil, opClose, closeBody(code, reason)))
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// WriteText writes one text frame without blocking.
func (c *Conn) WriteText(b []byte) error { return c.WriteTexts([][]byte{b}) }

// WriteTexts writes several text frames with one socket write, without
// blocking: what the socket does not take is queued. If the queue would
// pass MaxWriteBufferBytes, it closes the connection with 1008 "slow
// consumer" and returns ErrSlowConsumer.
func (c *Conn) WriteTexts(frames [][]byte) error {
	if c.state.Load() != stateOpen {
		return ErrClosed
	}
	size := 0
	for _, f := range frames {
		size += len(f) + 10
	}
	if c.queued.Load()+int64(size) > c.l.cfg.MaxWriteBufferBytes {
		c.closeWith(stateClosing, closePolicy, "slow consumer")
		return ErrSlowConsumer
	}
	bp := bufs.Get().(*[]byte)
	b := (*bp)[:0]
	for _, f := range frames {
		b = appendFrame(b, opText, f)
	}
	err := c.sendRaw(b)
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		bufs.Put(bp)
	}
	return err
}

// sendRaw writes bytes without blocking: a non-blocking write of what the
// socket takes (when nothing is queued), the rest queued for a writer
// goroutine. b is not kept. A socket error aborts the connection from the
// timer's goroutine.
func (c *Conn) sendRaw(b []byte) error {
	if c.state.Load() == stateEnded {
		return ErrClosed
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeAfter {
		return ErrClosed
	}
	if !c.writing && c.rc != nil {
		var n int
		var werr error
		err := c.rc.Write(func(fd uintptr) bool {
			n, werr = writeFD(fd, b)
			return true // never wait
		})
		if err == nil {
			err = werr
		}
		if n > 0 {
			b = b[n:]
		}
		if err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR) {
			c.abort()
			return fmt.Errorf("metaws: write: %w", err)
		}
		if len(b) == 0 {
			return nil
		}
	}
	c.wq = append(c.wq, append([]byte(nil), b...))
	c.queued.Add(int64(len(b)))
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	return nil
}

// writeLoop writes the queue with blocking writes bounded by WriteTimeout;
// it exists only while there is something to write.
func (c *Conn) writeLoop() {
	for {
		c.wmu.Lock()
		q := c.wq
		c.wq = nil
		if len(q) == 0 {
			c.writing = false
			closeNow := c.closeAfter
			c.wmu.Unlock()
			if closeNow {
				c.nc.Close()
			}
			return
		}
		c.wmu.Unlock()
		n := 0
		for _, b := range q {
			n += len(b)
		}
		c.nc.SetWriteDeadline(time.Now().Add(c.l.cfg.WriteTimeout))
		bs := net.Buffers(q)
		_, err := bs.WriteTo(c.nc)
		c.queued.Add(-int64(n))
		if err != nil {
			c.wmu.Lock()
			c.wq, c.writing = nil, false
			closeNow := c.closeAfter
			c.wmu.Unlock()
			if closeNow {
				c.nc.Close()
			}
			c.abort()
			return
		}
	}
}
