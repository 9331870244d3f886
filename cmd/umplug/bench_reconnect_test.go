package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBenchReconnect runs the reconnect scenario as scripts/bench.sh does:
// against a real server process, with a -restart command that stops it
// (SIGTERM), starts it again on the same data and port and prints the new
// pid. Every device must come back with its session, the storm's server
// CPU must come from /proc of the new process, and the per-core figures
// must be in the report. No figure's size is asserted.
func TestBenchReconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns server processes")
	}
	dir := t.TempDir()
	srv := startChild(t, "-data", dir)
	pidFile := filepath.Join(t.TempDir(), "pid")
	old := srv.cmd.Process.Pid
	restart := fmt.Sprintf(`kill %d; while ps -o stat= -p %d | grep -qv Z; do sleep 0.05; done
UMPLUG_TEST_CHILD=1 '%s' serve -addr %s -data '%s' -ice-udp-port 0 -ice-tcp-port 0 </dev/null >/dev/null 2>&1 &
echo $! >'%s'; echo started; echo $!`, old, old, os.Args[0], strings.TrimPrefix(srv.url, "http://"), dir, pidFile)
	t.Cleanup(func() { stopPIDFile(t, pidFile) })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := runBench(ctx, []string{"-json", "-scenario", "reconnect", "-conns", "16", "-reconnect-jitter", "100ms",
		"-server", srv.url, "-pid", strconv.Itoa(old), "-restart", restart}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	var rep struct {
		Header struct {
			Config map[string]any `json:"config"`
		} `json:"header"`
		Summary map[string]float64 `json:"summary"`
		Result  struct {
			Devices int `json:"devices"`
			Back    int `json:"back"`
			Curve   []struct {
				Back int `json:"back"`
			} `json:"curve"`
			CPUSource      string `json:"cpu_source"`
			StormCPUSource string `json:"storm_cpu_source"`
			RestartedPID   int    `json:"restarted_pid"`
		} `json:"result"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not one JSON report: %v\n%s", err, stdout.String())
	}
	r := rep.Result
	if r.Devices != 16 || r.Back != 16 || len(r.Curve) == 0 || r.Curve[len(r.Curve)-1].Back != 16 {
		t.Errorf("devices %d, back %d, curve %v: want all 16 back", r.Devices, r.Back, r.Curve)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); r.RestartedPID != pid || pid == old {
		t.Errorf("restarted pid %d, want %d (the command's last line; the first server was %d)", r.RestartedPID, pid, old)
	}
	if r.CPUSource != "/proc schedstat" || r.StormCPUSource != "/proc schedstat" {
		t.Errorf("CPU read from %q, storm from %q; want /proc for both", r.CPUSource, r.StormCPUSource)
	}
	for _, k := range []string{"password_logins_per_core_sec", "session_logins_per_core_sec", "storm_logins_per_core_sec",
		"password_login_cpu_ns", "session_login_cpu_ns", "storm_login_cpu_ns", "last_back_s", "peak_rss_bytes"} {
		if rep.Summary[k] <= 0 {
			t.Errorf("summary %s = %v, want > 0", k, rep.Summary[k])
		}
	}
	if rep.Summary["password_logins"] != 2 || rep.Summary["session_logins"] != 14 || rep.Summary["failures"] != 0 {
		t.Errorf("summary %v: want 2 password logins, 14 session logins, no failures", rep.Summary)
	}
	if c := rep.Header.Config; c["conns"] != 16.0 || c["restart"] != restart || c["reconnect-jitter"] != "100ms" {
		t.Errorf("header config %v", c)
	}
}

// stopPIDFile stops the process whose pid is in file (a server the test
// started through a shell, so not its child) and waits until it is gone or
// a zombie, so that its data directory can be removed.
func stopPIDFile(t *testing.T, file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		return // never started
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Errorf("pid file %s: %q", file, b)
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// The state follows the parenthesised command name.
		if i := bytes.LastIndexByte(stat, ')'); err != nil || (i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z') {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Errorf("restarted server %d still running 10 s after SIGKILL", pid)
			return
		}
	}
}
