// Package testlog gives tests a *slog.Logger that writes through t.Log, so
// a component's logs show with the test that failed and stay quiet otherwise
// (tailscale's derp tests do the same). Once the test's cleanups have run it
// drops lines instead: testing panics on a t.Log after the test has ended,
// and a goroutine winding down may still log.
package testlog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// New returns a debug-level text logger writing through t.Log until the
// test's cleanups run. Call it before starting what logs, so that its
// cleanup runs after theirs.
func New(t testing.TB) *slog.Logger {
	w := &writer{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writer struct {
	t      testing.TB
	mu     sync.Mutex // guards closed, and is held across t.Log
	closed bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *writer) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
