//go:build !unix

package server

// fdSoftLimit: no RLIMIT_NOFILE here; MaxConns stays unlimited unless set.
func fdSoftLimit() (uint64, bool) { return 0, false }
