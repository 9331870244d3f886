// Package password hashes and verifies user passwords with argon2id and
// stores them as PHC strings ($argon2id$v=19$m=…,t=…,p=…$salt$key).
//
// argon2id is memory-hard on purpose: each hash holds Params.Memory KiB for
// its duration. A Hasher therefore bounds how many hashes run at once, so that
// a burst of logins cannot exhaust the server's memory; callers wait for a
// slot with their context. Waiting is fair between keys (the server passes
// the client's address): free slots go round-robin to the keys that have
// jobs waiting, so one address that queues hundreds of logins delays another
// address's login by at most one hash per waiting key, not by its whole queue.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id's cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes over the memory
	Threads uint8  // lanes (the PHC p= parameter)
	SaltLen uint32 // bytes
	KeyLen  uint32 // bytes
}

// OWASP is the OWASP Password Storage Cheat Sheet minimum for argon2id
// (m=19 MiB, t=2, p=1), the contract's floor for stored hashes.
var OWASP = Params{Memory: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// Limits on parameters read from a stored hash. A hash beyond them is treated
// as malformed rather than computed: verifying it would let one corrupt record
// take a gigabyte of memory or minutes of CPU.
const (
	maxMemory  = 1 << 20 // KiB = 1 GiB
	maxTime    = 100
	minSaltLen = 8
	maxSaltLen = 1024
	minKeyLen  = 16
	maxKeyLen  = 1024
)

// Config configures a Hasher. The zero value is the OWASP minimum with one
// concurrent hash per two CPUs.
type Config struct {
	// Params are used for new hashes. Zero means OWASP. Verify always uses
	// the parameters stored in the hash, so raising them later keeps old
	// hashes valid.
	Params Params
	// MaxConcurrent bounds hashes running at once (Hash, Verify and
	// VerifyUnknown together). Zero means half the CPUs (at least one): a
	// login flood then leaves the other half to signalling, which keeps call
	// latency low while hashes queue (measured with umplug bench login-flood:
	// calls' p99 84 ms with every CPU hashing on 2 cores). Peak memory is
	// about MaxConcurrent × Params.Memory KiB.
	MaxConcurrent int
}

// Hasher hashes and verifies passwords. It is safe for concurrent use.
type Hasher struct {
	params     Params
	slots      int    // hashes that may run at once
	dummy      string // a PHC string with params that matches no password
	runs       atomic.Uint64
	queued     chan<- struct{} // tests only: told when a job starts waiting
	queuedRecv <-chan struct{} // tests only: the other end of queued

	mu      sync.Mutex // guards the following
	running int        // slots taken
	queues  map[string][]*waiter
	ring    []string // keys with waiters, in round-robin order
	next    int      // index in ring of the key served next
}

// waiter is one job waiting for a slot. granted is set (under Hasher.mu)
// when a slot is handed to it, and ready is closed then.
type waiter struct {
	ready   chan struct{}
	granted bool
}

// New returns a Hasher for cfg.
func New(cfg Config) *Hasher {
	p := cfg.Params
	if p == (Params{}) {
		p = OWASP
	}
	if p.Threads == 0 {
		p.Threads = 1
	}
	if p.Time == 0 {
		p.Time = 1
	}
	if p.Memory < 8*uint32(p.Threads) {
		p.Memory = 8 * uint32(p.Threads) // argon2's floor; decode enforces it
	}
	if p.SaltLen < minSaltLen {
		p.SaltLen = OWASP.SaltLen
	}
	if p.KeyLen < minKeyLen {
		p.KeyLen = OWASP.KeyLen
	}
	n := cfg.MaxConcurrent
	if n <= 0 {
		n = max(1, runtime.NumCPU()/2)
	}
	h := &Hasher{params: p, slots: n, queues: make(map[string][]*waiter)}
	// The dummy needs no real derivation: verifying any password against
	// random salt and key with h's params costs exactly one derivation.
	h.dummy = encode(p, randomBytes(p.SaltLen), randomBytes(p.KeyLen))
	return h
}

// Params returns the parameters used for new hashes.
func (h *Hasher) Params() Params { return h.params }

// Runs returns how many argon2 derivations h has started: for metrics, and
// for tests that must prove a password was (or was not) checked.
func (h *Hasher) Runs() uint64 { return h.runs.Load() }

// Hash returns the PHC string of password with a fresh random salt. It waits
// for a slot under the empty key; see HashFor.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	return h.HashFor(ctx, "", password)
}

