package metaws_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/user-media-plug/umplug/internal/server/metaws"
)

// recorder keeps a connection's messages.
type recorder struct {
	mu     sync.Mutex // guards msgs
	msgs   []string
	closed chan struct{}
}

func (r *recorder) Handle(m []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, string(m))
	r.mu.Unlock()
}

func (r *recorder) Close() { close(r.closed) }

// reference decodes a client byte stream as the transport must: the
// messages it may deliver, in order, and whether it must deliver all of
// them (the stream ended cleanly: no violation, no close frame, nothing
// unfinished).
func reference(in []byte, max int) (msgs []string, all bool) {
	var msg []byte
	inMsg := false
	for len(in) > 0 {
		if len(in) < 2 {
			return msgs, false
		}
		b0, b1 := in[0], in[1]
		fin, rsv, op, masked := b0&0x80 != 0, b0&0x70, b0&0x0f, b1&0x80 != 0
		hl := 2
		var n uint64
		switch l := b1 & 0x7f; l {
		case 126:
			hl += 2
		case 127:
			hl += 8
		default:
			n = uint64(l)
		}
		if masked {
			hl += 4
		}
		if len(in) < hl {
			return msgs, false
		}
		switch b1 & 0x7f {
		case 126:
			n = uint64(in[2])<<8 | uint64(in[3])
		case 127:
			for _, x := range in[2:10] {
				n = n<<8 | uint64(x)
			}
		}
		switch {
		case rsv != 0, !masked, n>>63 != 0:
			return msgs, false
		case op >= 8 && (op > 10 || !fin || n > 125 || op == 8 && n == 1):
			return msgs, false
		case op == 0 && !inMsg, (op == 1 || op == 2) && inMsg, op > 2 && op < 8:
			return msgs, false
		case op == 2:
			return msgs, false // 1003
		case op < 8 && uint64(len(msg))+n > uint64(max):
			return msgs, false // 1009
		}
		if uint64(len(in)-hl) < n {
			return msgs, false
		}
		p := bytes.Clone(in[hl : hl+int(n)])
		ws.Cipher(p, [4]byte(in[hl-4:hl]), 0)
		in = in[hl+int(n):]
		switch op {
		case 8:
			return msgs, false
		case 9, 10:
			continue
		}
		msg = append(msg, p...)
		inMsg = !fin
		if fin {
			if !utf8.Valid(msg) {
				return msgs, false // 1007
			}
			msgs = append(msgs, string(msg))
			msg = msg[:0]
		}
	}
	return msgs, !inMsg
}

// validClose reports whether a server may send code (RFC 6455 7.4, IANA
// registry: 1012-1014 were added later).
func validClose(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

func fuzzSeeds(t testing.TB) [][]byte {
	return [][]byte{
		frame(t, ws.OpText, true, []byte(`{"type":"whoami","tx":1}`)),
		cat(frame(t, ws.OpText, false, []byte("he")), frame(t, ws.OpPing, true, []byte("p")), frame(t, ws.OpContinuation, true, []byte("llo"))),
		cat(frame(t, ws.OpText, true, []byte("a")), frame(t, ws.OpClose, true, closePayload(1000, "bye"))),
		frame(t, ws.OpText, true, make([]byte, 300)),
		frame(t, ws.OpBinary, true, []byte{1, 2}),
		frame(t, ws.OpText, true, []byte("a\xffb")),
		frame(t, ws.OpClose, true, closePayload(999, "")),
		frame(t, ws.OpClose, true, []byte{3}),
		{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4},
		{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'},
		{0x81, 0x80 | 126, 0xea, 0x60, 1, 2, 3, 4},
	}
}

// FuzzTransport feeds raw client byte streams to a live connection: the
// transport must not panic, must deliver exactly the complete, valid text
// messages a correct decoder finds (a prefix of them when the stream is
// refused or ends early), must send only well-formed unmasked frames, and
// must end the connection, with a valid close code if it sends one.
func FuzzTransport(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	const max = 1000
	l := metaws.New(metaws.Config{MaxMessageBytes: max, CloseGrace: 100 * time.Millisecond, FrameTimeout: 2 * time.Second})
	recs := make(chan *recorder, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := l.Upgrade(w, r)
		if err != nil {
			return
		}
		rec := &recorder{closed: make(chan struct{})}
		// Started before the client writes: input before Start is kept,
		// but a peer that hangs up before Start ends with nothing handled.
		c.Start(rec)
		recs <- rec
	}))
	defer hs.Close()
	url := "ws" + strings.TrimPrefix(hs.URL, "http")

	f.Fuzz(func(t *testing.T, in []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		c, br, _, err := ws.Dial(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitFor))
		if br == nil {
			br = bufioReader(c)
		}
		var rec *recorder
		select {
		case rec = <-recs:
		case <-ctx.Done():
			t.Fatal("no connection")
		}
		if _, err := c.Write(in); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()

		// Everything the server sends until it hangs up.
		for {
			f, err := ws.ReadFrame(br)
			if err != nil {
				break
			}
			h := f.Header
			if h.Masked || !h.Fin || h.Rsv != 0 {
				t.Fatalf("bad server frame header %+v", h)
			}
			switch h.OpCode {
			case ws.OpText, ws.OpPing, ws.OpPong:
			case ws.OpClose:
				if len(f.Payload) == 1 {
					t.Fatal("close payload of one byte")
				}
				if len(f.Payload) >= 2 {
					if code, _ := ws.ParseCloseFrameData(f.Payload); !validClose(int(code)) {
						t.Fatalf("close code %d", code)
					}
				}
			default:
				t.Fatalf("server sent op %v", h.OpCode)
			}
		}
		select {
		case <-rec.closed:
		case <-ctx.Done():
			t.Fatal("Handler.Close not called")
		}
		rec.mu.Lock()
		got := rec.msgs
		rec.mu.Unlock()
		want, all := reference(in, max)
		if len(got) > len(want) || fmt.Sprint(got) != fmt.Sprint(want[:len(got)]) {
			t.Fatalf("delivered %q, decoder allows %q", got, want)
		}
		if all && len(got) != len(want) {
			t.Fatalf("delivered %q, want all of %q", got, want)
		}
	})
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
