package server_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/internal/meta"
	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

func TestOrigin(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.AllowedOrigins = []string{"https://app.example"}
	}})
	host := strings.TrimPrefix(s.URL, "http://")
	cases := []struct {
		origin string
		want   int
	}{
		{"", http.StatusSwitchingProtocols},
		{"http://" + host, http.StatusSwitchingProtocols},
		{"https://app.example", http.StatusSwitchingProtocols},
		{"https://evil.example", http.StatusForbidden},
		{"http://127.0.0.1.evil.example", http.StatusForbidden},
		{"null", http.StatusForbidden},
	}
	for _, path := range []string{"/meta", "/media"} {
		for _, tc := range cases {
			t.Run(path+" "+tc.origin, func(t *testing.T) {
				hdr := http.Header{}
				if tc.origin != "" {
					hdr.Set("Origin", tc.origin)
				}
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				c, resp, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+host+path, hdr)
				if c != nil {
					c.Close()
				}
				if resp == nil {
					t.Fatalf("no response: %v", err)
				}
				if resp.StatusCode != tc.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
				}
			})
		}
	}
}

func TestOversizeFrame(t *testing.T) {
	s := servertest.Start(t, nil)
	w := dial(t, s, nil)
	big := `{"type":"status","user":"x","status":"` + strings.Repeat("a", protocol.MaxFrameBytes) + `","tx":1}`
	w.sendRaw(big)
	err := w.closeErr()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("want close 1009, got %v", err)
	}
	// Everyone else is still served.
	w2 := dial(t, s, nil)
	w2.ok(map[string]any{"type": "reg-user", "user": "alice", "password": pw})
}

func TestBinaryFrameOnMeta(t *testing.T) {
	s := servertest.Start(t, nil)
	w := dial(t, s, nil)
	if err := w.c.WriteMessage(websocket.BinaryMessage, []byte(`{"type":"peers"}`)); err != nil {
		t.Fatal(err)
	}
	err := w.closeErr()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseUnsupportedData {
		t.Fatalf("want close 1003, got %v", err)
	}
}

// TestPasswordNeverLeaks: the clear password appears in no stored value, no
// log line and no frame any client receives.
func TestPasswordNeverLeaks(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := servertest.Start(t, &servertest.Options{Logger: logger})
	const secret = "s3cret-Pa55word-zebra"
	w := dial(t, s, nil)
	var seen []string
	seen = append(seen, w.req(map[string]any{"type": "reg-user", "user": "alice", "password": secret}).raw)
	seen = append(seen, w.req(map[string]any{"type": "reg-user", "user": "alice", "password": secret}).raw)
	seen = append(seen, w.req(map[string]any{"type": "whoami", "user": "alice", "password": "wrong" + secret}).raw)
	seen = append(seen, w.req(map[string]any{"type": "whoami", "user": "nobody", "password": secret}).raw)
	seen = append(seen, w.req(map[string]any{"type": "whoami", "user": "alice", "password": secret}).raw)
	seen = append(seen, w.req(map[string]any{"type": "peers", "user": "alice"}).raw)
	u, err := s.Store.Get(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u.Password, "$argon2id$v=19$") {
		t.Fatalf("stored password is not an argon2id PHC string: %q", u.Password)
	}
	seen = append(seen, u.Password, logs.String())
	for _, s := range seen {
		if strings.Contains(s, secret) {
			t.Fatalf("password leaked into %q", s)
		}
	}
	if !strings.Contains(logs.String(), "user registered") {
		t.Fatal("the log capture saw nothing: the check above proves nothing")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTLS: behind TLS (umplug serve -tls-cert/-tls-key) /meta is served by
// metaws's goroutine-per-connection mode, since net/http's TLS connection
// cannot move to nbio's poller; the protocol is the same.
func TestTLS(t *testing.T) {
	st := store.NewMemory()
	srv, err := server.New(server.Config{Meta: meta.Config{Store: st, Hasher: cheapHasher()}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewTLSServer(srv.Handler())
	defer hs.Close()
	defer srv.Shutdown(context.Background())
	d := websocket.Dialer{TLSClientConfig: hs.Client().Transport.(*http.Transport).TLSClientConfig}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, _, err := d.DialContext(ctx, "wss"+strings.TrimPrefix(hs.URL, "https")+"/meta", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(waitFor))
	c.WriteMessage(websocket.TextMessage, []byte(`{"type":"reg-user","user":"alice","password":"`+pw+`","tx":1}`))
	c.WriteMessage(websocket.TextMessage, []byte(`{"type":"whoami","user":"alice","password":"`+pw+`","tx":2}`))
	for _, want := range []string{`"for":"reg-user","tx":1,"ok":true`, `"for":"whoami","tx":2,"ok":true`} {
		_, m, err := c.ReadMessage()
		if err != nil || !strings.Contains(string(m), want) {
			t.Fatalf("got %s, %v; want %s", m, err, want)
		}
	}
}
