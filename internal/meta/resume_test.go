package meta

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/plug"
	"github.com/user-media-plug/umplug/protocol"
)

// dropConn is a pipeConn whose transport reports how the client ended the
// connection (PeerCloser): code 0 is a drop, 1000 a goodbye.
type dropConn struct {
	*pipeConn
	code       atomic.Int64
	closedWith atomic.Int64 // the code the server closed it with
}

func (c *dropConn) PeerCloseCode() int { return int(c.code.Load()) }
func (c *dropConn) Close(code int, reason string) {
	c.closedWith.CompareAndSwap(0, int64(code))
	c.pipeConn.Close(code, reason)
}

// rebindRec records pair, unpair and rebind events in one order.
type rebindRec struct {
	*recorder
	mu      sync.Mutex
	rebinds []plug.Rebind
}

func (r *rebindRec) Rebind(b plug.Rebind) {
	r.mu.Lock()
	r.rebinds = append(r.rebinds, b)
	r.mu.Unlock()
}

func (r *rebindRec) lastRebind() (plug.Rebind, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rebinds) == 0 {
		return plug.Rebind{}, 0
	}
	return r.rebinds[len(r.rebinds)-1], len(r.rebinds)
}

type rdev struct {
	*dev
	dc      *dropConn
	device  string
	session string
}

// newResumeServer returns a test server whose media records rebinds.
func newResumeServer(t *testing.T, users map[string][]string) (*testServer, *rebindRec) {
	rr := &rebindRec{recorder: &recorder{}}
	ts := newTestServer(t, users, func(c *Config) { c.Media = rr })
	return ts, rr
}

// openR opens a connection whose end can be a drop.
func (ts *testServer) openR(t *testing.T) *rdev {
	t.Helper()
	p := newPipeConn()
	dc := &dropConn{pipeConn: p}
	x, err := ts.Open(dc, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Close)
	return &rdev{dev: &dev{t: t, x: x, p: p}, dc: dc}
}

// loginR logs user in with the password (resume "" = none).
func (ts *testServer) loginR(t *testing.T, user string) *rdev {
	t.Helper()
	d := ts.openR(t)
	m := d.do(`{"type":"whoami","user":%q,"password":%q}`, user, testPassword)
	if !m.OK {
		t.Fatalf("whoami %s: %s %s", user, m.Error, m.Reason)
	}
	d.device, d.session = m.Device, m.Session
	return d
}

// resume opens a new connection that identifies with d's session and asks
// to resume d's device; it returns the new device and the response.
func (ts *testServer) resume(t *testing.T, user string, d *rdev) (*rdev, protocol.ServerMessage) {
	t.Helper()
	n := ts.openR(t)
	m := n.do(`{"type":"whoami","user":%q,"session":%q,"resume":%q}`, user, d.session, d.device)
	n.device, n.session = m.Device, d.session
	return n, m
}

// drop ends d's connection without a close frame from the client.
func (d *rdev) drop() { d.x.Close() }

// goodbye ends d's connection with the client's close 1000.
func (d *rdev) goodbye() { d.dc.code.Store(protocol.CloseNormal); d.x.Close() }

func isType(typ string) func(protocol.ServerMessage) bool {
	return func(m protocol.ServerMessage) bool { return m.Type == typ }
}

// noStatus checks, with a barrier request, that d received no status event
// about user since the last check.
func noStatus(t *testing.T, d *rdev, user string) {
	t.Helper()
	tx := d.send(`{"type":"peers-online","user":%q}`, d.x.user)
	for {
		m := d.next(func(protocol.ServerMessage) bool { return true })
		if m.Type == protocol.TypeStatus && m.User == user {
			t.Fatalf("%s received status %q of %s", d.x.user, m.Status, user)
		}
		if m.Type == protocol.TypeRes && string(m.Tx) == tx {
			return
		}
	}
}

// inCall sets up an active call alice → bob and returns their devices and
// force-call tickets.
func inCall(t *testing.T, ts *testServer) (a, b *rdev, ta, tb string) {
	t.Helper()
	a, b = ts.loginR(t, "alice"), ts.loginR(t, "bob")
	tx := a.send(`{"type":"call","user":"alice","peer":"bob"}`)
	if m := a.res(tx); !m.OK {
		t.Fatalf("call: %s", m.Error)
	}
	b.next(isType(protocol.TypeCall))
	if m := b.do(`{"type":"accept","user":"bob","peer":"alice","tx":%s}`, tx); !m.OK {
		t.Fatalf("accept: %s", m.Error)
	}
	ta = a.next(isType(protocol.TypeForceCall)).Ticket
	tb = b.next(isType(protocol.TypeForceCall)).Ticket
	return a, b, ta, tb
}

