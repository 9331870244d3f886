package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/store/storetest"
	"github.com/user-media-plug/umplug/protocol"
)

// setNofile lowers the child's RLIMIT_NOFILE soft limit (Go raised it to
// the hard limit at start-up), as a small container or ulimit would.
func setNofile(v string) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: UMPLUG_TEST_NOFILE:", err)
		os.Exit(3)
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		fmt.Fprintln(os.Stderr, "child: getrlimit:", err)
		os.Exit(3)
	}
	rl.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		fmt.Fprintln(os.Stderr, "child: setrlimit:", err)
		os.Exit(3)
	}
}

// healthzFrom asks GET /healthz on a new keep-alive connection from source
// address src and leaves the connection open. Status 0: the server closed
// the connection without answering (refused at accept).
func healthzFrom(t *testing.T, src, addr string) (net.Conn, int) {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c, resp.StatusCode
}

// TestFDLimitKeepsServing: with RLIMIT_NOFILE lowered to 1600 in the server
// process, one address opening connections without end is refused at the
// per-address cap (half of the derived total 1600-512), accept never fails
// for lack of descriptors, and /healthz from another address answers 200.
// Before the connection limits, 19,981 connections from one address at the
// real limit made accept fail and /healthz from elsewhere time out.
func TestFDLimitKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a server process and opens a thousand connections")
	}
	const nofile = 1600
	const wantPerAddr = (nofile - 512) / 2
	srv := startChildEnv(t, []string{"UMPLUG_TEST_NOFILE=" + strconv.Itoa(nofile)}, "-data", t.TempDir())
	addr := strings.TrimPrefix(srv.url, "http://")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for len(held) < nofile {
		c, code := healthzFrom(t, "127.0.0.1", addr)
		if code == 0 {
			break
		}
		if code != http.StatusOK {
			t.Fatalf("connection %d: status %d", len(held)+1, code)
		}
		held = append(held, c)
	}
	if len(held) != wantPerAddr {
		t.Fatalf("127.0.0.1 held %d connections before a refusal; want the per-address cap %d", len(held), wantPerAddr)
	}
	c, code := healthzFrom(t, "127.0.0.2", addr)
	if code != http.StatusOK {
		t.Fatalf("/healthz from 127.0.0.2 while 127.0.0.1 is at its cap: status %d", code)
	}
	c.Close()
	// Closing connections frees their slots.
	for _, c := range held[:10] {
		c.Close()
	}
	held = held[10:]
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		c, code := healthzFrom(t, "127.0.0.1", addr)
		if code == http.StatusOK {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("127.0.0.1 still refused after closing some of its connections")
		}
		<-tick.C // the server sees the closes when it reads EOF
	}
	for _, l := range srv.logged() {
		if strings.Contains(l, "too many open files") || strings.Contains(l, "Accept error") {
			t.Fatalf("server: %s", l)
		}
	}
}

// TestStoreFailureKeepsServing (W9, the serve side): a server started on a
// data directory with a corrupted table block keeps running when a
// reg-user reads it: the client gets unavailable, /healthz 503, another
// connection is served, and after SIGTERM the process shuts down gracefully
// and exits with status 1 (the store had failed).
func TestStoreFailureKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a server process")
	}
	dir := t.TempDir()
	storetest.WriteCorruptTable(t, dir, "alice", "bob")
	srv := startChild(t, "-data", dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, srv.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var perr *protocol.Error
	if err := c.Register(ctx, "alice", "sesameopen"); !errors.As(err, &perr) || perr.Code != protocol.ErrUnavailable {
		t.Fatalf("reg-user over a corrupted block: %v; want unavailable", err)
	}
	addr := strings.TrimPrefix(srv.url, "http://")
	hc, code := healthzFrom(t, "127.0.0.1", addr)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz: %d; want 503", code)
	}
	hc.Close()
	c2, err := client.Dial(ctx, srv.url, nil)
	if err != nil {
		t.Fatalf("a new connection after the failure: %v", err)
	}
	defer c2.Close()
	if _, err := c2.Login(ctx, "bob", "sesameopen"); !errors.As(err, &perr) || perr.Code != protocol.ErrUnavailable {
		t.Fatalf("whoami after the failure: %v; want unavailable", err)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	err = srv.wait(t, 30*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v; want status 1", err)
	}
	found := false
	for _, l := range srv.logged() {
		if strings.Contains(l, "user store failed") {
			found = true
		}
	}
	if !found {
		t.Fatal("the store failure was not logged")
	}
}
