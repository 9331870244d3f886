package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/internal/testlog"
	"github.com/user-media-plug/umplug/protocol"
)

const pw = "sesameopen"

// dial connects a client to s and closes it when the test ends.
func dial(t *testing.T, ctx context.Context, s *servertest.Server) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, s.URL, &client.Options{Logger: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// login registers user (if peers is not nil, with those peers) and logs a new
// connection in.
func login(t *testing.T, ctx context.Context, s *servertest.Server, user string) *client.Client {
	t.Helper()
	c := dial(t, ctx, s)
	if err := c.Register(ctx, user, pw); err != nil && !errors.Is(err, &protocol.Error{Code: protocol.ErrExists}) {
		t.Fatalf("register %s: %v", user, err)
	}
	dev, err := c.Login(ctx, user, pw)
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	if dev == "" || c.Device() != dev || c.User() != user {
		t.Fatalf("login %s: device %q, Device() %q, User() %q", user, dev, c.Device(), c.User())
	}
	return c
}

// befriend makes the logged-in clients mutual peers.
func befriend(t *testing.T, ctx context.Context, a, b *client.Client) {
	t.Helper()
	if err := a.AddPeers(ctx, b.User()); err != nil {
		t.Fatal(err)
	}
	if err := b.AddPeers(ctx, a.User()); err != nil {
		t.Fatal(err)
	}
}

// next returns c's next event of type typ, skipping others (presence).
func next(t *testing.T, ctx context.Context, c *client.Client, typ string) protocol.Event {
	t.Helper()
	ev, err := c.Next(ctx, typ)
	if err != nil {
		t.Fatalf("%s: %v", c.User(), err)
	}
	return ev
}

// call makes a call b and b accept it, and returns both force-calls.
func call(t *testing.T, ctx context.Context, a, b *client.Client) (fa, fb protocol.Event) {
	t.Helper()
	tx, err := a.Call(ctx, b.User())
	if err != nil {
		t.Fatal(err)
	}
	in := next(t, ctx, b, protocol.TypeCall)
	if in.User != a.User() || in.Peer != b.User() || in.Tx != tx {
		t.Fatalf("call event %+v, want from %s to %s tx %s", in, a.User(), b.User(), tx)
	}
	if err := b.Accept(ctx, in.User, in.Tx); err != nil {
		t.Fatal(err)
	}
	acc := next(t, ctx, a, protocol.TypeAccept)
	if acc.User != b.User() || acc.Tx != tx {
		t.Fatalf("accept event %+v", acc)
	}
	fa = next(t, ctx, a, protocol.TypeForceCall)
	fb = next(t, ctx, b, protocol.TypeForceCall)
	if fa.Peer != b.User() || fb.Peer != a.User() || fa.Ticket == "" || fb.Ticket == "" || fa.Ticket == fb.Ticket {
		t.Fatalf("force-calls %+v / %+v", fa.Peer, fb.Peer)
	}
	return fa, fb
}

// media opens and pairs the media of both sides.
func media(t *testing.T, ctx context.Context, a, b *client.Client, fa, fb protocol.Event) (ma, mb *client.Media) {
	t.Helper()
	ma, err := a.Media(ctx, fa)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ma.Close() })
	mb, err = b.Media(ctx, fb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close() })
	for _, m := range []*client.Media{ma, mb} {
		select {
		case <-m.Paired():
		case <-m.Done():
			t.Fatalf("media ended before paired: %v", m.Err())
		case <-ctx.Done():
			t.Fatal("not paired")
		}
	}
	if ma.Peer() != b.User() || mb.Peer() != a.User() {
		t.Fatalf("media peers %q %q", ma.Peer(), mb.Peer())
	}
	return ma, mb
}

func waitDone(t *testing.T, ctx context.Context, m *client.Media, want error) {
	t.Helper()
	select {
	case <-m.Done():
	case <-ctx.Done():
		t.Fatalf("media not ended, want %v", want)
	}
	if !errors.Is(m.Err(), want) {
		t.Fatalf("media Err() = %v, want %v", m.Err(), want)
	}
}