var trio = map[string][]string{"alice": {"bob", "carol"}, "bob": {"alice"}, "carol": {"alice"}}

// TestResumeKeepsCallAndPresence: alice drops mid-call and resumes within
// the window: same device id, carol (her peer) saw no offline, bob saw
// reconnecting then resumed, alice got a fresh force-call whose ticket was
// rebound before it was sent, and the call still stands.
func TestResumeKeepsCallAndPresence(t *testing.T) {
	ts, rr := newResumeServer(t, trio)
	carol := ts.loginR(t, "carol")
	a, b, oldTicket, _ := inCall(t, ts)
	carol.next(isType(protocol.TypeStatus)) // alice online
	a.drop()
	if m := b.next(isType(protocol.TypeReconnecting)); m.User != "alice" || m.Peer != "bob" {
		t.Fatalf("reconnecting: %+v", m)
	}
	ts.clk.Advance(protocol.ResumeGrace - time.Second)
	a2, m := ts.resume(t, "alice", a)
	if !m.OK || m.Device != a.device {
		t.Fatalf("resume: ok=%v %s device %q, want %q", m.OK, m.Error, m.Device, a.device)
	}
	if m := b.next(isType(protocol.TypeResumed)); m.User != "alice" || m.Peer != "bob" {
		t.Fatalf("resumed: %+v", m)
	}
	fc := a2.next(isType(protocol.TypeForceCall))
	rb, n := rr.lastRebind()
	if n != 1 || fc.Ticket == "" || fc.Ticket == oldTicket || rb.Side.Ticket != fc.Ticket ||
		rb.Side.User != "alice" || rb.Side.Device != a.device || rb.Side.Peer != "bob" || fc.Peer != "bob" {
		t.Fatalf("force-call %+v after rebinds %d %+v (old ticket %v)", fc, n, rb, fc.Ticket == oldTicket)
	}
	noStatus(t, carol, "alice")
	if _, unpairs := rr.counts(); unpairs != 0 {
		t.Fatalf("%d unpairs, want 0", unpairs)
	}
	// The call goes on: alice (resumed) hangs up, bob is told.
	if m := a2.do(`{"type":"unpair","user":"alice","peer":"bob"}`); !m.OK {
		t.Fatalf("unpair after resume: %s %s", m.Error, m.Reason)
	}
	if m := b.next(isType(protocol.TypeUnpair)); m.Reason != protocol.ReasonHangup {
		t.Fatalf("unpair: %+v", m)
	}
	// The grace timer of the old connection does nothing any more.
	ts.clk.Advance(protocol.ResumeGrace)
	noStatus(t, carol, "alice")
	if got := ts.Devices("alice"); got != 1 {
		t.Fatalf("alice has %d devices, want 1", got)
	}
}

// TestResumeAfterGraceIsV1: no resume within the window: bob's call ends
// as disconnected, carol sees alice offline, and a late resume gets a new
// device id.
func TestResumeAfterGraceIsV1(t *testing.T) {
	ts, _ := newResumeServer(t, trio)
	carol := ts.loginR(t, "carol")
	a, b, _, _ := inCall(t, ts)
	carol.next(isType(protocol.TypeStatus)) // alice online
	a.drop()
	b.next(isType(protocol.TypeReconnecting))
	ts.clk.Advance(protocol.ResumeGrace)
	if m := b.next(isType(protocol.TypeUnpair)); m.User != "alice" || m.Reason != protocol.ReasonDisconnected {
		t.Fatalf("unpair: %+v", m)
	}
	if m := carol.next(isType(protocol.TypeStatus)); m.User != "alice" || m.Status != protocol.StatusOffline {
		t.Fatalf("status: %+v", m)
	}
	a2, m := ts.resume(t, "alice", a)
	if !m.OK || m.Device == a.device {
		t.Fatalf("late resume: ok=%v device %q (old %q)", m.OK, m.Device, a.device)
	}
	if m := carol.next(isType(protocol.TypeStatus)); m.Status != protocol.StatusOnline {
		t.Fatalf("status: %+v", m)
	}
	noStatus(t, a2, "bob")
}

