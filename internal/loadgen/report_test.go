package loadgen_test

import (
	"bytes"
	"context"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/loadgen"
)

func TestSlope(t *testing.T) {
	tests := []struct {
		name           string
		x1, y1, x2, y2 float64
		want           float64
		ok             bool
	}{
		{"fixed cost not counted", 5000, 100 << 20, 10000, 100<<20 + 5000*2048, 2048, true},
		{"shrinking", 10, 1000, 20, 900, -10, true},
		{"from zero", 0, 0, 4, 8, 2, true},
		{"no growth in x", 100, 1, 100, 2, 0, false},
		{"x went down", 200, 1, 100, 2, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := loadgen.Slope(tt.x1, tt.y1, tt.x2, tt.y2)
			if ok != tt.ok || math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Slope(%g, %g, %g, %g) = %g, %v; want %g, %v", tt.x1, tt.y1, tt.x2, tt.y2, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestIdleSlope: the per-connection figures are slopes between the two
// measured counts; what the server held before the first (the argon2 arena)
// is not divided among the connections.
func TestIdleSlope(t *testing.T) {
	r := &loadgen.IdleResult{
		ConnectedBase: 5000, Connected: 10000,
		Before: loadgen.MemSnap{RSS: 30 << 20, Goroutines: 20},
		Base:   loadgen.MemSnap{RSS: 80 << 20, Heap: 40 << 20, Stack: 1 << 20, Goroutines: 25},
		After:  loadgen.MemSnap{RSS: 80<<20 + 5000*1500, Heap: 40<<20 + 5000*1000, Stack: 1 << 20, Goroutines: 30},
	}
	if got := r.RSSPerConn(); got != 1500 {
		t.Errorf("RSSPerConn = %g, want 1500", got)
	}
	if got := r.HeapPerConn(); got != 1000 {
		t.Errorf("HeapPerConn = %g, want 1000", got)
	}
	if got := r.StackPerConn(); got != 0 {
		t.Errorf("StackPerConn = %g, want 0", got)
	}
	if got := r.GoroutinesPerConn(); got != 0.001 {
		t.Errorf("GoroutinesPerConn = %g, want 0.001", got)
	}
	// From none: (80 MiB + 7.5 MB - 30 MiB) / 10000, the fixed 50 MiB
	// included.
	if got, want := r.RSSPerConnFromZero(), (50<<20+5000*1500)/10000.0; got != want {
		t.Errorf("RSSPerConnFromZero = %g, want %g", got, want)
	}
	if s := r.Summary(); s["rss_per_conn_bytes"] != 1500 || s["goroutines_per_conn"] != 0.001 {
		t.Errorf("Summary = %v", s)
	}
}

func TestSettings(t *testing.T) {
	tests := []struct {
		name string
		cfg  loadgen.Config
		want map[string]any // a subset
		not  []string       // settings the scenario does not read
	}{
		{"calls defaults", loadgen.Config{}, map[string]any{
			"scenario": "calls", "server": "http://127.0.0.1:8080", "pairs": 20, "duration": "10s", "rate": 20.0, "unpaced": false,
		}, []string{"conns", "fps", "peers"}},
		{"unpaced reports rate 0", loadgen.Config{Scenario: "calls", Unpaced: true}, map[string]any{
			"rate": 0.0, "unpaced": true,
		}, nil},
		{"idle counts", loadgen.Config{Scenario: "idle", Conns: 400}, map[string]any{
			"conns": "200,400", "settle": "5s", "sources": 1,
		}, []string{"pairs", "duration"}},
		{"idle defaults: sources under per-address caps", loadgen.Config{Scenario: "idle"}, map[string]any{
			"conns": "5000,10000", "sources": 20,
		}, nil},
		{"login-flood sources", loadgen.Config{Scenario: "login-flood", Flood: 1000}, map[string]any{
			"flood": 1000, "sources": 2,
		}, nil},
		{"media", loadgen.Config{Scenario: "media", FPS: 30, FrameBytes: 10240}, map[string]any{
			"pairs": 50, "fps": 30.0, "frame-bytes": 10240,
		}, []string{"conns", "flood"}},
		{"reconnect: one count, the restart command", loadgen.Config{Scenario: "reconnect", Conns: 400, RestartCmd: "kill 1"}, map[string]any{
			"conns": 400, "restart": "kill 1", "reconnect-jitter": "1s", "sources": 8,
		}, []string{"pairs", "settle", "flood"}},
		{"reconnect defaults: 50 devices per source address, at most 254", loadgen.Config{Scenario: "reconnect"}, map[string]any{
			"conns": 10000, "sources": 200,
		}, nil},
		{"reconnect: sources capped", loadgen.Config{Scenario: "reconnect", Conns: 20000}, map[string]any{
			"sources": 254,
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			settings, err := tt.cfg.Settings()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]any{}
			for _, s := range settings {
				got[s.Name] = s.Value
			}
			if _, ok := got["password"]; ok {
				t.Error("the password is listed")
			}
			for k, v := range tt.want {
				if !reflect.DeepEqual(got[k], v) {
					t.Errorf("%s = %#v, want %#v", k, got[k], v)
				}
			}
			for _, k := range tt.not {
				if _, ok := got[k]; ok {
					t.Errorf("%s listed for %s", k, tt.cfg.Scenario)
				}
			}
		})
	}
}

func TestWriteHeader(t *testing.T) {
	h, err := loadgen.NewHeader(context.Background(), loadgen.Config{Scenario: "presence"}, []string{"umplug", "bench"})
	if err != nil {
		t.Fatal(err)
	}
	if h.GoVersion == "" || h.GOMAXPROCS < 1 || h.NumCPU < 1 || h.CommitSource == "" {
		t.Errorf("header %+v", h)
	}
	var buf bytes.Buffer
	if err := loadgen.WriteHeader(&buf, h); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"commit", "GOMAXPROCS=", "NumCPU=", "cpu", "config", "scenario=presence", "peers=1000", "server"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("header lacks %q:\n%s", want, buf.String())
		}
	}
	t.Logf("\n%s", buf.String())
}

