package meta

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

func testGuard(t *testing.T, tune func(*Config)) (*loginGuard, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake()
	cfg := Config{Clock: clk}
	if tune != nil {
		tune(&cfg)
	}
	cfg.setAuthDefaults()
	return newLoginGuard(&cfg), clk
}

// try runs one whole login attempt: admitted or not, and if admitted,
// finished as a success (ok) or a failure.
func try(t *testing.T, g *loginGuard, user, addr string, ok bool) *protocol.Error {
	t.Helper()
	a, perr := g.admit(user, addr)
	if perr != nil {
		if perr.Code != protocol.ErrRateLimited || perr.Reason == "" {
			t.Fatalf("refusal %v: want rate-limited with a reason", perr)
		}
		return perr
	}
	if err := a.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ok {
		a.succeeded()
	} else {
		a.failed()
	}
	return nil
}

func mustAdmit(t *testing.T, g *loginGuard, user, addr string, ok bool) {
	t.Helper()
	if perr := try(t, g, user, addr, ok); perr != nil {
		t.Fatalf("%s from %s refused: %v", user, addr, perr)
	}
}

func mustRefuse(t *testing.T, g *loginGuard, user, addr, reason string) {
	t.Helper()
	perr := try(t, g, user, addr, false)
	if perr == nil {
		t.Fatalf("%s from %s admitted, want refused (%s)", user, addr, reason)
	}
	if !strings.Contains(perr.Reason, reason) {
		t.Fatalf("%s from %s: reason %q, want one containing %q", user, addr, perr.Reason, reason)
	}
}

// TestPairBackoff: 10 failures from one address for one user are free, then
// each attempt waits 1, 2, 4, 8 min, then 15 min at most; a success clears
// the count. The same user at another address is never slowed.
func TestPairBackoff(t *testing.T) {
	g, clk := testGuard(t, nil)
	for range 10 {
		mustAdmit(t, g, "alice", "10.0.0.1", false)
	}
	mustRefuse(t, g, "alice", "10.0.0.1", "retry in 60 s")
	mustAdmit(t, g, "alice", "10.0.0.2", true) // the victim, elsewhere
	for i, wait := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 15 * time.Minute, 15 * time.Minute} {
		clk.Advance(wait - time.Second)
		mustRefuse(t, g, "alice", "10.0.0.1", "retry in 1 s")
		clk.Advance(time.Second)
		if perr := try(t, g, "alice", "10.0.0.1", false); perr != nil {
			t.Fatalf("failure %d after waiting %v: %v", 11+i, wait, perr)
		}
	}
	// Refused attempts do not count: hammering during the wait changes nothing.
	for range 100 {
		mustRefuse(t, g, "alice", "10.0.0.1", "retry in")
	}
	clk.Advance(15 * time.Minute)
	mustAdmit(t, g, "alice", "10.0.0.1", true) // the right password clears the count
	for range 10 {
		mustAdmit(t, g, "alice", "10.0.0.1", false)
	}
	mustRefuse(t, g, "alice", "10.0.0.1", "retry in 60 s")
}

// TestAttackerGuessRate proves the documented bound: one address gets at
// most 16 guesses at one account in the first hour and 4 an hour after, and
// never empties the account's shared budget.
func TestAttackerGuessRate(t *testing.T) {
	g, clk := testGuard(t, nil)
	count := func(d time.Duration) int {
		n := 0
		for end := clk.Now().Add(d); clk.Now().Before(end); clk.Advance(time.Second) {
			for try(t, g, "alice", "10.0.0.1", false) == nil {
				n++
			}
		}
		return n
	}
	if n := count(time.Hour); n != 16 {
		t.Fatalf("first hour: %d guesses, want 16", n)
	}
	if n := count(time.Hour); n != 4 {
		t.Fatalf("second hour: %d guesses, want 4", n)
	}
	// However long it goes on: 4 an hour (the doubling must not overflow
	// after a few dozen failures).
	if n := count(24 * time.Hour); n != 96 {
		t.Fatalf("the next day: %d guesses, want 96", n)
	}
	mustAdmit(t, g, "alice", "10.0.0.2", true)
}

