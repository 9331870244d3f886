package loadgen

import "testing"

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
