package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/web"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(web.Handler())
	defer srv.Close()
	tests := []struct {
		name, method, path string
		status             int
		ctype              string
		contains           string
	}{
		{"index", "GET", "/", 200, "text/html; charset=utf-8", `<script type="module" src="/app.js">`},
		{"index by name", "GET", "/index.html", 200, "text/html; charset=utf-8", "umplug"},
		{"client library", "GET", "/umplug.js", 200, "text/javascript; charset=utf-8", "export class UmplugClient extends EventTarget"},
		{"app script", "GET", "/app.js", 200, "text/javascript; charset=utf-8", "from '/umplug.js'"},
		{"styles", "GET", "/app.css", 200, "text/css; charset=utf-8", ".peers"},
		{"head", "HEAD", "/umplug.js", 200, "text/javascript; charset=utf-8", ""},
		{"missing", "GET", "/nope.js", 404, "", ""},
		{"traversal", "GET", "/../web.go", 404, "", ""},
		{"post", "POST", "/app.js", 405, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, tc.method, srv.URL+tc.path, nil)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			if tc.status != 200 {
				return
			}
			if got := res.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			// Revalidation answers 304 with no body.
			req2, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+tc.path, nil)
			req2.Header.Set("If-None-Match", res.Header.Get("ETag"))
			res2, err := http.DefaultClient.Do(req2)
			if err != nil {
				t.Fatal(err)
			}
			res2.Body.Close()
			if res2.StatusCode != http.StatusNotModified {
				t.Errorf("revalidation status %d, want 304", res2.StatusCode)
			}
		})
	}
}

// fakeMeta is a scripted stand-in for the metadata server, so that the web
// app's screens and error messages can be checked without the real server.
type fakeMeta struct {
	srv *httptest.Server

	mu     sync.Mutex // guards the following
	conns  []*websocket.Conn
	medias []map[string]any // the first frame of each /media connection
	whoami []map[string]any // every whoami received
}

// drop ends every /meta connection without a close frame (a network drop).
func (f *fakeMeta) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.UnderlyingConn().Close()
	}
	f.conns = nil
}

func newFakeMeta(t *testing.T) *fakeMeta {
	f := &fakeMeta{}
	mux := http.NewServeMux()
	mux.Handle("/", web.Handler())
	up := websocket.Upgrader{}
	mux.HandleFunc("/meta", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal(b, &m) != nil {
				continue
			}
			if m["type"] == "whoami" {
				f.mu.Lock()
				f.whoami = append(f.whoami, m)
				f.mu.Unlock()
			}
			f.send(c, answer(m))
		}
	})
	// /media: a relay that pairs at once and sends no media, so that the
	// call view shows its connected state (timer, quality, placeholder).
	mux.HandleFunc("/media", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		var m map[string]any
		if c.ReadJSON(&m) != nil {
			return
		}
		f.mu.Lock()
		f.medias = append(f.medias, m)
		f.mu.Unlock()
		_ = c.WriteJSON(map[string]any{"type": "paired", "peer": "bob"})
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeMeta) send(c *websocket.Conn, m map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_ = c.WriteJSON(m)
}

// push sends an event to every connection.
func (f *fakeMeta) push(m map[string]any) {
	f.mu.Lock()
	conns := append([]*websocket.Conn(nil), f.conns...)
	f.mu.Unlock()
	for _, c := range conns {
		f.send(c, m)
	}
}

