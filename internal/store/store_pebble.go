package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// On-disk layout. Keys are namespaced by a kind prefix so that other kinds of
// record (settings, a schema version, …) can later share the database:
//
//	"u/" + user name  ->  {"password":"$argon2id$…","peers":["userB",…]}
//
// The value is exactly the contract's JSON shape (User's json tags). Pebble
// orders keys bytewise, so List's name order is bytewise name order.
const userPrefix = "u/"

// userUpper is the first key after every "u/…" key ('/'+1 == '0').
var userUpper = []byte("u0")

func userKey(name string) []byte { return []byte(userPrefix + name) }

// pebbleStore is the default, on-disk Store: an embedded LSM (the role
// abstract-leveldown/levelup played in the seed). Every write is synced.
type pebbleStore struct {
	db     *pebble.DB
	lock   *pebble.Lock // the directory lock, released after db closes
	rmw    *stripes     // serialises read-modify-write per user
	logger *slog.Logger

	mu       sync.Mutex // guards the following
	closed   bool
	closeErr error
	inflight sync.WaitGroup // calls in progress; Close waits for them
}

var _ Store = (*pebbleStore)(nil)

// OpenPebble opens (creating if needed) the user database in dir. Only one
// process may hold dir: if another one (typically a running server) does,
// the error wraps ErrLocked. Pebble's own log lines go to logger at debug
// (info) and error level; nil discards them.
func OpenPebble(dir string, logger *slog.Logger) (Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open user store: %w", err)
	}
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		if isLockHeld(err) {
			return nil, fmt.Errorf("open user store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open user store %s: lock: %w", dir, err)
	}
	db, err := pebble.Open(dir, &pebble.Options{
		FS:                 vfs.Default,
		Lock:               lock,
		Logger:             pebbleLogger{logger},
		FormatMajorVersion: pebble.FormatNewest,
	})
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("open user store %s: %w", dir, err)
	}
	return &pebbleStore{db: db, lock: lock, rmw: newStripes(), logger: logger}, nil
}

// isLockHeld tells "someone holds the lock" from other failures (such as a
// read-only directory). Pebble reports a holder in this process with its own
// error and one in another process with fcntl's EAGAIN or EACCES as a bare
// errno; creating the LOCK file fails with an *fs.PathError instead.
func isLockHeld(err error) bool {
	if strings.Contains(err.Error(), "lock held by current process") {
		return true
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return false
	}
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES)
}

// begin registers a call; the returned func ends it.
func (s *pebbleStore) begin() (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.inflight.Add(1)
	return s.inflight.Done, nil
}

func (s *pebbleStore) get(name string) (User, error) {
	val, closer, err := s.db.Get(userKey(name))
	if errors.Is(err, pebble.ErrNotFound) {
		return User{}, fmt.Errorf("get %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("get %q: %w", name, err)
	}
	defer closer.Close()
	return decodeUser(name, val)
}

func decodeUser(name string, val []byte) (User, error) {
	var u User
	if err := json.Unmarshal(val, &u); err != nil { // copies out of val
		return User{}, fmt.Errorf("decode user %q: %w", name, err)
	}
	u.Name = name
	u.Peers = clonePeers(u.Peers)
	return u, nil
}

func (s *pebbleStore) put(u User) error {
	u.Peers = clonePeers(u.Peers) // never null on disk
	val, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("encode user %q: %w", u.Name, err)
	}
	if err := s.db.Set(userKey(u.Name), val, pebble.Sync); err != nil {
		return fmt.Errorf("write user %q: %w", u.Name, err)
	}
	return nil
}

func (s *pebbleStore) Create(ctx context.Context, u User) error {
	if u.Name == "" {
		return fmt.Errorf("create: empty user name")
	}
	done, err := s.begin()
	if err != nil {
		return err
	}
	defer done()
	defer s.rmw.lock(u.Name)()
	if _, err := s.get(u.Name); err == nil {
		return fmt.Errorf("create %q: %w", u.Name, ErrExists)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return s.put(u)
}

func (s *pebbleStore) Get(ctx context.Context, name string) (User, error) {
	done, err := s.begin()
	if err != nil {
		return User{}, err
	}
	defer done()
	return s.get(name)
}

func (s *pebbleStore) Delete(ctx context.Context, name string) error {
	done, err := s.begin()
	if err != nil {
		return err
	}
	defer done()
	defer s.rmw.lock(name)()
	if _, err := s.get(name); err != nil {
		return err
	}
	if err := s.db.Delete(userKey(name), pebble.Sync); err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}

func (s *pebbleStore) SetPassword(ctx context.Context, name, hash string) error {
	done, err := s.begin()
	if err != nil {
		return err
	}
	defer done()
	defer s.rmw.lock(name)()
	u, err := s.get(name)
	if err != nil {
		return err
	}
	u.Password = hash
	return s.put(u)
}

// UpdatePeers runs fn under name's stripe lock: fn may read the store (for
// example to check that added peers exist) but must not update it.
func (s *pebbleStore) UpdatePeers(ctx context.Context, name string, fn func([]string) ([]string, error)) (User, error) {
	done, err := s.begin()
	if err != nil {
		return User{}, err
	}
	defer done()
	defer s.rmw.lock(name)()
	u, err := s.get(name)
	if err != nil {
		return User{}, err
	}
	peers, err := fn(clonePeers(u.Peers))
	if err != nil {
		return User{}, err
	}
	u.Peers = clonePeers(peers)
	if err := s.put(u); err != nil {
		return User{}, err
	}
	return cloneUser(u), nil
}

// List iterates a consistent snapshot. fn may read the store but must not
// call Close (Close waits for List to return).
func (s *pebbleStore) List(ctx context.Context, fn func(User) bool) error {
	done, err := s.begin()
	if err != nil {
		return err
	}
	defer done()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(userPrefix), UpperBound: userUpper})
	if err != nil {
		return fmt.Errorf("list users: %w", err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := strings.TrimPrefix(string(it.Key()), userPrefix)
		val, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("list users: read %q: %w", name, err)
		}
		u, err := decodeUser(name, val)
		if err != nil {
			return fmt.Errorf("list users: %w", err)
		}
		if !fn(u) {
			return nil
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("list users: %w", err)
	}
	return nil
}

// Close waits for calls in progress, closes the database and releases the
// directory lock. Calling it again returns the first call's result.
func (s *pebbleStore) Close() error {
	s.mu.Lock()
	if s.closed {
		err := s.closeErr
		s.mu.Unlock()
		return err
	}
	s.closed = true
	s.mu.Unlock()

	s.inflight.Wait()
	err := s.db.Close()
	if lerr := s.lock.Close(); err == nil {
		err = lerr
	}
	if err != nil {
		err = fmt.Errorf("close user store: %w", err)
	}
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
	return err
}

// pebbleLogger sends pebble's log lines to slog instead of the global log.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("pebble: " + fmt.Sprintf(format, args...))
}

// Fatalf is called on data corruption; pebble expects it not to return.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic(msg)
}
