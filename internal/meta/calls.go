package meta

import (
	"errors"
	"slices"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/plug"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// A call is ringing from the moment the callee's devices are told until one
// of them accepts (then it is active: paired) or the ringing stops (reject,
// cancel, timeout, disconnect). Both users' userState.call point at it while
// it exists; a user is in at most one call, which is what "busy" means.
type call struct {
	id        string
	caller    string
	callee    string
	tx        protocol.Tx // the caller's call tx; accept/reject must echo it
	callerDev *Session    // the device that rang
	calleeDev *Session    // the device that accepted; nil while ringing
	active    bool
	timer     clock.Timer // ringing timeout; nil once active
	started   int64       // clock nanoseconds at call, for the setup histogram
	// lost[i]: the other side was told that side i (0 caller, 1 callee) is
	// reconnecting, and has not been told it resumed yet.
	lost [2]bool
	// tickets[i] is the latest media ticket of side i (pair or rebind).
	tickets [2]string
}

// index returns 0 for the caller, 1 for the callee.
func (c *call) index(user string) int {
	if user == c.caller {
		return 0
	}
	return 1
}

func (c *call) other(user string) string {
	if user == c.caller {
		return c.callee
	}
	return c.caller
}

// device returns the device of user that is in the active call.
func (c *call) device(user string) *Session {
	if user == c.caller {
		return c.callerDev
	}
	return c.calleeDev
}

func (s *Server) ev(typ, user, peer string, tx protocol.Tx, reason string) []byte {
	return encodeEvent(protocol.Event{Type: typ, User: user, Peer: peer, Tx: tx, Reason: reason})
}

func (x *Session) handleCall(req *protocol.Request) {
	s := x.s
	a, b := x.user, req.Peer
	s.mu.Lock()
	ua, ub := x.meLocked(req), s.users[b]
	if ua == nil {
		s.mu.Unlock()
		return
	}
	if ub == nil {
		s.mu.Unlock()
		// The callee is offline: only a mutual peer may learn that.
		ctx, cancel := x.ctx()
		defer cancel()
		pu, err := s.cfg.Store.Get(ctx, b)
		s.mu.Lock()
		listsB := !x.gone && s.users[a] != nil && s.users[a].lists(b)
		s.mu.Unlock()
		switch {
		case errors.Is(err, store.ErrNotFound) || (err == nil && (!listsB || !slices.Contains(pu.Peers, a))):
			x.fail(req, protocol.Errorf(protocol.ErrNotAPeer, "%s and %s are not mutual peers", a, b))
		case err != nil:
			x.unavailable(req, err)
		default:
			// Recorded before the answer goes out, so that whatever the
			// caller does next (a shutdown, missed-calls) finds it queued.
			s.recordMissed(a, b, protocol.ReasonOffline)
			x.fail(req, protocol.Errorf(protocol.ErrOffline, "%s is not online", b))
		}
		return
	}
	defer s.mu.Unlock()
	if !ua.lists(b) || !ub.lists(a) {
		x.fail(req, protocol.Errorf(protocol.ErrNotAPeer, "%s and %s are not mutual peers", a, b))
		return
	}
	if c := ua.call; c != nil {
		if !c.active && c.caller == b && c.callee == a {
			// Glare: both want the call, so pair them now.
			x.ok(req)
			c.timer.Stop()
			c.timer = nil
			c.active = true
			c.calleeDev = x
			// x's own view: its call was accepted by b.
			x.send(s.ev(protocol.TypeAccept, b, a, req.Tx, ""))
			c.callerDev.send(s.ev(protocol.TypeAccept, a, b, c.tx, ""))
			s.cancelOthersLocked(ua, x, c, protocol.ReasonAnsweredElsewhere)
			s.pairLocked(c)
			return
		}
		x.fail(req, protocol.Errorf(protocol.ErrBusy, "you are already in a call with %s", c.other(a)))
		return
	}
	if ub.call != nil {
		x.fail(req, protocol.Errorf(protocol.ErrBusy, "%s is busy", b))
		return
	}
	c := &call{id: s.newCallID(), caller: a, callee: b, tx: req.Tx, callerDev: x,
		started: s.cfg.Clock.Now().UnixNano()}
	c.timer = s.cfg.Clock.AfterFunc(s.cfg.RingingTimeout, func() { s.ringingTimeout(c) })
	ua.call, ub.call = c, c
	s.calls[c.id] = c
	s.m.calls.WithLabelValues("started").Inc()
	x.ok(req)
	msg := s.ev(protocol.TypeCall, a, b, req.Tx, "")
	for _, d := range ub.devices {
		d.send(msg)
	}
}

// ringingCallLocked returns the ringing call from caller to callee with tx,
// or nil.
func (s *Server) ringingCallLocked(caller, callee string, tx protocol.Tx) *call {
	us := s.users[callee]
	if us == nil || us.call == nil {
		return nil
	}
	c := us.call
	if c.active || c.caller != caller || c.callee != callee || (tx != "" && !c.tx.Same(tx)) {
		return nil
	}
	return c
}

// answerableLocked returns the ringing call that an accept or reject from x
// answers and acknowledges req, or answers no-call and returns nil.
func (x *Session) answerableLocked(req *protocol.Request) *call {
	if x.meLocked(req) == nil {
		return nil
	}
	c := x.s.ringingCallLocked(req.Peer, x.user, req.Tx)
	if c == nil {
		x.fail(req, protocol.Errorf(protocol.ErrNoCall, "no call from %s is ringing with this tx", req.Peer))
		return nil
	}
	x.ok(req)
	return c
}

func (x *Session) handleAccept(req *protocol.Request) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	c := x.answerableLocked(req)
	if c == nil {
		return
	}
	c.timer.Stop()
	c.timer = nil
	c.active = true
	c.calleeDev = x
	c.callerDev.send(s.ev(protocol.TypeAccept, c.callee, c.caller, c.tx, ""))
	s.cancelOthersLocked(s.users[c.callee], x, c, protocol.ReasonAnsweredElsewhere)
	s.pairLocked(c)
}

