package meta

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// Sessions (contract section 8; docs/protocol.md "Sessions" is the
// reference for the decisions below).
//
//   - A session is 32 random bytes (256 bits) sent as 43 characters of
//     unpadded base64url. The store keeps only its SHA-256 (hex), bound to
//     its user: the secret is never written, logged or compared in clear.
//   - whoami with session costs one store read by hash and no password
//     hashing. It goes through the same login guard as a password (admit,
//     then failed or succeeded): a forged, truncated, expired, revoked or
//     foreign session is a failed login for the limits, and answers
//     auth-failed with exactly the reason of a wrong password. The answer's
//     timing class is "one store lookup by the hash of what was sent" for
//     every session, good or bad, known user or not (the user is not even
//     read before the session is found); it is not the password path's
//     timing (an argon2 hash), and needs not be: a session is not guessable,
//     the lookup key is a hash the client cannot steer, and the user name
//     plays no part in the lookup, so the timing reveals nothing about the
//     user or the secret.
//   - The session is checked under the user's lock (userLocks), where passwd
//     and the admin CLI revoke: a revoked session can never install a
//     device after its revocation closed the user's connections.
//   - Last use is written at most once per touchEvery per session, without
//     fsync and off the login path (the background writer): a login storm of
//     10,000 sessions costs reads and a few unsynced writes, not 10,000
//     fsyncs. A crash may lose a touch, which only brings the expiry forward
//     by at most touchEvery. A connection's end counts as a use too, so a
//     device that stays connected for a month does not lose its session.
//   - A user keeps at most maxSessionsPerUser sessions: issuing one more
//     drops the least recently used (and any expired ones), so clients that
//     log in with the password every time cannot grow the store without
//     bound.

// touchEvery is how stale a session's stored last use may get.
const touchEvery = time.Hour

// maxSessionsPerUser bounds the sessions one user keeps in the store.
const maxSessionsPerUser = 32

// errAuthFailed is the one answer to every failed identification: unknown
// user, wrong password, and bad, expired or revoked session alike.
func errAuthFailed() *protocol.Error {
	return protocol.Errorf(protocol.ErrAuthFailed, "unknown user or wrong password")
}

// newSessionSecret returns a fresh session secret and its storage hash.
func newSessionSecret() (secret, hash string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("meta: crypto/rand failed: %v", err)) // never on Linux ≥ 3.17
	}
	secret = base64.RawURLEncoding.EncodeToString(b[:])
	return secret, sessionHash(secret)
}

// sessionHash is what the store keys a session by.
func sessionHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// compactHash is a session hash (sessionHash: 64 hex digits) as the Session
// keeps it for as long as the connection lives: its 32 bytes. "" stays "".
func compactHash(hash string) string {
	b, err := hex.DecodeString(hash)
	if err != nil || len(b) != sha256.Size {
		return hash // never from sessionHash; "" among them
	}
	return string(b)
}

// expandHash undoes compactHash for every hash sessionHash makes.
func expandHash(c string) string {
	if len(c) != sha256.Size {
		return c
	}
	return hex.EncodeToString([]byte(c))
}

// sessionLogin is a whoami by session waiting for install to check it.
type sessionLogin struct {
	hash string
	try  *attempt
}

// whoamiSession identifies x with a session instead of a password.
func (x *Session) whoamiSession(req *protocol.Request) {
	s := x.s
	try, perr := s.auth.logins.admit(req.User, addrKey(x.addr))
	if perr != nil {
		x.fail(req, perr)
		return
	}
	ctx, cancel := x.ctx()
	defer cancel()
	if err := try.wait(ctx); err != nil {
		x.busyOrUnavailable(req, err)
		return
	}
	x.installWith(ctx, req, "", &sessionLogin{hash: sessionHash(req.Session), try: try})
}

// checkSession checks a session login; the caller holds the user's
// lock. It settles the login attempt and, when it returns false, has
// answered req.
func (x *Session) checkSession(ctx context.Context, req *protocol.Request, sl *sessionLogin) (store.Session, bool) {
	s := x.s
	ss, err := s.cfg.Store.GetSession(ctx, sl.hash)
	now := s.cfg.Clock.Now()
	switch {
	case err == nil && ss.User == req.User && now.Sub(ss.LastUsed) < s.cfg.SessionTTL:
		sl.try.succeeded()
		return ss, true
	case err == nil || errors.Is(err, store.ErrNotFound):
		if err == nil && now.Sub(ss.LastUsed) >= s.cfg.SessionTTL {
			s.bg.deleteSession(sl.hash) // expired: nobody can use it again
		}
		sl.try.failed()
		s.m.logins.WithLabelValues("failed").Inc()
		x.fail(req, errAuthFailed())
		return store.Session{}, false
	default:
		sl.try.abort()
		x.unavailable(req, err)
		return store.Session{}, false
	}
}

// issueSession stores a new session for user and returns its secret and
// hash. The caller holds the user's lock. Expired sessions of the user, and
// the least recently used ones over maxSessionsPerUser, are dropped.
func (s *Server) issueSession(ctx context.Context, user string) (secret, hash string, err error) {
	now := s.cfg.Clock.Now()
	list, err := s.cfg.Store.Sessions(ctx, user)
	if err != nil {
		return "", "", fmt.Errorf("list sessions: %w", err)
	}
	slices.SortFunc(list, func(a, b store.Session) int { return b.LastUsed.Compare(a.LastUsed) }) // newest first
	for i, o := range list {
		if i >= maxSessionsPerUser-1 || now.Sub(o.LastUsed) >= s.cfg.SessionTTL {
			s.bg.deleteSession(o.Hash)
		}
	}
	secret, hash = newSessionSecret()
	if err := s.cfg.Store.CreateSession(ctx, store.Session{Hash: hash, User: user, Created: now, LastUsed: now}); err != nil {
		return "", "", fmt.Errorf("create session: %w", err)
	}
	return secret, hash, nil
}

