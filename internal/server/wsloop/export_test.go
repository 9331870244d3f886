package wsloop

// NewGoroutineLoop returns a Loop that serves every connection with a
// goroutine of its own, as on platforms without epoll: tests run both modes.
func NewGoroutineLoop(cfg Config) *Loop {
	l := New(cfg)
	l.p = nil
	return l
}
