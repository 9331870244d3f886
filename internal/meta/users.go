package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// storeTimeout bounds one request's store and hashing work. Hashing is
// queued (a bounded number of argon2 runs at a time), so under a login flood a
// whoami may wait: 1,000 concurrent logins take about 30 s on 2 CPUs, and they
// should succeed rather than fail as unavailable.
const storeTimeout = 90 * time.Second

func (x *Session) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

func (x *Session) handleRegUser(req *protocol.Request) {
	s := x.s
	if s.cfg.RegistrationClosed {
		x.fail(req, protocol.Errorf(protocol.ErrForbidden, "registration is closed on this server"))
		return
	}
	addr := addrKey(x.addr)
	if !s.regLim.allow("a/"+addr, s.cfg.RegistrationsPerAddr) {
		x.fail(req, protocol.Errorf(protocol.ErrRateLimited, "too many registrations from this address; try later"))
		return
	}
	s.regLim.record("a/" + addr)
	ctx, cancel := x.ctx()
	defer cancel()
	peers := dedupe(req.Peers)
	if !x.peersExist(ctx, req, peers) {
		return
	}
	// Names are unique regardless of case: "Alice" is refused while
	// "alice" exists (see nameIndex).
	release, err := s.auth.names.claim(ctx, s.cfg.Store, req.User)
	switch {
	case errors.Is(err, errNameTaken):
		x.fail(req, protocol.Errorf(protocol.ErrExists, "user %s is taken (names are unique regardless of case)", req.User))
		return
	case err != nil:
		x.unavailable(req, err)
		return
	}
	created := false
	defer func() { release(created) }()
	hash, err := s.cfg.Hasher.HashFor(ctx, addr, req.Password)
	if err != nil {
		x.busyOrUnavailable(req, fmt.Errorf("hash password: %w", err))
		return
	}
	err = s.cfg.Store.Create(ctx, store.User{Name: req.User, Password: hash, Peers: peers})
	switch {
	case errors.Is(err, store.ErrExists):
		x.fail(req, protocol.Errorf(protocol.ErrExists, "user %s is taken", req.User))
	case err != nil:
		x.unavailable(req, err)
	default:
		created = true
		s.m.registrations.Inc()
		s.log.Info("user registered", "user", req.User, "addr", x.addr)
		x.ok(req)
	}
}

// peersExist reports whether every name is a registered user; if not, it
// has answered req with not-found listing the missing ones (or
// rate-limited, or unavailable). How many unknown names it may reveal is
// bounded per identified user and per address (lookupGuard): reg-user, sent
// before login, draws on the address's budget only.
func (x *Session) peersExist(ctx context.Context, req *protocol.Request, names []string) bool {
	if len(names) == 0 {
		return true
	}
	lk := x.s.auth.lookups
	who, addr := x.user, addrKey(x.addr)
	if req.Type == protocol.TypeRegUser {
		who = ""
	}
	if !lk.open(who, addr) {
		x.fail(req, errLookupLimited())
		return false
	}
	var missing []string
	for _, n := range names {
		_, err := x.s.cfg.Store.Get(ctx, n)
		if errors.Is(err, store.ErrNotFound) {
			missing = append(missing, n)
		} else if err != nil {
			x.unavailable(req, err)
			return false
		}
	}
	if len(missing) == 0 {
		return true
	}
	if !lk.reveal(who, addr, len(missing)) {
		x.fail(req, errLookupLimited())
		return false
	}
	// The names go in missing only: a reason that repeated them doubled
	// the answer to a long list (up to 1000 names).
	e := protocol.Errorf(protocol.ErrNotFound, "%d %s not registered", len(missing), plural(len(missing), "name is", "names are"))
	e.Missing = missing
	x.fail(req, e)
	return false
}

