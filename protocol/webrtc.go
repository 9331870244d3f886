package protocol

import "encoding/json"

// Media modes of the /media hello (contract section 10).
const (
	MediaModeRelay  = "relay"  // section 6: binary frames relayed as they are (also the default)
	MediaModeWebRTC = "webrtc" // section 10: SDP and ICE as text frames, media as RTP
)

// WebRTC signalling message types (/media text frames after a webrtc hello).
const (
	TypeOffer     = "offer"     // server -> device: an SDP offer (the server always offers)
	TypeAnswer    = "answer"    // device -> server: the SDP answer to the last offer
	TypeCandidate = "candidate" // both ways: one trickled ICE candidate, or null for the end
	// TypeRenegotiate (device -> server) asks the server for a fresh offer,
	// e.g. after the device changed a transceiver's direction (camera
	// turned on after the call started without one). An extension of
	// section 10 that this server supports; the server also renegotiates by
	// itself when the peer's tracks arrive.
	TypeRenegotiate = "renegotiate"
)

// SessionDescription is an offer or an answer: {type:"offer"|"answer", sdp}.
type SessionDescription struct {
	Type string `json:"type"`
	SDP  string `json:"sdp"`
}

// ICECandidate is {type:"candidate", candidate}: Candidate is the browser's
// RTCIceCandidateInit object ({candidate, sdpMid, sdpMLineIndex,
// usernameFragment}) kept raw, or JSON null for the end of candidates.
type ICECandidate struct {
	Type      string          `json:"type"`
	Candidate json.RawMessage `json:"candidate"`
}

// Signal is what a /media text frame in webrtc mode decodes into: Type says
// which of SDP or Candidate is set.
type Signal struct {
	Type      string          `json:"type"`
	SDP       string          `json:"sdp,omitempty"`
	Candidate json.RawMessage `json:"candidate,omitempty"`
	Peer      string          `json:"peer,omitempty"` // TypePaired
}