// TestReconnectFigures: identifications per server-core-second are the
// identifications over the server CPU they took, in the summary (the keys
// scripts/benchdoc reads) and in the table; a phase without a CPU reading
// says so instead of dividing by zero.
func TestReconnectFigures(t *testing.T) {
	tests := []struct {
		name string
		r    loadgen.ReconnectResult
		sum  map[string]float64
		rows map[string]string // metric → a part of its value
	}{
		{"measured", loadgen.ReconnectResult{
			Devices: 10000, Back: 10000, Users: 1250,
			PasswordLogins: 1250, PasswordCPU: 25 * time.Second,
			SessionLogins: 8750, SessionCPU: 875 * time.Millisecond,
			StormCPU: 2 * time.Second, CPUSource: "/proc schedstat", StormCPUSource: "/proc schedstat", RestartedPID: 42,
		}, map[string]float64{
			"password_logins": 1250, "password_login_cpu_ns": 20e6, "password_logins_per_core_sec": 50,
			"session_logins": 8750, "session_login_cpu_ns": 100e3, "session_logins_per_core_sec": 10000,
			"storm_cpu_ns": 2e9, "storm_login_cpu_ns": 200e3, "storm_logins_per_core_sec": 5000,
			"back": 10000, "failures": 0,
		}, map[string]string{
			"server CPU per session identification, storm":             "200.0 µs each, 5000/s per core (10000 in 2s)",
			"server CPU per session identification, setup (steady)":    "100.0 µs each, 10000/s per core (8750 in 875ms)",
			"server CPU per password identification (argon2id), setup": "20.00 ms each, 50/s per core (1250 in 25s)",
			"server CPU read from":                                     "setup: /proc; storm: /proc (pid 42)",
		}},
		{"no CPU readings", loadgen.ReconnectResult{Devices: 16, Back: 16, PasswordLogins: 2, SessionLogins: 14},
			map[string]float64{
				"password_logins_per_core_sec": 0, "session_logins_per_core_sec": 0, "storm_logins_per_core_sec": 0,
				"storm_login_cpu_ns": 0,
			}, map[string]string{
				"server CPU per session identification, storm": "not measured",
				"server CPU read from":                         "setup: not read; storm: not read",
			}},
		{"storm from /metrics, none back", loadgen.ReconnectResult{Devices: 16, StormCPU: 30 * time.Millisecond, StormCPUSource: "/metrics process_cpu_seconds_total"},
			map[string]float64{"storm_logins_per_core_sec": 0, "storm_login_cpu_ns": 0, "back": 0},
			map[string]string{
				"server CPU per session identification, storm": "not measured",
				"server CPU read from":                         "storm: /metrics",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum := tt.r.Summary()
			for k, want := range tt.sum {
				if got, ok := sum[k]; !ok || math.Abs(got-want) > 1e-6*math.Max(1, want) {
					t.Errorf("summary %s = %v (present %v), want %v", k, got, ok, want)
				}
			}
			rows := map[string]string{}
			for _, r := range tt.r.Rows() {
				rows[r.Metric] = r.Value
			}
			for metric, want := range tt.rows {
				if !strings.Contains(rows[metric], want) {
					t.Errorf("row %q = %q, want it to contain %q", metric, rows[metric], want)
				}
			}
		})
	}
}

// TestReconnectCurveRows: the curve is printed five points a row (the first
// row named, the others continuing it), so that the table stays narrow.
func TestReconnectCurveRows(t *testing.T) {
	for _, tt := range []struct {
		name   string
		points int
		want   []string // the curve's rows: metric|value
	}{
		{"none", 0, nil},
		{"one row", 2, []string{"devices back vs time|0.25s:1 0.50s:2"}},
		{"two rows", 7, []string{
			"devices back vs time|0.25s:1 0.50s:2 0.75s:3 1.00s:4 1.25s:5",
			"|1.50s:6 1.75s:7",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &loadgen.ReconnectResult{}
			for i := 1; i <= tt.points; i++ {
				r.Curve = append(r.Curve, loadgen.CurvePoint{At: time.Duration(i) * 250 * time.Millisecond, Back: i})
			}
			var got []string
			rows := r.Rows()
			for i, row := range rows {
				if row.Metric == "devices back vs time" {
					for _, c := range rows[i:] {
						got = append(got, c.Metric+"|"+c.Value)
					}
					break
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("curve rows %q, want %q", got, tt.want)
			}
		})
	}
}