// TestSpraying: one address fails for 50 different users, then is refused
// for any user it has not logged in as, until the bucket refills (one per
// 12 s). Other addresses are unaffected.
func TestSpraying(t *testing.T) {
	g, clk := testGuard(t, nil)
	mustAdmit(t, g, "mine", "10.0.0.1", true) // a user who logs in from here
	for i := range 50 {
		mustAdmit(t, g, fmt.Sprint("u", i), "10.0.0.1", false)
	}
	mustRefuse(t, g, "u50", "10.0.0.1", "from this address")
	mustAdmit(t, g, "u50", "10.0.0.2", false)
	mustAdmit(t, g, "mine", "10.0.0.1", true) // trusted: skips the address bucket
	clk.Advance(12 * time.Second)
	mustAdmit(t, g, "u50", "10.0.0.1", false)
	mustRefuse(t, g, "u51", "10.0.0.1", "from this address")
}

// TestDistributedGuessing: many addresses together get 100 failures for one
// account, then only addresses the user logged in from before may try.
func TestDistributedGuessing(t *testing.T) {
	g, clk := testGuard(t, nil)
	mustAdmit(t, g, "alice", "192.0.2.1", true) // alice's home
	for i := range 100 {
		mustAdmit(t, g, "alice", fmt.Sprintf("10.0.%d.%d", i/10, i%10), false)
	}
	mustRefuse(t, g, "alice", "10.1.0.1", "for this user")
	mustAdmit(t, g, "alice", "192.0.2.1", false) // a typo at home
	mustAdmit(t, g, "alice", "192.0.2.1", true)  // and the right password
	clk.Advance(36 * time.Second)
	mustAdmit(t, g, "alice", "10.1.0.1", false) // one more an hour / 100
	mustRefuse(t, g, "alice", "10.1.0.2", "for this user")
	// Trust expires.
	clk.Advance(31 * 24 * time.Hour)
	for i := range 100 {
		mustAdmit(t, g, "alice", fmt.Sprintf("10.2.%d.%d", i/10, i%10), false)
	}
	mustRefuse(t, g, "alice", "192.0.2.1", "for this user")
}

// TestReservation: attempts are counted when admitted, before any hashing,
// so concurrent attempts cannot overtake the limit; success and abort
// refund.
func TestReservation(t *testing.T) {
	g, _ := testGuard(t, func(c *Config) { c.AuthConcurrentPerUser = -1; c.AuthConcurrentPerAddr = -1 })
	var admitted []*attempt
	for {
		a, perr := g.admit("alice", "10.0.0.1")
		if perr != nil {
			break
		}
		admitted = append(admitted, a)
	}
	if len(admitted) != 10 {
		t.Fatalf("%d attempts admitted before any finished, want 10", len(admitted))
	}
	admitted[0].abort()     // the store failed: not a failure
	admitted[1].succeeded() // clears the pair
	for _, a := range admitted[2:] {
		a.failed()
	}
	// 8 failures stand: 2 more are free.
	mustAdmit(t, g, "alice", "10.0.0.1", false)
	mustAdmit(t, g, "alice", "10.0.0.1", false)
	mustRefuse(t, g, "alice", "10.0.0.1", "retry in")
}

// TestConcurrencyPerUser: two password checks per user at once, 16 waiting
// in order, the 19th refused at once; a waiter whose context ends leaves.
func TestConcurrencyPerUser(t *testing.T) {
	g, _ := testGuard(t, func(c *Config) { c.AuthFailuresPerPair = 1000 })
	var as []*attempt
	for i := range 18 {
		a, perr := g.admit("alice", fmt.Sprint("10.0.0.", i))
		if perr != nil {
			t.Fatalf("attempt %d: %v", i, perr)
		}
		as = append(as, a)
	}
	if perr := try(t, g, "alice", "10.0.1.1", false); perr == nil || !strings.Contains(perr.Reason, "in progress") {
		t.Fatalf("19th attempt: %v, want refused as in progress", perr)
	}
	mustAdmit(t, g, "bob", "10.0.1.1", false) // other users are not affected
	ctx := context.Background()
	for _, a := range as[:2] {
		if err := a.wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := as[2].wait(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	select {
	case <-as[3].w.ready:
		t.Fatal("a third check runs while two do")
	default:
	}
	as[0].failed()
	if err := as[3].wait(ctx); err != nil { // the next in line got the slot
		t.Fatal(err)
	}
	for _, a := range append([]*attempt{as[1]}, as[3:]...) {
		if err := a.wait(ctx); err != nil {
			t.Fatal(err)
		}
		a.failed()
	}
	if len(g.busyUser) != 0 || len(g.busyAddr) != 0 {
		t.Fatalf("slots left: users %v, addrs %v", g.busyUser, g.busyAddr)
	}
}

// TestConcurrencyPerAddr: at most 64 whoami in progress from one address.
func TestConcurrencyPerAddr(t *testing.T) {
	g, _ := testGuard(t, func(c *Config) { c.AuthFailuresPerAddr = -1 })
	for i := range 64 {
		if _, perr := g.admit(fmt.Sprint("u", i), "10.0.0.1"); perr != nil {
			t.Fatalf("attempt %d: %v", i, perr)
		}
	}
	mustRefuse(t, g, "u64", "10.0.0.1", "in progress from this address")
	mustAdmit(t, g, "u64", "10.0.0.2", false)
}

// TestTablesBounded: failures under ever new names and addresses do not
// grow the tables beyond maxTableEntries.
func TestTablesBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("fills tables of 50,000 entries")
	}
	g, clk := testGuard(t, func(c *Config) { c.AuthFailuresPerAddr = -1 })
	for i := range maxTableEntries + 500 {
		mustAdmit(t, g, fmt.Sprint("u", i), fmt.Sprint("a", i), false)
		if i%1000 == 0 {
			clk.Advance(time.Second)
		}
	}
	if len(g.pairs) > maxTableEntries || len(g.users.m) > maxTableEntries {
		t.Fatalf("pairs %d, users %d; want at most %d", len(g.pairs), len(g.users.m), maxTableEntries)
	}
	// A day later everything is swept.
	clk.Advance(pairTTL)
	mustAdmit(t, g, "x", "y", false)
	if len(g.pairs) != 1 || len(g.users.m) != 1 {
		t.Fatalf("after a day: pairs %d, users %d; want 1", len(g.pairs), len(g.users.m))
	}
}

