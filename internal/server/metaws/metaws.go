// Package metaws is the /meta WebSocket transport: connections that are idle
// nearly all the time, served by github.com/lesismal/nbio's event loop
// without a goroutine or a read buffer per connection.
//
// net/http's server does the HTTP part. Upgrade uses nbio's websocket
// Upgrader for the handshake, then moves the socket to nbio's poller
// (nbio.NBConn + nbhttp.Engine.AddTransferredConn): from then on the poller
// reads whatever arrived and nbio's parser, which keeps only the bytes
// received so far, assembles frames and messages. Messages are handled on
// the poller's goroutine. A partial frame therefore costs the bytes that
// arrived, not a goroutine or a buffer of the declared size.
//
// What is ours, around nbio:
//   - a frame-boundary tracker on the raw bytes (frames.go) that refuses,
//     as soon as a header is complete, what RFC 6455 and the contract forbid
//     (with a close frame and the right code) and tells when bytes of an
//     unfinished frame or message are pending;
//   - liveness from the last byte received (ping every PingInterval, dead
//     after IdleTimeout of silence) and a deadline for completing a frame or
//     a fragmented message (FrameTimeout, close 1008), on one runtime timer
//     per connection;
//   - close codes: 1007 for invalid UTF-8 (nbio says 1002), 1003 for binary,
//     1009 above the size limit, the close handshake with a grace period;
//   - a non-blocking write path with a per-connection byte bound (slow
//     consumers are closed with 1008), batching several frames in one write.
//
// Connections whose socket is not a *net.TCPConn (TLS from net/http's
// server) cannot move to the poller: each gets a reading goroutine, with the
// same frame handling and a queued writer (nbio's "blocking mode" idea, our
// implementation).
package metaws

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/mempool"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
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
	// WriteTimeout bounds one socket write of the handshake and, for
	// connections served by a goroutine (TLS), of queued frames; default
	// 10 s. Writes on the poller never block.
	WriteTimeout time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
}

// Handler receives one connection's messages.
type Handler interface {
	// Handle is called for each complete, valid UTF-8 text message, in
	// order, never concurrently for one connection, on the event loop: it
	// must not block. msg is the handler's to keep.
	Handle(msg []byte)
	// Close is called exactly once when the connection has ended (read
	// error, peer's close frame, idle or frame timeout, close grace over).
	// It is never called while Handle runs, and Handle is not called after.
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
// needs no closing: nbio's engine is shared by every Loop of the process.
type Loop struct {
	cfg    Config
	log    *slog.Logger
	up     *websocket.Upgrader
	eng    *nbhttp.Engine // the poller; nil: a goroutine per connection
	noPoll bool           // tests: serve TCP with goroutines too
	// onPartial, for tests, sees each start (true) and end of an
	// unfinished frame or message.
	onPartial func(bool)
}

// New returns a Loop. If nbio's engine cannot start (no epoll), every
// connection gets a goroutine.
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
	l := &Loop{cfg: cfg, log: cfg.Logger}
	parser, err := sharedEngine()
	if err != nil {
		l.log.Warn("no nbio poller; serving each WebSocket with a goroutine", "err", err)
	} else {
		l.eng = parser
	}

	u := websocket.NewUpgrader()
	u.CheckOrigin = func(*http.Request) bool { return true } // the server checks it first
	u.HandshakeTimeout = cfg.WriteTimeout
	u.KeepaliveTime = 0 // liveness is ours: no per-connection nbio deadline timers
	u.MessageLengthLimit = int(cfg.MaxMessageBytes)
	u.BlockingModAsyncWrite = false
	u.BlockingModHandleRead = false
	u.ReleasePayload = false // messages are the handler's to keep
	u.Engine = parser
	// Every callback finds our Conn in the nbio Conn's session. They run
	// inside Parse, on the goroutine that holds the Conn's rmu.
	u.OnMessage(func(ws *websocket.Conn, mt websocket.MessageType, b []byte) {
		if c, ok := ws.Session().(*Conn); ok {
			c.onMessage(mt, b)
		}
	})
	u.SetPingHandler(func(ws *websocket.Conn, data string) {
		if c, ok := ws.Session().(*Conn); ok && c.state.Load() == stateOpen {
			c.sendRaw(appendFrame(nil, opPong, []byte(data)))
		}
	})
	u.SetPongHandler(func(*websocket.Conn, string) {}) // any byte counts as life
	u.SetCloseHandler(func(ws *websocket.Conn, code int, reason string) {
		if c, ok := ws.Session().(*Conn); ok {
			c.onPeerClose(code, reason)
		}
	})
	u.OnClose(func(ws *websocket.Conn, err error) {
		if c, ok := ws.Session().(*Conn); ok {
			c.finish()
		}
	})
	l.up = u
	return l
}

