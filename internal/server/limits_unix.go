//go:build unix

package server

import "syscall"

// fdSoftLimit returns the process's RLIMIT_NOFILE soft limit. (Go raises
// it to the hard limit at start-up; a lower one was set on purpose.)
func fdSoftLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return uint64(rl.Cur), true
}
