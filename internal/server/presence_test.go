package server_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// TestOrdering: a whoami sent right after reg-user, without waiting for the
// first response, succeeds (the seed's Node server failed this), and a
// pipeline of messages is answered in the order sent.
func TestOrdering(t *testing.T) {
	s := servertest.Start(t, nil)
	w := dial(t, s, nil)
	w.send(map[string]any{"type": "reg-user", "user": "alice", "password": pw, "peers": []string{}, "tx": 1})
	w.send(map[string]any{"type": "whoami", "user": "alice", "password": pw, "tx": 2})
	for i := 0; i < 30; i++ {
		w.send(map[string]any{"type": "status", "user": "alice", "status": fmt.Sprint("s", i), "tx": 3 + i})
	}
	for i := 1; i <= 32; i++ {
		f := w.next()
		if f.Type != "res" || f.Tx != protocol.Tx(fmt.Sprint(i)) || !f.OK {
			t.Fatalf("response %d: %s", i, f.raw)
		}
	}
}

func TestPresence(t *testing.T) {
	s := servertest.Start(t, nil)
	mutual(t, s, "alice", "bob")
	register(t, s, "carol", "alice") // carol lists alice; alice does not list carol
	b := login(t, s, "bob")
	c := login(t, s, "carol")

	a1 := login(t, s, "alice")
	b.expect("status", "alice", "", "")
	c.quiet()  // not a mutual peer: sees nothing
	a1.quiet() // its own login pushes nothing to it: peers tells the current state

	// A second device: alice was online already, nobody is told again.
	a2 := login(t, s, "alice")
	b.quiet()

	a2.ok(map[string]any{"type": "status", "user": "alice", "status": "away"})
	if f := b.expect("status", "alice", "", ""); f.Status != "away" {
		t.Fatalf("status: %s", f.raw)
	}
	c.quiet()

	// peers: online and status only for mutual peers.
	f := c.ok(map[string]any{"type": "peers", "user": "carol"})
	var infos []protocol.PeerInfo
	if err := json.Unmarshal(f.Peers, &infos); err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].User != "alice" || infos[0].Mutual || infos[0].Online || infos[0].Status != nil ||
		!contains(f.raw, `"status":null`) {
		t.Fatalf("carol sees too much: %s", f.raw)
	}
	f = b.ok(map[string]any{"type": "peers", "user": "bob"})
	infos = nil
	json.Unmarshal(f.Peers, &infos)
	if len(infos) != 1 || !infos[0].Mutual || !infos[0].Online || infos[0].Status == nil || *infos[0].Status != "away" {
		t.Fatalf("bob's peers: %s", f.raw)
	}
	f = b.ok(map[string]any{"type": "peers-online", "user": "bob"})
	if string(f.Peers) != `["alice"]` {
		t.Fatalf("peers-online: %s", f.raw)
	}
	if f = c.ok(map[string]any{"type": "peers-online", "user": "carol"}); string(f.Peers) != `[]` {
		t.Fatalf("carol's peers-online: %s", f.raw)
	}

	// Offline only when the last device leaves.
	a1.leave(s)
	b.quiet()
	a2.leave(s)
	if f := b.expect("status", "alice", "", ""); f.Status != "offline" {
		t.Fatalf("status: %s", f.raw)
	}
	c.quiet()
	f = b.ok(map[string]any{"type": "peers", "user": "bob"})
	if !contains(f.raw, `"online":false`) || !contains(f.raw, `"mutual":true`) {
		t.Fatalf("after offline: %s", f.raw)
	}
}

// TestMutualityChanges: becoming mutual peers shows presence at once, and
// ceasing to be hides it.
func TestMutualityChanges(t *testing.T) {
	s := servertest.Start(t, nil)
	register(t, s, "alice")
	register(t, s, "bob", "alice")
	a := login(t, s, "alice")
	b := login(t, s, "bob")
	a.quiet()
	b.quiet()
	a.ok(map[string]any{"type": "add-peers", "user": "alice", "peers": []string{"bob", "bob"}})
	if f := b.expect("status", "alice", "", ""); f.Status != "online" {
		t.Fatalf("%s", f.raw)
	}
	if f := a.expect("status", "bob", "", ""); f.Status != "online" {
		t.Fatalf("%s", f.raw)
	}
	f := a.ok(map[string]any{"type": "peers", "user": "alice"})
	if contains(f.raw, `"user":"bob"},{"user":"bob"`) || !contains(f.raw, `"mutual":true`) {
		t.Fatalf("dedupe: %s", f.raw)
	}
	b.ok(map[string]any{"type": "del-peers", "user": "bob", "peers": []string{"alice", "nobody"}})
	if f := a.expect("status", "bob", "", ""); f.Status != "offline" {
		t.Fatalf("%s", f.raw)
	}
	if f := b.expect("status", "alice", "", ""); f.Status != "offline" {
		t.Fatalf("%s", f.raw)
	}
	a.fail(map[string]any{"type": "call", "user": "alice", "peer": "bob"}, protocol.ErrNotAPeer)
	a.ok(map[string]any{"type": "status", "user": "alice", "status": "busy"})
	b.quiet()
}
