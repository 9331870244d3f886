package media

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/plug"
	"github.com/user-media-plug/umplug/internal/testlog"
	"github.com/user-media-plug/umplug/protocol"
)

// endCall is one recorded EndCall.
type endCall struct{ call, user, reason string }

// fakeEnder records EndCall calls; onEnd, if set, runs inside EndCall (as the
// metadata server's synchronous Unpair would).
type fakeEnder struct {
	mu    sync.Mutex // guards calls
	calls []endCall
	ch    chan endCall
	onEnd func(endCall)
}

func newFakeEnder() *fakeEnder { return &fakeEnder{ch: make(chan endCall, 1024)} }

func (f *fakeEnder) EndCall(call, user, reason string) {
	e := endCall{call, user, reason}
	f.mu.Lock()
	f.calls = append(f.calls, e)
	f.mu.Unlock()
	if f.onEnd != nil {
		f.onEnd(e)
	}
	f.ch <- e
}

func (f *fakeEnder) all() []endCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]endCall(nil), f.calls...)
}

// wait returns the next EndCall or fails the test at ctx's deadline.
func (f *fakeEnder) wait(ctx context.Context, t *testing.T) endCall {
	t.Helper()
	select {
	case e := <-f.ch:
		return e
	case <-ctx.Done():
		t.Fatalf("no EndCall: %v", ctx.Err())
		return endCall{}
	}
}

// env is a media server behind a real HTTP server, with a fake clock.
type env struct {
	t   testing.TB
	ctx context.Context
	srv *Server
	url string
	end *fakeEnder
	clk *clock.Fake
	reg *prometheus.Registry

	dialer *websocket.Dialer

	arrived chan arrival  // from the server's arrival hook
	pending chan struct{} // from the server's pending hook
}

type arrival struct {
	call string
	n    int
}

func newEnv(t testing.TB, timeout time.Duration, mod func(*Config)) *env {
	t.Helper()
	return newEnvBuf(t, timeout, mod, 0)
}

// newEnvBuf is newEnv with WebSocket read and write buffers of bufSize on
// the server and the clients, for the buffer-size benchmarks; 0 keeps
// Upgrader's and Dialer's own.
func newEnvBuf(t testing.TB, timeout time.Duration, mod func(*Config), bufSize int) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, end: newFakeEnder(), clk: clock.NewFake(), reg: prometheus.NewRegistry()}
	cfg := Config{
		Ender:      e.end,
		Clock:      e.clk,
		Logger:     testlog.New(t),
		Registerer: e.reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	e.arrived, e.pending = make(chan arrival, 1024), make(chan struct{}, 1024)
	srv.hooks.arrived = func(call string, n int) {
		select {
		case e.arrived <- arrival{call, n}:
		default:
		}
	}
	srv.hooks.pending = func() {
		select {
		case e.pending <- struct{}{}:
		default:
		}
	}
	up := Upgrader(func(*http.Request) bool { return true })
	e.dialer = Dialer()
	if bufSize > 0 {
		up.ReadBufferSize, up.WriteBufferSize, up.WriteBufferPool = bufSize, bufSize, &sync.Pool{}
		e.dialer.ReadBufferSize, e.dialer.WriteBufferSize, e.dialer.WriteBufferPool = bufSize, bufSize, &sync.Pool{}
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		srv.ServeConn(r.Context(), c)
	}))
	e.url = "ws" + strings.TrimPrefix(hs.URL, "http") + protocol.MediaPath
	t.Cleanup(hs.Close)
	t.Cleanup(srv.Close) // runs first: waits for every ServeConn
	return e
}

// dial opens a media connection whose reads and writes fail at the test's
// deadline at the latest.
func (e *env) dial() *websocket.Conn {
	e.t.Helper()
	c, _, err := e.dialer.DialContext(e.ctx, e.url, nil)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	dl, _ := e.ctx.Deadline()
	_ = c.SetReadDeadline(dl)
	_ = c.SetWriteDeadline(dl)
	e.t.Cleanup(func() { c.Close() })
	return c
}

