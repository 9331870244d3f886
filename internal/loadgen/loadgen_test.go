package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/loadgen"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/internal/testlog"
)

// TestScenarios runs every scenario briefly against an in-process server
// and checks that it completes with sane, non-zero counts. Speed is never
// asserted: this machine's figures come from `umplug bench`.
func TestScenarios(t *testing.T) {
	tests := []struct {
		name  string
		cfg   loadgen.Config
		check func(t *testing.T, r loadgen.Result)
	}{
		{"calls", loadgen.Config{Scenario: "calls", Pairs: 2, Duration: time.Second}, func(t *testing.T, r loadgen.Result) {
			c := r.(*loadgen.CallsResult)
			if c.Pairs != 2 || c.Setups == 0 || c.Setup.N == 0 || c.Setup.P50 <= 0 || c.Setup.Max < c.Setup.P99 {
				t.Errorf("implausible result %+v", c)
			}
			if c.Hangups == 0 || c.ServerCPU < 0 {
				t.Errorf("hangups %d, server CPU %v", c.Hangups, c.ServerCPU)
			}
		}},
		{"idle", loadgen.Config{Scenario: "idle", Conns: 20, Settle: 50 * time.Millisecond}, func(t *testing.T, r loadgen.Result) {
			c := r.(*loadgen.IdleResult)
			if c.ConnsBase != 10 || c.ConnectedBase != 10 || c.Connected != 20 || c.Users != 3 || len(c.Failures) != 0 {
				t.Errorf("connected %d then %d, users %d, failures %v", c.ConnectedBase, c.Connected, c.Users, c.Failures)
			}
			if c.Before.RSS <= 0 || c.Base.RSS <= 0 || c.After.RSS <= 0 || c.Base.Devices < 10 || c.After.Devices < 20 {
				t.Errorf("implausible memory figures %+v", c)
			}
		}},
		{"presence", loadgen.Config{Scenario: "presence", Peers: 5, Changes: 5}, func(t *testing.T, r loadgen.Result) {
			c := r.(*loadgen.PresenceResult)
			if c.Online != 5 || c.Completed != 5 || c.Deliveries != 25 || c.DeliveriesPerSec() <= 0 || c.LastPeer.Max <= 0 {
				t.Errorf("implausible result %+v", c)
			}
		}},
		{"login-flood", loadgen.Config{Scenario: "login-flood", Pairs: 1, Flood: 12, Duration: 1500 * time.Millisecond}, func(t *testing.T, r loadgen.Result) {
			c := r.(*loadgen.FloodResult)
			if c.Identified != 12 || len(c.Failures) != 0 || c.Setups == 0 || c.RSSPeak <= 0 || c.Whoami.N != 12 {
				t.Errorf("implausible result %+v", c)
			}
		}},
		{"media", loadgen.Config{Scenario: "media", Pairs: 2, Duration: time.Second}, checkMedia},
		{"media paced", loadgen.Config{Scenario: "media", Pairs: 2, Duration: time.Second, FPS: 30, FrameBytes: 10240}, checkMedia},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s := servertest.Start(t, nil)
			cfg := tt.cfg
			cfg.Server = s.URL
			var progress bytes.Buffer
			cfg.Progress = &progress
			cfg.Logger = testlog.New(t)
			res, err := loadgen.Run(ctx, cfg)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			tt.check(t, res)
			var out bytes.Buffer
			if err := loadgen.WriteTable(&out, tt.name, res); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "metric") || strings.Count(out.String(), "\n") < 5 {
				t.Errorf("table:\n%s", out.String())
			}
			t.Logf("\n%s", out.String())
			checkReport(t, cfg, res)
		})
	}
}

