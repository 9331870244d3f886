package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// On-disk layout. Keys are namespaced by a kind prefix so that other kinds of
// record (settings, a schema version, …) can later share the database:
//
//	"u/" + user name  ->  {"password":"$argon2id$…","peers":["userB",…]}
//
// and sessions and missed calls (store_pebble_sessions.go).
// The value is exactly the contract's JSON shape (User's json tags). Pebble
// orders keys bytewise, so List's name order is bytewise name order.
const userPrefix = "u/"

// userUpper is the first key after every "u/…" key ('/'+1 == '0').
var userUpper = []byte("u0")

func userKey(name string) []byte { return []byte(userPrefix + name) }

// pebbleStore is the default, on-disk Store: an embedded LSM (the role
// abstract-leveldown/levelup played in the seed). Every write is synced.
//
// A failure Pebble cannot recover from (it calls its logger's Fatalf: a
// commit whose WAL write or sync was refused, a MANIFEST that cannot be
// written; or it reports a corrupted block) does not crash the process: the
// store is marked failed, the call that hit it returns an error wrapping
// ErrFailed, and every later call returns that error at once without
// touching Pebble again (its internal state is not trusted any more). The
// server answers `unavailable` and /healthz turns 503 (see failure).
type pebbleStore struct {
	db     *pebble.DB
	lock   *pebble.Lock // the directory lock, released after db closes
	rmw    *stripes     // serialises read-modify-write per user
	logger *slog.Logger
	fail   *failure

	mu       sync.Mutex // guards the following
	closed   bool
	closeErr error
	inflight sync.WaitGroup // calls in progress; Close waits for them
}

var _ Store = (*pebbleStore)(nil)
var _ Checker = (*pebbleStore)(nil)

// PebbleOptions tune OpenPebbleWith. The zero value is OpenPebble's.
type PebbleOptions struct {
	// Logger receives Pebble's log lines at debug (info) and error level and
	// the store's failure; nil discards them.
	Logger *slog.Logger
	// FS is the file system the database lives on; nil is the operating
	// system's. Tests inject failing file systems here. Whatever it is,
	// files are created 0600 (privateFS).
	FS vfs.FS
}

// OpenPebble opens (creating if needed) the user database in dir. Only one
// process may hold dir: if another one (typically a running server) does,
// the error wraps ErrLocked. Pebble's own log lines go to logger at debug
// (info) and error level; nil discards them.
//
// The directory is made 0700 and every file in it 0600, also when it
// existed before with wider permissions: it holds password hashes.
func OpenPebble(dir string, logger *slog.Logger) (Store, error) {
	return OpenPebbleWith(dir, PebbleOptions{Logger: logger})
}

