package client_test

import (
	"testing"

	"github.com/user-media-plug/umplug/internal/leaktest"
)

// TestMain fails the run when a goroutine of the client package outlives
// the tests: every Client and Media must stop its goroutines once closed.
func TestMain(m *testing.M) { leaktest.Main(m, []string{"umplug/client.(*"}) }
