// Package leaktest fails a test binary when goroutines of the package under
// test outlive its tests: every Client, Server and scenario must stop what it
// started once closed. It is a small goleak for our own packages.
package leaktest

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs the tests and exits. After a passing run it waits up to 5 s for
// every goroutine whose stack contains one of marks, and none of except, to
// end (a goroutine past its last Done may still be returning), and fails the
// run if any is left, printing its stack.
func Main(m *testing.M, marks []string, except ...string) {
	code := m.Run()
	if code == 0 {
		if leaked := wait(5*time.Second, marks, except); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func wait(d time.Duration, marks, except []string) string {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(d)
	for {
		leaked := find(marks, except)
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		<-tick.C
	}
}

func find(marks, except []string) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var leaked []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if containsAny(g, marks) && !containsAny(g, except) {
			leaked = append(leaked, g)
		}
	}
	return leaked
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