// OpenPebbleWith is OpenPebble with options.
func OpenPebbleWith(dir string, opts PebbleOptions) (Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	inner := opts.FS
	if inner == nil {
		inner = vfs.Default
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open user store: %w", err)
	}
	if err := privatize(dir); err != nil {
		return nil, fmt.Errorf("open user store: %w", err)
	}
	fsys := privateFS{inner}
	lock, err := pebble.LockDirectory(dir, fsys)
	if err != nil {
		if isLockHeld(err) {
			return nil, fmt.Errorf("open user store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open user store %s: lock: %w", dir, err)
	}
	f := &failure{log: logger}
	var db *pebble.DB
	err = f.guard(func() error {
		var err error
		db, err = pebble.Open(dir, &pebble.Options{
			FS:                 fsys,
			Lock:               lock,
			Logger:             pebbleLogger{l: logger, f: f},
			EventListener:      &pebble.EventListener{DataCorruption: f.corruption},
			FormatMajorVersion: pebble.FormatNewest,
		})
		return err
	})
	if err == nil {
		err = f.get() // a corruption reported while opening
	}
	if err != nil {
		if db != nil {
			_ = f.guard(db.Close)
		}
		_ = lock.Close()
		return nil, fmt.Errorf("open user store %s: %w", dir, err)
	}
	return &pebbleStore{db: db, lock: lock, rmw: newStripes(), logger: logger, fail: f}, nil
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
	if err := s.fail.get(); err != nil {
		return nil, err
	}
	s.inflight.Add(1)
	return s.inflight.Done, nil
}

// do runs fn as a store call: refused once the store is closed or failed,
// counted for Close, and guarded so that a Pebble Fatalf inside it becomes
// an error wrapping ErrFailed instead of a crash.
func (s *pebbleStore) do(fn func() error) error {
	done, err := s.begin()
	if err != nil {
		return err
	}
	defer done()
	return s.fail.guard(fn)
}

// Health implements Checker.
func (s *pebbleStore) Health() error { return s.fail.get() }

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
	return s.do(func() error {
		defer s.rmw.lock(u.Name)()
		if _, err := s.get(u.Name); err == nil {
			return fmt.Errorf("create %q: %w", u.Name, ErrExists)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		return s.put(u)
	})
}

func (s *pebbleStore) Get(ctx context.Context, name string) (u User, err error) {
	err = s.do(func() error {
		u, err = s.get(name)
		return err
	})
	if err != nil {
		return User{}, err
	}
	return u, nil
}

func (s *pebbleStore) Delete(ctx context.Context, name string) error {
	return s.do(func() error {
		defer s.rmw.lock(name)()
		if _, err := s.get(name); err != nil {
			return err
		}
		// The user, its sessions and its missed calls go in one batch.
		b := s.db.NewBatch()
		defer b.Close()
		_ = b.Delete(userKey(name), nil)
		_ = b.Delete(missedKey(name), nil)
		if _, err := s.deleteSessionsInto(b, name); err != nil {
			return err
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("delete user %q: %w", name, err)
		}
		return nil
	})
}

func (s *pebbleStore) SetPassword(ctx context.Context, name, hash string) error {
	return s.do(func() error {
		defer s.rmw.lock(name)()
		u, err := s.get(name)
		if err != nil {
			return err
		}
		u.Password = hash
		return s.put(u)
	})
}

// UpdatePeers runs fn under name's stripe lock: fn may read the store (for
// example to check that added peers exist) but must not update it.
func (s *pebbleStore) UpdatePeers(ctx context.Context, name string, fn func([]string) ([]string, error)) (User, error) {
	var out User
	err := s.do(func() error {
		defer s.rmw.lock(name)()
		u, err := s.get(name)
		if err != nil {
			return err
		}
		peers, err := fn(clonePeers(u.Peers))
		if err != nil {
			return err
		}
		u.Peers = clonePeers(peers)
		if err := s.put(u); err != nil {
			return err
		}
		out = cloneUser(u)
		return nil
	})
	if err != nil {
		return User{}, err
	}
	return out, nil
}

// List iterates a consistent snapshot. fn may read the store but must not
// call Close (Close waits for List to return).
func (s *pebbleStore) List(ctx context.Context, fn func(User) bool) error {
	return s.do(func() error {
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
	})
}

// Close waits for calls in progress, closes the database and releases the
// directory lock. Calling it again returns the first call's result.
//
// A failed store is not closed the normal way: Pebble's state is not
// trusted after a fatal error (a background goroutine may have stopped
// holding its locks), so Close waits at most failedCloseWait for calls in
// progress and for Pebble's Close, then returns the failure. The process is
// expected to exit soon after; the kernel releases what is left.
func (s *pebbleStore) Close() error {
	s.mu.Lock()
	if s.closed {
		err := s.closeErr
		s.mu.Unlock()
		return err
	}
	s.closed = true
	s.mu.Unlock()

	var err error
	if s.fail.get() == nil {
		s.inflight.Wait()
		err = s.fail.guard(s.db.Close)
	}
	if ferr := s.fail.get(); ferr != nil {
		err = ferr
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.inflight.Wait()
			_ = s.fail.guard(s.db.Close)
		}()
		select {
		case <-done:
			_ = s.lock.Close()
		case <-time.After(failedCloseWait):
			s.logger.Error("user store failed and did not close in time; leaving it to the process exit")
		}
	} else if lerr := s.lock.Close(); err == nil {
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

// failedCloseWait bounds Close of a failed store.
const failedCloseWait = 2 * time.Second

// failure records the store's first unrecoverable error. It is shared by
// the store, Pebble's logger and its event listener.
type failure struct {
	log *slog.Logger

	mu  sync.Mutex // guards err
	err error      // wraps ErrFailed; nil while the store works
}

// set records err as the store's failure (the first one wins) and logs it.
func (f *failure) set(err error) {
	f.mu.Lock()
	first := f.err == nil
	if first {
		f.err = fmt.Errorf("%w: %v", ErrFailed, err)
	}
	f.mu.Unlock()
	if first {
		f.log.Error("user store failed: every request that needs it answers unavailable until the server is restarted (check the disk, then the data directory)", "err", err)
	}
}

func (f *failure) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// corruption is Pebble's DataCorruption listener (its default calls
// Fatalf). Pebble also returns a corruption error to the read that found
// it; the whole store is marked failed because data that fails its
// checksum means the disk can no longer be trusted.
func (f *failure) corruption(info pebble.DataCorruptionInfo) {
	f.set(fmt.Errorf("data corruption in %s: %v", info.Path, info.Details))
}

// fatalPanic is what Fatalf panics with on a guarded goroutine.
type fatalPanic struct{ msg string }

// guard runs fn and turns a fatalPanic raised inside it (by Fatalf) into
// the store's failure error. Other panics go on.
//
//go:noinline
func (f *failure) guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(fatalPanic); !ok {
				panic(r)
			}
			err = f.get()
		}
	}()
	return fn()
}