func TestAddrKey(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"not an ip", "not an ip"},
	} {
		if got := addrKey(tt.in); got != tt.want {
			t.Errorf("addrKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestLookupBudget: unknown names cost one token each from the user's and
// the address's budget; over budget the answer reveals nothing, and with an
// empty budget nothing is even looked up; it refills within an hour.
func TestLookupBudget(t *testing.T) {
	clk := clock.NewFake()
	cfg := Config{Clock: clk}
	cfg.setAuthDefaults()
	l := newLookupGuard(&cfg)
	if !l.open("alice", "10.0.0.1") || !l.reveal("alice", "10.0.0.1", 49) {
		t.Fatal("49 of 50 refused")
	}
	if !l.open("alice", "10.0.0.1") {
		t.Fatal("one token left, but closed")
	}
	if l.reveal("alice", "10.0.0.1", 2) {
		t.Fatal("revealed 2 names with 1 token left")
	}
	if l.open("alice", "10.0.0.1") {
		t.Fatal("still open after an over-budget request")
	}
	if !l.open("bob", "10.0.0.2") {
		t.Fatal("another user at another address is limited")
	}
	// The address's budget (100) is shared by everyone there.
	if !l.reveal("", "10.0.0.3", 100) || l.open("bob", "10.0.0.3") {
		t.Fatal("address budget of 100 not enforced")
	}
	clk.Advance(time.Hour)
	if !l.open("alice", "10.0.0.1") || !l.reveal("alice", "10.0.0.1", 50) {
		t.Fatal("budget not refilled after an hour")
	}
}

// TestNameIndex: names are unique regardless of case, against stored names
// (loaded on first use, including mixed-case ones written before), names
// registered since, and concurrent registrations.
func TestNameIndex(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory()
	defer st.Close()
	for _, n := range []string{"Carol", "dave"} {
		if err := st.Create(ctx, store.User{Name: n, Password: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	ix := newNameIndex()
	for _, n := range []string{"carol", "CAROL", "Carol", "dave", "Dave"} {
		if _, err := ix.claim(ctx, st, n); !errors.Is(err, errNameTaken) {
			t.Fatalf("claim %s: %v, want taken", n, err)
		}
	}
	release, err := ix.claim(ctx, st, "Erin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ix.claim(ctx, st, "erin"); !errors.Is(err, errNameTaken) {
		t.Fatalf("claim erin while Erin is being registered: %v", err)
	}
	if err := st.Create(ctx, store.User{Name: "Erin", Password: "x"}); err != nil {
		t.Fatal(err)
	}
	release(true)
	if _, err := ix.claim(ctx, st, "ERIN"); !errors.Is(err, errNameTaken) {
		t.Fatalf("claim ERIN after Erin: %v", err)
	}
	release, err = ix.claim(ctx, st, "Frank")
	if err != nil {
		t.Fatal(err)
	}
	release(false) // registration failed: the name is free again
	release, err = ix.claim(ctx, st, "frank")
	if err != nil {
		t.Fatalf("claim frank after a failed Frank: %v", err)
	}
	release(false)
}