func newTicket() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// pair announces a call between users a and b and returns their tickets.
func (e *env) pair(call, a, b string) (ta, tb string) {
	ta, tb = newTicket(), newTicket()
	e.srv.Pair(plug.Pair{Call: call, Sides: [2]plug.Side{
		{User: a, Device: "d-" + a, Peer: b, Ticket: ta},
		{User: b, Device: "d-" + b, Peer: a, Ticket: tb},
	}})
	return ta, tb
}

func hello(t testing.TB, c *websocket.Conn, ticket string) {
	t.Helper()
	if err := c.WriteJSON(protocol.MediaHello{Type: protocol.TypeMedia, Ticket: ticket}); err != nil {
		t.Fatalf("hello: %v", err)
	}
}

func expectPaired(t testing.TB, c *websocket.Conn, peer string) {
	t.Helper()
	mt, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("want paired, got %v", err)
	}
	var p protocol.Paired
	if mt != websocket.TextMessage || json.Unmarshal(data, &p) != nil || p.Type != protocol.TypePaired || p.Peer != peer {
		t.Fatalf("want paired with %s, got %d %q", peer, mt, data)
	}
}

// connect pairs users a and b in call and returns their paired connections.
func (e *env) connect(call, a, b string) (ca, cb *websocket.Conn) {
	e.t.Helper()
	ta, tb := e.pair(call, a, b)
	ca, cb = e.dial(), e.dial()
	hello(e.t, ca, ta)
	hello(e.t, cb, tb)
	expectPaired(e.t, ca, b)
	expectPaired(e.t, cb, a)
	return ca, cb
}

// expectClose reads c and wants its very first result to be a close with
// code and reason: no media and no other message before it.
func expectClose(t *testing.T, c *websocket.Conn, code int, reason string) {
	t.Helper()
	mt, data, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("want close %d, got message type %d (%d bytes), err %v", code, mt, len(data), err)
	}
	if ce.Code != code || (reason != "" && ce.Text != reason) {
		t.Fatalf("want close %d %q, got %d %q", code, reason, ce.Code, ce.Text)
	}
}

// roundTrip checks that one frame goes each way between a and b.
func roundTrip(t testing.TB, a, b *websocket.Conn) {
	t.Helper()
	for _, d := range [][2]*websocket.Conn{{a, b}, {b, a}} {
		msg := []byte(newTicket())
		if err := d[0].WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatalf("write: %v", err)
		}
		mt, got, err := d[1].ReadMessage()
		if err != nil || mt != websocket.BinaryMessage || !bytes.Equal(got, msg) {
			t.Fatalf("relay: got %d %q %v, want %q", mt, got, err, msg)
		}
	}
}

// stream is one direction's random frames, reproducible from its seed.
type stream struct {
	sizes []int
	sum   [32]byte
	seed  uint64
}

func newStream(seed uint64, total int) stream {
	r := mrand.New(mrand.NewPCG(seed, seed))
	s := stream{seed: seed}
	h := sha256.New()
	for n := 0; n < total; {
		sz := 1 + r.IntN(64<<10)
		s.sizes = append(s.sizes, sz)
		n += sz
	}
	for _, b := range s.frames() {
		h.Write(b)
	}
	copy(s.sum[:], h.Sum(nil))
	return s
}

// frames regenerates the stream's frame contents.
func (s stream) frames() [][]byte {
	r := mrand.NewChaCha8([32]byte{byte(s.seed)})
	out := make([][]byte, len(s.sizes))
	for i, sz := range s.sizes {
		out[i] = make([]byte, sz)
		_, _ = r.Read(out[i])
	}
	return out
}

