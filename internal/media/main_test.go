package media

import (
	"testing"

	"github.com/user-media-plug/umplug/internal/leaktest"
)

// TestMain fails the run if any goroutine of a Server outlives the tests:
// every test closes its Server, and Close waits for all of them.
func TestMain(m *testing.M) { leaktest.Main(m, []string{"internal/media.(*Server)"}) }
