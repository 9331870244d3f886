package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/password"
	"github.com/user-media-plug/umplug/internal/plug"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// These tests drive the metadata server in-process (no sockets) and force
// the interleavings that sockets only produce by chance: two devices of one
// user at once, a store that delays one write, a connection that closes while
// its message is being handled.

const testPassword = "sesameopen"

// hookStore is a real memory store with hooks run after a call reached the
// inner store, so a test can hold a handler at that point.
type hookStore struct {
	store.Store
	mu            sync.Mutex // guards the hooks
	afterGet      func(name string)
	afterUpdate   func(name string)
	updateEntered chan string
}

func (h *hookStore) Get(ctx context.Context, name string) (store.User, error) {
	u, err := h.Store.Get(ctx, name)
	h.mu.Lock()
	f := h.afterGet
	h.mu.Unlock()
	if f != nil {
		f(name)
	}
	return u, err
}

func (h *hookStore) UpdatePeers(ctx context.Context, name string, fn func([]string) ([]string, error)) (store.User, error) {
	u, err := h.Store.UpdatePeers(ctx, name, fn)
	h.mu.Lock()
	f := h.afterUpdate
	h.mu.Unlock()
	if f != nil {
		f(name)
	}
	return u, err
}

func (h *hookStore) setAfterGet(f func(string)) {
	h.mu.Lock()
	h.afterGet = f
	h.mu.Unlock()
}

func (h *hookStore) setAfterUpdate(f func(string)) {
	h.mu.Lock()
	h.afterUpdate = f
	h.mu.Unlock()
}

// holdFirst returns a store hook that holds the first call whose name
// matches until release is closed (held is closed when it is reached);
// every other call passes.
func holdFirst(match func(string) bool) (hook func(string), held, release chan struct{}) {
	held, release = make(chan struct{}), make(chan struct{})
	var taken atomic.Bool
	hook = func(name string) {
		if match(name) && taken.CompareAndSwap(false, true) {
			close(held)
			<-release
		}
	}
	return hook, held, release
}

// recorder is a plug.Media that remembers pair and unpair events.
type recorder struct {
	mu      sync.Mutex
	pairs   []plug.Pair
	unpairs []plug.Unpair
}

func (r *recorder) Pair(p plug.Pair) { r.mu.Lock(); r.pairs = append(r.pairs, p); r.mu.Unlock() }
func (r *recorder) Unpair(u plug.Unpair) {
	r.mu.Lock()
	r.unpairs = append(r.unpairs, u)
	r.mu.Unlock()
}

func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pairs), len(r.unpairs)
}

type testServer struct {
	*Server
	st    *hookStore
	clk   *clock.Fake
	media *recorder
}