func TestRoundTrip(t *testing.T) {
	ctx := testContext(t)
	s := servertest.Start(t, nil)
	alice := login(t, ctx, s, "alice")
	dial(t, ctx, s) // an anonymous connection changes nothing
	if err := dial(t, ctx, s).Register(ctx, "bob", pw, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddPeers(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	bob := login(t, ctx, s, "bob")
	if ev := next(t, ctx, alice, protocol.TypeStatus); ev.User != "bob" || ev.Status != protocol.StatusOnline {
		t.Fatalf("alice got %+v, want bob online", ev)
	}

	peers, err := alice.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].User != "bob" || !peers[0].Mutual || !peers[0].Online ||
		peers[0].Status == nil || *peers[0].Status != protocol.StatusOnline {
		t.Fatalf("alice's peers = %+v", peers)
	}
	online, err := bob.PeersOnline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(online, []string{"alice"}) {
		t.Fatalf("bob's online peers = %v", online)
	}
	if err := alice.SetStatus(ctx, "away"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ctx, bob, protocol.TypeStatus); ev.User != "alice" || ev.Status != "away" {
		t.Fatalf("bob got %+v, want alice away", ev)
	}

	fa, fb := call(t, ctx, alice, bob)
	ma, mb := media(t, ctx, alice, bob, fa, fb)

	// Frames, both ways.
	if err := ma.WriteFrame([]byte("hello bob")); err != nil {
		t.Fatal(err)
	}
	if f, err := mb.ReadFrame(); err != nil || string(f) != "hello bob" {
		t.Fatalf("bob read %q, %v", f, err)
	}
	if err := mb.WriteFrame([]byte{}); err != nil { // empty frames are frames too
		t.Fatal(err)
	}
	if f, err := ma.ReadFrame(); err != nil || len(f) != 0 {
		t.Fatalf("alice read %q, %v; want an empty frame", f, err)
	}

	// A byte stream larger than a frame, both ways at once.
	up, down := make([]byte, 300<<10), make([]byte, 200<<10)
	rand.Read(up)
	rand.Read(down)
	errc := make(chan error, 2)
	go func() { _, err := ma.Write(up); errc <- err }()
	go func() { _, err := mb.Write(down); errc <- err }()
	gotUp, gotDown := make([]byte, len(up)), make([]byte, len(down))
	if _, err := io.ReadFull(mb, gotUp); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ma, gotDown); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(up, gotUp) || !bytes.Equal(down, gotDown) {
		t.Fatal("relayed bytes differ")
	}

	// Hang-up: bob learns it on /meta, both media end as unpaired.
	if err := alice.Unpair(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ctx, bob, protocol.TypeUnpair); ev.User != "alice" || ev.Reason != protocol.ReasonHangup {
		t.Fatalf("bob got %+v, want unpair by alice, hangup", ev)
	}
	waitDone(t, ctx, ma, client.ErrUnpaired)
	waitDone(t, ctx, mb, client.ErrUnpaired)
	if _, err := mb.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("Read after unpair = %v, want io.EOF", err)
	}
	if _, err := mb.ReadFrame(); !errors.Is(err, client.ErrUnpaired) {
		t.Errorf("ReadFrame after unpair = %v, want ErrUnpaired", err)
	}
	if err := alice.Unpair(ctx, "bob"); !errors.Is(err, &protocol.Error{Code: protocol.ErrNoCall}) {
		t.Errorf("second unpair = %v, want no-call", err)
	}

	// Peers can be dropped again.
	if err := alice.DelPeers(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Call(ctx, "bob"); !errors.Is(err, &protocol.Error{Code: protocol.ErrNotAPeer}) {
		t.Errorf("call after del-peers = %v, want not-a-peer", err)
	}
}

