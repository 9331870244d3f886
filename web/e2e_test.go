package web_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/user-media-plug/umplug/internal/servertest"
)

// localhost rewrites the test server's 127.0.0.1 URL to localhost, which
// every browser treats as a secure context (camera and microphone allowed).
func localhost(u string) string { return strings.Replace(u, "://127.0.0.1:", "://localhost:", 1) }

// user is one person at one browser.
type user struct {
	name string
	ctx  context.Context // the browser tab
}

// within runs f with a per-step deadline derived from the browser's context.
func within(t *testing.T, u user, d time.Duration, what string, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, d)
	defer cancel()
	if err := f(ctx); err != nil {
		t.Fatalf("%s: %s: %v", u.name, what, err)
	}
}

func do(t *testing.T, u user, what string, acts ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	within(t, u, 15*time.Second, what, func(ctx context.Context) error { return chromedp.Do(ctx, acts...) })
}

func wait(t *testing.T, u user, what, expr string) {
	t.Helper()
	within(t, u, 15*time.Second, what, func(ctx context.Context) error { return waitJS(ctx, what, expr) })
}

func state(t *testing.T, u user, want string) {
	t.Helper()
	within(t, u, 15*time.Second, "state "+want, func(ctx context.Context) error { return waitState(ctx, want) })
}

func eval[T any](t *testing.T, u user, expr string) T {
	t.Helper()
	var v T
	within(t, u, 10*time.Second, expr, func(ctx context.Context) error {
		var err error
		v, err = chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
		return err
	})
	return v
}

// signUp registers and logs in through the UI of a freshly loaded app.
func signUp(t *testing.T, u user, base string) {
	t.Helper()
	do(t, u, "open app", chromedp.Navigate(base), chromedp.WaitVisible("#auth"))
	do(t, u, "register",
		chromedp.SetValue("#reg-user", u.name),
		chromedp.SetValue("#reg-pass", "sesameopen"),
		chromedp.Click("#btn-register"))
	state(t, u, "idle")
}

func addPeer(t *testing.T, u user, peer string) {
	t.Helper()
	do(t, u, "add peer "+peer, chromedp.SetValue("#peer-add", peer), chromedp.Click("#btn-peer-add"))
	wait(t, u, "peer row "+peer, fmt.Sprintf(`!!document.querySelector('[data-peer=%q]')`, peer))
}

// callable waits until u's call button for peer is enabled (mutual, online, idle).
func callable(t *testing.T, u user, peer string) {
	t.Helper()
	wait(t, u, peer+" callable", fmt.Sprintf(`(b => !!b && !b.disabled)(document.querySelector('[data-peer=%q] .call'))`, peer))
}

func clickCall(t *testing.T, u user, peer string) {
	t.Helper()
	callable(t, u, peer)
	do(t, u, "call "+peer, chromedp.Click(fmt.Sprintf(`[data-peer=%q] .call`, peer)))
}

func noticeHas(t *testing.T, u user, want string) {
	t.Helper()
	wait(t, u, "notice "+want, fmt.Sprintf(`!document.querySelector('#notice').hidden && document.querySelector('#notice-text').textContent.includes(%q)`, want))
}

// remoteTime reads the remote video's playback position.
const remoteTime = `document.querySelector('#remote-video').currentTime`

