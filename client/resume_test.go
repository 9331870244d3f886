package client_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// TestReconnectResumesTheCall: over real sockets, alice's /meta connection
// drops mid-call (Drop: no close frame); Reconnect takes her device back
// with her session: same device id, bob is told reconnecting then resumed,
// the fresh force-call's media pairs with bob's (still open) connection and
// frames flow both ways; alice's old media connection was cut by the
// rebind.
func TestReconnectResumesTheCall(t *testing.T) {
	srv := servertest.Start(t, &servertest.Options{ResumeGrace: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(user string, peers ...string) *client.Client {
		c, err := client.Dial(ctx, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Register(ctx, user, "sesameopen", peers...); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Login(ctx, user, "sesameopen"); err != nil {
			t.Fatal(err)
		}
		return c
	}
	b := dial("bob")
	a := dial("alice", "bob")
	if err := b.AddPeers(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	tx, err := a.Call(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Next(ctx, protocol.TypeCall); err != nil {
		t.Fatal(err)
	}
	if err := b.Accept(ctx, "alice", tx); err != nil {
		t.Fatal(err)
	}
	fa, err := a.Next(ctx, protocol.TypeForceCall)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := b.Next(ctx, protocol.TypeForceCall)
	if err != nil {
		t.Fatal(err)
	}
	ma, err := a.Media(ctx, fa)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := b.Media(ctx, fb)
	if err != nil {
		t.Fatal(err)
	}
	<-ma.Paired()
	<-mb.Paired()

	a.Drop()
	if ev, err := b.Next(ctx, protocol.TypeReconnecting); err != nil || ev.User != "alice" {
		t.Fatalf("reconnecting: %+v %v", ev, err)
	}
	a2, resumed, err := client.Reconnect(ctx, srv.URL, nil, a)
	if err != nil || !resumed || a2.Device() != a.Device() {
		t.Fatalf("Reconnect: resumed=%v device %q (was %q) %v", resumed, a2.Device(), a.Device(), err)
	}
	defer a2.Close()
	if ev, err := b.Next(ctx, protocol.TypeResumed); err != nil || ev.User != "alice" {
		t.Fatalf("resumed: %+v %v", ev, err)
	}
	fa2, err := a2.Next(ctx, protocol.TypeForceCall)
	if err != nil || fa2.Ticket == fa.Ticket {
		t.Fatalf("fresh force-call: %+v %v", fa2, err)
	}
	select {
	case <-ma.Done(): // cut by the rebind
	case <-ctx.Done():
		t.Fatal("the old media connection is still open")
	}
	ma2, err := a2.Media(ctx, fa2)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ma2.Paired():
	case <-ctx.Done():
		t.Fatal("not paired again")
	}
	for _, d := range []struct {
		from, to *client.Media
		p        string
	}{{ma2, mb, "from alice"}, {mb, ma2, "from bob"}} {
		if err := d.from.WriteFrame([]byte(d.p)); err != nil {
			t.Fatal(err)
		}
		if f, err := d.to.ReadFrame(); err != nil || !bytes.Equal(f, []byte(d.p)) {
			t.Fatalf("read %q, %v; want %q", f, err, d.p)
		}
	}

	// Naming another user's device is refused: a new device id.
	c := dial("carol")
	c2, err := client.Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if resumed, err := c2.Resume(ctx, "carol", c.Session(), a2.Device()); err != nil || resumed || c2.Device() == a2.Device() {
		t.Fatalf("carol resuming alice's device: resumed=%v device %q %v", resumed, c2.Device(), err)
	}
	if err := ma2.WriteFrame([]byte("still")); err != nil {
		t.Fatal(err)
	}
	if f, err := mb.ReadFrame(); err != nil || string(f) != "still" {
		t.Fatalf("after carol's attempt: %q %v", f, err)
	}
}
