package server_test

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
)

// rawMeta opens /meta with a frame-level client, for frames a correct
// client never sends.
func rawMeta(t *testing.T, s *servertest.Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, br, _, err := ws.Dial(ctx, s.MetaURL)
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

// closeCodeOf reads server frames until a close frame and returns its code
// (0: the server hung up without one).
func closeCodeOf(t *testing.T, br *bufio.Reader) int {
	t.Helper()
	for {
		f, err := ws.ReadFrame(br)
		if err != nil {
			return 0
		}
		if f.Header.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(f.Payload)
			return int(code)
		}
	}
}

// TestMetaFraming is issue 9 W16 and W5 through the whole server: /meta
// answers invalid UTF-8 with 1007, a peer's invalid close code or 1-byte
// close payload with 1002 (never echoing it), and closes a frame left
// unfinished past the frame deadline with 1008.
func TestMetaFraming(t *testing.T) {
	frame := func(op ws.OpCode, p []byte) []byte {
		b, err := ws.CompileFrame(ws.MaskFrame(ws.NewFrame(op, true, p)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		in   []byte
		code int
	}{
		{"invalid UTF-8", frame(ws.OpText, []byte("{\"type\":\"\xff\"}")), 1007},
		{"close code 999", frame(ws.OpClose, []byte{0x03, 0xe7}), 1002},
		{"1-byte close payload", frame(ws.OpClose, []byte{0x03}), 1002},
		{"binary", frame(ws.OpBinary, []byte("{}")), 1003},
		{"unfinished frame", []byte{0x81, 0x80 | 126, 0xea, 0x60, 1, 2, 3, 4}, 1008},
	}
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.FrameTimeout = 200 * time.Millisecond
	}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawMeta(t, s)
			if _, err := c.Write(tc.in); err != nil {
				t.Fatal(err)
			}
			if code := closeCodeOf(t, br); code != tc.code {
				t.Fatalf("close code %d, want %d", code, tc.code)
			}
		})
	}
}
