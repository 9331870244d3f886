package wsloop

import "errors"

var (
	// ErrClosed is returned by WriteText once the connection is closing or
	// closed: a close frame has been sent or the socket is gone.
	ErrClosed = errors.New("wsloop: connection closed")
	// errProtocol marks a frame that breaks RFC 6455 (close 1002).
	errProtocol = errors.New("wsloop: protocol error")
)
