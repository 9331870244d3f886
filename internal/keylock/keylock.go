// Package keylock serialises work per key (a user name) without a map of
// mutexes that grows forever: keys hash onto a fixed set of mutexes. Two keys
// may share a stripe; that costs some parallelism, never correctness.
package keylock

import (
	"hash/maphash"
	"sync"
)

// Stripes is a fixed set of mutexes addressed by key. The zero value is not
// usable; call New.
type Stripes struct {
	seed maphash.Seed
	mu   [64]sync.Mutex

	// Contended, if set, is called (before blocking) when Lock finds key's
	// stripe held: a hook for tests that force interleavings. Set it before
	// the Stripes is shared.
	Contended func(key string)
}

// New returns a Stripes.
func New() *Stripes { return &Stripes{seed: maphash.MakeSeed()} }

// Lock locks key's stripe and returns its unlock.
func (s *Stripes) Lock(key string) (unlock func()) {
	m := &s.mu[maphash.String(s.seed, key)%uint64(len(s.mu))]
	if !m.TryLock() {
		if s.Contended != nil {
			s.Contended(key)
		}
		m.Lock()
	}
	return m.Unlock
}
