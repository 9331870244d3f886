// Package store keeps the static user data: users, their password hashes and
// their peer lists. Store is the seam: Pebble on disk (the default), memory
// for tests, a distributed backend later. Every acknowledged write is durable.
package store

import (
	"context"
	"errors"
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
	// Delete removes the user; ErrNotFound if absent.
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
