package loadgen_test

import (
	"testing"

	"github.com/user-media-plug/umplug/internal/leaktest"
)

// TestMain fails the run when a goroutine of the load generator outlives
// the tests: every scenario must close what it opened.
func TestMain(m *testing.M) {
	leaktest.Main(m, []string{"internal/loadgen."}, "loadgen_test.")
}
