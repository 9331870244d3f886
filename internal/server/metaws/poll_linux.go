package metaws

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller is the process's epoll instance and the goroutine that waits on
// it. Each idle connection's fd is registered level-triggered and one-shot:
// one readiness event hands the connection to one goroutine, and nothing
// more arrives for it until that goroutine re-arms it.
type poller struct {
	epfd int
	f    *os.File // epfd, kept open
	gen  atomic.Uint32

	mu    sync.RWMutex // guards conns
	conns []*Conn      // by fd
}

var (
	pollOnce sync.Once
	thePoll  *poller
	pollErr  error
)

// sharedPoller returns the process's poller, starting it on first use. It
// is never stopped: one goroutine and one fd for the process's life.
func sharedPoller() (*poller, error) {
	pollOnce.Do(func() {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			pollErr = fmt.Errorf("metaws: epoll_create1: %w", err)
			return
		}
		// The epoll fd is itself pollable (readable when it has events):
		// Go's own netpoller waits for it, so no thread is parked in
		// epoll_wait and a wake-up costs no thread hand-off.
		if err := unix.SetNonblock(fd, true); err != nil {
			pollErr = fmt.Errorf("metaws: epoll fd: %w", err)
			return
		}
		f := os.NewFile(uintptr(fd), "metaws-epoll")
		rc, err := f.SyscallConn()
		if err != nil {
			pollErr = fmt.Errorf("metaws: epoll fd: %w", err)
			return
		}
		thePoll = &poller{epfd: fd, f: f}
		go thePoll.run(rc)
	})
	return thePoll, pollErr
}

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// add registers c's fd, armed. The caller holds c.mu.
func (p *poller) add(c *Conn) error {
	c.gen = p.gen.Add(1)
	p.mu.Lock()
	fd := int(c.fd)
	if fd >= len(p.conns) {
		n := max(2*len(p.conns), fd+1, 1024)
		conns := make([]*Conn, n)
		copy(conns, p.conns)
		p.conns = conns
	}
	p.conns[fd] = c // before the fd can fire
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: pollEvents, Fd: c.fd, Pad: int32(c.gen)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		p.conns[fd] = nil
		p.mu.Unlock()
		return fmt.Errorf("metaws: epoll_ctl add: %w", err)
	}
	return nil
}

// rearm waits for c's next readiness event. The caller holds c.mu.
func (p *poller) rearm(c *Conn) error {
	ev := unix.EpollEvent{Events: pollEvents, Fd: c.fd, Pad: int32(c.gen)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(c.fd), &ev); err != nil {
		return fmt.Errorf("metaws: epoll_ctl mod: %w", err)
	}
	return nil
}

// remove unregisters c before its fd is closed (and possibly reused). The
// caller holds c.mu.
func (p *poller) remove(c *Conn) {
	fd := int(c.fd)
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	p.mu.Lock()
	if fd < len(p.conns) && p.conns[fd] == c {
		p.conns[fd] = nil
	}
	p.mu.Unlock()
}

func (p *poller) run(rc syscall.RawConn) {
	evs := make([]unix.EpollEvent, 256)
	for {
		var n int
		var werr error
		err := rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), evs, 0)
			return n > 0 || (werr != nil && werr != unix.EINTR)
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			panic(fmt.Sprintf("metaws: epoll_wait: %v", err)) // EBADF/EFAULT/EINVAL: a bug
		}
		for _, ev := range evs[:n] {
			var c *Conn
			p.mu.RLock()
			if fd := int(ev.Fd); fd < len(p.conns) {
				c = p.conns[fd]
			}
			p.mu.RUnlock()
			// An event for an fd that was closed and reused is stale.
			if c != nil && c.gen == uint32(ev.Pad) {
				c.dispatch()
			}
		}
	}
}
