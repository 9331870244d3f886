package media

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if any goroutine of a Server outlives the tests:
// every test closes its Server, and Close waits for all of them. Like
// goleak, it retries for a moment: a goroutine past its wg.Done may still be
// returning through ServeConn's closing brace.
func TestMain(m *testing.M) {
	code := m.Run()
	var leaked []string
	for range 100 {
		leaked = leaked[:0]
		buf := make([]byte, 1<<20)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "internal/media.(*Server)") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, g := range leaked {
		fmt.Fprintf(os.Stderr, "leaked goroutine:\n%s\n\n", g)
		code = 1
	}
	os.Exit(code)
}
