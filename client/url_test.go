package client

import (
	"errors"
	"testing"
)

func TestMetaURL(t *testing.T) {
	tests := []struct {
		name, in, want string
		bad            bool
	}{
		{name: "ws endpoint", in: "ws://127.0.0.1:8080/meta", want: "ws://127.0.0.1:8080/meta"},
		{name: "wss endpoint", in: "wss://example.org/meta", want: "wss://example.org/meta"},
		{name: "ws custom path kept", in: "ws://example.org/plug/ws", want: "ws://example.org/plug/ws"},
		{name: "ws no path", in: "ws://127.0.0.1:8080", want: "ws://127.0.0.1:8080/meta"},
		{name: "ws root", in: "ws://127.0.0.1:8080/", want: "ws://127.0.0.1:8080/meta"},
		{name: "http base", in: "http://127.0.0.1:8080", want: "ws://127.0.0.1:8080/meta"},
		{name: "http base slash", in: "http://127.0.0.1:8080/", want: "ws://127.0.0.1:8080/meta"},
		{name: "https base", in: "https://example.org", want: "wss://example.org/meta"},
		{name: "https prefix", in: "https://example.org/umplug/", want: "wss://example.org/umplug/meta"},
		{name: "http meta", in: "http://example.org/meta", want: "ws://example.org/meta"},
		{name: "http query kept", in: "http://h:1?x=1", want: "ws://h:1/meta?x=1"},
		{name: "bare host port", in: "127.0.0.1:8080", want: "ws://127.0.0.1:8080/meta"},
		{name: "bare host", in: "localhost", want: "ws://localhost/meta"},
		{name: "bad scheme", in: "ftp://example.org", bad: true},
		{name: "no host", in: "http:///meta", bad: true},
		{name: "unparsable", in: "http://[::1", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := metaURL(tt.in)
			if tt.bad {
				if !errors.Is(err, ErrBadURL) {
					t.Fatalf("metaURL(%q) = %v, %v; want ErrBadURL", tt.in, u, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("metaURL(%q): %v", tt.in, err)
			}
			if got := u.String(); got != tt.want {
				t.Errorf("metaURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMediaURL(t *testing.T) {
	tests := []struct {
		name, meta, ref, want string
	}{
		{name: "contract", meta: "ws://127.0.0.1:8080/meta", ref: "/media", want: "ws://127.0.0.1:8080/media"},
		{name: "empty is default", meta: "ws://127.0.0.1:8080/meta", ref: "", want: "ws://127.0.0.1:8080/media"},
		{name: "tls", meta: "wss://example.org/meta", ref: "/media", want: "wss://example.org/media"},
		{name: "relative to prefix", meta: "wss://example.org/umplug/meta", ref: "media", want: "wss://example.org/umplug/media"},
		{name: "absolute ws", meta: "ws://a/meta", ref: "ws://b:9/media", want: "ws://b:9/media"},
		{name: "absolute https", meta: "ws://a/meta", ref: "https://b/media", want: "wss://b/media"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			meta, err := metaURL(tt.meta)
			if err != nil {
				t.Fatal(err)
			}
			u, err := mediaURL(meta, tt.ref)
			if err != nil {
				t.Fatalf("mediaURL(%q, %q): %v", tt.meta, tt.ref, err)
			}
			if got := u.String(); got != tt.want {
				t.Errorf("mediaURL(%q, %q) = %q, want %q", tt.meta, tt.ref, got, tt.want)
			}
		})
	}
	meta, _ := metaURL("ws://a/meta")
	if _, err := mediaURL(meta, "ftp://b/media"); !errors.Is(err, ErrBadURL) {
		t.Errorf("mediaURL(ftp) = %v, want ErrBadURL", err)
	}
}
