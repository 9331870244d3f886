package leaktest

import (
	"testing"
	"time"
)

//go:noinline
func parkedLeaker(stop chan struct{}) { <-stop }

func TestFind(t *testing.T) {
	stop := make(chan struct{})
	go parkedLeaker(stop)
	// The goroutine is found by its function name, and only then.
	if got := wait(2*time.Second, []string{"leaktest.parkedLeaker"}, nil); got == "" {
		t.Fatal("a parked goroutine was not reported")
	}
	if got := find([]string{"leaktest.parkedLeaker"}, []string{"leaktest.parkedLeaker"}); len(got) != 0 {
		t.Fatal("except did not exclude")
	}
	close(stop)
	if got := wait(2*time.Second, []string{"leaktest.parkedLeaker"}, nil); got != "" {
		t.Fatalf("a finished goroutine was reported:\n%s", got)
	}
}
