package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/servertest"
)

// syncBuffer is a bytes.Buffer safe for the concurrent log writes of runPipe.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPipe(t *testing.T) {
	tests := []struct {
		name           string
		callerBytes    int
		answererBytes  int
		answererFilter bool
	}{
		{name: "both ways", callerBytes: 1 << 20, answererBytes: 300 << 10},
		{name: "one way, answerer stdin empty", callerBytes: 500 << 10, answererFilter: true},
		{name: "one way, caller stdin empty", answererBytes: 100 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s := servertest.Start(t, nil)
			pwFile := pipeAccounts(ctx, t, s.URL)

			up, down := make([]byte, tt.callerBytes), make([]byte, tt.answererBytes)
			rand.Read(up)
			rand.Read(down)
			var aliceOut, bobOut bytes.Buffer
			var aliceLog, bobLog syncBuffer
			answerArgs := []string{"-server", s.URL, "-user", "bob", "-password-file", pwFile, "-answer", "-v"}
			if tt.answererFilter {
				answerArgs = append(answerArgs, "-from", "alice")
			}
			errc := make(chan error, 2)
			go func() {
				errc <- runPipe(ctx, answerArgs, bytes.NewReader(down), &bobOut, &bobLog)
			}()
			go func() {
				errc <- runPipe(ctx, []string{"-server", s.MetaURL, "-user", "alice", "-password-file", pwFile,
					"-register", "-peers", "bob", "-call", "bob", "-v"}, bytes.NewReader(up), &aliceOut, &aliceLog)
			}()
			for range 2 {
				if err := <-errc; err != nil {
					t.Errorf("runPipe: %v", err)
				}
			}
			if !bytes.Equal(bobOut.Bytes(), up) {
				t.Errorf("bob received %d bytes, want alice's %d", bobOut.Len(), len(up))
			}
			if !bytes.Equal(aliceOut.Bytes(), down) {
				t.Errorf("alice received %d bytes, want bob's %d", aliceOut.Len(), len(down))
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("alice's log:\n%s\nbob's log:\n%s", aliceLog.String(), bobLog.String())
			}
			if strings.Contains(aliceLog.String()+bobLog.String(), "sesameopen") {
				t.Error("a password was logged")
			}
		})
	}
}

func TestPipeFlags(t *testing.T) {
	t.Setenv("UMPLUG_PASSWORD", "")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no user", []string{"-call", "bob"}, "-user is required"},
		{"no mode", []string{"-user", "a"}, "exactly one of"},
		{"both modes", []string{"-user", "a", "-call", "b", "-answer"}, "exactly one of"},
		{"from without answer", []string{"-user", "a", "-call", "b", "-from", "c"}, "-from only"},
		{"self", []string{"-user", "a", "-call", "a"}, "yourself"},
		{"stray arg", []string{"-user", "a", "-answer", "x"}, "unexpected argument"},
		{"no password", []string{"-user", "a", "-answer"}, "no password"},
		{"negative reconnect", []string{"-user", "a", "-answer", "-reconnect", "-1s"}, "-reconnect must not be negative"},
		{"tiny buffer", []string{"-user", "a", "-answer", "-buffer", "1000"}, "-buffer must be at least"},
		{"missing password file", []string{"-user", "a", "-answer", "-password-file", "/nonexistent/pw"}, "password file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runPipe(context.Background(), tt.args, strings.NewReader(""), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("runPipe(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		var out bytes.Buffer
		if err := runPipe(context.Background(), []string{"-h"}, strings.NewReader(""), io.Discard, &out); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"UMPLUG_PASSWORD", "exactly once and in order", "-reconnect"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("help does not mention %q:\n%s", want, out.String())
			}
		}
	})
}

// TestPipeLingerHangsUpOnSilentPeer: alice's stream is delivered and
// acknowledged, bob's stdin stays open and silent: after -linger alice hangs
// up, and both exit 0 (bob's stdin had nothing unacknowledged), bob having
// written all of alice's bytes.
func TestPipeLingerHangsUpOnSilentPeer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := servertest.Start(t, nil)
	pwFile := pipeAccounts(ctx, t, s.URL)
	up := make([]byte, 200<<10)
	rand.Read(up)
	silent, silentW := io.Pipe() // bob's stdin: open, nothing comes
	defer silentW.Close()
	var bobOut bytes.Buffer
	var aliceLog, bobLog syncBuffer
	errc := make(chan error, 2)
	go func() {
		errc <- runPipe(ctx, []string{"-server", s.URL, "-user", "bob", "-password-file", pwFile, "-answer", "-v"},
			silent, &bobOut, &bobLog)
	}()
	go func() {
		errc <- runPipe(ctx, []string{"-server", s.URL, "-user", "alice", "-password-file", pwFile,
			"-peers", "bob", "-call", "bob", "-linger", "200ms", "-v"}, bytes.NewReader(up), io.Discard, &aliceLog)
	}()
	for range 2 {
		if err := <-errc; err != nil {
			t.Errorf("runPipe: %v", err)
		}
	}
	silentW.Close() // bob's stdin reader may finish now
	if !bytes.Equal(bobOut.Bytes(), up) {
		t.Errorf("bob received %d bytes, want alice's %d", bobOut.Len(), len(up))
	}
	if !strings.Contains(aliceLog.String(), "the peer's is idle, hanging up") {
		t.Errorf("alice did not hang up for -linger:\n%s", aliceLog.String())
	}
	if !strings.Contains(bobLog.String(), "peer hung up; everything read from stdin was acknowledged") {
		t.Errorf("bob did not see alice hang up:\n%s", bobLog.String())
	}
	if t.Failed() {
		t.Logf("alice's log:\n%s\nbob's log:\n%s", aliceLog.String(), bobLog.String())
	}
	checkPipeGoroutines(t)
}

// pipeAccounts registers alice and bob (bob with alice as a peer; alice's
// pipe adds bob) on the server at url and returns a password file for both.
func pipeAccounts(ctx context.Context, t *testing.T, url string) (pwFile string) {
	t.Helper()
	pwFile = filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("sesameopen\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Register(ctx, "alice", "sesameopen"); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(ctx, "bob", "sesameopen", "alice"); err != nil {
		t.Fatal(err)
	}
	return pwFile
}
