// Package wsloop serves WebSocket connections that are idle most of the time
// without a goroutine or a read buffer per connection. On Linux an epoll
// poller (one per process) watches every idle connection; when one becomes
// readable a short-lived goroutine takes a pooled buffer, reads and handles
// the complete frames that arrived, and hands the connection back to the
// poller. An idle connection therefore costs its socket, a small struct and
// a timer. Elsewhere (and for connections that expose no file descriptor,
// such as TLS) each connection gets a goroutine that blocks in Read, with
// the same frame handling.
//
// It implements just what /meta needs: text messages (fragmented or not) up
// to a size limit, ping/pong liveness, the close handshake, and the terminal
// close codes 1002 (protocol error), 1003 (binary frame) and 1009 (too big).
// No extensions, no subprotocols. The handshake is gobwas/ws's.
package wsloop

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// Config configures a Loop. Zero values mean the stated defaults.
type Config struct {
	// PingInterval is how often the server pings; default 25 s.
	PingInterval time.Duration
	// IdleTimeout drops a connection from which no complete frame (a pong
	// counts) arrived for this long; default 60 s. It also bounds how long
	// the rest of a frame that arrived in part may take.
	IdleTimeout time.Duration
	// WriteTimeout bounds one frame write; default 10 s.
	WriteTimeout time.Duration
	// MaxMessageBytes bounds a message (all its fragments); a larger one is
	// refused with close 1009 and nothing more from the connection is
	// processed. Default 64 KiB.
	MaxMessageBytes int64
	// CloseGrace is how long a connection may take to answer the server's
	// close frame; input is read and discarded meanwhile, so that the peer
	// receives the close frame instead of a reset. Default 2 s.
	CloseGrace time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
}

// Handler receives one connection's messages.
type Handler interface {
	// Handle is called for each complete text message, in order, never
	// concurrently for one connection. msg is the handler's to keep.
	Handle(msg []byte)
	// Close is called exactly once when the connection has ended (read
	// error, peer's close frame, idle timeout, close grace over). It is never
	// called while Handle runs.
	Close()
}

// Loop serves upgraded connections. It is safe for concurrent use and needs
// no closing: the epoll poller is shared by every Loop of the process.
type Loop struct {
	cfg Config
	log *slog.Logger
	up  ws.HTTPUpgrader
	p   *poller // nil: a goroutine per connection
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
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 64 << 10
	}
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = 2 * time.Second
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

// Upgrade answers the WebSocket handshake (checking the Origin is the
// caller's job) and returns the connection, which is served once Start is
// called. On error the client has been answered and the socket closed. The
// caller's HTTP handler should return soon after: net/http's buffers and
// request are then freed.
func (l *Loop) Upgrade(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	nc, rw, _, err := l.up.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, fmt.Errorf("wsloop: upgrade: %w", err)
	}
	c := &Conn{l: l, nc: nc, fd: -1}
	if n := rw.Reader.Buffered(); n > 0 {
		// The client did not wait for the handshake response.
		b, _ := rw.Reader.Peek(n)
		c.pending = append([]byte(nil), b...)
	}
	if l.p != nil {
		if sc, ok := nc.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { c.fd = int(fd) })
			}
		}
	}
	t := now()
	c.lastSeen.Store(t)
	c.nextPing = t + int64(l.cfg.PingInterval)
	c.timer = time.AfterFunc(min(l.cfg.PingInterval, l.cfg.IdleTimeout), c.tick)
	return c, nil
}

// epoch makes now monotonic.
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

// Connection states; state only moves forward.
const (
	stateOpen     = iota
	stateClosing  // close frame sent; frames are read and discarded until the peer's close
	stateDraining // close frame sent after broken framing; raw input is discarded
	stateEnded    // socket closed
)

