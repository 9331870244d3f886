package server_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/user-media-plug/umplug/internal/servertest"
)

// TestWebAppCSP: the app's page is served with a Content-Security-Policy
// that allows only the server's own scripts (no inline script, no eval),
// no plugins, no framing (clickjacking), plus nosniff and no-referrer; and
// the page itself has no inline script or event handler that such a
// policy would have to allow.
func TestWebAppCSP(t *testing.T) {
	s := servertest.Start(t, nil)
	resp, err := http.Get(s.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*"} {
		if strings.Contains(csp, bad) {
			t.Errorf("CSP %q allows %q", csp, bad)
		}
	}
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options %q", got)
	}
	if got := resp.Header.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("Referrer-Policy %q", got)
	}
	if m := regexp.MustCompile(`(?i)<script(?:\s+type="module")?\s*>|\son[a-z]+\s*=`).Find(body); m != nil {
		t.Errorf("index.html has inline script or an event handler attribute: %q", m)
	}
}

// TestWebAppRendersText: the browser code puts server-supplied strings
// (user names, statuses, reasons: all chosen by other users) into the page
// only as text (textContent, dataset, aria labels), never as HTML or code,
// so a user named "<img src=x onerror=…>" is shown, not run. A static scan
// of the scripts the server serves, so that a new innerHTML fails here.
func TestWebAppRendersText(t *testing.T) {
	s := servertest.Start(t, nil)
	sinks := regexp.MustCompile(`\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(|setAttribute\(\s*['"](?:on|href|src|style)|\.createContextualFragment|DOMParser`)
	for _, path := range []string{"/app.js", "/umplug.js"} {
		resp, err := http.Get(s.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(b) < 1000 {
			t.Fatalf("%s: %d, %d bytes", path, resp.StatusCode, len(b))
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := sinks.FindString(line); m != "" {
				t.Errorf("%s:%d: HTML/code sink %q: %s", path, i+1, m, strings.TrimSpace(line))
			}
		}
		if path == "/app.js" && !strings.Contains(string(b), ".textContent = name") {
			t.Errorf("%s: peer names are no longer rendered with textContent; re-check this test", path)
		}
	}
}
