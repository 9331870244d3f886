// Package plug is the seam between the metadata server, which decides who is
// paired with whom, and the media server, which connects their media. The
// metadata server emits Pair and Unpair events to a Media; the media side
// reports a call's end back through a CallEnder. In-process the two are
// wired directly; a cluster mode carries the same events over NATS, which is
// why they are plain values with no pointers into either server.
package plug

// Side is one device of a paired call.
type Side struct {
	User   string // the device's user
	Device string // the device id whoami returned
	Peer   string // the user on the other side
	// Ticket is the single-use secret this device presents on /media. It is
	// a credential: never log it.
	Ticket string
}

// Pair says: connect the media of these two devices, for this call.
type Pair struct {
	Call  string  // unique call id, also the key of the later Unpair
	Sides [2]Side // Sides[0] is the caller's device, Sides[1] the callee's
}

// Unpair says: the call is over; cut its media and void its tickets.
type Unpair struct {
	Call   string
	Reason string // protocol.Reason*: hangup, disconnected, shutdown, …
}

// Rebind says: one side of a live call is coming back on a new connection
// (its device resumed, contract section 8). The media side voids that side's
// old tickets, drops its old media connection if one is still open, registers
// Side.Ticket and joins the side's next /media connection to the other
// side's media, which stays up. It is emitted before the device's fresh
// force-call, so the ticket is known when the device presents it.
type Rebind struct {
	Call string
	Side Side
}

// Rebinder is implemented by Media that can re-pair a side of a live call.
// A Media without it ends a call whose device resumed when its media drops
// (the v1 behaviour).
type Rebinder interface {
	Rebind(Rebind)
}

// MediaLoser is implemented by a CallEnder that gives a side whose media
// connection dropped (no clean close from the device) a grace window to
// come back, instead of ending the call at once. The media side keeps the
// call and the other side's connection open; the metadata server later
// either sends a Rebind for that side or an Unpair.
type MediaLoser interface {
	MediaLost(call, user string)
}

// Media consumes pair and unpair events. Implementations must not block for
// long: the metadata server calls them while answering a client.
type Media interface {
	Pair(Pair)
	Unpair(Unpair)
}

// CallEnder is how the media side ends a call: a media connection closed, a
// receiver stopped reading, or the peer's media never arrived. The metadata
// server then tells both users (unpair with reason) and emits Unpair.
type CallEnder interface {
	EndCall(call, user, reason string)
}

// Discard is a Media that ignores every event, for a metadata server run
// without a media server.
type Discard struct{}

// Pair ignores p.
func (Discard) Pair(Pair) {}

// Unpair ignores u.
func (Discard) Unpair(Unpair) {}

var _ Media = Discard{}
