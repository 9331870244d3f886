package server_test

// WebRTC mode (contract section 10) end to end: two pion clients (package
// client) through a real server over real sockets. Every test runs in a
// private network namespace with only loopback (internal/netns), with mDNS
// off and ICE candidates restricted to 127.0.0.1 on both ends.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/clock"
	"github.com/user-media-plug/umplug/internal/netns"
	"github.com/user-media-plug/umplug/internal/server"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

const rtcTimeout = 30 * time.Second

var loopbackOnly = []net.IP{net.IPv4(127, 0, 0, 1)}

// rtcCall logs alice and bob in, has alice call bob and bob accept, and
// returns both clients with their force-call events.
func rtcCall(ctx context.Context, t *testing.T, s *servertest.Server) (a, b *client.Client, fca, fcb protocol.Event) {
	t.Helper()
	mutual(t, s, "alice", "bob")
	var cs [2]*client.Client
	for i, name := range []string{"alice", "bob"} {
		c, err := client.Dial(ctx, s.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Login(ctx, name, pw); err != nil {
			t.Fatal(err)
		}
		cs[i] = c
	}
	a, b = cs[0], cs[1]
	tx, err := a.Call(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(ctx, t, b, protocol.TypeCall)
	if err := b.Accept(ctx, "alice", tx); err != nil {
		t.Fatal(err)
	}
	return a, b, nextEvent(ctx, t, a, protocol.TypeForceCall), nextEvent(ctx, t, b, protocol.TypeForceCall)
}

// payload is the synthetic RTP payload number seq of the stream tag: a
// marker that names it, then bytes derived from both, so that any change
// on the way shows.
func payload(tag string, seq int) []byte {
	p := []byte(fmt.Sprintf("%s#%08d|", tag, seq))
	for i := range 200 {
		p = append(p, byte(seq*7+i))
	}
	return p
}

// checkPayload returns the stream tag of p if p is intact.
func checkPayload(p []byte) (string, bool) {
	head, _, ok := bytes.Cut(p, []byte("|"))
	if !ok {
		return "", false
	}
	tag, num, ok := strings.Cut(string(head), "#")
	if !ok {
		return "", false
	}
	seq, err := strconv.Atoi(num)
	if err != nil {
		return "", false
	}
	return tag, bytes.Equal(p, payload(tag, seq))
}

// sendLoop writes packets of stream tag to track every 5 ms until stop.
func sendLoop(t *testing.T, track *webrtc.TrackLocalStaticRTP, tag string, pt uint8) (stop func()) {
	return sendLoopFrom(t, track, tag, pt, 0)
}

// sendLoopFrom is sendLoop with RTP sequence numbers starting at seq0
// (timestamps at seq0·3000), as a restarted sender picks them at random.
func sendLoopFrom(t *testing.T, track *webrtc.TrackLocalStaticRTP, tag string, pt uint8, seq0 uint16) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for seq := 0; ; seq++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq0 + uint16(seq),
				Timestamp: uint32(int(seq0)+seq) * 3000, Marker: true}, Payload: payload(tag, seq)}
			_ = track.WriteRTP(pkt)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func newTrack(t *testing.T, c webrtc.RTPCodecCapability, id string) *webrtc.TrackLocalStaticRTP {
	t.Helper()
	tr, err := webrtc.NewTrackLocalStaticRTP(c, id, "umplug-test")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// collector records what a device receives from its peer.
type collector struct {
	mu     sync.Mutex // guards the following
	got    map[string]int
	first  map[string]uint16 // RTP sequence number of the first and the last packet by tag
	last   map[string]uint16
	bad    int
	tracks map[string]*webrtc.TrackRemote // by kind
	rtcp   []rtcp.Packet                  // feedback about our own tracks

	poke chan struct{}
}

func newCollector() *collector {
	return &collector{got: map[string]int{}, first: map[string]uint16{}, last: map[string]uint16{}, tracks: map[string]*webrtc.TrackRemote{}, poke: make(chan struct{}, 1)}
}

func (c *collector) wake() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

func (c *collector) onTrack(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	c.mu.Lock()
	c.tracks[tr.Kind().String()] = tr
	c.mu.Unlock()
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		tag, ok := checkPayload(p.Payload)
		c.mu.Lock()
		if ok {
			if c.got[tag] == 0 {
				c.first[tag] = p.SequenceNumber
			}
			c.last[tag] = p.SequenceNumber
			c.got[tag]++
		} else {
			c.bad++
		}
		c.mu.Unlock()
		c.wake()
	}
}