// answer scripts the fake server's responses.
func answer(m map[string]any) map[string]any {
	typ, _ := m["type"].(string)
	res := map[string]any{"type": "res", "for": typ, "tx": m["tx"], "ok": true}
	fail := func(code, reason string) map[string]any {
		res["ok"], res["error"], res["reason"] = false, code, reason
		return res
	}
	switch typ {
	case "reg-user":
		if m["user"] == "taken" {
			return fail("exists", "user exists")
		}
	case "whoami":
		if m["password"] == "wrongpass" || m["session"] == "revoked" {
			return fail("auth-failed", "unknown user or wrong password")
		}
		res["device"] = "d1"
		res["session"] = "s-alice"
	case "peers":
		res["peers"] = []map[string]any{
			{"user": "bob", "mutual": true, "online": true, "status": "online"},
			{"user": "carol", "mutual": true, "online": true, "status": "in a meeting until 3pm"},
			{"user": "dave", "mutual": true, "online": false, "status": nil},
			{"user": "erin.with.a.rather.long.name@example.org", "mutual": false, "online": false, "status": nil},
		}
	case "add-peers":
		if ps, _ := m["peers"].([]any); len(ps) > 0 && ps[0] == "nobody" {
			res = fail("not-found", "not registered")
			res["missing"] = []string{"nobody"}
		}
	case "call":
		if m["peer"] == "carol" {
			return fail("busy", "carol is in a call")
		}
	}
	return res
}