// cancelOthersLocked stops the ringing on the callee's devices other than
// except.
func (s *Server) cancelOthersLocked(us *userState, except *Session, c *call, reason string) {
	msg := s.ev(protocol.TypeCancel, c.caller, c.callee, c.tx, reason)
	for _, d := range us.devices {
		if d != except {
			d.send(msg)
		}
	}
}

// pairLocked emits pair(A, B) to the media side, then sends force-call to
// the two devices of the call. The order matters: the tickets must be known
// to the media server before a device can present them.
func (s *Server) pairLocked(c *call) {
	p := plug.Pair{Call: c.id, Sides: [2]plug.Side{
		{User: c.caller, Device: c.callerDev.device, Peer: c.callee, Ticket: newTicket()},
		{User: c.callee, Device: c.calleeDev.device, Peer: c.caller, Ticket: newTicket()},
	}}
	c.tickets = [2]string{p.Sides[0].Ticket, p.Sides[1].Ticket}
	s.cfg.Media.Pair(p)
	s.m.calls.WithLabelValues("paired").Inc()
	s.m.setup.Observe(float64(s.cfg.Clock.Now().UnixNano()-c.started) / 1e9)
	for i, d := range []*Session{c.callerDev, c.calleeDev} {
		d.send(encodeEvent(protocol.Event{Type: protocol.TypeForceCall, Peer: p.Sides[i].Peer,
			Ticket: p.Sides[i].Ticket, Media: protocol.MediaPath}))
	}
	// A caller in grace when its call was accepted: the callee learns it
	// is reconnecting; its resume brings a fresh force-call.
	for _, d := range []*Session{c.callerDev, c.calleeDev} {
		if d.inGrace {
			s.announceDropLocked(c, d)
		}
	}
}

func (x *Session) handleReject(req *protocol.Request) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	c := x.answerableLocked(req)
	if c == nil {
		return
	}
	c.callerDev.send(s.ev(protocol.TypeReject, c.callee, c.caller, c.tx, protocol.ReasonRejected))
	s.cancelOthersLocked(s.users[c.callee], x, c, protocol.ReasonAnsweredElsewhere)
	s.dropCallLocked(c, protocol.ReasonRejected)
}