var (
	engOnce sync.Once
	theEng  *nbhttp.Engine
	engErr  error
)

// sharedEngine starts the process's nbio engine on first use: its pollers
// (runtime.NumCPU()/4, at least one goroutine each) live as long as the
// process, like net/http's own netpoller. The engine is returned even if it
// could not start (err set): its parser settings still apply.
func sharedEngine() (*nbhttp.Engine, error) {
	engOnce.Do(func() {
		logging.SetLevel(logging.LevelError)
		e := nbhttp.NewEngine(nbhttp.Config{
			Name: "umplug-meta",
			// Exact-size buffers that grow with the bytes received (nbio's
			// default pool hands out 1 KiB and up, and keeps grown buffers).
			BodyAllocator:     mempool.NewSTD(),
			SupportServerOnly: true,
		})
		// Text is checked by us, to answer 1007 (nbio would send 1002).
		e.CheckUtf8 = func([]byte) bool { return true }
		e.Engine.OnWrittenSize(func(nc *nbio.Conn, _ []byte, n int) {
			if ws, ok := nc.Session().(*websocket.Conn); ok {
				if c, ok := ws.Session().(*Conn); ok {
					c.queued.Add(-int64(n))
				}
			}
		})
		theEng = e
		if err := e.Start(); err != nil {
			engErr = fmt.Errorf("metaws: nbio engine: %w", err)
		}
	})
	return theEng, engErr
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
	l   *Loop
	nc  net.Conn        // the socket: *nbio.Conn, or the hijacked conn (goroutine mode)
	nbc *nbio.Conn      // nil in goroutine mode
	ws  *websocket.Conn // nbio's parser for this connection

	rmu     sync.Mutex // guards the following; held while input is processed (and Handle runs)
	h       Handler
	started bool
	ended   bool   // the transport is gone: Handler.Close is owed (or done)
	hclosed bool   // Handler.Close has been called
	pending []byte // input that arrived before Start
	tr      tracker

	state    atomic.Uint32
	lastByte atomic.Int64 // now() of the last byte received
	queued   atomic.Int64 // bytes handed to the socket layer and not yet written

	mu           sync.Mutex // guards the following (and state changes)
	timer        *time.Timer
	due          int64 // when timer fires
	nextPing     int64
	closeBy      int64
	partialSince int64 // 0: no unfinished frame or message

	wmu        sync.Mutex // goroutine mode: guards the following
	wq         [][]byte
	writing    bool // a writer goroutine runs
	closeAfter bool // the writer closes the socket when the queue is empty
}

// hijacker records what net/http's Hijack returns, so that the bytes a
// client sent after its request, before it saw the 101, are not lost (nbio's
// Upgrade ignores them).
type hijacker struct {
	http.ResponseWriter
	conn net.Conn
	brw  *bufio.ReadWriter
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn, h.brw = c, brw
	return c, brw, err
}

// Upgrade answers the WebSocket handshake (checking the Origin is the
// caller's job) and returns the connection, whose input is handled once
// Start is called. On error the client has been answered and the socket
// closed. The caller's HTTP handler should return soon after: net/http's
// buffers and goroutine are then freed.
func (l *Loop) Upgrade(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	hj := &hijacker{ResponseWriter: w}
	// No transfer and no reading: nbio writes the 101 and leaves the socket
	// to us (its "Scenario 3.2"), so that we can take the buffered bytes.
	if _, err := l.up.UpgradeWithoutHandlingReadForConnFromSTDServer(hj, r, nil); err != nil {
		if hj.conn != nil {
			hj.conn.Close()
		}
		return nil, fmt.Errorf("metaws: upgrade: %w", err)
	}
	c := &Conn{l: l, nc: hj.conn, tr: tracker{max: l.cfg.MaxMessageBytes}}
	if n := hj.brw.Reader.Buffered(); n > 0 {
		b, _ := hj.brw.Reader.Peek(n)
		c.pending = append([]byte(nil), b...)
	}
	tcp, isTCP := hj.conn.(*net.TCPConn)
	if l.eng == nil || l.noPoll || !isTCP {
		hj.conn.SetDeadline(time.Time{}) // nbio's handshake write deadline
		c.ws = websocket.NewServerConn(l.up, wire{hj.conn, c}, "", false, false)
		c.ws.Engine = l.up.Engine
		c.ws.Execute = nbhttp.SyncExecutor
		c.ws.SetSession(c)
		c.startTimer()
		go c.readLoop()
		return c, nil
	}
	nbc, err := nbio.NBConn(tcp) // dups the fd and closes tcp
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("metaws: to poller: %w", err)
	}
	c.nc, c.nbc = nbc, nbc
	c.ws = websocket.NewServerConn(l.up, wire{nbc, c}, "", false, false)
	c.ws.Engine = l.eng
	c.ws.Execute = nbhttp.SyncExecutor // Handle runs on the poller
	c.ws.SetSession(c)
	nbc.SetSession(c.ws)
	nbc.OnData(func(_ *nbio.Conn, b []byte) { c.input(b) })
	c.startTimer()
	// Publish c to the poller's goroutine: nbio hands the connection over
	// through its fd table and epoll, which the race detector cannot see;
	// the poller takes nbc's lock to read before it calls input.
	nbc.Lock()
	nbc.Unlock() //nolint:staticcheck // an empty critical section on purpose
	if err := l.eng.AddTransferredConn(nbc); err != nil {
		c.endNow()
		return nil, fmt.Errorf("metaws: to poller: %w", err)
	}
	return c, nil
}

