package server_test

import (
	"testing"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
)

// BenchmarkMetaRoundTrip is the request/response latency of one /meta
// connection: send peers-online, wait for its response, b.N times.
func BenchmarkMetaRoundTrip(b *testing.B) {
	s := servertest.Start(b, &servertest.Options{Configure: func(c *server.Config) {
		c.Meta.RateLimit = 1e9
		c.Meta.RateBurst = 1e9
	}})
	register(b, s, "alice")
	// A raw connection: the test helper's read goroutine would add a hop to
	// every round trip.
	c, _, err := websocket.DefaultDialer.Dial(s.MetaURL, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"whoami","user":"alice","password":"`+pw+`","tx":0}`)); err != nil {
		b.Fatal(err)
	}
	if _, _, err := c.ReadMessage(); err != nil {
		b.Fatal(err)
	}
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
}
