package metaws_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/internal/server/metaws"
)

const waitFor = 10 * time.Second

// echo answers each message with itself and records the end.
type echo struct {
	t      testing.TB
	c      *metaws.Conn
	in     atomic.Bool // Handle is running
	closes atomic.Int32
	closed chan struct{}
}

func (e *echo) Handle(m []byte) {
	if !e.in.CompareAndSwap(false, true) {
		e.t.Error("Handle called concurrently")
	}
	if e.closes.Load() != 0 {
		e.t.Error("Handle called after Close")
	}
	switch {
	case string(m) == "close-me":
		e.c.Close(4000, "as asked")
	case string(m) == "spam":
		// Writes from another goroutine until they fail.
		go func() {
			for i := 0; i < 10000 && e.c.WriteText(make([]byte, 512)) == nil; i++ {
			}
		}()
	default:
		e.c.WriteText(m)
	}
	e.in.Store(false)
}

func (e *echo) Close() {
	if e.in.Load() {
		e.t.Error("Close called while Handle runs")
	}
	if e.closes.Add(1) != 1 {
		e.t.Error("Close called twice")
		return
	}
	close(e.closed)
}

// waitClosed waits for the handler's Close.
func (e *echo) waitClosed() {
	e.t.Helper()
	select {
	case <-e.closed:
	case <-time.After(waitFor):
		e.t.Fatal("Handler.Close not called")
	}
}

type server struct {
	url   string
	conns chan *echo
}

var modes = []struct {
	name string
	new  func(metaws.Config) *metaws.Loop
}{
	{"poll", metaws.New},
	{"goroutine", metaws.NewGoroutineLoop},
}

func start(t testing.TB, newLoop func(metaws.Config) *metaws.Loop, cfg metaws.Config) *server {
	return serve(t, newLoop(cfg), 100)
}

// serve serves l on a loopback port; up to backlog connections may wait to
// be taken with next.
func serve(t testing.TB, l *metaws.Loop, backlog int) *server {
	s := &server{conns: make(chan *echo, backlog)}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := l.Upgrade(w, r)
		if err != nil {
			return
		}
		e := &echo{t: t, c: c, closed: make(chan struct{})}
		s.conns <- e
		c.Start(e)
	}))
	t.Cleanup(hs.Close)
	s.url = "ws" + strings.TrimPrefix(hs.URL, "http")
	return s
}

func (s *server) next(t testing.TB) *echo {
	t.Helper()
	select {
	case e := <-s.conns:
		return e
	case <-time.After(waitFor):
		t.Fatal("no connection")
		return nil
	}
}

// raw dials with gobwas, for frames gorilla would refuse to send.
func raw(t testing.TB, url string) (net.Conn, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, br, _, err := ws.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitFor))
	if br == nil {
		br = bufio.NewReader(c)
	}
	return c, br
}

func gorilla(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(waitFor))
	return c
}

// readFrame reads one server frame, which must be unmasked.
func readFrame(t testing.TB, br *bufio.Reader) ws.Frame {
	t.Helper()
	f, err := ws.ReadFrame(br)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if f.Header.Masked {
		t.Fatal("server frame is masked")
	}
	return f
}

func closeCode(t testing.TB, f ws.Frame) ws.StatusCode {
	t.Helper()
	if f.Header.OpCode != ws.OpClose {
		t.Fatalf("want a close frame, got op %v %q", f.Header.OpCode, f.Payload)
	}
	code, _ := ws.ParseCloseFrameData(f.Payload)
	return code
}

func send(t testing.TB, c net.Conn, f ws.Frame) {
	t.Helper()
	if err := ws.WriteFrame(c, ws.MaskFrame(f)); err != nil {
		t.Fatal(err)
	}
}