// TestGoodbyeAndPolicyClosesAreNotResumable: a close 1000 from the client
// is a deliberate goodbye, the v1 outcome follows at once; so does the end
// of a connection the server closed for a policy reason.
func TestGoodbyeAndPolicyClosesAreNotResumable(t *testing.T) {
	ts, _ := newResumeServer(t, trio)
	carol := ts.loginR(t, "carol")
	a, b, _, _ := inCall(t, ts)
	carol.next(isType(protocol.TypeStatus)) // alice online
	a.goodbye()
	if m := b.next(func(m protocol.ServerMessage) bool {
		return m.Type == protocol.TypeUnpair || m.Type == protocol.TypeReconnecting
	}); m.Type != protocol.TypeUnpair || m.Reason != protocol.ReasonDisconnected {
		t.Fatalf("after a goodbye bob got %+v", m)
	}
	if m := carol.next(isType(protocol.TypeStatus)); m.Status != protocol.StatusOffline {
		t.Fatalf("status: %+v", m)
	}
	if _, m := ts.resume(t, "alice", a); !m.OK || m.Device == a.device {
		t.Fatalf("resume after goodbye: ok=%v device %q (old %q)", m.OK, m.Device, a.device)
	}

	b2 := ts.loginR(t, "bob")
	b2.x.closeAfterFlush(protocol.ClosePolicy, "test")
	b2.drop()
	if _, m := ts.resume(t, "bob", b2); !m.OK || m.Device == b2.device {
		t.Fatalf("resume after a policy close: ok=%v device %q (old %q)", m.OK, m.Device, b2.device)
	}
	_ = b
}

// TestResumeWhileRinging: a callee device that drops keeps the call ringing
// on the user's other devices and rings again when it resumes; a caller
// device that drops cancels after the window, or, if it resumes, learns
// that its call was answered meanwhile and gets its force-call.
func TestResumeWhileRinging(t *testing.T) {
	t.Run("callee", func(t *testing.T) {
		ts, _ := newResumeServer(t, trio)
		a, b1, b2 := ts.loginR(t, "alice"), ts.loginR(t, "bob"), ts.loginR(t, "bob")
		tx := a.send(`{"type":"call","user":"alice","peer":"bob"}`)
		a.res(tx)
		b1.next(isType(protocol.TypeCall))
		b2.next(isType(protocol.TypeCall))
		b1.drop()
		ts.clk.Advance(protocol.ResumeGrace / 2)
		b1r, m := ts.resume(t, "bob", b1)
		if !m.OK || m.Device != b1.device {
			t.Fatalf("resume: %+v", m)
		}
		if m := b1r.next(isType(protocol.TypeCall)); m.User != "alice" || string(m.Tx) != tx {
			t.Fatalf("call again: %+v", m)
		}
		if m := b1r.do(`{"type":"accept","user":"bob","peer":"alice","tx":%s}`, tx); !m.OK {
			t.Fatalf("accept from the resumed device: %s", m.Error)
		}
		a.next(isType(protocol.TypeAccept))
		if m := b2.next(isType(protocol.TypeCancel)); m.Reason != protocol.ReasonAnsweredElsewhere {
			t.Fatalf("cancel: %+v", m)
		}
	})
	t.Run("callee-other-device-answers", func(t *testing.T) {
		ts, _ := newResumeServer(t, trio)
		a, b1, b2 := ts.loginR(t, "alice"), ts.loginR(t, "bob"), ts.loginR(t, "bob")
		tx := a.send(`{"type":"call","user":"alice","peer":"bob"}`)
		a.res(tx)
		b1.drop()
		b2.next(isType(protocol.TypeCall))
		if m := b2.do(`{"type":"accept","user":"bob","peer":"alice","tx":%s}`, tx); !m.OK {
			t.Fatalf("accept: %s", m.Error)
		}
		a.next(isType(protocol.TypeAccept))
		b1r, _ := ts.resume(t, "bob", b1)
		if m := b1r.next(isType(protocol.TypeCancel)); m.Reason != protocol.ReasonAnsweredElsewhere {
			t.Fatalf("replayed cancel: %+v", m)
		}
	})
	t.Run("caller-times-out", func(t *testing.T) {
		ts, _ := newResumeServer(t, trio)
		a, b := ts.loginR(t, "alice"), ts.loginR(t, "bob")
		a.res(a.send(`{"type":"call","user":"alice","peer":"bob"}`))
		b.next(isType(protocol.TypeCall))
		a.drop()
		noStatus(t, b, "alice")
		ts.clk.Advance(protocol.ResumeGrace)
		if m := b.next(isType(protocol.TypeCancel)); m.Reason != protocol.ReasonDisconnected {
			t.Fatalf("cancel: %+v", m)
		}
	})
	t.Run("caller-resumes-after-accept", func(t *testing.T) {
		ts, rr := newResumeServer(t, trio)
		a, b := ts.loginR(t, "alice"), ts.loginR(t, "bob")
		tx := a.send(`{"type":"call","user":"alice","peer":"bob"}`)
		a.res(tx)
		b.next(isType(protocol.TypeCall))
		a.drop()
		b.do(`{"type":"accept","user":"bob","peer":"alice","tx":%s}`, tx)
		b.next(isType(protocol.TypeForceCall))
		if m := b.next(isType(protocol.TypeReconnecting)); m.User != "alice" {
			t.Fatalf("reconnecting: %+v", m)
		}
		ar, m := ts.resume(t, "alice", a)
		if !m.OK || m.Device != a.device {
			t.Fatalf("resume: %+v", m)
		}
		ar.next(isType(protocol.TypeAccept))
		fc := ar.next(isType(protocol.TypeForceCall))
		if rb, _ := rr.lastRebind(); rb.Side.Ticket != fc.Ticket {
			t.Fatal("the force-call's ticket was not rebound")
		}
		b.next(isType(protocol.TypeResumed))
	})
}

