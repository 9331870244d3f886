package metaws_test

import (
	"bufio"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/user-media-plug/umplug/internal/server/metaws"
)

// frame is one masked client frame.
func frame(t testing.TB, op ws.OpCode, fin bool, p []byte) []byte {
	t.Helper()
	b, err := ws.CompileFrame(ws.MaskFrame(ws.NewFrame(op, fin, p)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func closePayload(code int, reason string) []byte {
	return append([]byte{byte(code >> 8), byte(code)}, reason...)
}

// readUntilClose reads server frames, answering nothing, and returns the
// text payloads before the close frame and the close code (0: the server
// hung up without a close frame; 1005: an empty close frame).
func readUntilClose(t testing.TB, br *bufio.Reader) (texts []string, code int) {
	t.Helper()
	for {
		f, err := ws.ReadFrame(br)
		if err != nil {
			return texts, 0
		}
		if f.Header.Masked {
			t.Fatal("server frame is masked")
		}
		switch f.Header.OpCode {
		case ws.OpText:
			texts = append(texts, string(f.Payload))
		case ws.OpClose:
			if len(f.Payload) == 0 {
				return texts, 1005
			}
			c, _ := ws.ParseCloseFrameData(f.Payload)
			return texts, int(c)
		}
	}
}

// TestConformance covers RFC 6455 close codes the contract relies on
// (issue 9 W16): 1007 for invalid UTF-8, a peer's invalid close code or
// 1-byte close payload answered 1002 and never echoed, unmasked frames and
// impossible lengths refused with 1002.
func TestConformance(t *testing.T) {
	unmasked, _ := ws.CompileFrame(ws.NewTextFrame([]byte("{}")))
	// FIN+text, masked, 64-bit length with the top bit set.
	topBit := []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}
	cases := []struct {
		name  string
		input func(t testing.TB) []byte
		want  []string
		code  int // close code the server sends after them
	}{
		{"invalid utf-8", func(t testing.TB) []byte {
			return cat(frame(t, ws.OpText, true, []byte("ok")), frame(t, ws.OpText, true, []byte("a\xffb")), frame(t, ws.OpText, true, []byte("ignored")))
		}, []string{"ok"}, 1007},
		{"invalid utf-8 across fragments", func(t testing.TB) []byte {
			return cat(frame(t, ws.OpText, false, []byte("\xe2\x82")), frame(t, ws.OpContinuation, true, []byte("\xe2")))
		}, nil, 1007},
		{"utf-8 split across fragments", func(t testing.TB) []byte {
			return cat(frame(t, ws.OpText, false, []byte("\xe2\x82")), frame(t, ws.OpContinuation, true, []byte("\xac")), frame(t, ws.OpClose, true, closePayload(1000, "")))
		}, []string{"€"}, 1000},
		{"close code 999", func(t testing.TB) []byte { return frame(t, ws.OpClose, true, closePayload(999, "")) }, nil, 1002},
		{"close code 1005 sent", func(t testing.TB) []byte { return frame(t, ws.OpClose, true, closePayload(1005, "")) }, nil, 1002},
		{"close code 1015 sent", func(t testing.TB) []byte { return frame(t, ws.OpClose, true, closePayload(1015, "")) }, nil, 1002},
		{"close payload of one byte", func(t testing.TB) []byte { return frame(t, ws.OpClose, true, []byte{3}) }, nil, 1002},
		{"close reason invalid utf-8", func(t testing.TB) []byte { return frame(t, ws.OpClose, true, closePayload(1000, "\xff")) }, nil, 1007},
		{"close 4000 echoed", func(t testing.TB) []byte { return frame(t, ws.OpClose, true, closePayload(4000, "bye")) }, nil, 4000},
		{"empty close answered empty", func(t testing.TB) []byte { return frame(t, ws.OpClose, true, nil) }, nil, 1005},
		{"close inside a fragmented message", func(t testing.TB) []byte {
			return cat(frame(t, ws.OpText, false, []byte("a")), frame(t, ws.OpClose, true, closePayload(1001, "")))
		}, nil, 1001},
		{"unmasked", func(t testing.TB) []byte { return cat(frame(t, ws.OpText, true, []byte("ok")), unmasked) }, []string{"ok"}, 1002},
		{"64-bit length top bit", func(t testing.TB) []byte { return topBit }, nil, 1002},
		{"ping too long", func(t testing.TB) []byte { return frame(t, ws.OpPing, true, make([]byte, 126)) }, nil, 1002},
		{"empty message", func(t testing.TB) []byte {
			return cat(frame(t, ws.OpText, true, nil), frame(t, ws.OpText, false, nil), frame(t, ws.OpContinuation, true, nil), frame(t, ws.OpClose, true, closePayload(1000, "")))
		}, []string{"", ""}, 1000},
	}
	for _, m := range modes {
		for _, tc := range cases {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				s := start(t, m.new, metaws.Config{CloseGrace: 200 * time.Millisecond})
				c, br := raw(t, s.url)
				e := s.next(t)
				if _, err := c.Write(tc.input(t)); err != nil {
					t.Fatal(err)
				}
				texts, code := readUntilClose(t, br)
				if strings.Join(texts, "|") != strings.Join(tc.want, "|") || len(texts) != len(tc.want) {
					t.Fatalf("echoed %q, want %q", texts, tc.want)
				}
				if code != tc.code {
					t.Fatalf("close code %d, want %d", code, tc.code)
				}
				if f, err := ws.ReadFrame(br); err == nil {
					t.Fatalf("frame after close: %v %q", f.Header.OpCode, f.Payload)
				}
				e.waitClosed()
			})
		}
	}
}

