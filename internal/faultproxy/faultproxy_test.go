package faultproxy

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// echo starts a line echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

type conn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, p *Proxy) *conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.URL()[len("http://"):], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &conn{t, c, bufio.NewReader(c)}
}

// roundTrip sends line and reads what comes back within d.
func (c *conn) roundTrip(line string, d time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	s, err := c.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

func (c *conn) works(line string) {
	c.t.Helper()
	if got, err := c.roundTrip(line, 5*time.Second); err != nil || got != line {
		c.t.Fatalf("round trip %q: got %q, %v", line, got, err)
	}
}

func (c *conn) dead() {
	c.t.Helper()
	if _, err := c.roundTrip("anyone?", 5*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Fatalf("want the connection reset, got %v", err)
	}
}

func TestProxy(t *testing.T) {
	p := New(t, echo(t))
	meta, media := dial(t, p), dial(t, p)
	meta.works("GET /meta HTTP/1.1")
	media.works("GET /media HTTP/1.1")

	p.CutMedia()
	media.dead()
	meta.works("still here")
	again := dial(t, p)
	again.works("GET /media HTTP/1.1") // new connections are accepted

	p.Cut()
	meta.dead()
	again.dead()
	dial(t, p).dead() // refused while down

	p.Restore()
	c := dial(t, p)
	c.works("GET /meta HTTP/1.1")

	p.Freeze()
	// A black hole: nothing comes back, and nothing closes (the deadline,
	// not an error from the peer, ends the wait).
	if _, err := c.roundTrip("hello?", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("frozen connection: want a timeout, got %v", err)
	}
	dial(t, p).works("GET /meta HTTP/1.1") // new connections work
}
