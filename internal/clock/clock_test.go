package clock

import (
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	c := NewFake()
	start := c.Now()
	var fired []string
	c.AfterFunc(2*time.Second, func() { fired = append(fired, "b") })
	c.AfterFunc(time.Second, func() { fired = append(fired, "a") })
	stopped := c.AfterFunc(time.Second, func() { fired = append(fired, "x") })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop must report true once")
	}
	c.Advance(999 * time.Millisecond)
	if len(fired) != 0 {
		t.Fatalf("fired early: %v", fired)
	}
	c.Advance(2 * time.Second)
	if len(fired) != 2 || fired[0] != "a" || fired[1] != "b" {
		t.Fatalf("fired %v", fired)
	}
	if got := c.Now().Sub(start); got != 2999*time.Millisecond {
		t.Fatalf("now advanced by %v", got)
	}
	if c.Pending() != 0 {
		t.Fatal("timers left")
	}
	// A timer scheduled from a callback fires within the same Advance if due.
	c.AfterFunc(time.Second, func() { c.AfterFunc(time.Second, func() { fired = append(fired, "c") }) })
	c.Advance(3 * time.Second)
	if len(fired) != 3 {
		t.Fatalf("chained timer: %v", fired)
	}
}
