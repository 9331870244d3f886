// Package storetest is the conformance suite every store.Store backend must
// pass, so that the in-memory store used in tests behaves like the on-disk
// one used in production.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/store"
)

// Run runs the conformance suite. open returns a fresh, empty store for each
// subtest; Run closes it (closing twice must be safe).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, s store.Store)
	}{
		{"CreateGet", testCreateGet},
		{"CreateExists", testCreateExists},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"SetPassword", testSetPassword},
		{"UpdatePeers", testUpdatePeers},
		{"UpdatePeersFnError", testUpdatePeersFnError},
		{"ListOrder", testListOrder},
		{"ListStop", testListStop},
		{"NotAliased", testNotAliased},
		{"ConcurrentUpdatePeers", testConcurrentUpdatePeers},
		{"Closed", testClosed},
		{"Sessions", testSessions},
		{"SessionsDeletedWithUser", testSessionsDeletedWithUser},
		{"MissedCalls", testMissedCalls},
		{"MissedCallsCap", testMissedCallsCap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s := open(t)
			defer s.Close()
			tt.fn(t, ctx, s)
		})
	}
}

const hash = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"

func mustCreate(t *testing.T, ctx context.Context, s store.Store, name string, peers ...string) {
	t.Helper()
	if err := s.Create(ctx, store.User{Name: name, Password: hash, Peers: peers}); err != nil {
		t.Fatalf("Create(%q): %v", name, err)
	}
}

func mustGet(t *testing.T, ctx context.Context, s store.Store, name string) store.User {
	t.Helper()
	u, err := s.Get(ctx, name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	return u
}

func testCreateGet(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "userA", "userB", "userC")
	u := mustGet(t, ctx, s, "userA")
	if u.Name != "userA" || u.Password != hash || !slices.Equal(u.Peers, []string{"userB", "userC"}) {
		t.Fatalf("Get = %+v", u)
	}
	mustCreate(t, ctx, s, "userB")
	if u := mustGet(t, ctx, s, "userB"); u.Peers == nil || len(u.Peers) != 0 {
		t.Fatalf("Get(no peers).Peers = %#v; want empty, non-nil", u.Peers)
	}
}

func testCreateExists(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "userA", "userB")
	err := s.Create(ctx, store.User{Name: "userA", Password: "other"})
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("second Create = %v; want ErrExists", err)
	}
	if u := mustGet(t, ctx, s, "userA"); u.Password != hash || !slices.Equal(u.Peers, []string{"userB"}) {
		t.Fatalf("failed Create changed the user: %+v", u)
	}
}

func testNotFound(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "userA")
	if _, err := s.Get(ctx, "userB"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get = %v; want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "user"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(prefix of a name) = %v; want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "userB"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delete = %v; want ErrNotFound", err)
	}
	if err := s.SetPassword(ctx, "userB", hash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetPassword = %v; want ErrNotFound", err)
	}
	called := false
	_, err := s.UpdatePeers(ctx, "userB", func(p []string) ([]string, error) { called = true; return p, nil })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdatePeers = %v; want ErrNotFound", err)
	}
	if called {
		t.Error("UpdatePeers called fn for a missing user")
	}
}

func testDelete(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "userA")
	mustCreate(t, ctx, s, "userB")
	if err := s.Delete(ctx, "userA"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(ctx, "userA"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete = %v; want ErrNotFound", err)
	}
	mustGet(t, ctx, s, "userB")
	mustCreate(t, ctx, s, "userA") // the name is free again
}

func testSetPassword(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "userA", "userB")
	const other = "$argon2id$v=19$m=64,t=1,p=1$b3RoZXJzYWx0$b3RoZXJrZXlvdGhlcmtleQ"
	if err := s.SetPassword(ctx, "userA", other); err != nil {
		t.Fatalf("SetPassword: %v", err)
	}
	if u := mustGet(t, ctx, s, "userA"); u.Password != other || !slices.Equal(u.Peers, []string{"userB"}) {
		t.Fatalf("after SetPassword: %+v", u)
	}
}

