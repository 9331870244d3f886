package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// mutualBye is mutual, with every setup connection ended by a close 1000
// (a goodbye: with resume on, a bare TCP close would keep the device).
func mutualBye(t *testing.T, s *servertest.Server, names ...string) {
	t.Helper()
	for i, n := range names {
		register(t, s, n, names[:i]...)
	}
	for i, n := range names[:len(names)-1] {
		w := login(t, s, n)
		w.ok(map[string]any{"type": "add-peers", "user": n, "peers": names[i+1:]})
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		if err := w.c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(waitFor)); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return s.Server.Meta().Devices(n) == 0 })
	}
}

// mediaConn opens /media with ticket (relay mode).
func mediaConn(t *testing.T, s *servertest.Server, ticket string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	url := strings.TrimSuffix(s.MetaURL, "/meta") + "/media"
	c, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial media: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WriteJSON(protocol.MediaHello{Type: protocol.TypeMedia, Ticket: ticket}); err != nil {
		t.Fatal(err)
	}
	return c
}

// readMedia reads c's next message within waitFor.
func readMedia(t *testing.T, c *websocket.Conn) (int, []byte, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	return c.ReadMessage()
}

func wantPaired(t *testing.T, c *websocket.Conn, peer string) {
	t.Helper()
	mt, b, err := readMedia(t, c)
	if err != nil || mt != websocket.TextMessage || !strings.Contains(string(b), `"paired"`) || !strings.Contains(string(b), peer) {
		t.Fatalf("want paired with %s, got %d %q %v", peer, mt, b, err)
	}
}

func flows(t *testing.T, from, to *websocket.Conn, payload string) {
	t.Helper()
	if err := from.WriteMessage(websocket.BinaryMessage, []byte(payload)); err != nil {
		t.Fatalf("write %q: %v", payload, err)
	}
	mt, b, err := readMedia(t, to)
	if err != nil || mt != websocket.BinaryMessage || string(b) != payload {
		t.Fatalf("want %q, got %d %q %v", payload, mt, b, err)
	}
}

// TestResumeRelayOverSockets: alice and bob talk over the relay; alice's
// /meta and /media TCP sockets are cut without a WebSocket close; she comes
// back within the grace window with her session and device id: bob saw
// reconnecting then resumed, carol (a peer) saw no offline, alice's old
// ticket is refused, her new /media connection is paired again with bob's
// (which stayed open), and media flows both ways.
func TestResumeRelayOverSockets(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{ResumeGrace: time.Minute})
	mutualBye(t, s, "alice", "bob", "carol")
	carol := login(t, s, "carol")
	a := dial(t, s, nil)
	a.name = "alice"
	fa := a.ok(map[string]any{"type": "whoami", "user": "alice", "password": pw})
	b := login(t, s, "bob")
	carol.expect("status", "alice", "", "")
	carol.expect("status", "bob", "", "")
	a.expect("status", "bob", "", "")

	call := a.ok(map[string]any{"type": "call", "user": "alice", "peer": "bob"})
	_ = call
	ring := b.event()
	b.ok(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": ring.Tx})
	a.expect("accept", "bob", "alice", "")
	fcA := a.event()
	fcB := b.event()
	if fcA.Type != protocol.TypeForceCall || fcB.Type != protocol.TypeForceCall {
		t.Fatalf("want force-calls, got %s / %s", fcA.raw, fcB.raw)
	}
	ma, mb := mediaConn(t, s, fcA.Ticket), mediaConn(t, s, fcB.Ticket)
	wantPaired(t, ma, "bob")
	wantPaired(t, mb, "alice")
	flows(t, ma, mb, "a1")
	flows(t, mb, ma, "b1")

	// The network drops: both of alice's sockets die without a close frame.
	a.c.NetConn().Close()
	ma.NetConn().Close()
	b.expect(protocol.TypeReconnecting, "alice", "bob", "")

	a2 := dial(t, s, nil)
	a2.name = "alice"
	f := a2.ok(map[string]any{"type": "whoami", "user": "alice", "session": fa.Session, "resume": fa.Device})
	if f.Device != fa.Device {
		t.Fatalf("resumed as device %q, want %q", f.Device, fa.Device)
	}
	b.expect(protocol.TypeResumed, "alice", "bob", "")
	fc := a2.event()
	if fc.Type != protocol.TypeForceCall || fc.Ticket == "" || fc.Ticket == fcA.Ticket || fc.Peer != "bob" {
		t.Fatalf("want a fresh force-call, got %s", fc.raw)
	}

	// The old ticket is void.
	old := mediaConn(t, s, fcA.Ticket)
	if _, _, err := readMedia(t, old); !websocket.IsCloseError(err, protocol.ClosePolicy) {
		t.Fatalf("old ticket: want close 1008, got %v", err)
	}

	ma2 := mediaConn(t, s, fc.Ticket)
	wantPaired(t, ma2, "bob")
	flows(t, ma2, mb, "a2")
	flows(t, mb, ma2, "b2")
	flows(t, ma2, mb, "a3")

	carol.quiet()
	b.quiet()
	if n := s.Server.Meta().Devices("alice"); n != 1 {
		t.Fatalf("alice has %d devices, want 1", n)
	}

	// The call still ends normally: alice hangs up, both media close 1000.
	a2.ok(map[string]any{"type": "unpair", "user": "alice", "peer": "bob"})
	b.expect("unpair", "alice", "bob", protocol.ReasonHangup)
	for _, m := range []*websocket.Conn{ma2, mb} {
		var err error
		for err == nil {
			_, _, err = readMedia(t, m)
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.CloseNormal {
			t.Fatalf("media end: %v", err)
		}
	}
}

// TestResumeRelayMediaOnlyDrop: only alice's /media connection ends; her
// /meta stays. Every end but a close 1000 is a drop: a TCP cut, 1001 (what
// a browser sends for a reloading page) or an application code: she gets a
// fresh force-call at once and her new media connection re-pairs with bob's;
// bob saw no unpair. A close 1000 is a deliberate end: the call ends.
func TestResumeRelayMediaOnlyDrop(t *testing.T) {
	tests := []struct {
		name string
		end  func(c *websocket.Conn)
		drop bool
	}{
		{"tcp cut", func(c *websocket.Conn) { c.NetConn().Close() }, true},
		{"close 1001 going away", closeWith(websocket.CloseGoingAway), true},
		{"close 4001", closeWith(4001), true},
		{"close 1000", closeWith(websocket.CloseNormalClosure), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := servertest.Start(t, &servertest.Options{ResumeGrace: time.Minute})
			a, b, fcA, ma, mb := relayCall(t, s)
			flows(t, ma, mb, "a1")

			tc.end(ma)
			if !tc.drop {
				a.expect("unpair", "bob", "alice", protocol.ReasonDisconnected)
				b.expect("unpair", "alice", "bob", protocol.ReasonDisconnected)
				return
			}
			fc := a.event()
			if fc.Type != protocol.TypeForceCall || fc.Ticket == fcA.Ticket {
				t.Fatalf("want a fresh force-call, got %s", fc.raw)
			}
			ma2 := mediaConn(t, s, fc.Ticket)
			wantPaired(t, ma2, "bob")
			flows(t, mb, ma2, "b1")
			flows(t, ma2, mb, "a2")
			b.quiet()
		})
	}
}

