package media

import (
	"errors"
	"os"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/internal/plug"
	"github.com/user-media-plug/umplug/protocol"
)

// Resume (contract section 8) in relay mode. A side whose /media connection
// ends without a close frame (TCP reset or EOF) is lost, not gone: the call
// and the other side's connection stay, the metadata server is told
// (plug.MediaLoser) and answers with a Rebind (a new ticket for that side,
// sent to its device in a fresh force-call) or an Unpair (the device did not
// resume in time). The side's next connection, presenting the new ticket,
// gets "paired" again and the relay goes on both ways.
//
// Decisions:
//   - Frames the other side sends while a side is lost wait: its relay
//     goroutine, holding the next message, waits for the side to come back
//     (later ones wait in TCP: backpressure) and delivers them after the
//     re-pair. Messages written before the server noticed the drop (into
//     the dead socket) are lost, as is the one being written when it broke
//     (its rest is read and discarded): the relay does not retransmit.
//   - A close with 1000 (normal closure) from the device ends the call at
//     once, as does a receiver too slow to drain one chunk within
//     WriteTimeout. Any other end is a drop given a chance to come back: no
//     close frame (TCP reset or EOF), but also 1001 "going away", which is
//     what a browser sends for every WebSocket of a page being reloaded or
//     closed, and application codes (4xxx). Without a resume the call ends
//     when the metadata server's grace window passes, as for a drop.
//   - A lost or rebound side has MediaWait to connect with its new ticket;
//     then the call ends as disconnected, blaming it.
//   - WebRTC: a side whose signalling connection drops (or whose peer
//     connection fails) after the call was paired is lost the same way;
//     its PeerConnection is closed, the other side's stays. The side's new
//     /media connection gets a new PeerConnection (offered the other
//     side's tracks; a keyframe is requested from the other side's video
//     senders), "paired" when it is up (to it only), and the tracks it
//     sends feed the copies the other side already receives (same kind and
//     codec), so the other side's connection is not renegotiated; a
//     keyframe is requested from the new sender. The copies keep their
//     SSRC; the new sender's packets are renumbered to follow the old
//     sender's (rtpseq.go). A side that comes back in the other media mode ends the
//     call as disconnected.

// Rebind implements plug.Rebinder: side r.Side of call r.Call gets a new
// ticket; its old tickets are void, its old connection (if any) is cut, and
// its next connection rejoins the call.
func (s *Server) Rebind(r plug.Rebind) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	cl := s.calls[r.Call]
	if cl == nil || cl.ended {
		return
	}
	var sd *side
	for _, x := range cl.sides {
		if x.user == r.Side.User {
			sd = x
		}
	}
	if sd == nil {
		return
	}
	if sd.ticket != "" && s.tickets[sd.ticket] == sd {
		delete(s.tickets, sd.ticket)
	}
	sd.ticket = ""
	if r.Side.Ticket == "" || s.tickets[r.Side.Ticket] != nil {
		s.log.Error("media: rebind with an empty or duplicate ticket", "call", cl.id, "user", sd.user)
	} else {
		sd.ticket, sd.issued = r.Side.Ticket, s.clock.Now()
		s.tickets[sd.ticket] = sd
	}
	if old := sd.conn; old != nil {
		// Cut the old connection: its ServeConn finds it is no longer
		// current and leaves quietly.
		sd.conn = nil
		sd.live.Store(nil)
		sd.rtcUp = false
		if !cl.joined {
			cl.arrived--
		}
		s.wakeLocked(cl)
		_ = old.Close()
	}
	s.expectBackLocked(sd)
	s.log.Info("media: side rebound", "call", cl.id, "user", sd.user)
}

var _ plug.Rebinder = (*Server)(nil)

// isPaired reports whether cl was paired (both sides connected once).
func (s *Server) isPaired(cl *call) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cl.joined
}

// wakeLocked wakes the relays waiting for a side of cl to change.
func (s *Server) wakeLocked(cl *call) {
	close(cl.changed)
	cl.changed = make(chan struct{})
}