// newTestServer returns a server over a memory store holding users with the
// given peer lists, cheap hashing and no rate limits.
func newTestServer(t *testing.T, users map[string][]string, configure ...func(*Config)) *testServer {
	t.Helper()
	h := password.New(password.Config{Params: password.Params{Memory: 64, Time: 1, Threads: 1}})
	st := &hookStore{Store: store.NewMemory()}
	ctx := context.Background()
	for name, peers := range users {
		hash, err := h.Hash(ctx, testPassword)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Create(ctx, store.User{Name: name, Password: hash, Peers: peers}); err != nil {
			t.Fatal(err)
		}
	}
	clk := clock.NewFake()
	rec := &recorder{}
	cfg := Config{Store: st, Hasher: h, Clock: clk, Media: rec, RateLimit: -1,
		AuthFailuresPerUser: 1 << 30, AuthFailuresPerAddr: 1 << 30, RegistrationsPerAddr: 1 << 30}
	for _, f := range configure {
		f(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testServer{Server: s, st: st, clk: clk, media: rec}
}

// dev is one in-process connection.
type dev struct {
	t   *testing.T
	x   *Session
	p   *pipeConn
	seq int
}

func (ts *testServer) open(t *testing.T) *dev {
	t.Helper()
	p := newPipeConn()
	x, err := ts.Open(p, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	d := &dev{t: t, x: x, p: p}
	t.Cleanup(x.Close)
	return d
}

// login opens a connection and identifies it as user.
func (ts *testServer) login(t *testing.T, user string) *dev {
	t.Helper()
	d := ts.open(t)
	if m := d.do(`{"type":"whoami","user":%q,"password":%q}`, user, testPassword); !m.OK {
		t.Fatalf("whoami %s: %s %s", user, m.Error, m.Reason)
	}
	return d
}

// send sends a message (a format for everything but tx, which it appends)
// and returns its tx.
func (d *dev) send(format string, args ...any) string {
	d.seq++
	tx := strconv.Itoa(d.seq)
	msg := fmt.Sprintf(format, args...)
	d.x.Handle([]byte(msg[:len(msg)-1] + `,"tx":` + tx + `}`))
	return tx
}

// next returns the next frame the server queued for d that matches keep,
// failing after a generous deadline.
func (d *dev) next(keep func(protocol.ServerMessage) bool) protocol.ServerMessage {
	d.t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case b := <-d.p.out:
			var m protocol.ServerMessage
			if err := json.Unmarshal(b, &m); err != nil {
				d.t.Fatalf("invalid JSON from server: %q", b)
			}
			if keep(m) {
				return m
			}
		case <-deadline.C:
			d.t.Fatal("no matching message within 5 s")
		}
	}
}

// res waits for the response with tx.
func (d *dev) res(tx string) protocol.ServerMessage {
	d.t.Helper()
	return d.next(func(m protocol.ServerMessage) bool { return m.Type == protocol.TypeRes && string(m.Tx) == tx })
}

// do sends a message and waits for its response.
func (d *dev) do(format string, args ...any) protocol.ServerMessage {
	d.t.Helper()
	return d.res(d.send(format, args...))
}

// storedPeers reads user's list from the store.
func (ts *testServer) storedPeers(t *testing.T, user string) []string {
	t.Helper()
	u, err := ts.st.Store.Get(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return u.Peers
}

// cachedPeers returns user's cached list, or nil if the user is offline.
func (ts *testServer) cachedPeers(user string) []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	us := ts.users[user]
	if us == nil {
		return nil
	}
	out := []string{}
	for p := range us.peers {
		out = append(out, p)
	}
	return out
}

// TestPeerEditsOfTwoDevicesStayOrdered: alice's first device adds bob and its
// store write is held after it landed; her second device deletes bob
// meanwhile. Whatever the timing, the cache ends equal to the store, and
// bob (who lists alice) cannot call her. Before the fix the cache kept [bob]
// while the store held [] and bob's call rang.
func TestPeerEditsOfTwoDevicesStayOrdered(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}, "bob": {"alice"}})
	a1, a2 := ts.login(t, "alice"), ts.login(t, "alice")
	bob := ts.login(t, "bob")

	hook, held, release := holdFirst(func(string) bool { return true })
	ts.st.setAfterUpdate(hook)
	contended := make(chan struct{}, 1)
	ts.userLocks.Contended = func(key string) {
		if key == "alice" {
			select {
			case contended <- struct{}{}:
			default:
			}
		}
	}
	addTx := a1.send(`{"type":"add-peers","user":"alice","peers":["bob"]}`)
	<-held
	delTx := a2.send(`{"type":"del-peers","user":"alice","peers":["bob"]}`)
	// The delete either completes (the old, broken order) or waits for
	// alice's lock: wait for whichever happens, then let the add finish.
	delDone := make(chan protocol.ServerMessage, 1)
	go func() {
		delDone <- a2.res(delTx)
	}()
	var del protocol.ServerMessage
	select {
	case <-contended:
		close(release)
		del = <-delDone
	case del = <-delDone:
		close(release)
	}
	if add := a1.res(addTx); !add.OK || !del.OK {
		t.Fatalf("add %v %s, del %v %s", add.OK, add.Error, del.OK, del.Error)
	}
	ts.st.setAfterUpdate(nil)

	stored, cached := ts.storedPeers(t, "alice"), ts.cachedPeers("alice")
	if strings.Join(stored, ",") != strings.Join(cached, ",") {
		t.Fatalf("store %v, cache %v: the cache disagrees with the store", stored, cached)
	}
	if len(stored) != 0 {
		t.Fatalf("store %v: the delete was sent after the add and must win", stored)
	}
	if m := bob.do(`{"type":"call","user":"bob","peer":"alice"}`); m.OK || m.Error != protocol.ErrNotAPeer {
		t.Fatalf("bob's call: ok=%v %s, want not-a-peer", m.OK, m.Error)
	}
}

