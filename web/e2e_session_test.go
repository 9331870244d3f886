package web_test

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/internal/faultproxy"
	"github.com/user-media-plug/umplug/internal/media"
	"github.com/user-media-plug/umplug/internal/meta"
	"github.com/user-media-plug/umplug/internal/password"
	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/internal/testlog"
)

// restartable is a complete server on a fixed loopback port with a Pebble
// store on disk, which a test can stop (as `umplug serve` does on SIGTERM)
// and start again on the same port and data: the browsers' pages stay on
// the same origin and come back by themselves.
type restartable struct {
	t    *testing.T
	dir  string
	addr string // "127.0.0.1:0" until the first start
	srv  *server.Server
	hs   *httptest.Server
	st   store.Store
}

func newRestartable(t *testing.T) *restartable {
	r := &restartable{t: t, dir: t.TempDir(), addr: "127.0.0.1:0"}
	r.start()
	t.Cleanup(func() {
		if r.srv != nil {
			r.stop()
		}
	})
	return r
}

// URL is the page URL as browsers use it (localhost: a secure context).
func (r *restartable) URL() string {
	return "http://localhost:" + r.addr[strings.LastIndex(r.addr, ":")+1:]
}

func (r *restartable) start() {
	t := r.t
	t.Helper()
	st, err := store.OpenPebble(r.dir, testlog.New(t))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	srv, err := server.New(server.Config{
		Meta: meta.Config{
			Store:  st,
			Hasher: password.New(password.Config{Params: servertest.CheapPassword}),
		},
		Media:  media.Config{WebRTC: &media.WebRTCConfig{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}},
		Logger: testlog.New(t),
	})
	if err != nil {
		st.Close()
		t.Fatalf("server: %v", err)
	}
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		st.Close()
		t.Fatalf("listen on %s: %v", r.addr, err)
	}
	r.addr = ln.Addr().String()
	hs := httptest.NewUnstartedServer(nil)
	hs.Listener.Close()
	hs.Config = srv.HTTPServer()
	hs.Listener = srv.Listen(ln)
	hs.Start()
	r.srv, r.hs, r.st = srv, hs, st
}

// stop shuts the server down gracefully (calls end with unpair shutdown,
// connections close with 1001) and closes the store.
func (r *restartable) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.srv.Shutdown(ctx)
	r.hs.CloseClientConnections()
	r.hs.Close()
	r.st.Close()
	r.srv = nil
}

// whoamiSession presents a session on a fresh /meta connection and returns
// the answer's error code ("" when it logged in).
func whoamiSession(t *testing.T, metaURL, user, session string) string {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial(metaURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", metaURL, err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteJSON(map[string]any{"type": "whoami", "user": user, "session": session, "tx": 1}); err != nil {
		t.Fatalf("send whoami: %v", err)
	}
	for {
		var m map[string]any
		if err := c.ReadJSON(&m); err != nil {
			t.Fatalf("read whoami answer: %v", err)
		}
		if m["type"] != "res" {
			continue
		}
		if ok, _ := m["ok"].(bool); ok {
			return ""
		}
		code, _ := m["error"].(string)
		return code
	}
}

// storedSession reads the session the app keeps in localStorage.
func storedSession(t *testing.T, u user) string {
	t.Helper()
	return eval[string](t, u, `(JSON.parse(localStorage.getItem('umplug.session') || 'null') || {}).session || ''`)
}

// reconnectingShown waits until u's app shows its "Reconnecting…" banner.
func reconnectingShown(t *testing.T, u user) {
	t.Helper()
	wait(t, u, "reconnecting banner", `!document.querySelector('#reconnecting').hidden && document.querySelector('#reconnecting-text').textContent.startsWith('Reconnecting')`)
}

// online waits until u's app is logged in as u.name again by itself: no
// banner, the sign-in form hidden, the client identified.
func online(t *testing.T, u user, d time.Duration) {
	t.Helper()
	within(t, u, d, "back online", func(ctx context.Context) error {
		return waitJS(ctx, "back online", fmt.Sprintf(`document.querySelector('#reconnecting').hidden && document.querySelector('#auth').hidden &&
			!!umplugApp.client && !umplugApp.client.closed && umplugApp.client.user === %q && document.querySelector('#me').textContent === %q`, u.name, u.name))
	})
}

