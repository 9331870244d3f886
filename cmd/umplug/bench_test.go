package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/servertest"
)

// TestBenchJSON runs a small scenario with -json and checks the report's
// shape: the field names scripts/bench.sh and docs readers rely on.
func TestBenchJSON(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := servertest.Start(t, nil)
	// The server runs in this process, so -pid is this process.
	pid := strconv.Itoa(os.Getpid())
	var stdout, stderr bytes.Buffer
	err := runBench(ctx, []string{"-json", "-scenario", "presence", "-peers", "3", "-changes", "2", "-server", s.URL, "-pid", pid}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	var rep struct {
		Header struct {
			Tool         string         `json:"tool"`
			Time         time.Time      `json:"time"`
			Commit       string         `json:"commit"`
			CommitSource string         `json:"commit_source"`
			GoVersion    string         `json:"go_version"`
			GOOS         string         `json:"goos"`
			GOARCH       string         `json:"goarch"`
			GOMAXPROCS   int            `json:"gomaxprocs"`
			NumCPU       int            `json:"num_cpu"`
			CPUModel     *string        `json:"cpu_model"`
			Command      []string       `json:"command"`
			Config       map[string]any `json:"config"`
			Server       struct {
				URL     string   `json:"url"`
				PID     int      `json:"pid"`
				Cmdline []string `json:"cmdline"`
			} `json:"server"`
		} `json:"header"`
		Summary map[string]float64 `json:"summary"`
		Result  struct {
			Peers     int `json:"peers"`
			Completed int `json:"completed"`
		} `json:"result"`
		Rows []struct {
			Metric, Value, Target string
		} `json:"rows"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not one JSON report: %v\n%s", err, stdout.String())
	}
	h := rep.Header
	if h.Tool != "umplug bench" || h.Time.IsZero() || h.GoVersion == "" || h.GOOS == "" || h.GOARCH == "" ||
		h.GOMAXPROCS < 1 || h.NumCPU < 1 || h.CPUModel == nil || h.CommitSource == "" || len(h.Command) < 3 {
		t.Errorf("header %+v", h)
	}
	if h.Config["scenario"] != "presence" || h.Config["peers"] != 3.0 || h.Config["changes"] != 2.0 || h.Config["rate"] != 20.0 || h.Config["unpaced"] != false {
		t.Errorf("header config %v", h.Config)
	}
	if h.Server.URL != s.URL || h.Server.PID != os.Getpid() || len(h.Server.Cmdline) == 0 {
		t.Errorf("header server %+v", h.Server)
	}
	if rep.Result.Peers != 3 || rep.Result.Completed != 2 || rep.Summary["deliveries"] != 6 || len(rep.Rows) == 0 {
		t.Errorf("result %+v, summary %v, %d rows", rep.Result, rep.Summary, len(rep.Rows))
	}
}

// TestBenchText: without -json the header comes before the table.
func TestBenchText(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := servertest.Start(t, nil)
	var stdout, stderr bytes.Buffer
	if err := runBench(ctx, []string{"-scenario", "presence", "-peers", "2", "-changes", "1", "-server", s.URL}, &stdout, &stderr); err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	iCommit, iTable := strings.Index(out, "commit"), strings.Index(out, "metric")
	if iCommit < 0 || iTable < iCommit || !strings.Contains(out, "GOMAXPROCS=") || !strings.Contains(out, "scenario=presence") {
		t.Errorf("want the header, then the table:\n%s", out)
	}
}

func TestBenchFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string // in the error
	}{
		{[]string{"-rate", "0"}, "-unpaced"},
		{[]string{"-rate", "-1"}, "-unpaced"},
		{[]string{"-conns", "100,50"}, "0 < A < B"},
		{[]string{"-conns", "x"}, "A,B"},
		{[]string{"-conns", "1"}, "A,B"},
		{[]string{"extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runBench(context.Background(), tt.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), tt.want) {
				t.Errorf("err = %v (stderr %q), want one mentioning %q", err, stderr.String(), tt.want)
			}
		})
	}
}

func TestConnCounts(t *testing.T) {
	tests := []struct {
		in   string
		a, b int
	}{
		{"10000", 5000, 10000},
		{"5000,10000", 5000, 10000},
		{"200, 400", 200, 400},
		{"3", 1, 3},
	}
	for _, tt := range tests {
		var c connCounts
		if err := c.Set(tt.in); err != nil || c.a != tt.a || c.b != tt.b {
			t.Errorf("Set(%q) = %d,%d, %v; want %d,%d", tt.in, c.a, c.b, err, tt.a, tt.b)
		}
	}
}