// startTimer starts liveness; the connection counts as alive from here.
func (c *Conn) startTimer() {
	cfg := &c.l.cfg
	t := now()
	c.lastByte.Store(t)
	first := min(cfg.PingInterval, cfg.IdleTimeout)
	c.mu.Lock()
	c.nextPing = t + int64(cfg.PingInterval)
	c.due = t + int64(first)
	c.timer = time.AfterFunc(first, c.tick)
	c.mu.Unlock()
}

// wire is the net.Conn nbio's websocket.Conn writes to and closes: writes go
// through our non-blocking path, closing ends the connection.
type wire struct {
	net.Conn
	c *Conn
}

func (w wire) Write(b []byte) (int, error) {
	if err := w.c.sendRaw(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (w wire) Close() error { w.c.end(); return nil }

// NetConn returns the connection's socket, for its addresses only: reading
// or writing it would break the framing. With the poller it is an
// *nbio.Conn (the hijacked socket's fd was duplicated into it).
func (c *Conn) NetConn() net.Conn { return c.nc }

// Start hands the connection's messages to h; call it once, after Upgrade.
// Bytes that arrived before are handled first, on the caller's goroutine.
func (c *Conn) Start(h Handler) {
	c.rmu.Lock()
	c.h = h
	c.started = true
	if c.ended {
		c.hclosed = true
		c.rmu.Unlock()
		h.Close()
		return
	}
	b := c.pending
	c.pending = nil
	c.process(b)
	c.rmu.Unlock()
}

// readLoop serves a connection that is not on the poller.
func (c *Conn) readLoop() {
	buf := make([]byte, 4096)
	var err error
	for {
		var n int
		n, err = c.nc.Read(buf)
		if n > 0 {
			c.input(buf[:n])
		}
		if err != nil {
			break
		}
	}
	c.end()
	c.ws.CloseAndClean(err) // calls finish
}

// input handles bytes read from the socket.
func (c *Conn) input(b []byte) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.lastByte.Store(now())
	if c.hclosed || c.ended {
		return
	}
	if !c.started {
		if len(c.pending)+len(b) > int(c.l.cfg.MaxMessageBytes)+1024 {
			c.closeWith(stateDraining, closePolicy, "too much input before the session started")
			return
		}
		c.pending = append(c.pending, b...)
		return
	}
	c.process(b)
}

// process runs input through the tracker and, frame by frame while the
// connection is open, through nbio's parser. The caller holds rmu.
func (c *Conn) process(b []byte) {
	wasPartial := c.tr.partial()
	boundary := false // a frame ended with nothing unfinished after it
	defer func() {
		// A new unfinished frame restarts the frame deadline; one that
		// stays unfinished across reads keeps its start.
		switch p := c.tr.partial(); {
		case p && (boundary || !wasPartial):
			c.setPartial(true)
		case !p && wasPartial:
			c.setPartial(false)
		}
	}()
	for len(b) > 0 {
		st := c.state.Load()
		if st >= stateDraining {
			break
		}
		n, s := c.tr.step(b)
		seg := b[:n]
		b = b[n:]
		if s.done && !c.tr.partial() {
			boundary = true
		}
		if s.code != 0 {
			if s.fatal {
				c.closeWith(stateDraining, s.code, s.reason)
				break
			}
			c.closeWith(stateClosing, s.code, s.reason)
			st = c.state.Load()
		}
		if st != stateOpen {
			// Closing: frames are skipped; the peer's close frame ends it.
			if s.done && s.op == opClose {
				c.end()
				break
			}
			continue
		}
		if err := c.ws.Parse(seg); err != nil {
			c.closeWith(stateDraining, closeProtocol, "protocol error")
			break
		}
		if s.empty && c.state.Load() == stateOpen {
			c.onMessage(websocket.TextMessage, nil) // nbio drops empty messages
		}
	}
}

// onMessage is called (inside Parse, or by process) with a complete message.
func (c *Conn) onMessage(mt websocket.MessageType, b []byte) {
	if c.state.Load() != stateOpen || mt != websocket.TextMessage {
		return // binary was refused by the tracker
	}
	if !utf8.Valid(b) {
		c.closeWith(stateClosing, closeInvalidData, "invalid UTF-8 in a text message")
		return
	}
	if b == nil {
		b = []byte{}
	}
	c.h.Handle(b)
}

// onPeerClose answers the peer's close frame, whose code nbio has checked
// (an invalid one it answers with 1002 itself; a 1-byte payload never gets
// here). nbio ends the connection right after.
func (c *Conn) onPeerClose(code int, reason string) {
	if c.state.Load() == stateOpen {
		var body []byte
		switch {
		case !utf8.ValidString(reason):
			body = closeBody(closeInvalidData, "invalid UTF-8 in the close reason")
		case code == 1015: // nbio lets it through; it must never be sent
			body = closeBody(closeProtocol, "invalid close code")
		case code != closeNoStatus:
			body = closeBody(code, "")
		}
		c.mu.Lock()
		if c.state.Load() == stateOpen {
			c.state.Store(stateClosing)
		}
		c.mu.Unlock()
		c.sendRaw(appendFrame(nil, opClose, body))
	}
	c.end()
}

// finish runs Handler.Close once the transport is gone, never while Handle
// runs (it waits for rmu).
func (c *Conn) finish() {
	c.end()
	c.rmu.Lock()
	c.ended = true
	call := c.started && !c.hclosed
	c.hclosed = c.hclosed || call
	c.pending = nil
	h := c.h
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
		c.due = by
		c.timer.Reset(time.Duration(by - t))
	}
}