// Conn is one WebSocket connection. Its methods WriteText and Close make it
// a meta.Conn.
type Conn struct {
	l   *Loop
	nc  net.Conn
	fd  int    // -1: served by a goroutine of its own
	gen uint32 // tells this connection from a later one with the same fd
	h   Handler

	// Used only by the goroutine serving the connection.
	pending []byte // bytes that arrived with the handshake
	msg     []byte // fragments of the message being received
	inMsg   bool   // a fragmented message is being received

	lastSeen atomic.Int64 // now() of the last complete frame
	state    atomic.Uint32

	wmu sync.Mutex // serialises frame writes

	mu         sync.Mutex // guards the following (and state changes)
	busy       bool       // a goroutine is serving the connection
	registered bool       // the fd is in the poller
	hclosed    bool       // Handler.Close has been called (or is owed by the server goroutine)
	nextPing   int64
	closeBy    int64
	timer      *time.Timer
}

// Start serves the connection with h; call it once, after Upgrade.
func (c *Conn) Start(h Handler) {
	c.mu.Lock()
	c.h = h
	if c.state.Load() == stateEnded {
		c.hclosed = true
		c.mu.Unlock()
		h.Close()
		return
	}
	if c.fd < 0 || c.l.p == nil {
		c.busy = true
		c.mu.Unlock()
		go c.serve(true)
		return
	}
	if len(c.pending) > 0 {
		c.busy = true
		c.mu.Unlock()
		work(c)
		return
	}
	err := c.armLocked()
	c.mu.Unlock()
	if err != nil {
		c.l.log.Error("epoll add", "err", err)
		c.end()
	}
}

// armLocked (re)arms the fd for one readiness event.
func (c *Conn) armLocked() error {
	if c.registered {
		return c.l.p.rearm(c)
	}
	if err := c.l.p.add(c); err != nil {
		return err
	}
	c.registered = true
	return nil
}

// dispatch is called by the poller when the connection is readable.
func (c *Conn) dispatch() {
	c.mu.Lock()
	if c.busy || c.state.Load() == stateEnded {
		c.mu.Unlock()
		return
	}
	c.busy = true
	c.mu.Unlock()
	work(c)
}

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
		c.serve(false)
		c = nil
		t.Reset(workerIdle)
		select {
		case c = <-idleWorkers:
		case <-t.C:
			return
		}
	}
}

// done ends a serving goroutine's turn: re-arm the fd, or, if the connection
// has ended meanwhile, run Handler.Close on this goroutine (never while
// Handle could run).
func (c *Conn) done() {
	c.mu.Lock()
	c.busy = false
	if c.state.Load() == stateEnded {
		closeH := !c.hclosed
		c.hclosed = true
		c.mu.Unlock()
		if closeH {
			c.h.Close()
		}
		return
	}
	err := c.armLocked()
	c.mu.Unlock()
	if err != nil {
		c.l.log.Error("epoll arm", "err", err)
		c.end()
	}
}

// end closes the socket. Handler.Close runs here unless a goroutine is
// serving the connection, which then runs it when it stops.
func (c *Conn) end() {
	c.mu.Lock()
	if c.state.Load() == stateEnded {
		c.mu.Unlock()
		return
	}
	c.state.Store(stateEnded)
	c.timer.Stop()
	closeH := !c.busy && c.h != nil && !c.hclosed
	if closeH {
		c.hclosed = true
	}
	if c.registered {
		c.l.p.remove(c)
		c.registered = false
	}
	c.mu.Unlock()
	c.nc.Close()
	if closeH {
		c.h.Close()
	}
}

