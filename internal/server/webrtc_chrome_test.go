package server_test

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/netns"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// chromeBob is a minimal browser device for bob, written against contract
// section 10 only (not the web app): it logs in, accepts the call, and on
// force-call opens /media in webrtc mode, answers every offer with its fake
// camera and microphone, and trickles candidates.
const chromeBob = `
window.logs = [];
(async () => {
  const log = (m) => window.logs.push(m);
  try {
    const base = location.origin.replace('http', 'ws');
    const meta = new WebSocket(base + '/meta');
    await new Promise(r => meta.onopen = r);
    meta.send(JSON.stringify({type: 'whoami', user: 'bob', password: PASSWORD, tx: 0.1}));
    const fc = await new Promise(resolve => {
      meta.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === 'res' && m.tx === 0.1) window.loggedIn = m.ok;
        if (m.type === 'call') meta.send(JSON.stringify({type: 'accept', user: 'bob', peer: 'alice', tx: m.tx}));
        if (m.type === 'force-call') resolve(m);
      };
    });
    const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
    const pc = new RTCPeerConnection();
    window.pc = pc;
    const ws = new WebSocket(base + fc.media);
    await new Promise(r => ws.onopen = r);
    ws.send(JSON.stringify({type: 'media', ticket: fc.ticket, mode: 'webrtc'}));
    let added = false;
    pc.onicecandidate = e => ws.send(JSON.stringify({type: 'candidate', candidate: e.candidate ? e.candidate.toJSON() : null}));
    pc.onconnectionstatechange = () => log('state ' + pc.connectionState);
    const handle = async (m) => {
      log('media ' + m.type);
      if (m.type === 'offer') {
        await pc.setRemoteDescription({type: 'offer', sdp: m.sdp});
        if (!added) { for (const t of stream.getTracks()) pc.addTrack(t, stream); added = true; }
        await pc.setLocalDescription(await pc.createAnswer());
        ws.send(JSON.stringify({type: 'answer', sdp: pc.localDescription.sdp}));
      } else if (m.type === 'candidate') {
        if (m.candidate) await pc.addIceCandidate(m.candidate);
      } else if (m.type === 'paired') {
        window.paired = true;
      }
    };
    let q = Promise.resolve();
    ws.onmessage = e => { const m = JSON.parse(e.data); q = q.then(() => handle(m)).catch(err => log('error ' + err)); };
    ws.onclose = e => log('media closed ' + e.code + ' ' + e.reason);
  } catch (err) { log('fatal ' + err); }
})();
true`

const chromeStats = `(async () => {
  const out = {};
  if (!window.pc) return JSON.stringify(out);
  (await window.pc.getStats()).forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') out.videoIn = r.packetsReceived; });
  return JSON.stringify(out);
})()`

// TestWebRTCChromeInterop: a real Chromium (fake devices) and a pion client
// through the server: paired on both sides, Chromium's camera and
// microphone reach alice, alice's video reaches Chromium, and Chromium's
// REMB (its bandwidth estimate) and PLI (it cannot decode the synthetic
// frames) reach alice with her SSRC. Skipped without /usr/bin/chromium
// (failed under CI=true).
func TestWebRTCChromeInterop(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing", chromium)
		}
		t.Skipf("%s is missing", chromium)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := servertest.Start(t, nil)
	mutual(t, s, "alice", "bob")
	a, err := client.Dial(ctx, s.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Login(ctx, "alice", pw); err != nil {
		t.Fatal(err)
	}

	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox,
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		// The namespace has only loopback: let Chromium gather it, and
		// give plain IPs instead of mDNS names.
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("disable-dev-shm-usage", true))
	defer cancelAlloc()
	bctx, cancelTab := chromedp.NewContext(actx)
	defer cancelTab()
	pwJSON, _ := json.Marshal(pw)
	if err := chromedp.Do(bctx, chromedp.Navigate(s.URL+"/healthz")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool]("const PASSWORD = "+string(pwJSON)+";"+chromeBob)); err != nil {
		t.Fatal(err)
	}
	logs := func() {
		l, _ := chromedp.Run(bctx, chromedp.Evaluate[[]string](`window.logs`))
		for _, line := range l {
			t.Log("chromium:", line)
		}
	}
	defer logs()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	poll := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-tick.C:
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	poll("chromium logged in", func() bool {
		ok, _ := chromedp.Run(bctx, chromedp.Evaluate[bool](`!!window.loggedIn`))
		return ok
	})
	if _, err := a.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	fc := nextEvent(ctx, t, a, protocol.TypeForceCall)

	video := newTrack(t, client.CodecVP8, "video")
	var mu sync.Mutex
	kinds := map[string]int{}
	var remb, pli int
	wa, err := a.WebRTC(ctx, fc, &client.WebRTCOptions{Tracks: []webrtc.TrackLocal{video}, ICEIPs: loopbackOnly,
		OnTrack: func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				mu.Lock()
				kinds[tr.Kind().String()]++
				mu.Unlock()
			}
		},
		OnRTCP: func(_ webrtc.TrackLocal, pkts []rtcp.Packet) {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range pkts {
				switch p.(type) {
				case *rtcp.ReceiverEstimatedMaximumBitrate:
					remb++
				case *rtcp.PictureLossIndication:
					pli++
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	waitPaired(ctx, t, wa)
	sendLoop(t, video, "alice-video", 96)
	poll("chromium paired", func() bool {
		ok, _ := chromedp.Run(bctx, chromedp.Evaluate[bool](`!!window.paired`))
		return ok
	})
	poll("chromium's media at alice and REMB/PLI from chromium", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return kinds["audio"] > 20 && kinds["video"] > 20 && remb > 0 && pli > 0
	})
	poll("alice's video in chromium", func() bool {
		st, _ := chromedp.Run(bctx, chromedp.Evaluate[string](chromeStats, chromedp.EvalAwaitPromise))
		var v struct{ VideoIn int }
		_ = json.Unmarshal([]byte(st), &v)
		return v.VideoIn > 20
	})
}