func (c *collector) onRTCP(_ webrtc.TrackLocal, pkts []rtcp.Packet) {
	c.mu.Lock()
	c.rtcp = append(c.rtcp, pkts...)
	c.mu.Unlock()
	c.wake()
}

// wait waits until cond (called under c.mu) holds.
func (c *collector) wait(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.poke:
		case <-ctx.Done():
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("timed out waiting for %s (received %v, %d corrupted)", what, c.got, c.bad)
		}
	}
}

func (c *collector) waitPackets(ctx context.Context, t *testing.T, tag string, n int) {
	t.Helper()
	c.wait(ctx, t, fmt.Sprintf("%d packets of %s", n, tag), func() bool { return c.got[tag] >= n })
}

func (c *collector) opts(tracks ...webrtc.TrackLocal) *client.WebRTCOptions {
	return &client.WebRTCOptions{Tracks: tracks, OnTrack: c.onTrack, OnRTCP: c.onRTCP, ICEIPs: loopbackOnly}
}

func waitPaired(ctx context.Context, t *testing.T, ws ...*client.WebRTC) {
	t.Helper()
	for _, w := range ws {
		select {
		case <-w.Paired():
		case <-w.Done():
			t.Fatalf("media ended before paired: %v", w.Err())
		case <-ctx.Done():
			t.Fatal("not paired")
		}
	}
}

func waitDone(ctx context.Context, t *testing.T, w *client.WebRTC) error {
	t.Helper()
	select {
	case <-w.Done():
		return w.Err()
	case <-ctx.Done():
		t.Fatal("media connection did not end")
		return nil
	}
}

func ssrcOf(t *testing.T, s *webrtc.RTPSender) uint32 {
	t.Helper()
	enc := s.GetParameters().Encodings
	if len(enc) == 0 {
		t.Fatal("sender without encodings")
	}
	return uint32(enc[0].SSRC)
}

// rtcPair is a running WebRTC call between alice (a) and bob (b), both
// sending audio and video.
type rtcPair struct {
	a, b         *client.Client
	wa, wb       *client.WebRTC
	ca, cb       *collector
	stopA, stopB func()
}

func startRTCPair(ctx context.Context, t *testing.T, s *servertest.Server) *rtcPair {
	t.Helper()
	p := &rtcPair{ca: newCollector(), cb: newCollector()}
	var fca, fcb protocol.Event
	p.a, p.b, fca, fcb = rtcCall(ctx, t, s)
	aAudio, aVideo := newTrack(t, client.CodecOpus, "audio"), newTrack(t, client.CodecVP8, "video")
	bAudio, bVideo := newTrack(t, client.CodecOpus, "audio"), newTrack(t, client.CodecVP8, "video")
	var err error
	if p.wa, err = p.a.WebRTC(ctx, fca, p.ca.opts(aAudio, aVideo)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.wa.Close() })
	if p.wb, err = p.b.WebRTC(ctx, fcb, p.cb.opts(bAudio, bVideo)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.wb.Close() })
	waitPaired(ctx, t, p.wa, p.wb)
	sa1 := sendLoop(t, aAudio, "alice-audio", 111)
	sa2 := sendLoop(t, aVideo, "alice-video", 96)
	sb1 := sendLoop(t, bAudio, "bob-audio", 111)
	sb2 := sendLoop(t, bVideo, "bob-video", 96)
	p.stopA = func() { sa1(); sa2() }
	p.stopB = func() { sb1(); sb2() }
	return p
}

func TestWebRTCForwardsBothWays(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	p := startRTCPair(ctx, t, s)
	if p.wa.Peer() != "bob" || p.wb.Peer() != "alice" {
		t.Fatalf("peers %q, %q", p.wa.Peer(), p.wb.Peer())
	}
	for _, w := range []struct {
		c   *collector
		tag string
	}{{p.cb, "alice-audio"}, {p.cb, "alice-video"}, {p.ca, "bob-audio"}, {p.ca, "bob-video"}} {
		w.c.waitPackets(ctx, t, w.tag, 50)
	}
	for name, c := range map[string]*collector{"alice": p.ca, "bob": p.cb} {
		c.mu.Lock()
		if c.bad != 0 {
			t.Errorf("%s received %d corrupted packets", name, c.bad)
		}
		for tag := range c.got {
			if strings.HasPrefix(tag, name) {
				t.Errorf("%s received its own stream %s", name, tag)
			}
		}
		c.mu.Unlock()
	}
	// A receiver joining gets a keyframe: the server sends each video
	// sender a PLI (sender SSRC 0) for its new receiver.
	videoSSRC := ssrcOf(t, p.wa.Senders()[1])
	p.ca.wait(ctx, t, "a join PLI at alice", func() bool {
		for _, pk := range p.ca.rtcp {
			if pli, ok := pk.(*rtcp.PictureLossIndication); ok && pli.MediaSSRC == videoSSRC {
				return true
			}
		}
		return false
	})
}