func TestMediaCloseEndsCall(t *testing.T) {
	ctx := testContext(t)
	s := servertest.Start(t, nil)
	alice, bob := login(t, ctx, s, "alice"), login(t, ctx, s, "bob")
	befriend(t, ctx, alice, bob)
	fa, fb := call(t, ctx, alice, bob)
	ma, mb := media(t, ctx, alice, bob, fa, fb)
	ma.Close()
	if !errors.Is(ma.Err(), client.ErrClosed) {
		t.Errorf("closed media Err() = %v, want ErrClosed", ma.Err())
	}
	waitDone(t, ctx, mb, client.ErrUnpaired)
	if ev := next(t, ctx, bob, protocol.TypeUnpair); ev.Reason != protocol.ReasonDisconnected {
		t.Errorf("bob got %+v, want unpair disconnected", ev)
	}
	if err := ma.WriteFrame([]byte("x")); err == nil {
		t.Error("WriteFrame on closed media succeeded")
	}
}

func TestMediaTicketRefused(t *testing.T) {
	ctx := testContext(t)
	s := servertest.Start(t, nil)
	alice, bob := login(t, ctx, s, "alice"), login(t, ctx, s, "bob")
	befriend(t, ctx, alice, bob)

	bogus := protocol.Event{Type: protocol.TypeForceCall, Peer: "bob", Ticket: "AAAAAAAAAAAAAAAAAAAAAA", Media: protocol.MediaPath}
	m, err := alice.Media(ctx, bogus)
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, ctx, m, client.ErrTicketRefused)
	if _, err := m.ReadFrame(); !errors.Is(err, client.ErrTicketRefused) {
		t.Errorf("ReadFrame = %v, want ErrTicketRefused", err)
	}

	// A real ticket works once.
	fa, fb := call(t, ctx, alice, bob)
	media(t, ctx, alice, bob, fa, fb)
	again, err := alice.Media(ctx, fa)
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, ctx, again, client.ErrTicketRefused)

	if _, err := alice.Media(ctx, protocol.Event{Type: protocol.TypeCall}); !errors.Is(err, client.ErrNotForceCall) {
		t.Errorf("Media(call event) = %v, want ErrNotForceCall", err)
	}
}