// HashFor is Hash with the wait for a slot queued under key (the client's
// address), so that keys share the slots fairly.
func (h *Hasher) HashFor(ctx context.Context, key, password string) (string, error) {
	if err := h.acquire(ctx, key); err != nil {
		return "", err
	}
	defer h.release()
	h.runs.Add(1)
	salt := randomBytes(h.params.SaltLen)
	dk := argon2.IDKey([]byte(password), salt, h.params.Time, h.params.Memory, h.params.Threads, h.params.KeyLen)
	return encode(h.params, salt, dk), nil
}

// Verify reports whether password matches the PHC string phc. A malformed phc
// is an error wrapping ErrMalformed; a context that ends while waiting for a
// slot is an error wrapping the context's error. It waits under the empty
// key; see VerifyFor.
func (h *Hasher) Verify(ctx context.Context, phc, password string) (bool, error) {
	return h.VerifyFor(ctx, "", phc, password)
}

// VerifyFor is Verify with the wait for a slot queued under key.
func (h *Hasher) VerifyFor(ctx context.Context, key, phc, password string) (bool, error) {
	p, salt, want, err := decode(phc)
	if err != nil {
		return false, err
	}
	if err := h.acquire(ctx, key); err != nil {
		return false, err
	}
	defer h.release()
	h.runs.Add(1)
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// VerifyUnknown does the work of one Verify with h's parameters against a
// hash that matches nothing. Call it when the user does not exist, so that
// "unknown user" and "wrong password" take the same time and memory.
func (h *Hasher) VerifyUnknown(ctx context.Context, password string) {
	_ = h.VerifyUnknownFor(ctx, "", password)
}

// VerifyUnknownFor is VerifyUnknown queued under key, like VerifyFor: the
// same queue, so an unknown user also waits exactly as a known one would.
// Its error is the context's, when it ended before a slot was free: the
// caller must then answer as it would for a known user whose Verify failed
// that way.
func (h *Hasher) VerifyUnknownFor(ctx context.Context, key, password string) error {
	_, err := h.VerifyFor(ctx, key, h.dummy, password)
	return err
}

// acquire takes a slot, waiting in key's queue when none is free.
func (h *Hasher) acquire(ctx context.Context, key string) error {
	// Check first: a finished context must not start an expensive hash.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("password: wait for a hashing slot: %w", err)
	}
	h.mu.Lock()
	if h.running < h.slots && len(h.ring) == 0 {
		h.running++
		h.mu.Unlock()
		return nil
	}
	w := &waiter{ready: make(chan struct{})}
	q, ok := h.queues[key]
	if !ok {
		// A new key joins the round as its last member: it is served
		// after every key already waiting, once each.
		h.ring = append(h.ring, "")
		copy(h.ring[h.next+1:], h.ring[h.next:])
		h.ring[h.next] = key
		h.next = (h.next + 1) % len(h.ring)
	}
	h.queues[key] = append(q, w)
	h.mu.Unlock()
	if h.queued != nil {
		h.queued <- struct{}{}
	}

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	h.mu.Lock()
	if w.granted {
		// The slot arrived as the context ended: pass it on.
		h.mu.Unlock()
		h.release()
	} else {
		h.dropLocked(key, w)
		h.mu.Unlock()
	}
	return fmt.Errorf("password: wait for a hashing slot: %w", ctx.Err())
}

// release frees a slot, or hands it to the next key in the round.
func (h *Hasher) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ring) == 0 {
		h.running--
		return
	}
	key := h.ring[h.next]
	q := h.queues[key]
	w := q[0]
	q[0] = nil
	if len(q) == 1 {
		delete(h.queues, key)
		h.removeKeyLocked(h.next)
	} else {
		h.queues[key] = q[1:]
		h.next = (h.next + 1) % len(h.ring)
	}
	w.granted = true
	close(w.ready)
}