// dialRaw opens n upgraded connections and takes their server sides.
func dialRaw(t *testing.T, s *server, n int) ([]net.Conn, []*bufio.Reader, []*echo) {
	t.Helper()
	cs := make([]net.Conn, n)
	brs := make([]*bufio.Reader, n)
	es := make([]*echo, n)
	for i := range n {
		cs[i], brs[i] = raw(t, s.url)
		es[i] = s.next(t)
	}
	return cs, brs, es
}

// waitGoroutines waits until at most max goroutines run (net/http's
// goroutines of upgraded connections end after their handlers return).
func waitGoroutines(t *testing.T, max int) int {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		n := runtime.NumGoroutine()
		if n <= max || time.Now().After(deadline) {
			return n
		}
		<-tick.C
	}
}

func heapAlloc() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestPartialFrames (issue 8 item 3, issue 9 W5): 1,000 connections that
// each send the start of a frame (one header byte, or a header declaring
// 60 KB) add no goroutine and only the bytes they sent, and are closed with
// 1008 at the frame deadline.
func TestPartialFrames(t *testing.T) {
	const n = 1000
	cases := []struct {
		name string
		head []byte
	}{
		{"one header byte", []byte{0x81}},
		{"header declaring 60 KB", []byte{0x81, 0x80 | 126, 0xea, 0x60, 1, 2, 3, 4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The frame deadline outlasts the workers' idle time (1 s): the
			// goroutine count is taken while every partial frame waits.
			cfg := metaws.Config{FrameTimeout: 3 * time.Second, CloseGrace: 100 * time.Millisecond}
			l := metaws.New(cfg)
			partial := make(chan bool, 2*n)
			l.OnPartial(func(p bool) { partial <- p })
			s := serve(t, l, n)
			base := runtime.NumGoroutine()
			cs, brs, es := dialRaw(t, s, n)
			// Idle upgraded connections hold no goroutine either, once
			// net/http's handler goroutines have returned.
			g0 := waitGoroutines(t, base+10)
			if g0 > base+10 {
				t.Errorf("%d idle connections hold %d goroutines", n, g0-base)
			}
			h0 := heapAlloc()
			t0 := time.Now()
			for _, c := range cs {
				if _, err := c.Write(tc.head); err != nil {
					t.Fatal(err)
				}
			}
			for range n {
				select {
				case p := <-partial:
					if !p {
						t.Fatal("a partial frame ended")
					}
				case <-time.After(waitFor):
					t.Fatal("not every partial frame was seen")
				}
			}
			// Workers that read the bytes exit once idle; nothing waits on
			// a partial frame.
			g1 := waitGoroutines(t, g0+10)
			h1 := heapAlloc()
			for i, e := range es {
				select {
				case <-e.closed:
					t.Fatalf("connection %d closed before the frame deadline", i)
				default:
				}
			}
			t.Logf("%d partial frames: %+d goroutines, %+d bytes of heap", n, g1-g0, h1-h0)
			if g1-g0 > 10 {
				t.Errorf("%d partial frames added %d goroutines", n, g1-g0)
			}
			if h1-h0 > 1<<20 {
				t.Errorf("%d partial frames took %d bytes of heap", n, h1-h0)
			}

			for _, e := range es {
				e.waitClosed()
			}
			if d := time.Since(t0); d < cfg.FrameTimeout {
				t.Errorf("closed after %v, before the frame deadline", d)
			}
			for i, br := range brs {
				if _, code := readUntilClose(t, br); code != 1008 {
					t.Fatalf("connection %d: close code %d, want 1008", i, code)
				}
			}
		})
	}
}