// TestWhoamiReadsPeersAfterTheHash: a whoami reads alice's record, then
// (held in the store) alice's other device deletes bob and leaves. The new
// device must be installed with the list the store holds after its password
// check, not the one it read before.
func TestWhoamiReadsPeersAfterTheHash(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {"bob"}, "bob": {"alice"}})
	a1 := ts.login(t, "alice")
	bob := ts.login(t, "bob")

	hook, held, release := holdFirst(func(name string) bool { return name == "alice" })
	ts.st.setAfterGet(hook)
	a2 := ts.open(t)
	loginTx := a2.send(`{"type":"whoami","user":"alice","password":%q}`, testPassword)
	<-held // a2's whoami has read alice's record
	if m := a1.do(`{"type":"del-peers","user":"alice","peers":["bob"]}`); !m.OK {
		t.Fatalf("del-peers: %s", m.Error)
	}
	a1.x.Close()
	close(release)
	if m := a2.res(loginTx); !m.OK {
		t.Fatalf("whoami: %s %s", m.Error, m.Reason)
	}
	ts.st.setAfterGet(nil)
	if cached := ts.cachedPeers("alice"); len(cached) != 0 {
		t.Fatalf("alice's cache %v after login, store has []", cached)
	}
	if m := bob.do(`{"type":"call","user":"bob","peer":"alice"}`); m.OK || m.Error != protocol.ErrNotAPeer {
		t.Fatalf("bob's call: ok=%v %s, want not-a-peer", m.OK, m.Error)
	}
}

// TestHandleNeverBlocks: while a whoami waits in the store, Handle returns at
// once for it and for the messages after it, and their responses come in
// the order the messages were sent.
func TestHandleNeverBlocks(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}})
	hook, held, release := holdFirst(func(string) bool { return true })
	ts.st.setAfterGet(hook)
	d := ts.open(t)
	txs := []string{d.send(`{"type":"whoami","user":"alice","password":%q}`, testPassword)}
	<-held
	for i := 0; i < 5; i++ { // each Handle returns although the whoami is held
		txs = append(txs, d.send(`{"type":"peers-online","user":"alice"}`))
	}
	close(release)
	for i, tx := range txs {
		m := d.next(func(m protocol.ServerMessage) bool { return m.Type == protocol.TypeRes })
		if string(m.Tx) != tx || !m.OK {
			t.Fatalf("response %d: tx %s ok=%v %s, want tx %s ok", i, m.Tx, m.OK, m.Error, tx)
		}
	}
}

