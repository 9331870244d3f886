package server_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

var soakRounds = flag.Int("soak", 300, "rounds of the soak test (connect, call, media, hang-up, disconnect)")

// TestSlowConsumer: a client that stops reading gets a bounded queue and is
// then disconnected; the other users are served all along.
func TestSlowConsumer(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.Meta.MaxQueueBytes = 64 << 10
		c.Meta.RateLimit = 1e6
		c.Meta.RateBurst = 1e6
	}})
	const npeers = 1000
	names := make([]string, npeers)
	for i := range names {
		names[i] = fmt.Sprintf("peer-%04d", i)
		createDirect(t, s, names[i])
	}
	createDirect(t, s, "slow", names...)
	mutual(t, s, "alice", "bob")

	// A raw connection that logs in and then never reads again.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	slow, _, err := websocket.DefaultDialer.DialContext(ctx, s.MetaURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.WriteMessage(websocket.TextMessage, []byte(`{"type":"whoami","user":"slow","password":"`+pw+`","tx":0}`))
	eventually(t, func() bool { return s.Server.Meta().Devices("slow") == 1 })
	// Each peers response is ~50 KB; the client never reads them.
	for i := 0; i < 1000 && s.Server.Meta().Devices("slow") == 1; i++ {
		slow.SetWriteDeadline(time.Now().Add(waitFor))
		if err := slow.WriteMessage(websocket.TextMessage, []byte(`{"type":"peers","user":"slow","tx":1}`)); err != nil {
			break // the server already cut us off
		}
	}
	eventually(t, func() bool { return s.Server.Meta().Devices("slow") == 0 })

	// Everyone else is fine.
	a, b := login(t, s, "alice"), login(t, s, "bob")
	a.expect("status", "bob", "", "")
	a.ok(map[string]any{"type": "call", "user": "alice", "peer": "bob", "tx": 1})
	b.expect("call", "alice", "bob", "")
}

// blackhole is a TCP proxy that can stop forwarding without closing either
// side: the client "vanishes" as a half-open connection would.
type blackhole struct {
	ln   net.Listener
	mu   sync.Mutex
	dead bool
}

func newBlackhole(t *testing.T, target string) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bh := &blackhole{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); u.Close() })
			go bh.pipe(c, u)
			go bh.pipe(u, c)
		}
	}()
	return bh
}

func (bh *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		bh.mu.Lock()
		dead := bh.dead
		bh.mu.Unlock()
		if dead {
			continue // swallow: no FIN, no RST, nothing
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (bh *blackhole) vanish() { bh.mu.Lock(); bh.dead = true; bh.mu.Unlock() }

// TestHalfOpen: a peer that vanishes without FIN is found dead by ping/pong;
// it goes offline and its call ends.
func TestHalfOpen(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.PingInterval = 50 * time.Millisecond
		c.IdleTimeout = 300 * time.Millisecond
	}})
	mutual(t, s, "alice", "bob")
	bh := newBlackhole(t, s.HTTP.Listener.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	// alice's client sees no pings once she vanishes: keep its own idle
	// check out of the way.
	a, err := client.Dial(ctx, "http://"+bh.ln.Addr().String(), &client.Options{IdleTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Login(ctx, "alice", pw); err != nil {
		t.Fatal(err)
	}
	b := login(t, s, "bob")
	tx, err := a.Call(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	b.expect("call", "alice", "bob", "")
	b.ok(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": rawNumber(tx)})
	forceCall(t, b, "alice")

	// Idle for several ping intervals: pongs keep alice alive.
	select {
	case <-time.After(4 * 300 * time.Millisecond):
	case <-ctx.Done():
	}
	if s.Server.Meta().Devices("alice") != 1 {
		t.Fatal("a live, idle connection was dropped")
	}
	bh.vanish()
	b.expect("unpair", "alice", "bob", "disconnected")
	if f := b.expect("status", "alice", "", ""); f.Status != "offline" {
		t.Fatalf("%s", f.raw)
	}
}

func TestConnectionLimits(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.Meta.MaxConnsPerAddr = 3
	}})
	for i := 0; i < 3; i++ {
		dial(t, s, nil)
	}
	// The server registers a connection just after the handshake.
	eventually(t, func() bool { return s.Server.Meta().Stats().Conns == 3 })
	w := dial(t, s, nil)
	var ce *websocket.CloseError
	if err := w.closeErr(); !errors.As(err, &ce) || ce.Code != protocol.ClosePolicy {
		t.Fatalf("4th connection: %v", err)
	}

	s2 := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) { c.Meta.MaxConns = 2 }})
	dial(t, s2, nil)
	dial(t, s2, nil)
	eventually(t, func() bool { return s2.Server.Meta().Stats().Conns == 2 })
	if err := dial(t, s2, nil).closeErr(); !errors.As(err, &ce) || ce.Code != protocol.ClosePolicy {
		t.Fatalf("3rd connection: %v", err)
	}
}

