package metaws

// NewGoroutineLoop returns a Loop that serves every connection with a
// goroutine of its own, as for TLS: tests run both modes.
func NewGoroutineLoop(cfg Config) *Loop {
	l := New(cfg)
	l.noPoll = true
	return l
}

// Queued reports the bytes handed to the socket layer and not yet written.
func (c *Conn) Queued() int64 { return c.queued.Load() }

// OnPartial makes l call f at each start (true) and end of an unfinished
// frame or message; set it before serving.
func (l *Loop) OnPartial(f func(bool)) { l.onPartial = f }
