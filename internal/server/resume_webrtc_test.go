package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/netns"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// TestResumeWebRTC: alice and bob talk in WebRTC mode; alice's /meta drops
// and she resumes her device (client.Reconnect). Her fresh force-call's
// ticket gets her a new peer connection with the server, paired again,
// while bob's peer connection stays up untouched: he keeps receiving, now
// from alice's new tracks (fed into the copies he already receives, no
// renegotiation, renumbered to follow the old ones), alice's new connection
// receives bob's tracks, and alice's new video sender is asked for a keyframe.
func TestResumeWebRTC(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtcTimeout)
	defer cancel()
	s := servertest.Start(t, &servertest.Options{ResumeGrace: time.Minute})
	mutualBye(t, s, "alice", "bob")
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
	a, b := cs[0], cs[1]
	tx, err := a.Call(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(ctx, t, b, protocol.TypeCall)
	if err := b.Accept(ctx, "alice", tx); err != nil {
		t.Fatal(err)
	}
	fca, fcb := nextEvent(ctx, t, a, protocol.TypeForceCall), nextEvent(ctx, t, b, protocol.TypeForceCall)
	ca, cb := newCollector(), newCollector()
	aAudio, aVideo := newTrack(t, client.CodecOpus, "audio"), newTrack(t, client.CodecVP8, "video")
	bAudio, bVideo := newTrack(t, client.CodecOpus, "audio"), newTrack(t, client.CodecVP8, "video")
	wa, err := a.WebRTC(ctx, fca, ca.opts(aAudio, aVideo))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wa.Close() })
	wb, err := b.WebRTC(ctx, fcb, cb.opts(bAudio, bVideo))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wb.Close() })
	waitPaired(ctx, t, wa, wb)
	stopA1 := sendLoop(t, aAudio, "alice-audio", 111)
	stopA2 := sendLoop(t, aVideo, "alice-video", 96)
	sendLoop(t, bAudio, "bob-audio", 111)
	sendLoop(t, bVideo, "bob-video", 96)
	cb.waitPackets(ctx, t, "alice-video", 20)
	ca.waitPackets(ctx, t, "bob-video", 20)

	// alice's /meta drops; she resumes. The rebind cuts her old media.
	a.Drop()
	nextEvent(ctx, t, b, protocol.TypeReconnecting)
	a2, resumed, err := client.Reconnect(ctx, s.URL, nil, a)
	if err != nil || !resumed {
		t.Fatalf("Reconnect: resumed=%v %v", resumed, err)
	}
	t.Cleanup(func() { a2.Close() })
	nextEvent(ctx, t, b, protocol.TypeResumed)
	fc2 := nextEvent(ctx, t, a2, protocol.TypeForceCall)
	waitDone(ctx, t, wa)
	stopA1()
	stopA2()

	ca2 := newCollector()
	a2Audio, a2Video := newTrack(t, client.CodecOpus, "audio"), newTrack(t, client.CodecVP8, "video")
	wa2, err := a2.WebRTC(ctx, fc2, ca2.opts(a2Audio, a2Video))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wa2.Close() })
	waitPaired(ctx, t, wa2)
	// alice's new sender numbers its packets from where bob would take
	// them for old ones (half the sequence space behind): the server must
	// renumber them to follow the old sender's, or bob's SRTP replay window
	// drops them all.
	sendLoopFrom(t, a2Audio, "alice2-audio", 111, 1<<15+1000)
	sendLoopFrom(t, a2Video, "alice2-video", 96, 1<<15+1000)
	cb.waitPackets(ctx, t, "alice2-video", 20)
	cb.waitPackets(ctx, t, "alice2-audio", 20)
	ca2.waitPackets(ctx, t, "bob-video", 20)
	ca2.waitPackets(ctx, t, "bob-audio", 20)
	select {
	case <-wb.Done():
		t.Fatalf("bob's media ended: %v", wb.Err())
	default:
	}
	videoSSRC := ssrcOf(t, wa2.Senders()[1])
	ca2.wait(ctx, t, "a PLI at alice's new video sender", func() bool {
		for _, pk := range ca2.rtcp {
			if pli, ok := pk.(*rtcp.PictureLossIndication); ok && pli.MediaSSRC == videoSSRC {
				return true
			}
		}
		return false
	})
	cb.mu.Lock()
	bad := cb.bad
	for _, kind := range []string{"audio", "video"} {
		// bob's copy goes on where the old sender stopped (a few packets
		// sent into the drop may be missing; none of the new ones is older).
		if jump := int16(cb.first["alice2-"+kind] - cb.last["alice-"+kind]); jump <= 0 || jump > 200 {
			t.Errorf("bob's %s: sequence number jumped by %d at the resume (last old %d, first new %d)",
				kind, jump, cb.last["alice-"+kind], cb.first["alice2-"+kind])
		}
	}
	cb.mu.Unlock()
	if bad != 0 {
		t.Fatalf("bob received %d corrupted packets", bad)
	}
}
