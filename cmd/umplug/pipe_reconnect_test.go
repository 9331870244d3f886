package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/faultproxy"
	"github.com/user-media-plug/umplug/internal/servertest"
)

// watchedLog is a pipe's log that a test can wait on.
type watchedLog struct {
	mu      sync.Mutex // guards b and changed
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newWatchedLog() *watchedLog { return &watchedLog{changed: make(chan struct{})} }

func (w *watchedLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
	return w.b.Write(p)
}

func (w *watchedLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// waitFor waits until the log contains s.
func (w *watchedLog) waitFor(ctx context.Context, t *testing.T, s string) {
	t.Helper()
	for {
		w.mu.Lock()
		ok, changed := strings.Contains(w.b.String(), s), w.changed
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("log never said %q: %v\n%s", s, ctx.Err(), w.String())
		}
	}
}

// gatedWriter is a pipe's stdout that takes limit bytes, then blocks (a
// slow consumer: what the peer sends meanwhile is in flight,
// unacknowledged) until opened.
type gatedWriter struct {
	limit    int
	stalled  chan struct{} // closed when a write reached the limit
	gate     chan struct{} // closed by open
	openOnce sync.Once

	mu sync.Mutex // guards b and once
	b  bytes.Buffer
}

func newGatedWriter(t *testing.T, limit int) *gatedWriter {
	w := &gatedWriter{limit: limit, stalled: make(chan struct{}), gate: make(chan struct{})}
	t.Cleanup(w.open)
	return w
}

func (w *gatedWriter) open() { w.openOnce.Do(func() { close(w.gate) }) }

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	room := w.limit - w.b.Len()
	if room >= len(p) {
		defer w.mu.Unlock()
		return w.b.Write(p)
	}
	select {
	case <-w.gate:
		defer w.mu.Unlock()
		return w.b.Write(p)
	default:
	}
	w.b.Write(p[:max(room, 0)])
	select {
	case <-w.stalled:
	default:
		close(w.stalled)
	}
	w.mu.Unlock()
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p[max(room, 0):])
	return len(p), nil
}

func (w *gatedWriter) Bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.b.Bytes())
}

// pipePair is a caller (alice) and an answerer (bob) running umplug pipe
// against each other with random data both ways.
type pipePair struct {
	up, down           []byte // alice's stdin, bob's stdin
	aliceOut, bobOut   *gatedWriter
	aliceLog, bobLog   *watchedLog
	errc               chan error
	aliceArgs, bobArgs []string
}

