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
