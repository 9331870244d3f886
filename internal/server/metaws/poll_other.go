//go:build !linux

package metaws

import "errors"

// poller does not exist here: every connection gets a goroutine.
type poller struct{}

func sharedPoller() (*poller, error) { return nil, errors.New("metaws: no epoll on this platform") }

func (p *poller) add(c *Conn) error   { return errors.New("metaws: no poller") }
func (p *poller) rearm(c *Conn) error { return errors.New("metaws: no poller") }
func (p *poller) remove(c *Conn)      {}
