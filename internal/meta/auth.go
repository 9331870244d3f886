package meta

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/protocol"
)

// authState holds the limits that protect passwords and user names: the
// login guard (whoami), the lookup budget (names revealed by not-found) and
// the case-folded name index (reg-user).
type authState struct {
	logins  *loginGuard
	lookups *lookupGuard
	names   *nameIndex
}

func newAuthState(cfg *Config) *authState {
	return &authState{
		logins:  newLoginGuard(cfg),
		lookups: newLookupGuard(cfg),
		names:   newNameIndex(),
	}
}

// addrKey is the unit the per-address limits count in: the address itself
// for IPv4, its /64 for IPv6, because one IPv6 host usually holds a whole
// /64 and could otherwise take a fresh budget from each of 2^64 addresses.
func addrKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return addr
	}
	return p.String()
}

// userWaitMax is how many whoami for one user may wait for one of its
// AuthConcurrentPerUser slots; beyond it they are refused at once. Twice the
// default device limit, so a user whose eight devices all reconnect at once
// (a server restart) is served, not refused.
const userWaitMax = 2 * protocol.DefaultDevices

// loginGuard decides which whoami may check a password. The policy (numbers
// are Config's defaults; docs/protocol.md "Login limits" is the reference):
//
//   - Every attempt is counted before its password is hashed (a reservation)
//     and refunded when it succeeds, so parallel guesses are counted exactly
//     like sequential ones: no concurrency buys an extra guess.
//   - Per (address, user): 10 failures are free; then each further attempt
//     must wait 1 min after the last failure, doubling per failure up to
//     15 min. This is what slows an attacker; it never touches the same user
//     at another address. A success clears it.
//   - Per address, across users: a bucket of 50 failures refilled at 300/h
//     (password spraying).
//   - Per user, across addresses: a bucket of 100 failures refilled at 100/h
//     (a distributed attack). One attacking address cannot empty it (its
//     pair backoff holds it to 16 guesses in the first hour and 4/h
//     after), so the real user at another address is unaffected; when many
//     addresses empty it, only addresses the user logged in from in the last
//     30 days still get through.
//   - Pairs (address, user) with a success in the last 30 days are trusted:
//     they skip the address and user buckets (not their own backoff).
//   - Concurrency: at most 2 password checks per user at once, 16 more wait
//     their turn; at most 64 whoami in progress per address.
//
// Unknown users are counted exactly like known ones: the limits must not tell
// them apart any more than auth-failed does.
type loginGuard struct {
	clk clock.Clock

	pairFree     int // failures per pair before backoff; ≤ 0: no pair limit
	backoff      time.Duration
	backoffMax   time.Duration
	trustFor     time.Duration
	userParallel int // ≤ 0: unlimited
	addrParallel int // ≤ 0: unlimited

	mu        sync.Mutex // guards the following
	pairs     map[string]*pairState
	trusted   map[string]int64 // pair → last successful login (clock UnixNano: 8 bytes an entry, not 24)
	addrs     *buckets         // failures per address
	users     *buckets         // failures per user
	busyUser  map[string]*userSlots
	busyAddr  map[string]int
	lastSweep time.Time
}

// pairState counts failed (and reserved) attempts of one user from one
// address.
type pairState struct {
	fails    int // failures, counting the attempts in flight
	inflight int // admitted attempts not yet finished
	last     time.Time
}

// userSlots are one user's password-check slots and the attempts waiting
// for one, in arrival order.
type userSlots struct {
	running int
	waiting []*slotWaiter
}

type slotWaiter struct {
	ready   chan struct{}
	granted bool // set under loginGuard.mu before ready is closed
}

