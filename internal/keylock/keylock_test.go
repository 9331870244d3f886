package keylock

import (
	"sync"
	"testing"
)

// TestLockSerialises: holders of one key never overlap, and a waiter is
// reported through Contended before it blocks.
func TestLockSerialises(t *testing.T) {
	s := New()
	waiting := make(chan string, 1)
	s.Contended = func(k string) { waiting <- k }
	unlock := s.Lock("alice")
	got := make(chan struct{})
	go func() {
		defer s.Lock("alice")()
		close(got)
	}()
	if k := <-waiting; k != "alice" {
		t.Fatalf("Contended(%q), want alice", k)
	}
	select {
	case <-got:
		t.Fatal("second holder got the lock while the first held it")
	default:
	}
	unlock()
	<-got

	// Many goroutines on one key: a plain counter stays exact under -race.
	s.Contended = nil
	var wg sync.WaitGroup
	n := 0
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Lock("k")()
			n++
		}()
	}
	wg.Wait()
	if n != 50 {
		t.Fatalf("n = %d, want 50", n)
	}
}
