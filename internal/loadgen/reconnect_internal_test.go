package loadgen

import (
	"slices"
	"testing"
	"time"
)

// TestRestartPID: the restarted server's pid is the last line the restart
// command printed, if it is one.
func TestRestartPID(t *testing.T) {
	for _, tt := range []struct {
		name, out string
		want      int
	}{
		{"pid alone", "12345\n", 12345},
		{"after other lines", "stopping 99\nstarted\n  4242  \n\n", 4242},
		{"nothing printed", "", 0},
		{"last line not a pid", "4242\nstarted\n", 0},
		{"negative", "-1\n", 0},
		{"zero", "0\n", 0},
		{"pid and words", "pid 4242\n", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := restartPID([]byte(tt.out)); got != tt.want {
				t.Errorf("restartPID(%q) = %d, want %d", tt.out, got, tt.want)
			}
		})
	}
}

// TestReconnectCurve: the curve counts the devices back at every step after
// time zero, from their timestamps, up to the step that has them all;
// devices never back (0) are left out, one back before time zero counts
// from the first step.
func TestReconnectCurve(t *testing.T) {
	const s = int64(time.Second)
	t0 := 100 * s
	for _, tt := range []struct {
		name   string
		backAt []int64
		curve  []CurvePoint
		last   time.Duration
	}{
		{"none back", []int64{0, 0}, nil, 0},
		{"one step", []int64{t0 + s/10, t0 + s/5}, []CurvePoint{{250 * time.Millisecond, 2}}, 200 * time.Millisecond},
		{"on a step's edge, unsorted, one never back", []int64{t0 + s, 0, t0 + s/4, t0 + s/2 + 1},
			[]CurvePoint{{250 * time.Millisecond, 1}, {500 * time.Millisecond, 1}, {750 * time.Millisecond, 2}, {time.Second, 3}}, time.Second},
		{"back before time zero", []int64{t0 - s/10, t0 + s/3}, []CurvePoint{{250 * time.Millisecond, 1}, {500 * time.Millisecond, 2}}, time.Second / 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			curve, last := reconnectCurve(tt.backAt, t0, 250*time.Millisecond)
			if !slices.Equal(curve, tt.curve) || last != tt.last {
				t.Errorf("got %v, last %v; want %v, last %v", curve, last, tt.curve, tt.last)
			}
		})
	}
}