// checkReport checks the shape of the -json report of a result: the
// field names scripts read.
func checkReport(t *testing.T, cfg loadgen.Config, res loadgen.Result) {
	t.Helper()
	h, err := loadgen.NewHeader(context.Background(), cfg, []string{"umplug", "bench"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := loadgen.WriteJSON(&buf, loadgen.NewReport(h, res)); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Header  map[string]any      `json:"header"`
		Summary map[string]float64  `json:"summary"`
		Result  map[string]any      `json:"result"`
		Rows    []map[string]string `json:"rows"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, buf.String())
	}
	for _, k := range []string{"tool", "time", "commit", "commit_modified", "commit_source", "go_version", "goos", "goarch", "gomaxprocs", "num_cpu", "cpu_model", "config", "server"} {
		if _, ok := rep.Header[k]; !ok {
			t.Errorf("header has no %q: %v", k, rep.Header)
		}
	}
	if c, _ := rep.Header["config"].(map[string]any); c["scenario"] != cfg.Scenario || c["server"] != cfg.Server {
		t.Errorf("header config %v, want scenario %s server %s", c, cfg.Scenario, cfg.Server)
	}
	if len(rep.Summary) == 0 || len(rep.Result) == 0 || len(rep.Rows) != len(res.Rows()) {
		t.Errorf("summary %v, result %v, %d rows", rep.Summary, rep.Result, len(rep.Rows))
	}
	if f, ok := rep.Summary["failures"]; !ok || f != 0 {
		t.Errorf("summary failures = %v, %v", f, ok)
	}
	for _, row := range rep.Rows {
		if row["metric"] == "" {
			t.Errorf("row without metric: %v", row)
		}
	}
}

// checkMedia wants every frame relayed in order and unchanged, and every
// call hung up cleanly; it asserts no rate.
func checkMedia(t *testing.T, r loadgen.Result) {
	c := r.(*loadgen.MediaResult)
	if c.Pairs != 2 || c.Received == 0 || c.Received != c.Sent || c.Latency.N != int(c.Received) {
		t.Errorf("implausible result %+v", c)
	}
	if c.OrderErrors != 0 || c.Lost != 0 || c.BadFrames != 0 || len(c.Failures) != 0 {
		t.Errorf("order errors %d, lost %d, bad %d, failures %v", c.OrderErrors, c.Lost, c.BadFrames, c.Failures)
	}
	if c.Hangups != 2 {
		t.Errorf("clean hang-ups %d/2", c.Hangups)
	}
}

// TestIdleGCURL: with GCURL set, idle makes the server collect garbage
// before each of its three readings.
func TestIdleGCURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := servertest.Start(t, nil)
	var hits atomic.Int32
	gc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") == "1" {
			hits.Add(1)
		}
	}))
	defer gc.Close()
	cfg := loadgen.Config{Server: s.URL, Scenario: "idle", Conns: 4, Settle: 10 * time.Millisecond, GCURL: gc.URL + "/debug/pprof/heap?gc=1", Logger: testlog.New(t)}
	r, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 3 {
		t.Errorf("GC URL fetched %d times, want 3 (once per reading: none, first, second)", n)
	}
	if c := r.(*loadgen.IdleResult); c.ConnectedBase != 2 || c.Connected != 4 {
		t.Errorf("connected %d then %d, want 2 then 4", c.ConnectedBase, c.Connected)
	}
}

// TestRerunReusesUsers runs a scenario twice on one server: the second run
// finds its users registered and must treat that as fine.
func TestRerunReusesUsers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := servertest.Start(t, nil)
	cfg := loadgen.Config{Server: s.URL, Scenario: "presence", Peers: 3, Changes: 2}
	for i := range 2 {
		r, err := loadgen.Run(ctx, cfg)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if p := r.(*loadgen.PresenceResult); p.Completed != 2 {
			t.Fatalf("run %d: %+v", i, p)
		}
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  loadgen.Config
		want error
	}{
		{"unknown scenario", loadgen.Config{Scenario: "nope"}, loadgen.ErrUnknownScenario},
		{"too many peers", loadgen.Config{Scenario: "presence", Peers: 1001}, loadgen.ErrBadConfig},
		{"bad URL", loadgen.Config{Server: "ftp://x"}, loadgen.ErrBadConfig},
		{"frame too small", loadgen.Config{Scenario: "media", FrameBytes: 8}, loadgen.ErrBadConfig},
		{"negative fps", loadgen.Config{Scenario: "media", FPS: -1}, loadgen.ErrBadConfig},
		{"negative rate", loadgen.Config{Rate: -1}, loadgen.ErrBadConfig},
		{"idle counts reversed", loadgen.Config{Scenario: "idle", ConnsBase: 200, Conns: 100}, loadgen.ErrBadConfig},
		{"idle counts equal", loadgen.Config{Scenario: "idle", ConnsBase: 100, Conns: 100}, loadgen.ErrBadConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := loadgen.Run(ctx, tt.cfg); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}
