package server_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/internal/store"
)

// gateStore holds the first Get of one user name until released, once
// armed: a store (or a hashing queue) that makes one request slow.
type gateStore struct {
	store.Store
	mu      sync.Mutex
	name    string
	held    chan struct{}
	release chan struct{}
}

func (g *gateStore) arm(name string) (held, release chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.name, g.held, g.release = name, make(chan struct{}), make(chan struct{})
	return g.held, g.release
}

func (g *gateStore) Get(ctx context.Context, name string) (store.User, error) {
	g.mu.Lock()
	hold := g.name != "" && g.name == name
	var held, release chan struct{}
	if hold {
		held, release = g.held, g.release
		g.name = "" // only the first
	}
	g.mu.Unlock()
	if hold {
		close(held)
		<-release
	}
	return g.Store.Get(ctx, name)
}

// TestSlowWhoamiOutlivesIdleTimeout: a whoami that waits (here in the
// store; in production for a hashing slot) longer than the idle timeout
// still succeeds, because the connection keeps reading pongs meanwhile.
// Before handling moved off the read path, the idle check killed the
// connection after its password work was spent.
func TestSlowWhoamiOutlivesIdleTimeout(t *testing.T) {
	gs := &gateStore{Store: store.NewMemory()}
	s := servertest.Start(t, &servertest.Options{Store: gs, Configure: func(c *server.Config) {
		c.PingInterval = 50 * time.Millisecond
		c.IdleTimeout = 300 * time.Millisecond
	}})
	register(t, s, "slowpoke")
	held, release := gs.arm("slowpoke")

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, _, err := websocket.DefaultDialer.DialContext(ctx, s.MetaURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var pings atomic.Int32
	enough := make(chan struct{})
	c.SetPingHandler(func(data string) error {
		if pings.Add(1) == 12 { // 12 × 50 ms: twice the idle timeout
			close(enough)
		}
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	frames := make(chan []byte, 4)
	go func() {
		defer close(frames)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			frames <- b
		}
	}()
	if err := c.WriteMessage(websocket.TextMessage,
		[]byte(`{"type":"whoami","user":"slowpoke","password":"`+pw+`","tx":7}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(waitFor):
		t.Fatal("whoami never reached the store")
	}
	select {
	case <-enough:
	case b, ok := <-frames:
		t.Fatalf("while whoami waited: frame %q (open %v)", b, ok)
	case <-time.After(waitFor):
		t.Fatal("no pings while whoami waited")
	}
	close(release)
	select {
	case b, ok := <-frames:
		if !ok || !contains(string(b), `"ok":true`) || !contains(string(b), `"tx":7`) {
			t.Fatalf("whoami answer %q (open %v), want ok", b, ok)
		}
	case <-time.After(waitFor):
		t.Fatal("no whoami answer")
	}
}

// TestNonDrainingConsumerDoesNotDelayOthers: a device that never reads is
// disconnected once its queue is full, and meanwhile another connection's
// requests are answered promptly: the close is never written under a lock
// that others need. The bound is generous (1 s against the ~2 s close grace
// a synchronous close would cost); normal answers take milliseconds.
func TestNonDrainingConsumerDoesNotDelayOthers(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.Meta.MaxQueueBytes = 256 << 10
		c.Meta.RateLimit = -1
	}})
	const npeers = 1000
	names := make([]string, npeers)
	for i := range names {
		names[i] = fmt.Sprintf("peer-%04d", i)
		createDirect(t, s, names[i])
	}
	createDirect(t, s, "slow", names...)
	mutual(t, s, "alice", "bob")
	probe := login(t, s, "alice")

	// The slow device: a small receive buffer, and it never reads.
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4 << 10)
		}
		return c, err
	}}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	slow, _, err := d.DialContext(ctx, s.MetaURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.WriteMessage(websocket.TextMessage, []byte(`{"type":"whoami","user":"slow","password":"`+pw+`","tx":0}`))
	eventually(t, func() bool { return s.Server.Meta().Devices("slow") == 1 })

	stop := make(chan struct{})
	var worst time.Duration
	probed := make(chan int)
	go func() {
		n := 0
		defer func() { probed <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			probe.ok(map[string]any{"type": "peers-online", "user": "alice"})
			if d := time.Since(start); d > worst {
				worst = d
			}
			n++
		}
	}()
	// Each peers answer is ~50 KB; the slow device never reads them.
	for i := 0; i < 1000 && s.Server.Meta().Devices("slow") == 1; i++ {
		slow.SetWriteDeadline(time.Now().Add(waitFor))
		if err := slow.WriteMessage(websocket.TextMessage, []byte(`{"type":"peers","user":"slow","tx":1}`)); err != nil {
			break // cut off already
		}
	}
	eventually(t, func() bool { return s.Server.Meta().Devices("slow") == 0 })
	close(stop)
	if n := <-probed; n == 0 {
		t.Fatal("no probe request completed")
	}
	if worst > time.Second {
		t.Fatalf("another connection's request took %v while the slow consumer was cut", worst)
	}
	t.Logf("worst probe latency %v", worst)
}

// TestShutdownDuringMediaUpgrades: /media upgrades keep arriving while the
// server shuts down. Run with -race: the server must not count media
// connections with a WaitGroup that Shutdown waits on while upgrades still
// Add to it, and every connection ends.
func TestShutdownDuringMediaUpgrades(t *testing.T) {
	s := servertest.Start(t, nil)
	mediaURL := "ws" + s.URL[len("http"):] + "/media"
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				c, _, err := websocket.DefaultDialer.DialContext(ctx, mediaURL, nil)
				cancel()
				if err != nil {
					continue // refused once shutting down
				}
				c.WriteMessage(websocket.TextMessage, []byte(`{"type":"media","ticket":"nope"}`))
				c.SetReadDeadline(time.Now().Add(waitFor))
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						break
					}
				}
				c.Close()
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := s.Server.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	close(stop)
	wg.Wait()
}
