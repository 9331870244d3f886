package web_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// needChromium skips the test when there is no browser, except on CI
// (CI=true), where a missing browser is a broken machine and must fail.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (install the Debian package chromium); browser tests cannot run on CI without it", chromiumPath)
		}
		t.Skipf("%s is missing: skipping the browser test (apt-get install chromium to run it)", chromiumPath)
	}
}

// newBrowser starts one headless Chromium with its own profile, fake camera
// and microphone, and autoplay allowed, and returns a tab's context. Each
// call is a separate browser process: two of them are two users.
func newBrowser(t *testing.T, parent context.Context, width, height int) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("password-store", "basic"),
		// WebRTC in tests: host candidates with plain IPs (no mDNS names,
		// which would also multicast), and loopback allowed, since the
		// WebRTC tests run in a namespace that has nothing else.
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // start the browser now, so that failures point here
		t.Fatalf("start chromium: %v", err)
	}
	// Record Content-Security-Policy violations in every page from its
	// first script on (see cspClean).
	if _, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: watchCSP})
		return chromedp.Void{}, err
	}); err != nil {
		t.Fatalf("watch CSP: %v", err)
	}
	return ctx
}

// watchCSP collects the page's CSP violations in window.__csp.
const watchCSP = `window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI))`

// cspClean fails the test if the page broke its Content-Security-Policy
// (the app must work with default-src 'self' and no inline script).
func cspClean(t *testing.T, ctx context.Context, who string) {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.__csp || []`))
	if err != nil {
		t.Errorf("%s: read CSP violations: %v", who, err)
		return
	}
	if len(v) > 0 {
		t.Errorf("%s: Content-Security-Policy violations: %q", who, v)
	}
}

// artifactsDir is where screenshots go: $UMPLUG_ARTIFACTS, else a temp dir.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("UMPLUG_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts dir: %v", err)
	}
	return dir
}

// screenshot saves the page as name.png in dir and logs where.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Errorf("write %s: %v", p, err)
		return
	}
	t.Logf("screenshot: %s", p)
}

// waitJS polls a JavaScript boolean expression until it is true or the
// context's deadline passes; the error says what was awaited.
func waitJS(ctx context.Context, what, expr string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return nil
		}
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s (%s): %w %s", what, expr, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// waitState waits until the app's #state shows want.
func waitState(ctx context.Context, want string) error {
	return waitJS(ctx, "state "+want, fmt.Sprintf(`document.querySelector('#state').textContent === %q`, want))
}

// text reads an element's textContent.
func text(ctx context.Context, sel string) string {
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q)||{}).textContent||''`, sel)))
	return s
}
