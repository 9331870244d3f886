package store

import (
	"hash/maphash"
	"slices"
	"sync"
)

// stripes serialises read-modify-write cycles per user name without a map of
// per-user mutexes that would grow forever: names hash onto a fixed set of
// mutexes. Two users may share a stripe; that only costs some parallelism.
type stripes struct {
	seed maphash.Seed
	mu   [64]sync.Mutex
}

func newStripes() *stripes { return &stripes{seed: maphash.MakeSeed()} }

// lock locks name's stripe and returns its unlock.
func (s *stripes) lock(name string) func() {
	m := &s.mu[maphash.String(s.seed, name)%uint64(len(s.mu))]
	m.Lock()
	return m.Unlock
}

// clonePeers copies peers so that callers and the store never share a
// backing array; the result is never nil so that it encodes as [].
func clonePeers(peers []string) []string {
	if peers == nil {
		return []string{}
	}
	return slices.Clone(peers)
}

func cloneUser(u User) User {
	u.Peers = clonePeers(u.Peers)
	return u
}

// capMissed keeps the newest max entries of list (oldest first); max ≤ 0
// keeps everything.
func capMissed(list []MissedCall, max int) []MissedCall {
	if max > 0 && len(list) > max {
		list = slices.Clone(list[len(list)-max:])
	}
	return list
}