// startPipes registers alice and bob (mutual peers) on the server at url
// and runs both pipes: alice through aliceURL, bob directly. Bob's stdout
// blocks after bobGate bytes until finish.
func startPipes(ctx context.Context, t *testing.T, url, aliceURL string, upBytes, downBytes, bobGate int, extra ...string) *pipePair {
	t.Helper()
	pwFile := pipeAccounts(ctx, t, url)
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(ctx, "alice", "sesameopen"); err != nil {
		t.Fatal(err)
	}
	if err := c.AddPeers(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	c.Close()

	p := &pipePair{up: make([]byte, upBytes), down: make([]byte, downBytes),
		aliceOut: newGatedWriter(t, downBytes), bobOut: newGatedWriter(t, bobGate),
		aliceLog: newWatchedLog(), bobLog: newWatchedLog(), errc: make(chan error, 2)}
	rand.Read(p.up)
	rand.Read(p.down)
	common := append([]string{"-password-file", pwFile, "-v"}, extra...)
	p.bobArgs = append([]string{"-server", url, "-user", "bob", "-answer"}, common...)
	p.aliceArgs = append([]string{"-server", aliceURL, "-user", "alice", "-call", "bob"}, common...)
	go func() { p.errc <- runPipe(ctx, p.bobArgs, bytes.NewReader(p.down), p.bobOut, p.bobLog) }()
	go func() { p.errc <- runPipe(ctx, p.aliceArgs, bytes.NewReader(p.up), p.aliceOut, p.aliceLog) }()
	return p
}

// waitStalled waits until bob has blocked his stdout. Then alice's stream
// is in flight (her -buffer full of unacknowledged bytes, more in TCP), and
// so is bob's: alice's acknowledgements of it wait behind her data, which
// bob no longer reads.
func (p *pipePair) waitStalled(ctx context.Context, t *testing.T) {
	t.Helper()
	select {
	case <-p.bobOut.stalled:
	case <-ctx.Done():
		t.Fatalf("the stream did not reach the gate: %v\nalice:\n%s\nbob:\n%s", ctx.Err(), p.aliceLog, p.bobLog)
	}
}

// finish opens the gates, waits for both pipes and compares the bytes.
func (p *pipePair) finish(ctx context.Context, t *testing.T) {
	t.Helper()
	p.aliceOut.open()
	p.bobOut.open()
	for range 2 {
		select {
		case err := <-p.errc:
			if err != nil {
				t.Errorf("runPipe: %v", err)
			}
		case <-ctx.Done():
			t.Fatalf("pipes still running: %v\nalice:\n%s\nbob:\n%s", ctx.Err(), p.aliceLog, p.bobLog)
		}
	}
	if got := p.bobOut.Bytes(); !bytes.Equal(got, p.up) {
		t.Errorf("bob wrote %d bytes, want alice's %d exactly (a prefix of them: %v)", len(got), len(p.up), bytes.HasPrefix(p.up, got))
	}
	if got := p.aliceOut.Bytes(); !bytes.Equal(got, p.down) {
		t.Errorf("alice wrote %d bytes, want bob's %d exactly (a prefix of them: %v)", len(got), len(p.down), bytes.HasPrefix(p.down, got))
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("alice's log:\n%s\nbob's log:\n%s", p.aliceLog, p.bobLog)
	}
	checkPipeGoroutines(t)
}

// checkPipeGoroutines fails if goroutines of a stream or a pipe run remain
// once runPipe returned (allowing 5 s for them to finish returning).
func checkPipeGoroutines(t *testing.T) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		var left []string
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "cmd/umplug.(*stream)") || strings.Contains(g, "cmd/umplug.(*piper)") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left behind by runPipe:\n%s", strings.Join(left, "\n\n"))
		}
		<-tick.C
	}
}

// TestPipeResumesAfterDrop: alice's connections (meta and media) are reset
// mid-stream, with megabytes in flight (bob's stdout stalled). Back within
// the server's grace window, she resumes the same call (same device; bob is
// told reconnecting, then resumed, and the call never ends); back after it,
// bob's call has ended (disconnected) and alice calls again. With her
// /media alone cut, the server keeps the call and gives her a fresh ticket.
// Each way both streams arrive exactly.
func TestPipeResumesAfterDrop(t *testing.T) {
	tests := []struct {
		name      string
		grace     time.Duration
		mediaOnly bool   // cut alice's /media only: /meta stays
		awayTill  string // what bob's log says before alice may come back
		resumed   bool
	}{
		{name: "within the grace window", grace: time.Minute, awayTill: `msg="peer reconnecting"`, resumed: true},
		{name: "after the grace window", grace: 300 * time.Millisecond, awayTill: "reason=disconnected"},
		{name: "media only", grace: time.Minute, mediaOnly: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			srv := servertest.Start(t, &servertest.Options{ResumeGrace: tt.grace})
			proxy := faultproxy.New(t, srv.HTTP.Listener.Addr().String())
			p := startPipes(ctx, t, srv.URL, proxy.URL(), 8<<20, 4<<20, 1<<20, "-buffer", "1048576")
			p.waitStalled(ctx, t)

			if tt.mediaOnly {
				// The server keeps the call and gives alice a fresh ticket
				// on her /meta at once.
				proxy.CutMedia()
				p.aliceLog.waitFor(ctx, t, `msg="fresh force-call: new media connection"`)
				p.finish(ctx, t)
				if strings.Contains(p.aliceLog.String(), "msg=reconnected") {
					t.Error("alice reconnected /meta, which was never cut")
				}
				if n := strings.Count(p.bobLog.String(), `msg="accepted call"`); n != 1 {
					t.Errorf("bob accepted %d calls, want 1", n)
				}
				return
			}
			proxy.Cut()
			p.bobLog.waitFor(ctx, t, tt.awayTill)
			proxy.Restore()
			p.aliceLog.waitFor(ctx, t, "msg=reconnected")
			p.finish(ctx, t)

			wantCalls := 2
			if tt.resumed {
				wantCalls = 1
				if !strings.Contains(p.bobLog.String(), `msg="peer resumed"`) {
					t.Error("bob was not told that alice resumed")
				}
			}
			if got := strings.Contains(p.aliceLog.String(), "resumed=true"); got != tt.resumed {
				t.Errorf("alice resumed: %v, want %v", got, tt.resumed)
			}
			if n := strings.Count(p.bobLog.String(), `msg="accepted call"`); n != wantCalls {
				t.Errorf("bob accepted %d calls, want %d", n, wantCalls)
			}
		})
	}
}