func testUpdatePeers(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "userA", "userB")
	u, err := s.UpdatePeers(ctx, "userA", func(p []string) ([]string, error) {
		if !slices.Equal(p, []string{"userB"}) {
			return nil, fmt.Errorf("fn got %v; want [userB]", p)
		}
		return append(p, "userC"), nil
	})
	if err != nil {
		t.Fatalf("UpdatePeers: %v", err)
	}
	want := []string{"userB", "userC"}
	if u.Name != "userA" || u.Password != hash || !slices.Equal(u.Peers, want) {
		t.Fatalf("UpdatePeers returned %+v", u)
	}
	if got := mustGet(t, ctx, s, "userA"); !slices.Equal(got.Peers, want) || got.Password != hash {
		t.Fatalf("Get after UpdatePeers = %+v", got)
	}
	// fn may read the store (the server checks that added peers exist).
	mustCreate(t, ctx, s, "userD")
	if _, err := s.UpdatePeers(ctx, "userA", func(p []string) ([]string, error) {
		if _, err := s.Get(ctx, "userD"); err != nil {
			return nil, err
		}
		return nil, nil
	}); err != nil {
		t.Fatalf("UpdatePeers reading the store: %v", err)
	}
	if got := mustGet(t, ctx, s, "userA"); got.Peers == nil || len(got.Peers) != 0 {
		t.Fatalf("peers after setting nil = %#v; want empty, non-nil", got.Peers)
	}
}

func testUpdatePeersFnError(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "userA", "userB")
	errFn := errors.New("fn says no")
	_, err := s.UpdatePeers(ctx, "userA", func(p []string) ([]string, error) {
		p[0] = "mutated" // must not leak into the store either
		return []string{"userX"}, errFn
	})
	if err != errFn {
		t.Fatalf("UpdatePeers = %v; want fn's error as is", err)
	}
	if u := mustGet(t, ctx, s, "userA"); !slices.Equal(u.Peers, []string{"userB"}) {
		t.Fatalf("peers after failed fn = %v; want [userB]", u.Peers)
	}
}

func testListOrder(t *testing.T, ctx context.Context, s store.Store) {
	names := []string{"userC", "a", "userA", "B", "user.b", "userB", "@x", "z-9"}
	for _, n := range names {
		mustCreate(t, ctx, s, n, "p-"+n)
	}
	var got []string
	if err := s.List(ctx, func(u store.User) bool {
		if u.Password != hash || !slices.Equal(u.Peers, []string{"p-" + u.Name}) {
			t.Errorf("List gave %+v", u)
		}
		got = append(got, u.Name)
		return true
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("List order = %v; want %v", got, want)
	}
}

func testListStop(t *testing.T, ctx context.Context, s store.Store) {
	for _, n := range []string{"a", "b", "c"} {
		mustCreate(t, ctx, s, n)
	}
	var got []string
	if err := s.List(ctx, func(u store.User) bool {
		got = append(got, u.Name)
		return len(got) < 2
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("List with stop = %v; want [a b]", got)
	}
	empty := 0
	if err := s.List(ctx, func(store.User) bool { empty++; return true }); err != nil || empty != 3 {
		t.Fatalf("List = %d users, %v", empty, err)
	}
}

func testNotAliased(t *testing.T, ctx context.Context, s store.Store) {
	in := []string{"userB", "userC"}
	if err := s.Create(ctx, store.User{Name: "userA", Password: hash, Peers: in}); err != nil {
		t.Fatal(err)
	}
	in[0] = "changed-after-create"
	u := mustGet(t, ctx, s, "userA")
	u.Peers[1] = "changed-after-get"
	var seen []string
	u2, err := s.UpdatePeers(ctx, "userA", func(p []string) ([]string, error) {
		seen = p
		out := append(p[:0:0], p...)
		return out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	seen[0] = "changed-fn-input"
	u2.Peers[0] = "changed-update-result"
	if err := s.List(ctx, func(u store.User) bool { u.Peers[0] = "changed-in-list"; return true }); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, ctx, s, "userA"); !slices.Equal(got.Peers, []string{"userB", "userC"}) {
		t.Fatalf("stored peers = %v; callers aliased the store's slices", got.Peers)
	}
}

func testConcurrentUpdatePeers(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "userA")
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			peer := fmt.Sprintf("peer%02d", i)
			_, err := s.UpdatePeers(ctx, "userA", func(p []string) ([]string, error) {
				return append(p, peer), nil
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("UpdatePeers: %v", err)
		}
	}
	got := mustGet(t, ctx, s, "userA").Peers
	slices.Sort(got)
	if len(got) != n {
		t.Fatalf("after %d concurrent adds: %d peers %v", n, len(got), got)
	}
	for i, p := range got {
		if want := fmt.Sprintf("peer%02d", i); p != want {
			t.Fatalf("peers[%d] = %q; want %q", i, p, want)
		}
	}
}

func testClosed(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "userA")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checks := map[string]error{
		"Create":      s.Create(ctx, store.User{Name: "userB", Password: hash}),
		"Delete":      s.Delete(ctx, "userA"),
		"SetPassword": s.SetPassword(ctx, "userA", hash),
		"List":        s.List(ctx, func(store.User) bool { return true }),
	}
	_, checks["Get"] = s.Get(ctx, "userA")
	_, checks["UpdatePeers"] = s.UpdatePeers(ctx, "userA", func(p []string) ([]string, error) { return p, nil })
	for name, err := range checks {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v; want ErrClosed", name, err)
		}
	}
}

