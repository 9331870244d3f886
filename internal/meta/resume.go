package meta

import (
	"bytes"
	"slices"
	"time"

	"github.com/user-media-plug/umplug/internal/plug"
	"github.com/user-media-plug/umplug/protocol"
)

// takeoverQuiet is how long a still-open connection must have been quiet
// (no message from its client) before a resume of its device takes it over.
// A half-open socket (the device moved to another network and the server has
// not noticed yet) has been quiet since the device left; a connection that
// spoke a moment ago is alive, or is the winner of two racing resumes, and
// keeps its device: the resume gets a new device id instead.
const takeoverQuiet = 2 * time.Second

var (
	resPrefix       = []byte(`{"type":"res"`)
	forceCallPrefix = []byte(`{"type":"force-call"`)
	callPrefix      = []byte(`{"type":"call"`)
)

// PeerCloser is implemented by a Conn whose transport knows how the client
// ended the connection: PeerCloseCode returns the code of the close frame
// the client sent first, or 0 when the connection ended without one (TCP
// reset or EOF, idle timeout, frame error). A Conn without it is treated as
// if every end were a deliberate goodbye (v1: no resume).
type PeerCloser interface {
	PeerCloseCode() int
}

// dropped reports whether the connection's end may be resumed: anything but
// a close 1000 from the client (a deliberate goodbye) or a policy close by
// the server (1008: abuse, slow consumer, password changed, resumed
// elsewhere).
func (x *Session) dropped() bool {
	if x.terminal.Load() {
		return false
	}
	pc, ok := x.conn.(PeerCloser)
	if !ok {
		return false
	}
	return pc.PeerCloseCode() != protocol.CloseNormal
}

// enterGraceLocked keeps the dropped device x in its user's devices and its
// call for the grace window. Frames queued to it are dropped meanwhile (its
// queue is closed): a resumed device gets a fresh view (force-call, or the
// ringing call again; it asks peers itself).
func (s *Server) enterGraceLocked(x *Session) {
	x.inGrace = true
	x.qmu.Lock()
	x.buffering = true
	x.qmu.Unlock()
	x.graceTimer = s.cfg.Clock.AfterFunc(s.cfg.ResumeGrace, func() { s.graceExpired(x) })
	s.m.graceDevices.Inc()
	if us := s.users[x.user]; us != nil && us.call != nil {
		s.announceDropLocked(us.call, x)
	}
}

// announceDropLocked tells the other side of the active call c that x, a
// device of the call, is reconnecting (once per drop).
func (s *Server) announceDropLocked(c *call, x *Session) {
	if !c.active || c.device(x.user) != x {
		return
	}
	i := c.index(x.user)
	if c.lost[i] {
		return
	}
	c.lost[i] = true
	other := c.other(x.user)
	if d := c.device(other); d != nil {
		d.send(s.ev(protocol.TypeReconnecting, x.user, other, "", ""))
	}
}

// graceExpired removes a device that did not resume in time: the v1
// outcome of its disconnect follows (its call ends, offline if it was the
// user's last device).
func (s *Server) graceExpired(x *Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !x.inGrace {
		return // resumed, or shut down
	}
	s.leaveGraceLocked(x)
	x.qmu.Lock()
	x.graceBuf, x.buffering = nil, false
	x.qmu.Unlock()
	s.removeDeviceLocked(x)
}

func (s *Server) leaveGraceLocked(x *Session) {
	x.inGrace = false
	if x.graceTimer != nil {
		x.graceTimer.Stop()
		x.graceTimer = nil
	}
	s.m.graceDevices.Dec()
}

// resumableLocked returns the session whose device x's whoami may take
// over, or nil: then x gets a new device id, and nothing of any other
// device is touched (an unknown or expired id, another user's device, a
// device whose connection is alive).
func (s *Server) resumableLocked(user, device string) *Session {
	old := s.devs[device]
	if old == nil || old.user != user || s.cfg.ResumeGrace <= 0 {
		return nil
	}
	if old.inGrace {
		return old
	}
	if old.gone || old.replaced {
		return nil
	}
	quiet := s.cfg.Clock.Now().UnixNano() - old.lastIn.Load()
	if quiet < int64(takeoverQuiet) {
		return nil
	}
	return old
}

