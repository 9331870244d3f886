package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/protocol"
)

// TestMain lets a test run this very binary as the umplug server in a child
// process (UMPLUG_TEST_CHILD=1), so crash and signal tests exercise the real
// main path, Pebble files and all.
func TestMain(m *testing.M) {
	if os.Getenv("UMPLUG_TEST_CHILD") == "stuck-shutdown" {
		// The real signal context, and a shutdown that never finishes.
		ctx, stop := signalContext()
		defer stop()
		fmt.Println("ready")
		<-ctx.Done()
		fmt.Println("shutting down")
		select {}
	}
	if os.Getenv("UMPLUG_TEST_CHILD") == "1" {
		if n := os.Getenv("UMPLUG_TEST_NOFILE"); n != "" {
			setNofile(n) // serve_limits_test.go
		}
		ctx, stop := signalContext()
		defer stop()
		if err := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "umplug:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a umplug server running in a child process.
type child struct {
	cmd  *exec.Cmd
	url  string
	done chan error

	mu  sync.Mutex // guards log
	log []string   // its stderr lines
}

// logged returns the child's stderr so far.
func (c *child) logged() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

var servingRe = regexp.MustCompile(`msg=serving addr=(\S+)`)

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	return startChildEnv(t, nil, args...)
}

// startChildEnv is startChild with extra environment variables.
func startChildEnv(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"serve", "-addr", "127.0.0.1:0",
		"-ice-udp-port", "0", "-ice-tcp-port", "0"}, args...)...) // ICE on free ports: children run side by side
	cmd.Env = append(append(os.Environ(), "UMPLUG_TEST_CHILD=1"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.mu.Lock()
			c.log = append(c.log, sc.Text())
			c.mu.Unlock()
			if m := servingRe.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		io.Copy(io.Discard, stderr)
		c.done <- cmd.Wait()
	}()
	select {
	case a := <-addr:
		c.url = "http://" + a
	case err := <-c.done:
		t.Fatalf("server exited before serving: %v", err)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("server did not start within 30s")
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return c
}

func (c *child) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(within):
		t.Fatalf("server still running after %v", within)
		return nil
	}
}

// TestCrashKeepsAcknowledgedUsers registers users as fast as the server
// takes them, kills it with SIGKILL mid-stream, restarts it on the same
// Pebble directory and logs in as every user whose registration was
// acknowledged: ok:true means durable.
func TestCrashKeepsAcknowledgedUsers(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns server processes")
	}
	dir := t.TempDir()
	srv := startChild(t, "-data", dir, "-registrations-per-minute", "100000")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const want = 30 // acknowledged registrations before the kill
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	enough := make(chan struct{})
	var once sync.Once
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := client.Dial(ctx, srv.url, nil)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer c.Close()
			for i := 0; ; i++ {
				name := fmt.Sprintf("crash-%d-%d", w, i)
				if err := c.Register(ctx, name, "sesameopen"); err != nil {
					return // the kill ends the stream
				}
				mu.Lock()
				acked = append(acked, name)
				if len(acked) >= want {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}(w)
	}
	select {
	case <-enough:
	case <-ctx.Done():
		t.Fatal("registrations too slow")
	}
	srv.cmd.Process.Signal(syscall.SIGKILL) // registrations are still in flight
	srv.wait(t, 10*time.Second)
	wg.Wait()
	mu.Lock()
	names := append([]string(nil), acked...)
	mu.Unlock()
	t.Logf("%d registrations acknowledged before SIGKILL", len(names))

	srv2 := startChild(t, "-data", dir)
	for _, name := range names {
		c, err := client.Dial(ctx, srv2.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Login(ctx, name, "sesameopen"); err != nil {
			t.Errorf("acknowledged user %s lost: %v", name, err)
		}
		c.Close()
	}
}

// TestGracefulShutdown: SIGTERM ends calls with reason shutdown, tells the
// devices, closes their connections and exits 0.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns server processes")
	}
	srv := startChild(t, "-data", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := dialLogin(ctx, t, srv.url, "alice"), dialLogin(ctx, t, srv.url, "bob", "alice")
	if err := a.AddPeers(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	tx, err := a.Call(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, b, protocol.TypeCall)
	if err := b.Accept(ctx, "alice", tx); err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, a, protocol.TypeForceCall)
	waitEvent(ctx, t, b, protocol.TypeForceCall)

	srv.cmd.Process.Signal(syscall.SIGTERM)
	for _, c := range []*client.Client{a, b} {
		ev := waitEvent(ctx, t, c, protocol.TypeUnpair)
		if ev.Reason != protocol.ReasonShutdown {
			t.Fatalf("unpair reason %q", ev.Reason)
		}
		select {
		case <-c.Done():
		case <-ctx.Done():
			t.Fatal("connection not closed")
		}
	}
	if err := srv.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
}

func dialLogin(ctx context.Context, t *testing.T, url, name string, peers ...string) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Register(ctx, name, "sesameopen", peers...); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(ctx, name, "sesameopen"); err != nil {
		t.Fatal(err)
	}
	return c
}

func waitEvent(ctx context.Context, t *testing.T, c *client.Client, typ string) protocol.Event {
	t.Helper()
	ev, err := c.Next(ctx, typ)
	if err != nil {
		t.Fatalf("%s: %v", c.User(), err)
	}
	return ev
}

// TestSecondSignalForcesExit: the first SIGTERM starts a graceful shutdown;
// if that hangs, a second one ends the process at once.
func TestSecondSignalForcesExit(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "UMPLUG_TEST_CHILD=stuck-shutdown")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(out)
	expectLine := func(want string) {
		t.Helper()
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("child said %q, want %q (%v)", lines.Text(), want, lines.Err())
		}
	}
	expectLine("ready")
	cmd.Process.Signal(syscall.SIGTERM)
	expectLine("shutting down")
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Fatalf("child ended with %v, want killed by SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second SIGTERM did not end the process")
	}
}
