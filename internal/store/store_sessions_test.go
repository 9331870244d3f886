package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/store"
)

// TestPebbleSessionsAndMissedCallsReopen: sessions (with a touched last
// use) and missed calls survive closing and reopening the Pebble store.
func TestPebbleSessionsAndMissedCallsReopen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := openPebble(t, dir)
	if err := s.Create(ctx, store.User{Name: "alice", Password: "$argon2id$x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, store.Session{Hash: "h1", User: "alice", Created: t0, LastUsed: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchSession(ctx, "h1", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendMissedCalls(ctx, "alice", []store.MissedCall{{User: "bob", At: t0, Reason: "offline"}}, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openPebble(t, dir)
	ss, err := s.GetSession(ctx, "h1")
	if err != nil || ss.User != "alice" || !ss.LastUsed.Equal(t0.Add(time.Hour)) {
		t.Fatalf("session after reopen: %+v, %v", ss, err)
	}
	l, err := s.MissedCalls(ctx, "alice", false)
	if err != nil || len(l) != 1 || l[0].User != "bob" || !l[0].At.Equal(t0) {
		t.Fatalf("missed calls after reopen: %+v, %v", l, err)
	}
	if err := s.Delete(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session after its user's deletion: %v", err)
	}
}