// TestResumeOtherUsersDeviceRefused: naming another user's device gets a
// new device id and leaves that device alone (it still resumes).
func TestResumeOtherUsersDeviceRefused(t *testing.T) {
	ts, _ := newResumeServer(t, trio)
	a, b, _, _ := inCall(t, ts)
	b.drop()
	a.next(isType(protocol.TypeReconnecting))
	thief := ts.openR(t)
	m := thief.do(`{"type":"whoami","user":"carol","password":%q,"resume":%q}`, testPassword, b.device)
	if !m.OK || m.Device == b.device {
		t.Fatalf("carol resuming bob's device: ok=%v device %q", m.OK, m.Device)
	}
	noStatus(t, thief, "alice")
	br, m := ts.resume(t, "bob", b)
	if !m.OK || m.Device != b.device {
		t.Fatalf("bob's own resume: %+v", m)
	}
	br.next(isType(protocol.TypeForceCall))
	a.next(isType(protocol.TypeResumed))
}

// TestResumeRace: two connections resume one device at once: exactly one
// gets it, the other a new device id.
func TestResumeRace(t *testing.T) {
	for i := 0; i < 20; i++ {
		ts, _ := newResumeServer(t, trio)
		a := ts.loginR(t, "alice")
		a.drop()
		n1, n2 := ts.openR(t), ts.openR(t)
		msg := `{"type":"whoami","user":"alice","session":%q,"resume":%q}`
		tx1 := n1.send(msg, a.session, a.device)
		tx2 := n2.send(msg, a.session, a.device)
		m1, m2 := n1.res(tx1), n2.res(tx2)
		if !m1.OK || !m2.OK {
			t.Fatalf("whoami: %+v %+v", m1, m2)
		}
		if (m1.Device == a.device) == (m2.Device == a.device) {
			t.Fatalf("devices %q and %q for resumes of %q: want exactly one winner", m1.Device, m2.Device, a.device)
		}
		if got := ts.Devices("alice"); got != 2 {
			t.Fatalf("alice has %d devices, want 2", got)
		}
	}
}

// TestResumeTakesOverHalfOpen: the old connection is still open (the
// server has not noticed it died) and quiet: a resume takes its device and
// closes it (1008); its later end changes nothing.
func TestResumeTakesOverHalfOpen(t *testing.T) {
	ts, _ := newResumeServer(t, trio)
	carol := ts.loginR(t, "carol")
	a, b, _, _ := inCall(t, ts)
	carol.next(isType(protocol.TypeStatus)) // alice online
	ts.clk.Advance(takeoverQuiet)
	a2, m := ts.resume(t, "alice", a)
	if !m.OK || m.Device != a.device {
		t.Fatalf("takeover: %+v", m)
	}
	if got := a.dc.closedWith.Load(); got != protocol.ClosePolicy {
		t.Fatalf("old connection closed with %d, want 1008", got)
	}
	a.drop()
	a2.next(isType(protocol.TypeForceCall))
	noStatus(t, carol, "alice")
	noStatus(t, b, "alice")
	ts.clk.Advance(protocol.ResumeGrace * 2)
	if m := a2.do(`{"type":"unpair","user":"alice","peer":"bob"}`); !m.OK {
		t.Fatalf("the call did not survive the takeover: %s", m.Error)
	}
	// A connection that spoke just now is not taken over.
	a3, m := ts.resume(t, "alice", a2)
	if !m.OK || m.Device == a2.device {
		t.Fatalf("resume of a live, active device: %+v", m)
	}
	_ = a3
}

