package main

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/password"
	"github.com/user-media-plug/umplug/internal/store"
)

// userRun runs `umplug user -data dir args...` with stdin and returns stdout.
func userRun(t *testing.T, dir, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := runUser(ctx, append([]string{"-data", dir}, args...), strings.NewReader(stdin), &stdout, &stderr)
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	return stdout.String(), err
}

func userMust(t *testing.T, dir, stdin string, args ...string) string {
	t.Helper()
	out, err := userRun(t, dir, stdin, args...)
	if err != nil {
		t.Fatalf("user %v: %v", args, err)
	}
	return out
}

func userGet(t *testing.T, dir, name string) (store.User, error) {
	t.Helper()
	s, err := store.OpenPebble(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return s.Get(context.Background(), name)
}

func TestUserCommands(t *testing.T) {
	dir := t.TempDir()
	userMust(t, dir, "sesameopen\n", "add", "alice")
	userMust(t, dir, "carolpass\r\n", "add", "carol")
	// Flags after the name, and a peer list with a duplicate.
	userMust(t, dir, "bobsecret", "add", "bob", "-peers", "alice,carol,alice")

	if got, want := userMust(t, dir, "", "list"), "alice\t\nbob\talice,carol\ncarol\t\n"; got != want {
		t.Fatalf("list = %q; want %q", got, want)
	}

	u, err := userGet(t, dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u.Password, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("stored hash %q is not OWASP argon2id", u.Password)
	}
	h := password.New(password.Config{})
	ctx := context.Background()
	if ok, err := h.Verify(ctx, u.Password, "sesameopen"); !ok || err != nil {
		t.Fatalf("alice's password does not verify: %v, %v", ok, err)
	}
	u, _ = userGet(t, dir, "carol")
	if ok, _ := h.Verify(ctx, u.Password, "carolpass"); !ok {
		t.Fatal("CRLF not stripped from carol's password")
	}

	userMust(t, dir, "newpassword\n", "passwd", "alice")
	u, _ = userGet(t, dir, "alice")
	if ok, _ := h.Verify(ctx, u.Password, "newpassword"); !ok {
		t.Fatal("passwd did not change the password")
	}

	if got := userMust(t, dir, "", "peers", "alice", "-add", "bob,carol"); got != "bob\ncarol\n" {
		t.Fatalf("peers -add = %q", got)
	}
	if got := userMust(t, dir, "", "peers", "alice", "-del", "carol,nobody", "-add", "bob"); got != "bob\n" {
		t.Fatalf("peers -del = %q", got)
	}
	if got := userMust(t, dir, "", "peers", "bob"); got != "alice\ncarol\n" {
		t.Fatalf("peers = %q", got)
	}

	// del removes bob from alice's peers too.
	userMust(t, dir, "", "del", "bob")
	if _, err := userGet(t, dir, "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bob after del: %v", err)
	}
	if got, want := userMust(t, dir, "", "list"), "alice\t\ncarol\t\n"; got != want {
		t.Fatalf("list after del = %q; want %q", got, want)
	}
}

func TestUserErrors(t *testing.T) {
	dir := t.TempDir()
	userMust(t, dir, "sesameopen\n", "add", "alice")
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string // in the error
	}{
		{"missing command", "", nil, "missing command"},
		{"unknown command", "", []string{"frob"}, "unknown command"},
		{"add without name", "sesameopen\n", []string{"add"}, "want 1 argument"},
		{"bad name", "sesameopen\n", []string{"add", "a b"}, "may only contain"},
		{"exists", "sesameopen\n", []string{"add", "alice"}, "exists"},
		{"exists in another case", "sesameopen\n", []string{"add", "ALice"}, "unique regardless of case"},
		{"white space password", "         \n", []string{"add", "bob"}, "white space"},
		{"missing peers", "sesameopen\n", []string{"add", "bob", "-peers", "alice,zed,yan"}, "zed, yan"},
		{"self peer", "sesameopen\n", []string{"add", "bob", "-peers", "bob"}, "itself"},
		{"short password", "short\n", []string{"add", "bob"}, "password: must be"},
		{"no password", "", []string{"add", "bob"}, "no password on stdin"},
		{"too long password", strings.Repeat("x", 2000), []string{"add", "bob"}, "password: must be"},
		{"del unknown", "", []string{"del", "bob"}, "not found"},
		{"passwd unknown", "sesameopen\n", []string{"passwd", "bob"}, "not found"},
		{"peers add missing", "", []string{"peers", "alice", "-add", "zed"}, "zed"},
		{"peers add self", "", []string{"peers", "alice", "-add", "alice"}, "itself"},
		{"password in argv", "", []string{"add", "bob", "sesameopen"}, "want 1 argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := userRun(t, dir, tt.stdin, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want one containing %q", err, tt.want)
			}
		})
	}
	// Nothing above created bob or changed alice.
	if _, err := userGet(t, dir, "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bob: %v", err)
	}
	if u, _ := userGet(t, dir, "alice"); len(u.Peers) != 0 {
		t.Fatalf("alice's peers changed: %v", u.Peers)
	}
}

func TestUserPeersMax(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenPebble(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	full := make([]string, 1000)
	for i := range full {
		full[i] = "p" + strconv.Itoa(i)
	}
	for _, n := range append(slices.Clone(full), "alice", "extra") {
		if err := s.Create(ctx, store.User{Name: n, Password: "h"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.UpdatePeers(ctx, "alice", func([]string) ([]string, error) { return full, nil }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := userRun(t, dir, "", "peers", "alice", "-add", "extra"); err == nil || !strings.Contains(err.Error(), "more than 1000") {
		t.Fatalf("adding a 1001st peer: %v", err)
	}
}

func TestUserLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenPebble(dir, nil) // as a running server would
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = userRun(t, dir, "sesameopen\n", "add", "alice")
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("add while locked = %v; want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "held by a running umplug server") {
		t.Fatalf("error %q does not say the server holds the directory", err)
	}
}
