package server

import (
	"net/http"
	"net/netip"
	"testing"
)

// TestClientAddr: the client address is the TCP peer unless that is a
// trusted proxy; then the rightmost X-Forwarded-For hop that is not one.
func TestClientAddr(t *testing.T) {
	s := &Server{proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}}
	cases := []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.1:5000", nil, "192.0.2.1"},
		{"192.0.2.1:5000", []string{"198.51.100.7"}, "192.0.2.1"}, // not a proxy: ignored
		{"10.1.2.3:5000", nil, "10.1.2.3"},
		{"10.1.2.3:5000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"10.1.2.3:5000", []string{"203.0.113.9, 198.51.100.7"}, "198.51.100.7"},
		{"10.1.2.3:5000", []string{"203.0.113.9", "198.51.100.7, 10.9.9.9"}, "198.51.100.7"},
		{"10.1.2.3:5000", []string{"10.2.2.2, 10.3.3.3"}, "10.2.2.2"}, // all trusted: the leftmost
		{"10.1.2.3:5000", []string{"garbage, 10.3.3.3"}, "10.3.3.3"},
		{"10.1.2.3:5000", []string{"198.51.100.7:4711"}, "198.51.100.7"},
		{"10.1.2.3:5000", []string{"[2001:db8::1]:4711"}, "2001:db8::1"},
		{"[fd00::1]:5000", []string{"2001:db8::2"}, "2001:db8::2"},
		{"[::ffff:10.1.2.3]:5000", []string{"::ffff:198.51.100.7"}, "198.51.100.7"},
	}
	for _, tc := range cases {
		r := &http.Request{RemoteAddr: tc.peer, Header: http.Header{}}
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := s.clientAddr(r); got != tc.want {
			t.Errorf("peer %s, X-Forwarded-For %q: %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
}

// TestConnLimits: the derived caps.
func TestConnLimits(t *testing.T) {
	for _, tc := range []struct {
		soft            uint64
		wantTotal, want int
	}{
		{20000, 19488, 1000},
		{1600, 1088, 544},
		{600, 300, 150},
		{1 << 40, 1<<24 - 512, 1000},
	} {
		total := fromFDLimit(tc.soft)
		_, per := connLimits(total, 0)
		if total != tc.wantTotal || per != tc.want {
			t.Errorf("soft %d: total %d per-addr %d; want %d, %d", tc.soft, total, per, tc.wantTotal, tc.want)
		}
	}
	if total, per := connLimits(-1, -1); total != -1 || per != -1 {
		t.Errorf("unlimited: %d %d", total, per)
	}
}