func TestEcho(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := start(t, m.new, metaws.Config{})
			c := gorilla(t, s.url)
			e := s.next(t)
			for _, msg := range []string{"hello", "", strings.Repeat("x", 200), strings.Repeat("y", 60000)} {
				if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				typ, got, err := c.ReadMessage()
				if err != nil || typ != websocket.TextMessage || string(got) != msg {
					t.Fatalf("echo of %d bytes: %v %d bytes, %v", len(msg), typ, len(got), err)
				}
			}
			c.Close()
			e.waitClosed()
		})
	}
}

func TestFrames(t *testing.T) {
	cases := []struct {
		name   string
		frames []ws.Frame
		want   []string      // echoed messages, in order
		code   ws.StatusCode // close code expected after them; 0: none
	}{
		{"fragmented", []ws.Frame{
			ws.NewFrame(ws.OpText, false, []byte("he")),
			ws.NewPingFrame([]byte("p")), // control frames may interleave
			ws.NewFrame(ws.OpContinuation, false, []byte("l")),
			ws.NewFrame(ws.OpContinuation, true, []byte("lo")),
			ws.NewTextFrame([]byte("again")),
		}, []string{"pong:p", "hello", "again"}, 0},
		{"binary", []ws.Frame{ws.NewBinaryFrame([]byte("{}")), ws.NewTextFrame([]byte("ignored"))}, nil, ws.StatusUnsupportedData},
		{"too big", []ws.Frame{ws.NewTextFrame(make([]byte, 1001)), ws.NewTextFrame([]byte("ignored"))}, nil, ws.StatusMessageTooBig},
		{"too big in fragments", []ws.Frame{
			ws.NewFrame(ws.OpText, false, make([]byte, 600)),
			ws.NewFrame(ws.OpContinuation, true, make([]byte, 600)),
		}, nil, ws.StatusMessageTooBig},
		{"reserved bits", []ws.Frame{{Header: ws.Header{Fin: true, Rsv: ws.Rsv(true, false, false), OpCode: ws.OpText, Length: 2}, Payload: []byte("{}")}}, nil, ws.StatusProtocolError},
		{"reserved opcode", []ws.Frame{ws.NewFrame(ws.OpCode(3), true, []byte("x"))}, nil, ws.StatusProtocolError},
		{"continuation first", []ws.Frame{ws.NewFrame(ws.OpContinuation, true, []byte("x"))}, nil, ws.StatusProtocolError},
		{"text inside text", []ws.Frame{ws.NewFrame(ws.OpText, false, []byte("x")), ws.NewTextFrame([]byte("y"))}, nil, ws.StatusProtocolError},
		{"fragmented ping", []ws.Frame{ws.NewFrame(ws.OpPing, false, nil)}, nil, ws.StatusProtocolError},
		{"server close", []ws.Frame{ws.NewTextFrame([]byte("a")), ws.NewTextFrame([]byte("close-me")), ws.NewTextFrame([]byte("ignored"))}, []string{"a"}, 4000},
	}
	for _, m := range modes {
		for _, tc := range cases {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				s := start(t, m.new, metaws.Config{MaxMessageBytes: 1000, CloseGrace: 200 * time.Millisecond})
				c, br := raw(t, s.url)
				e := s.next(t)
				// One write: the frames arrive together and are handled
				// from one buffer.
				var buf []byte
				for _, f := range tc.frames {
					b, err := ws.CompileFrame(ws.MaskFrame(f))
					if err != nil {
						t.Fatal(err)
					}
					buf = append(buf, b...)
				}
				if _, err := c.Write(buf); err != nil {
					t.Fatal(err)
				}
				for _, want := range tc.want {
					f := readFrame(t, br)
					got := string(f.Payload)
					if f.Header.OpCode == ws.OpPong {
						got = "pong:" + got
					}
					if got != want {
						t.Fatalf("got op %v %q, want %q", f.Header.OpCode, got, want)
					}
				}
				if tc.code != 0 {
					if code := closeCode(t, readFrame(t, br)); code != tc.code {
						t.Fatalf("close code %d, want %d", code, tc.code)
					}
					// Nothing after the close frame; the server hangs up
					// once we do.
					if f, err := ws.ReadFrame(br); err == nil {
						t.Fatalf("frame after close: %v %q", f.Header.OpCode, f.Payload)
					}
					e.waitClosed()
					return
				}
				c.Close()
				e.waitClosed()
			})
		}
	}
}