// takeOverLocked moves old's device (its id, its place among the user's
// devices, its call) to x. A still-open old connection is closed (1008
// "resumed elsewhere") and its own end changes nothing any more.
// It returns the events old's device missed while in grace.
func (s *Server) takeOverLocked(x, old *Session, us *userState) (replay [][]byte) {
	x.device = old.device
	if old.inGrace {
		s.leaveGraceLocked(old)
		old.qmu.Lock()
		replay = old.graceBuf
		old.graceBuf, old.buffering = nil, false
		old.qmu.Unlock()
	} else {
		old.replaced = true
		old.gone = true
		old.terminal.Store(true)
		old.conn.Close(protocol.ClosePolicy, protocol.CloseReasonResumed)
	}
	if i := slices.Index(us.devices, old); i >= 0 {
		us.devices[i] = x
	} else {
		us.devices = append(us.devices, x) // not expected: old was a device
		s.m.devices.Inc()
	}
	s.devs[x.device] = x
	if c := us.call; c != nil {
		if c.callerDev == old {
			c.callerDev = x
		}
		if c.calleeDev == old {
			c.calleeDev = x
		}
	}
	s.m.resumes.Inc()
	return replay
}

// afterResumeLocked gives the resumed device x its fresh view, after its
// whoami response: in an active call, the other side learns it is back
// (resumed) and x gets a fresh force-call (rebind first: invariant 5); in a
// call still ringing for x's user, x rings again.
//
// Before that, the events the device missed while in grace are replayed
// (replay), in order: an unpair, cancel or reject that ended its call
// meanwhile, the accept of the call it rang, presence changes.
func (s *Server) afterResumeLocked(x *Session, us *userState, replay [][]byte) {
	rang := false
	for _, b := range replay {
		if bytes.HasPrefix(b, forceCallPrefix) {
			continue // its ticket is void: a fresh one follows
		}
		rang = rang || bytes.HasPrefix(b, callPrefix)
		x.send(b)
	}
	c := us.call
	if c == nil {
		return
	}
	switch {
	case c.active && c.device(x.user) == x:
		i := c.index(x.user)
		if c.lost[i] {
			c.lost[i] = false
			other := c.other(x.user)
			if d := c.device(other); d != nil {
				d.send(s.ev(protocol.TypeResumed, x.user, other, "", ""))
			}
		}
		s.rebindLocked(c, x)
	case !c.active && c.callee == x.user && !rang:
		x.send(s.ev(protocol.TypeCall, c.caller, c.callee, c.tx, ""))
	}
}

// rebindLocked gives device d of the active call c a new media ticket: the
// media side voids its old ones and re-pairs its next /media connection
// with the other side's media; then d is told (force-call).
func (s *Server) rebindLocked(c *call, d *Session) {
	side := plug.Side{User: d.user, Device: d.device, Peer: c.other(d.user), Ticket: newTicket()}
	if rb, ok := s.cfg.Media.(plug.Rebinder); ok {
		rb.Rebind(plug.Rebind{Call: c.id, Side: side})
	}
	d.send(encodeEvent(protocol.Event{Type: protocol.TypeForceCall, Peer: side.Peer,
		Ticket: side.Ticket, Media: protocol.MediaPath}))
}

// MediaLost implements plug.MediaLoser: the media connection of user's side
// of the call dropped without a clean close. If the device's /meta
// connection dropped too (it is in grace), its resume or the end of its
// grace settles the call. If it is still open (or its drop is not noticed
// yet), the device gets a fresh force-call at once to reconnect its media;
// the media server ends the call if that media does not arrive in time.
// Without resume (ResumeGrace < 0) the call ends at once (v1).
func (s *Server) MediaLost(callID, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[callID]
	if c == nil || !c.active {
		return
	}
	d := c.device(user)
	switch {
	case d == nil:
	case s.cfg.ResumeGrace <= 0 || s.shutdown:
		s.endCallLocked(c, user, protocol.ReasonDisconnected)
	case d.inGrace:
		// The resume (or the grace's end) settles it.
	default:
		s.rebindLocked(c, d)
	}
}

var _ plug.MediaLoser = (*Server)(nil)