// TestWebRTCFeedbackReachesSender: bob's PLI and REMB about alice's video
// arrive at alice, with the media SSRC rewritten to alice's own.
func TestWebRTCFeedbackReachesSender(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	p := startRTCPair(ctx, t, s)
	p.cb.waitPackets(ctx, t, "alice-video", 10)
	p.cb.mu.Lock()
	recvd := p.cb.tracks["video"]
	p.cb.mu.Unlock()
	videoSSRC := ssrcOf(t, p.wa.Senders()[1])
	const marker = 0xC0FFEE
	const bitrate = 123456
	// Feedback is UDP: repeat it until it shows (bounded by ctx).
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var gotPLI, gotREMB bool
	for !gotPLI || !gotREMB {
		err := p.wb.PeerConnection().WriteRTCP([]rtcp.Packet{
			&rtcp.PictureLossIndication{SenderSSRC: marker, MediaSSRC: uint32(recvd.SSRC())},
			&rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: marker, Bitrate: bitrate, SSRCs: []uint32{uint32(recvd.SSRC())}},
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("feedback did not reach the sender: PLI %v, REMB %v", gotPLI, gotREMB)
		}
		p.ca.mu.Lock()
		for _, pk := range p.ca.rtcp {
			switch r := pk.(type) {
			case *rtcp.PictureLossIndication:
				if r.SenderSSRC == marker && r.MediaSSRC == videoSSRC {
					gotPLI = true
				}
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				if r.Bitrate == bitrate && len(r.SSRCs) == 1 && r.SSRCs[0] == videoSSRC {
					gotREMB = true
				}
			}
		}
		p.ca.mu.Unlock()
	}
}

