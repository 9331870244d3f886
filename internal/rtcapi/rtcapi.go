// Package rtcapi builds the pion WebRTC API that the server and the Go
// client share: the same codecs, RTCP feedback, header extensions and
// interceptors on both ends, so that what one negotiates the other forwards
// unchanged (contract section 10).
//
// Choices:
//   - Audio: Opus. Video: VP8 first (every browser has it), then H.264
//     constrained baseline (packetization-mode 1), used when both ends
//     support it.
//   - Congestion control is receiver-side REMB (goog-remb), not
//     transport-cc: the server forwards each receiver's REMB to the sender
//     with the SSRC rewritten, so the sender adapts to the receiver it
//     really serves. transport-cc would make the sender adapt to its own
//     hop to the server only. abs-send-time is negotiated for the REMB
//     estimator.
//   - Interceptors: NACK generator (inbound) and responder (outbound), and
//     RTCP sender/receiver reports. Nothing else runs per packet.
package rtcapi

import (
	"fmt"

	"github.com/pion/interceptor"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Payload types offered (the server offers, so they are the ones in use).
const (
	PayloadOpus = 111
	PayloadVP8  = 96
	PayloadH264 = 102
)

// H264Fmtp is the H.264 profile offered: constrained baseline, level 3.1,
// non-interleaved packetization (what browsers send by default).
const H264Fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"

// VideoFeedback is the RTCP feedback offered for video codecs (NACK and
// NACK PLI are added by the NACK interceptor setup).
var VideoFeedback = []webrtc.RTCPFeedback{
	{Type: webrtc.TypeRTCPFBGoogREMB},
	{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"},
}

// Codec capabilities, for tracks a Go program sends.
var (
	Opus = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
		SDPFmtpLine: "minptime=10;useinbandfec=1"}
	VP8  = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: VideoFeedback}
	H264 = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: H264Fmtp,
		RTCPFeedback: VideoFeedback}
)

// NewAPI returns an API with the shared media setup and se's network
// settings.
func NewAPI(se webrtc.SettingEngine) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	codecs := []struct {
		p webrtc.RTPCodecParameters
		k webrtc.RTPCodecType
	}{
		{webrtc.RTPCodecParameters{RTPCodecCapability: Opus, PayloadType: PayloadOpus}, webrtc.RTPCodecTypeAudio},
		{webrtc.RTPCodecParameters{RTPCodecCapability: VP8, PayloadType: PayloadVP8}, webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecParameters{RTPCodecCapability: H264, PayloadType: PayloadH264}, webrtc.RTPCodecTypeVideo},
	}
	for _, c := range codecs {
		if err := m.RegisterCodec(c.p, c.k); err != nil {
			return nil, fmt.Errorf("rtcapi: register codec %s: %w", c.p.MimeType, err)
		}
	}
	if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.ABSSendTimeURI},
		webrtc.RTPCodecTypeVideo); err != nil {
		return nil, fmt.Errorf("rtcapi: register abs-send-time: %w", err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(m, ir); err != nil {
		return nil, fmt.Errorf("rtcapi: nack: %w", err)
	}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, fmt.Errorf("rtcapi: rtcp reports: %w", err)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir),
		webrtc.WithSettingEngine(se)), nil
}
