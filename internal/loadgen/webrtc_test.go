package loadgen_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/loadgen"
	"github.com/user-media-plug/umplug/internal/netns"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/internal/testlog"
)

// TestWebRTCScenario runs a small webrtc bench in a loopback-only network
// namespace: every packet counted, none changed, every call hung up.
func TestWebRTCScenario(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := servertest.Start(t, nil)
	res, err := loadgen.Run(ctx, loadgen.Config{Scenario: "webrtc", Server: s.URL, Pairs: 2,
		Duration: 500 * time.Millisecond, Logger: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*loadgen.WebRTCResult)
	if r.Received == 0 || r.InWindow == 0 || r.Bad != 0 || r.Hangups != 2 || len(r.Failures) != 0 {
		t.Fatalf("result %+v", r)
	}
	if len(r.Rows()) == 0 {
		t.Fatal("no rows")
	}
}

// TestWebRTCScenarioRefusesHostNetwork: outside a namespace (where an
// interface other than loopback is up) the scenario refuses to start.
func TestWebRTCScenarioRefusesHostNetwork(t *testing.T) {
	if netns.Inside() {
		t.Skip("inside a namespace")
	}
	_, err := loadgen.Run(context.Background(), loadgen.Config{Scenario: "webrtc", Server: "http://127.0.0.1:1"})
	if err == nil {
		t.Fatal("ran")
	}
	if !errors.Is(err, loadgen.ErrNotIsolated) {
		t.Logf("host has only loopback up: %v", err) // nothing to refuse here
	}
}