// guardFunc is guard's symbol name, looked for on the stack by Fatalf.
var guardFunc = runtime.FuncForPC(reflect.ValueOf((*failure).guard).Pointer()).Name()

// guarded tells whether the calling goroutine runs inside guard.
func guarded() bool {
	pcs := make([]uintptr, 4096)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		fr, more := frames.Next()
		if fr.Function == guardFunc {
			return true
		}
		if !more {
			return false
		}
	}
}

// pebbleLogger sends pebble's log lines to slog instead of the global log.
type pebbleLogger struct {
	l *slog.Logger
	f *failure
}

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("pebble: " + fmt.Sprintf(format, args...))
}

// Fatalf is called by Pebble when it cannot go on (a failed commit, a
// MANIFEST that cannot be written, a broken invariant). Pebble expects it
// not to return, and must not be used again afterwards: the store is marked
// failed, then a store call that hit it unwinds to its guard (which answers
// ErrFailed), and a Pebble background goroutine (a flush, a compaction)
// stops with runtime.Goexit, leaving the process and every other
// connection running.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	p.f.set(errors.New(msg))
	if guarded() {
		panic(fatalPanic{msg})
	}
	runtime.Goexit()
}

// privateFS creates every file 0600: the store holds password hashes, and
// Pebble itself creates files 0666 minus the umask (usually 0644).
type privateFS struct{ vfs.FS }

func (p privateFS) Unwrap() vfs.FS { return p.FS }

func (p privateFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.Create(name, category)
	return f, chmodPrivate(name, err)
}

func (p privateFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := p.FS.OpenReadWrite(name, category, opts...)
	return f, chmodPrivate(name, err)
}

func (p privateFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.ReuseForWrite(oldname, newname, category)
	return f, chmodPrivate(newname, err)
}

func (p privateFS) Lock(name string) (io.Closer, error) {
	c, err := p.FS.Lock(name)
	return c, chmodPrivate(name, err)
}

func (p privateFS) MkdirAll(dir string, perm os.FileMode) error {
	return p.FS.MkdirAll(dir, 0o700)
}

// chmodPrivate makes the just created file name 0600 unless err says it
// was not created. The file is still empty at that point.
func chmodPrivate(name string, err error) error {
	if err != nil {
		return err
	}
	if err := os.Chmod(name, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("make %s private: %w", name, err)
	}
	return nil
}

// privatize makes dir 0700 and every file in it 0600 (a directory made by
// an older version, by hand, or restored from a backup may be wider).
func privatize(dir string) error {
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == dir {
			return nil
		}
		mode := os.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if err := os.Chmod(path, mode); err != nil {
			return fmt.Errorf("make %s private: %w", path, err)
		}
		return nil
	})
}
