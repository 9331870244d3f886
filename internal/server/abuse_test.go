package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/internal/store/storetest"
	"github.com/user-media-plug/umplug/internal/testlog"
	"github.com/user-media-plug/umplug/protocol"
)

func hostOf(s *servertest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// getFrom makes one request with the given Host header on a new connection
// from source address src and returns the status (0: closed unanswered)
// and the still open connection (nil when closed).
func getFrom(t *testing.T, src, addr, host, path string, hdr http.Header) (int, net.Conn) {
	t.Helper()
	d := net.Dialer{Timeout: waitFor, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitFor))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", path, host)
	for k, vs := range hdr {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	io.WriteString(c, b.String())
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return 0, nil
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return resp.StatusCode, c
}

var wsUpgrade = http.Header{
	"Upgrade":               {"websocket"},
	"Connection":            {"Upgrade"},
	"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	"Sec-Websocket-Version": {"13"},
}

// TestHostCheck (W13, DNS rebinding): a request whose Host is not one of
// the server's names is answered 421 on every path, WebSocket upgrades
// included; IP literals, localhost and the configured names are served.
func TestHostCheck(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.PublicURL = "https://calls.example.com"
		c.AllowedHosts = []string{"umplug.lan:8443", "*.corp.example"}
	}})
	addr := hostOf(s)
	_, port, _ := net.SplitHostPort(addr)
	cases := []struct {
		host string
		ok   bool
	}{
		{addr, true},
		{"localhost:" + port, true},
		{"LOCALHOST", true},
		{"app.localhost:" + port, true},
		{"[::1]:" + port, true},
		{"192.168.1.10:8443", true},
		{"calls.example.com", true},
		{"calls.example.com.:443", true},
		{"umplug.lan:8443", true},
		{"umplug.lan:8080", false},
		{"a.corp.example", true},
		{"corp.example", false},
		{"evil.example:" + port, false},
		{"calls.example.com.evil.example", false},
		{"127.0.0.1.evil.example", false},
	}
	for _, tc := range cases {
		for _, path := range []string{"/", "/healthz", "/metrics", "/umplug.js", "/meta", "/media"} {
			hdr := http.Header(nil)
			want := http.StatusOK
			if path == "/meta" || path == "/media" {
				hdr, want = wsUpgrade, http.StatusSwitchingProtocols
			}
			if !tc.ok {
				want = http.StatusMisdirectedRequest
			}
			got, _ := getFrom(t, "127.0.0.1", addr, tc.host, path, hdr)
			if got != want {
				t.Errorf("Host %q %s: status %d, want %d", tc.host, path, got, want)
			}
		}
	}
}

// TestTrustedProxies (W3): X-Forwarded-For is believed only from a trusted
// proxy (its rightmost untrusted hop); from anyone else it is ignored, so a
// client cannot pick the address its limits are counted against. Seen
// through the per-address registration limit (1 per minute).
func TestTrustedProxies(t *testing.T) {
	reg := func(t *testing.T, s *servertest.Server, src, xff, user string) protocol.Code {
		t.Helper()
		hdr := http.Header{}
		if xff != "" {
			hdr.Set("X-Forwarded-For", xff)
		}
		d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			return nd.Dial(network, addr)
		}}
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		c, _, err := d.DialContext(ctx, s.MetaURL, hdr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(waitFor))
		c.WriteMessage(websocket.TextMessage, []byte(`{"type":"reg-user","user":"`+user+`","password":"`+pw+`","tx":1}`))
		_, m, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(m), `"ok":true`) {
			return ""
		}
		if strings.Contains(string(m), `"rate-limited"`) {
			return protocol.ErrRateLimited
		}
		t.Fatalf("reg-user: %s", m)
		return ""
	}
	limitOne := func(c *server.Config) { c.Meta.RegistrationsPerAddr = 1 }

	t.Run("not trusted: header ignored", func(t *testing.T) {
		s := servertest.Start(t, &servertest.Options{Configure: limitOne})
		if got := reg(t, s, "127.0.0.1", "10.0.0.1", "u1"); got != "" {
			t.Fatalf("first: %s", got)
		}
		// A different claimed address from the same peer: still 127.0.0.1.
		if got := reg(t, s, "127.0.0.1", "10.0.0.2", "u2"); got != protocol.ErrRateLimited {
			t.Fatalf("spoofed X-Forwarded-For was believed: %q", got)
		}
	})
	t.Run("trusted proxy", func(t *testing.T) {
		s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
			limitOne(c)
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/30")}
		}})
		steps := []struct {
			src, xff string
			want     protocol.Code
		}{
			{"127.0.0.1", "10.0.0.1", ""},
			{"127.0.0.1", "10.0.0.2", ""},                               // another client behind the proxy
			{"127.0.0.2", "10.0.0.1", protocol.ErrRateLimited},          // same client, other proxy
			{"127.0.0.1", "9.9.9.9, 10.0.0.1", protocol.ErrRateLimited}, // leftmost hop is the client's claim
			{"127.0.0.1", "10.0.0.3, 127.0.0.2", ""},                    // chain of trusted proxies
			{"127.0.0.1", "10.0.0.3", protocol.ErrRateLimited},
			{"127.0.0.1", "", ""},         // no header: the proxy itself
			{"127.0.0.9", "10.0.0.4", ""}, // not a proxy: 127.0.0.9 counts
			{"127.0.0.9", "10.0.0.5", protocol.ErrRateLimited},
		}
		for i, st := range steps {
			if got := reg(t, s, st.src, st.xff, fmt.Sprint("p", i)); got != st.want {
				t.Fatalf("step %d (%s, X-Forwarded-For %q): %q, want %q", i, st.src, st.xff, got, st.want)
			}
		}
	})
}

