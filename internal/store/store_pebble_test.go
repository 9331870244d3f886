package store_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/internal/store/storetest"
	"github.com/user-media-plug/umplug/internal/testlog"
)

func openPebble(t *testing.T, dir string) store.Store {
	t.Helper()
	s, err := store.OpenPebble(dir, testlog.New(t))
	if err != nil {
		t.Fatalf("OpenPebble: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPebble(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openPebble(t, t.TempDir()) })
}

func TestPebbleReopen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	const phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U"

	s := openPebble(t, dir)
	if err := s.Create(ctx, store.User{Name: "userA", Password: phc, Peers: []string{"userB"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, store.User{Name: "userB", Password: phc}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openPebble(t, dir)
	u, err := s.Get(ctx, "userA")
	if err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
	if u.Password != phc || !slices.Equal(u.Peers, []string{"userB"}) {
		t.Fatalf("after reopen: %+v", u)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The on-disk value is the contract's shape, keyed "u/<name>".
	db, err := pebble.Open(dir, &pebble.Options{Logger: discardPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for name, want := range map[string]string{
		"userA": `{"password":"` + phc + `","peers":["userB"]}`,
		"userB": `{"password":"` + phc + `","peers":[]}`,
	} {
		val, closer, err := db.Get([]byte("u/" + name))
		if err != nil {
			t.Fatalf("raw get %s: %v", name, err)
		}
		got := string(val)
		closer.Close()
		if got != want {
			t.Errorf("on disk %s = %s; want %s", name, got, want)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(got), &m); err != nil || len(m) != 2 {
			t.Errorf("on disk %s is not exactly {password, peers}: %v", name, m)
		}
	}
}

// TestPebbleWriteIsOnDisk checks that an acknowledged write is already in a
// file (the synced WAL) before Close, as the contract's hash and nothing else.
func TestPebbleWriteIsOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openPebble(t, dir)
	const phc = "$argon2id$v=19$m=64,t=1,p=1$AAAAAAAAAAA$BBBBBBBBBBBBBBBBBBBBBB"
	if err := s.Create(ctx, store.User{Name: "userA", Password: phc}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if strings.Contains(string(b), `{"password":"`+phc+`","peers":[]}`) {
			found = true
		}
	}
	if !found {
		t.Fatal("no file in the store directory holds the acknowledged record")
	}
}

type discardPebble struct{}

func (discardPebble) Infof(string, ...any)  {}
func (discardPebble) Errorf(string, ...any) {}
func (discardPebble) Fatalf(f string, a ...any) {
	panic(fmt.Sprintf(f, a...))
}

func TestPebbleLockedInProcess(t *testing.T) {
	dir := t.TempDir()
	openPebble(t, dir)
	_, err := store.OpenPebble(dir, nil)
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second OpenPebble = %v; want ErrLocked", err)
	}
	t.Log(err)
}

const holdEnv = "UMPLUG_STORETEST_HOLD"

// TestPebbleLockedByOtherProcess runs a child copy of this test binary that
// holds the store, as a running server would.
func TestPebbleLockedByOtherProcess(t *testing.T) {
	if dir := os.Getenv(holdEnv); dir != "" {
		holdStore(dir)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPebbleLockedByOtherProcess$")
	cmd.Env = append(os.Environ(), holdEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "holding\n" {
		t.Fatalf("child said %q, %v", line, err)
	}

	_, err = store.OpenPebble(dir, nil)
	if !errors.Is(err, store.ErrLocked) {
		t.Errorf("OpenPebble while another process holds it = %v; want ErrLocked", err)
	}
	t.Log(err)

	stdin.Close() // the child closes its store and exits
	go io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	s, err := store.OpenPebble(dir, nil)
	if err != nil {
		t.Fatalf("OpenPebble after the child left: %v", err)
	}
	s.Close()
}

// holdStore is the child's side: open, report, wait for stdin to close.
func holdStore(dir string) {
	s, err := store.OpenPebble(dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	fmt.Println("holding")
	io.Copy(io.Discard, os.Stdin)
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
}
