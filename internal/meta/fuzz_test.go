package meta

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/password"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// pipeConn is an in-memory Conn: frames the server writes arrive on out.
type pipeConn struct {
	out    chan []byte
	closed chan struct{}
}

func newPipeConn() *pipeConn {
	return &pipeConn{out: make(chan []byte, 4096), closed: make(chan struct{}, 1)}
}

func (p *pipeConn) WriteText(b []byte) error { p.out <- b; return nil }
func (p *pipeConn) Close(code int, reason string) {
	select {
	case p.closed <- struct{}{}:
	default:
	}
}

// responses reads frames until the response with tx barrier arrives and
// returns how many other responses came before it.
func responses(t testing.TB, p *pipeConn, barrier string) int {
	t.Helper()
	n := 0
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case b := <-p.out:
			var m protocol.ServerMessage
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("server sent invalid JSON %q", b)
			}
			if m.Type != protocol.TypeRes {
				continue
			}
			if string(m.Tx) == barrier {
				return n
			}
			n++
		case <-timeout.C:
			t.Fatal("no response within 5s")
		}
	}
}

// FuzzDispatch feeds arbitrary frames to an identified and an unidentified
// session of a real server (memory store): nothing panics and every frame
// gets exactly one response.
func FuzzDispatch(f *testing.F) {
	for _, s := range []string{
		`{"type":"reg-user","user":"newbie","password":"sesameopen","peers":["peer"],"tx":1}`,
		`{"type":"whoami","user":"fuzz","password":"sesameopen","tx":2}`,
		`{"type":"add-peers","user":"fuzz","peers":["peer","ghost"],"tx":3}`,
		`{"type":"del-peers","user":"fuzz","peers":["peer"],"tx":4}`,
		`{"type":"peers","user":"fuzz","tx":5}`,
		`{"type":"peers-online","user":"fuzz","tx":6}`,
		`{"type":"status","user":"fuzz","status":"away","tx":7}`,
		`{"type":"call","user":"fuzz","peer":"peer","tx":0.5}`,
		`{"type":"accept","user":"fuzz","peer":"peer","tx":0.5}`,
		`{"type":"reject","user":"fuzz","peer":"peer","tx":0.5}`,
		`{"type":"cancel","user":"fuzz","peer":"peer","tx":8}`,
		`{"type":"unpair","user":"fuzz","peer":"peer","tx":9}`,
		`{"type":"call","user":"peer","peer":"fuzz","tx":10}`,
		`{"type":"whoami","user":"fuzz","session":"q7Yp3xk0bXc2nN4aZ1mQ8rT5vW9yE6uI0oPaSdFgHjK","tx":11}`,
		`{"type":"whoami","user":"fuzz","tx":12}`,
		`{"type":"passwd","user":"fuzz","password":"wrong-password","new":"another-password","tx":13}`,
		`{"type":"logout","user":"fuzz","tx":14}`,
		`{"type":"missed-calls","user":"fuzz","clear":true,"tx":15}`,
		`not json`, `{}`, `{"type":"x"}`, `{"tx":1e400}`,
	} {
		f.Add([]byte(s))
	}
	st := store.NewMemory()
	h := password.New(password.Config{Params: password.Params{Memory: 64, Time: 1, Threads: 1}})
	ctx := context.Background()
	for _, u := range []struct {
		name  string
		peers []string
	}{{"fuzz", []string{"peer"}}, {"peer", []string{"fuzz"}}} {
		hash, _ := h.Hash(ctx, "sesameopen")
		if err := st.Create(ctx, store.User{Name: u.name, Password: hash, Peers: u.peers}); err != nil {
			f.Fatal(err)
		}
	}
	s, err := New(Config{Store: st, Hasher: h, Clock: clock.NewFake(), RateLimit: 1e9, RateBurst: 1 << 30,
		AuthFailuresPerUser: 1 << 30, AuthFailuresPerAddr: 1 << 30, RegistrationsPerAddr: 1 << 30})
	if err != nil {
		f.Fatal(err)
	}
	open := func(t testing.TB, user string) (*Session, *pipeConn) {
		p := newPipeConn()
		x, err := s.Open(p, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			x.Handle([]byte(`{"type":"whoami","user":"` + user + `","password":"sesameopen","tx":0}`))
			for m := range p.out {
				if bytes.Contains(m, []byte(`"type":"res"`)) {
					break
				}
			}
		}
		return x, p
	}
	ident, ip := open(f, "fuzz")
	_, pp := open(f, "peer") // online, so calls ring
	go func() {
		for range pp.out {
		}
	}()
	f.Fuzz(func(t *testing.T, frame []byte) {
		anon, ap := open(t, "")
		defer anon.Close()
		for _, c := range []struct {
			x *Session
			p *pipeConn
		}{{ident, ip}, {anon, ap}} {
			c.x.Handle(frame)
			c.x.Handle([]byte(`{"type":"peers-online","user":"fuzz","tx":-1}`))
			if n := responses(t, c.p, "-1"); n != 1 {
				t.Fatalf("%d responses to %q", n, bytes.TrimSpace(frame))
			}
		}
	})
}
