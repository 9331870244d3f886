// Package faultproxy is a TCP proxy for tests that breaks the network on
// demand, the way a real one breaks: every connection reset at once
// (Cut), only the /media ones (CutMedia), or every open connection turned
// into a black hole that neither passes bytes nor closes (Freeze).
//
// Tests put it between a client (a browser, umplug pipe) and a real server
// to check what the client and the server do about a drop: no WebSocket
// close frame reaches either side.
package faultproxy

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards TCP connections to a target until told otherwise.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex        // guards the following
	conns map[net.Conn]*leg // open connections, both legs
	down  bool              // Cut and not Restored: new connections are refused
}

// leg is what the proxy knows of one connection.
type leg struct {
	media  bool         // its request line was GET /media
	frozen *atomic.Bool // shared by both legs of a pair: bytes are dropped
}

// New starts a proxy to target (host:port) on a loopback port; it stops
// when the test ends.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("faultproxy: listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]*leg{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Port is the proxy's port on 127.0.0.1 (a browser test may want
// http://localhost:PORT: a secure context for the camera).
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// URL is http://127.0.0.1:PORT, the target's base URL through the proxy.
func (p *Proxy) URL() string { return "http://127.0.0.1:" + strconv.Itoa(p.Port()) }

// Cut resets every open connection (RST, as abrupt as a dead link gets on
// loopback) and refuses new ones until Restore.
func (p *Proxy) Cut() { p.reset(func(*leg) bool { return true }, true) }

// CutMedia resets the /media connections; the others stay, and new
// connections are accepted.
func (p *Proxy) CutMedia() { p.reset(func(l *leg) bool { return l.media }, false) }

// Restore accepts connections again after Cut.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// Freeze makes every open connection a black hole: what either side sends
// is dropped and nothing closes (a network that went away under open
// sockets). New connections work.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.conns {
		l.frozen.Store(true)
	}
}

func (p *Proxy) reset(which func(*leg) bool, down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if down {
		p.down = true
	}
	for c, l := range p.conns {
		if which(l) {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
		}
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		l := &leg{frozen: new(atomic.Bool)}
		if !p.track(c, l) {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c, l)
	}
}

// track registers c unless the proxy is down.
func (p *Proxy) track(c net.Conn, l *leg) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	p.conns[c] = l
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) serve(c net.Conn, l *leg) {
	defer p.wg.Done()
	defer p.untrack(c)
	// The request line tells /media from the rest.
	first := make([]byte, 4<<10)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(first)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	l.media = bytes.HasPrefix(first[:n], []byte("GET /media"))
	p.mu.Unlock()
	if !p.track(up, l) {
		up.Close()
		return
	}
	defer p.untrack(up)
	if _, err := up.Write(first[:n]); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { copyUnlessFrozen(up, c, l.frozen); done <- struct{}{} }()
	go func() { copyUnlessFrozen(c, up, l.frozen); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
}

// copyUnlessFrozen copies src to dst, dropping what it reads once frozen.
func copyUnlessFrozen(dst io.Writer, src io.Reader, frozen *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
