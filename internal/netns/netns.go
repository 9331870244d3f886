// Package netns runs a test inside a private network namespace that has
// only a loopback interface, so that WebRTC tests (ICE gathers every
// interface it can see) can send traffic to loopback only.
//
// Isolate re-executes the already-built test binary for just that test
// under `unshare -n`, after `ip link set lo up`. Nothing is built or
// downloaded inside the namespace (it has no network beyond loopback), and
// `go test ./...` stays the one test command.
package netns

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// EnvInside is set to "1" in the environment of the re-executed child.
const EnvInside = "UMPLUG_NETNS"

// Inside reports whether this process runs in the namespace Isolate made.
func Inside() bool { return os.Getenv(EnvInside) == "1" }

// Isolate makes the calling test run in a private network namespace. It
// returns true when the caller is already inside: run the test body. It
// returns false when it ran the test in a child process (whose output is
// logged, and whose failure fails t): the caller must return at once.
//
// Call it first thing in a top-level test (subtests run inside with it).
// When unsharing the network is not permitted, the test fails if the
// environment variable CI is "true" and is skipped otherwise: it never
// runs on the host's network.
func Isolate(t *testing.T) bool {
	t.Helper()
	if Inside() {
		return true
	}
	if strings.Contains(t.Name(), "/") {
		t.Fatalf("netns.Isolate must be called from a top-level test, not %s", t.Name())
	}
	unshare, err := exec.LookPath("unshare")
	if err == nil {
		err = exec.Command(unshare, "-n", "--", "true").Run()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("netns: cannot create a network namespace (unshare -n): %v", err)
		}
		t.Skipf("netns: skipped, cannot create a network namespace (unshare -n): %v; this test must not run on the host network", err)
	}
	ctx := context.Background()
	args := []string{"-n", "--", "sh", "-c", `ip link set lo up && exec "$0" "$@"`, os.Args[0],
		"-test.run", "^" + regexp.QuoteMeta(t.Name()) + "$", "-test.v", "-test.count=1"}
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-time.Second))
		defer cancel()
		args = append(args, "-test.timeout", time.Until(d).Round(time.Second).String())
	}
	cmd := exec.CommandContext(ctx, unshare, args...)
	cmd.Env = append(os.Environ(), EnvInside+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("netns child (unshare -n, loopback only):\n%s", out)
	if err != nil {
		t.Fatalf("netns child failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) && !strings.Contains(string(out), "--- SKIP: "+t.Name()) {
		t.Fatalf("netns child did not run %s", t.Name())
	}
	return false
}
