//go:build unix

package metaws

import "syscall"

// readFD and writeFD are one non-blocking read or write on a socket's fd
// (Go keeps its sockets in non-blocking mode).
func readFD(fd uintptr, b []byte) (int, error)  { return syscall.Read(int(fd), b) }
func writeFD(fd uintptr, b []byte) (int, error) { return syscall.Write(int(fd), b) }