// TestFragmentKeptAlive: answering pings does not keep an unfinished
// fragmented message alive past the frame deadline (W5: it held ~50 KB per
// connection indefinitely).
func TestFragmentKeptAlive(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cfg := metaws.Config{PingInterval: 20 * time.Millisecond, IdleTimeout: 150 * time.Millisecond,
				FrameTimeout: 300 * time.Millisecond, CloseGrace: 100 * time.Millisecond}
			s := start(t, m.new, cfg)
			c, br := raw(t, s.url)
			e := s.next(t)
			t0 := time.Now()
			if _, err := c.Write(frame(t, ws.OpText, false, make([]byte, 1000))); err != nil {
				t.Fatal(err)
			}
			pongs := 0
			for {
				f, err := ws.ReadFrame(br)
				if err != nil {
					t.Fatalf("no close frame: %v", err)
				}
				if f.Header.OpCode == ws.OpPing {
					send(t, c, ws.NewPongFrame(f.Payload))
					pongs++
					continue
				}
				if code := closeCode(t, f); code != 1008 {
					t.Fatalf("close code %d", code)
				}
				break
			}
			if d := time.Since(t0); d < cfg.FrameTimeout {
				t.Fatalf("closed after %v", d)
			}
			if pongs < 2 {
				t.Fatalf("only %d pings answered: the test did not keep the connection alive", pongs)
			}
			e.waitClosed()
		})
	}
}

// TestSlowBytes: a client that sends one byte at a time, each well within
// the idle timeout, is not dropped for idleness, but is closed with 1008 at
// the frame deadline when the bytes never complete a frame (slow loris).
func TestSlowBytes(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cfg := metaws.Config{PingInterval: 30 * time.Millisecond, IdleTimeout: 200 * time.Millisecond,
				FrameTimeout: 600 * time.Millisecond, CloseGrace: 100 * time.Millisecond}
			s := start(t, m.new, cfg)
			c, br := raw(t, s.url)
			e := s.next(t)
			b := frame(t, ws.OpText, true, make([]byte, 100))
			stop := make(chan struct{})
			done := make(chan struct{})
			t0 := time.Now()
			go func() {
				defer close(done)
				tick := time.NewTicker(40 * time.Millisecond)
				defer tick.Stop()
				for i := 0; i < len(b); i++ {
					if _, err := c.Write(b[i : i+1]); err != nil {
						return
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			_, code := readUntilClose(t, br)
			close(stop)
			<-done
			if code != 1008 {
				t.Fatalf("close code %d, want 1008 (0: dropped as idle)", code)
			}
			if d := time.Since(t0); d < cfg.FrameTimeout {
				t.Fatalf("closed after %v", d)
			}
			e.waitClosed()
		})
	}
}

// TestSlowCompleteFrames: frames that each complete within the frame
// deadline keep the connection open, even when every read ends inside the
// next frame and the whole exchange lasts longer than the deadline.
func TestSlowCompleteFrames(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cfg := metaws.Config{FrameTimeout: 300 * time.Millisecond, IdleTimeout: 2 * time.Second}
			s := start(t, m.new, cfg)
			c, br := raw(t, s.url)
			s.next(t)
			const k = 12
			var all []byte
			var starts []int
			for i := range k {
				starts = append(starts, len(all))
				all = append(all, frame(t, ws.OpText, true, []byte(strings.Repeat("m", i+1)))...)
			}
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			t0 := time.Now()
			from := 0
			for i := 1; i <= k; i++ {
				to := len(all)
				if i < k {
					to = starts[i] + 3 // three bytes into the next frame
				}
				if _, err := c.Write(all[from:to]); err != nil {
					t.Fatal(err)
				}
				from = to
				<-tick.C
			}
			if d := time.Since(t0); d < 2*cfg.FrameTimeout {
				t.Fatalf("the exchange took only %v", d)
			}
			for i := range k {
				f := readFrame(t, br)
				if f.Header.OpCode != ws.OpText || string(f.Payload) != strings.Repeat("m", i+1) {
					t.Fatalf("frame %d: %v %q", i, f.Header.OpCode, f.Payload)
				}
			}
		})
	}
}

// TestSlowConsumer: writes to a client that does not read never block; once
// MaxWriteBufferBytes are pending the connection is closed (1008) and
// writes fail with ErrSlowConsumer.
func TestSlowConsumer(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cfg := metaws.Config{MaxWriteBufferBytes: 64 << 10, CloseGrace: 100 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}
			s := start(t, m.new, cfg)
			raw(t, s.url) // never reads
			e := s.next(t)
			msg := make([]byte, 1024)
			var err error
			for i := 0; i < 200_000 && err == nil; i++ {
				err = e.c.WriteText(msg)
			}
			if !errors.Is(err, metaws.ErrSlowConsumer) {
				t.Fatalf("write error %v, want ErrSlowConsumer", err)
			}
			if q := e.c.Queued(); q > cfg.MaxWriteBufferBytes+256 {
				t.Errorf("%d bytes queued, limit %d", q, cfg.MaxWriteBufferBytes)
			}
			e.c.Close(4000, "again") // no effect, no wait
			if err := e.c.WriteText(msg); !errors.Is(err, metaws.ErrClosed) {
				t.Fatalf("write after close: %v", err)
			}
			e.waitClosed()
		})
	}
}
