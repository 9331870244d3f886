// Package store keeps the static user data: users, their password hashes,
// their peer lists, their login sessions (hashed) and their missed calls. Store is the seam: Pebble on disk (the default), memory
// for tests, a distributed backend later. Every acknowledged write is durable.
package store

import (
	"context"
	"errors"
	"time"
)

// User is one stored user. The value on disk is the contract's
// {password: <argon2id PHC string>, peers: [...]} keyed by Name.
type User struct {
	Name     string   `json:"-"`
	Password string   `json:"password"` // argon2id PHC string; never a clear password
	Peers    []string `json:"peers"`
}

// Store is the user database. Implementations are safe for concurrent use.
// A method that returns nil has made its change durable (fsynced) first.
type Store interface {
	// Create adds u; ErrExists if the name is taken.
	Create(ctx context.Context, u User) error
	// Get returns the user; ErrNotFound if absent.
	Get(ctx context.Context, name string) (User, error)
	// Delete removes the user, its sessions and its missed calls;
	// ErrNotFound if absent.
	Delete(ctx context.Context, name string) error
	// SetPassword replaces the user's password hash; ErrNotFound if absent.
	SetPassword(ctx context.Context, name, hash string) error
	// UpdatePeers atomically replaces the user's peers with fn(current). Two
	// concurrent updates of one user never lose each other's change. If fn
	// returns an error nothing is written and the error is returned as is.
	UpdatePeers(ctx context.Context, name string, fn func(peers []string) ([]string, error)) (User, error)
	// List calls fn for every user in name order until fn returns false.
	List(ctx context.Context, fn func(User) bool) error
	// Close releases the store; further calls fail with ErrClosed.
	Close() error

	SessionStore
	MissedCallStore
}

// Errors returned by stores. Wrap checks use errors.Is.
var (
	ErrNotFound = errors.New("store: user not found")
	ErrExists   = errors.New("store: user exists")
	ErrClosed   = errors.New("store: closed")
	// ErrLocked means another process (a running server) holds the store.
	ErrLocked = errors.New("store: data directory is in use by another process (is a umplug server running?)")
	// ErrFailed means the store hit a failure it cannot recover from (a
	// write or sync refused by the disk, a corrupted table): every call
	// after it fails with this error, nothing is read or written any more,
	// and only a restart (after fixing the disk) brings the store back.
	ErrFailed = errors.New("store: failed")
)

// Checker is implemented by stores that can fail for good (the Pebble
// store): Health returns nil while the store works and an error wrapping
// ErrFailed once it has failed. /healthz reports it.
type Checker interface {
	Health() error
}

// Health returns s's health: nil for stores that cannot fail for good.
func Health(s Store) error {
	if c, ok := s.(Checker); ok {
		return c.Health()
	}
	return nil
}

// Session is a login session (contract section 8). The store never sees the
// secret the client holds: Hash is the hex SHA-256 of it, which is what
// sessions are looked up by. The secret has 256 bits of entropy, so a plain
// hash is enough (no salt, no slow hash: nobody can enumerate the secrets).
type Session struct {
	Hash     string    `json:"-"`    // hex SHA-256 of the secret; the key
	User     string    `json:"user"` // the user it identifies
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"used"` // expiry counts from here
}

// MissedCall is one entry of a user's missed-call list (contract section
// 9): who called, when, and why the call was missed (a protocol reason).
type MissedCall struct {
	User   string    `json:"user"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// SessionStore keeps login sessions, bound to their user: deleting a user
// deletes its sessions. Every write but TouchSession is durable.
type SessionStore interface {
	// CreateSession stores a new session; ErrNotFound if its user does not
	// exist.
	CreateSession(ctx context.Context, s Session) error
	// GetSession returns the session with that hash; ErrNotFound if absent.
	GetSession(ctx context.Context, hash string) (Session, error)
	// TouchSession sets the session's LastUsed to at, if it still exists
	// (nil otherwise). It is NOT synced: a crash may lose it, which only
	// makes the session expire a little earlier, and a login storm does not
	// cost an fsync per login.
	TouchSession(ctx context.Context, hash string, at time.Time) error
	// DeleteSession revokes one session; nil if it was already gone.
	DeleteSession(ctx context.Context, hash string) error
	// DeleteSessions revokes every session of user and returns how many.
	DeleteSessions(ctx context.Context, user string) (int, error)
	// Sessions returns every session of user, in no particular order.
	Sessions(ctx context.Context, user string) ([]Session, error)
}

// MissedCallStore keeps each user's missed calls; deleting a user deletes
// them.
type MissedCallStore interface {
	// AppendMissedCalls appends calls (oldest first) to user's list and
	// keeps only its newest max entries; ErrNotFound if user does not
	// exist. One synced write, however many calls.
	AppendMissedCalls(ctx context.Context, user string, calls []MissedCall, max int) error
	// MissedCalls returns user's list, oldest first (empty, not an error,
	// for a user without any, or unknown). With clear the list is emptied
	// in the same atomic step, so a call recorded meanwhile is never lost.
	MissedCalls(ctx context.Context, user string, clear bool) ([]MissedCall, error)
}
