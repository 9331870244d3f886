package main

import (
	"io"
	"slices"
	"testing"
)

// TestServeWebRTCConfig: the ICE flags and their defaults (ICE follows the
// -addr IP unless told otherwise).
func TestServeWebRTCConfig(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		off       bool
		ips       []string
		ifaces    []string
		public    []string
		udp, tcp  int
		wantError bool
	}{
		{name: "defaults follow -addr", args: nil, ips: []string{"127.0.0.1"}, udp: 7882, tcp: 7882},
		{name: "localhost", args: []string{"-addr", "localhost:8080"}, ips: []string{"127.0.0.1"}, udp: 7882, tcp: 7882},
		{name: "all interfaces", args: []string{"-addr", "0.0.0.0:8080"}, udp: 7882, tcp: 7882},
		{name: "empty host", args: []string{"-addr", ":8080"}, udp: 7882, tcp: 7882},
		{name: "explicit", args: []string{"-addr", "0.0.0.0:80", "-ice-ips", "10.0.0.5,10.0.0.6", "-ice-public-ip", "203.0.113.7",
			"-ice-udp-port", "3478", "-ice-tcp-port", "-1"},
			ips: []string{"10.0.0.5", "10.0.0.6"}, public: []string{"203.0.113.7"}, udp: 3478, tcp: -1},
		{name: "interfaces", args: []string{"-addr", "0.0.0.0:80", "-ice-interfaces", "eth0"}, ifaces: []string{"eth0"}, udp: 7882, tcp: 7882},
		{name: "off", args: []string{"-webrtc=false"}, off: true},
		{name: "bad ip", args: []string{"-ice-ips", "nope"}, wantError: true},
		{name: "bad public ip", args: []string{"-ice-public-ip", "example.com"}, wantError: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseServe(tc.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			wc, err := c.webrtcConfig()
			if tc.wantError {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.off {
				if wc != nil {
					t.Fatalf("webrtc on: %+v", wc)
				}
				return
			}
			var ips []string
			for _, ip := range wc.IPs {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.ips) || !slices.Equal(wc.Interfaces, tc.ifaces) || !slices.Equal(wc.PublicIPs, tc.public) ||
				wc.UDPPort != tc.udp || wc.TCPPort != tc.tcp {
				t.Fatalf("got %+v (ips %v)", wc, ips)
			}
		})
	}
}