func newLoginGuard(cfg *Config) *loginGuard {
	return &loginGuard{
		clk:          cfg.Clock,
		pairFree:     cfg.AuthFailuresPerPair,
		backoff:      cfg.AuthBackoff,
		backoffMax:   cfg.AuthBackoffMax,
		trustFor:     cfg.AuthTrustFor,
		userParallel: cfg.AuthConcurrentPerUser,
		addrParallel: cfg.AuthConcurrentPerAddr,
		pairs:        make(map[string]*pairState),
		trusted:      make(map[string]int64),
		addrs:        newBuckets(cfg.AuthFailuresPerAddr, cfg.AuthAddrRefill),
		users:        newBuckets(cfg.AuthFailuresPerUser, cfg.AuthUserRefill),
		busyUser:     make(map[string]*userSlots),
		busyAddr:     make(map[string]int),
		lastSweep:    cfg.Clock.Now(),
	}
}

// attempt is one admitted whoami. Exactly one of failed, succeeded or
// abort must be called once it was admitted.
type attempt struct {
	g          *loginGuard
	user, addr string
	pair       string
	trusted    bool // took no tokens from the address and user buckets
	w          *slotWaiter
	slot       bool // holds one of the user's slots
	done       bool
}

func rateLimited(format string, args ...any) *protocol.Error {
	return protocol.Errorf(protocol.ErrRateLimited, format, args...)
}

// admit counts one login attempt for user from addr (an addrKey) before its
// password is checked, or refuses it with rate-limited.
func (g *loginGuard) admit(user, addr string) (*attempt, *protocol.Error) {
	now := g.clk.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sweepIfDueLocked(now, sweepEvery)

	if g.addrParallel > 0 && g.busyAddr[addr] >= g.addrParallel {
		return nil, rateLimited("too many logins in progress from this address; try again")
	}
	us := g.busyUser[user]
	if us != nil && g.userParallel > 0 && us.running+len(us.waiting) >= g.userParallel+userWaitMax {
		return nil, rateLimited("too many logins in progress for this user; try again")
	}
	pair := user + "\x00" + addr // names cannot contain NUL
	ps := g.pairs[pair]
	if ps != nil && g.pairFree > 0 && ps.fails >= g.pairFree {
		if wait := ps.last.Add(g.backoffFor(ps.fails)).Sub(now); wait > 0 {
			return nil, rateLimited("too many failed logins for this user from this address; retry in %d s",
				int(math.Ceil(wait.Seconds())))
		}
	}
	t, ok := g.trusted[pair]
	trusted := ok && now.Sub(time.Unix(0, t)) < g.trustFor
	if !trusted {
		if g.addrs.level(addr, now) < 1 {
			return nil, rateLimited("too many failed logins from this address; try later")
		}
		if g.users.level(user, now) < 1 {
			return nil, rateLimited("too many failed logins for this user; try later")
		}
		g.addrs.add(addr, -1, now)
		g.users.add(user, -1, now)
	}

	// Reserve: the attempt counts as a failure until it succeeds.
	if g.pairFree > 0 {
		if ps == nil {
			if len(g.pairs) >= maxTableEntries {
				g.sweepIfDueLocked(now, time.Minute)
				if len(g.pairs) >= maxTableEntries {
					evictOne(g.pairs, func(p *pairState) time.Time { return p.last })
				}
			}
			ps = &pairState{}
			g.pairs[pair] = ps
		}
		ps.fails++
		ps.inflight++
		ps.last = now
	}

	a := &attempt{g: g, user: user, addr: addr, pair: pair, trusted: trusted}
	g.busyAddr[addr]++
	if us == nil {
		us = &userSlots{}
		g.busyUser[user] = us
	}
	if g.userParallel <= 0 || us.running < g.userParallel {
		us.running++
		a.slot = true
	} else {
		a.w = &slotWaiter{ready: make(chan struct{})}
		us.waiting = append(us.waiting, a.w)
	}
	return a, nil
}

// backoffFor is the wait after the last failure once a pair has fails
// failures: backoff for the first one over the free ones, doubling after.
func (g *loginGuard) backoffFor(fails int) time.Duration {
	d := g.backoff
	for n := fails - g.pairFree; n > 0 && d < g.backoffMax; n-- {
		d *= 2 // stops at the cap: a shift by n would overflow
	}
	return min(d, g.backoffMax)
}