// kick ends a connection at once: nothing it has sent or sends is handled
// any more, and it is closed once what is queued for it is written. Safe
// under s.mu.
func (x *Session) kick(code int, reason string) {
	x.imu.Lock()
	x.inDone = true
	x.inbox = nil
	x.inBytes = 0
	x.imu.Unlock()
	x.closeAfterFlush(code, reason)
}

// handlePasswd changes the user's password: the current one is checked
// like a whoami's (same login limits, same auth-failed), then every session
// of the user is revoked, the user's other connections are closed (1008
// "password changed"), and this connection gets a fresh session in the
// response so that it stays usable and can reconnect.
func (x *Session) handlePasswd(req *protocol.Request) {
	s := x.s
	ctx, cancel := x.ctx()
	defer cancel()
	if _, ok := x.checkPassword(ctx, req, x.user, req.Password); !ok {
		return
	}
	hash, err := s.cfg.Hasher.HashFor(ctx, addrKey(x.addr), req.New)
	if err != nil {
		x.busyOrUnavailable(req, fmt.Errorf("hash password: %w", err))
		return
	}
	if _, _, err := s.changePassword(ctx, x.user, hash, x, req); err != nil {
		x.unavailable(req, err)
	}
}

// SetPassword is the admin path (`umplug user passwd` while the server
// runs): it sets user's password hash, revokes every session of the user
// and closes all of the user's connections. It returns how many sessions
// were revoked and connections closed; store.ErrNotFound if the user does
// not exist.
func (s *Server) SetPassword(ctx context.Context, user, hash string) (revoked, closed int, err error) {
	if _, err := s.cfg.Store.Get(ctx, user); err != nil {
		return 0, 0, err
	}
	return s.changePassword(ctx, user, hash, nil, nil)
}

// changePassword revokes user's sessions, stores the new hash, and closes
// the user's connections but keep (which, with req, is answered ok with a
// fresh session). Sessions are revoked first: a crash in between leaves the
// old password with no session, never a new password with old sessions.
// Everything happens under the user's lock, where session logins are
// checked, so no login with a revoked session can slip in between.
func (s *Server) changePassword(ctx context.Context, user, hash string, keep *Session, req *protocol.Request) (revoked, closed int, err error) {
	defer s.userLocks.Lock(user)()
	if revoked, err = s.cfg.Store.DeleteSessions(ctx, user); err != nil {
		return 0, 0, fmt.Errorf("revoke sessions: %w", err)
	}
	if err := s.cfg.Store.SetPassword(ctx, user, hash); err != nil {
		return revoked, 0, fmt.Errorf("set password: %w", err)
	}
	var secret, sessHash string
	if keep != nil {
		if secret, sessHash, err = s.issueSession(ctx, user); err != nil {
			// The password is changed and every session revoked; this
			// connection just has none now.
			s.log.Error("password changed but no new session", "user", user, "err", err)
			secret, sessHash = "", ""
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if us := s.users[user]; us != nil {
		var away []*Session
		for _, d := range us.devices {
			if d.inGrace {
				away = append(away, d)
				continue
			}
			if d != keep {
				d.kick(protocol.ClosePolicy, protocol.CloseReasonPasswordChanged)
				closed++
			}
		}
		// Devices waiting for a resume (section 8) are gone now: their
		// sessions are revoked, and a password change ends them like the
		// open ones.
		for _, d := range away {
			s.leaveGraceLocked(d)
			s.removeDeviceLocked(d)
		}
	}
	s.log.Info("password changed", "user", user, "sessions_revoked", revoked, "connections_closed", closed)
	if keep != nil {
		keep.sessHash, keep.sessUsed = compactHash(sessHash), s.cfg.Clock.Now().UnixNano()
		keep.reply(req, protocol.Response{OK: true, Session: secret})
	}
	return revoked, closed, nil
}

// handleLogout revokes this connection's session. The connection stays
// identified until it closes (it was identified before; logging out is
// about the next connection), and logout without a session is ok too.
func (x *Session) handleLogout(req *protocol.Request) {
	s := x.s
	s.mu.Lock()
	h := x.sessHash
	s.mu.Unlock()
	if h != "" {
		ctx, cancel := x.ctx()
		defer cancel()
		if err := s.cfg.Store.DeleteSession(ctx, expandHash(h)); err != nil {
			x.unavailable(req, err)
			return
		}
	}
	s.mu.Lock()
	if x.sessHash == h {
		x.sessHash = ""
	}
	s.mu.Unlock()
	x.ok(req)
}

// touchOnClose records a connection's end as a use of its session, at most
// once per touchEvery. The caller holds s.mu.
func (x *Session) touchOnCloseLocked() {
	now := x.s.cfg.Clock.Now()
	if x.sessHash != "" && now.Sub(time.Unix(0, x.sessUsed)) >= touchEvery {
		x.s.bg.touchSession(expandHash(x.sessHash), now)
	}
}
