package server_test

import (
	"testing"

	"github.com/user-media-plug/umplug/internal/leaktest"
)

// TestMain fails the run when a session, media relay or connection of the
// server outlives the tests. wsloop's shared poller lives for the process,
// and its idle workers exit on their own a second after their last event.
func TestMain(m *testing.M) {
	leaktest.Main(m, []string{"internal/meta.(*", "internal/media.(*", "internal/server.(*", "wsloop.(*Conn)"},
		"wsloop.(*poller).run")
}
