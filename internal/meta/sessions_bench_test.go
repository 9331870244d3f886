package meta

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/password"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// BenchmarkWhoamiSession measures identification by session in-process
// (open, whoami with a session, answer, close) on the Pebble store: no
// password hashing, one store read of the session and one of the user.
// It prints logins/s; compare with the argon2id password path (tens per
// second per core).
func BenchmarkWhoamiSession(b *testing.B) {
	st, err := store.OpenPebble(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	h := password.New(password.Config{Params: password.Params{Memory: 64, Time: 1, Threads: 1}})
	ctx := context.Background()
	hash, _ := h.Hash(ctx, testPassword)
	if err := st.Create(ctx, store.User{Name: "alice", Password: hash}); err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Store: st, Hasher: h, Clock: clock.Real{}, RateLimit: -1,
		AuthFailuresPerUser: -1, AuthFailuresPerAddr: -1, AuthConcurrentPerUser: -1, AuthConcurrentPerAddr: -1})
	if err != nil {
		b.Fatal(err)
	}
	login := func(msg string) protocol.ServerMessage {
		p := newPipeConn()
		x, err := s.Open(p, "127.0.0.1")
		if err != nil {
			b.Fatal(err)
		}
		defer x.Close()
		x.Handle([]byte(msg))
		var m protocol.ServerMessage
		if err := json.Unmarshal(<-p.out, &m); err != nil || !m.OK {
			b.Fatalf("whoami: %+v %v", m, err)
		}
		return m
	}
	sess := login(`{"type":"whoami","user":"alice","password":"` + testPassword + `","tx":1}`).Session
	msg := `{"type":"whoami","user":"alice","session":"` + sess + `","tx":1}`
	b.ResetTimer()
	for range b.N {
		login(msg)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
}