func testSessions(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "alice")
	mustCreate(t, ctx, s, "alice2")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a1 := store.Session{Hash: "aa01", User: "alice", Created: t0, LastUsed: t0}
	a2 := store.Session{Hash: "aa02", User: "alice", Created: t0, LastUsed: t0}
	b1 := store.Session{Hash: "bb01", User: "alice2", Created: t0, LastUsed: t0}
	for _, ss := range []store.Session{a1, a2, b1} {
		if err := s.CreateSession(ctx, ss); err != nil {
			t.Fatalf("CreateSession(%s): %v", ss.Hash, err)
		}
	}
	if err := s.CreateSession(ctx, store.Session{Hash: "cc01", User: "nobody", Created: t0, LastUsed: t0}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateSession for an unknown user = %v; want ErrNotFound", err)
	}
	got, err := s.GetSession(ctx, "aa01")
	if err != nil || got.User != "alice" || got.Hash != "aa01" || !got.Created.Equal(t0) || !got.LastUsed.Equal(t0) {
		t.Fatalf("GetSession = %+v, %v", got, err)
	}
	if _, err := s.GetSession(ctx, "aa0"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetSession(prefix) = %v; want ErrNotFound", err)
	}
	t1 := t0.Add(2 * time.Hour)
	if err := s.TouchSession(ctx, "aa01", t1); err != nil {
		t.Fatalf("TouchSession: %v", err)
	}
	if got, _ := s.GetSession(ctx, "aa01"); !got.LastUsed.Equal(t1) || !got.Created.Equal(t0) {
		t.Fatalf("after TouchSession: %+v", got)
	}
	if err := s.TouchSession(ctx, "absent", t1); err != nil {
		t.Fatalf("TouchSession(absent) = %v; want nil", err)
	}
	if _, err := s.GetSession(ctx, "absent"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("TouchSession created a session")
	}
	list, err := s.Sessions(ctx, "alice")
	if err != nil || len(list) != 2 {
		t.Fatalf("Sessions(alice) = %v, %v; want 2 (not alice2's)", list, err)
	}
	if err := s.DeleteSession(ctx, "aa02"); err != nil {
		t.Fatalf("DeleteSession: %v", err)
	}
	if err := s.DeleteSession(ctx, "aa02"); err != nil {
		t.Fatalf("DeleteSession again = %v; want nil", err)
	}
	if _, err := s.GetSession(ctx, "aa02"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetSession after DeleteSession = %v", err)
	}
	if err := s.CreateSession(ctx, a2); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteSessions(ctx, "alice")
	if err != nil || n != 2 {
		t.Fatalf("DeleteSessions = %d, %v; want 2", n, err)
	}
	for _, h := range []string{"aa01", "aa02"} {
		if _, err := s.GetSession(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetSession(%s) after DeleteSessions = %v", h, err)
		}
	}
	if _, err := s.GetSession(ctx, "bb01"); err != nil {
		t.Fatalf("another user's session was deleted: %v", err)
	}
	if list, _ := s.Sessions(ctx, "alice"); len(list) != 0 {
		t.Fatalf("Sessions after DeleteSessions = %v", list)
	}
	// A touch after the deletion does not bring it back.
	if err := s.TouchSession(ctx, "aa01", t1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, "aa01"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("TouchSession resurrected a deleted session")
	}
}

