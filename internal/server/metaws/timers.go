package metaws

import (
	"math"
	"sync"
	"time"
)

// deadlines is the process's one timer for every connection's next
// deadline (ping, idle timeout, frame deadline, close grace): a min-heap of
// connections by when their tick is due, and one runtime timer set to the
// earliest. A runtime timer per connection would cost 128 bytes of heap (the
// time.Timer and its callback) and a slot in the runtime's timer heap for
// each idle connection; this costs a heap slot (8 bytes) and two fields
// of Conn (its index in the heap).
//
// When a deadline passes, the connection's tick runs on a goroutine of its
// own, as a time.AfterFunc callback would. A tick may run early or more than
// once (a deadline moved while it was being started): tick only acts on
// what is due at the time it runs, and sets the next deadline.
var deadlines = &deadlineHeap{armed: math.MaxInt64}

type deadlineHeap struct {
	mu    sync.Mutex // guards the following and Conn.hidx; Conn.due is written holding it and Conn.mu
	h     []*Conn    // min-heap by Conn.due
	t     *time.Timer
	armed int64 // now() at which t fires; MaxInt64: not armed
}

// set makes c's tick due at `at` (a now() time), replacing any earlier
// deadline of c. The caller holds c.mu.
func (d *deadlineHeap) set(c *Conn, at int64) {
	d.mu.Lock()
	c.due = at
	if c.hidx == 0 {
		d.h = append(d.h, c)
		c.hidx = int32(len(d.h))
		d.up(len(d.h) - 1)
	} else {
		i := int(c.hidx) - 1
		if !d.up(i) {
			d.down(i)
		}
	}
	if at < d.armed {
		d.armLocked(at)
	}
	d.mu.Unlock()
}

// remove forgets c's deadline.
func (d *deadlineHeap) remove(c *Conn) {
	d.mu.Lock()
	if c.hidx != 0 {
		i := int(c.hidx) - 1
		last := len(d.h) - 1
		if i != last {
			d.swap(i, last)
		}
		d.h[last] = nil
		d.h = d.h[:last]
		c.hidx = 0
		if i != last {
			if !d.up(i) {
				d.down(i)
			}
		}
		if len(d.h) == 0 {
			d.h = nil // let a large heap go once every connection has ended
		}
	}
	d.mu.Unlock()
}

// armLocked sets the runtime timer to fire at `at`.
func (d *deadlineHeap) armLocked(at int64) {
	d.armed = at
	wait := time.Duration(max(at-now(), 0))
	if d.t == nil {
		d.t = time.AfterFunc(wait, d.fire)
		return
	}
	d.t.Reset(wait)
}

// fire starts the tick of every connection whose deadline has passed and
// sets the timer to the next deadline.
func (d *deadlineHeap) fire() {
	var due []*Conn
	d.mu.Lock()
	t := now()
	for len(d.h) > 0 && d.h[0].due <= t {
		c := d.h[0]
		last := len(d.h) - 1
		d.swap(0, last)
		d.h[last] = nil
		d.h = d.h[:last]
		c.hidx = 0
		if last > 0 {
			d.down(0)
		}
		due = append(due, c)
	}
	d.armed = math.MaxInt64
	if len(d.h) > 0 {
		d.armLocked(d.h[0].due)
	} else {
		d.h = nil
	}
	d.mu.Unlock()
	for _, c := range due {
		go c.tick()
	}
}

func (d *deadlineHeap) swap(i, j int) {
	d.h[i], d.h[j] = d.h[j], d.h[i]
	d.h[i].hidx = int32(i + 1)
	d.h[j].hidx = int32(j + 1)
}

// up moves element i towards the root; it reports whether it moved.
func (d *deadlineHeap) up(i int) bool {
	moved := false
	for i > 0 {
		p := (i - 1) / 2
		if d.h[p].due <= d.h[i].due {
			break
		}
		d.swap(i, p)
		i = p
		moved = true
	}
	return moved
}

// down moves element i towards the leaves.
func (d *deadlineHeap) down(i int) {
	n := len(d.h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && d.h[r].due < d.h[l].due {
			m = r
		}
		if d.h[i].due <= d.h[m].due {
			return
		}
		d.swap(i, m)
		i = m
	}
}