// tick runs the connection's timer: pings, the idle timeout, the frame
// deadline and the close grace.
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
			c.endNow()
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

// resetLocked sets the timer to fire at `at`; the caller holds mu.
func (c *Conn) resetLocked(t, at int64) {
	c.due = at
	c.timer.Reset(time.Duration(max(at-t, 0)))
}

// end closes the socket. Handler.Close follows from nbio's close callback
// (or the reading goroutine's end). On the poller, what the socket has not
// taken yet is dropped; in goroutine mode a running writer finishes its
// queue first (bounded by WriteTimeout), so that a close frame queued just
// before is sent.
func (c *Conn) end() { c.endWith(false) }

// endNow closes the socket at once, dropping unwritten bytes in goroutine
// mode too: for peers that are dead or out of time.
func (c *Conn) endNow() { c.endWith(true) }

func (c *Conn) endWith(now bool) {
	c.mu.Lock()
	if c.state.Load() == stateEnded {
		c.mu.Unlock()
		if now {
			c.nc.Close()
		}
		return
	}
	c.state.Store(stateEnded)
	c.timer.Stop()
	c.mu.Unlock()
	if c.nbc == nil && !now {
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
// is queued) and never calls the Handler, so it is safe under the caller's
// locks. Later calls do nothing.
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
	if err := c.sendRaw(appendFrame(nil, opClose, closeBody(code, reason))); err != nil {
		c.endNow() // the peer will never see it: do not wait for an answer
	}
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// WriteText queues one text frame. It never blocks.
func (c *Conn) WriteText(b []byte) error { return c.WriteTexts([][]byte{b}) }

// WriteTexts queues several text frames with one socket write. It never
// blocks; if the bytes not yet taken by the socket would pass
// MaxWriteBufferBytes, it closes the connection with 1008 "slow consumer"
// and returns ErrSlowConsumer.
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

// sendRaw hands bytes to the socket layer without blocking: nbio writes what
// the socket takes and keeps the rest for when it is writable; in goroutine
// mode a writer goroutine drains a queue. b is not kept.
func (c *Conn) sendRaw(b []byte) error {
	if c.state.Load() == stateEnded {
		return ErrClosed
	}
	c.queued.Add(int64(len(b)))
	if c.nbc != nil {
		if _, err := c.nbc.Write(b); err != nil {
			return fmt.Errorf("metaws: write: %w", err)
		}
		return nil
	}
	c.wmu.Lock()
	if c.closeAfter {
		c.wmu.Unlock()
		return ErrClosed
	}
	c.wq = append(c.wq, append([]byte(nil), b...))
	start := !c.writing
	c.writing = true
	c.wmu.Unlock()
	if start {
		go c.writeLoop()
	}
	return nil
}

// writeLoop writes the queue in goroutine mode; it exists only while there
// is something to write.
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
			c.wmu.Unlock()
			c.endNow()
			return
		}
	}
}