func TestRelayBulkBothWays(t *testing.T) {
	e := newEnv(t, 60*time.Second, nil)
	ca, cb := e.connect("c1", "alice", "bob")
	streams := map[*websocket.Conn]stream{ca: newStream(1, 4<<20), cb: newStream(2, 4<<20)}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, d := range [][2]*websocket.Conn{{ca, cb}, {cb, ca}} {
		src, dst := d[0], d[1]
		st := streams[src]
		wg.Add(2)
		go func() {
			defer wg.Done()
			for _, f := range st.frames() {
				if err := src.WriteMessage(websocket.BinaryMessage, f); err != nil {
					errs <- fmt.Errorf("write: %w", err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			h := sha256.New()
			for i, want := range st.sizes {
				mt, b, err := dst.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("read frame %d: %w", i, err)
					return
				}
				if mt != websocket.BinaryMessage || len(b) != want {
					errs <- fmt.Errorf("frame %d: type %d, %d bytes, want %d", i, mt, len(b), want)
					return
				}
				h.Write(b)
			}
			if !bytes.Equal(h.Sum(nil), st.sum[:]) {
				errs <- errors.New("sha256 mismatch")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := metricValue(t, e.srv.m.active); got != 1 {
		t.Errorf("active metric %v, want 1", got)
	}
	if n := len(e.end.all()); n != 0 {
		t.Errorf("EndCall made %d times", n)
	}
}

func TestBadTicketsRefused(t *testing.T) {
	e := newEnv(t, 20*time.Second, func(c *Config) { c.MediaWait = time.Hour })
	ta, tb := e.pair("real", "alice", "bob")
	ca, cb := e.dial(), e.dial()
	hello(t, ca, ta)
	hello(t, cb, tb)
	expectPaired(t, ca, "bob")
	expectPaired(t, cb, "alice")
	tests := []struct {
		name   string
		ticket func() string
		reason string
	}{
		{"guessed", func() string { return newTicket() }, "invalid ticket"},
		{"reused", func() string { return ta }, "invalid ticket"},
		{"reused callee", func() string { return tb }, "invalid ticket"},
		{"expired", func() string {
			tx, _ := e.pair("late", "carol", "dave")
			e.clk.Advance(protocol.TicketTTL + time.Second)
			return tx
		}, "invalid ticket"},
		{"unpaired", func() string {
			tx, _ := e.pair("gone", "erin", "frank")
			e.srv.Unpair(plug.Unpair{Call: "gone", Reason: protocol.ReasonHangup})
			return tx
		}, "invalid ticket"},
		{"empty", func() string { return "" }, "expected media hello"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial()
			hello(t, c, tc.ticket())
			expectClose(t, c, protocol.ClosePolicy, tc.reason)
			roundTrip(t, ca, cb)
		})
	}
	if n := len(e.end.all()); n != 0 {
		t.Errorf("EndCall made %d times: %v", n, e.end.all())
	}
}

func TestBadHello(t *testing.T) {
	e := newEnv(t, 20*time.Second, func(c *Config) { c.HelloTimeout = 200 * time.Millisecond })
	tests := []struct {
		name  string
		write func(c *websocket.Conn) error
	}{
		{"binary first", func(c *websocket.Conn) error { return c.WriteMessage(websocket.BinaryMessage, []byte("media")) }},
		{"not json", func(c *websocket.Conn) error { return c.WriteMessage(websocket.TextMessage, []byte("hi")) }},
		{"wrong type", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.TextMessage, []byte(`{"type":"whoami","ticket":"x"}`))
		}},
		{"too big", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("x"), helloLimit+1))
		}},
		{"silent", func(*websocket.Conn) error { return nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial()
			if err := tc.write(c); err != nil {
				t.Fatal(err)
			}
			_, _, err := c.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || (ce.Code != protocol.ClosePolicy && ce.Code != protocol.CloseTooBig) {
				t.Fatalf("want close 1008 (or 1009), got %v", err)
			}
		})
	}
}

