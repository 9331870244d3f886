package netns_test

import (
	"net"
	"testing"

	"github.com/user-media-plug/umplug/internal/netns"
)

// TestIsolateLoopbackOnly checks that the body runs where loopback is the
// only interface, and that it is up.
func TestIsolateLoopbackOnly(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			t.Errorf("interface %s is not loopback", i.Name)
		}
		if i.Flags&net.FlagUp == 0 {
			t.Errorf("interface %s is down", i.Name)
		}
	}
	if len(ifs) == 0 {
		t.Fatal("no interface at all")
	}
}
