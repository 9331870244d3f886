package client

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/user-media-plug/umplug/internal/pionlog"
	"github.com/user-media-plug/umplug/internal/rtcapi"
	"github.com/user-media-plug/umplug/protocol"
)

// Codec capabilities the server negotiates, for tracks a Go program sends
// (webrtc.NewTrackLocalStaticSample(client.CodecVP8, "video", "stream")).
var (
	CodecOpus = rtcapi.Opus
	CodecVP8  = rtcapi.VP8
	CodecH264 = rtcapi.H264
)

// WebRTCOptions configure a WebRTC media connection. The zero value sends
// nothing and drops the peer's tracks.
type WebRTCOptions struct {
	// Tracks are sent to the peer (at most one audio and one video track:
	// the server offers one of each). They are attached to the server's
	// first offer; to change what is sent later, use the senders'
	// ReplaceTrack.
	Tracks []webrtc.TrackLocal
	// OnTrack is called on its own goroutine for each track of the peer,
	// which it should read until it ends. Nil: the tracks are read and
	// dropped.
	OnTrack func(*webrtc.TrackRemote, *webrtc.RTPReceiver)
	// OnRTCP receives the RTCP feedback the server relays about one of
	// Tracks (PLI keyframe requests, REMB bitrate estimates, ...). It runs on
	// that track's reading goroutine. Nil: read and dropped.
	OnRTCP func(track webrtc.TrackLocal, pkts []rtcp.Packet)
	// ICEIPs, when set, restricts local ICE candidates to these addresses
	// (tests: 127.0.0.1). mDNS candidates are always off: the server does
	// not resolve them.
	ICEIPs []net.IP
	// Configure, when set, may adjust pion's settings further.
	Configure func(*webrtc.SettingEngine)
}

// WebRTC is the media connection of one call in WebRTC mode (contract
// section 10): signalling on the /media WebSocket, media as RTP through the
// server's SFU. The server offers; this side answers, and answers again
// whenever the server renegotiates (the peer's tracks arrived).
type WebRTC struct {
	conn *websocket.Conn
	pc   *webrtc.PeerConnection
	opts WebRTCOptions
	log  *slog.Logger

	wmu sync.Mutex // serialises data writes to conn

	sigMu      sync.Mutex // guards answered and queued; never held across pion calls
	answered   bool       // the first answer is on the wire: candidates may follow
	queued     []protocol.ICECandidate
	early      []webrtc.ICECandidateInit // server candidates before the first offer was applied; reader goroutine only
	paired     chan struct{}
	pairedOnce sync.Once
	done       chan struct{} // closed when the connection ended and the peer connection is closed
	closeOnce  sync.Once
	wg         sync.WaitGroup // track and RTCP readers

	mu      sync.Mutex // guards the following
	peer    string
	err     error
	closing bool
	senders []*webrtc.RTPSender
}

// WebRTC opens the media connection of force-call event fc in WebRTC mode:
// it dials fc.Media, presents fc.Ticket with mode "webrtc" and answers the
// server's offers from then on. It returns once the ticket is sent; Paired
// is closed when both devices' peer connections are up. ctx bounds the
// dial only.
func (c *Client) WebRTC(ctx context.Context, fc protocol.Event, opts *WebRTCOptions) (*WebRTC, error) {
	if opts == nil {
		opts = &WebRTCOptions{}
	}
	var se webrtc.SettingEngine
	se.LoggerFactory = pionlog.Factory(c.log)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	if len(opts.ICEIPs) > 0 {
		ips := slices.Clone(opts.ICEIPs)
		se.SetIPFilter(func(ip net.IP) bool { return slices.ContainsFunc(ips, ip.Equal) })
	}
	if opts.Configure != nil {
		opts.Configure(&se)
	}
	api, err := rtcapi.NewAPI(se)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	conn, err := c.dialMedia(ctx, fc, protocol.MediaModeWebRTC)
	if err != nil {
		return nil, err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("client: peer connection: %w", err)
	}
	w := &WebRTC{
		conn:   conn,
		pc:     pc,
		opts:   *opts,
		log:    c.log.With("peer", fc.Peer, "mode", "webrtc"),
		peer:   fc.Peer,
		paired: make(chan struct{}),
		done:   make(chan struct{}),
	}
	for _, t := range opts.Tracks {
		s, err := pc.AddTrack(t)
		if err != nil {
			_ = pc.Close()
			_ = conn.Close()
			return nil, fmt.Errorf("client: add track %s: %w", t.ID(), err)
		}
		w.senders = append(w.senders, s)
		w.wg.Add(1)
		go w.readRTCP(t, s)
	}
	pc.OnICECandidate(w.onLocalCandidate)
	pc.OnTrack(w.onTrack)
	go w.readLoop()
	return w, nil
}

// dialMedia dials the media endpoint of fc and sends the hello with mode.
func (c *Client) dialMedia(ctx context.Context, fc protocol.Event, mode string) (*websocket.Conn, error) {
	if fc.Type != protocol.TypeForceCall || fc.Ticket == "" {
		return nil, fmt.Errorf("%w (type %q)", ErrNotForceCall, fc.Type)
	}
	u, err := mediaURL(c.metaURL, fc.Media)
	if err != nil {
		return nil, err
	}
	conn, resp, err := c.dialer.DialContext(ctx, u.String(), c.header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("client: dial media %s: %w (HTTP %s)", u.Redacted(), err, resp.Status)
		}
		return nil, fmt.Errorf("client: dial media %s: %w", u.Redacted(), err)
	}
	hello, err := json.Marshal(protocol.MediaHello{Type: protocol.TypeMedia, Ticket: fc.Ticket, Mode: mode})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("client: encode media hello: %w", err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultWriteTimeout)
	}
	_ = conn.SetWriteDeadline(deadline)
	if err := conn.WriteMessage(websocket.TextMessage, hello); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("client: send media ticket: %w", err)
	}
	return conn, nil
}

