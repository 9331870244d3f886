package leaktest

import (
	"sync"
	"testing"
	"time"
)

//go:noinline
func parkedLeaker(started *sync.WaitGroup, stop chan struct{}) {
	started.Done()
	<-stop
}

func TestFind(t *testing.T) {
	stop := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(stop) }) }
	defer release()
	var started sync.WaitGroup
	started.Add(1)
	go parkedLeaker(&started, stop)
	started.Wait()
	// The goroutine is found by its function name, unless excepted.
	if got := find([]string{"leaktest.parkedLeaker"}, nil); len(got) != 1 {
		t.Fatalf("found %d parked goroutines, want 1", len(got))
	}
	if got := find([]string{"leaktest.parkedLeaker"}, []string{"leaktest.parkedLeaker"}); len(got) != 0 {
		t.Fatal("except did not exclude")
	}
	release()
	if got := wait(5*time.Second, []string{"leaktest.parkedLeaker"}, nil); got != "" {
		t.Fatalf("a finished goroutine was reported:\n%s", got)
	}
}
