package connlimit_test

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/server/connlimit"
)

const waitFor = 10 * time.Second

// serve accepts on a limited listener and hands the accepted connections
// to the test.
func serve(t *testing.T, cfg connlimit.Config) (*connlimit.Limiter, string, chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := connlimit.New(cfg)
	lln := lim.Listener(ln)
	t.Cleanup(func() { lln.Close() })
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := lln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	return lim, ln.Addr().String(), accepted
}

func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: waitFor, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func next(t *testing.T, accepted chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-accepted:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(waitFor):
		t.Fatal("no connection accepted")
		return nil
	}
}

// refused: the server closed c at accept (the client reads EOF).
func refused(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitFor))
	_, err := c.Read(make([]byte, 1))
	return err != nil
}

func TestPerAddrAndTotal(t *testing.T) {
	var nref atomic.Int32
	lim, addr, accepted := serve(t, connlimit.Config{MaxConns: 4, MaxPerAddr: 2, Refused: func(string) { nref.Add(1) }})
	a1, a2 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	s1, _ := next(t, accepted), next(t, accepted)
	over := dialFrom(t, "127.0.0.1", addr)
	if !refused(t, over) {
		t.Fatal("third connection from 127.0.0.1 was not refused")
	}
	// Another address is served.
	dialFrom(t, "127.0.0.2", addr)
	next(t, accepted)
	if got := lim.OpenFrom(netip.MustParseAddr("127.0.0.1")); got != 2 {
		t.Fatalf("OpenFrom = %d", got)
	}
	// Closing one releases its slot.
	s1.Close()
	a1.Close()
	dialFrom(t, "127.0.0.1", addr)
	next(t, accepted)
	dialFrom(t, "127.0.0.3", addr)
	next(t, accepted)
	// Total 4 reached.
	if !refused(t, dialFrom(t, "127.0.0.4", addr)) {
		t.Fatal("connection over the total was not refused")
	}
	if nref.Load() != 2 {
		t.Fatalf("Refused called %d times", nref.Load())
	}
	_ = a2
}

func TestExempt(t *testing.T) {
	proxy := netip.MustParseAddr("127.0.0.9")
	_, addr, accepted := serve(t, connlimit.Config{MaxConns: 10, MaxPerAddr: 1, Exempt: func(a netip.Addr) bool { return a == proxy }})
	for range 3 {
		dialFrom(t, "127.0.0.9", addr)
		next(t, accepted)
	}
}

func TestReleaseDetach(t *testing.T) {
	lim, addr, accepted := serve(t, connlimit.Config{})
	dialFrom(t, "127.0.0.1", addr)
	c := next(t, accepted)
	dialFrom(t, "127.0.0.1", addr)
	d := next(t, accepted)
	if lim.Open() != 2 {
		t.Fatalf("Open = %d", lim.Open())
	}
	// Release through a *tls.Conn wrapper, twice: counted once.
	tc := tls.Server(c, &tls.Config{})
	connlimit.Release(tc)
	connlimit.Release(tc)
	c.Close()
	if lim.Open() != 1 {
		t.Fatalf("after Release and Close: Open = %d", lim.Open())
	}
	// Detach: closing the wrapper keeps the count, release drops it.
	release := connlimit.Detach(d)
	d.Close()
	if lim.Open() != 1 {
		t.Fatalf("detached connection released by Close: Open = %d", lim.Open())
	}
	release()
	release()
	if lim.Open() != 0 {
		t.Fatalf("after release: Open = %d", lim.Open())
	}
	connlimit.Release(&net.TCPConn{}) // uncounted: no-op
}