// expectBackLocked gives sd MediaWait to connect again.
func (s *Server) expectBackLocked(sd *side) {
	if sd.back != nil {
		sd.back.Stop()
	}
	cl := sd.call
	sd.back = s.clock.AfterFunc(s.mediaWait, func() {
		s.mu.Lock()
		if cl.ended || sd.conn != nil {
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.log.Info("media: side did not come back in time", "call", cl.id, "user", sd.user)
		s.fail(cl, sd.user)
	})
}

// lose marks sd, whose connection c dropped, as lost and tells the
// metadata server.
func (s *Server) lose(sd *side, c *websocket.Conn) {
	s.mu.Lock()
	cl := sd.call
	if cl.ended || sd.conn != c {
		s.mu.Unlock()
		return
	}
	sd.conn = nil
	sd.live.Store(nil)
	sd.rtcUp = false
	used := sd.used
	s.wakeLocked(cl)
	s.expectBackLocked(sd)
	s.mu.Unlock()
	s.log.Info("media: side dropped, waiting for it to come back", "call", cl.id, "user", sd.user)
	s.loser.MediaLost(cl.id, sd.user, used)
}

// rejoin joins c, the new connection of a rebound side, to its paired call:
// "paired" again, then it becomes the side's connection (the other side's
// relay writes to it from then on). It reports false (c answered or cut)
// if it cannot.
func (s *Server) rejoin(sd *side, c *websocket.Conn, mode, ticket string) bool {
	cl := sd.call
	rtc := mode == protocol.MediaModeWebRTC
	if cl.webrtc != rtc {
		s.mu.Lock()
		s.endLocked(cl, protocol.ReasonDisconnected)
		s.mu.Unlock()
		s.log.Info("media: a side came back in another media mode", "call", cl.id, "user", sd.user)
		s.ender.EndCall(cl.id, sd.user, protocol.ReasonDisconnected)
		s.drain(c)
		return false
	}
	if !rtc {
		// WebRTC: "paired" comes when the new peer connection is up.
		_ = c.SetWriteDeadline(time.Now().Add(s.writeTimeout))
		if err := c.WriteJSON(protocol.Paired{Type: protocol.TypePaired, Peer: sd.peer().user}); err != nil {
			return false // the back timer settles it
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl.ended {
		return false
	}
	if sd.conn != nil {
		_ = sd.conn.Close() // a connection of an older ticket
	}
	sd.conn, sd.mode, sd.used = c, mode, ticket
	sd.live.Store(c)
	sd.rtcUp = false
	if sd.back != nil {
		sd.back.Stop()
		sd.back = nil
	}
	s.wakeLocked(cl)
	s.log.Info("media: side rejoined", "call", cl.id, "user", sd.user)
	return true
}

// target returns dst's current connection other than bad, waiting while dst
// is lost; nil when the call ended.
func (s *Server) target(dst *side, bad *websocket.Conn) *websocket.Conn {
	cl := dst.call
	for {
		s.mu.Lock()
		if cl.ended {
			s.mu.Unlock()
			return nil
		}
		if dst.conn != nil && dst.conn != bad {
			c := dst.conn
			s.mu.Unlock()
			return c
		}
		ch := cl.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-cl.done:
		}
	}
}

// cut settles a failed write to dst's connection dc: it reports true when
// dst is to blame at once (no resume, or a receiver too slow: v1), else it
// cuts dc, so that dst's own relay sees the drop, and the writer waits for
// dst to come back.
func (s *Server) cut(dc *websocket.Conn, err error) (blame bool) {
	if s.loser == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	_ = dc.Close()
	return false
}

// deliberate reports whether a media connection's read error is the device
// ending its media on purpose: a close frame with 1000. gorilla reports a
// TCP EOF as 1006, never sent on the wire; 1001 is what a browser sends for
// a page that is reloading, which must not end the call before the reloaded
// page can resume it.
func deliberate(err error) bool {
	var ce *websocket.CloseError
	return errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure
}