// eval1 evaluates a JavaScript expression in the tab.
func eval1[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// TestAppScreens drives the web app against the fake server: error messages
// for failed requests, the peers list, the ringing and incoming screens, at
// phone and desktop sizes, saving screenshots of each.
func TestAppScreens(t *testing.T) {
	needChromium(t)
	f := newFakeMeta(t)
	dir := artifactsDir(t)
	sizes := []struct {
		name string
		w, h int
	}{{"phone", 390, 844}, {"desktop", 1280, 800}}
	for _, sz := range sizes {
		t.Run(sz.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			b := newBrowser(t, ctx, sz.w, sz.h)
			step := func(what string, acts ...chromedp.Action[chromedp.Void]) {
				t.Helper()
				if err := chromedp.Do(b, acts...); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			}
			wait := func(what, expr string) {
				t.Helper()
				if err := waitJS(b, what, expr); err != nil {
					t.Fatal(err)
				}
			}
			if sz.name == "phone" {
				step("emulate phone", chromedp.EmulateViewport(int64(sz.w), int64(sz.h), chromedp.EmulateMobile))
			} else {
				step("emulate desktop", chromedp.EmulateViewport(int64(sz.w), int64(sz.h)))
			}
			// ?media=relay: the fake /media speaks the relay mode only.
			step("open", chromedp.Navigate(f.srv.URL+"/?media=relay"), chromedp.WaitVisible("#auth"))
			screenshot(t, b, dir, sz.name+"-1-login")

			step("bad login", chromedp.SendKeys("#reg-user", "alice"), chromedp.SendKeys("#reg-pass", "wrongpass"), chromedp.Click("#btn-login"))
			wait("auth-failed message", `!document.querySelector('#error').hidden && document.querySelector('#error-text').textContent.includes('Wrong user name or password')`)
			screenshot(t, b, dir, sz.name+"-2-login-error")

			step("register taken", chromedp.SetValue("#reg-user", "taken"), chromedp.SetValue("#reg-pass", "sesameopen"), chromedp.Click("#btn-register"))
			wait("exists message", `document.querySelector('#error-text').textContent.includes('already taken')`)

			step("login", chromedp.SetValue("#reg-user", "alice"), chromedp.SetValue("#reg-pass", "sesameopen"), chromedp.Click("#btn-login"))
			if err := waitState(b, "idle"); err != nil {
				t.Fatal(err)
			}
			wait("peers", `document.querySelectorAll('#peers li[data-peer]').length === 4`)
			wait("call enabled for bob only", `!document.querySelector('[data-peer="bob"] .call').disabled && document.querySelector('[data-peer="dave"] .call').disabled`)

			step("add unknown", chromedp.SendKeys("#peer-add", "nobody"), chromedp.Click("#btn-peer-add"))
			wait("not-found message", `document.querySelector('#error-text').textContent.includes('No such user: nobody')`)

			// Notifications are asked for only on a click, and the offer
			// goes once the browser has answered.
			if eval1[string](t, b, `Notification.permission`) == "default" {
				wait("notification offer", `!document.querySelector('#notify-offer').hidden`)
				step("ask for notifications", chromedp.Click("#btn-notify-home"))
				wait("asked", `Notification.permission !== 'default' ? document.querySelector('#notify-offer').hidden : true`)
			}
			f.push(map[string]any{"type": "status", "user": "bob", "status": "away"})
			wait("live status", `document.querySelector('[data-peer="bob"] .peer-status').textContent === 'away'`)
			screenshot(t, b, dir, sz.name+"-3-peers")

			step("call busy carol", chromedp.Click(`[data-peer="carol"] .call`))
			wait("busy message", `document.querySelector('#error-text').textContent.includes('busy') && document.querySelector('#state').textContent === 'idle'`)

			step("call bob", chromedp.Click(`[data-peer="bob"] .call`))
			if err := waitState(b, "ringing"); err != nil {
				t.Fatal(err)
			}
			wait("ringback plays", `umplugApp.tone === 'ringback'`)
			screenshot(t, b, dir, sz.name+"-4-ringing")
			f.push(map[string]any{"type": "reject", "user": "bob", "peer": "alice", "tx": 1, "reason": "timeout"})
			if err := waitState(b, "idle"); err != nil {
				t.Fatal(err)
			}
			if got := text(b, "#notice-text"); !strings.Contains(got, "did not answer") {
				t.Errorf("timeout notice %q", got)
			}

			f.push(map[string]any{"type": "call", "user": "bob", "peer": "alice", "tx": 7})
			if err := waitState(b, "incoming"); err != nil {
				t.Fatal(err)
			}
			wait("ringtone plays", `umplugApp.tone === 'ring' && umplugApp.tones.ctx && umplugApp.tones.ctx.state === 'running'`)
			screenshot(t, b, dir, sz.name+"-5-incoming")
			f.push(map[string]any{"type": "cancel", "user": "bob", "peer": "alice", "tx": 7, "reason": "cancelled"})
			if err := waitState(b, "idle"); err != nil {
				t.Fatal(err)
			}
			if got := text(b, "#notice-text"); !strings.Contains(got, "cancelled") {
				t.Errorf("cancel notice %q", got)
			}
			wait("ringtone stops", `umplugApp.tone === null`)

			// A call that rings while the tab is hidden shows a notification
			// (the page's Notification and visibility are stubbed: headless
			// Chromium has no notification centre).
			step("hide the tab", chromedp.Evaluate[chromedp.Void](`(() => {
				window.__notes = []
				window.Notification = class { static permission = 'granted'; constructor (title, opts) { this.title = title; window.__notes.push({ title, opts, closed: false }); this.i = window.__notes.length - 1 } close () { window.__notes[this.i].closed = true } addEventListener () {} }
				Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' })
			})()`))
			f.push(map[string]any{"type": "call", "user": "bob", "peer": "alice", "tx": 9})
			if err := waitState(b, "incoming"); err != nil {
				t.Fatal(err)
			}
			wait("notification", `window.__notes.length === 1 && window.__notes[0].title === 'bob is calling' && !window.__notes[0].closed`)
			f.push(map[string]any{"type": "cancel", "user": "bob", "peer": "alice", "tx": 9, "reason": "cancelled"})
			wait("notification closed", `window.__notes[0].closed && document.querySelector('#state').textContent === 'idle'`)
			step("show the tab", chromedp.Evaluate[chromedp.Void](`delete document.visibilityState`))

			// Settings before a call: the devices and a live preview.
			step("open settings", chromedp.Click("#btn-settings"))
			wait("preview", `document.querySelector('#settings-preview').videoWidth > 0`)
			wait("devices listed", `document.querySelector('#set-camera').options.length >= 2 && document.querySelector('#set-mic').options.length >= 2`)
			if got := eval1[string](t, b, `document.querySelector('#set-mode').value`); got != "relay" {
				t.Errorf("media mode shown as %q, want relay (from ?media=relay)", got)
			}
			screenshot(t, b, dir, sz.name+"-5b-settings")
			step("choose the second camera entry", chromedp.Evaluate[chromedp.Void](`(() => { const s = document.querySelector('#set-camera'); s.value = s.options[1].value; s.dispatchEvent(new Event('change')) })()`))
			wait("camera choice saved", `localStorage.getItem('umplug.camera') === document.querySelector('#set-camera').options[1].value`)
			step("close settings", chromedp.Click("#btn-settings-close"))
			wait("preview stopped", `document.querySelector('#settings').hidden && !document.querySelector('#settings-preview').srcObject`)

			// The in-call screen with the local preview (the fake server
			// sends no media: the remote video stays black).
			f.push(map[string]any{"type": "call", "user": "bob", "peer": "alice", "tx": 8})
			if err := waitState(b, "incoming"); err != nil {
				t.Fatal(err)
			}
			step("accept", chromedp.Click("#btn-accept"))
			if err := waitState(b, "in-call"); err != nil {
				t.Fatal(err)
			}
			wait("local preview", `document.querySelector('#local-video').videoWidth > 0`)
			wait("placeholder before media", `!document.querySelector('#remote-placeholder').hidden && document.querySelector('#remote-name').textContent === 'bob'`)
			// The server pairs the media: relay mode (asked for in the URL),
			// the timer runs, the quality badge shows.
			f.push(map[string]any{"type": "force-call", "peer": "bob", "ticket": "tk", "media": "/media"})
			wait("connected", `document.querySelector('#call-phase').textContent === 'connected' && umplugApp.call.media && umplugApp.call.media.mode === 'relay'`)
			wait("timer", `!document.querySelector('#call-timer').hidden && /^0:0\d$/.test(document.querySelector('#call-timer').textContent)`)
			f.mu.Lock()
			if len(f.medias) == 0 || f.medias[len(f.medias)-1]["ticket"] != "tk" || f.medias[len(f.medias)-1]["mode"] != nil {
				t.Errorf("/media first frame %v, want the ticket and no mode (relay)", f.medias)
			}
			f.mu.Unlock()
			// A fresh force-call during the call (the server reconnecting the
			// media, PROTOCOL.md §8) replaces the media with the new ticket;
			// the call goes on.
			f.push(map[string]any{"type": "force-call", "peer": "bob", "ticket": "tk2", "media": "/media"})
			wait("media replaced", `umplugApp.call.mediaGen === 2 && !!umplugApp.call.media && document.querySelector('#call-phase').textContent === 'connected' && document.querySelector('#state').textContent === 'in-call'`)
			within := func(what string, cond func() bool) {
				t.Helper()
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for !cond() {
					select {
					case <-ctx.Done():
						t.Fatalf("%s: %v", what, ctx.Err())
					case <-tick.C:
					}
				}
			}
			within("second ticket on /media", func() bool {
				f.mu.Lock()
				defer f.mu.Unlock()
				return len(f.medias) >= 2 && f.medias[len(f.medias)-1]["ticket"] == "tk2"
			})
			step("mute", chromedp.Click("#btn-mute"))
			wait("muted", `document.querySelector('#btn-mute').getAttribute('aria-pressed') === 'true' && !umplugApp.call.stream.getAudioTracks()[0].enabled && !document.querySelector('#local-muted').hidden`)
			step("camera off", chromedp.Click("#btn-camera"))
			wait("camera off", `document.querySelector('#btn-camera').getAttribute('aria-pressed') === 'true' && !document.querySelector('#local-off').hidden && !umplugApp.call.stream.getVideoTracks()[0].enabled`)
			screenshot(t, b, dir, sz.name+"-6-in-call")
			step("camera on, unmute", chromedp.Click("#btn-camera"), chromedp.Click("#btn-mute"))
			wait("camera on, unmuted", `document.querySelector('#local-off').hidden && umplugApp.call.stream.getVideoTracks()[0].enabled && umplugApp.call.stream.getAudioTracks()[0].enabled`)
			// The /meta connection drops mid-call: the call view stays and
			// says "Reconnecting…"; the app logs in again with the session
			// and resumes its device (the fake answers with the same device
			// id); the server's fresh force-call reconnects the media.
			gen := eval1[int](t, b, `umplugApp.call.mediaGen`)
			f.drop()
			wait("call view reconnecting", `document.querySelector('#state').textContent === 'in-call' && !document.querySelector('#call-unstable').hidden && document.querySelector('#call-unstable').textContent === 'Reconnecting…' && document.querySelector('#call-phase').textContent === 'reconnecting…'`)
			wait("logged in again, call kept", `!!umplugApp.client && !umplugApp.client.closed && document.querySelector('#reconnecting').hidden && document.querySelector('#state').textContent === 'in-call' && !document.querySelector('#call-unstable').hidden`)
			screenshot(t, b, dir, sz.name+"-6b-call-reconnecting")
			f.push(map[string]any{"type": "force-call", "peer": "bob", "ticket": "tk3", "media": "/media"})
			wait("media back", fmt.Sprintf(`umplugApp.call.mediaGen === %d && !!umplugApp.call.media && document.querySelector('#call-unstable').hidden && document.querySelector('#call-phase').textContent === 'connected'`, gen+1))
			// The peer drops and comes back.
			f.push(map[string]any{"type": "reconnecting", "user": "bob", "peer": "alice"})
			wait("peer reconnecting", `!document.querySelector('#call-unstable').hidden && document.querySelector('#call-unstable').textContent === 'bob is reconnecting…'`)
			screenshot(t, b, dir, sz.name+"-6c-peer-reconnecting")
			f.push(map[string]any{"type": "resumed", "user": "bob", "peer": "alice"})
			wait("peer back", `document.querySelector('#call-unstable').hidden && document.querySelector('#state').textContent === 'in-call'`)

			f.push(map[string]any{"type": "unpair", "user": "bob", "peer": "alice", "reason": "hangup"})
			if err := waitState(b, "idle"); err != nil {
				t.Fatal(err)
			}
			if got := text(b, "#notice-text"); !strings.Contains(got, "hung up") {
				t.Errorf("hangup notice %q", got)
			}

			// The connection drops: the app says so and comes back by
			// itself with the session, presenting its device to resume.
			f.drop()
			wait("reconnecting banner", `!document.querySelector('#reconnecting').hidden`)
			wait("back by itself", `document.querySelector('#reconnecting').hidden && document.querySelector('#state').textContent === 'idle' && !!umplugApp.client && !umplugApp.client.closed`)
			f.mu.Lock()
			last := f.whoami[len(f.whoami)-1]
			f.mu.Unlock()
			if last["session"] != "s-alice" || last["resume"] != "d1" || last["password"] != nil {
				t.Errorf("reconnect sent whoami %v, want the session and resume d1, no password", last)
			}
			// A session the server refuses: the sign-in form, with why.
			step("revoked session", chromedp.Evaluate[chromedp.Void](`localStorage.setItem('umplug.session', JSON.stringify({ user: 'alice', session: 'revoked' }))`), chromedp.Reload())
			wait("sign-in form", `!document.querySelector('#auth').hidden && document.querySelector('#state').textContent === 'logged-out' && document.querySelector('#error-text').textContent.includes('Please log in again') && localStorage.getItem('umplug.session') === null`)
			if got := text(b, "#auth-keys"); !strings.Contains(got, "Enter logs in") || !strings.Contains(got, "Register") {
				t.Errorf("sign-in form hint %q does not say which button to use", got)
			}
			screenshot(t, b, dir, sz.name+"-7-session-ended")
			cspClean(t, b, sz.name)
		})
	}
}