// tick runs the connection's timer: pings, the idle timeout and the close
// grace.
func (c *Conn) tick() {
	t := now()
	c.mu.Lock()
	switch c.state.Load() {
	case stateEnded:
		c.mu.Unlock()
		return
	case stateClosing, stateDraining:
		if t >= c.closeBy {
			c.mu.Unlock()
			c.end()
			return
		}
		c.timer.Reset(time.Duration(c.closeBy - t))
		c.mu.Unlock()
		return
	}
	idle := int64(c.l.cfg.IdleTimeout)
	last := c.lastSeen.Load()
	if t-last >= idle {
		c.mu.Unlock()
		c.end() // dead peer
		return
	}
	ping := t >= c.nextPing
	if ping {
		c.nextPing = t + int64(c.l.cfg.PingInterval)
	}
	c.timer.Reset(time.Duration(min(c.nextPing, last+idle) - t))
	c.mu.Unlock()
	if ping {
		c.wmu.Lock()
		if c.state.Load() == stateOpen {
			c.writeLocked(ws.OpPing, nil, c.l.cfg.WriteTimeout)
		}
		c.wmu.Unlock()
	}
}

// WriteText writes one text frame within the write timeout. It may be
// called concurrently with Close.
func (c *Conn) WriteText(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.state.Load() != stateOpen {
		return ErrClosed
	}
	return c.writeLocked(ws.OpText, b, c.l.cfg.WriteTimeout)
}

// Close sends a close frame with code and reason and ends the connection
// when the peer answers or after the close grace. It never blocks on a
// stuck write and never calls the Handler, so it is safe under the caller's
// locks. Later calls do nothing.
func (c *Conn) Close(code int, reason string) { c.closeWith(stateClosing, code, reason) }

func (c *Conn) closeWith(st uint32, code int, reason string) {
	c.mu.Lock()
	if c.state.Load() != stateOpen {
		if st == stateDraining && c.state.Load() == stateClosing {
			c.state.Store(stateDraining) // the framing is lost too
		}
		c.mu.Unlock()
		return
	}
	c.state.Store(st)
	c.closeBy = now() + int64(c.l.cfg.CloseGrace)
	c.timer.Reset(c.l.cfg.CloseGrace)
	c.mu.Unlock()
	if len(reason) > 123 {
		reason = reason[:123]
	}
	body := make([]byte, 2+len(reason))
	body[0], body[1] = byte(code>>8), byte(code)
	copy(body[2:], reason)
	if c.wmu.TryLock() {
		c.writeClose(body)
		return
	}
	// A write is in progress, maybe stuck on a peer that does not read: do
	// not wait for it here.
	go func() {
		c.wmu.Lock()
		c.writeClose(body)
	}()
}

// writeClose writes a close frame; the caller holds wmu, which it releases.
func (c *Conn) writeClose(body []byte) {
	err := c.writeLocked(ws.OpClose, body, c.l.cfg.CloseGrace)
	c.wmu.Unlock()
	if err != nil {
		// The peer will never see it: do not wait for an answer.
		c.mu.Lock()
		if c.state.Load() != stateEnded {
			c.closeBy = now()
			c.timer.Reset(0)
		}
		c.mu.Unlock()
	}
}

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeLocked writes one unmasked final frame; the caller holds wmu.
func (c *Conn) writeLocked(op ws.OpCode, p []byte, timeout time.Duration) error {
	var hdr [10]byte
	hdr[0] = 0x80 | byte(op)
	n := 2
	switch {
	case len(p) < 126:
		hdr[1] = byte(len(p))
	case len(p) <= 0xffff:
		hdr[1] = 126
		hdr[2], hdr[3] = byte(len(p)>>8), byte(len(p))
		n = 4
	default:
		hdr[1] = 127
		for i := 0; i < 8; i++ {
			hdr[2+i] = byte(uint64(len(p)) >> (56 - 8*i))
		}
		n = 10
	}
	c.nc.SetWriteDeadline(time.Now().Add(timeout))
	if n+len(p) <= 4096 {
		// One write, one segment, one syscall.
		bp := writeBufs.Get().(*[]byte)
		b := append(append((*bp)[:0], hdr[:n]...), p...)
		_, err := c.nc.Write(b)
		*bp = b[:0]
		writeBufs.Put(bp)
		return err
	}
	bufs := net.Buffers{hdr[:n], p}
	_, err := bufs.WriteTo(c.nc)
	return err
}
