package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/internal/password"
	"github.com/user-media-plug/umplug/internal/plug"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// waitFor bounds every wait in these tests: a broken server fails the test
// instead of hanging it.
const waitFor = 10 * time.Second

// frame is one server message with its raw bytes.
type frame struct {
	protocol.ServerMessage
	raw string
}

// wsc is a raw protocol client: it sends exactly the JSON a test gives it
// and hands back every frame, so tests can check the wire itself.
type wsc struct {
	t      testing.TB
	name   string
	device string // set by login
	c      *websocket.Conn

	mu      sync.Mutex // guards the following
	frames  []frame
	closed  error
	notify  chan struct{}
	nextTx  int
	pending []frame // events read while waiting for a response
}

func dial(t testing.TB, s *servertest.Server, hdr http.Header) *wsc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, resp, err := websocket.DefaultDialer.DialContext(ctx, s.MetaURL, hdr)
	if err != nil {
		t.Fatalf("dial: %v (resp %v)", err, resp)
	}
	w := &wsc{t: t, c: c, notify: make(chan struct{}, 1)}
	go w.readLoop()
	t.Cleanup(func() { c.Close() })
	return w
}

func (w *wsc) readLoop() {
	for {
		_, b, err := w.c.ReadMessage()
		w.mu.Lock()
		if err != nil {
			w.closed = err
			w.mu.Unlock()
			w.wake()
			return
		}
		var m protocol.ServerMessage
		if jerr := json.Unmarshal(b, &m); jerr != nil {
			w.closed = fmt.Errorf("bad frame %q: %v", b, jerr)
			w.mu.Unlock()
			w.wake()
			return
		}
		w.frames = append(w.frames, frame{m, string(b)})
		w.mu.Unlock()
		w.wake()
	}
}

func (w *wsc) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// next returns the next frame, or fails the test after waitFor.
func (w *wsc) next() frame {
	w.t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		if len(w.frames) > 0 {
			f := w.frames[0]
			w.frames = w.frames[1:]
			w.mu.Unlock()
			return f
		}
		err := w.closed
		w.mu.Unlock()
		if err != nil {
			w.t.Fatalf("%s: connection ended while waiting for a frame: %v", w.name, err)
		}
		select {
		case <-w.notify:
		case <-deadline.C:
			w.t.Fatalf("%s: no frame within %v", w.name, waitFor)
		}
	}
}

// closeErr waits for the connection to end and returns why.
func (w *wsc) closeErr() error {
	w.t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		err := w.closed
		w.frames = nil
		w.mu.Unlock()
		if err != nil {
			return err
		}
		select {
		case <-w.notify:
		case <-deadline.C:
			w.t.Fatalf("%s: connection not closed within %v", w.name, waitFor)
		}
	}
}

// sendRaw writes one text frame as is.
func (w *wsc) sendRaw(s string) {
	w.t.Helper()
	if err := w.c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		w.t.Fatalf("%s: write: %v", w.name, err)
	}
}

// send writes m with a fresh integer tx unless m sets "tx" itself; it
// returns the tx.
func (w *wsc) send(m map[string]any) any {
	w.t.Helper()
	if _, ok := m["tx"]; !ok {
		w.mu.Lock()
		w.nextTx++
		m["tx"] = w.nextTx
		w.mu.Unlock()
	}
	b, err := json.Marshal(m)
	if err != nil {
		w.t.Fatal(err)
	}
	w.sendRaw(string(b))
	return m["tx"]
}

// req sends m and returns its response; events that arrive first are kept
// for event().
func (w *wsc) req(m map[string]any) frame {
	w.t.Helper()
	tx := w.send(m)
	want := protocol.Tx(fmt.Sprint(tx))
	if tx == nil {
		want = ""
	}
	for {
		f := w.next()
		if f.Type == protocol.TypeRes {
			if f.Tx != want {
				w.t.Fatalf("%s: response for tx %q arrived while waiting for %q: %s", w.name, f.Tx, want, f.raw)
			}
			return f
		}
		w.pending = append(w.pending, f)
	}
}

// ok sends m and fails the test unless the response is ok.
func (w *wsc) ok(m map[string]any) frame {
	w.t.Helper()
	f := w.req(m)
	if !f.OK {
		w.t.Fatalf("%s: %v: want ok, got %s", w.name, m, f.raw)
	}
	return f
}

