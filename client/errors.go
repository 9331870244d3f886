package client

import "errors"

// Sentinel errors of the client. Errors from the server are *protocol.Error
// values instead; match them with errors.Is(err, &protocol.Error{Code: …}).
var (
	// ErrClosed means the connection is gone: Close was called, or the
	// server or network ended it. Errors of requests cut short by the end of
	// the connection wrap both ErrClosed and the cause.
	ErrClosed = errors.New("client: connection closed")
	// ErrNotLoggedIn is returned, without contacting the server, by methods
	// that need the user name of a successful Login.
	ErrNotLoggedIn = errors.New("client: not logged in")
	// ErrUnpaired means a media connection ended because the call ended
	// (close 1000 "unpaired": hang-up, the peer's disconnect, shutdown).
	ErrUnpaired = errors.New("client: media unpaired")
	// ErrTicketRefused means the media server refused the ticket (close 1008):
	// unknown, expired, reused or the call already ended.
	ErrTicketRefused = errors.New("client: media ticket refused")
	// ErrNotForceCall is returned by Media for an event that is not a
	// force-call with a ticket.
	ErrNotForceCall = errors.New("client: not a force-call event")
	// ErrEventsOverflow means the client ended the connection because
	// Options.EventBuffer events were received and not read from Events:
	// rather than drop an event (a call, an unpair), it lets the app notice
	// and reconnect.
	ErrEventsOverflow = errors.New("client: too many unread events")
	// ErrBadURL is returned by Dial for a server URL it cannot use.
	ErrBadURL = errors.New("client: bad server URL")
)
