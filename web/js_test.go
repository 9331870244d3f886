package web_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// minNodeMajor is the oldest Node.js the JS unit tests run on: node:test and
// its directory runner came with 18 (Debian bookworm's nodejs is 18.20).
// Node 18 has CustomEvent (umplug.js dispatches them) only behind
// --experimental-global-customevent, which nodeArgs adds; from 19 on it is a
// global.
const minNodeMajor = 18

// TestJS runs the unit tests of the client library (web/jstest) with Node's
// test runner, so that `go test ./...` covers them too. Without node (or
// with one too old) it skips, except under CI=true, where that is a broken
// machine and fails: .ci/run installs node.
func TestJS(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node is not installed (Debian package nodejs)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ver, err := exec.CommandContext(ctx, node, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", node, err)
	}
	major, ok := nodeMajor(string(ver))
	if !ok {
		t.Fatalf("%s --version printed %q: not a node version", node, ver)
	}
	if major < minNodeMajor {
		missing(t, "node "+strings.TrimSpace(string(ver))+" is older than "+strconv.Itoa(minNodeMajor))
	}
	files, err := filepath.Glob("jstest/*.test.mjs")
	if err != nil || len(files) == 0 {
		t.Fatalf("no jstest/*.test.mjs (%v)", err)
	}
	// The files are named, not the directory: from Node 21 on --test takes
	// glob patterns, and a bare directory is not one.
	args := append(nodeArgs(major), files...)
	out, err := exec.CommandContext(ctx, node, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("node %v: %v\n%s", args, err, out)
	}
	t.Logf("node %v (%s):\n%s", args, strings.TrimSpace(string(ver)), tail(string(out), 12))
}

// missing skips the test, or fails it under CI=true.
func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: the umplug.js unit tests cannot run, and on CI they must (.ci/run installs nodejs)", why)
	}
	t.Skipf("%s: skipping the umplug.js unit tests (node --test web/jstest/)", why)
}

// nodeArgs is node's command line before the test files.
func nodeArgs(major int) []string {
	if major < 19 {
		return []string{"--experimental-global-customevent", "--test"}
	}
	return []string{"--test"}
}

var nodeVersion = regexp.MustCompile(`^v(\d+)\.\d+\.\d+`)

// nodeMajor parses `node --version` output ("v20.11.1\n").
func nodeMajor(s string) (int, bool) {
	m := nodeVersion.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

func TestNodeMajor(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"v20.20.2\n", 20, true},
		{"v18.20.4\n", 18, true},
		{"v8.10.0", 8, true},
		{"20.1.0", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := nodeMajor(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("nodeMajor(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			lines++
			if lines > n {
				return s[i+1:]
			}
		}
	}
	return s
}
