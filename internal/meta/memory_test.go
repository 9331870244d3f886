package meta

import "testing"

// TestCompactHashRoundTrip: a Session keeps its session hash as 32 bytes and
// gives the store back exactly the 64 hex digits it was given.
func TestCompactHashRoundTrip(t *testing.T) {
	for _, secret := range []string{"a", "another secret", ""} {
		h := sessionHash(secret)
		c := compactHash(h)
		if len(c) != 32 {
			t.Fatalf("compactHash(%q) has %d bytes, want 32", h, len(c))
		}
		if got := expandHash(c); got != h {
			t.Fatalf("expandHash(compactHash(%q)) = %q", h, got)
		}
	}
	if compactHash("") != "" || expandHash("") != "" {
		t.Fatal(`"" (no session) must stay ""`)
	}
}