func errLookupLimited() *protocol.Error {
	return protocol.Errorf(protocol.ErrRateLimited, "too many unknown names looked up; try again later")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func dedupe(names []string) []string {
	out := make([]string, 0, len(names))
	seen := make(map[string]struct{}, len(names))
	for _, n := range names {
		if _, ok := seen[n]; !ok {
			seen[n] = struct{}{}
			out = append(out, n)
		}
	}
	return out
}

func (x *Session) handleWhoami(req *protocol.Request) {
	if x.user != "" {
		x.fail(req, protocol.Errorf(protocol.ErrBadRequest, "this connection is already identified"))
		return
	}
	if req.HasSession() {
		x.whoamiSession(req) // sessions.go: no password hashing
		return
	}
	ctx, cancel := x.ctx()
	defer cancel()
	u, ok := x.checkPassword(ctx, req, req.User, req.Password)
	if !ok {
		return
	}
	x.installWith(ctx, req, u.Password, nil)
}

// checkPassword checks password for user the way every password login
// does (whoami, passwd): the attempt is counted before the password is
// hashed (see loginGuard), so parallel guesses are limited like sequential
// ones; an unknown user costs the same work in the same queue as a wrong
// password, so timing does not tell them apart. On failure it has answered
// req and returns false.
func (x *Session) checkPassword(ctx context.Context, req *protocol.Request, user, password string) (store.User, bool) {
	s := x.s
	addr := addrKey(x.addr)
	try, perr := s.auth.logins.admit(user, addr)
	if perr != nil {
		x.fail(req, perr)
		return store.User{}, false
	}
	if err := try.wait(ctx); err != nil {
		x.busyOrUnavailable(req, err)
		return store.User{}, false
	}
	u, err := s.cfg.Store.Get(ctx, user)
	var good bool
	switch {
	case errors.Is(err, store.ErrNotFound):
		err = s.cfg.Hasher.VerifyUnknownFor(ctx, addr, password)
	case err == nil:
		good, err = s.cfg.Hasher.VerifyFor(ctx, addr, u.Password, password)
		if err != nil {
			err = fmt.Errorf("verify password: %w", err)
		}
	}
	if err != nil {
		try.abort()
		x.busyOrUnavailable(req, err)
		return store.User{}, false
	}
	if !good {
		try.failed()
		s.m.logins.WithLabelValues("failed").Inc()
		x.fail(req, errAuthFailed())
		return store.User{}, false
	}
	try.succeeded()
	return u, true
}

// installWith makes x a device of req.User after its credential was
// checked: the password whose stored hash was pwHash, or (sl != nil) a
// session, checked here under the user's lock where passwd revokes. The
// peer list is read again here, under the user's lock: the read before the
// hash may be older than a change made while this whoami waited for a
// hashing slot (invariant 3 of Server). A password login gets a new session
// (issued before s.mu is taken, dropped again if the login fails after); a
// session login answers with the session it used.
func (x *Session) installWith(ctx context.Context, req *protocol.Request, pwHash string, sl *sessionLogin) {
	s := x.s
	defer s.userLocks.Lock(req.User)()
	if s.hooks.beforeInstall != nil {
		s.hooks.beforeInstall(req.User)
	}
	var secret, sessHash string
	sessUsed := s.cfg.Clock.Now()
	if sl != nil {
		ss, ok := x.checkSession(ctx, req, sl)
		if !ok {
			return
		}
		secret, sessHash = req.Session, sl.hash
		if sessUsed.Sub(ss.LastUsed) >= touchEvery {
			s.bg.touchSession(sessHash, sessUsed)
		} else {
			sessUsed = ss.LastUsed
		}
	}
	u, err := s.cfg.Store.Get(ctx, req.User)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Deleted while its password was being checked.
		x.fail(req, errAuthFailed())
		return
	case err != nil:
		x.unavailable(req, err)
		return
	case sl == nil && u.Password != pwHash:
		// The password changed while this one was being checked.
		x.fail(req, errAuthFailed())
		return
	}
	if sl == nil {
		if secret, sessHash, err = s.issueSession(ctx, req.User); err != nil {
			x.unavailable(req, err)
			return
		}
	}
	installed := false
	defer func() { // runs after s.mu is unlocked
		if !installed && sl == nil {
			s.bg.deleteSession(sessHash)
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		x.fail(req, protocol.Errorf(protocol.ErrUnavailable, "the server is shutting down"))
		return
	}
	if x.gone {
		return // the connection ended while the password was checked
	}
	us := s.users[req.User]
	var old *Session // the device this whoami resumes (contract section 8)
	if req.Resume != "" {
		old = s.resumableLocked(req.User, req.Resume)
	}
	if old == nil && us != nil && len(us.devices) >= s.cfg.MaxDevices {
		x.fail(req, protocol.Errorf(protocol.ErrTooManyDevices, "at most %d devices per user", s.cfg.MaxDevices))
		return
	}
	installed = true
	x.user = req.User
	if us != nil {
		x.user = us.name // one copy of the name for all the user's devices
	}
	x.sessHash, x.sessUsed = compactHash(sessHash), sessUsed.UnixNano()
	if x.identTimer != nil {
		x.identTimer.Stop()
		x.identTimer = nil
	}
	if old != nil {
		// Same device, same presence: no status goes out.
		replay := s.takeOverLocked(x, old, us)
		s.m.logins.WithLabelValues("ok").Inc()
		x.reply(req, protocol.Response{OK: true, Device: x.device, Session: secret})
		s.afterResumeLocked(x, us, replay)
		return
	}
	x.device = s.newDeviceID()
	s.devs[x.device] = x
	first := us == nil
	if first {
		us = &userState{name: req.User, status: protocol.StatusOnline, peers: setOf(u.Peers)}
		s.users[req.User] = us
		s.m.users.Inc()
	}
	us.devices = append(us.devices, x)
	s.m.devices.Inc()
	s.m.logins.WithLabelValues("ok").Inc()
	x.reply(req, protocol.Response{OK: true, Device: x.device, Session: secret})
	if first {
		s.fanoutStatusLocked(us, protocol.StatusOnline)
	}
}

// meLocked returns the user state of x's user, or nil (after answering req)
// if x is no longer a device: it closed while its message waited.
func (x *Session) meLocked(req *protocol.Request) *userState {
	if x.gone {
		x.fail(req, protocol.Errorf(protocol.ErrUnavailable, "the connection is closing"))
		return nil
	}
	return x.s.users[x.user]
}

func setOf(names []string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}

// removeDeviceLocked forgets an identified device that disconnected: its
// calls end, and if it was the user's last device the user goes offline.
func (s *Server) removeDeviceLocked(x *Session) {
	us := s.users[x.user]
	if us == nil {
		return
	}
	i := slices.Index(us.devices, x)
	if i < 0 {
		return
	}
	us.devices = slices.Delete(us.devices, i, i+1)
	if s.devs[x.device] == x {
		delete(s.devs, x.device)
	}
	s.m.devices.Dec()
	if c := us.call; c != nil {
		s.deviceGoneLocked(c, us, x)
	}
	if len(us.devices) == 0 {
		delete(s.users, us.name)
		s.m.users.Dec()
		s.fanoutStatusLocked(us, protocol.StatusOffline)
	}
}

// mutualOnlineLocked returns the online users that are mutual peers of us.
func (s *Server) mutualOnlineLocked(us *userState) []*userState {
	var out []*userState
	for p := range us.peers {
		if o := s.users[p]; o != nil && o.lists(us.name) {
			out = append(out, o)
		}
	}
	return out
}

// fanoutStatusLocked tells every online mutual peer of us its new status.
func (s *Server) fanoutStatusLocked(us *userState, status string) {
	peers := s.mutualOnlineLocked(us)
	if len(peers) == 0 {
		return
	}
	b := encodeEvent(protocol.Event{Type: protocol.TypeStatus, User: us.name, Status: status})
	for _, p := range peers {
		for _, d := range p.devices {
			d.send(b)
		}
		s.m.presence.Add(float64(len(p.devices)))
	}
}

// sendStatusLocked tells the devices of to the status of about.
func (s *Server) sendStatusLocked(to *userState, about string, status string) {
	b := encodeEvent(protocol.Event{Type: protocol.TypeStatus, User: about, Status: status})
	for _, d := range to.devices {
		d.send(b)
	}
	s.m.presence.Add(float64(len(to.devices)))
}

// encodeEvent encodes a server event; see protocol.Event.AppendJSON.
func encodeEvent(e protocol.Event) []byte { return e.AppendJSON(make([]byte, 0, 96)) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("meta: encode %T: %v", v, err)) // only fixed server types are encoded
	}
	return b
}