// send writes one signalling message.
func (w *WebRTC) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("client: encode signal: %w", err)
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_ = w.conn.SetWriteDeadline(time.Now().Add(defaultWriteTimeout))
	if err := w.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("client: write signal: %w", err)
	}
	return nil
}

// readLoop handles the server's signalling until the connection ends, then
// closes the peer connection.
func (w *WebRTC) readLoop() {
	var err error
	for {
		var typ int
		var data []byte
		typ, data, err = w.conn.ReadMessage()
		if err != nil {
			break
		}
		if typ != websocket.TextMessage {
			continue
		}
		var m protocol.Signal
		if jerr := json.Unmarshal(data, &m); jerr != nil {
			w.log.Debug("ignoring media text frame")
			continue
		}
		switch m.Type {
		case protocol.TypeOffer:
			if err = w.onOffer(m.SDP); err != nil {
				break
			}
		case protocol.TypeCandidate:
			w.onRemoteCandidate(m.Candidate)
		case protocol.TypePaired:
			w.mu.Lock()
			if m.Peer != "" {
				w.peer = m.Peer
			}
			w.mu.Unlock()
			w.pairedOnce.Do(func() { close(w.paired) })
		}
		if err != nil {
			break
		}
	}
	w.mu.Lock()
	err = mediaErr(err, w.closing)
	w.err = err
	w.mu.Unlock()
	w.log.Debug("webrtc media ended", "err", err)
	_ = w.conn.Close()
	_ = w.pc.Close()
	w.wg.Wait()
	close(w.done)
}

// onOffer answers a server offer.
func (w *WebRTC) onOffer(sdp string) error {
	if err := w.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
		return fmt.Errorf("client: set offer: %w", err)
	}
	for _, c := range w.early {
		_ = w.pc.AddICECandidate(c)
	}
	w.early = nil
	answer, err := w.pc.CreateAnswer(nil)
	if err == nil {
		err = w.pc.SetLocalDescription(answer)
	}
	if err != nil {
		return fmt.Errorf("client: answer: %w", err)
	}
	if err := w.send(protocol.SessionDescription{Type: protocol.TypeAnswer, SDP: answer.SDP}); err != nil {
		return err
	}
	w.sigMu.Lock()
	defer w.sigMu.Unlock()
	if !w.answered {
		w.answered = true
		for _, c := range w.queued {
			_ = w.send(c)
		}
		w.queued = nil
	}
	return nil
}

func (w *WebRTC) onRemoteCandidate(raw json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal(raw, &c); err != nil || c.Candidate == "" {
		return
	}
	if w.pc.RemoteDescription() == nil {
		w.early = append(w.early, c)
		return
	}
	if err := w.pc.AddICECandidate(c); err != nil {
		w.log.Debug("remote candidate refused", "err", err)
	}
}

func (w *WebRTC) onLocalCandidate(c *webrtc.ICECandidate) {
	msg := protocol.ICECandidate{Type: protocol.TypeCandidate, Candidate: json.RawMessage("null")}
	if c != nil {
		b, err := json.Marshal(c.ToJSON())
		if err != nil {
			return
		}
		msg.Candidate = b
	}
	w.sigMu.Lock()
	defer w.sigMu.Unlock()
	if !w.answered {
		w.queued = append(w.queued, msg)
		return
	}
	_ = w.send(msg)
}

func (w *WebRTC) onTrack(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
	if w.opts.OnTrack != nil {
		w.opts.OnTrack(t, r)
		return
	}
	buf := make([]byte, 1500)
	for {
		if _, _, err := t.Read(buf); err != nil {
			return
		}
	}
}

func (w *WebRTC) readRTCP(t webrtc.TrackLocal, s *webrtc.RTPSender) {
	defer w.wg.Done()
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			return
		}
		if w.opts.OnRTCP != nil {
			w.opts.OnRTCP(t, pkts)
		}
	}
}

// Paired is closed when both devices' peer connections with the server are
// up.
func (w *WebRTC) Paired() <-chan struct{} { return w.paired }

// Peer returns the user on the other side.
func (w *WebRTC) Peer() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peer
}

// PeerConnection returns the peer connection with the server, e.g. for
// GetStats or WriteRTCP. Do not renegotiate it yourself: the server offers.
func (w *WebRTC) PeerConnection() *webrtc.PeerConnection { return w.pc }

// Senders returns the RTP senders of Options.Tracks, in order.
func (w *WebRTC) Senders() []*webrtc.RTPSender {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.senders)
}

// Renegotiate asks the server for a fresh offer.
func (w *WebRTC) Renegotiate() error {
	return w.send(protocol.Signal{Type: protocol.TypeRenegotiate})
}

// Done is closed when the connection has ended and the peer connection is
// closed; Err then tells why.
func (w *WebRTC) Done() <-chan struct{} { return w.done }

// Err returns why the connection ended: ErrUnpaired when the call ended,
// ErrTicketRefused for a refused ticket, ErrClosed after Close, else the
// underlying error; nil while it is open.
func (w *WebRTC) Err() error {
	select {
	case <-w.done:
	default:
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close ends the media connection (the server ends the call as
// disconnected; prefer Client.Unpair to hang up) and waits until the peer
// connection is closed.
func (w *WebRTC) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
		closeNormal(w.conn) // safe next to a blocked send: a control frame
	})
	<-w.done
	return nil
}
