package server_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
)

// rawUpgrade opens a WebSocket on path from source address src with no
// client library (so that the client side costs next to nothing) and
// returns the connection after the 101, or the status it got instead.
func rawUpgrade(t testing.TB, src, addr, path string) (net.Conn, int) {
	t.Helper()
	d := net.Dialer{Timeout: waitFor, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitFor))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 512), nil)
	if err != nil {
		return c, 0 // closed before any response: refused at accept
	}
	c.SetDeadline(time.Time{})
	return c, resp.StatusCode
}

// BenchmarkMediaPreTicket measures what a /media connection that never
// presents its ticket costs the server: heap and goroutines per
// connection, 1,000 of them. Run with -bench MediaPreTicket -benchtime 1x.
//
// Measured (2-core test machine): with gorilla's own 32 KiB read buffer per
// connection ~45 KB heap/conn; reusing net/http's 4 KiB reader ~14 KB
// (docs/security.md).
func BenchmarkMediaPreTicket(b *testing.B) {
	s := servertest.Start(b, &servertest.Options{Configure: func(c *server.Config) {
		c.MaxConnsPerAddr = -1
		c.Media.HelloTimeout = time.Minute
	}})
	addr := strings.TrimPrefix(s.URL, "http://")
	const n = 1000
	for b.Loop() {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		h0, g0 := ms.HeapInuse, runtime.NumGoroutine()
		conns := make([]net.Conn, 0, n)
		for range n {
			c, code := rawUpgrade(b, "127.0.0.1", addr, "/media")
			if code != http.StatusSwitchingProtocols {
				b.Fatalf("upgrade: status %d", code)
			}
			conns = append(conns, c)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(int64(ms.HeapInuse)-int64(h0))/n, "heap-B/conn")
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/conn")
		for _, c := range conns {
			c.Close()
		}
	}
}
