package server_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// TestErrorCodes proves, for every error code of the contract, that the
// message is refused with that code and a reason, and that nothing changed.
func TestErrorCodes(t *testing.T) {
	type env struct {
		s    *servertest.Server
		a, b *wsc // alice and bob, mutual peers, logged in
	}
	peersOf := func(t *testing.T, e env, name string) []string {
		u, err := e.s.Store.Get(context.Background(), name)
		if err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		return u.Peers
	}
	cases := []struct {
		name string
		opts servertest.Options
		run  func(t *testing.T, e env)
	}{
		{"bad-json/not-json", servertest.Options{}, func(t *testing.T, e env) {
			e.a.sendRaw("not json at all")
			f := e.a.next()
			if f.OK || f.Error != protocol.ErrBadJSON || f.For != "" || f.Tx != "" || !contains(f.raw, `"tx":null`) {
				t.Fatalf("got %s", f.raw)
			}
			e.a.ok(map[string]any{"type": "peers", "user": "alice"}) // still open
		}},
		{"bad-json/array", servertest.Options{}, func(t *testing.T, e env) {
			e.a.sendRaw(`[{"type":"peers","user":"alice","tx":1}]`)
			if f := e.a.next(); f.Error != protocol.ErrBadJSON {
				t.Fatalf("got %s", f.raw)
			}
		}},
		{"bad-request/missing-tx", servertest.Options{}, func(t *testing.T, e env) {
			f := e.a.fail(map[string]any{"type": "add-peers", "user": "alice", "peers": []string{"carol"}, "tx": nil}, protocol.ErrBadRequest)
			if f.For != "add-peers" || !contains(f.raw, `"tx":null`) || !contains(f.Reason, "tx") {
				t.Fatalf("got %s", f.raw)
			}
		}},
		{"bad-request/string-tx", servertest.Options{}, func(t *testing.T, e env) {
			e.a.sendRaw(`{"type":"status","user":"alice","status":"x","tx":"7"}`)
			if f := e.a.next(); f.Error != protocol.ErrBadRequest || f.Tx != "" {
				t.Fatalf("got %s", f.raw)
			}
		}},
		{"bad-request/invalid-name", servertest.Options{}, func(t *testing.T, e env) {
			f := e.a.fail(map[string]any{"type": "reg-user", "user": "bad name!", "password": pw}, protocol.ErrBadRequest)
			if !contains(f.Reason, "user") {
				t.Fatalf("reason should name the field: %s", f.raw)
			}
			if _, err := e.s.Store.Get(context.Background(), "bad name!"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("user created: %v", err)
			}
		}},
		{"bad-request/short-password", servertest.Options{}, func(t *testing.T, e env) {
			e.a.fail(map[string]any{"type": "reg-user", "user": "dave", "password": "short"}, protocol.ErrBadRequest)
			if _, err := e.s.Store.Get(context.Background(), "dave"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("user created: %v", err)
			}
		}},
		{"bad-request/ill-typed-peers", servertest.Options{}, func(t *testing.T, e env) {
			f := e.a.fail(map[string]any{"type": "add-peers", "user": "alice", "peers": "carol"}, protocol.ErrBadRequest)
			if !contains(f.Reason, "peers") {
				t.Fatalf("got %s", f.raw)
			}
			if got := peersOf(t, e, "alice"); len(got) != 1 {
				t.Fatalf("peers changed: %v", got)
			}
		}},
		{"bad-request/call-yourself", servertest.Options{}, func(t *testing.T, e env) {
			e.a.fail(map[string]any{"type": "call", "user": "alice", "peer": "alice"}, protocol.ErrBadRequest)
			e.a.quiet()
		}},
		{"bad-request/second-whoami", servertest.Options{}, func(t *testing.T, e env) {
			e.a.fail(map[string]any{"type": "whoami", "user": "bob", "password": pw}, protocol.ErrBadRequest)
			e.a.ok(map[string]any{"type": "peers", "user": "alice"}) // still alice
		}},
		{"bad-request/long-status", servertest.Options{}, func(t *testing.T, e env) {
			long := string(make([]byte, 65))
			e.a.fail(map[string]any{"type": "status", "user": "alice", "status": long}, protocol.ErrBadRequest)
			e.b.quiet()
		}},
		{"unknown-type", servertest.Options{}, func(t *testing.T, e env) {
			f := e.a.fail(map[string]any{"type": "dance", "user": "alice"}, protocol.ErrUnknownType)
			if f.For != "dance" {
				t.Fatalf("for: %s", f.raw)
			}
		}},
		{"unauthenticated", servertest.Options{}, func(t *testing.T, e env) {
			c := dial(t, e.s, nil)
			for _, typ := range []string{"add-peers", "del-peers", "peers", "peers-online", "status", "call", "accept", "reject", "cancel", "unpair"} {
				c.fail(map[string]any{"type": typ, "user": "alice", "peer": "bob", "peers": []string{"bob"}, "status": "x"}, protocol.ErrUnauthenticated)
			}
			if got := peersOf(t, e, "alice"); len(got) != 1 {
				t.Fatalf("peers changed: %v", got)
			}
			e.b.quiet()
		}},
		{"forbidden/impersonation", servertest.Options{}, func(t *testing.T, e env) {
			e.a.fail(map[string]any{"type": "del-peers", "user": "bob", "peers": []string{"alice"}}, protocol.ErrForbidden)
			e.a.fail(map[string]any{"type": "status", "user": "bob", "status": "hacked"}, protocol.ErrForbidden)
			if got := peersOf(t, e, "bob"); len(got) != 1 {
				t.Fatalf("bob's peers changed: %v", got)
			}
			e.a.quiet()
		}},
		{"forbidden/registration-closed", servertest.Options{RegistrationClosed: true}, func(t *testing.T, e env) {
			e.a.fail(map[string]any{"type": "reg-user", "user": "eve", "password": pw}, protocol.ErrForbidden)
			if _, err := e.s.Store.Get(context.Background(), "eve"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("user created: %v", err)
			}
		}},
		{"auth-failed", servertest.Options{}, func(t *testing.T, e env) {
			c := dial(t, e.s, nil)
			f1 := c.fail(map[string]any{"type": "whoami", "user": "nobody", "password": pw}, protocol.ErrAuthFailed)
			f2 := c.fail(map[string]any{"type": "whoami", "user": "alice", "password": "wrong password"}, protocol.ErrAuthFailed)
			if f1.Reason != f2.Reason {
				t.Fatalf("unknown user and wrong password must look alike: %q vs %q", f1.Reason, f2.Reason)
			}
			c.fail(map[string]any{"type": "peers", "user": "alice"}, protocol.ErrUnauthenticated)
		}},
		{"exists", servertest.Options{}, func(t *testing.T, e env) {
			before, _ := e.s.Store.Get(context.Background(), "alice")
			e.a.fail(map[string]any{"type": "reg-user", "user": "alice", "password": "another password"}, protocol.ErrExists)
			after, _ := e.s.Store.Get(context.Background(), "alice")
			if before.Password != after.Password {
				t.Fatal("password changed")
			}
		}},
		{"not-found/add-peers", servertest.Options{}, func(t *testing.T, e env) {
			f := e.a.fail(map[string]any{"type": "add-peers", "user": "alice", "peers": []string{"carol", "ghost", "zombie"}}, protocol.ErrNotFound)
			if len(f.Missing) != 2 || f.Missing[0] != "ghost" || f.Missing[1] != "zombie" {
				t.Fatalf("missing: %s", f.raw)
			}
			if got := peersOf(t, e, "alice"); len(got) != 1 {
				t.Fatalf("peers changed: %v", got)
			}
		}},
		{"not-found/reg-user", servertest.Options{}, func(t *testing.T, e env) {
			f := e.a.fail(map[string]any{"type": "reg-user", "user": "dave", "password": pw, "peers": []string{"alice", "ghost"}}, protocol.ErrNotFound)
			if len(f.Missing) != 1 || f.Missing[0] != "ghost" {
				t.Fatalf("missing: %s", f.raw)
			}
			if _, err := e.s.Store.Get(context.Background(), "dave"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("user created: %v", err)
			}
		}},
		{"not-a-peer", servertest.Options{}, func(t *testing.T, e env) {
			c := login(t, e.s, "carol") // lists alice, alice does not list carol
			c.fail(map[string]any{"type": "call", "user": "carol", "peer": "alice"}, protocol.ErrNotAPeer)
			e.a.fail(map[string]any{"type": "call", "user": "alice", "peer": "carol"}, protocol.ErrNotAPeer)
			e.a.quiet()
			c.quiet()
		}},
		{"offline", servertest.Options{}, func(t *testing.T, e env) {
			e.b.leave(e.s)
			e.a.expect("status", "bob", "", "")
			e.a.fail(map[string]any{"type": "call", "user": "alice", "peer": "bob"}, protocol.ErrOffline)
			if e.s.Server.Meta().Stats().Calls != 0 {
				t.Fatal("a call exists")
			}
		}},
		{"busy", servertest.Options{}, func(t *testing.T, e env) {
			register(t, e.s, "frank", "bob")
			e.b.ok(map[string]any{"type": "add-peers", "user": "bob", "peers": []string{"frank"}})
			fr := login(t, e.s, "frank")
			e.b.expect("status", "frank", "", "")
			e.a.ok(map[string]any{"type": "call", "user": "alice", "peer": "bob"})
			e.b.expect("call", "alice", "bob", "")
			fr.fail(map[string]any{"type": "call", "user": "frank", "peer": "bob"}, protocol.ErrBusy)
			e.b.quiet()
			if e.s.Server.Meta().Stats().Calls != 1 {
				t.Fatal("busy call created a call")
			}
		}},
		{"no-call", servertest.Options{}, func(t *testing.T, e env) {
			e.b.fail(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": 42}, protocol.ErrNoCall)
			e.b.fail(map[string]any{"type": "reject", "user": "bob", "peer": "alice", "tx": 42}, protocol.ErrNoCall)
			e.a.fail(map[string]any{"type": "cancel", "user": "alice", "peer": "bob"}, protocol.ErrNoCall)
			e.a.fail(map[string]any{"type": "unpair", "user": "alice", "peer": "bob"}, protocol.ErrNoCall)
			// A ringing call is matched by its tx too.
			e.a.ok(map[string]any{"type": "call", "user": "alice", "peer": "bob", "tx": 0.25})
			e.b.expect("call", "alice", "bob", "")
			e.b.fail(map[string]any{"type": "accept", "user": "bob", "peer": "alice", "tx": 0.5}, protocol.ErrNoCall)
			e.a.fail(map[string]any{"type": "unpair", "user": "alice", "peer": "bob"}, protocol.ErrNoCall)
			e.a.quiet()
		}},
		{"rate-limited/messages", servertest.Options{Clock: clock.NewFake()}, func(t *testing.T, e env) {
			// The fake clock never refills the bucket: the burst is all there is.
			refused := 0
			for i := 0; i < protocol.DefaultRateBurst+5; i++ {
				f := e.a.req(map[string]any{"type": "status", "user": "alice", "status": "s"})
				if !f.OK {
					if f.Error != protocol.ErrRateLimited {
						t.Fatalf("got %s", f.raw)
					}
					refused++
				}
			}
			// Fewer than the burst: a few tokens went to the set-up messages.
			if refused < 5 {
				t.Fatalf("refused %d messages, want at least 5", refused)
			}
		}},
		{"rate-limited/logins", servertest.Options{}, func(t *testing.T, e env) {
			c := dial(t, e.s, nil)
			for i := 0; i < 10; i++ {
				c.fail(map[string]any{"type": "whoami", "user": "alice", "password": "wrong password"}, protocol.ErrAuthFailed)
			}
			// Even the right password is refused now, without being checked.
			c.fail(map[string]any{"type": "whoami", "user": "alice", "password": pw}, protocol.ErrRateLimited)
		}},
		{"too-many-devices", servertest.Options{Configure: func(c *server.Config) { c.Meta.MaxDevices = 2 }}, func(t *testing.T, e env) {
			login(t, e.s, "alice") // alice's second device
			c := dial(t, e.s, nil)
			c.fail(map[string]any{"type": "whoami", "user": "alice", "password": pw}, protocol.ErrTooManyDevices)
			if n := e.s.Server.Meta().Devices("alice"); n != 2 {
				t.Fatalf("alice has %d devices", n)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			s := servertest.Start(t, &opts)
			if opts.RegistrationClosed {
				createDirect(t, s, "alice", "bob")
				createDirect(t, s, "bob", "alice")
				createDirect(t, s, "carol", "alice")
			} else {
				mutual(t, s, "alice", "bob")
				register(t, s, "carol", "alice")
			}
			e := env{s: s, a: login(t, s, "alice"), b: login(t, s, "bob")}
			e.a.expect("status", "bob", "", "")
			tc.run(t, e)
		})
	}
}

// createDirect writes a user into the store as the admin CLI would.
func createDirect(t *testing.T, s *servertest.Server, name string, peers ...string) {
	t.Helper()
	h, err := cheapHasher().Hash(context.Background(), pw)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Store.Create(context.Background(), store.User{Name: name, Password: h, Peers: peers}); err != nil {
		t.Fatal(err)
	}
}

// faultStore fails writes on demand: the unavailable path of the contract.
type faultStore struct {
	store.Store
	failing atomic.Bool
}

var errDiskOnFire = errors.New("disk on fire")

func (f *faultStore) Create(ctx context.Context, u store.User) error {
	if f.failing.Load() {
		return errDiskOnFire
	}
	return f.Store.Create(ctx, u)
}

func (f *faultStore) UpdatePeers(ctx context.Context, name string, fn func([]string) ([]string, error)) (store.User, error) {
	if f.failing.Load() {
		return store.User{}, errDiskOnFire
	}
	return f.Store.UpdatePeers(ctx, name, fn)
}

func TestUnavailable(t *testing.T) {
	fs := &faultStore{Store: store.NewMemory()}
	s := servertest.Start(t, &servertest.Options{Store: fs})
	mutual(t, s, "alice", "bob")
	register(t, s, "carol")
	a := login(t, s, "alice")
	fs.failing.Store(true)
	f := a.fail(map[string]any{"type": "add-peers", "user": "alice", "peers": []string{"carol"}}, protocol.ErrUnavailable)
	if contains(f.Reason, "fire") {
		t.Fatalf("reason leaks internals: %s", f.raw)
	}
	c := dial(t, s, nil)
	c.fail(map[string]any{"type": "reg-user", "user": "dave", "password": pw}, protocol.ErrUnavailable)
	fs.failing.Store(false)
	// Nothing was acknowledged that was not written, and the server still serves.
	u, _ := s.Store.Get(context.Background(), "alice")
	if len(u.Peers) != 1 {
		t.Fatalf("peers: %v", u.Peers)
	}
	if _, err := s.Store.Get(context.Background(), "dave"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("dave exists")
	}
	a.ok(map[string]any{"type": "add-peers", "user": "alice", "peers": []string{"carol"}})
	c.ok(map[string]any{"type": "reg-user", "user": "dave", "password": pw})
}