// TestIdleKeepAliveClosed (W8): idle keep-alive connections are closed
// after the HTTP IdleTimeout; they used to live for ever.
func TestIdleKeepAliveClosed(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.HTTP.IdleTimeout = 200 * time.Millisecond
		c.MaxConnsPerAddr = 1000
	}})
	const n = 100
	conns := make([]net.Conn, 0, n)
	for range n {
		code, c := getFrom(t, "127.0.0.1", hostOf(s), hostOf(s), "/healthz", nil)
		if code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(waitFor))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("connection %d: still open after the idle timeout (%v)", i, err)
		}
	}
	eventually(t, func() bool { return s.Server.OpenConns() == 0 })
}

// TestHTTPTimeoutsSpareWebSockets (W8): the HTTP read and write timeouts
// end when a connection is upgraded: /meta and /media outlive them.
func TestHTTPTimeoutsSpareWebSockets(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.HTTP.ReadTimeout = 100 * time.Millisecond
		c.HTTP.WriteTimeout = 100 * time.Millisecond
		c.HTTP.ReadHeaderTimeout = 100 * time.Millisecond
		c.Media.HelloTimeout = 5 * time.Second
	}})
	w := dial(t, s, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	m, _, err := websocket.DefaultDialer.DialContext(ctx, strings.Replace(s.MetaURL, "/meta", "/media", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	<-time.After(500 * time.Millisecond) // well past both HTTP timeouts
	w.ok(map[string]any{"type": "reg-user", "user": "alice", "password": pw})
	// The /media connection is still waiting for its hello: a bad ticket
	// gets the media server's 1008, not a cut socket.
	m.SetWriteDeadline(time.Now().Add(waitFor))
	if err := m.WriteMessage(websocket.TextMessage, []byte(`{"type":"media","ticket":"nope"}`)); err != nil {
		t.Fatal(err)
	}
	m.SetReadDeadline(time.Now().Add(waitFor))
	_, _, err = m.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != protocol.ClosePolicy {
		t.Fatalf("/media after the HTTP timeouts: %v", err)
	}
}

// TestConnCaps (W4, W7): /meta, /media and plain HTTP connections count
// together against the per-address cap (loopback included); over it a
// connection is closed at accept; another address is still served; closed
// connections, hijacked ones included, give their slot back.
func TestConnCaps(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.MaxConnsPerAddr = 3
		c.Meta.MaxConnsPerAddr = 100
	}})
	addr := hostOf(s)
	w := dial(t, s, nil) // /meta
	code, media := getFrom(t, "127.0.0.1", addr, addr, "/media", wsUpgrade)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("/media: %d", code)
	}
	code, plain := getFrom(t, "127.0.0.1", addr, addr, "/healthz", nil)
	if code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	for _, path := range []string{"/healthz", "/media"} {
		if code, _ := getFrom(t, "127.0.0.1", addr, addr, path, wsUpgrade); code != 0 {
			t.Fatalf("4th connection from 127.0.0.1 (%s) answered %d", path, code)
		}
	}
	code, other := getFrom(t, "127.0.0.2", addr, addr, "/healthz", nil)
	if code != http.StatusOK {
		t.Fatalf("/healthz from 127.0.0.2: %d", code)
	}
	other.Close()
	w.c.Close()
	media.Close()
	plain.Close()
	eventually(t, func() bool { return s.Server.OpenConns() == 0 })
	if code, _ := getFrom(t, "127.0.0.1", addr, addr, "/healthz", nil); code != http.StatusOK {
		t.Fatalf("after closing: %d", code)
	}
}