func (x *Session) handleCancel(req *protocol.Request) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if x.meLocked(req) == nil {
		return
	}
	c := s.ringingCallLocked(x.user, req.Peer, "")
	if c == nil {
		x.fail(req, protocol.Errorf(protocol.ErrNoCall, "you are not ringing %s", req.Peer))
		return
	}
	x.ok(req)
	s.cancelOthersLocked(s.users[c.callee], nil, c, protocol.ReasonCancelled)
	s.dropCallLocked(c, protocol.ReasonCancelled)
}

func (x *Session) handleUnpair(req *protocol.Request) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	us := x.meLocked(req)
	if us == nil {
		return
	}
	c := us.call
	if c == nil || !c.active || c.other(x.user) != req.Peer {
		x.fail(req, protocol.Errorf(protocol.ErrNoCall, "you are not in a call with %s", req.Peer))
		return
	}
	x.ok(req)
	s.endCallLocked(c, x.user, protocol.ReasonHangup, x)
}

// endCallLocked ends call c, ringing or active. by is the user who caused
// the end ("" for the server itself), skip a device that needs no message
// (the one that asked). Ringing calls: the caller's device gets reject and
// the callee's devices cancel. Active calls: both in-call devices get unpair
// and the media side is told.
func (s *Server) endCallLocked(c *call, by, reason string, skip ...*Session) {
	if !c.active {
		c.callerDev.send(s.ev(protocol.TypeReject, c.callee, c.caller, c.tx, reason))
		s.cancelOthersLocked(s.users[c.callee], nil, c, reason)
		s.dropCallLocked(c, reason)
		return
	}
	for _, u := range []string{c.caller, c.callee} {
		d := c.device(u)
		if d == nil || slices.Contains(skip, d) {
			continue
		}
		// The receiver learns which call ended: user is always its partner.
		d.send(s.ev(protocol.TypeUnpair, c.other(u), u, "", reason))
	}
	s.dropCallLocked(c, reason)
}

// dropCallLocked forgets c and, if it was paired, emits unpair.
func (s *Server) dropCallLocked(c *call, reason string) {
	if s.calls[c.id] != c {
		return
	}
	delete(s.calls, c.id)
	if !c.active {
		s.recordMissed(c.caller, c.callee, reason) // only for missedReasons
	}
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	for _, u := range []string{c.caller, c.callee} {
		if us := s.users[u]; us != nil && us.call == c {
			us.call = nil
		}
	}
	s.m.calls.WithLabelValues(reason).Inc()
	if c.active {
		s.cfg.Media.Unpair(plug.Unpair{Call: c.id, Reason: reason})
	}
}

func (s *Server) ringingTimeout(c *call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls[c.id] != c || c.active {
		return
	}
	s.endCallLocked(c, "", protocol.ReasonTimeout)
}

// deviceGoneLocked settles c after device x of us disconnected.
func (s *Server) deviceGoneLocked(c *call, us *userState, x *Session) {
	switch {
	case c.active && c.device(us.name) == x:
		s.endCallLocked(c, us.name, protocol.ReasonDisconnected, x)
	case !c.active && c.callerDev == x:
		s.cancelOthersLocked(s.users[c.callee], nil, c, protocol.ReasonDisconnected)
		s.dropCallLocked(c, protocol.ReasonDisconnected)
	case !c.active && c.callee == us.name && len(us.devices) == 0:
		c.callerDev.send(s.ev(protocol.TypeReject, c.callee, c.caller, c.tx, protocol.ReasonOffline))
		s.dropCallLocked(c, protocol.ReasonOffline)
	}
}

// EndCall implements plug.CallEnder: the media side ends a call because a
// media connection of user's side failed, closed, or never arrived.
func (s *Server) EndCall(callID, user, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[callID]
	if c == nil || !c.active {
		return
	}
	s.endCallLocked(c, user, reason)
}

var _ plug.CallEnder = (*Server)(nil)
