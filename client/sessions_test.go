package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// TestPasswdOverSockets: over real sockets, Passwd gives this connection a
// new session, closes the user's other connection with 1008 "password
// changed", and revokes the old sessions.
func TestPasswdOverSockets(t *testing.T) {
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func() *client.Client {
		c, err := client.Dial(ctx, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a1 := dial()
	if err := a1.Register(ctx, "alice", "sesameopen"); err != nil {
		t.Fatal(err)
	}
	if _, err := a1.Login(ctx, "alice", "sesameopen"); err != nil {
		t.Fatal(err)
	}
	a2 := dial()
	if _, err := a2.LoginSession(ctx, "alice", a1.Session()); err != nil {
		t.Fatalf("LoginSession: %v", err)
	}
	old := a1.Session()
	if err := a1.Passwd(ctx, "wrong-password", "brand-new-pw"); !errors.Is(err, &protocol.Error{Code: protocol.ErrAuthFailed}) {
		t.Fatalf("Passwd with a wrong password: %v", err)
	}
	if err := a1.Passwd(ctx, "sesameopen", "brand-new-pw"); err != nil {
		t.Fatalf("Passwd: %v", err)
	}
	if a1.Session() == "" || a1.Session() == old {
		t.Fatal("no new session after Passwd")
	}
	select {
	case <-a2.Done():
	case <-ctx.Done():
		t.Fatal("the other connection was not closed")
	}
	var ce *websocket.CloseError
	if !errors.As(a2.Err(), &ce) || ce.Code != protocol.ClosePolicy || ce.Text != protocol.CloseReasonPasswordChanged {
		t.Fatalf("other connection ended with %v; want 1008 %q", a2.Err(), protocol.CloseReasonPasswordChanged)
	}
	if _, err := dial().LoginSession(ctx, "alice", old); !errors.Is(err, &protocol.Error{Code: protocol.ErrAuthFailed}) {
		t.Fatalf("old session after Passwd: %v", err)
	}
	if _, err := dial().LoginSession(ctx, "alice", a1.Session()); err != nil {
		t.Fatalf("new session: %v", err)
	}
	if _, err := a1.Peers(ctx); err != nil {
		t.Fatalf("the changing connection is still usable: %v", err)
	}
}

// TestMissedCallEvent: a cancelled call reaches the callee as a live
// missed-call event and in MissedCalls.
func TestMissedCallEvent(t *testing.T) {
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	users := map[string]*client.Client{}
	for _, u := range []string{"alice", "bob"} {
		c, err := client.Dial(ctx, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Register(ctx, u, "sesameopen"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Login(ctx, u, "sesameopen"); err != nil {
			t.Fatal(err)
		}
		users[u] = c
	}
	alice, bob := users["alice"], users["bob"]
	if err := alice.AddPeers(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := bob.AddPeers(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Next(ctx, protocol.TypeCall); err != nil {
		t.Fatal(err)
	}
	if err := alice.Cancel(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	ev, err := bob.Next(ctx, protocol.TypeMissedCall)
	if err != nil {
		t.Fatal(err)
	}
	if ev.User != "alice" || ev.Peer != "bob" || ev.Reason != protocol.ReasonCancelled || ev.At == "" {
		t.Fatalf("missed-call event %+v", ev)
	}
	calls, err := bob.MissedCalls(ctx, false)
	if err != nil || len(calls) != 1 || calls[0].User != "alice" || calls[0].At != ev.At {
		t.Fatalf("MissedCalls = %+v, %v", calls, err)
	}
}

// TestBadSessionAnswersLikeWrongPassword: over real sockets, a forged and a
// truncated session get exactly the wrong password's error and reason.
func TestBadSessionAnswersLikeWrongPassword(t *testing.T) {
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func() *client.Client {
		c, err := client.Dial(ctx, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a := dial()
	if err := a.Register(ctx, "alice", "sesameopen"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Login(ctx, "alice", "sesameopen"); err != nil {
		t.Fatal(err)
	}
	_, wrong := dial().Login(ctx, "alice", "not-the-password")
	var want *protocol.Error
	if !errors.As(wrong, &want) || want.Code != protocol.ErrAuthFailed {
		t.Fatalf("wrong password: %v", wrong)
	}
	for name, sess := range map[string]string{
		"forged":    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"truncated": a.Session()[:21],
	} {
		_, err := dial().LoginSession(ctx, "alice", sess)
		var got *protocol.Error
		if !errors.As(err, &got) || got.Code != want.Code || got.Reason != want.Reason {
			t.Fatalf("%s session: %v; want exactly %v", name, err, want)
		}
	}
}