// TestPeersNeverOlderThanAnEvent: bob changes status while alice asks for
// her peers. A peers response must never show an older status of bob than a
// status event alice received before that response.
func TestPeersNeverOlderThanAnEvent(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {"bob"}, "bob": {"alice"}})
	alice, bob := ts.login(t, "alice"), ts.login(t, "bob")
	const changes = 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= changes; i++ {
			bob.send(`{"type":"status","user":"bob","status":"s%d"}`, i)
		}
	}()
	seen := 0 // the newest status of bob alice has received
	asked := map[string]bool{}
	for i := 0; i < 100; i++ {
		asked[alice.send(`{"type":"peers","user":"alice"}`)] = true
	}
	for answered := 0; answered < len(asked); {
		m := alice.next(func(protocol.ServerMessage) bool { return true })
		switch {
		case m.Type == protocol.TypeStatus && m.User == "bob":
			if n, err := strconv.Atoi(strings.TrimPrefix(m.Status, "s")); err == nil {
				seen = n
			}
		case m.Type == protocol.TypeRes && asked[string(m.Tx)]:
			answered++
			var peers []protocol.PeerInfo
			if err := json.Unmarshal(m.Peers, &peers); err != nil || len(peers) != 1 || peers[0].Status == nil {
				t.Fatalf("peers response %s", m.Peers)
			}
			got := 0
			if n, err := strconv.Atoi(strings.TrimPrefix(*peers[0].Status, "s")); err == nil {
				got = n
			}
			if got < seen {
				t.Fatalf("peers shows bob's status s%d after alice received s%d", got, seen)
			}
		}
	}
	<-done
}

// TestCallRacesOfTwoDevices runs pairs of competing actions of two devices
// in both orders and concurrently. Whatever the order: each request gets one
// response, at most one pair is emitted, and a call whose device left is
// unpaired.
func TestCallRacesOfTwoDevices(t *testing.T) {
	type act func(ts *testServer, a1, b1, b2 *dev, callTx string) (tx string, d *dev)
	acceptBy := func(first bool) act {
		return func(ts *testServer, a1, b1, b2 *dev, callTx string) (string, *dev) {
			d := b2
			if first {
				d = b1
			}
			d.seq++
			d.x.Handle([]byte(`{"type":"accept","user":"bob","peer":"alice","tx":` + callTx + `}`))
			return callTx, d
		}
	}
	rejectBy2 := func(ts *testServer, a1, b1, b2 *dev, callTx string) (string, *dev) {
		b2.x.Handle([]byte(`{"type":"reject","user":"bob","peer":"alice","tx":` + callTx + `}`))
		return callTx, b2
	}
	cancel := func(ts *testServer, a1, b1, b2 *dev, callTx string) (string, *dev) {
		return a1.send(`{"type":"cancel","user":"alice","peer":"bob"}`), a1
	}
	closeA1 := func(ts *testServer, a1, b1, b2 *dev, callTx string) (string, *dev) {
		a1.x.Close()
		return "", nil
	}
	closeB1 := func(ts *testServer, a1, b1, b2 *dev, callTx string) (string, *dev) {
		b1.x.Close()
		return "", nil
	}
	cases := []struct {
		name string
		x, y act
	}{
		{"accept/accept", acceptBy(true), acceptBy(false)},
		{"accept/reject", acceptBy(true), rejectBy2},
		{"accept/cancel", acceptBy(true), cancel},
		{"accept/caller-leaves", acceptBy(true), closeA1},
		{"accept/accepter-leaves", acceptBy(true), closeB1},
		{"cancel/caller-leaves", cancel, closeA1},
	}
	for _, c := range cases {
		for _, order := range []string{"xy", "yx", "concurrent"} {
			t.Run(c.name+"/"+order, func(t *testing.T) {
				ts := newTestServer(t, map[string][]string{"alice": {"bob"}, "bob": {"alice"}})
				a1 := ts.login(t, "alice")
				b1, b2 := ts.login(t, "bob"), ts.login(t, "bob")
				callTx := a1.send(`{"type":"call","user":"alice","peer":"bob"}`)
				if m := a1.res(callTx); !m.OK {
					t.Fatalf("call: %s", m.Error)
				}
				for _, d := range []*dev{b1, b2} {
					d.next(func(m protocol.ServerMessage) bool { return m.Type == protocol.TypeCall })
				}
				type sent struct {
					tx string
					d  *dev
				}
				var results [2]sent
				run := func(i int, f act) {
					tx, d := f(ts, a1, b1, b2, callTx)
					results[i] = sent{tx, d}
				}
				switch order {
				case "xy":
					run(0, c.x)
					run(1, c.y)
				case "yx":
					run(1, c.y)
					run(0, c.x)
				default:
					var wg sync.WaitGroup
					wg.Add(2)
					go func() { defer wg.Done(); run(0, c.x) }()
					go func() { defer wg.Done(); run(1, c.y) }()
					wg.Wait()
				}
				for _, r := range results {
					if r.d != nil && !r.d.x.isGone() {
						r.d.res(r.tx) // exactly one response each (more would be found by the checks below)
					}
				}
				// Settle: everything the two actions caused has been
				// decided under mu by now; close every device.
				for _, d := range []*dev{a1, b1, b2} {
					d.x.Close()
				}
				pairs, unpairs := ts.media.counts()
				if pairs > 1 {
					t.Fatalf("%d pairs emitted for one call", pairs)
				}
				if pairs != unpairs {
					t.Fatalf("%d pairs, %d unpairs after every device left", pairs, unpairs)
				}
				if st := ts.Stats(); st.Calls != 0 || st.Users != 0 {
					t.Fatalf("left behind: %+v", st)
				}
				ts.media.mu.Lock()
				for _, p := range ts.media.pairs {
					for _, sd := range p.Sides {
						if sd.Device == "" {
							t.Fatalf("pair with a device that had left: %+v", p)
						}
					}
				}
				ts.media.mu.Unlock()
			})
		}
	}
}