// TestE2ESessions drives two browsers against a real server with a Pebble
// store (relay media, so no network namespace is needed): the session keeps
// a reloaded page logged in; missed calls show as a list with a badge (on
// load and live) with call-back and clear; a server restart mid-call brings
// both windows back by themselves, logged in, idle, told why the call
// ended; Log out revokes the session on the server.
func TestE2ESessions(t *testing.T) {
	needChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	srv := newRestartable(t)
	base := srv.URL() + "/?media=relay"
	dir := artifactsDir(t)

	alice := user{"alice", newBrowser(t, ctx, 1280, 800)}
	bob := user{"bob", newBrowser(t, ctx, 1280, 800)}
	do(t, alice, "desktop viewport", chromedp.EmulateViewport(1280, 800))
	do(t, bob, "desktop viewport", chromedp.EmulateViewport(1280, 800))
	signUp(t, alice, base)
	signUp(t, bob, base)
	addPeer(t, alice, "bob")
	addPeer(t, bob, "alice")
	callable(t, alice, "bob")
	callable(t, bob, "alice")

	t.Run("reload-keeps-login", func(t *testing.T) {
		if storedSession(t, alice) == "" {
			t.Fatal("no session stored after the login")
		}
		do(t, alice, "reload", chromedp.Reload())
		online(t, alice, 15*time.Second)
		state(t, alice, "idle")
		callable(t, alice, "bob")
		if v := eval[string](t, alice, `document.querySelector('#reg-pass').value`); v != "" {
			t.Errorf("password field holds %q after the reload", v)
		}
	})

	t.Run("missed-calls", func(t *testing.T) {
		// alice rings bob and gives up: bob missed it (live event).
		clickCall(t, alice, "bob")
		state(t, bob, "incoming")
		do(t, alice, "cancel", chromedp.Click("#btn-cancel"))
		state(t, bob, "idle")
		wait(t, bob, "badge 1 (live)", `!document.querySelector('#missed-badge').hidden && document.querySelector('#missed-badge').textContent === '1'`)
		// A reload lists it from the server (badge on load).
		do(t, bob, "reload", chromedp.Reload())
		online(t, bob, 15*time.Second)
		wait(t, bob, "badge 1 (on load)", `!document.querySelector('#missed-badge').hidden && document.querySelector('#missed-badge').textContent === '1'`)
		// A second one, newest first.
		clickCall(t, alice, "bob")
		state(t, bob, "incoming")
		do(t, alice, "cancel", chromedp.Click("#btn-cancel"))
		wait(t, bob, "badge 2", `document.querySelector('#missed-badge').textContent === '2'`)
		do(t, bob, "open the list", chromedp.Click("#btn-missed"))
		wait(t, bob, "list", `document.querySelectorAll('#missed-list li[data-caller="alice"]').length === 2 && !document.querySelector('#missed').hidden`)
		first := eval[string](t, bob, `document.querySelector('#missed-list li time').dateTime`)
		second := eval[string](t, bob, `document.querySelectorAll('#missed-list li time')[1].dateTime`)
		if first < second {
			t.Errorf("missed calls not newest first: %s before %s", first, second)
		}
		if got := text(bob.ctx, "#missed-list li .when"); !strings.Contains(got, "they hung up") {
			t.Errorf("missed call reason shown as %q", got)
		}
		wait(t, bob, "call back enabled", `!document.querySelector('#missed-list li .call-back').disabled`)
		screenshot(t, bob.ctx, dir, "desktop-missed-calls")
		do(t, bob, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
		screenshot(t, bob.ctx, dir, "phone-missed-calls")
		do(t, bob, "desktop viewport", chromedp.EmulateViewport(1280, 800))

		do(t, bob, "call back", chromedp.Click("#missed-list li .call-back"))
		state(t, bob, "ringing")
		state(t, alice, "incoming")
		do(t, alice, "reject", chromedp.Click("#btn-reject"))
		state(t, bob, "idle")
		do(t, bob, "open the list", chromedp.Click("#btn-missed"))
		do(t, bob, "clear", chromedp.Click("#btn-missed-clear"))
		wait(t, bob, "cleared", `document.querySelector('#missed-badge').hidden && document.querySelectorAll('#missed-list li').length === 0 && !document.querySelector('#missed-empty').hidden`)
		do(t, bob, "reload", chromedp.Reload())
		online(t, bob, 15*time.Second)
		wait(t, bob, "still cleared after a reload", `document.querySelector('#missed-badge').hidden && umplugApp.missed.length === 0`)
	})

	t.Run("server-restart", func(t *testing.T) {
		callable(t, alice, "bob")
		clickCall(t, alice, "bob")
		state(t, bob, "incoming")
		do(t, bob, "accept", chromedp.Click("#btn-accept"))
		for _, u := range []user{alice, bob} {
			state(t, u, "in-call")
			wait(t, u, "media", `!!umplugApp.call && !!umplugApp.call.media`)
		}
		srv.stop()
		for _, u := range []user{alice, bob} {
			reconnectingShown(t, u)
		}
		screenshot(t, alice.ctx, dir, "desktop-reconnecting")
		do(t, bob, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
		screenshot(t, bob.ctx, dir, "phone-reconnecting")
		srv.start()
		// Backoff: the attempts while the server was down wait up to
		// base·2ⁿ; a few seconds at most here.
		for _, u := range []user{alice, bob} {
			online(t, u, 40*time.Second)
			state(t, u, "idle")
			noticeHas(t, u, "server restarted")
		}
		callable(t, alice, "bob")
		callable(t, bob, "alice")
		do(t, bob, "desktop viewport", chromedp.EmulateViewport(1280, 800))
		cspClean(t, alice.ctx, "alice")
		cspClean(t, bob.ctx, "bob")
	})

	t.Run("logout-revokes", func(t *testing.T) {
		session := storedSession(t, alice)
		if session == "" {
			t.Fatal("no session stored")
		}
		metaURL := "ws://" + srv.addr + "/meta"
		if code := whoamiSession(t, metaURL, "alice", session); code != "" {
			t.Fatalf("the stored session before logout: %s", code)
		}
		do(t, alice, "log out", chromedp.Click("#btn-logout"))
		state(t, alice, "logged-out")
		wait(t, alice, "sign-in form", `!document.querySelector('#auth').hidden && localStorage.getItem('umplug.session') === null`)
		within(t, alice, 10*time.Second, "session revoked", func(ctx context.Context) error {
			for {
				code := whoamiSession(t, metaURL, "alice", session)
				if code == "auth-failed" {
					return nil
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("whoami with the logged-out session answered %q, want auth-failed", code)
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
		do(t, alice, "reload", chromedp.Reload(), chromedp.WaitVisible("#auth"))
		state(t, alice, "logged-out")
	})
}

// proxyURL is the page URL through p: localhost, a secure context for the
// camera.
func proxyURL(p *faultproxy.Proxy) string { return fmt.Sprintf("http://localhost:%d", p.Port()) }

// TestE2EDeadSocket: the network goes away under open sockets (they stay
// open, nothing passes: the proxy turns them into black holes) and comes
// back: on the browser's online event the app finds the old connection
// dead within 5 s and logs in again by itself on a new one.
func TestE2EDeadSocket(t *testing.T) {
	needChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := servertest.Start(t, nil)
	proxy := faultproxy.New(t, strings.TrimPrefix(srv.URL, "http://"))
	alice := user{"alice", newBrowser(t, ctx, 1280, 800)}
	signUp(t, alice, proxyURL(proxy)+"/?media=relay")
	do(t, alice, "mark the client", chromedp.Evaluate[chromedp.Void](`window.__client = umplugApp.client`))
	setOnline(t, alice, false)
	proxy.Freeze()
	setOnline(t, alice, true)
	within(t, alice, 20*time.Second, "new connection", func(ctx context.Context) error {
		return waitJS(ctx, "a new identified client", `umplugApp.client !== window.__client && !!umplugApp.client && !umplugApp.client.closed && umplugApp.client.user === 'alice'`)
	})
	online(t, alice, 10*time.Second)
	state(t, alice, "idle")
	// The new connection answers.
	if !eval[bool](t, alice, `umplugApp.client.peers().then(() => true)`) {
		t.Error("the new connection does not answer")
	}
}
