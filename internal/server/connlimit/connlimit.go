// Package connlimit bounds the TCP connections a server holds, in total and
// per remote address, at accept time: a client that opens connections
// without end cannot exhaust the process's file descriptors, and clients
// from other addresses (and the health check) keep being served.
//
// Connections are counted from Accept until they are released: when the
// connection is closed through the wrapper the listener returned (net/http
// closing a finished connection, gorilla/websocket closing a hijacked one,
// a *tls.Conn on top of it closing), or by an explicit Release. An owner
// that takes the file descriptor away and closes the wrapper early (an
// event loop that dup(2)s the descriptor) calls Detach first and releases
// when its own connection ends.
package connlimit

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
)

// Config configures a Limiter. Zero or negative limits mean unlimited.
type Config struct {
	// MaxConns bounds all connections together.
	MaxConns int
	// MaxPerAddr bounds the connections of one remote address (an IPv6
	// address counts with its whole /64, which one host usually has).
	MaxPerAddr int
	// Exempt reports addresses with no per-address limit (trusted reverse
	// proxies, through which every client arrives). MaxConns still applies.
	Exempt func(netip.Addr) bool
	// Refused, if set, is called for every connection closed at accept,
	// with reason "total" or "per-addr" (for a metric).
	Refused func(reason string)
}

// Limiter counts open connections. It is safe for concurrent use.
type Limiter struct {
	cfg Config

	mu      sync.Mutex // guards the following
	total   int
	perAddr map[netip.Addr]int
}

// New returns a Limiter.
func New(cfg Config) *Limiter {
	return &Limiter{cfg: cfg, perAddr: map[netip.Addr]int{}}
}

// Open returns how many connections are counted now.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// OpenFrom returns how many connections of addr (its /64 for IPv6) are
// counted now.
func (l *Limiter) OpenFrom(addr netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perAddr[key(addr)]
}

// Listener wraps ln: Accept closes a connection over a limit at once (the
// client sees the connection closed before any response) and goes on
// accepting; it returns the others wrapped in a *Conn.
func (l *Limiter) Listener(ln net.Listener) net.Listener {
	return &listener{Listener: ln, l: l}
}

type listener struct {
	net.Listener
	l *Limiter
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc := ln.l.admit(c); tc != nil {
			return tc, nil
		}
		_ = c.Close()
	}
}

// admit counts c, or returns nil when a limit is reached.
func (l *Limiter) admit(c net.Conn) *Conn {
	addr := remoteAddr(c)
	k := key(addr)
	exempt := l.cfg.Exempt != nil && addr.IsValid() && l.cfg.Exempt(addr)
	l.mu.Lock()
	reason := ""
	switch {
	case l.cfg.MaxConns > 0 && l.total >= l.cfg.MaxConns:
		reason = "total"
	case !exempt && l.cfg.MaxPerAddr > 0 && l.perAddr[k] >= l.cfg.MaxPerAddr:
		reason = "per-addr"
	default:
		l.total++
		l.perAddr[k]++
	}
	l.mu.Unlock()
	if reason != "" {
		if l.cfg.Refused != nil {
			l.cfg.Refused(reason)
		}
		return nil
	}
	return &Conn{Conn: c, l: l, key: k}
}

func (l *Limiter) release(k netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.perAddr[k] - 1; n > 0 {
		l.perAddr[k] = n
	} else {
		delete(l.perAddr, k)
	}
}

// remoteAddr is c's peer address, IPv4-mapped IPv6 unmapped; the zero Addr
// when c is not TCP (all such connections share one count).
func remoteAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// key is the counting key of addr: IPv6 addresses count per /64.
func key(addr netip.Addr) netip.Addr {
	addr = addr.Unmap()
	if addr.Is6() && !addr.IsLoopback() {
		if p, err := addr.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return addr
}

// Conn is a counted connection.
type Conn struct {
	net.Conn
	l     *Limiter
	key   netip.Addr
	state atomic.Int32 // counted, detached or released
}

const (
	counted int32 = iota
	detached
	released
)

// Close closes the connection and releases its count, unless it was
// detached.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	if c.state.CompareAndSwap(counted, released) {
		c.l.release(c.key)
	}
	return err
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// SyscallConn gives access to the descriptor (for event loops that poll it
// or dup it), when the wrapped connection has one.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

// ReadFrom keeps the wrapped connection's fast path (sendfile, splice).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *Conn) release() {
	for {
		st := c.state.Load()
		if st == released {
			return
		}
		if c.state.CompareAndSwap(st, released) {
			c.l.release(c.key)
			return
		}
	}
}

// find returns the *Conn under c: c itself, or what a *tls.Conn (or any
// wrapper with a NetConn method) wraps; nil when c is not counted.
func find(c net.Conn) *Conn {
	for c != nil {
		switch v := c.(type) {
		case *Conn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Release releases c's count now (c may be a *Conn, or a *tls.Conn or other
// wrapper around one). It is idempotent and a no-op for uncounted
// connections. It does not close c.
func Release(c net.Conn) {
	if cc := find(c); cc != nil {
		cc.release()
	}
}

// Detach hands c's count to a new owner: closing c no longer releases it,
// the returned function does (idempotent). For an owner that dup(2)s the
// descriptor and closes c while the connection lives on. Detach of an
// uncounted or already released connection returns a no-op.
func Detach(c net.Conn) (release func()) {
	cc := find(c)
	if cc == nil || !cc.state.CompareAndSwap(counted, detached) {
		return func() {}
	}
	return cc.release
}
