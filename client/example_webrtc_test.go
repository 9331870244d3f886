package client_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/netns"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// ExampleClient_WebRTC is a WebRTC call between two Go programs: alice
// sends a VP8 video track, bob receives it through the server. It has no
// Output line so that `go test` only compiles it: WebRTC traffic runs only
// in a loopback-only network namespace, where TestExampleWebRTC runs it.
func ExampleClient_WebRTC() {
	srv, stop := servertest.StartExample(nil) // a real server on 127.0.0.1
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice := mustUser(ctx, srv.URL, "alice")
	defer alice.Close()
	bob := mustUser(ctx, srv.URL, "bob", "alice")
	defer bob.Close()
	if err := alice.AddPeers(ctx, "bob"); err != nil {
		log.Fatal(err)
	}
	tx, err := alice.Call(ctx, "bob")
	if err != nil {
		log.Fatal(err)
	}
	waitEvent(bob, protocol.TypeCall)
	if err := bob.Accept(ctx, "alice", tx); err != nil {
		log.Fatal(err)
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}

	// alice sends video: any TrackLocal, here one fed with samples.
	video, err := webrtc.NewTrackLocalStaticSample(client.CodecVP8, "camera", "alice")
	if err != nil {
		log.Fatal(err)
	}
	wa, err := alice.WebRTC(ctx, waitEvent(alice, protocol.TypeForceCall),
		&client.WebRTCOptions{Tracks: []webrtc.TrackLocal{video}, ICEIPs: loopback})
	if err != nil {
		log.Fatal(err)
	}
	defer wa.Close()

	// bob receives: OnTrack runs once per track of the peer.
	got := make(chan string, 1)
	wb, err := bob.WebRTC(ctx, waitEvent(bob, protocol.TypeForceCall), &client.WebRTCOptions{
		ICEIPs: loopback,
		OnTrack: func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			if _, _, err := t.ReadRTP(); err == nil {
				got <- t.Kind().String() + " " + t.Codec().MimeType
			}
			for {
				if _, _, err := t.ReadRTP(); err != nil {
					return
				}
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer wb.Close()
	<-wb.Paired()

	frame := make([]byte, 1000) // an encoder's output in a real program
	tick := time.NewTicker(33 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case kind := <-got:
			fmt.Println("bob receives", kind)
			return
		case <-tick.C:
			if err := video.WriteSample(pionmedia.Sample{Data: frame, Duration: 33 * time.Millisecond}); err != nil {
				log.Fatal(err)
			}
		case <-ctx.Done():
			log.Fatal("no video")
		}
	}
}

// TestExampleWebRTC runs ExampleClient_WebRTC in a loopback-only network
// namespace (it exits the process on failure).
func TestExampleWebRTC(t *testing.T) {
	if !netns.Isolate(t) {
		return
	}
	ExampleClient_WebRTC()
}
