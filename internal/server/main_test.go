package server_test

import (
	"testing"

	"github.com/user-media-plug/umplug/internal/leaktest"
)

// TestMain fails the run when a session, media relay or connection of the
// server outlives the tests. metaws's nbio engine (its poller goroutine)
// lives for the process.
func TestMain(m *testing.M) {
	leaktest.Main(m, []string{"internal/meta.(*", "internal/media.(*", "internal/server.(*", "metaws.(*Conn)"})
}