func TestErrors(t *testing.T) {
	ctx := testContext(t)
	s := servertest.Start(t, nil)
	alice, bob, carol := login(t, ctx, s, "alice"), login(t, ctx, s, "bob"), login(t, ctx, s, "carol")
	befriend(t, ctx, alice, bob)
	befriend(t, ctx, carol, bob)
	if err := dial(t, ctx, s).Register(ctx, "dave", pw); err != nil { // registered, offline
		t.Fatal(err)
	}
	befriendOffline := func() error {
		c := login(t, ctx, s, "dave")
		err := c.AddPeers(ctx, "alice")
		c.Close()
		return err
	}
	if err := befriendOffline(); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddPeers(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	// alice rings bob, so that bob is busy for carol.
	if _, err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		do   func() error
		want protocol.Code
	}{
		{"wrong password", func() error { _, err := dial(t, ctx, s).Login(ctx, "alice", "wrongpassword"); return err }, protocol.ErrAuthFailed},
		{"unknown user", func() error { _, err := dial(t, ctx, s).Login(ctx, "nobody", pw); return err }, protocol.ErrAuthFailed},
		{"second login", func() error { _, err := alice.Login(ctx, "alice", pw); return err }, protocol.ErrBadRequest},
		{"exists", func() error { return dial(t, ctx, s).Register(ctx, "alice", pw) }, protocol.ErrExists},
		{"short password", func() error { return dial(t, ctx, s).Register(ctx, "eve", "short") }, protocol.ErrBadRequest},
		{"bad name", func() error { return dial(t, ctx, s).Register(ctx, "e ve", pw) }, protocol.ErrBadRequest},
		{"unknown peer", func() error { return alice.AddPeers(ctx, "nobody") }, protocol.ErrNotFound},
		{"not a peer", func() error { _, err := alice.Call(ctx, "carol"); return err }, protocol.ErrNotAPeer},
		{"offline", func() error { _, err := alice.Call(ctx, "dave"); return err }, protocol.ErrOffline},
		{"busy", func() error { _, err := carol.Call(ctx, "bob"); return err }, protocol.ErrBusy},
		{"call yourself", func() error { _, err := alice.Call(ctx, "alice"); return err }, protocol.ErrBadRequest},
		{"no call to accept", func() error { return carol.Accept(ctx, "bob", protocol.TxInt(99)) }, protocol.ErrNoCall},
		{"no call to cancel", func() error { return carol.Cancel(ctx, "bob") }, protocol.ErrNoCall},
		{"no call to unpair", func() error { return carol.Unpair(ctx, "bob") }, protocol.ErrNoCall},
		{"bad status", func() error { return alice.SetStatus(ctx, "") }, protocol.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			var perr *protocol.Error
			if !errors.As(err, &perr) || perr.Code != tt.want || perr.Reason == "" {
				t.Fatalf("got %v, want a *protocol.Error %s with a reason", err, tt.want)
			}
			if !errors.Is(err, &protocol.Error{Code: tt.want}) {
				t.Fatalf("errors.Is(%v, %s) is false", err, tt.want)
			}
		})
	}

	t.Run("not found lists missing", func(t *testing.T) {
		err := dial(t, ctx, s).Register(ctx, "frank", pw, "alice", "ghost1", "ghost2")
		var perr *protocol.Error
		if !errors.As(err, &perr) || perr.Code != protocol.ErrNotFound || !slices.Equal(perr.Missing, []string{"ghost1", "ghost2"}) {
			t.Fatalf("got %#v, want not-found missing ghost1, ghost2", err)
		}
	})
	t.Run("not logged in", func(t *testing.T) {
		c := dial(t, ctx, s)
		if _, err := c.Peers(ctx); !errors.Is(err, client.ErrNotLoggedIn) {
			t.Fatalf("Peers before login = %v, want ErrNotLoggedIn", err)
		}
		r, err := c.Send(ctx, map[string]any{"type": protocol.TypePeers, "user": "alice"})
		if err != nil || r.OK || r.Error != protocol.ErrUnauthenticated || r.For != protocol.TypePeers {
			t.Fatalf("raw peers before login = %+v, %v; want unauthenticated", r, err)
		}
	})
	t.Run("raw unknown type", func(t *testing.T) {
		r, err := alice.Send(ctx, map[string]any{"type": "dance", "user": "alice"})
		if err != nil || r.OK || r.Error != protocol.ErrUnknownType || r.For != "dance" {
			t.Fatalf("got %+v, %v; want unknown-type", r, err)
		}
	})
	t.Run("raw forbidden", func(t *testing.T) {
		r, err := alice.Send(ctx, map[string]any{"type": protocol.TypePeers, "user": "bob"})
		if err != nil || r.Error != protocol.ErrForbidden {
			t.Fatalf("got %+v, %v; want forbidden", r, err)
		}
	})
}

func TestRejectAndCancel(t *testing.T) {
	ctx := testContext(t)
	s := servertest.Start(t, nil)
	alice, bob := login(t, ctx, s, "alice"), login(t, ctx, s, "bob")
	befriend(t, ctx, alice, bob)

	if _, err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	in := next(t, ctx, bob, protocol.TypeCall)
	if err := bob.Reject(ctx, in.User, in.Tx); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ctx, alice, protocol.TypeReject); ev.User != "bob" || ev.Reason != protocol.ReasonRejected {
		t.Fatalf("alice got %+v, want reject by bob", ev)
	}

	if _, err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	next(t, ctx, bob, protocol.TypeCall)
	if err := alice.Cancel(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ctx, bob, protocol.TypeCancel); ev.User != "alice" || ev.Reason != protocol.ReasonCancelled {
		t.Fatalf("bob got %+v, want cancel by alice", ev)
	}
}

func TestEventsClosedWhenServerStops(t *testing.T) {
	ctx := testContext(t)
	s, stop := servertest.StartExample(nil)
	c, err := client.Dial(ctx, s.MetaURL, nil)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(ctx, map[string]any{"type": protocol.TypeWhoami, "user": "x", "password": pw}); err != nil {
		t.Fatal(err)
	}
	stop()
	for range c.Events() {
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed")
	}
	if c.Err() == nil {
		t.Fatal("Err() is nil after the server stopped")
	}
	t.Logf("end cause: %v", c.Err())
	if err := c.SetStatus(ctx, "x"); err == nil {
		t.Fatal("request after the end succeeded")
	}
}