// fail sends m and fails the test unless the response carries code.
func (w *wsc) fail(m map[string]any, code protocol.Code) frame {
	w.t.Helper()
	f := w.req(m)
	if f.OK || f.Error != code {
		w.t.Fatalf("%s: %v: want error %s, got %s", w.name, m, code, f.raw)
	}
	if f.Reason == "" {
		w.t.Fatalf("%s: error %s without reason: %s", w.name, code, f.raw)
	}
	return f
}

// event returns the next server-initiated message.
func (w *wsc) event() frame {
	w.t.Helper()
	if len(w.pending) > 0 {
		f := w.pending[0]
		w.pending = w.pending[1:]
		return f
	}
	f := w.next()
	if f.Type == protocol.TypeRes {
		w.t.Fatalf("%s: want an event, got response %s", w.name, f.raw)
	}
	return f
}

// expect returns the next event and checks its type and fields.
func (w *wsc) expect(typ, user, peer, reason string) frame {
	w.t.Helper()
	f := w.event()
	if f.Type != typ || f.User != user || f.Peer != peer || f.Reason != reason {
		w.t.Fatalf("%s: want %s user=%s peer=%s reason=%q, got %s", w.name, typ, user, peer, reason, f.raw)
	}
	return f
}

// quiet proves that no event is waiting: a request on this connection is
// answered after every event that was caused before it (the server queues
// both in order), so an event caused earlier would show up first.
func (w *wsc) quiet() {
	w.t.Helper()
	f := w.req(map[string]any{"type": "peers-online", "user": w.name})
	if len(w.pending) > 0 {
		w.t.Fatalf("%s: unexpected event %s (before %s)", w.name, w.pending[0].raw, f.raw)
	}
}

const pw = "correct horse"

// register creates a user over its own short connection.
func register(t testing.TB, s *servertest.Server, name string, peers ...string) {
	t.Helper()
	w := dial(t, s, nil)
	if peers == nil {
		peers = []string{}
	}
	w.ok(map[string]any{"type": "reg-user", "user": name, "password": pw, "peers": peers})
	w.c.Close()
}

// login opens an identified connection.
func login(t testing.TB, s *servertest.Server, name string) *wsc {
	t.Helper()
	w := dial(t, s, nil)
	w.name = name
	f := w.ok(map[string]any{"type": "whoami", "user": name, "password": pw})
	if f.Device == "" {
		t.Fatalf("whoami response without device: %s", f.raw)
	}
	w.device = f.Device
	return w
}

// mutual registers users that all list each other.
func mutual(t testing.TB, s *servertest.Server, names ...string) {
	t.Helper()
	for i, n := range names {
		register(t, s, n, names[:i]...)
	}
	for i, n := range names {
		if i == len(names)-1 {
			break
		}
		w := login(t, s, n)
		w.ok(map[string]any{"type": "add-peers", "user": n, "peers": names[i+1:]})
		w.leave(s)
	}
}

// recorder observes pair/unpair events on the plug interface.
type recorder struct {
	mu      sync.Mutex
	pairs   []plug.Pair
	unpairs []plug.Unpair
	ch      chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 100)} }

func (r *recorder) Pair(p plug.Pair) {
	r.mu.Lock()
	r.pairs = append(r.pairs, p)
	r.mu.Unlock()
}

func (r *recorder) Unpair(u plug.Unpair) {
	r.mu.Lock()
	r.unpairs = append(r.unpairs, u)
	r.mu.Unlock()
}

func (r *recorder) snapshot() ([]plug.Pair, []plug.Unpair) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]plug.Pair(nil), r.pairs...), append([]plug.Unpair(nil), r.unpairs...)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// leave closes w and waits until the server has processed the disconnect,
// so that the next step of a test sees its effects.
func (w *wsc) leave(s *servertest.Server) {
	w.t.Helper()
	before := s.Server.Meta().Devices(w.name)
	w.c.Close()
	eventually(w.t, func() bool { return s.Server.Meta().Devices(w.name) < before })
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", waitFor)
		}
		<-tick.C
	}
}

func cheapHasher() *password.Hasher {
	return password.New(password.Config{Params: servertest.CheapPassword})
}
