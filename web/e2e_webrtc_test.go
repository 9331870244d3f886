package web_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/user-media-plug/umplug/internal/netns"
	"github.com/user-media-plug/umplug/internal/servertest"
)

// audioEnergyOver is a page function: how much audio energy the remote
// audio track delivered during ms milliseconds (getStats' totalAudioEnergy
// of the inbound audio stream; the fake microphone beeps, a muted one sends
// silence).
const audioEnergyOver = `async (ms) => {
	const energy = async () => {
		let e = 0
		const r = await umplugApp.call.media.getStats()
		r.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') e += s.totalAudioEnergy || 0 })
		return e
	}
	const a = await energy()
	await new Promise((resolve) => setTimeout(resolve, ms))
	return (await energy()) - a
}`

// energy measures the remote audio energy over 1.5 s in u's page.
func energy(t *testing.T, u user) float64 {
	t.Helper()
	var v float64
	within(t, u, 10*time.Second, "audio energy", func(ctx context.Context) error {
		var err error
		v, err = chromedp.Run(ctx, chromedp.Evaluate[float64](`(`+audioEnergyOver+`)(1500)`, chromedp.EvalAwaitPromise))
		return err
	})
	return v
}

// waitEnergy measures until cond holds for a 1.5 s window (or fails after
// about 15 s) and returns the last figure.
func waitEnergy(t *testing.T, u user, what string, cond func(float64) bool) float64 {
	t.Helper()
	var e float64
	for i := 0; i < 10; i++ {
		if e = energy(t, u); cond(e) {
			return e
		}
	}
	t.Fatalf("%s: %s: remote audio energy per 1.5 s stayed at %g", u.name, what, e)
	return e
}

