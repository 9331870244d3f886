package admin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/store"
)

type fakeMeta struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeMeta) SetPassword(ctx context.Context, user, hash string) (int, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if user == "nobody" {
		return 0, 0, fmt.Errorf("get: %w", store.ErrNotFound)
	}
	f.calls = append(f.calls, user+" "+hash)
	return 2, 1, nil
}

func TestAdminSocket(t *testing.T) {
	dir := t.TempDir()
	// A stale socket file of a crashed server is replaced.
	stale := filepath.Join(dir, SocketName)
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(dir, &fakeMeta{}, nil); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	os.Remove(stale)

	f := &fakeMeta{}
	s, err := Listen(dir, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(stale)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const hash = "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$a2V5"
	r, c, err := SetPassword(ctx, dir, "alice", hash)
	if err != nil || r != 2 || c != 1 {
		t.Fatalf("SetPassword = %d, %d, %v", r, c, err)
	}
	if len(f.calls) != 1 || f.calls[0] != "alice "+hash {
		t.Fatalf("server saw %v", f.calls)
	}
	if _, _, err := SetPassword(ctx, dir, "nobody", hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	if _, _, err := SetPassword(ctx, dir, "alice", "clear-password"); err == nil {
		t.Fatal("a clear password was accepted as a hash")
	}
	if _, _, err := SetPassword(ctx, dir, "a b", hash); err == nil {
		t.Fatal("a bad name was accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
	if _, _, err := SetPassword(ctx, dir, "alice", hash); err == nil {
		t.Fatal("SetPassword worked with no server")
	}
}