// TestWebRTCRenegotiatesLateTrack: bob sends nothing and arrives first;
// alice's audio arrives, then her video only later. bob is offered each
// track as it arrives and receives both.
func TestWebRTCRenegotiatesLateTrack(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	a, b, fca, fcb := rtcCall(ctx, t, s)
	ca, cb := newCollector(), newCollector()
	wb, err := b.WebRTC(ctx, fcb, cb.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer wb.Close()
	aAudio, aVideo := newTrack(t, client.CodecOpus, "audio"), newTrack(t, client.CodecVP8, "video")
	wa, err := a.WebRTC(ctx, fca, ca.opts(aAudio, aVideo))
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	waitPaired(ctx, t, wa, wb)
	sendLoop(t, aAudio, "alice-audio", 111)
	cb.waitPackets(ctx, t, "alice-audio", 20)
	cb.mu.Lock()
	_, early := cb.tracks["video"]
	cb.mu.Unlock()
	if early {
		t.Fatal("bob has a video track before alice sent video")
	}
	sendLoop(t, aVideo, "alice-video", 96)
	cb.waitPackets(ctx, t, "alice-video", 20)
}

// TestWebRTCStolenTicket: a third party presenting a ticket that was
// already used gets 1008 and not one signalling message (so no offer, no
// media); the call goes on unharmed.
func TestWebRTCStolenTicket(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	a, b, fca, fcb := rtcCall(ctx, t, s)
	ca, cb := newCollector(), newCollector()
	aVideo := newTrack(t, client.CodecVP8, "video")
	startPaired(ctx, t, a, b, fca, fcb, ca.opts(aVideo), cb.opts())
	sendLoop(t, aVideo, "alice-video", 96)

	for _, ticket := range []string{fca.Ticket, fcb.Ticket} {
		c, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"/media", nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := c.WriteJSON(protocol.MediaHello{Type: protocol.TypeMedia, Ticket: ticket, Mode: protocol.MediaModeWebRTC}); err != nil {
			t.Fatal(err)
		}
		_, msg, err := c.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.ClosePolicy {
			t.Fatalf("reused ticket: got message %q, err %v; want close 1008 and nothing else", msg, err)
		}
		c.Close()
	}
	cb.waitPackets(ctx, t, "alice-video", 20)
}

// TestWebRTCNothingAfterUnpair: once the call is unpaired both peer
// connections and /media connections close (1000 unpaired) and the server
// forwards not one more packet, although alice keeps sending.
func TestWebRTCNothingAfterUnpair(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	reg := prometheus.NewRegistry()
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) { c.Registry = reg }})
	a, b, fca, fcb := rtcCall(ctx, t, s)
	ca, cb := newCollector(), newCollector()
	aVideo := newTrack(t, client.CodecVP8, "video")
	wa, wb := startPaired(ctx, t, a, b, fca, fcb, ca.opts(aVideo), cb.opts())
	sendLoop(t, aVideo, "alice-video", 96)
	cb.waitPackets(ctx, t, "alice-video", 20)

	if err := b.Unpair(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	// bob's /media closes with 1000 "unpaired" only after the server
	// stopped forwarding: from here on the forwarded count is final.
	if err := waitDone(ctx, t, wb); !errors.Is(err, client.ErrUnpaired) {
		t.Fatalf("bob's media ended with %v, want ErrUnpaired", err)
	}
	atUnpair := forwarded(t, reg)
	cb.mu.Lock()
	received := cb.got["alice-video"]
	cb.mu.Unlock()
	if err := waitDone(ctx, t, wa); !errors.Is(err, client.ErrUnpaired) {
		t.Fatalf("alice's media ended with %v, want ErrUnpaired", err)
	}
	if st := wb.PeerConnection().ConnectionState(); st != webrtc.PeerConnectionStateClosed {
		t.Errorf("bob's peer connection is %s", st)
	}
	if received > atUnpair {
		t.Errorf("bob received %d packets, the server forwarded %d", received, atUnpair)
	}
	if later := forwarded(t, reg); later != atUnpair {
		t.Errorf("%d packets forwarded after the unpair", later-atUnpair)
	}
	cb.mu.Lock()
	after := cb.got["alice-video"] - received
	cb.mu.Unlock()
	if after != 0 {
		t.Errorf("bob received %d packets after his media connection closed", after)
	}
}

// forwarded reads the server's count of forwarded RTP packets.
func forwarded(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "umplug_media_webrtc_forwarded_packets_total" {
			return int(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	t.Fatal("no forwarded packets metric")
	return 0
}

// TestWebRTCNeverConnects: bob presents his ticket but never answers the
// offer, so his peer connection never comes up; after MediaWait (fake
// clock) the call ends as disconnected and alice's media closes.
func TestWebRTCNeverConnects(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	fake := clock.NewFake()
	s := servertest.Start(t, &servertest.Options{Clock: fake})
	a, _, fca, fcb := rtcCall(ctx, t, s)
	ca := newCollector()
	wa, err := a.WebRTC(ctx, fca, ca.opts(newTrack(t, client.CodecVP8, "video")))
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	wa.PeerConnection().OnConnectionStateChange(func(webrtc.PeerConnectionState) { ca.wake() })
	c, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"/media", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteJSON(protocol.MediaHello{Type: protocol.TypeMedia, Ticket: fcb.Ticket, Mode: protocol.MediaModeWebRTC}); err != nil {
		t.Fatal(err)
	}
	var offer protocol.Signal
	if err := c.ReadJSON(&offer); err != nil || offer.Type != protocol.TypeOffer || !strings.Contains(offer.SDP, "m=video") {
		t.Fatalf("bob's first message: %+v, %v; want an offer", offer, err)
	}
	// The server is ICE-lite: it never sends connectivity checks of its own.
	if !strings.Contains(offer.SDP, "a=ice-lite") {
		t.Fatalf("offer without a=ice-lite:\n%s", offer.SDP)
	}
	// alice's side comes up; bob's never does.
	ca.wait(ctx, t, "alice connected", func() bool {
		return wa.PeerConnection().ConnectionState() == webrtc.PeerConnectionStateConnected
	})
	fake.Advance(protocol.MediaWait)
	ev := nextEvent(ctx, t, a, protocol.TypeUnpair)
	if ev.Reason != protocol.ReasonDisconnected || ev.User != "bob" {
		t.Fatalf("unpair %+v, want bob disconnected", ev)
	}
	if err := waitDone(ctx, t, wa); !errors.Is(err, client.ErrUnpaired) {
		t.Fatalf("alice's media ended with %v, want ErrUnpaired", err)
	}
	select {
	case <-wa.Paired():
		t.Fatal("alice was told paired")
	default:
	}
}

// TestWebRTCOverTCP: a device whose network allows only TCP reaches the
// server's ICE-TCP port, and media flows both ways.
func TestWebRTCOverTCP(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	a, b, fca, fcb := rtcCall(ctx, t, s)
	ca, cb := newCollector(), newCollector()
	tcpOnly := func(o *client.WebRTCOptions) *client.WebRTCOptions {
		o.Configure = func(se *webrtc.SettingEngine) {
			se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeTCP4})
		}
		return o
	}
	aVideo, bVideo := newTrack(t, client.CodecVP8, "video"), newTrack(t, client.CodecVP8, "video")
	wa, err := a.WebRTC(ctx, fca, tcpOnly(ca.opts(aVideo)))
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	wb, err := b.WebRTC(ctx, fcb, tcpOnly(cb.opts(bVideo)))
	if err != nil {
		t.Fatal(err)
	}
	defer wb.Close()
	waitPaired(ctx, t, wa, wb)
	sendLoop(t, aVideo, "alice-video", 96)
	sendLoop(t, bVideo, "bob-video", 96)
	cb.waitPackets(ctx, t, "alice-video", 20)
	ca.waitPackets(ctx, t, "bob-video", 20)
	pair, err := wa.PeerConnection().SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		t.Fatalf("selected pair: %v, %v", pair, err)
	}
	if pair.Local.Protocol != webrtc.ICEProtocolTCP {
		t.Fatalf("selected pair %s is not TCP", pair)
	}
}

