package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// TestSessionsSurviveRestartAndCLIPasswd runs real servers (child
// processes, Pebble on disk): a session and a missed call survive a
// restart, the store holds neither the session in clear (keys, values and
// raw files scanned), and `umplug user passwd` while the server runs
// revokes the session and closes the user's connection.
func TestSessionsSurviveRestartAndCLIPasswd(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns server processes")
	}
	dir := t.TempDir()
	srv := startChild(t, "-data", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alice := dialLogin(ctx, t, srv.url, "alice")
	bob := dialLogin(ctx, t, srv.url, "bob", "alice")
	if err := alice.AddPeers(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	sess := alice.Session()
	if len(sess) != 43 {
		t.Fatalf("session %q: want 43 base64url characters (256 bits)", sess)
	}
	bob.Close()
	for {
		ev := waitEvent(ctx, t, alice, protocol.TypeStatus)
		if ev.User == "bob" && ev.Status == protocol.StatusOffline {
			break
		}
	}
	if _, err := alice.Call(ctx, "bob"); !errors.Is(err, &protocol.Error{Code: protocol.ErrOffline}) {
		t.Fatalf("call to offline bob: %v", err)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	if err := srv.wait(t, 30*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}

	assertNoSecret(t, dir, sess)

	srv2 := startChild(t, "-data", dir)
	dial := func() *client.Client {
		c, err := client.Dial(ctx, srv2.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a2 := dial()
	if _, err := a2.LoginSession(ctx, "alice", sess); err != nil {
		t.Fatalf("session after a restart: %v", err)
	}
	b2 := dial()
	if _, err := b2.Login(ctx, "bob", "sesameopen"); err != nil {
		t.Fatal(err)
	}
	calls, err := b2.MissedCalls(ctx, false)
	if err != nil || len(calls) != 1 || calls[0].User != "alice" || calls[0].Reason != protocol.ReasonOffline {
		t.Fatalf("missed calls after a restart: %+v, %v", calls, err)
	}

	// The admin CLI, while the server holds the store.
	out, err := userRun(t, dir, "changed-by-admin\n", "passwd", "alice")
	if err != nil {
		t.Fatalf("user passwd with the server running: %v", err)
	}
	if !strings.Contains(out, "1 session(s) revoked, 1 connection(s) closed") {
		t.Fatalf("user passwd said %q", out)
	}
	select {
	case <-a2.Done():
	case <-ctx.Done():
		t.Fatal("alice's connection was not closed")
	}
	var ce *websocket.CloseError
	if !errors.As(a2.Err(), &ce) || ce.Code != protocol.ClosePolicy || ce.Text != protocol.CloseReasonPasswordChanged {
		t.Fatalf("alice's connection ended with %v; want 1008 %q", a2.Err(), protocol.CloseReasonPasswordChanged)
	}
	if _, err := dial().LoginSession(ctx, "alice", sess); !errors.Is(err, &protocol.Error{Code: protocol.ErrAuthFailed}) {
		t.Fatalf("revoked session: %v", err)
	}
	if _, err := dial().Login(ctx, "alice", "changed-by-admin"); err != nil {
		t.Fatalf("the admin's new password: %v", err)
	}
	if _, err := userRun(t, dir, "changed-by-admin\n", "passwd", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("passwd of an unknown user while running: %v", err)
	}
	if _, err := userRun(t, dir, "", "list"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("other commands still refuse while the server runs: %v", err)
	}
}

// assertNoSecret fails if the session secret (as sent, or its raw bytes)
// appears in any key or value of the Pebble store in dir, or in any of its
// files (WAL and tables included).
func assertNoSecret(t *testing.T, dir, secret string) {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(secret)
	if err != nil {
		t.Fatal(err)
	}
	needles := [][]byte{[]byte(secret), raw}
	db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	sessions := 0
	for ok := it.First(); ok; ok = it.Next() {
		if bytes.HasPrefix(it.Key(), []byte("s/")) {
			sessions++
		}
		for _, n := range needles {
			if bytes.Contains(it.Key(), n) || bytes.Contains(it.Value(), n) {
				t.Fatalf("the session secret is stored in clear under %q", it.Key())
			}
		}
	}
	it.Close()
	db.Close()
	if sessions == 0 {
		t.Fatal("no session stored at all: the scan proves nothing")
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(b, n) {
				t.Fatalf("the session secret is in %s", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUserPasswdOfflineRevokesSessions: without a server, passwd revokes
// the user's sessions in the store.
func TestUserPasswdOfflineRevokesSessions(t *testing.T) {
	dir := t.TempDir()
	userMust(t, dir, "sesameopen\n", "add", "alice")
	s, err := store.OpenPebble(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.CreateSession(context.Background(), store.Session{Hash: "abc", User: "alice", Created: now, LastUsed: now}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if out := userMust(t, dir, "newpassword\n", "passwd", "alice"); !strings.Contains(out, "1 session(s) revoked") {
		t.Fatalf("passwd said %q", out)
	}
	s, err = store.OpenPebble(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.GetSession(context.Background(), "abc"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session after an offline passwd: %v", err)
	}
}