// TestE2E drives two real browsers (two users) through the whole app on the
// real server, with the media forced to the relay mode (?media=relay;
// TestE2EWebRTC covers WebRTC): sign up, become mutual peers, call, accept,
// see and hear each other, hang up; then reject, cancel and ringing timeout.
func TestE2E(t *testing.T) {
	needChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	srv := servertest.Start(t, nil)
	base := localhost(srv.URL) + "/?media=relay"
	dir := artifactsDir(t)

	alice := user{"alice", newBrowser(t, ctx, 1000, 800)}
	bob := user{"bob", newBrowser(t, ctx, 1000, 800)}

	signUp(t, alice, base)
	signUp(t, bob, base)
	addPeer(t, alice, "bob")
	addPeer(t, bob, "alice")
	callable(t, alice, "bob") // the server tells alice when bob becomes mutual
	callable(t, bob, "alice")

	t.Run("call", func(t *testing.T) {
		clickCall(t, alice, "bob")
		state(t, alice, "ringing")
		state(t, bob, "incoming")
		if got := text(bob.ctx, "#incoming-peer"); got != "alice" {
			t.Errorf("incoming banner names %q, want alice", got)
		}
		do(t, bob, "accept", chromedp.Click("#btn-accept"))
		state(t, bob, "in-call")
		state(t, alice, "in-call")
		for _, u := range []user{alice, bob} {
			wait(t, u, "relay media", `!!umplugApp.call && !!umplugApp.call.media && umplugApp.call.media.mode === 'relay'`)
		}

		// Each side's remote video plays: it has a picture and its clock
		// advances between two samples.
		for _, u := range []user{alice, bob} {
			wait(t, u, "remote video picture", `(v => v.videoWidth > 0 && v.readyState >= 2 && !v.paused)(document.querySelector('#remote-video'))`)
			t0 := eval[float64](t, u, remoteTime)
			wait(t, u, "remote video advancing", fmt.Sprintf(`%s > %f + 0.5`, remoteTime, t0))
			// Audio: Chromium counts the bytes of audio it decoded for a
			// media element; the fake microphone beeps.
			wait(t, u, "remote audio decoded", `document.querySelector('#remote-video').webkitAudioDecodedByteCount > 0`)
		}

		// Glass-to-glass estimate: both browsers share this machine's clock,
		// so the time since the sender started recording minus the
		// receiver's media position is how late the picture is shown.
		for _, pair := range [][2]user{{alice, bob}, {bob, alice}} {
			from, to := pair[0], pair[1]
			started := eval[float64](t, from, `umplugApp.call.media.startedAt`)
			type sample struct{ Now, Pos, Buffered float64 }
			s := eval[sample](t, to, `(() => { const v = document.querySelector('#remote-video'); const s = umplugApp.call.media.stats();
				return { Now: Date.now(), Pos: v.currentTime, Buffered: s.lag } })()`)
			lag := (s.Now-started)/1000 - s.Pos
			t.Logf("%s -> %s: remote video trails by about %.2f s (glass-to-glass estimate: time since recording began minus playback position), %.2f s buffered ahead of the playhead",
				from.name, to.name, lag, s.Buffered)
		}
		for _, u := range []user{alice, bob} {
			st := eval[string](t, u, `JSON.stringify(umplugApp.call.media.stats())`)
			t.Logf("%s media stats: %s", u.name, st)
		}
		// Camera off in the relay mode records black frames; the other
		// side shows the placeholder for them, not a black box.
		do(t, alice, "camera off", chromedp.Click("#btn-camera"))
		within(t, bob, 20*time.Second, "placeholder", func(ctx context.Context) error {
			return waitJS(ctx, "camera off placeholder", `!document.querySelector('#remote-placeholder').hidden && document.querySelector('#remote-why').textContent === 'camera off'`)
		})
		screenshot(t, bob.ctx, dir, "bob-sees-camera-off")
		do(t, alice, "camera on", chromedp.Click("#btn-camera"))
		within(t, bob, 20*time.Second, "video back", func(ctx context.Context) error {
			return waitJS(ctx, "placeholder hidden", `document.querySelector('#remote-placeholder').hidden`)
		})
		screenshot(t, alice.ctx, dir, "alice-in-call")
		screenshot(t, bob.ctx, dir, "bob-in-call")

		do(t, alice, "hang up", chromedp.Click("#btn-hangup"))
		state(t, alice, "idle")
		state(t, bob, "idle")
		noticeHas(t, bob, "alice” hung up")
		noticeHas(t, alice, "You hung up")
		cspClean(t, alice.ctx, "alice")
		cspClean(t, bob.ctx, "bob")
	})

	t.Run("reject", func(t *testing.T) {
		clickCall(t, alice, "bob")
		state(t, bob, "incoming")
		do(t, bob, "reject", chromedp.Click("#btn-reject"))
		state(t, bob, "idle")
		state(t, alice, "idle")
		noticeHas(t, alice, "declined")
	})

	t.Run("cancel", func(t *testing.T) {
		clickCall(t, bob, "alice")
		state(t, alice, "incoming")
		state(t, bob, "ringing")
		do(t, bob, "cancel", chromedp.Click("#btn-cancel"))
		state(t, bob, "idle")
		state(t, alice, "idle")
		noticeHas(t, alice, "cancelled")
	})

	t.Run("ringing-timeout", func(t *testing.T) {
		short := servertest.Start(t, &servertest.Options{RingingTimeout: 2 * time.Second})
		base := localhost(short.URL) + "/?media=relay"
		signUp(t, alice, base)
		signUp(t, bob, base)
		addPeer(t, alice, "bob")
		addPeer(t, bob, "alice")
		clickCall(t, alice, "bob")
		state(t, bob, "incoming")
		state(t, alice, "ringing")
		// Nobody answers: the server ends it after 2 s.
		state(t, alice, "idle")
		state(t, bob, "idle")
		noticeHas(t, alice, "did not answer")
		noticeHas(t, bob, "Missed call")
	})
}