// TestIdentificationDeadline: a connection that has not identified within
// IdentifyTimeout is closed; one whose whoami is still being checked is not
// closed until that whoami failed; an identified one stays.
func TestIdentificationDeadline(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}}, func(c *Config) { c.IdentifyTimeout = 10 * time.Second })
	closed := func(d *dev) bool {
		select {
		case <-d.p.closed:
			return true
		default:
			return false
		}
	}
	idle := ts.open(t)
	ident := ts.login(t, "alice")

	hook, held, release := holdFirst(func(string) bool { return true })
	ts.st.setAfterGet(hook)
	slow := ts.open(t)
	tx := slow.send(`{"type":"whoami","user":"alice","password":"wrong-password"}`)
	<-held

	ts.clk.Advance(9 * time.Second)
	if closed(idle) {
		t.Fatal("closed before the deadline")
	}
	ts.clk.Advance(time.Second) // runs the deadlines synchronously
	if !closed(idle) {
		t.Fatal("an unidentified connection survived the deadline")
	}
	if closed(slow) {
		t.Fatal("closed while its whoami was being checked")
	}
	close(release)
	if m := slow.res(tx); m.OK || m.Error != protocol.ErrAuthFailed {
		t.Fatalf("whoami: ok=%v %s", m.OK, m.Error)
	}
	select {
	case <-slow.p.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("not closed after its whoami failed past the deadline")
	}
	if closed(ident) {
		t.Fatal("an identified connection was closed")
	}
}