// relayCall makes alice and bob mutual peers and puts them in a call with
// relay media, both paired; fcA is alice's force-call.
func relayCall(t *testing.T, s *servertest.Server) (a, b *wsc, fcA frame, ma, mb *websocket.Conn) {
	t.Helper()
	mutualBye(t, s, "alice", "bob")
	a, b = login(t, s, "alice"), login(t, s, "bob")
	a.expect("status", "bob", "", "")
	a.ok(map[string]any{"type": "call", "user": "alice", "peer": "bob"})
	ring := b.event()
	b.ok(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": ring.Tx})
	a.expect("accept", "bob", "alice", "")
	fcA, fcB := a.event(), b.event()
	ma, mb = mediaConn(t, s, fcA.Ticket), mediaConn(t, s, fcB.Ticket)
	wantPaired(t, ma, "bob")
	wantPaired(t, mb, "alice")
	return a, b, fcA, ma, mb
}

// closeWith returns a func that sends a close frame with code and closes
// the socket without waiting for the reply.
func closeWith(code int) func(c *websocket.Conn) {
	return func(c *websocket.Conn) {
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(waitFor))
		c.Close()
	}
}

// TestResumeRelayGraceOver: alice drops and does not come back: after the
// window bob's call ends as disconnected and his media is closed.
func TestResumeRelayGraceOver(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{ResumeGrace: 300 * time.Millisecond})
	a, b, _, ma, mb := relayCall(t, s)

	a.c.NetConn().Close()
	ma.NetConn().Close()
	b.expect(protocol.TypeReconnecting, "alice", "bob", "")
	b.expect("unpair", "alice", "bob", protocol.ReasonDisconnected)
	b.expect("status", "alice", "", "")
	var err error
	for err == nil {
		_, _, err = readMedia(t, mb)
	}
	if !websocket.IsCloseError(err, protocol.CloseNormal) {
		t.Fatalf("bob's media: %v", err)
	}
}

// TestResumeRaceAndRingingOverSockets: over real sockets, two connections
// resume one dropped device at once: exactly one gets it; and a callee
// device that drops while ringing keeps the call ringing: resumed, it rings
// again and answers.
func TestResumeRaceAndRingingOverSockets(t *testing.T) {
	s := servertest.Start(t, &servertest.Options{ResumeGrace: time.Minute})
	mutualBye(t, s, "alice", "bob")
	b := dial(t, s, nil)
	b.name = "bob"
	fb := b.ok(map[string]any{"type": "whoami", "user": "bob", "password": pw})
	a := login(t, s, "alice")
	b.expect("status", "alice", "", "")
	a.ok(map[string]any{"type": "call", "user": "alice", "peer": "bob"})
	ring := b.event()
	b.c.NetConn().Close()
	// A resume that arrives before the server noticed the drop of a
	// connection that spoke a moment ago gets a new id (section 8): wait.
	eventually(t, func() bool { return s.Server.Meta().Stats().Conns == 1 })

	n1, n2 := dial(t, s, nil), dial(t, s, nil)
	n1.name, n2.name = "bob", "bob"
	msg := map[string]any{"type": "whoami", "user": "bob", "session": fb.Session, "resume": fb.Device}
	n1.send(msg)
	msg2 := map[string]any{"type": "whoami", "user": "bob", "session": fb.Session, "resume": fb.Device}
	n2.send(msg2)
	r1, r2 := n1.next(), n2.next()
	if !r1.OK || !r2.OK || (r1.Device == fb.Device) == (r2.Device == fb.Device) {
		t.Fatalf("racing resumes: %s / %s; want exactly one with device %s", r1.raw, r2.raw, fb.Device)
	}
	winner := n1
	if r2.Device == fb.Device {
		winner = n2
	}
	again := winner.event()
	if again.Type != protocol.TypeCall || again.User != "alice" || again.Tx != ring.Tx {
		t.Fatalf("want the call ringing again, got %s", again.raw)
	}
	winner.ok(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": ring.Tx})
	a.expect("accept", "bob", "alice", "")
	if f := a.event(); f.Type != protocol.TypeForceCall {
		t.Fatalf("want force-call, got %s", f.raw)
	}
	a.quiet()
}
