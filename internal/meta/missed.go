package meta

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// Missed calls (contract section 9; docs/protocol.md "Missed calls").
//
// A call is decided missed under s.mu, where its end is decided
// (dropCallLocked, and handleCall's offline answer), but written to the
// store by the background writer: nothing blocking runs under s.mu
// (invariant 1 of Server). The writer appends all records waiting for one
// callee with one synced write, then sends the live missed-call event to the
// callee's online devices, so an event always names a record that is already
// durable and listed by missed-calls. missed-calls first waits until every
// record decided before it is written (flush), so a client that saw the
// call's cancel or reject never gets a list without it.
//
// Abuse: a mutual peer who calls an offline user in a loop pays the message
// rate limit per call; its records for one callee coalesce into one fsync
// per writer round however many there are, at most maxPendingPerUser wait
// per callee (only the newest 100 are kept anyway) and maxPending in all,
// so neither the disk nor memory follows the attacker's rate.

// maxPendingPerUser and maxPending bound the records waiting for the writer.
const (
	maxPendingPerUser = protocol.MaxMissedCalls
	maxPending        = 100000
)

// bgWriter runs the store writes that must not delay the request that
// caused them: missed-call records, session touches (unsynced) and the
// deletion of expired or evicted sessions. A goroutine runs only while
// there is work; flush waits for the work queued before it.
type bgWriter struct {
	s *Server

	mu       sync.Mutex // guards the following
	missed   map[string][]store.MissedCall
	order    []string // callees with records, in arrival order
	pending  int      // records in missed
	touches  map[string]time.Time
	deletes  []string
	running  bool
	queued   uint64        // work items ever queued
	written  uint64        // work items done (or given up)
	progress chan struct{} // closed and replaced whenever written advances
}

func newBgWriter(s *Server) *bgWriter {
	return &bgWriter{s: s, missed: make(map[string][]store.MissedCall),
		touches: make(map[string]time.Time), progress: make(chan struct{})}
}

// startLocked counts one queued item and starts the goroutine if needed.
func (w *bgWriter) startLocked() {
	w.queued++
	if !w.running {
		w.running = true
		go w.run()
	}
}

// missedCall queues a missed-call record for callee. Never blocks.
func (w *bgWriter) missedCall(callee string, mc store.MissedCall) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.missed[callee]
	switch {
	case len(list) >= maxPendingPerUser:
		list = append(list[1:], mc) // only the newest are kept anyway
	case w.pending >= maxPending:
		w.s.log.Warn("missed call not recorded: too many waiting for the store", "callee", callee)
		return
	default:
		if len(list) == 0 {
			w.order = append(w.order, callee)
		}
		list = append(list, mc)
		w.pending++
	}
	w.missed[callee] = list
	w.startLocked()
}

// touchSession queues an unsynced last-use update. Never blocks.
func (w *bgWriter) touchSession(hash string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.touches[hash] = at
	w.startLocked()
}

// deleteSession queues the deletion of a session. Never blocks.
func (w *bgWriter) deleteSession(hash string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deletes = append(w.deletes, hash)
	w.startLocked()
}

// flush waits until everything queued before it is written, or ctx ends.
func (w *bgWriter) flush(ctx context.Context) error {
	w.mu.Lock()
	target := w.queued
	w.mu.Unlock()
	for {
		w.mu.Lock()
		done, ch := w.written >= target, w.progress
		w.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// run writes rounds of queued work until none is left.
func (w *bgWriter) run() {
	for {
		w.mu.Lock()
		if w.queued == w.written {
			w.running = false
			w.mu.Unlock()
			return
		}
		target := w.queued
		missed, order := w.missed, w.order
		touches, deletes := w.touches, w.deletes
		w.missed, w.order, w.pending = make(map[string][]store.MissedCall), nil, 0
		w.touches, w.deletes = make(map[string]time.Time), nil
		w.mu.Unlock()

		w.round(missed, order, touches, deletes)

		w.mu.Lock()
		w.written = target
		close(w.progress)
		w.progress = make(chan struct{})
		w.mu.Unlock()
	}
}

func (w *bgWriter) round(missed map[string][]store.MissedCall, order []string, touches map[string]time.Time, deletes []string) {
	s := w.s
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	for _, h := range deletes {
		if err := s.cfg.Store.DeleteSession(ctx, h); err != nil {
			s.log.Warn("could not delete an expired session", "err", err)
		}
	}
	for h, at := range touches {
		if err := s.cfg.Store.TouchSession(ctx, h, at); err != nil {
			s.log.Warn("could not record a session's last use", "err", err)
		}
	}
	// Callees are written in parallel (bounded) so that Pebble's group
	// commit merges their fsyncs: a round costs about one fsync however
	// many callees it holds (a shutdown ending thousands of ringing calls).
	sem := make(chan struct{}, appendParallel)
	var wg sync.WaitGroup
	for _, callee := range order {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			w.appendAndTell(ctx, callee, missed[callee])
		})
	}
	wg.Wait()
}

// appendParallel bounds the concurrent missed-call appends of one round.
const appendParallel = 32

// appendAndTell makes callee's new missed calls durable, then tells the
// callee's online devices.
func (w *bgWriter) appendAndTell(ctx context.Context, callee string, list []store.MissedCall) {
	s := w.s
	err := s.cfg.Store.AppendMissedCalls(ctx, callee, list, protocol.MaxMissedCalls)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return // the callee was deleted meanwhile
	case err != nil:
		s.log.Error("could not record missed calls", "callee", callee, "calls", len(list), "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if us := s.users[callee]; us != nil {
		for _, mc := range list {
			b := encodeEvent(protocol.Event{Type: protocol.TypeMissedCall, User: mc.User, Peer: callee,
				At: formatAt(mc.At), Reason: mc.Reason})
			for _, d := range us.devices {
				d.send(b)
			}
		}
	}
}

// formatAt is the wire form of a missed call's time: RFC 3339 in UTC with
// milliseconds.
func formatAt(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// missedReasons are the ends of a ringing call that make it a missed call
// for its callee. rejected and answered-elsewhere are not among them.
var missedReasons = map[string]bool{
	protocol.ReasonTimeout:      true,
	protocol.ReasonCancelled:    true,
	protocol.ReasonDisconnected: true,
	protocol.ReasonOffline:      true,
	protocol.ReasonShutdown:     true,
}

// recordMissed records a missed call from caller for callee, decided
// now. The caller holds s.mu (or nothing): it only queues.
func (s *Server) recordMissed(caller, callee, reason string) {
	if !missedReasons[reason] {
		return
	}
	s.bg.missedCall(callee, store.MissedCall{User: caller, At: s.cfg.Clock.Now().UTC(), Reason: reason})
}

// handleMissedCalls lists the user's missed calls, newest first, and with
// clear empties the list in the same store step.
func (x *Session) handleMissedCalls(req *protocol.Request) {
	s := x.s
	ctx, cancel := x.ctx()
	defer cancel()
	if err := s.bg.flush(ctx); err != nil {
		x.unavailable(req, err)
		return
	}
	list, err := s.cfg.Store.MissedCalls(ctx, x.user, req.Clear)
	if err != nil {
		x.unavailable(req, err)
		return
	}
	out := make([]protocol.MissedCall, 0, len(list))
	for _, mc := range slices.Backward(list) {
		out = append(out, protocol.MissedCall{User: mc.User, At: formatAt(mc.At), Reason: mc.Reason})
	}
	x.reply(req, protocol.Response{OK: true, Calls: mustJSON(out)})
}