func TestUnpairClosesBoth(t *testing.T) {
	e := newEnv(t, 20*time.Second, nil)
	ta, tb := e.pair("c1", "alice", "bob")
	ca, cb := e.dial(), e.dial()
	hello(t, ca, ta)
	hello(t, cb, tb)
	expectPaired(t, ca, "bob")
	expectPaired(t, cb, "alice")
	roundTrip(t, ca, cb)
	e.srv.Unpair(plug.Unpair{Call: "c1", Reason: protocol.ReasonHangup})
	expectClose(t, ca, protocol.CloseNormal, protocol.CloseReasonUnpaired)
	expectClose(t, cb, protocol.CloseNormal, protocol.CloseReasonUnpaired)
	for _, tk := range []string{ta, tb} {
		c := e.dial()
		hello(t, c, tk)
		expectClose(t, c, protocol.ClosePolicy, "invalid ticket")
	}
	e.srv.Unpair(plug.Unpair{Call: "c1", Reason: protocol.ReasonHangup}) // again: no-op
	e.srv.Unpair(plug.Unpair{Call: "unknown"})
	e.srv.Close()
	if n := len(e.end.all()); n != 0 {
		t.Errorf("EndCall made %d times on Unpair", n)
	}
	if got := metricValue(t, e.srv.m.ended.WithLabelValues(protocol.ReasonHangup)); got != 1 {
		t.Errorf("ended{hangup} = %v", got)
	}
	if got := metricValue(t, e.srv.m.active); got != 0 {
		t.Errorf("active = %v", got)
	}
	// Close waited for the relay goroutines: their counts are final.
	if got := metricValue(t, e.srv.m.frames); got != 2 {
		t.Errorf("frames = %v, want 2", got)
	}
	if got := metricValue(t, e.srv.m.bytes); got != 64 {
		t.Errorf("bytes = %v, want 64", got)
	}
}

func TestUnpairWhileWaiting(t *testing.T) {
	e := newEnv(t, 20*time.Second, nil)
	ta, tb := e.pair("c1", "alice", "bob")
	ca := e.dial()
	hello(t, ca, ta)
	e.waitArrived("c1", 1)
	e.srv.Unpair(plug.Unpair{Call: "c1", Reason: protocol.ReasonHangup})
	expectClose(t, ca, protocol.CloseNormal, protocol.CloseReasonUnpaired)
	cb := e.dial()
	hello(t, cb, tb)
	expectClose(t, cb, protocol.ClosePolicy, "invalid ticket")
}

func TestSideCloses(t *testing.T) {
	tests := []struct {
		name   string
		leaver int // 0: alice, 1: bob
		abrupt bool
	}{
		{"alice closes", 0, false},
		{"bob closes", 1, false},
		{"alice drops tcp", 0, true},
		{"bob drops tcp", 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 20*time.Second, nil)
			// The metadata server answers EndCall with a synchronous Unpair.
			e.end.onEnd = func(ec endCall) {
				e.srv.Unpair(plug.Unpair{Call: ec.call, Reason: ec.reason})
			}
			ca, cb := e.connect("c1", "alice", "bob")
			roundTrip(t, ca, cb)
			conns, users := []*websocket.Conn{ca, cb}, []string{"alice", "bob"}
			leaver, stayer := conns[tc.leaver], conns[1-tc.leaver]
			if tc.abrupt {
				leaver.Close()
			} else {
				_ = leaver.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
			}
			got := e.end.wait(e.ctx, t)
			if want := (endCall{"c1", users[tc.leaver], protocol.ReasonDisconnected}); got != want {
				t.Fatalf("EndCall %v, want %v", got, want)
			}
			expectClose(t, stayer, protocol.CloseNormal, protocol.CloseReasonUnpaired)
			e.srv.Unpair(plug.Unpair{Call: "c1", Reason: protocol.ReasonDisconnected})
			e.srv.Close()
			if n := len(e.end.all()); n != 1 {
				t.Fatalf("EndCall made %d times: %v", n, e.end.all())
			}
		})
	}
}