// wait blocks until the attempt holds one of its user's password-check
// slots, or ctx ends (then the attempt is aborted and ctx's error returned).
func (a *attempt) wait(ctx context.Context) error {
	if a.slot {
		return nil
	}
	select {
	case <-a.w.ready:
		a.slot = true
		return nil
	case <-ctx.Done():
	}
	g := a.g
	g.mu.Lock()
	if a.w.granted {
		a.slot = true
	} else if us := g.busyUser[a.user]; us != nil {
		for i, w := range us.waiting {
			if w == a.w {
				us.waiting = append(us.waiting[:i], us.waiting[i+1:]...)
				break
			}
		}
	}
	g.mu.Unlock()
	a.abort()
	return fmt.Errorf("wait for a login slot: %w", ctx.Err())
}

// failed records that the password was wrong or the user unknown. The
// reservation made by admit stands.
func (a *attempt) failed() {
	a.finish(func(g *loginGuard, now time.Time) {
		if ps := g.pairs[a.pair]; ps != nil {
			ps.inflight--
			ps.last = now
		}
	})
}

// succeeded records a login: the pair's failures are forgotten, the pair
// becomes trusted, and the attempt's tokens are refunded.
func (a *attempt) succeeded() {
	a.finish(func(g *loginGuard, now time.Time) {
		// Forget the pair's failures, but not the other attempts still in
		// flight: they were admitted as failures and stay so until they end.
		if ps := g.pairs[a.pair]; ps != nil {
			ps.inflight--
			if ps.fails = ps.inflight; ps.fails <= 0 {
				delete(g.pairs, a.pair)
			}
		}
		if _, ok := g.trusted[a.pair]; !ok && len(g.trusted) >= maxTableEntries {
			g.sweepIfDueLocked(now, time.Minute)
			if len(g.trusted) >= maxTableEntries {
				evictOne(g.trusted, func(t int64) time.Time { return time.Unix(0, t) })
			}
		}
		g.trusted[a.pair] = now.UnixNano()
		a.refundLocked(now)
	})
}

// abort undoes the attempt's reservation: nothing was decided (the store
// failed, the wait was cut short).
func (a *attempt) abort() {
	a.finish(func(g *loginGuard, now time.Time) {
		if ps := g.pairs[a.pair]; ps != nil {
			ps.inflight--
			if ps.fails--; ps.fails <= 0 {
				delete(g.pairs, a.pair)
			}
		}
		a.refundLocked(now)
	})
}

func (a *attempt) refundLocked(now time.Time) {
	if !a.trusted {
		a.g.addrs.add(a.addr, 1, now)
		a.g.users.add(a.user, 1, now)
	}
}

func (a *attempt) finish(record func(g *loginGuard, now time.Time)) {
	g := a.g
	now := g.clk.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if a.done {
		return
	}
	a.done = true
	record(g, now)
	if g.busyAddr[a.addr]--; g.busyAddr[a.addr] <= 0 {
		delete(g.busyAddr, a.addr)
	}
	us := g.busyUser[a.user]
	if us == nil {
		return
	}
	if a.slot {
		if len(us.waiting) > 0 {
			w := us.waiting[0]
			us.waiting[0] = nil
			us.waiting = us.waiting[1:]
			w.granted = true
			close(w.ready)
		} else {
			us.running--
		}
	}
	if us.running <= 0 && len(us.waiting) == 0 {
		delete(g.busyUser, a.user)
	}
}

// sweepEvery spaces the sweeps of expired entries: each is a pass over the
// tables, at most maxTableEntries long.
const sweepEvery = 10 * time.Minute

// pairTTL is how long a pair's failures are remembered after the last one.
const pairTTL = 24 * time.Hour

