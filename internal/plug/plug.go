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