// TestWebRTCModeMismatch: alice in relay mode, bob in webrtc mode: the
// call ends as disconnected (bob came second and is blamed).
func TestWebRTCModeMismatch(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	a, b, fca, fcb := rtcCall(ctx, t, s)
	ma, err := a.Media(ctx, fca)
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Close()
	wb, err := b.WebRTC(ctx, fcb, newCollector().opts())
	if err != nil {
		t.Fatal(err)
	}
	defer wb.Close()
	ev := nextEvent(ctx, t, a, protocol.TypeUnpair)
	if ev.Reason != protocol.ReasonDisconnected || ev.User != "bob" {
		t.Fatalf("unpair %+v, want bob disconnected", ev)
	}
	if err := waitDone(ctx, t, wb); !errors.Is(err, client.ErrUnpaired) {
		t.Fatalf("bob's media ended with %v", err)
	}
}

// TestWebRTCDisabled: a server without the WebRTC mode closes a webrtc
// hello with 1003 and keeps the ticket, which then works in relay mode.
func TestWebRTCDisabled(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) { c.Media.WebRTC = nil }})
	a, b, fca, fcb := rtcCall(ctx, t, s)
	wa, err := a.WebRTC(ctx, fca, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ce *websocket.CloseError
	if err := waitDone(ctx, t, wa); !errors.As(err, &ce) || ce.Code != protocol.CloseUnsupported {
		t.Fatalf("webrtc on a relay-only server ended with %v, want close 1003", err)
	}
	ma, err := a.Media(ctx, fca)
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Close()
	mb, err := b.Media(ctx, fcb)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	for _, m := range []*client.Media{ma, mb} {
		select {
		case <-m.Paired():
		case <-m.Done():
			t.Fatalf("relay after a refused webrtc hello: %v", m.Err())
		case <-ctx.Done():
			t.Fatal("not paired")
		}
	}
}

// TestWebRTCShutdown: a server shutdown ends a WebRTC call like an unpair.
func TestWebRTCShutdown(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	p := startRTCPair(ctx, t, s)
	p.cb.waitPackets(ctx, t, "alice-video", 10)
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := s.Server.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*client.WebRTC{p.wa, p.wb} {
		if err := waitDone(ctx, t, w); !errors.Is(err, client.ErrUnpaired) {
			t.Fatalf("media ended with %v, want ErrUnpaired", err)
		}
	}
}

