package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/user-media-plug/umplug/internal/netns"
	"github.com/user-media-plug/umplug/internal/servertest"
)

// clockCamera replaces the page's camera with a canvas that shows the
// sender's clock as a bar code: 32 bits of Date.now() (ms, modulo 2^32)
// and an 8-bit checksum, one black or white 40×40 cell per bit (a 320×240
// picture, cheap to encode), repainted every 5 ms and captured at 30 fps. The microphone stays the fake one.
// Runs in the page before the call asks for the camera.
const clockCamera = `(() => {
	const canvas = document.createElement('canvas')
	canvas.width = 320
	canvas.height = 240
	const g = canvas.getContext('2d')
	const paint = () => {
		const now = Date.now() % 4294967296
		const bits = []
		let sum = 0
		for (let i = 0; i < 32; i++) bits.push(Math.floor(now / 2 ** i) % 2)
		for (let b = 0; b < 4; b++) sum += Math.floor(now / 2 ** (8 * b)) % 256
		for (let i = 0; i < 8; i++) bits.push((sum >> i) & 1)
		g.fillStyle = '#808080'
		g.fillRect(0, 0, 320, 240)
		bits.forEach((bit, i) => {
			g.fillStyle = bit ? '#fff' : '#000'
			g.fillRect((i % 8) * 40, 20 + Math.floor(i / 8) * 40, 40, 40)
		})
	}
	paint()
	window.__clockTimer = setInterval(paint, 5)
	const video = canvas.captureStream(30).getVideoTracks()[0]
	const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices)
	navigator.mediaDevices.getUserMedia = async (c) => {
		const tracks = []
		if (c && c.audio) tracks.push(...(await gum({ audio: true })).getAudioTracks())
		if (c && c.video) tracks.push(video.clone())
		return new MediaStream(tracks)
	}
})()`

// readClock is a page function: for ms milliseconds it reads the bar code
// off every remote video frame as it is presented and returns how old each
// painted time was (ms), plus how many frames failed the checksum.
const readClock = `async (ms) => {
	const v = document.querySelector('#remote-video')
	// Read at 160×120 whatever size the frame arrives in (the sender may
	// scale it down): 20×20 cells, the middle 10×10 of each sampled.
	const canvas = document.createElement('canvas')
	canvas.width = 160
	canvas.height = 120
	const g = canvas.getContext('2d', { willReadFrequently: true })
	const delays = []
	let bad = 0
	const read = () => {
		g.drawImage(v, 0, 0, 160, 120)
		const px = g.getImageData(0, 0, 160, 120).data
		const bit = (i) => {
			const x0 = (i % 8) * 20 + 5, y0 = 10 + Math.floor(i / 8) * 20 + 5
			let s = 0, n = 0
			for (let y = y0; y < y0 + 10; y += 2) for (let x = x0; x < x0 + 10; x += 2) { const o = (y * 160 + x) * 4; s += px[o] + px[o + 1] + px[o + 2]; n += 3 }
			return s / n > 128 ? 1 : 0
		}
		let val = 0, sum = 0, check = 0
		for (let i = 0; i < 32; i++) val += bit(i) * 2 ** i
		for (let b = 0; b < 4; b++) sum += Math.floor(val / 2 ** (8 * b)) % 256
		for (let i = 0; i < 8; i++) check |= bit(32 + i) << i
		if ((sum & 255) !== check) { bad++; return }
		let d = (Date.now() % 4294967296) - val
		if (d < 0) d += 4294967296
		delays.push(d)
	}
	const end = Date.now() + ms
	await new Promise((resolve) => {
		const onFrame = () => {
			if (Date.now() >= end) { resolve(); return }
			try { read() } catch { bad++ }
			v.requestVideoFrameCallback(onFrame)
		}
		v.requestVideoFrameCallback(onFrame)
	})
	return JSON.stringify({ delays, bad })
}`

// loadavg is the machine's load average, to read the figures by.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// percentile of sorted values (nearest rank).
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// TestGlassToGlass reports (it does not assert on speed) how old the
// picture is when the receiver shows it, for the WebRTC mode and for the
// relay mode: the sender's camera is a canvas painting its clock as a bar
// code, the receiver reads it back off each presented frame and compares
// with its own clock (same machine, same clock). Prints median and p95
// over 10 s, and the time from accept to the first remote frame. Runs in a
// loopback-only network namespace (WebRTC's ICE).
//
//	go test -race -count=1 -run TestGlassToGlass -v ./web/
func TestGlassToGlass(t *testing.T) {
	if testing.Short() {
		t.Skip("a report that takes half a minute: skipped with -short")
	}
	needChromium(t)
	if !netns.Isolate(t) {
		return
	}
	srv := servertest.Start(t, nil)
	for _, mode := range []string{"webrtc", "relay"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			base := localhost(srv.URL) + "/?media=" + mode
			a := user{"g2g-a-" + mode, newBrowser(t, ctx, 800, 700)}
			b := user{"g2g-b-" + mode, newBrowser(t, ctx, 800, 700)}
			signUp(t, a, base)
			signUp(t, b, base)
			addPeer(t, a, b.name)
			addPeer(t, b, a.name)
			for _, u := range []user{a, b} {
				do(t, u, "clock camera", chromedp.Evaluate[chromedp.Void](clockCamera))
			}
			clickCall(t, a, b.name)
			state(t, b, "incoming")
			do(t, b, "accept", chromedp.Click("#btn-accept"))
			state(t, a, "in-call")
			state(t, b, "in-call")
			for _, u := range []user{a, b} {
				wait(t, u, mode+" media", fmt.Sprintf(`!!umplugApp.call && !!umplugApp.call.media && umplugApp.call.media.mode === %q`, mode))
				wait(t, u, "first remote frame", `!!umplugApp.call.firstFrameAt`)
				ms := eval[float64](t, u, `umplugApp.call.firstFrameAt - umplugApp.call.acceptedAt`)
				t.Logf("%s: %s: accept to first remote frame shown: %.0f ms", mode, u.name, ms)
			}
			var res struct {
				Delays []float64
				Bad    int
			}
			within(t, b, 30*time.Second, "read the clock", func(ctx context.Context) error {
				s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(`+readClock+`)(10000)`, chromedp.EvalAwaitPromise))
				if err != nil {
					return err
				}
				return json.Unmarshal([]byte(s), &res)
			})
			// A report, not a timed test: only no picture at all is a failure.
			if len(res.Delays) == 0 {
				t.Fatalf("%s: no frame with a readable clock in 10 s (%d unreadable)", mode, res.Bad)
			}
			slices.Sort(res.Delays)
			t.Logf("%s: glass-to-glass %s -> %s over 10 s: median %.0f ms, p95 %.0f ms, min %.0f ms, max %.0f ms (%d frames read, %d unreadable); load average %s",
				mode, a.name, b.name, percentile(res.Delays, 50), percentile(res.Delays, 95), res.Delays[0], res.Delays[len(res.Delays)-1], len(res.Delays), res.Bad, loadavg())
			do(t, a, "hang up", chromedp.Click("#btn-hangup"))
			state(t, a, "idle")
			state(t, b, "idle")
		})
	}
}
