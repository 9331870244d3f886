package meta

import (
	"sync"
	"time"

	"github.com/user-media-plug/umplug/internal/clock"
)

// windowLimiter counts events per key in fixed windows: enough to stop
// password guessing and registration floods without per-key goroutines.
type windowLimiter struct {
	clk    clock.Clock
	window time.Duration

	mu   sync.Mutex // guards the following
	hits map[string]*windowCount
}

type windowCount struct {
	start time.Time
	n     int
}

func newWindowLimiter(clk clock.Clock, window time.Duration) *windowLimiter {
	return &windowLimiter{clk: clk, window: window, hits: make(map[string]*windowCount)}
}

// allow reports whether key has had fewer than max events in its window.
func (l *windowLimiter) allow(key string, max int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.hits[key]
	return w == nil || l.clk.Now().Sub(w.start) >= l.window || w.n < max
}

// record counts one event for key.
func (l *windowLimiter) record(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clk.Now()
	w := l.hits[key]
	if w == nil || now.Sub(w.start) >= l.window {
		if len(l.hits) > 100_000 {
			l.sweepLocked(now)
		}
		w = &windowCount{start: now}
		l.hits[key] = w
	}
	w.n++
}

func (l *windowLimiter) sweepLocked(now time.Time) {
	for k, w := range l.hits {
		if now.Sub(w.start) >= l.window {
			delete(l.hits, k)
		}
	}
}
