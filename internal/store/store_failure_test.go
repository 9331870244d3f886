package store_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/internal/store/storetest"
	"github.com/user-media-plug/umplug/internal/testlog"
)

const testPHC = "$argon2id$v=19$m=64,t=1,p=1$AAAAAAAAAAA$BBBBBBBBBBBBBBBBBBBBBB"

// TestPebbleCorruptBlock: a table block that fails its checksum (a bad
// sector) is reported as an error, not a crash; the store is failed from
// then on (every call ErrFailed, Health non-nil) and closes.
func TestPebbleCorruptBlock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	storetest.WriteCorruptTable(t, dir, "alice", "bob")
	s, err := store.OpenPebble(dir, testlog.New(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	if err := store.Health(s); err != nil {
		t.Fatalf("healthy store reports %v", err)
	}
	// What an unauthenticated reg-user does first: look the name up.
	if err := s.Create(ctx, store.User{Name: "alice", Password: testPHC}); err == nil || errors.Is(err, store.ErrExists) {
		t.Fatalf("Create over a corrupted block = %v; want a failure", err)
	}
	if err := store.Health(s); !errors.Is(err, store.ErrFailed) {
		t.Fatalf("Health after corruption = %v; want ErrFailed", err)
	}
	checkFailed(t, s)
}

// TestPebbleWriteFailure: a disk that refuses writes (a WAL write or sync
// fails) makes Pebble call Fatalf; the call gets an error, the process
// goes on, and every later call is refused without touching Pebble.
func TestPebbleWriteFailure(t *testing.T) {
	ctx := context.Background()
	fsys := storetest.NewFailingFS()
	s, err := store.OpenPebbleWith(t.TempDir(), store.PebbleOptions{Logger: testlog.New(t), FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Create(ctx, store.User{Name: "alice", Password: testPHC}); err != nil {
		t.Fatal(err)
	}
	fsys.Fail()
	err = s.Create(ctx, store.User{Name: "bob", Password: testPHC})
	if !errors.Is(err, store.ErrFailed) {
		t.Fatalf("Create on a failing disk = %v; want ErrFailed", err)
	}
	if err := store.Health(s); !errors.Is(err, store.ErrFailed) {
		t.Fatalf("Health = %v; want ErrFailed", err)
	}
	checkFailed(t, s)
}

// checkFailed: every call of a failed store answers ErrFailed, and Close
// returns (with the failure) in bounded time.
func checkFailed(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"Get":         func() error { _, err := s.Get(ctx, "alice"); return err },
		"Create":      func() error { return s.Create(ctx, store.User{Name: "carol", Password: testPHC}) },
		"Delete":      func() error { return s.Delete(ctx, "alice") },
		"SetPassword": func() error { return s.SetPassword(ctx, "alice", testPHC) },
		"UpdatePeers": func() error {
			_, err := s.UpdatePeers(ctx, "alice", func(p []string) ([]string, error) { return p, nil })
			return err
		},
		"List": func() error { return s.List(ctx, func(store.User) bool { return true }) },
	} {
		if err := call(); !errors.Is(err, store.ErrFailed) {
			t.Errorf("%s on a failed store = %v; want ErrFailed", name, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrFailed) {
			t.Errorf("Close of a failed store = %v; want the failure", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close of a failed store hangs")
	}
}

// TestPebblePrivateFiles: the data directory ends up 0700 and every file
// in it 0600, also when it existed before with 0755 and a 0644 file.
func TestPebblePrivateFiles(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	old := filepath.Join(dir, "leftover")
	if err := os.WriteFile(old, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(old, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenPebble(dir, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := s.Create(ctx, store.User{Name: "user" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Password: testPHC}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		n := 0
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			want := fs.FileMode(0o600)
			if d.IsDir() {
				want = 0o700
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s: %s is %v; want %v", when, path, got, want)
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n < 4 {
			t.Fatalf("%s: only %d entries checked", when, n)
		}
	}
	check("while open")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check("after close")
}