// TestWebRTCPeerConnectionClosed: a device that closes its peer connection
// (DTLS close) but keeps /media open has left: the call ends as
// disconnected.
func TestWebRTCPeerConnectionClosed(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	p := startRTCPair(ctx, t, s)
	p.cb.waitPackets(ctx, t, "alice-video", 10)
	p.stopA()
	if err := p.wa.PeerConnection().Close(); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(ctx, t, p.b, protocol.TypeUnpair)
	if ev.Reason != protocol.ReasonDisconnected || ev.User != "alice" {
		t.Fatalf("unpair %+v, want alice disconnected", ev)
	}
	if err := waitDone(ctx, t, p.wb); !errors.Is(err, client.ErrUnpaired) {
		t.Fatalf("bob's media ended with %v", err)
	}
}

// TestWebRTCNackRetransmits: a NACK from the receiver is answered by the
// server's NACK responder with the packet again, intact.
func TestWebRTCNackRetransmits(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	a, b, fca, fcb := rtcCall(ctx, t, s)
	var mu sync.Mutex
	seen := map[uint16]int{}
	var track *webrtc.TrackRemote
	poke := make(chan struct{}, 1)
	wb, err := b.WebRTC(ctx, fcb, &client.WebRTCOptions{ICEIPs: loopbackOnly,
		// bob asks again for a packet he has: SRTP would drop the copy as a
		// replay, which a real loss would not be.
		Configure: func(se *webrtc.SettingEngine) { se.DisableSRTPReplayProtection(true) },
		OnTrack: func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			mu.Lock()
			track = tr
			mu.Unlock()
			for {
				p, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				if _, ok := checkPayload(p.Payload); !ok {
					t.Errorf("corrupted packet %d", p.SequenceNumber)
				}
				mu.Lock()
				seen[p.SequenceNumber]++
				mu.Unlock()
				select {
				case poke <- struct{}{}:
				default:
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer wb.Close()
	aVideo := newTrack(t, client.CodecVP8, "video")
	wa, err := a.WebRTC(ctx, fca, newCollector().opts(aVideo))
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	waitPaired(ctx, t, wa, wb)
	sendLoop(t, aVideo, "alice-video", 96)
	var target uint16
	for found := false; !found; {
		select {
		case <-poke:
		case <-ctx.Done():
			t.Fatal("no video")
		}
		mu.Lock()
		if len(seen) >= 20 {
			for sq := range seen {
				target, found = sq, true
				break
			}
		}
		mu.Unlock()
	}
	// Ask until the copy shows (RTCP is UDP), for the packet already had.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		mu.Lock()
		n, tr := seen[target], track
		mu.Unlock()
		if n >= 2 {
			return
		}
		nack := &rtcp.TransportLayerNack{MediaSSRC: uint32(tr.SSRC()), Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{target})}
		if err := wb.PeerConnection().WriteRTCP([]rtcp.Packet{nack}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("packet %d not retransmitted", target)
		}
	}
}

// TestWebRTCDeviceRenegotiates: bob joins without a camera, adds one later
// and asks for a fresh offer ({type:"renegotiate"}); alice then receives it.
func TestWebRTCDeviceRenegotiates(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	a, b, fca, fcb := rtcCall(ctx, t, s)
	ca, cb := newCollector(), newCollector()
	_, wb := startPaired(ctx, t, a, b, fca, fcb, ca.opts(), cb.opts())
	bVideo := newTrack(t, client.CodecVP8, "video")
	// pion reuses the video transceiver the server's offer created.
	if _, err := wb.PeerConnection().AddTrack(bVideo); err != nil {
		t.Fatal(err)
	}
	if err := wb.Renegotiate(); err != nil {
		t.Fatal(err)
	}
	sendLoop(t, bVideo, "bob-video", 96)
	ca.waitPackets(ctx, t, "bob-video", 20)
}

// TestWebRTCPortsClosedOnShutdown: the ICE UDP and TCP listeners belong to
// the server (on 127.0.0.1 only, as configured) and are released by its
// shutdown. No traffic: nothing to isolate.
func TestWebRTCPortsClosedOnShutdown(t *testing.T) {
	s := servertest.Start(t, nil)
	udp, tcp := s.Server.Media().ICEAddrs()
	if len(udp) != 1 || tcp == nil {
		t.Fatalf("ICE listens on %v and %v, want one UDP and one TCP address", udp, tcp)
	}
	for _, a := range append(udp, tcp) {
		if h, _, _ := net.SplitHostPort(a.String()); h != "127.0.0.1" {
			t.Fatalf("ICE listens on %s, want 127.0.0.1 only", a)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Server.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	u, err := net.ListenUDP("udp", udp[0].(*net.UDPAddr))
	if err != nil {
		t.Fatalf("UDP port still held after shutdown: %v", err)
	}
	u.Close()
	l, err := net.Listen("tcp", tcp.String())
	if err != nil {
		t.Fatalf("TCP port still held after shutdown: %v", err)
	}
	l.Close()
}

// TestWebRTCUnpairDuringSetup: hanging up while the WebRTC media is still
// being set up (one side connected, or both racing ICE and DTLS) ends
// every media connection as unpaired; the package's leak check then
// verifies that no peer connection goroutine is left behind.
func TestWebRTCUnpairDuringSetup(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	for _, both := range []bool{false, true} {
		t.Run(fmt.Sprintf("both=%v", both), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
			defer cancel()
			s := servertest.Start(t, nil)
			a, b, fca, fcb := rtcCall(ctx, t, s)
			track := newTrack(t, client.CodecVP8, "video")
			sendLoop(t, track, "alice-video", 96)
			wa, err := a.WebRTC(ctx, fca, newCollector().opts(track))
			if err != nil {
				t.Fatal(err)
			}
			defer wa.Close()
			// alice's ticket is in (her first offer arrived), so the
			// hang-up cannot overtake it.
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for wa.PeerConnection().RemoteDescription() == nil {
				select {
				case <-tick.C:
				case <-ctx.Done():
					t.Fatal("no offer")
				}
			}
			ws := []*client.WebRTC{wa}
			if both {
				wb, err := b.WebRTC(ctx, fcb, newCollector().opts())
				if err != nil {
					t.Fatal(err)
				}
				defer wb.Close()
				ws = append(ws, wb)
			}
			if err := b.Unpair(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
			for i, w := range ws {
				err := waitDone(ctx, t, w)
				// bob's hello may come after the hang-up: then his ticket
				// is dead (1008), which is right too.
				if !errors.Is(err, client.ErrUnpaired) && !(i == 1 && errors.Is(err, client.ErrTicketRefused)) {
					t.Fatalf("media %d ended with %v, want ErrUnpaired", i, err)
				}
			}
		})
	}
}

// TestWebRTCH264: a device that sends H.264 (both ends support it) has it
// forwarded as H.264.
func TestWebRTCH264(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, nil)
	a, b, fca, fcb := rtcCall(ctx, t, s)
	ca, cb := newCollector(), newCollector()
	aVideo := newTrack(t, client.CodecH264, "video")
	startPaired(ctx, t, a, b, fca, fcb, ca.opts(aVideo), cb.opts())
	sendLoop(t, aVideo, "alice-video", 102)
	cb.waitPackets(ctx, t, "alice-video", 20)
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if c := cb.tracks["video"].Codec(); c.MimeType != webrtc.MimeTypeH264 || c.PayloadType != 102 {
		t.Fatalf("bob receives %s (PT %d), want H.264", c.MimeType, c.PayloadType)
	}
}

// TestWebRTCSignallingPinged: the otherwise idle signalling WebSocket is
// pinged (proxies cut idle WebSockets), here every 20 ms.
func TestWebRTCSignallingPinged(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, &servertest.Options{Configure: func(c *server.Config) {
		c.Media.WebRTC.PingInterval = 20 * time.Millisecond
	}})
	_, _, fca, _ := rtcCall(ctx, t, s)
	c, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"/media", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pings := make(chan struct{}, 10)
	c.SetPingHandler(func(string) error {
		select {
		case pings <- struct{}{}:
		default:
		}
		return nil
	})
	if err := c.WriteJSON(protocol.MediaHello{Type: protocol.TypeMedia, Ticket: fca.Ticket, Mode: protocol.MediaModeWebRTC}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	for range 2 {
		select {
		case <-pings:
		case <-ctx.Done():
			t.Fatal("no ping")
		}
	}
}

// startPaired starts WebRTC media for both devices of a call (a with oa,
// b with ob), closes them when the test ends, and waits until both are
// paired.
func startPaired(ctx context.Context, t *testing.T, a, b *client.Client, fca, fcb protocol.Event, oa, ob *client.WebRTCOptions) (wa, wb *client.WebRTC) {
	t.Helper()
	wa, err := a.WebRTC(ctx, fca, oa)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wa.Close() })
	wb, err = b.WebRTC(ctx, fcb, ob)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wb.Close() })
	waitPaired(ctx, t, wa, wb)
	return wa, wb
}