// TestUnmasked: a client frame without a mask is a protocol error.
func TestUnmasked(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := start(t, m.new, metaws.Config{})
			c, br := raw(t, s.url)
			e := s.next(t)
			if err := ws.WriteFrame(c, ws.NewTextFrame([]byte("{}"))); err != nil {
				t.Fatal(err)
			}
			if code := closeCode(t, readFrame(t, br)); code != ws.StatusProtocolError {
				t.Fatalf("close code %d", code)
			}
			c.Close()
			e.waitClosed()
		})
	}
}

// TestSplitFrame: a frame that arrives in pieces is waited for.
func TestSplitFrame(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := start(t, m.new, metaws.Config{})
			c, br := raw(t, s.url)
			s.next(t)
			b, _ := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte("split across segments"))))
			for i := range b {
				// Byte by byte (no Nagle in Go): most bytes arrive alone.
				if _, err := c.Write(b[i : i+1]); err != nil {
					t.Fatal(err)
				}
			}
			if f := readFrame(t, br); string(f.Payload) != "split across segments" {
				t.Fatalf("%q", f.Payload)
			}
		})
	}
}

// TestPipelined: a frame sent with the handshake, before its response, is
// served.
func TestPipelined(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := start(t, m.new, metaws.Config{})
			c, err := net.Dial("tcp", strings.TrimPrefix(s.url, "ws://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitFor))
			req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
			b, _ := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte("early"))))
			if _, err := c.Write(append([]byte(req), b...)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("%v %v", resp, err)
			}
			if f := readFrame(t, br); string(f.Payload) != "early" {
				t.Fatalf("%q", f.Payload)
			}
		})
	}
}

// TestPeerClose: the peer's close frame is echoed and ends the connection.
func TestPeerClose(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := start(t, m.new, metaws.Config{})
			c, br := raw(t, s.url)
			e := s.next(t)
			send(t, c, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")))
			if code := closeCode(t, readFrame(t, br)); code != ws.StatusGoingAway {
				t.Fatalf("echoed code %d", code)
			}
			e.waitClosed()
		})
	}
}

// TestLiveness: a client that answers pings stays; one that does not is
// dropped after the idle timeout; one that never answers the server's close
// frame is dropped after the close grace.
func TestLiveness(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cfg := metaws.Config{PingInterval: 20 * time.Millisecond, IdleTimeout: 150 * time.Millisecond, CloseGrace: 100 * time.Millisecond}
			s := start(t, m.new, cfg)

			live := gorilla(t, s.url) // answers pings while it reads
			le := s.next(t)
			errc := make(chan error, 1)
			go func() {
				_, _, err := live.ReadMessage()
				errc <- err
			}()

			c, _ := raw(t, s.url) // never reads, never answers
			de := s.next(t)
			de.waitClosed()
			c.Close()

			select {
			case <-le.closed:
				t.Fatal("a live connection was dropped")
			case err := <-errc:
				t.Fatalf("live connection ended: %v", err)
			case <-time.After(4 * cfg.IdleTimeout):
			}

			le.c.Close(4001, "go away")
			le.waitClosed() // gorilla answers the close frame
			var ce *websocket.CloseError
			if err := <-errc; !errors.As(err, &ce) || ce.Code != 4001 {
				t.Fatalf("want close 4001, got %v", err)
			}

			// A peer that ignores the close frame.
			c2, _ := raw(t, s.url)
			e2 := s.next(t)
			e2.c.Close(4002, "")
			e2.waitClosed()
			c2.Close()
		})
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			s := start(b, m.new, metaws.Config{})
			c := gorilla(b, s.url)
			c.SetReadDeadline(time.Time{})
			msg := []byte(`{"type":"peers-online","user":"alice","tx":1}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := c.ReadMessage(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
