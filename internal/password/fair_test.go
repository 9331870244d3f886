package password

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// waiting returns how many jobs wait for a slot.
func (h *Hasher) waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, q := range h.queues {
		n += len(q)
	}
	return n
}

// newTestHasher returns a Hasher that reports every job that starts waiting.
func newTestHasher(slots int) *Hasher {
	h := New(Config{Params: cheap, MaxConcurrent: slots})
	q := make(chan struct{}, 1024)
	h.queued, h.queuedRecv = q, q
	return h
}

// waitQueued waits until n jobs wait for a slot.
func waitQueued(t *testing.T, h *Hasher, n int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for h.waiting() < n {
		select {
		case <-h.queuedRecv:
		case <-deadline.C:
			t.Fatalf("%d jobs queued, want %d", h.waiting(), n)
		}
	}
}

// TestFairQueue is the W2 regression: 200 logins queued by address A must not
// delay one login from address B by 200 hashes. With every slot held, A
// queues 200 jobs and then B one; as slots are freed one at a time, B's job
// must be among the first two served.
func TestFairQueue(t *testing.T) {
	for _, slots := range []int{1, 2} {
		t.Run(fmt.Sprint(slots, " slots"), func(t *testing.T) {
			ctx := testCtx(t)
			h := newTestHasher(slots)
			for range slots {
				if err := h.acquire(ctx, "holder"); err != nil {
					t.Fatal(err)
				}
			}
			served := make(chan string, 201)
			var wg sync.WaitGroup
			job := func(key string) {
				defer wg.Done()
				if err := h.acquire(ctx, key); err != nil {
					t.Error(err)
					return
				}
				served <- key
			}
			for range 200 {
				wg.Add(1)
				go job("A")
			}
			waitQueued(t, h, 200)
			wg.Add(1)
			go job("B")
			waitQueued(t, h, 201)

			// Free slots one by one; each served job keeps its slot until
			// the next release, so the order is exactly the queue's.
			var order []string
			for range 201 {
				h.release()
				order = append(order, <-served)
			}
			wg.Wait()
			for range slots {
				h.release()
			}
			if order[0] != "B" && order[1] != "B" {
				t.Fatalf("B served at position %d, want 0 or 1", indexOf(order, "B"))
			}
			if h.running != 0 || h.waiting() != 0 || len(h.ring) != 0 {
				t.Fatalf("after all jobs: running %d, waiting %d, ring %v", h.running, h.waiting(), h.ring)
			}
		})
	}
}

// TestFairRoundRobin: three keys with queued jobs are served in turn, each
// once per round, whatever their queue lengths.
func TestFairRoundRobin(t *testing.T) {
	ctx := testCtx(t)
	h := newTestHasher(1)
	if err := h.acquire(ctx, "holder"); err != nil {
		t.Fatal(err)
	}
	served := make(chan string, 9)
	n := 0
	for _, k := range []struct {
		key  string
		jobs int
	}{{"A", 5}, {"B", 2}, {"C", 2}} {
		for range k.jobs {
			go func() {
				if err := h.acquire(ctx, k.key); err != nil {
					t.Error(err)
					return
				}
				served <- k.key
			}()
			n++
			waitQueued(t, h, n) // fixes the arrival order
		}
	}
	var order string
	for range n {
		h.release()
		order += <-served
	}
	h.release()
	if want := "ABCABCAAA"; order != want {
		t.Fatalf("service order %s, want %s", order, want)
	}
}

// TestFairCancel: a waiter whose context ends leaves the queue, and a slot
// granted just as it gave up goes to the next waiter instead of leaking.
func TestFairCancel(t *testing.T) {
	ctx := testCtx(t)
	h := newTestHasher(1)
	if err := h.acquire(ctx, "holder"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- h.acquire(cctx, "A") }()
	waitQueued(t, h, 1)
	got := make(chan error, 1)
	go func() { got <- h.acquire(ctx, "B") }()
	waitQueued(t, h, 2)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	h.release() // the only slot goes to B
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	h.release()
	if h.running != 0 || h.waiting() != 0 || len(h.ring) != 0 {
		t.Fatalf("running %d, waiting %d, ring %v", h.running, h.waiting(), h.ring)
	}
}

// TestRunsCounts: every derivation is counted, a malformed hash is not.
func TestRunsCounts(t *testing.T) {
	ctx := testCtx(t)
	h := New(Config{Params: cheap})
	phc, err := h.HashFor(ctx, "a", "sesameopen")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = h.VerifyFor(ctx, "a", phc, "wrong")
	h.VerifyUnknownFor(ctx, "b", "x")
	_, _ = h.Verify(ctx, "garbage", "x")
	if got := h.Runs(); got != 3 {
		t.Fatalf("Runs = %d, want 3", got)
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