// sweepIfDueLocked sweeps unless the last sweep was less than every ago: a
// full table of live entries must not cost a pass per insert.
func (g *loginGuard) sweepIfDueLocked(now time.Time, every time.Duration) {
	if now.Sub(g.lastSweep) >= every {
		g.sweepLocked(now)
	}
}

func (g *loginGuard) sweepLocked(now time.Time) {
	g.lastSweep = now
	for k, ps := range g.pairs {
		if now.Sub(ps.last) >= pairTTL && ps.inflight <= 0 {
			delete(g.pairs, k)
		}
	}
	for k, t := range g.trusted {
		if now.Sub(time.Unix(0, t)) >= g.trustFor {
			delete(g.trusted, k)
		}
	}
	g.addrs.sweep(now)
	g.users.sweep(now)
}

// lookupGuard bounds how many unknown names add-peers and reg-user's initial
// peers may reveal through not-found (user enumeration): a budget per
// identified user and per address, each a bucket refilled in full every
// hour. A request is looked up only while every budget it draws on has a
// token left; unknown names cost one token each. When they cost more than
// is left, the budgets are emptied and the answer is rate-limited without
// the names, so one request reveals at most "some name is unknown".
type lookupGuard struct {
	clk clock.Clock

	mu    sync.Mutex // guards the following
	users *buckets
	addrs *buckets
}

func newLookupGuard(cfg *Config) *lookupGuard {
	per := func(n int) time.Duration {
		if n <= 0 {
			return time.Hour
		}
		return time.Hour / time.Duration(n)
	}
	return &lookupGuard{
		clk:   cfg.Clock,
		users: newBuckets(cfg.LookupUnknownPerUser, per(cfg.LookupUnknownPerUser)),
		addrs: newBuckets(cfg.LookupUnknownPerAddr, per(cfg.LookupUnknownPerAddr)),
	}
}

// open reports whether user (if not "") and addr may look names up now.
func (l *lookupGuard) open(user, addr string) bool {
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addrs.level(addr, now) >= 1 && (user == "" || l.users.level(user, now) >= 1)
}

// reveal spends n tokens of user's (if not "") and addr's budgets and
// reports whether both had them; if not, both are emptied instead.
func (l *lookupGuard) reveal(user, addr string, n int) bool {
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	ok := l.addrs.level(addr, now) >= float64(n) && (user == "" || l.users.level(user, now) >= float64(n))
	spend := float64(n)
	if !ok {
		spend = math.MaxFloat64 / 2 // empty them: add clamps at zero
	}
	l.addrs.add(addr, -spend, now)
	if user != "" {
		l.users.add(user, -spend, now)
	}
	return ok
}

// setAuthDefaults fills the login and lookup limits of Config: 0 means the
// default, negative means unlimited (kept as is: the guards read ≤ 0 as
// "no limit").
func (c *Config) setAuthDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.AuthFailuresPerPair, 10)
	defDur(&c.AuthBackoff, time.Minute)
	defDur(&c.AuthBackoffMax, 15*time.Minute)
	def(&c.AuthFailuresPerAddr, 50)
	defDur(&c.AuthAddrRefill, 12*time.Second)
	def(&c.AuthFailuresPerUser, 100)
	defDur(&c.AuthUserRefill, 36*time.Second)
	defDur(&c.AuthTrustFor, 30*24*time.Hour)
	def(&c.AuthConcurrentPerUser, 2)
	def(&c.AuthConcurrentPerAddr, 64)
	def(&c.LookupUnknownPerUser, 50)
	def(&c.LookupUnknownPerAddr, 100)
}

// busyOrUnavailable answers a whoami or reg-user that could not finish: a
// context that ended while waiting for a hashing slot means the server is
// overloaded with logins, anything else is a store failure.
func (x *Session) busyOrUnavailable(req *protocol.Request, err error) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		x.s.log.Warn("password check timed out", "type", req.Type, "addr", x.addr)
		x.fail(req, protocol.Errorf(protocol.ErrUnavailable, "the server is busy checking passwords; try again"))
		return
	}
	x.unavailable(req, err)
}
