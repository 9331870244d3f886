package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/user-media-plug/umplug/internal/store"
)

// Shutdown stops the service in phases, so that one stalled HTTP client
// cannot use up the time meant for telling devices (it used to: the HTTP
// server's Shutdown ran first and waited for it until the shared deadline,
// and devices in calls then got close 1001 without `unpair shutdown`):
//
//  0. stop accepting: the listeners from Listen are closed;
//  1. devices: every call ends with reason shutdown (`unpair` to both
//     sides, `cancel` to a ringing callee), every device is told and its
//     /meta connection closed with 1001 once its queue is written — with
//     half of the time left in ctx;
//  2. media: relays and /media connections still in their hello close;
//  3. HTTP: http.Server.Shutdown with what is left (idle keep-alive
//     connections close at once, requests in progress may finish), then
//     whatever remains is cut.
//
// The store is the caller's: close it after Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()

	dctx, cancel := share(ctx, 2)
	merr := s.meta.Shutdown(dctx)
	cancel()

	var derr error
	mediaDone := make(chan struct{})
	go func() {
		s.media.Close() // returns once every ServeConn has returned
		close(mediaDone)
	}()
	select {
	case <-mediaDone:
	case <-ctx.Done():
		derr = fmt.Errorf("server: shutdown: media: %w", ctx.Err())
	}

	herr := s.hs.Shutdown(ctx)
	if herr != nil {
		_ = s.hs.Close()
		herr = fmt.Errorf("server: shutdown: http: %w", herr)
	}
	return errors.Join(merr, derr, herr)
}

// share returns a context with 1/n of the time left in ctx (all of it when
// ctx has no deadline).
func share(ctx context.Context, n int) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, time.Until(d)/time.Duration(n))
}

func (s *Server) closeListeners() {
	s.lnMu.Lock()
	ls := s.listeners
	s.listeners = nil
	s.lnMu.Unlock()
	for _, l := range ls {
		_ = l.Close()
	}
}

// onceListener closes its listener once; later Closes (http.Server's
// Shutdown after ours) return nil instead of "use of closed connection".
type onceListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// serveHealthz answers 200 "ok", or 503 while the user store has failed
// (every login and registration answers `unavailable` then; calls in
// progress go on). The cause is logged, not shown here.
func (s *Server) serveHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := store.Health(s.cfg.Meta.Store); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "unavailable: user store failed\n")
		return
	}
	io.WriteString(w, "ok\n")
}