func (x *Session) handleAddPeers(req *protocol.Request) {
	s := x.s
	ctx, cancel := x.ctx()
	defer cancel()
	add := dedupe(req.Peers)
	if !x.peersExist(ctx, req, add) {
		return
	}
	// The user's lock orders this store write and its cache update against
	// the user's other devices (invariant 3 of Server).
	defer s.userLocks.Lock(x.user)()
	var tooMany bool
	u, err := s.cfg.Store.UpdatePeers(ctx, x.user, func(cur []string) ([]string, error) {
		out := slices.Clone(cur)
		for _, p := range add {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
		if len(out) > protocol.MaxPeers {
			tooMany = true
			return nil, errTooManyPeers
		}
		return out, nil
	})
	if tooMany {
		x.fail(req, protocol.Errorf(protocol.ErrBadRequest, "peers: a user may list at most %d peers", protocol.MaxPeers))
		return
	}
	if err != nil {
		x.unavailable(req, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	x.ok(req)
	s.setPeersLocked(x.user, u.Peers)
}

var errTooManyPeers = errors.New("too many peers")

func (x *Session) handleDelPeers(req *protocol.Request) {
	s := x.s
	ctx, cancel := x.ctx()
	defer cancel()
	del := setOf(req.Peers)
	defer s.userLocks.Lock(x.user)() // see handleAddPeers
	u, err := s.cfg.Store.UpdatePeers(ctx, x.user, func(cur []string) ([]string, error) {
		out := make([]string, 0, len(cur))
		for _, p := range cur {
			if _, gone := del[p]; !gone {
				out = append(out, p)
			}
		}
		return out, nil
	})
	if err != nil {
		x.unavailable(req, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	x.ok(req)
	s.setPeersLocked(x.user, u.Peers)
}

// setPeersLocked replaces an online user's cached peer list and settles
// presence with every online user whose mutuality changed: users that became
// mutual peers exchange their current status, users that stopped being mutual
// peers see each other go offline.
func (s *Server) setPeersLocked(name string, peers []string) {
	us := s.users[name]
	if us == nil {
		return
	}
	before := s.mutualOnlineLocked(us)
	us.peers = setOf(peers)
	after := s.mutualOnlineLocked(us)
	for _, o := range after {
		if !slices.Contains(before, o) {
			s.sendStatusLocked(o, us.name, us.status)
			s.sendStatusLocked(us, o.name, o.status)
		}
	}
	for _, o := range before {
		if !slices.Contains(after, o) {
			s.sendStatusLocked(o, us.name, protocol.StatusOffline)
			s.sendStatusLocked(us, o.name, protocol.StatusOffline)
		}
	}
}

func (x *Session) handlePeers(req *protocol.Request) {
	s := x.s
	ctx, cancel := x.ctx()
	defer cancel()
	// Mutuality needs each peer's own list: from memory when they are
	// online, from the store otherwise. The store reads happen without the
	// lock; the answer is then decided and queued under the lock, so it is
	// never older than a status event queued before it (invariant 2 of
	// Server). A peer that came online meanwhile is judged from memory; one
	// that went offline meanwhile is read and the decision taken again.
	stored := map[string]bool{}
	s.mu.Lock()
	for {
		us := x.meLocked(req)
		if us == nil {
			s.mu.Unlock()
			return
		}
		var unread []string
		for p := range us.peers {
			if _, ok := stored[p]; !ok && s.users[p] == nil {
				unread = append(unread, p)
			}
		}
		if len(unread) == 0 {
			x.replyPeersLocked(req, us, stored)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		for _, p := range unread {
			pu, err := s.cfg.Store.Get(ctx, p)
			switch {
			case errors.Is(err, store.ErrNotFound):
				stored[p] = false
			case err != nil:
				x.unavailable(req, err)
				return
			default:
				stored[p] = slices.Contains(pu.Peers, x.user)
			}
		}
		s.mu.Lock()
	}
}

// replyPeersLocked answers peers from the dynamic state, with stored telling
// the mutuality of the offline peers.
func (x *Session) replyPeersLocked(req *protocol.Request, us *userState, stored map[string]bool) {
	s := x.s
	infos := make([]protocol.PeerInfo, 0, len(us.peers))
	for p := range us.peers {
		info := protocol.PeerInfo{User: p}
		if o := s.users[p]; o != nil {
			if o.lists(x.user) {
				info.Mutual, info.Online = true, true
				st := o.status
				info.Status = &st
			}
		} else {
			info.Mutual = stored[p]
		}
		infos = append(infos, info)
	}
	slices.SortFunc(infos, func(a, b protocol.PeerInfo) int { return strings.Compare(a.User, b.User) })
	x.reply(req, protocol.Response{OK: true, Peers: mustJSON(infos)})
}

func (x *Session) handlePeersOnline(req *protocol.Request) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	us := x.meLocked(req)
	if us == nil {
		return
	}
	names := []string{}
	for _, o := range s.mutualOnlineLocked(us) {
		names = append(names, o.name)
	}
	slices.Sort(names)
	x.reply(req, protocol.Response{OK: true, Peers: mustJSON(names)})
}

func (x *Session) handleStatus(req *protocol.Request) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	us := x.meLocked(req)
	if us == nil {
		return
	}
	us.status = req.Status
	x.ok(req)
	s.fanoutStatusLocked(us, req.Status)
}
