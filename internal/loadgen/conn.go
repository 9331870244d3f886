package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/protocol"
)

// metaEndpoint derives the /meta WebSocket URL from the server's base URL
// and tells whether the server is on loopback.
func metaEndpoint(raw string) (string, bool, error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", false, fmt.Errorf("%w: server URL %q", ErrBadConfig, raw)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", false, fmt.Errorf("%w: server URL scheme %q", ErrBadConfig, u.Scheme)
	}
	u.Path = strings.TrimSuffix(strings.TrimRight(u.Path, "/"), "/meta") + "/meta"
	host := u.Hostname()
	loopback := host == "localhost"
	if ip := net.ParseIP(host); ip != nil {
		loopback = ip.IsLoopback() && ip.To4() != nil
	}
	return u.String(), loopback, nil
}

// wsBufferPool shares write buffers between all connections of the run:
// a connection holds one only while it writes a frame.
var wsBufferPool sync.Pool

// dialer returns a WebSocket dialer whose connections come from source
// address src (nil: the kernel chooses). Small buffers keep 15,000 idle
// connections cheap on the load generator's side.
func (g *gen) dialer(src net.IP) *websocket.Dialer {
	nd := &net.Dialer{Timeout: g.cfg.Timeout}
	if src != nil && g.loopback {
		nd.LocalAddr = &net.TCPAddr{IP: src}
	}
	return &websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: g.cfg.Timeout,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		WriteBufferPool:  &wsBufferPool,
	}
}

// connSource is the source address of idle-style connection i:
// 127.0.0.1…127.0.0.Sources in turn.
func (g *gen) connSource(i int) net.IP {
	if g.cfg.Sources <= 1 {
		return nil
	}
	return net.IPv4(127, 0, 0, byte(1+i%g.cfg.Sources))
}

// regSource returns a fresh source address for registrations, from
// 127.64.0.0/10, skipping .0 and .255.
func (g *gen) regSource() net.IP {
	g.regMu.Lock()
	defer g.regMu.Unlock()
	for {
		n := g.regNext % (1 << 22)
		g.regNext++
		if b := byte(n); b == 0 || b == 255 {
			continue
		}
		return net.IPv4(127, byte(64+n>>16), byte(n>>8), byte(n))
	}
}

// rawConn is a minimal /meta connection: no goroutine of its own until
// discard or readLoop is started, requests one at a time. The idle,
// presence and flood scenarios hold thousands of them.
type rawConn struct {
	c  *websocket.Conn
	tx int64
}

func (g *gen) dialRaw(ctx context.Context, src net.IP) (*rawConn, error) {
	c, resp, err := g.dialer(src).DialContext(ctx, g.metaURL, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %s)", g.metaURL, err, resp.Status)
		}
		return nil, fmt.Errorf("dial %s: %w", g.metaURL, err)
	}
	c.SetReadLimit(1 << 20)
	return &rawConn{c: c}, nil
}

// request sends msg (tx added) and reads frames until its response. It must
// not run concurrently with a read loop. A failed response is returned as
// a *protocol.Error.
func (r *rawConn) request(ctx context.Context, msg map[string]any) (*protocol.Response, error) {
	r.tx++
	msg["tx"] = r.tx
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode %v: %w", msg["type"], err)
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(time.Minute)
	}
	r.c.SetWriteDeadline(dl)
	if err := r.c.WriteMessage(websocket.TextMessage, b); err != nil {
		return nil, fmt.Errorf("send %v: %w", msg["type"], err)
	}
	r.c.SetReadDeadline(dl)
	defer r.c.SetReadDeadline(time.Time{})
	for {
		_, data, err := r.c.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("read %v response: %w", msg["type"], err)
		}
		var m protocol.ServerMessage
		if err := json.Unmarshal(data, &m); err != nil || m.Type != protocol.TypeRes {
			continue // an event, or noise: not ours
		}
		if perr := m.Response.Err(); perr != nil {
			return &m.Response, perr
		}
		return &m.Response, nil
	}
}

// discard reads and drops every frame until the connection ends, which
// makes gorilla answer the server's pings: an idle connection stays alive.
func (r *rawConn) discard() {
	go r.readLoop(nil)
}

// readLoop calls f (if not nil) with every frame and its arrival time.
func (r *rawConn) readLoop(f func(at time.Time, data []byte)) {
	for {
		_, data, err := r.c.ReadMessage()
		if err != nil {
			return
		}
		if f != nil {
			f(time.Now(), data)
		}
	}
}

func (r *rawConn) close() {
	r.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	r.c.Close()
}

// errCode names an error for the failure table: the protocol error code,
// or timeout, closed or transport.
func errCode(err error) string {
	var perr *protocol.Error
	switch {
	case errors.As(err, &perr):
		return string(perr.Code)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case strings.Contains(err.Error(), "closed"):
		return "closed"
	}
	return "transport"
}

// errCounter counts failures by code.
type errCounter struct {
	mu sync.Mutex // guards n and first
	n  map[string]int
	// first keeps one example error per code for the logs.
	first map[string]error
}

func newErrCounter() *errCounter {
	return &errCounter{n: map[string]int{}, first: map[string]error{}}
}

func (e *errCounter) add(err error) string {
	code := errCode(err)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n[code]++
	if e.first[code] == nil {
		e.first[code] = err
	}
	return code
}

func (e *errCounter) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := 0
	for _, n := range e.n {
		t += n
	}
	return t
}

// snapshot returns the counts by code.
func (e *errCounter) snapshot() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := make(map[string]int, len(e.n))
	for k, v := range e.n {
		m[k] = v
	}
	return m
}

// String renders "code=n code=n" sorted, or "none".
func (e *errCounter) String() string { return formatCounts(e.snapshot()) }
