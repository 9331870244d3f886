package meta

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/protocol"
)

// loginSession logs a new connection in with a session and returns the
// response.
func (ts *testServer) loginSession(t *testing.T, user, session string) (*dev, protocol.ServerMessage) {
	t.Helper()
	d := ts.open(t)
	return d, d.do(`{"type":"whoami","user":%q,"session":%q}`, user, session)
}

// passwordLogin logs in with the password and returns the device and its
// session.
func (ts *testServer) passwordLogin(t *testing.T, user string) (*dev, string) {
	t.Helper()
	d := ts.open(t)
	m := d.do(`{"type":"whoami","user":%q,"password":%q}`, user, testPassword)
	if !m.OK || len(m.Session) != 43 {
		t.Fatalf("whoami: ok=%v %s, session %q (want 43 chars)", m.OK, m.Error, m.Session)
	}
	return d, m.Session
}

func (ts *testServer) flush(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.bg.flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// wrongPasswordAnswer is what a wrong password gets: every bad session must
// get exactly the same.
func wrongPasswordAnswer(t *testing.T, ts *testServer, user string) protocol.ServerMessage {
	t.Helper()
	m := ts.open(t).do(`{"type":"whoami","user":%q,"password":"not-the-password"}`, user)
	if m.OK || m.Error != protocol.ErrAuthFailed {
		t.Fatalf("wrong password: %+v", m)
	}
	return m
}

func wantSameAsWrongPassword(t *testing.T, what string, got, want protocol.ServerMessage) {
	t.Helper()
	if got.OK || got.Error != want.Error || got.Reason != want.Reason || got.Session != "" || got.Device != "" {
		t.Fatalf("%s: ok=%v error=%q reason=%q; want exactly the wrong password's %q %q",
			what, got.OK, got.Error, got.Reason, want.Error, want.Reason)
	}
}

// TestSessionLifecycle: issued by a password whoami, usable without the
// password (and answered with itself), kept alive by use, expired 30 days
// after its last use (fake clock).
func TestSessionLifecycle(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}, "bob": {}})
	_, sess := ts.passwordLogin(t, "alice")
	d, m := ts.loginSession(t, "alice", sess)
	if !m.OK || m.Session != sess || m.Device == "" {
		t.Fatalf("whoami by session: %+v", m)
	}
	if got := d.x.User(); got != "alice" {
		t.Fatalf("identified as %q", got)
	}
	// A device of alice: it may act as alice.
	if m := d.do(`{"type":"peers","user":"alice"}`); !m.OK {
		t.Fatalf("peers after session login: %s", m.Error)
	}

	// Used 29 days later: still good, and the use pushes the expiry.
	ts.clk.Advance(29 * 24 * time.Hour)
	if _, m := ts.loginSession(t, "alice", sess); !m.OK {
		t.Fatalf("after 29 days: %s %s", m.Error, m.Reason)
	}
	ts.flush(t) // the touch is written off the login path
	ts.clk.Advance(29 * 24 * time.Hour)
	if _, m := ts.loginSession(t, "alice", sess); !m.OK {
		t.Fatalf("29 days after the last use: %s %s", m.Error, m.Reason)
	}
	ts.flush(t)
	ts.clk.Advance(ts.cfg.SessionTTL)
	want := wrongPasswordAnswer(t, ts, "alice")
	_, m = ts.loginSession(t, "alice", sess)
	wantSameAsWrongPassword(t, "expired session", m, want)
	ts.flush(t)
	if _, err := ts.st.GetSession(context.Background(), sessionHash(sess)); err == nil {
		t.Fatal("an expired session is still stored after it was presented")
	}
}

// TestSessionConfigurableTTL: Config.SessionTTL is honoured.
func TestSessionConfigurableTTL(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}}, func(c *Config) { c.SessionTTL = time.Hour })
	_, sess := ts.passwordLogin(t, "alice")
	ts.clk.Advance(59 * time.Minute)
	if _, m := ts.loginSession(t, "alice", sess); !m.OK {
		t.Fatalf("within the TTL: %s", m.Error)
	}
	ts.clk.Advance(time.Hour)
	if _, m := ts.loginSession(t, "alice", sess); m.OK || m.Error != protocol.ErrAuthFailed {
		t.Fatalf("after the TTL: %+v", m)
	}
}

