package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/testlog"
	"github.com/user-media-plug/umplug/protocol"
)

// The tests of this file run the client against a scripted /meta server, for
// what the real server cannot be made to do on cue: answer late, answer out
// of the usual shape, or drop the connection.

// scripted starts a WebSocket server whose every connection is handled by fn.
func scripted(t *testing.T, fn func(c *websocket.Conn)) string {
	t.Helper()
	var up websocket.Upgrader
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		fn(c)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// readReq reads one client message as a generic map.
func readReq(c *websocket.Conn) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	err := c.ReadJSON(&m)
	return m, err
}

// answer writes an ok response to req, echoing its type and tx.
func answer(c *websocket.Conn, req map[string]json.RawMessage, extra string) error {
	typ, tx := req["type"], req["tx"]
	if tx == nil {
		tx = json.RawMessage("null")
	}
	return c.WriteMessage(websocket.TextMessage,
		[]byte(fmt.Sprintf(`{"type":"res","for":%s,"tx":%s,"ok":true%s}`, typ, tx, extra)))
}

// drain reads until the client goes away.
func drain(c *websocket.Conn) {
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCancelPendingRequest(t *testing.T) {
	ctx := testContext(t)
	got := make(chan struct{})
	release := make(chan struct{})
	url := scripted(t, func(c *websocket.Conn) {
		first, err := readReq(c)
		if err != nil {
			return
		}
		close(got)
		<-release
		if answer(c, first, "") != nil { // late: its waiter gave up
			return
		}
		second, err := readReq(c)
		if err != nil {
			return
		}
		if answer(c, second, `,"device":"d2"`) != nil {
			return
		}
		drain(c)
	})
	c, err := client.Dial(ctx, url, &client.Options{Logger: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	reqCtx, cancel := context.WithCancel(ctx)
	go func() {
		<-got
		cancel()
	}()
	if _, err := c.Send(reqCtx, map[string]any{"type": "peers"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Send with cancelled ctx = %v, want context.Canceled", err)
	}
	close(release)
	r, err := c.Send(ctx, map[string]any{"type": "whoami"})
	if err != nil {
		t.Fatal(err)
	}
	if r.For != "whoami" || r.Tx != protocol.TxInt(2) || r.Device != "d2" {
		t.Errorf("second response = %+v, want for whoami, tx 2 (the late first one discarded)", r)
	}
	// A request whose context is already done is not sent at all.
	done, cancel2 := context.WithCancel(ctx)
	cancel2()
	if err := c.SetStatus(done, "x"); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Errorf("SetStatus before login = %v, want ErrNotLoggedIn", err)
	}
	if _, err := c.Send(done, map[string]any{"type": "peers"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with done ctx = %v, want context.Canceled", err)
	}
}

func TestResponsesMatchedByTx(t *testing.T) {
	ctx := testContext(t)
	got := make(chan struct{}, 2)
	url := scripted(t, func(c *websocket.Conn) {
		var reqs []map[string]json.RawMessage
		for range 3 {
			r, err := readReq(c)
			if err != nil {
				return
			}
			reqs = append(reqs, r)
			got <- struct{}{}
		}
		// Answer the fresh-tx request first, then the two sharing tx 7 in
		// order; a non-numeric tx is answered with null.
		_ = answer(c, reqs[2], "")
		_ = answer(c, reqs[0], "")
		_ = answer(c, reqs[1], "")
		drain(c)
	})
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	type result struct {
		r   *protocol.Response
		err error
	}
	send := func(req map[string]any) <-chan result {
		ch := make(chan result, 1)
		go func() {
			r, err := c.Send(ctx, req)
			ch <- result{r, err}
		}()
		<-got // sent, in this order
		return ch
	}
	a := send(map[string]any{"type": "first", "tx": 7})
	b := send(map[string]any{"type": "second", "tx": 7})
	n := send(map[string]any{"type": "null-tx", "tx": "not a number"})
	for _, tc := range []struct {
		ch      <-chan result
		wantFor string
		wantTx  protocol.Tx
	}{{a, "first", "7"}, {b, "second", "7"}, {n, "null-tx", ""}} {
		res := <-tc.ch
		if res.err != nil {
			t.Fatal(res.err)
		}
		if res.r.For != tc.wantFor || res.r.Tx != tc.wantTx {
			t.Errorf("got for %q tx %q, want for %q tx %q", res.r.For, res.r.Tx, tc.wantFor, tc.wantTx)
		}
	}
}

func TestEventsNeverBlockAndCloseWithConnection(t *testing.T) {
	ctx := testContext(t)
	const n = 2000
	url := scripted(t, func(c *websocket.Conn) {
		req, err := readReq(c)
		if err != nil {
			return
		}
		for i := range n {
			ev := fmt.Sprintf(`{"type":"status","user":"bob","status":"s%d"}`, i)
			if c.WriteMessage(websocket.TextMessage, []byte(ev)) != nil {
				return
			}
		}
		if answer(c, req, "") != nil {
			return
		}
		// Then a second request is left unanswered and the server leaves.
		if _, err := readReq(c); err != nil {
			return
		}
		_ = c.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(time.Second))
	})
	c, err := client.Dial(ctx, url, &client.Options{EventBuffer: n})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The response comes after n unread events: the read loop must not
	// block on them.
	if _, err := c.Send(ctx, map[string]any{"type": "peers"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Send(ctx, map[string]any{"type": "peers"})
	var ce *websocket.CloseError
	if !errors.Is(err, client.ErrClosed) || !errors.As(err, &ce) || ce.Code != 4000 {
		t.Fatalf("Send cut by close = %v, want ErrClosed wrapping close 4000", err)
	}
	i := 0
	for ev := range c.Events() {
		if want := fmt.Sprintf("s%d", i); ev.Type != protocol.TypeStatus || ev.Status != want {
			t.Fatalf("event %d = %+v, want status %s", i, ev, want)
		}
		i++
	}
	if i != n {
		t.Errorf("got %d events before close, want %d", i, n)
	}
	<-c.Done()
	if err := c.Err(); !errors.As(err, &ce) || ce.Code != 4000 {
		t.Errorf("Err() = %v, want close 4000", err)
	}
}

// TestEventsOverflow: a client whose app never reads Events holds at most
// EventBuffer events; the next one ends the connection with
// ErrEventsOverflow (close 1001 to the server) instead of being dropped, and
// the events queued before it are still delivered, in order.
func TestEventsOverflow(t *testing.T) {
	const limit = 10
	tests := []struct {
		name     string
		events   int
		overflow bool
	}{
		{"at the limit the connection stays", limit, false},
		{"one more closes it", limit + 1, true},
		{"a flood closes it", 10 * limit, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			closeCode := make(chan int, 1)
			url := scripted(t, func(c *websocket.Conn) {
				req, err := readReq(c)
				if err != nil {
					return
				}
				for i := range tt.events {
					ev := fmt.Sprintf(`{"type":"status","user":"bob","status":"s%d"}`, i)
					if c.WriteMessage(websocket.TextMessage, []byte(ev)) != nil {
						break
					}
				}
				_ = answer(c, req, "")
				// Then read until the client leaves, and report how.
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						var ce *websocket.CloseError
						if errors.As(err, &ce) {
							closeCode <- ce.Code
						} else {
							closeCode <- -1
						}
						return
					}
				}
			})
			c, err := client.Dial(ctx, url, &client.Options{EventBuffer: limit, Logger: testlog.New(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Send(ctx, map[string]any{"type": "peers"})
			if !tt.overflow {
				if err != nil {
					t.Fatalf("Send = %v, want the answer", err)
				}
				if c.Err() != nil {
					t.Fatalf("Err() = %v with %d events queued", c.Err(), tt.events)
				}
				for i := range tt.events {
					if ev := <-c.Events(); ev.Status != fmt.Sprintf("s%d", i) {
						t.Fatalf("event %d = %+v", i, ev)
					}
				}
				return
			}
			if !errors.Is(err, client.ErrClosed) || !errors.Is(err, client.ErrEventsOverflow) {
				t.Fatalf("Send = %v, want ErrClosed wrapping ErrEventsOverflow", err)
			}
			select {
			case <-c.Done():
			case <-ctx.Done():
				t.Fatal("connection still open after overflow")
			}
			if !errors.Is(c.Err(), client.ErrEventsOverflow) {
				t.Errorf("Err() = %v, want ErrEventsOverflow", c.Err())
			}
			select {
			case code := <-closeCode:
				if code != websocket.CloseGoingAway {
					t.Errorf("server saw close code %d, want %d", code, websocket.CloseGoingAway)
				}
			case <-ctx.Done():
				t.Fatal("server never saw the client leave")
			}
			i := 0
			for ev := range c.Events() {
				if want := fmt.Sprintf("s%d", i); ev.Status != want {
					t.Fatalf("event %d = %+v, want status %s", i, ev, want)
				}
				i++
			}
			if i != limit {
				t.Errorf("delivered %d events after overflow, want the %d queued", i, limit)
			}
			if _, err := c.Next(ctx, protocol.TypeCall); !errors.Is(err, client.ErrEventsOverflow) {
				t.Errorf("Next after overflow = %v, want ErrEventsOverflow", err)
			}
		})
	}
}

func TestCloseEndsEverything(t *testing.T) {
	ctx := testContext(t)
	url := scripted(t, drain)
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Err() != nil {
		t.Fatalf("Err() on open connection = %v", c.Err())
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Send(ctx, map[string]any{"type": "peers"}) // never answered
		errc <- err
	}()
	c.Close()
	if err := <-errc; !errors.Is(err, client.ErrClosed) {
		t.Errorf("pending Send after Close = %v, want ErrClosed", err)
	}
	if _, ok := <-c.Events(); ok {
		t.Error("Events not closed after Close")
	}
	if !errors.Is(c.Err(), client.ErrClosed) {
		t.Errorf("Err() = %v, want ErrClosed", c.Err())
	}
	if _, err := c.Send(ctx, map[string]any{"type": "peers"}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
}

func TestDialErrors(t *testing.T) {
	ctx := testContext(t)
	if _, err := client.Dial(ctx, "ftp://x", nil); !errors.Is(err, client.ErrBadURL) {
		t.Errorf("Dial(ftp) = %v, want ErrBadURL", err)
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := client.Dial(ctx, srv.URL, nil); err == nil {
		t.Error("Dial to a non-WebSocket endpoint succeeded")
	}
}