func testSessionsDeletedWithUser(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "alice")
	mustCreate(t, ctx, s, "bob")
	now := time.Now().UTC()
	if err := s.CreateSession(ctx, store.Session{Hash: "h1", User: "alice", Created: now, LastUsed: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendMissedCalls(ctx, "alice", []store.MissedCall{{User: "bob", At: now, Reason: "timeout"}}, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, "alice") // a new user of the same name inherits nothing
	if _, err := s.GetSession(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session survived its user's deletion: %v", err)
	}
	if l, _ := s.Sessions(ctx, "alice"); len(l) != 0 {
		t.Fatalf("sessions of the new alice: %v", l)
	}
	if l, err := s.MissedCalls(ctx, "alice", false); err != nil || len(l) != 0 {
		t.Fatalf("missed calls survived their user's deletion: %v, %v", l, err)
	}
}

func testMissedCalls(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "alice")
	if l, err := s.MissedCalls(ctx, "alice", false); err != nil || l == nil || len(l) != 0 {
		t.Fatalf("MissedCalls(none) = %#v, %v; want empty, non-nil", l, err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := []store.MissedCall{{User: "bob", At: t0, Reason: "timeout"}, {User: "carol", At: t0.Add(time.Second), Reason: "cancelled"}}
	if err := s.AppendMissedCalls(ctx, "alice", in, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendMissedCalls(ctx, "alice", []store.MissedCall{{User: "bob", At: t0.Add(2 * time.Second), Reason: "offline"}}, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendMissedCalls(ctx, "nobody", in, 100); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("AppendMissedCalls(unknown user) = %v; want ErrNotFound", err)
	}
	l, err := s.MissedCalls(ctx, "alice", false)
	if err != nil || len(l) != 3 || l[0].User != "bob" || l[1].Reason != "cancelled" || l[2].Reason != "offline" || !l[2].At.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("MissedCalls = %+v, %v; want the 3 in order", l, err)
	}
	if l, _ := s.MissedCalls(ctx, "alice", true); len(l) != 3 {
		t.Fatalf("MissedCalls(clear) returned %d; want the 3 before clearing", len(l))
	}
	if l, _ := s.MissedCalls(ctx, "alice", false); len(l) != 0 {
		t.Fatalf("after clear: %v", l)
	}
}

func testMissedCallsCap(t *testing.T, ctx context.Context, s store.Store) {
	mustCreate(t, ctx, s, "alice")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 105 {
		c := store.MissedCall{User: fmt.Sprintf("u%03d", i), At: t0.Add(time.Duration(i) * time.Second), Reason: "offline"}
		if err := s.AppendMissedCalls(ctx, "alice", []store.MissedCall{c}, 100); err != nil {
			t.Fatal(err)
		}
	}
	l, err := s.MissedCalls(ctx, "alice", false)
	if err != nil || len(l) != 100 || l[0].User != "u005" || l[99].User != "u104" {
		t.Fatalf("capped list: %d entries, first %+v; want 100 from u005", len(l), l[0])
	}
}