// TestBadSessionsAnswerLikeAWrongPassword: forged, truncated, revoked,
// another user's, and a session sent as a password (and a password sent as a
// session) all get the wrong password's answer; each counts as a failed
// login for the limits.
func TestBadSessionsAnswerLikeAWrongPassword(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}, "bob": {}})
	_, sess := ts.passwordLogin(t, "alice")
	_, bobSess := ts.passwordLogin(t, "bob")
	want := wrongPasswordAnswer(t, ts, "alice")
	forged, _ := newSessionSecret()
	cases := []struct{ name, msg string }{
		{"forged", `{"type":"whoami","user":"alice","session":"` + forged + `"}`},
		{"truncated", `{"type":"whoami","user":"alice","session":"` + sess[:20] + `"}`},
		{"one character more", `{"type":"whoami","user":"alice","session":"` + sess + `A"}`},
		{"empty", `{"type":"whoami","user":"alice","session":""}`},
		{"another user's", `{"type":"whoami","user":"alice","session":"` + bobSess + `"}`},
		{"for an unknown user", `{"type":"whoami","user":"nobody","session":"` + sess + `"}`},
		{"session as password", `{"type":"whoami","user":"alice","password":"` + sess + `"}`},
		{"password as session", `{"type":"whoami","user":"alice","session":"` + testPassword + `"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := ts.open(t).do("%s", tc.msg)
			wantSameAsWrongPassword(t, tc.name, m, want)
		})
	}
	// Every one of them counted as a failed login for alice.
	ts.auth.logins.mu.Lock()
	fails := ts.auth.logins.pairs["alice\x00127.0.0.1"].fails
	ts.auth.logins.mu.Unlock()
	if fails < 7 {
		t.Fatalf("alice's failed logins from 127.0.0.1: %d; want every bad session counted", fails)
	}
	// The real session still works (nothing above harmed it).
	if _, m := ts.loginSession(t, "alice", sess); !m.OK {
		t.Fatalf("the real session: %s", m.Error)
	}
}

// TestSessionBadRequests: whoami needs exactly one of password and session.
func TestSessionBadRequests(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}})
	d := ts.open(t)
	if m := d.do(`{"type":"whoami","user":"alice"}`); m.Error != protocol.ErrBadRequest || !strings.Contains(m.Reason, "password") {
		t.Fatalf("neither: %+v", m)
	}
	if m := d.do(`{"type":"whoami","user":"alice","password":"x","session":"y"}`); m.Error != protocol.ErrBadRequest || !strings.Contains(m.Reason, "session") {
		t.Fatalf("both: %+v", m)
	}
}

// TestPasswdRevokesSessions: passwd checks the current password, revokes
// every session of the user, closes the user's other connections, and gives
// this connection a fresh session; the new password works, the old one not.
func TestPasswdRevokesSessions(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}, "bob": {}})
	a1, s1 := ts.passwordLogin(t, "alice")
	a2, s2 := ts.passwordLogin(t, "alice")
	b, bobSess := ts.passwordLogin(t, "bob")
	want := wrongPasswordAnswer(t, ts, "alice")

	m := a1.do(`{"type":"passwd","user":"alice","password":"wrong-password","new":"a-new-password"}`)
	wantSameAsWrongPassword(t, "passwd with a wrong password", m, want)
	if m := a1.do(`{"type":"passwd","user":"alice","password":%q,"new":"short"}`, testPassword); m.Error != protocol.ErrBadRequest || !strings.Contains(m.Reason, "new") {
		t.Fatalf("short new password: %+v", m)
	}

	m = a1.do(`{"type":"passwd","user":"alice","password":%q,"new":"a-new-password"}`, testPassword)
	if !m.OK || len(m.Session) != 43 || m.Session == s1 || m.Session == s2 {
		t.Fatalf("passwd: %+v", m)
	}
	fresh := m.Session
	select {
	case <-a2.p.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("alice's other connection was not closed")
	}
	select {
	case <-a1.p.closed:
		t.Fatal("the connection that changed the password was closed")
	case <-b.p.closed:
		t.Fatal("bob's connection was closed")
	default:
	}
	if m := a1.do(`{"type":"peers","user":"alice"}`); !m.OK {
		t.Fatalf("a1 after passwd: %s", m.Error)
	}
	for _, old := range []string{s1, s2} {
		_, m := ts.loginSession(t, "alice", old)
		wantSameAsWrongPassword(t, "revoked session", m, want)
	}
	if _, m := ts.loginSession(t, "alice", fresh); !m.OK {
		t.Fatalf("the fresh session: %s", m.Error)
	}
	if _, m := ts.loginSession(t, "bob", bobSess); !m.OK {
		t.Fatalf("bob's session: %s", m.Error)
	}
	m = ts.open(t).do(`{"type":"whoami","user":"alice","password":%q}`, testPassword)
	wantSameAsWrongPassword(t, "old password", m, want)
	if m := ts.open(t).do(`{"type":"whoami","user":"alice","password":"a-new-password"}`); !m.OK {
		t.Fatalf("new password: %s", m.Error)
	}
}

// TestAdminSetPasswordRevokes: the admin path revokes and closes every
// connection of the user.
func TestAdminSetPasswordRevokes(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}})
	a1, sess := ts.passwordLogin(t, "alice")
	hash, err := ts.cfg.Hasher.Hash(context.Background(), "set-by-admin")
	if err != nil {
		t.Fatal(err)
	}
	revoked, closed, err := ts.SetPassword(context.Background(), "alice", hash)
	if err != nil || revoked != 1 || closed != 1 {
		t.Fatalf("SetPassword = %d, %d, %v; want 1 revoked, 1 closed", revoked, closed, err)
	}
	select {
	case <-a1.p.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("alice's connection was not closed")
	}
	if _, m := ts.loginSession(t, "alice", sess); m.OK {
		t.Fatal("revoked session accepted")
	}
	if _, _, err := ts.SetPassword(context.Background(), "nobody", hash); err == nil {
		t.Fatal("SetPassword of an unknown user succeeded")
	}
}

// TestLogoutRevokesOwnSession: logout revokes this connection's session
// only; the connection stays identified.
func TestLogoutRevokesOwnSession(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}})
	a1, s1 := ts.passwordLogin(t, "alice")
	_, s2 := ts.passwordLogin(t, "alice")
	if m := a1.do(`{"type":"logout","user":"alice"}`); !m.OK {
		t.Fatalf("logout: %s", m.Error)
	}
	if m := a1.do(`{"type":"logout","user":"alice"}`); !m.OK {
		t.Fatalf("second logout: %s", m.Error)
	}
	if m := a1.do(`{"type":"peers","user":"alice"}`); !m.OK {
		t.Fatalf("still identified after logout: %s", m.Error)
	}
	want := wrongPasswordAnswer(t, ts, "alice")
	_, m := ts.loginSession(t, "alice", s1)
	wantSameAsWrongPassword(t, "logged-out session", m, want)
	if _, m := ts.loginSession(t, "alice", s2); !m.OK {
		t.Fatalf("the other device's session: %s", m.Error)
	}
	if m := ts.open(t).do(`{"type":"logout","user":"alice"}`); m.Error != protocol.ErrUnauthenticated {
		t.Fatalf("logout before whoami: %+v", m)
	}
}

// TestSessionsPerUserBounded: logging in with the password again and again
// keeps at most maxSessionsPerUser sessions, dropping the least recently
// used.
func TestSessionsPerUserBounded(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {}})
	_, first := ts.passwordLogin(t, "alice")
	for range maxSessionsPerUser + 5 {
		ts.clk.Advance(time.Second)
		d, _ := ts.passwordLogin(t, "alice")
		d.x.Close()
	}
	ts.flush(t)
	list, err := ts.st.Sessions(context.Background(), "alice")
	if err != nil || len(list) > maxSessionsPerUser {
		t.Fatalf("%d sessions stored, %v; want at most %d", len(list), err, maxSessionsPerUser)
	}
	if _, m := ts.loginSession(t, "alice", first); m.OK {
		t.Fatal("the least recently used session survived")
	}
}

// answer sends bob's accept or reject of alice's call tx.
func answer(d *dev, typ, tx string) protocol.ServerMessage {
	d.t.Helper()
	d.x.Handle([]byte(`{"type":"` + typ + `","user":"bob","peer":"alice","tx":` + tx + `}`))
	return d.res(tx)
}

// missedEvent waits for a missed-call event on d.
func missedEvent(d *dev) protocol.ServerMessage {
	d.t.Helper()
	return d.next(func(m protocol.ServerMessage) bool { return m.Type == protocol.TypeMissedCall })
}

func missedList(t *testing.T, d *dev, user string, clear bool) []protocol.MissedCall {
	t.Helper()
	m := d.do(`{"type":"missed-calls","user":%q,"clear":%v}`, user, clear)
	if !m.OK {
		t.Fatalf("missed-calls: %s %s", m.Error, m.Reason)
	}
	var out []protocol.MissedCall
	if err := json.Unmarshal(m.Calls, &out); err != nil || out == nil {
		t.Fatalf("calls %s: %v", m.Calls, err)
	}
	return out
}

// TestMissedCallReasons: timeout, cancel, caller disconnect, callee's last
// device leaving while ringing, and a call to an offline mutual peer are
// missed calls; reject and answered elsewhere are not. The callee's online
// devices get a live missed-call event; the list is newest first.
func TestMissedCallReasons(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {"bob"}, "bob": {"alice"}})
	alice := ts.login(t, "alice")
	bob1, bob2 := ts.login(t, "bob"), ts.login(t, "bob")
	ring := func(caller *dev) string {
		t.Helper()
		tx := caller.send(`{"type":"call","user":"alice","peer":"bob"}`)
		if m := caller.res(tx); !m.OK {
			t.Fatalf("call: %s", m.Error)
		}
		bob1.next(func(m protocol.ServerMessage) bool { return m.Type == protocol.TypeCall })
		bob2.next(func(m protocol.ServerMessage) bool { return m.Type == protocol.TypeCall })
		return tx
	}
	wantEvent := func(reason string) {
		t.Helper()
		for _, d := range []*dev{bob1, bob2} {
			ev := missedEvent(d)
			if ev.User != "alice" || ev.Peer != "bob" || ev.Reason != reason || ev.At == "" {
				t.Fatalf("missed-call event %+v; want from alice, reason %s", ev, reason)
			}
			if _, err := time.Parse(time.RFC3339, ev.At); err != nil {
				t.Fatalf("at %q is not RFC 3339: %v", ev.At, err)
			}
		}
	}

	ring(alice) // timeout
	ts.clk.Advance(ts.cfg.RingingTimeout)
	wantEvent(protocol.ReasonTimeout)

	ring(alice) // cancel
	if m := alice.do(`{"type":"cancel","user":"alice","peer":"bob"}`); !m.OK {
		t.Fatal(m.Error)
	}
	wantEvent(protocol.ReasonCancelled)

	tx := ring(alice) // rejected: not missed
	if m := answer(bob1, "reject", tx); !m.OK {
		t.Fatal(m.Error)
	}
	tx = ring(alice) // answered (on bob1; bob2 sees answered-elsewhere): not missed
	if m := answer(bob1, "accept", tx); !m.OK {
		t.Fatal(m.Error)
	}
	if m := alice.do(`{"type":"unpair","user":"alice","peer":"bob"}`); !m.OK {
		t.Fatal(m.Error)
	}

	alice2 := ts.login(t, "alice") // the caller's device disconnects while ringing
	ring(alice2)
	alice2.x.Close()
	wantEvent(protocol.ReasonDisconnected)

	list := missedList(t, bob1, "bob", false)
	var got []string
	for _, c := range list {
		if c.User != "alice" {
			t.Fatalf("entry %+v", c)
		}
		got = append(got, c.Reason)
	}
	if strings.Join(got, ",") != "disconnected,cancelled,timeout" {
		t.Fatalf("missed calls (newest first) = %v", got)
	}

	// Offline: bob leaves, alice calls him.
	bob1.x.Close()
	bob2.x.Close()
	if m := alice.do(`{"type":"call","user":"alice","peer":"bob"}`); m.Error != protocol.ErrOffline {
		t.Fatalf("call to offline bob: %+v", m)
	}
	bob3 := ts.login(t, "bob")
	list = missedList(t, bob3, "bob", true)
	if len(list) != 4 || list[0].Reason != protocol.ReasonOffline {
		t.Fatalf("after the offline call: %+v", list)
	}
	if list := missedList(t, bob3, "bob", false); len(list) != 0 {
		t.Fatalf("after clear: %+v", list)
	}

	// The callee's last device leaving while it rings: offline.
	ring2 := alice.send(`{"type":"call","user":"alice","peer":"bob"}`)
	if m := alice.res(ring2); !m.OK {
		t.Fatal(m.Error)
	}
	bob3.x.Close()
	ts.flush(t)
	l, err := ts.st.MissedCalls(context.Background(), "bob", false)
	if err != nil || len(l) != 1 || l[0].Reason != protocol.ReasonOffline {
		t.Fatalf("callee left while ringing: %+v, %v", l, err)
	}
}

// TestMissedCallsCapped: at most 100 per user, the oldest dropped.
func TestMissedCallsCapped(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {"bob"}, "bob": {"alice"}})
	alice := ts.login(t, "alice")
	for range protocol.MaxMissedCalls + 10 {
		ts.clk.Advance(time.Second)
		if m := alice.do(`{"type":"call","user":"alice","peer":"bob"}`); m.Error != protocol.ErrOffline {
			t.Fatalf("call: %+v", m)
		}
	}
	bob := ts.login(t, "bob")
	list := missedList(t, bob, "bob", false)
	if len(list) != protocol.MaxMissedCalls {
		t.Fatalf("%d missed calls; want %d", len(list), protocol.MaxMissedCalls)
	}
	newest, _ := time.Parse(time.RFC3339, list[0].At)
	oldest, _ := time.Parse(time.RFC3339, list[len(list)-1].At)
	if !newest.Equal(ts.clk.Now()) || newest.Sub(oldest) != time.Duration(protocol.MaxMissedCalls-1)*time.Second {
		t.Fatalf("kept %v .. %v; want the newest 100 up to %v", oldest, newest, ts.clk.Now())
	}
}

// TestMissedCallOnShutdown: a call still ringing when the server shuts down
// is a missed call, written before Shutdown returns (the store is closed
// right after).
func TestMissedCallOnShutdown(t *testing.T) {
	ts := newTestServer(t, map[string][]string{"alice": {"bob"}, "bob": {"alice"}})
	alice, bob := ts.login(t, "alice"), ts.login(t, "bob")
	if m := alice.do(`{"type":"call","user":"alice","peer":"bob"}`); !m.OK {
		t.Fatal(m.Error)
	}
	bob.next(func(m protocol.ServerMessage) bool { return m.Type == protocol.TypeCall })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { // the pipe connections never close by themselves
		<-bob.p.closed
		bob.x.Close()
	}()
	go func() {
		<-alice.p.closed
		alice.x.Close()
	}()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := ts.st.MissedCalls(context.Background(), "bob", false)
	if err != nil || len(l) != 1 || l[0].Reason != protocol.ReasonShutdown {
		t.Fatalf("missed calls after shutdown: %+v, %v", l, err)
	}
}