// TestMediaTicketNoSession (W14): a socket with no /meta session that
// presents a ticket already used by its device is refused (1008) and the
// pair keeps relaying; so is a made-up ticket.
func TestMediaTicketNoSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s := servertest.Start(t, nil)
	p := setupPaired(ctx, t, s)
	for _, ticket := range []string{p.fca.Ticket, p.fcb.Ticket, strings.Repeat("A", 32)} {
		m, _, err := websocket.DefaultDialer.DialContext(ctx, strings.Replace(s.MetaURL, "/meta", "/media", 1), nil)
		if err != nil {
			t.Fatal(err)
		}
		m.NetConn().SetDeadline(time.Now().Add(waitFor))
		m.WriteMessage(websocket.TextMessage, []byte(`{"type":"media","ticket":"`+ticket+`"}`))
		_, _, err = m.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.ClosePolicy {
			t.Fatalf("ticket replay without a session: %v", err)
		}
		m.Close()
	}
	if err := p.ma.WriteFrame([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	if f, err := p.mb.ReadFrame(); err != nil || string(f) != "still here" {
		t.Fatalf("pair broken: %q %v", f, err)
	}
}

// TestShutdownStalledHTTPClient (W10): an HTTP client that sent half a
// request and stalls does not take the time meant for devices: the pair in
// a call gets unpair reason shutdown, the ringing callee cancel reason
// shutdown.
func TestShutdownStalledHTTPClient(t *testing.T) {
	s := servertest.Start(t, nil)
	mutual(t, s, "alice", "bob")
	mutual(t, s, "carol", "dave")
	a, b, c, d := login(t, s, "alice"), login(t, s, "bob"), login(t, s, "carol"), login(t, s, "dave")
	a.expect("status", "bob", "", "")
	c.expect("status", "dave", "", "")
	a.ok(map[string]any{"type": "call", "user": "alice", "peer": "bob", "tx": 1})
	f := b.expect("call", "alice", "bob", "")
	b.ok(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": txNum(f.Tx)})
	a.expect("accept", "bob", "alice", "")
	forceCall(t, a, "bob")
	forceCall(t, b, "alice")
	c.ok(map[string]any{"type": "call", "user": "carol", "peer": "dave", "tx": 2})
	d.expect("call", "carol", "dave", "")

	before := s.Server.OpenConns()
	stalled, err := net.DialTimeout("tcp", hostOf(s), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	io.WriteString(stalled, "GET /healthz HTTP/1.1\r\nHost: "+hostOf(s)+"\r\n") // and nothing more
	eventually(t, func() bool { return s.Server.OpenConns() == before+1 })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Server.Shutdown(ctx) }()
	for _, w := range []*wsc{a, b} {
		if f := w.event(); f.Type != protocol.TypeUnpair || f.Reason != protocol.ReasonShutdown {
			t.Fatalf("%s: %s; want unpair shutdown", w.name, f.raw)
		}
	}
	if f := d.event(); f.Type != protocol.TypeCancel || f.Reason != protocol.ReasonShutdown {
		t.Fatalf("dave: %s; want cancel shutdown", f.raw)
	}
	for _, w := range []*wsc{a, b, c, d} {
		var ce *websocket.CloseError
		if err := w.closeErr(); !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("%s: %v; want close 1001", w.name, err)
		}
	}
	select {
	case <-done: // an error: the stalled client had to be cut
	case <-time.After(waitFor):
		t.Fatal("Shutdown did not return")
	}
}

// TestStoreFailure (W9): a corrupted table block read by an unauthenticated
// reg-user, or a disk that refuses writes, is answered `unavailable`; the
// server keeps serving other connections, /healthz turns 503.
func TestStoreFailure(t *testing.T) {
	t.Run("corrupted block", func(t *testing.T) {
		dir := t.TempDir()
		storetest.WriteCorruptTable(t, dir, "alice", "bob")
		st, err := store.OpenPebble(dir, testlog.New(t))
		if err != nil {
			t.Fatal(err)
		}
		s := servertest.Start(t, &servertest.Options{Store: st})
		checkHealth(t, s, http.StatusOK)
		w := dial(t, s, nil)
		w.fail(map[string]any{"type": "reg-user", "user": "alice", "password": pw}, protocol.ErrUnavailable)
		afterFailure(t, s, w)
	})
	t.Run("write refused", func(t *testing.T) {
		fsys := storetest.NewFailingFS()
		st, err := store.OpenPebbleWith(t.TempDir(), store.PebbleOptions{Logger: testlog.New(t), FS: fsys})
		if err != nil {
			t.Fatal(err)
		}
		s := servertest.Start(t, &servertest.Options{Store: st})
		w := dial(t, s, nil)
		w.ok(map[string]any{"type": "reg-user", "user": "alice", "password": pw})
		fsys.Fail()
		w.fail(map[string]any{"type": "reg-user", "user": "bob", "password": pw}, protocol.ErrUnavailable)
		afterFailure(t, s, w)
	})
}

func afterFailure(t *testing.T, s *servertest.Server, w *wsc) {
	t.Helper()
	w.fail(map[string]any{"type": "whoami", "user": "alice", "password": pw}, protocol.ErrUnavailable)
	w.fail(map[string]any{"type": "reg-user", "user": "carol", "password": pw}, protocol.ErrUnavailable)
	checkHealth(t, s, http.StatusServiceUnavailable)
	// The server goes on: a new connection is answered.
	w2 := dial(t, s, nil)
	w2.sendRaw("not json")
	if f := w2.next(); f.Error != protocol.ErrBadJSON {
		t.Fatalf("new connection: %s", f.raw)
	}
	w2.fail(map[string]any{"type": "whoami", "user": "bob", "password": pw}, protocol.ErrUnavailable)
}

func checkHealth(t *testing.T, s *servertest.Server, want int) {
	t.Helper()
	if code, _ := getFrom(t, "127.0.0.1", hostOf(s), hostOf(s), "/healthz", nil); code != want {
		t.Fatalf("/healthz: %d, want %d", code, want)
	}
}