// dropLocked removes a waiter that gave up.
func (h *Hasher) dropLocked(key string, w *waiter) {
	q := h.queues[key]
	for i, o := range q {
		if o == w {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) > 0 {
		h.queues[key] = q
		return
	}
	delete(h.queues, key)
	for i, k := range h.ring {
		if k == key {
			h.removeKeyLocked(i)
			return
		}
	}
}

// removeKeyLocked takes ring[i] out of the round, keeping h.next on the key
// that was due next.
func (h *Hasher) removeKeyLocked(i int) {
	h.ring = append(h.ring[:i], h.ring[i+1:]...)
	if i < h.next {
		h.next--
	}
	if h.next >= len(h.ring) {
		h.next = 0
	}
}

var b64 = base64.RawStdEncoding

func encode(p Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// decode parses a PHC string into its parameters, salt and key.
func decode(phc string) (Params, []byte, []byte, error) {
	var p Params
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[0] != "" {
		return p, nil, nil, fmt.Errorf("%w: want 5 $-separated fields", ErrMalformed)
	}
	if parts[1] != "argon2id" {
		return p, nil, nil, fmt.Errorf("%w: algorithm %q is not argon2id", ErrMalformed, truncate(parts[1]))
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, fmt.Errorf("%w: version %q is not v=%d", ErrMalformed, truncate(parts[2]), argon2.Version)
	}
	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return p, nil, nil, fmt.Errorf("%w: want parameters m=,t=,p=", ErrMalformed)
	}
	var seen [3]bool
	for _, f := range kv {
		name, val, ok := strings.Cut(f, "=")
		if !ok {
			return p, nil, nil, fmt.Errorf("%w: parameter %q has no value", ErrMalformed, truncate(f))
		}
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return p, nil, nil, fmt.Errorf("%w: parameter %s is not a number", ErrMalformed, truncate(name))
		}
		var i int
		switch name {
		case "m":
			i, p.Memory = 0, uint32(n)
		case "t":
			i, p.Time = 1, uint32(n)
		case "p":
			if n > 255 {
				return p, nil, nil, fmt.Errorf("%w: p=%d over 255", ErrMalformed, n)
			}
			i, p.Threads = 2, uint8(n)
		default:
			return p, nil, nil, fmt.Errorf("%w: unknown parameter %q", ErrMalformed, truncate(name))
		}
		if seen[i] {
			return p, nil, nil, fmt.Errorf("%w: parameter %s repeated", ErrMalformed, name)
		}
		seen[i] = true
	}
	switch {
	case p.Threads < 1:
		return p, nil, nil, fmt.Errorf("%w: p must be at least 1", ErrMalformed)
	case p.Time < 1 || p.Time > maxTime:
		return p, nil, nil, fmt.Errorf("%w: t=%d outside 1..%d", ErrMalformed, p.Time, maxTime)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory:
		return p, nil, nil, fmt.Errorf("%w: m=%d outside 8*p..%d KiB", ErrMalformed, p.Memory, maxMemory)
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return p, nil, nil, fmt.Errorf("%w: salt is not unpadded base64", ErrMalformed)
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil {
		return p, nil, nil, fmt.Errorf("%w: key is not unpadded base64", ErrMalformed)
	}
	if len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return p, nil, nil, fmt.Errorf("%w: salt of %d bytes outside %d..%d", ErrMalformed, len(salt), minSaltLen, maxSaltLen)
	}
	if len(key) < minKeyLen || len(key) > maxKeyLen {
		return p, nil, nil, fmt.Errorf("%w: key of %d bytes outside %d..%d", ErrMalformed, len(key), minKeyLen, maxKeyLen)
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	return p, salt, key, nil
}

func randomBytes(n uint32) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b
}

// truncate keeps error messages short when a stored value is garbage.
func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
