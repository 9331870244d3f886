package metaws

// NewGoroutineLoop returns a Loop that serves every connection with a
// goroutine of its own, as for TLS or without epoll: tests run both modes.
func NewGoroutineLoop(cfg Config) *Loop {
	l := New(cfg)
	l.p = nil
	return l
}

// Queued reports the bytes queued for the writer goroutine.
func (c *Conn) Queued() int64 { return c.queued.Load() }

// OnPartial makes l call f at each start (true) and end of an unfinished
// frame or message; set it before serving.
func (l *Loop) OnPartial(f func(bool)) { l.onPartial = f }
