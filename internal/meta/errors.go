package meta

import "errors"

// Errors returned by Server.Open; the transport maps them to HTTP statuses.
var (
	ErrShutdown     = errors.New("meta: server is shutting down")
	ErrTooManyConns = errors.New("meta: too many connections")
)
