package meta

import (
	"math"
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

// maxTableEntries bounds every per-key table of the login and lookup limits,
// so that an attacker who sends failures under ever new names or addresses
// cannot grow the server's memory without bound (about 150 bytes an entry).
// Entries that carry no information any more are swept; when a table is full
// of live entries, the oldest of a random sample is evicted.
const maxTableEntries = 50_000

// evictOne deletes the oldest of up to 8 entries of m (map iteration starts
// at a random place, so this is a random sample).
func evictOne[V any](m map[string]V, at func(V) time.Time) {
	var oldest string
	var oldestAt time.Time
	i := 0
	for k, v := range m {
		if t := at(v); i == 0 || t.Before(oldestAt) {
			oldest, oldestAt = k, t
		}
		if i++; i == 8 {
			break
		}
	}
	delete(m, oldest)
}

// bucket is a token bucket's state: tokens at instant at.
type bucket struct {
	tokens float64
	at     time.Time
}

// buckets are token buckets per key, each holding up to size tokens and
// refilled with one token per every. An absent key is a full bucket, so only
// keys that spent tokens take memory. The caller serialises access.
type buckets struct {
	size  float64       // ≤ 0: unlimited
	every time.Duration // refill period of one token
	m     map[string]*bucket
	swept time.Time // last sweep
}

func newBuckets(size int, every time.Duration) *buckets {
	return &buckets{size: float64(size), every: every, m: make(map[string]*bucket)}
}

// level returns the tokens key has at now.
func (b *buckets) level(key string, now time.Time) float64 {
	if b.size <= 0 {
		return math.Inf(1)
	}
	e := b.m[key]
	if e == nil {
		return b.size
	}
	return min(b.size, e.tokens+float64(now.Sub(e.at))/float64(b.every))
}

// add changes key's tokens by delta (negative to spend), within [0, size].
func (b *buckets) add(key string, delta float64, now time.Time) {
	if b.size <= 0 {
		return
	}
	t := max(0, min(b.size, b.level(key, now)+delta))
	if t >= b.size {
		delete(b.m, key)
		return
	}
	e := b.m[key]
	if e == nil {
		if len(b.m) >= maxTableEntries {
			if now.Sub(b.swept) >= time.Minute { // not a pass per insert
				b.sweep(now)
			}
			if len(b.m) >= maxTableEntries {
				evictOne(b.m, func(e *bucket) time.Time { return e.at })
			}
		}
		e = &bucket{}
		b.m[key] = e
	}
	e.tokens, e.at = t, now
}

// sweep forgets buckets that have refilled completely.
func (b *buckets) sweep(now time.Time) {
	b.swept = now
	for k := range b.m {
		if b.level(k, now) >= b.size {
			delete(b.m, k)
		}
	}
}
