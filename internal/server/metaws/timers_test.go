package metaws

import (
	"math"
	"math/rand"
	"testing"
	"time"
)

// TestDeadlineHeap checks the heap after random sets, moves and removals:
// the earliest deadline at the root, every connection's index right, the
// runtime timer armed no later than the earliest deadline.
func TestDeadlineHeap(t *testing.T) {
	d := &deadlineHeap{armed: math.MaxInt64}
	defer func() {
		if d.t != nil {
			d.t.Stop()
		}
	}()
	base := now() + int64(time.Hour) // never due during the test
	rng := rand.New(rand.NewSource(1))
	conns := make([]*Conn, 200)
	for i := range conns {
		conns[i] = &Conn{}
	}
	check := func(step int) {
		t.Helper()
		n := 0
		for _, c := range conns {
			if c.hidx == 0 {
				continue
			}
			n++
			if i := int(c.hidx) - 1; i >= len(d.h) || d.h[i] != c {
				t.Fatalf("step %d: hidx %d does not point at the connection", step, c.hidx)
			}
		}
		if n != len(d.h) {
			t.Fatalf("step %d: %d connections in the heap, want %d", step, len(d.h), n)
		}
		for i := 1; i < len(d.h); i++ {
			if p := (i - 1) / 2; d.h[p].due > d.h[i].due {
				t.Fatalf("step %d: heap order broken at %d", step, i)
			}
		}
		if len(d.h) > 0 && d.armed > d.h[0].due {
			t.Fatalf("step %d: timer armed at %d, after the earliest deadline %d", step, d.armed, d.h[0].due)
		}
	}
	for step := 0; step < 5000; step++ {
		c := conns[rng.Intn(len(conns))]
		if rng.Intn(4) == 0 {
			d.remove(c)
		} else {
			d.set(c, base+rng.Int63n(int64(time.Minute)))
		}
		check(step)
	}
	for _, c := range conns {
		d.remove(c)
	}
	check(-1)
	if d.h != nil {
		t.Fatalf("empty heap keeps %d slots", cap(d.h))
	}
}

// TestDeadlineHeapFires: a deadline that passes starts the connection's
// tick, which (for an ended connection) calls the handler's Close.
func TestDeadlineHeapFires(t *testing.T) {
	d := &deadlineHeap{armed: math.MaxInt64}
	closed := make(chan struct{})
	c := &Conn{h: closeFunc(func() { close(closed) })}
	c.state.Store(stateEnded)
	d.set(c, now()+int64(10*time.Millisecond))
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline did not run the tick")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.h) != 0 || c.hidx != 0 {
		t.Fatalf("a fired deadline stays in the heap (%d, hidx %d)", len(d.h), c.hidx)
	}
}

type closeFunc func()

func (closeFunc) Handle([]byte) {}
func (f closeFunc) Close()      { f() }