// TestPipeSurvivesServerRestart: a real server (child process, Pebble on
// disk) is stopped mid-stream, with megabytes in flight (bob's stdout
// stalled), and started again on the same data and port; both pipes log in
// again with their sessions, alice calls again, bob accepts, and each
// stream goes on from what its receiver had written: the outputs equal the
// inputs exactly. SIGTERM: the calls end with reason shutdown first;
// SIGKILL: the connections just die.
func TestPipeSurvivesServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns server processes")
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			dir := t.TempDir()
			srv := startChild(t, "-data", dir)
			p := startPipes(ctx, t, srv.url, srv.url, 6<<20, 4<<20, 1<<20, "-buffer", "1048576", "-reconnect", "90s")
			p.waitStalled(ctx, t)

			srv.cmd.Process.Signal(sig)
			if err := srv.wait(t, 30*time.Second); err != nil && sig == syscall.SIGTERM {
				t.Fatalf("server exit: %v", err)
			}
			startChild(t, "-data", dir, "-addr", strings.TrimPrefix(srv.url, "http://"))
			p.finish(ctx, t)

			for name, log := range map[string]*watchedLog{"alice": p.aliceLog, "bob": p.bobLog} {
				if sig == syscall.SIGTERM && !strings.Contains(log.String(), "reason=shutdown") {
					t.Errorf("%s's log does not show the shutdown", name)
				}
				if !strings.Contains(log.String(), "msg=reconnected") {
					t.Errorf("%s's log does not show the reconnect", name)
				}
			}
			if n := strings.Count(p.bobLog.String(), `msg="accepted call"`); n != 2 {
				t.Errorf("bob accepted %d calls, want 2 (the call again after the restart)", n)
			}
		})
	}
}

// TestPipeGivesUpAfterReconnect: alice's network stays down; after
// -reconnect both pipes give up with an error that says how far they got,
// and what each wrote is a prefix of what the other read: nothing wrong,
// nothing twice.
func TestPipeGivesUpAfterReconnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := servertest.Start(t, &servertest.Options{ResumeGrace: 300 * time.Millisecond})
	proxy := faultproxy.New(t, srv.HTTP.Listener.Addr().String())
	p := startPipes(ctx, t, srv.URL, proxy.URL(), 8<<20, 4<<20, 1<<20, "-buffer", "1048576", "-reconnect", "1s")
	p.waitStalled(ctx, t)
	proxy.Cut() // for good
	p.bobOut.open()
	for range 2 {
		select {
		case err := <-p.errc:
			if err == nil || !strings.Contains(err.Error(), "within -reconnect 1s") || !strings.Contains(err.Error(), "acknowledged") {
				t.Errorf("runPipe: %v; want it to give up after -reconnect, saying how far it got", err)
			}
		case <-ctx.Done():
			t.Fatalf("pipes still running: %v\nalice:\n%s\nbob:\n%s", ctx.Err(), p.aliceLog, p.bobLog)
		}
	}
	if got := p.bobOut.Bytes(); len(got) == 0 || !bytes.HasPrefix(p.up, got) {
		t.Errorf("bob wrote %d bytes, not a prefix of alice's stream", len(got))
	}
	if got := p.aliceOut.Bytes(); !bytes.HasPrefix(p.down, got) {
		t.Errorf("alice wrote %d bytes, not a prefix of bob's stream", len(got))
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("alice's log:\n%s\nbob's log:\n%s", p.aliceLog, p.bobLog)
	}
	checkPipeGoroutines(t)
}
