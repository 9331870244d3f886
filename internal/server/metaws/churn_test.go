package metaws_test

import (
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/gobwas/ws"

	"github.com/user-media-plug/umplug/internal/server/metaws"
)

// TestChurn: connections that come and go in parallel, closed by either
// side or reset while the server writes to them, never disturb a fresh
// connection. The kernel reuses a closed fd number at once; an epoll event
// of the old socket must not reach the new one (nbio 1.6.8 let it: the
// write error closed the socket off its poller goroutine).
func TestChurn(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := start(t, m.new, metaws.Config{})
			go func() {
				for e := range s.conns {
					_ = e
				}
			}()
			const workers, rounds = 8, 150
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range rounds {
						c, br := raw(t, s.url)
						msg := []byte(fmt.Sprint("w", w, "r", i))
						if err := ws.WriteFrame(c, ws.MaskFrame(ws.NewTextFrame(msg))); err != nil {
							errs <- fmt.Errorf("round %d: write: %w", i, err)
							return
						}
						f, err := ws.ReadFrame(br)
						if err != nil || string(f.Payload) != string(msg) {
							errs <- fmt.Errorf("worker %d round %d: echo %q, %v", w, i, f.Payload, err)
							return
						}
						switch i % 4 {
						case 0: // close handshake started by the client
							ws.WriteFrame(c, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, ""))))
							ws.ReadFrame(br)
						case 1: // the server closes
							ws.WriteFrame(c, ws.MaskFrame(ws.NewTextFrame([]byte("close-me"))))
						case 2: // the client resets while the server writes from another goroutine
							ws.WriteFrame(c, ws.MaskFrame(ws.NewTextFrame([]byte("spam"))))
							ws.ReadFrame(br)
							c.(*net.TCPConn).SetLinger(0)
						}
						c.Close()
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