func TestRegistrationRateLimit(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) { c.Meta.RegistrationsPerAddr = 5 }})
	w := dial(t, s, nil)
	for i := 0; i < 5; i++ {
		w.ok(map[string]any{"type": "reg-user", "user": fmt.Sprint("u", i), "password": pw})
	}
	w.fail(map[string]any{"type": "reg-user", "user": "u5", "password": pw}, protocol.ErrRateLimited)
	if _, err := s.Store.Get(context.Background(), "u5"); err == nil {
		t.Fatal("u5 created")
	}
}

func openFiles(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// TestSoak: many connects, calls with media, hang-ups and disconnects;
// afterwards goroutines, open files and heap are back at their baseline.
// -soak N makes it longer.
func TestSoak(t *testing.T) {
	s := servertest.Start(t, nil)
	const pairs = 10
	for i := 0; i < pairs; i++ {
		mutual(t, s, fmt.Sprint("sa", i), fmt.Sprint("sb", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	round := func(i int) error {
		a, err := client.Dial(ctx, s.URL, nil)
		if err != nil {
			return err
		}
		defer a.Close()
		b, err := client.Dial(ctx, s.URL, nil)
		if err != nil {
			return err
		}
		defer b.Close()
		an, bn := fmt.Sprint("sa", i%pairs), fmt.Sprint("sb", i%pairs)
		if _, err := a.Login(ctx, an, pw); err != nil {
			return err
		}
		if _, err := b.Login(ctx, bn, pw); err != nil {
			return err
		}
		tx, err := a.Call(ctx, bn)
		if err != nil {
			return err
		}
		if _, err := b.Next(ctx, protocol.TypeCall); err != nil {
			return err
		}
		if err := b.Accept(ctx, an, tx); err != nil {
			return err
		}
		if i%2 == 0 {
			// Half the rounds move media too.
			fc, err := a.Next(ctx, protocol.TypeForceCall)
			if err != nil {
				return err
			}
			m, err := a.Media(ctx, fc)
			if err != nil {
				return err
			}
			defer m.Close()
		}
		if i%3 == 0 {
			return a.Unpair(ctx, bn) // hang up; else disconnect mid-call
		}
		return nil
	}
	// One worker per pair; a pair's next round starts once the server has
	// processed the previous round's disconnects (else the pair is busy).
	run := func(n int) {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for w := 0; w < pairs; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; i < n; i += pairs {
					if err := round(i); err != nil {
						errs <- fmt.Errorf("round %d: %w", i, err)
						return
					}
					tick := time.NewTicker(time.Millisecond)
					for s.Server.Meta().Devices(fmt.Sprint("sa", w)) > 0 || s.Server.Meta().Devices(fmt.Sprint("sb", w)) > 0 {
						select {
						case <-tick.C:
						case <-ctx.Done():
							errs <- ctx.Err()
							return
						}
					}
					tick.Stop()
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		eventually(t, func() bool {
			st := s.Server.Meta().Stats()
			return st.Conns == 0 && st.Calls == 0 && st.Users == 0
		})
	}
	run(pairs) // warm up pools and lazily started goroutines
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	g0, f0, h0 := runtime.NumGoroutine(), openFiles(t), ms.HeapInuse

	run(*soakRounds)

	var g1, f1 int
	eventually(t, func() bool {
		g1, f1 = runtime.NumGoroutine(), openFiles(t)
		return g1 <= g0+2 && f1 <= f0+2
	})
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("%d rounds: goroutines %d→%d, open files %d→%d, heap in use %d→%d KiB",
		*soakRounds, g0, g1, f0, f1, h0>>10, ms.HeapInuse>>10)
	if ms.HeapInuse > h0+8<<20 {
		t.Fatalf("heap grew by %d KiB", (ms.HeapInuse-h0)>>10)
	}
}