func TestSlowReceiver(t *testing.T) {
	e := newEnv(t, 30*time.Second, func(c *Config) { c.WriteTimeout = 200 * time.Millisecond })
	sender, receiver := e.connect("c1", "alice", "bob")
	// The receiver never reads from here on; the sender sends until its
	// writes fail.
	frame := make([]byte, 64<<10)
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		for {
			if err := sender.WriteMessage(websocket.BinaryMessage, frame); err != nil {
				done <- err
				return
			}
			sent.Add(int64(len(frame)))
		}
	}()
	got := e.end.wait(e.ctx, t)
	if want := (endCall{"c1", "bob", protocol.ReasonDisconnected}); got != want {
		t.Fatalf("EndCall %v, want %v", got, want)
	}
	select {
	case <-done:
	case <-e.ctx.Done():
		t.Fatal("sender never blocked for good")
	}
	// Bounded by socket buffers on both legs, one chunk and the close drain.
	if n := sent.Load(); n >= 32<<20 {
		t.Fatalf("server accepted %d bytes from the sender of a stalled receiver", n)
	}
	t.Logf("sender got %d KiB out before being cut", sent.Load()>>10)
	e.srv.Unpair(plug.Unpair{Call: "c1", Reason: protocol.ReasonDisconnected})
	// Both connections are over: the receiver's after its backlog.
	for _, c := range []*websocket.Conn{sender, receiver} {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				break
			}
		}
	}
	e.srv.Close()
	if n := len(e.end.all()); n != 1 {
		t.Fatalf("EndCall made %d times", n)
	}
}

func TestMediaWait(t *testing.T) {
	tests := []struct {
		name    string
		arrive  []int // sides that connect
		wantEnd string
	}{
		{"nobody", nil, "alice"},
		{"caller only", []int{0}, "bob"},
		{"callee only", []int{1}, "alice"},
		{"both", []int{0, 1}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 20*time.Second, nil)
			tk := [2]string{}
			tk[0], tk[1] = e.pair("c1", "alice", "bob")
			var conns []*websocket.Conn
			for _, i := range tc.arrive {
				c := e.dial()
				hello(t, c, tk[i])
				conns = append(conns, c)
			}
			if len(conns) == 2 {
				expectPaired(t, conns[0], "bob")
				expectPaired(t, conns[1], "alice")
			} else if len(conns) == 1 {
				e.waitArrived("c1", 1)
			}
			e.clk.Advance(protocol.MediaWait - time.Millisecond)
			if n := len(e.end.all()); n != 0 {
				t.Fatalf("EndCall before MediaWait: %v", e.end.all())
			}
			e.clk.Advance(time.Millisecond)
			if tc.wantEnd == "" {
				roundTrip(t, conns[0], conns[1])
				if n := len(e.end.all()); n != 0 {
					t.Fatalf("EndCall with both sides there: %v", e.end.all())
				}
				return
			}
			// Fake timers fire inside Advance: EndCall already happened.
			if got, want := e.end.all(), []endCall{{"c1", tc.wantEnd, protocol.ReasonDisconnected}}; len(got) != 1 || got[0] != want[0] {
				t.Fatalf("EndCall %v, want %v", got, want)
			}
			for _, c := range conns {
				expectClose(t, c, protocol.CloseNormal, protocol.CloseReasonUnpaired)
			}
		})
	}
}

// waitArrived blocks until n sides of call presented a valid ticket.
func (e *env) waitArrived(call string, n int) {
	e.t.Helper()
	for {
		select {
		case ev := <-e.arrived:
			if ev.call == call && ev.n >= n {
				return
			}
		case <-e.ctx.Done():
			e.t.Fatalf("%s: %d sides never arrived", call, n)
		}
	}
}

func TestPairDuplicateIgnored(t *testing.T) {
	e := newEnv(t, 20*time.Second, nil)
	ta, tb := e.pair("c1", "alice", "bob")
	tx, _ := e.pair("c1", "carol", "dave")
	c := e.dial()
	hello(t, c, tx)
	expectClose(t, c, protocol.ClosePolicy, "invalid ticket")
	ca, cb := e.dial(), e.dial()
	hello(t, ca, ta)
	hello(t, cb, tb)
	expectPaired(t, ca, "bob")
	expectPaired(t, cb, "alice")
	roundTrip(t, ca, cb)
}