// TestPasswdEndsDevicesInGrace: a password change removes the user's
// devices waiting for a resume at once (their call ends, peers see them
// offline); they cannot be resumed.
func TestPasswdEndsDevicesInGrace(t *testing.T) {
	ts, _ := newResumeServer(t, trio)
	carol := ts.loginR(t, "carol")
	a, b, _, _ := inCall(t, ts)
	carol.next(isType(protocol.TypeStatus)) // alice online
	a.drop()
	b.next(isType(protocol.TypeReconnecting))
	a2 := ts.loginR(t, "alice")
	if m := a2.do(`{"type":"passwd","user":"alice","password":%q,"new":"another-password"}`, testPassword); !m.OK {
		t.Fatalf("passwd: %s %s", m.Error, m.Reason)
	}
	if m := b.next(isType(protocol.TypeUnpair)); m.Reason != protocol.ReasonDisconnected {
		t.Fatalf("unpair: %+v", m)
	}
	if got := ts.Devices("alice"); got != 1 {
		t.Fatalf("alice has %d devices, want 1", got)
	}
	n := ts.openR(t)
	m := n.do(`{"type":"whoami","user":"alice","password":"another-password","resume":%q}`, a.device)
	if !m.OK || m.Device == a.device {
		t.Fatalf("resume after passwd: %+v", m)
	}
	noStatus(t, carol, "alice")
}

// TestMediaLost: a media connection of alice's dropped while her /meta is
// open: she gets a fresh force-call at once (rebound first); a report about
// the connection of an older ticket is stale and changes nothing; with
// alice's /meta in grace, the report waits for her resume.
func TestMediaLost(t *testing.T) {
	ts, rr := newResumeServer(t, trio)
	a, b, ta, _ := inCall(t, ts)
	call := rr.pairs[0].Call
	ts.MediaLost(call, "alice", ta)
	fc := a.next(isType(protocol.TypeForceCall))
	if rb, n := rr.lastRebind(); n != 1 || rb.Side.Ticket != fc.Ticket || fc.Ticket == ta {
		t.Fatalf("force-call %+v, rebinds %d", fc, n)
	}
	ts.MediaLost(call, "alice", ta) // stale: alice was rebound since
	noStatus(t, a, "bob")
	if _, n := rr.lastRebind(); n != 1 {
		t.Fatalf("%d rebinds after a stale report, want 1", n)
	}
	a.drop()
	b.next(isType(protocol.TypeReconnecting))
	ts.MediaLost(call, "alice", fc.Ticket)
	if _, n := rr.lastRebind(); n != 1 {
		t.Fatalf("%d rebinds while in grace, want 1", n)
	}
	if _, unpairs := rr.counts(); unpairs != 0 {
		t.Fatalf("%d unpairs", unpairs)
	}
}

// TestResumeAfterRestartGetsNewDevice: device ids never repeat across
// servers (a restart, or another node): after a restart alice's first new
// device does not get the id she had, and presenting the old id resumes
// nothing, neither a device of the old run nor the new one of her other tab.
func TestResumeAfterRestartGetsNewDevice(t *testing.T) {
	ts, _ := newResumeServer(t, trio)
	old := ts.loginR(t, "alice")
	old.drop()
	cfg := ts.cfg
	cfg.Media = &rebindRec{recorder: &recorder{}}
	s2, err := New(cfg) // the restarted server, same store
	if err != nil {
		t.Fatal(err)
	}
	ts2 := &testServer{Server: s2, st: ts.st, clk: ts.clk, media: ts.media}
	other := ts2.loginR(t, "alice")
	if other.device == old.device {
		t.Fatalf("the restarted server gave device id %q again", old.device)
	}
	r, m := ts2.resume(t, "alice", old)
	if !m.OK || m.Device == old.device || m.Device == other.device {
		t.Fatalf("resume of %q after the restart: ok=%v device %q (other tab %q)", old.device, m.OK, m.Device, other.device)
	}
	_ = r
	if got := ts2.Devices("alice"); got != 2 {
		t.Fatalf("alice has %d devices, want 2 (her other tab was taken over?)", got)
	}
}
