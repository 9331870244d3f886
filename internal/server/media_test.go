package server_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// paired is a call between alice and bob whose media connections are up,
// driven end to end through /meta and /media.
type paired struct {
	a, b     *client.Client
	ma, mb   *client.Media
	fca, fcb protocol.Event
}

func nextEvent(ctx context.Context, t *testing.T, c *client.Client, typ string) protocol.Event {
	t.Helper()
	ev, err := c.Next(ctx, typ)
	if err != nil {
		t.Fatalf("%s: %v", c.User(), err)
	}
	return ev
}

func setupPaired(ctx context.Context, t *testing.T, s *servertest.Server) *paired {
	t.Helper()
	mutual(t, s, "alice", "bob")
	p := &paired{}
	for i, name := range []string{"alice", "bob"} {
		c, err := client.Dial(ctx, s.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Login(ctx, name, pw); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			p.a = c
		} else {
			p.b = c
		}
	}
	tx, err := p.a.Call(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(ctx, t, p.b, protocol.TypeCall)
	if err := p.b.Accept(ctx, "alice", tx); err != nil {
		t.Fatal(err)
	}
	p.fca = nextEvent(ctx, t, p.a, protocol.TypeForceCall)
	p.fcb = nextEvent(ctx, t, p.b, protocol.TypeForceCall)
	if p.ma, err = p.a.Media(ctx, p.fca); err != nil {
		t.Fatal(err)
	}
	if p.mb, err = p.b.Media(ctx, p.fcb); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*client.Media{p.ma, p.mb} {
		select {
		case <-m.Paired():
		case <-ctx.Done():
			t.Fatal("not paired")
		}
	}
	// Media flows both ways.
	if err := p.ma.WriteFrame([]byte("from alice")); err != nil {
		t.Fatal(err)
	}
	if err := p.mb.WriteFrame([]byte("from bob")); err != nil {
		t.Fatal(err)
	}
	if f, err := p.mb.ReadFrame(); err != nil || !bytes.Equal(f, []byte("from alice")) {
		t.Fatalf("bob read %q, %v", f, err)
	}
	if f, err := p.ma.ReadFrame(); err != nil || !bytes.Equal(f, []byte("from bob")) {
		t.Fatalf("alice read %q, %v", f, err)
	}
	return p
}

func mediaEnded(ctx context.Context, t *testing.T, m *client.Media, want error) {
	t.Helper()
	select {
	case <-m.Done():
	case <-ctx.Done():
		t.Fatal("media connection still open")
	}
	if !errors.Is(m.Err(), want) {
		t.Fatalf("media ended with %v, want %v", m.Err(), want)
	}
}

// TestMediaEndToEnd: the server, not the clients, decides who is connected.
// Every way a call ends cuts both media connections, and the tickets die.
func TestMediaEndToEnd(t *testing.T) {
	cases := []struct {
		name   string
		end    func(ctx context.Context, t *testing.T, p *paired)
		notify func(ctx context.Context, t *testing.T, p *paired) // what bob's /meta sees
	}{
		{"hangup", func(ctx context.Context, t *testing.T, p *paired) {
			if err := p.a.Unpair(ctx, "bob"); err != nil {
				t.Fatal(err)
			}
		}, func(ctx context.Context, t *testing.T, p *paired) {
			if ev := nextEvent(ctx, t, p.b, protocol.TypeUnpair); ev.Reason != "hangup" || ev.User != "alice" {
				t.Fatalf("unpair %+v", ev)
			}
		}},
		{"meta-disconnect", func(ctx context.Context, t *testing.T, p *paired) {
			p.a.Close()
		}, func(ctx context.Context, t *testing.T, p *paired) {
			if ev := nextEvent(ctx, t, p.b, protocol.TypeUnpair); ev.Reason != "disconnected" || ev.User != "alice" {
				t.Fatalf("unpair %+v", ev)
			}
		}},
		{"media-side-closes", func(ctx context.Context, t *testing.T, p *paired) {
			p.ma.Close()
		}, func(ctx context.Context, t *testing.T, p *paired) {
			if ev := nextEvent(ctx, t, p.b, protocol.TypeUnpair); ev.Reason != "disconnected" || ev.User != "alice" {
				t.Fatalf("unpair %+v", ev)
			}
			if ev := nextEvent(ctx, t, p.a, protocol.TypeUnpair); ev.Reason != "disconnected" {
				t.Fatalf("alice's own unpair %+v", ev)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			s := servertest.Start(t, nil)
			p := setupPaired(ctx, t, s)
			tc.end(ctx, t, p)
			tc.notify(ctx, t, p)
			mediaEnded(ctx, t, p.mb, client.ErrUnpaired)
			if tc.name != "media-side-closes" {
				mediaEnded(ctx, t, p.ma, client.ErrUnpaired)
			}
			// The tickets are dead now.
			c, err := client.Dial(ctx, s.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			m, err := c.Media(ctx, p.fcb)
			if err != nil {
				t.Fatal(err)
			}
			mediaEnded(ctx, t, m, client.ErrTicketRefused)
			if n := s.Server.Meta().Stats().Calls; n != 0 {
				t.Fatalf("%d calls left", n)
			}
		})
	}
}

// TestMediaThirdParty: a second device of a paired user presenting a reused
// ticket is refused and the pair keeps relaying.
func TestMediaThirdParty(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s := servertest.Start(t, nil)
	p := setupPaired(ctx, t, s)
	b2, err := client.Dial(ctx, s.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if _, err := b2.Login(ctx, "bob", pw); err != nil {
		t.Fatal(err)
	}
	m, err := b2.Media(ctx, p.fcb) // bob's ticket, replayed from another device
	if err != nil {
		t.Fatal(err)
	}
	mediaEnded(ctx, t, m, client.ErrTicketRefused)
	if err := p.ma.WriteFrame([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	if f, err := p.mb.ReadFrame(); err != nil || string(f) != "still here" {
		t.Fatalf("pair broken: %q %v", f, err)
	}
}