func TestTextIgnoredAndOversizeCut(t *testing.T) {
	e := newEnv(t, 20*time.Second, func(c *Config) { c.MaxFrameBytes = 1000 })
	ca, cb := e.connect("c1", "alice", "bob")
	if err := ca.WriteMessage(websocket.TextMessage, []byte(`{"type":"offer"}`)); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, ca, cb) // the text frame was not relayed: the next is binary
	if err := cb.WriteMessage(websocket.BinaryMessage, make([]byte, 1001)); err != nil {
		t.Fatal(err)
	}
	expectClose(t, cb, protocol.CloseTooBig, "")
	if got := e.end.wait(e.ctx, t); got != (endCall{"c1", "bob", protocol.ReasonDisconnected}) {
		t.Fatalf("EndCall %v", got)
	}
	expectClose(t, ca, protocol.CloseNormal, protocol.CloseReasonUnpaired)
}

func TestCloseShutsDown(t *testing.T) {
	e := newEnv(t, 20*time.Second, nil)
	ca, cb := e.connect("c1", "alice", "bob")
	ta, _ := e.pair("c2", "carol", "dave")
	waiting := e.dial()
	hello(t, waiting, ta)
	e.waitArrived("c2", 1)
	for len(e.pending) > 0 { // forget the earlier connections' hellos
		<-e.pending
	}
	silent := e.dial()
	e.waitPending()
	closed := make(chan struct{})
	go func() { e.srv.Close(); close(closed) }()
	// Close waits for the devices' close replies, which they send as they
	// read the close frame.
	for _, c := range []*websocket.Conn{ca, cb, waiting} {
		expectClose(t, c, protocol.CloseNormal, protocol.CloseReasonUnpaired)
	}
	expectClose(t, silent, protocol.CloseGoingAway, "")
	select {
	case <-closed:
	case <-e.ctx.Done():
		t.Fatal("Close did not return")
	}
	late := e.dial()
	expectClose(t, late, protocol.CloseGoingAway, "")
	if n := len(e.end.all()); n != 0 {
		t.Fatalf("EndCall on shutdown: %v", e.end.all())
	}
	if got := metricValue(t, e.srv.m.ended.WithLabelValues(protocol.ReasonShutdown)); got != 2 {
		t.Errorf("ended{shutdown} = %v", got)
	}
}

// waitPending blocks until a connection reached its hello.
func (e *env) waitPending() {
	e.t.Helper()
	select {
	case <-e.pending:
	case <-e.ctx.Done():
		e.t.Fatal("no connection reached its hello")
	}
}

func TestManyPairsNoCrossTalk(t *testing.T) {
	const pairs, frames = 200, 20
	e := newEnv(t, 60*time.Second, nil)
	type sideConn struct {
		c       *websocket.Conn
		payload []byte
	}
	all := make([][2]sideConn, pairs)
	for i := range all {
		ca, cb := e.connect(fmt.Sprintf("call-%d", i), fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
		all[i] = [2]sideConn{
			{ca, []byte(fmt.Sprintf("pair %d side a %s", i, newTicket()))},
			{cb, []byte(fmt.Sprintf("pair %d side b %s", i, newTicket()))},
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, pairs*4)
	for i := range all {
		for j := range 2 {
			me, peer := all[i][j], all[i][1-j]
			wg.Add(2)
			go func() {
				defer wg.Done()
				for range frames {
					if err := me.c.WriteMessage(websocket.BinaryMessage, me.payload); err != nil {
						errs <- err
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for k := range frames {
					_, b, err := me.c.ReadMessage()
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(b, peer.payload) {
						errs <- fmt.Errorf("pair %d side %d frame %d: got %q, want %q", i, j, k, b, peer.payload)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := metricValue(t, e.srv.m.active); got != pairs {
		t.Errorf("active = %v", got)
	}
}

func TestNewNeedsEnder(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrNoEnder) {
		t.Fatalf("New without Ender: %v", err)
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{Ender: newFakeEnder(), Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Ender: newFakeEnder(), Registerer: reg}); !errors.Is(err, ErrMetrics) {
		t.Fatalf("second registration: %v", err)
	}
}

// metricValue reads a gauge or counter (testutil would need another module).
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}
