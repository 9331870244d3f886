//go:build !unix

package metaws

import "errors"

// Without epoll there is no poller and no raw I/O: every connection is
// served by its own goroutine through net.Conn.
var errNoRawIO = errors.New("metaws: no raw socket I/O on this platform")

func readFD(uintptr, []byte) (int, error)  { return 0, errNoRawIO }
func writeFD(uintptr, []byte) (int, error) { return 0, errNoRawIO }
