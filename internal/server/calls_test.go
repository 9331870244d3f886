package server_test

import (
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// callEnv is alice (a) and bob (b), mutual peers, each with one device, plus
// a recorder of the pair/unpair events the metadata server emits.
type callEnv struct {
	s   *servertest.Server
	a   *wsc
	b   *wsc
	rec *recorder
	clk *clock.Fake
}

func newCallEnv(t *testing.T) *callEnv {
	rec := newRecorder()
	clk := clock.NewFake()
	s := servertest.Start(t, &servertest.Options{Clock: clk, RingingTimeout: 30 * time.Second,
		Configure: func(c *server.Config) { c.Tap = rec }})
	mutual(t, s, "alice", "bob", "carol")
	e := &callEnv{s: s, rec: rec, clk: clk, a: login(t, s, "alice"), b: login(t, s, "bob")}
	e.a.expect("status", "bob", "", "")
	return e
}

// ring has alice call bob and returns the call's tx as bob saw it.
func (e *callEnv) ring(t *testing.T) protocol.Tx {
	t.Helper()
	e.a.ok(map[string]any{"type": "call", "user": "alice", "peer": "bob", "tx": 0.4194567419})
	f := e.b.expect("call", "alice", "bob", "")
	if f.Tx != "0.4194567419" {
		t.Fatalf("call tx not echoed exactly: %s", f.raw)
	}
	return f.Tx
}

// txNum sends a tx back exactly as the server sent it.
func txNum(tx protocol.Tx) any { return rawNumber(tx) }

// forceCall checks a force-call event and returns its ticket.
func forceCall(t *testing.T, w *wsc, peer string) string {
	t.Helper()
	f := w.event()
	if f.Type != "force-call" || f.Peer != peer || f.Media != "/media" || len(f.Ticket) < 22 {
		t.Fatalf("%s: want force-call for %s, got %s", w.name, peer, f.raw)
	}
	return f.Ticket
}

func TestCallAccept(t *testing.T) {
	e := newCallEnv(t)
	tx := e.ring(t)
	e.b.ok(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": txNum(tx)})
	f := e.a.expect("accept", "bob", "alice", "")
	if f.Tx != tx {
		t.Fatalf("accept tx: %s", f.raw)
	}
	ta := forceCall(t, e.a, "bob")
	tb := forceCall(t, e.b, "alice")
	if ta == tb {
		t.Fatal("both devices got the same ticket")
	}
	pairs, _ := e.rec.snapshot()
	if len(pairs) != 1 {
		t.Fatalf("pairs: %+v", pairs)
	}
	p := pairs[0]
	if p.Sides[0].User != "alice" || p.Sides[0].Ticket != ta || p.Sides[0].Peer != "bob" ||
		p.Sides[1].User != "bob" || p.Sides[1].Ticket != tb || p.Sides[1].Peer != "alice" ||
		p.Sides[0].Device == "" || p.Sides[1].Device == "" || p.Sides[0].Device == p.Sides[1].Device {
		t.Fatalf("pair not bound to the devices: %+v", p)
	}
	// In a call, both are busy for others.
	c := login(t, e.s, "carol")
	e.a.expect("status", "carol", "", "")
	e.b.expect("status", "carol", "", "")
	c.fail(map[string]any{"type": "call", "user": "carol", "peer": "alice"}, protocol.ErrBusy)
	c.fail(map[string]any{"type": "call", "user": "carol", "peer": "bob"}, protocol.ErrBusy)
	// Hang up.
	e.b.ok(map[string]any{"type": "unpair", "user": "bob", "peer": "alice"})
	e.a.expect("unpair", "bob", "alice", "hangup")
	_, unpairs := e.rec.snapshot()
	if len(unpairs) != 1 || unpairs[0].Call != p.Call || unpairs[0].Reason != "hangup" {
		t.Fatalf("unpairs: %+v", unpairs)
	}
	e.b.quiet()
	// Free again.
	c.ok(map[string]any{"type": "call", "user": "carol", "peer": "alice"})
	e.a.expect("call", "carol", "alice", "")
}

// TestAcceptTxSpelling: a client that parsed the call's tx and wrote it back
// differently (0.50 for 0.5) still matches the call.
func TestAcceptTxSpelling(t *testing.T) {
	e := newCallEnv(t)
	e.a.ok(map[string]any{"type": "call", "user": "alice", "peer": "bob", "tx": rawNumber("0.50")})
	e.b.expect("call", "alice", "bob", "")
	e.b.ok(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": 0.5})
	e.a.expect("accept", "bob", "alice", "")
}

func TestCallReject(t *testing.T) {
	e := newCallEnv(t)
	tx := e.ring(t)
	e.b.ok(map[string]any{"type": "reject", "user": "bob", "peer": "alice", "tx": txNum(tx)})
	f := e.a.expect("reject", "bob", "alice", "rejected")
	if f.Tx != tx {
		t.Fatalf("reject tx: %s", f.raw)
	}
	e.a.quiet()
	e.b.quiet()
	if pairs, _ := e.rec.snapshot(); len(pairs) != 0 {
		t.Fatal("a rejected call was paired")
	}
	e.ring(t) // both free again
}

func TestCallCancel(t *testing.T) {
	e := newCallEnv(t)
	b2 := login(t, e.s, "bob")
	tx := e.ring(t)
	b2.expect("call", "alice", "bob", "")
	e.a.ok(map[string]any{"type": "cancel", "user": "alice", "peer": "bob"})
	for _, w := range []*wsc{e.b, b2} {
		f := w.expect("cancel", "alice", "bob", "cancelled")
		if f.Tx != tx {
			t.Fatalf("cancel tx: %s", f.raw)
		}
	}
	e.b.fail(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": txNum(tx)}, protocol.ErrNoCall)
	e.a.quiet()
}

func TestCallRingingTimeout(t *testing.T) {
	e := newCallEnv(t)
	b2 := login(t, e.s, "bob")
	e.ring(t)
	b2.expect("call", "alice", "bob", "")
	e.clk.Advance(29 * time.Second)
	e.a.quiet() // still ringing
	e.clk.Advance(time.Second)
	e.a.expect("reject", "bob", "alice", "timeout")
	e.b.expect("cancel", "alice", "bob", "timeout")
	b2.expect("cancel", "alice", "bob", "timeout")
	if e.s.Server.Meta().Stats().Calls != 0 {
		t.Fatal("call not gone")
	}
}

func TestCallGlare(t *testing.T) {
	e := newCallEnv(t)
	a2 := login(t, e.s, "alice")
	e.b.ok(map[string]any{"type": "call", "user": "bob", "peer": "alice", "tx": 7})
	e.a.expect("call", "bob", "alice", "")
	a2.expect("call", "bob", "alice", "")
	// alice calls bob while bob's call to her rings: paired at once.
	e.a.ok(map[string]any{"type": "call", "user": "alice", "peer": "bob", "tx": 8})
	if f := e.a.expect("accept", "bob", "alice", ""); f.Tx != "8" {
		t.Fatalf("alice's accept tx: %s", f.raw)
	}
	if f := e.b.expect("accept", "alice", "bob", ""); f.Tx != "7" {
		t.Fatalf("bob's accept tx: %s", f.raw)
	}
	a2.expect("cancel", "bob", "alice", "answered-elsewhere")
	forceCall(t, e.a, "bob")
	forceCall(t, e.b, "alice")
	a2.quiet()
	if pairs, _ := e.rec.snapshot(); len(pairs) != 1 {
		t.Fatalf("pairs: %d", len(pairs))
	}
}

func TestCallAnsweredElsewhere(t *testing.T) {
	for _, answer := range []string{"accept", "reject"} {
		t.Run(answer, func(t *testing.T) {
			e := newCallEnv(t)
			b2 := login(t, e.s, "bob")
			tx := e.ring(t)
			b2.expect("call", "alice", "bob", "")
			b2.ok(map[string]any{"type": answer, "user": "bob", "peer": "alice", "tx": txNum(tx)})
			e.b.expect("cancel", "alice", "bob", "answered-elsewhere")
			if answer == "accept" {
				e.a.expect("accept", "bob", "alice", "")
				forceCall(t, e.a, "bob")
				forceCall(t, b2, "alice") // the accepting device, not the first one
				pairs, _ := e.rec.snapshot()
				if len(pairs) != 1 || pairs[0].Sides[1].Device != b2.device || pairs[0].Sides[0].Device != e.a.device {
					t.Fatalf("pair bound to the wrong devices: %+v (want %s, %s)", pairs, e.a.device, b2.device)
				}
			} else {
				e.a.expect("reject", "bob", "alice", "rejected")
			}
			e.b.quiet()
		})
	}
}

func TestCallerDisconnectWhileRinging(t *testing.T) {
	e := newCallEnv(t)
	e.ring(t)
	e.a.leave(e.s)
	e.b.expect("cancel", "alice", "bob", "disconnected")
	e.b.expect("status", "alice", "", "")
	if e.s.Server.Meta().Stats().Calls != 0 {
		t.Fatal("call not gone")
	}
}

func TestCalleeOfflineWhileRinging(t *testing.T) {
	e := newCallEnv(t)
	e.ring(t)
	e.b.leave(e.s)
	e.a.expect("reject", "bob", "alice", "offline")
	e.a.expect("status", "bob", "", "")
}

func TestDisconnectInCall(t *testing.T) {
	for _, who := range []string{"caller", "callee"} {
		t.Run(who, func(t *testing.T) {
			e := newCallEnv(t)
			tx := e.ring(t)
			e.b.ok(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": txNum(tx)})
			e.a.expect("accept", "bob", "alice", "")
			forceCall(t, e.a, "bob")
			forceCall(t, e.b, "alice")
			gone, stays, goneName, staysName := e.b, e.a, "bob", "alice"
			if who == "caller" {
				gone, stays, goneName, staysName = e.a, e.b, "alice", "bob"
			}
			gone.leave(e.s)
			stays.expect("unpair", goneName, staysName, "disconnected")
			_, unpairs := e.rec.snapshot()
			if len(unpairs) != 1 || unpairs[0].Reason != "disconnected" {
				t.Fatalf("unpairs: %+v", unpairs)
			}
		})
	}
}

// TestOtherDeviceDisconnectKeepsCall: a device of a user that is not in the
// call may come and go.
func TestOtherDeviceDisconnectKeepsCall(t *testing.T) {
	e := newCallEnv(t)
	b2 := login(t, e.s, "bob")
	tx := e.ring(t)
	b2.expect("call", "alice", "bob", "")
	e.b.ok(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": txNum(tx)})
	b2.expect("cancel", "alice", "bob", "answered-elsewhere")
	b2.leave(e.s)
	e.a.expect("accept", "bob", "alice", "")
	forceCall(t, e.a, "bob")
	e.a.quiet()
	if e.s.Server.Meta().Stats().Calls != 1 {
		t.Fatal("call ended")
	}
}

func TestTicketsDistinct(t *testing.T) {
	e := newCallEnv(t)
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		tx := e.ring(t)
		e.b.ok(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": txNum(tx)})
		e.a.expect("accept", "bob", "alice", "")
		for _, tk := range []string{forceCall(t, e.a, "bob"), forceCall(t, e.b, "alice")} {
			if seen[tk] {
				t.Fatalf("ticket reused: call %d", i)
			}
			seen[tk] = true
		}
		e.a.ok(map[string]any{"type": "unpair", "user": "alice", "peer": "bob"})
		e.b.expect("unpair", "alice", "bob", "hangup")
	}
	pairs, unpairs := e.rec.snapshot()
	if len(pairs) != 20 || len(unpairs) != 20 {
		t.Fatalf("pairs %d unpairs %d", len(pairs), len(unpairs))
	}
	ids := map[string]bool{}
	for _, p := range pairs {
		ids[p.Call] = true
	}
	if len(ids) != 20 {
		t.Fatal("call ids repeat")
	}
}

// rawNumber marshals as the exact number text.
type rawNumber string

func (r rawNumber) MarshalJSON() ([]byte, error) { return []byte(r), nil }