// TestIdentificationDeadlineAfterRegister: a reg-user still running when
// the deadline passes (hashing slots are slow under a login flood) is let
// finish, and the connection then gets one more IdentifyTimeout for the
// whoami a client sends next; only once: a second late reg-user ends it.
func TestIdentificationDeadlineAfterRegister(t *testing.T) {
	closed := func(d *dev) bool {
		select {
		case <-d.p.closed:
			return true
		default:
			return false
		}
	}
	// regLate sends a reg-user for name that is held in the store until
	// the deadline has passed, and returns once it was answered.
	regLate := func(ts *testServer, d *dev, name string) {
		t.Helper()
		hook, held, release := holdFirst(func(string) bool { return true })
		ts.st.setAfterGet(hook)
		tx := d.send(`{"type":"reg-user","user":%q,"password":%q,"peers":["alice"]}`, name, testPassword)
		<-held
		ts.clk.Advance(10 * time.Second) // the deadline passes (runs synchronously)
		if closed(d) {
			t.Fatal("closed while its reg-user was running")
		}
		close(release)
		if m := d.res(tx); !m.OK {
			t.Fatalf("reg-user %s: %s", name, m.Error)
		}
	}
	cfg := func(c *Config) { c.IdentifyTimeout = 10 * time.Second }

	t.Run("then whoami", func(t *testing.T) {
		ts := newTestServer(t, map[string][]string{"alice": {}}, cfg)
		d := ts.open(t)
		regLate(ts, d, "bob")
		ts.clk.Advance(9 * time.Second)
		if closed(d) {
			t.Fatal("closed before its whoami had IdentifyTimeout")
		}
		if m := d.do(`{"type":"whoami","user":"bob","password":%q}`, testPassword); !m.OK {
			t.Fatalf("whoami: %s", m.Error)
		}
		ts.clk.Advance(time.Hour)
		if closed(d) {
			t.Fatal("an identified connection was closed")
		}
	})
	t.Run("no whoami", func(t *testing.T) {
		ts := newTestServer(t, map[string][]string{"alice": {}}, cfg)
		d := ts.open(t)
		regLate(ts, d, "bob")
		ts.clk.Advance(10 * time.Second)
		select {
		case <-d.p.closed:
		case <-time.After(5 * time.Second):
			t.Fatal("not closed IdentifyTimeout after its reg-user")
		}
	})
	t.Run("second late reg-user", func(t *testing.T) {
		ts := newTestServer(t, map[string][]string{"alice": {}}, cfg)
		d := ts.open(t)
		regLate(ts, d, "bob")
		regLate(ts, d, "carol")
		select {
		case <-d.p.closed:
		case <-time.After(5 * time.Second):
			t.Fatal("a second late reg-user extended the deadline again")
		}
	})
}

// TestSlowConsumerIsClosedWithoutBlocking: a connection whose writes never
// complete is closed once MaxQueueBytes are waiting, and the presence fan-out
// that overflowed it does not wait for it: another device is served.
func TestSlowConsumerIsClosedWithoutBlocking(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {"bob", "carol"}, "bob": {"alice"}, "carol": {"alice"}},
		func(c *Config) { c.MaxQueueBytes = 4 << 10 })
	stuck := &stuckConn{pipeConn: newPipeConn(), writing: make(chan struct{}), unblock: make(chan struct{})}
	defer close(stuck.unblock)
	x, err := ts.Open(stuck, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	x.Handle([]byte(`{"type":"whoami","user":"bob","password":"` + testPassword + `","tx":1}`))
	<-stuck.writing // the whoami response is stuck in the socket
	carol := ts.login(t, "carol")
	alice := ts.login(t, "alice")
	// Every status goes to bob (stuck) and carol; alice gets each answer
	// although bob's writer never returns.
	for i := 0; i < 100; i++ {
		if m := alice.do(`{"type":"status","user":"alice","status":"%s"}`, strings.Repeat("x", 60)); !m.OK {
			t.Fatalf("status: %s", m.Error)
		}
	}
	select {
	case <-stuck.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the stuck connection was never closed")
	}
	if m := carol.do(`{"type":"peers-online","user":"carol"}`); !m.OK {
		t.Fatalf("carol: %s", m.Error)
	}
}

// stuckConn is a connection whose first write never completes.
type stuckConn struct {
	*pipeConn
	once    sync.Once
	writing chan struct{}
	unblock chan struct{}
}

func (c *stuckConn) WriteText(b []byte) error {
	c.once.Do(func() { close(c.writing) })
	<-c.unblock
	return errors.New("connection closed")
}

// isGone reports whether Close has removed the session.
func (x *Session) isGone() bool {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	return x.gone
}