// TestE2EWebRTC drives two Chromium instances (fake camera and microphone)
// through a WebRTC call on the real server: both see and hear each other,
// mute and camera-off are seen on the other side, the call view works at
// desktop and phone size, and hang-up returns both to idle. The whole test
// process (server and browsers) runs in a loopback-only network namespace:
// ICE gathers every interface it can see.
func TestE2EWebRTC(t *testing.T) {
	needChromium(t)
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	srv := servertest.Start(t, nil)
	base := localhost(srv.URL) + "/?media=webrtc"
	dir := artifactsDir(t)

	alice := user{"alice", newBrowser(t, ctx, 1280, 800)}
	bob := user{"bob", newBrowser(t, ctx, 390, 844)}
	do(t, alice, "desktop viewport", chromedp.EmulateViewport(1280, 800))
	do(t, bob, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))

	signUp(t, alice, base)
	signUp(t, bob, base)
	addPeer(t, alice, "bob")
	addPeer(t, bob, "alice")
	callable(t, alice, "bob")
	callable(t, bob, "alice")

	clickCall(t, alice, "bob")
	state(t, alice, "ringing")
	state(t, bob, "incoming")
	wait(t, alice, "ringback", `umplugApp.tone === 'ringback'`)
	wait(t, bob, "ringtone", `umplugApp.tone === 'ring'`)
	do(t, bob, "accept", chromedp.Click("#btn-accept"))
	state(t, bob, "in-call")
	state(t, alice, "in-call")
	for _, u := range []user{alice, bob} {
		wait(t, u, "silence after ringing", `umplugApp.tone === null`)
		wait(t, u, "webrtc media", `!!umplugApp.call && !!umplugApp.call.media && umplugApp.call.media.mode === 'webrtc'`)
	}

	// Both sides: the remote video plays (a picture whose clock advances)
	// and remote audio is decoded.
	for _, u := range []user{alice, bob} {
		wait(t, u, "remote video picture", `(v => v.videoWidth > 0 && v.readyState >= 2 && !v.paused)(document.querySelector('#remote-video'))`)
		t0 := eval[float64](t, u, remoteTime)
		wait(t, u, "remote video advancing", fmt.Sprintf(`%s > %f + 0.5`, remoteTime, t0))
		wait(t, u, "placeholder gone", `document.querySelector('#remote-placeholder').hidden`)
		e := waitEnergy(t, u, "remote audio decoded", func(e float64) bool { return e > 1e-4 })
		t.Logf("%s: remote audio energy %.4f per 1.5 s", u.name, e)
		wait(t, u, "quality scored", `['good', 'fair', 'poor'].includes(document.querySelector('#quality').dataset.score)`)
		wait(t, u, "timer runs", `!document.querySelector('#call-timer').hidden && document.querySelector('#call-timer').textContent !== '0:00'`)
		ms := eval[float64](t, u, `umplugApp.call.firstFrameAt - umplugApp.call.acceptedAt`)
		q := eval[string](t, u, `document.querySelector('#quality').title`)
		st := eval[string](t, u, `JSON.stringify(umplugApp.call.media.stats())`)
		out := eval[string](t, u, `umplugApp.call.media.getStats().then(r => { const o = []; r.forEach(s => { if (s.type === 'outbound-rtp' && s.kind === 'video') o.push({fps: s.framesPerSecond, w: s.frameWidth, limit: s.qualityLimitationReason, codec: s.codecId}) }); return JSON.stringify(o) })`)
		t.Logf("%s: accept to first remote frame shown: %.0f ms; %s; signalling %s; sending video %s", u.name, ms, q, st, out)
	}
	screenshot(t, alice.ctx, dir, "desktop-in-call")
	screenshot(t, bob.ctx, dir, "phone-in-call")

	t.Run("mute", func(t *testing.T) {
		before := energy(t, bob)
		do(t, alice, "mute", chromedp.Click("#btn-mute"))
		wait(t, alice, "muted shown", `document.querySelector('#btn-mute').getAttribute('aria-pressed') === 'true' && !document.querySelector('#local-muted').hidden`)
		after := waitEnergy(t, bob, "silence after mute", func(e float64) bool { return e < 1e-6 })
		t.Logf("bob hears alice: energy %.6f per 1.5 s before mute, %.8f after", before, after)
		do(t, alice, "unmute", chromedp.Click("#btn-mute"))
		waitEnergy(t, bob, "sound after unmute", func(e float64) bool { return e > 1e-4 })
	})

	t.Run("camera-off", func(t *testing.T) {
		do(t, alice, "camera off", chromedp.Click("#btn-camera"))
		wait(t, alice, "own camera off shown", `!document.querySelector('#local-off').hidden && umplugApp.call.stream.getVideoTracks().every(t => t.readyState === 'ended')`)
		within(t, bob, 20*time.Second, "placeholder with alice's name", func(ctx context.Context) error {
			return waitJS(ctx, "placeholder", `!document.querySelector('#remote-placeholder').hidden && document.querySelector('#remote-why').textContent === 'camera off' && document.querySelector('#remote-name').textContent === 'alice'`)
		})
		if eval[bool](t, bob, `!document.querySelector('#call-unstable').hidden`) {
			t.Errorf("bob: camera off shown as an unstable connection")
		}
		screenshot(t, bob.ctx, dir, "phone-peer-camera-off")
		do(t, bob, "desktop viewport", chromedp.EmulateViewport(1280, 800))
		screenshot(t, bob.ctx, dir, "desktop-peer-camera-off")
		do(t, bob, "phone viewport again", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
		do(t, alice, "camera on", chromedp.Click("#btn-camera"))
		wait(t, alice, "own camera back", `document.querySelector('#local-off').hidden && umplugApp.call.stream.getVideoTracks().some(t => t.readyState === 'live')`)
		within(t, bob, 20*time.Second, "video back", func(ctx context.Context) error {
			return waitJS(ctx, "placeholder hidden", `document.querySelector('#remote-placeholder').hidden`)
		})
		t0 := eval[float64](t, bob, remoteTime)
		wait(t, bob, "remote video advancing again", fmt.Sprintf(`%s > %f + 0.5`, remoteTime, t0))
	})

	t.Run("switch-camera", func(t *testing.T) {
		// Choosing a camera in the settings during the call replaces the
		// track without renegotiation; the peer keeps getting video.
		do(t, alice, "open settings", chromedp.Click("#btn-call-settings"))
		wait(t, alice, "devices listed", `document.querySelector('#set-camera').options.length >= 2`)
		old := eval[string](t, alice, `umplugApp.call.stream.getVideoTracks()[0].id`)
		do(t, alice, "choose a camera", chromedp.Evaluate[chromedp.Void](`(() => { const s = document.querySelector('#set-camera'); s.value = s.options[1].value; s.dispatchEvent(new Event('change')) })()`))
		wait(t, alice, "new track", fmt.Sprintf(`umplugApp.call.stream.getVideoTracks()[0].id !== %q && umplugApp.call.stream.getVideoTracks()[0].readyState === 'live'`, old))
		do(t, alice, "close settings", chromedp.Click("#btn-settings-close"))
		t0 := eval[float64](t, bob, remoteTime)
		wait(t, bob, "remote video still advancing", fmt.Sprintf(`%s > %f + 0.5`, remoteTime, t0))
	})

	t.Run("stall", func(t *testing.T) {
		// Alice's media stops reaching the server (both senders detached
		// behind the app's back, as a dead uplink would look): bob sees
		// "connection unstable" within a few seconds, and it clears when
		// the media comes back.
		do(t, alice, "stop sending", chromedp.Evaluate[chromedp.Void](`(async () => {
			window.__saved = umplugApp.call.media.pc.getSenders().map((s) => [s, s.track])
			for (const [s] of window.__saved) await s.replaceTrack(null)
		})()`, chromedp.EvalAwaitPromise))
		within(t, bob, 20*time.Second, "unstable shown", func(ctx context.Context) error {
			return waitJS(ctx, "unstable banner", `!document.querySelector('#call-unstable').hidden && document.querySelector('#quality').dataset.score === 'poor'`)
		})
		screenshot(t, bob.ctx, dir, "phone-unstable")
		do(t, alice, "send again", chromedp.Evaluate[chromedp.Void](`(async () => {
			for (const [s, track] of window.__saved) await s.replaceTrack(track)
		})()`, chromedp.EvalAwaitPromise))
		within(t, bob, 20*time.Second, "unstable cleared", func(ctx context.Context) error {
			return waitJS(ctx, "no unstable banner", `document.querySelector('#call-unstable').hidden && document.querySelector('#remote-placeholder').hidden`)
		})
	})

	t.Run("hangup", func(t *testing.T) {
		do(t, bob, "hang up", chromedp.Click("#btn-hangup"))
		state(t, bob, "idle")
		state(t, alice, "idle")
		noticeHas(t, alice, "bob” hung up")
		noticeHas(t, bob, "You hung up")
		for _, u := range []user{alice, bob} {
			cspClean(t, u.ctx, u.name)
			wait(t, u, "media released", `!umplugApp.call && !document.querySelector('#remote-video').srcObject && !document.querySelector('#local-video').srcObject`)
		}
	})
}
