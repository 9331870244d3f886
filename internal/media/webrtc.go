package media

// WebRTC mode (contract section 10): the server is a minimal SFU for one
// pair. Each device of a call gets one PeerConnection with the server; RTP
// from one side's tracks is written, undecoded, into local tracks on the
// other side's PeerConnection, and RTCP that real-time media needs travels
// back: keyframe requests (PLI/FIR) and REMB congestion feedback, with the
// media SSRC rewritten to the sender's. NACKs are answered by pion's NACK
// responder from the packets the server itself sent, and the server's NACK
// generator asks the sender for what it lost on its own hop.
//
// Life of a webrtc media connection:
//
//	device                                      server
//	{type:"media",ticket,mode:"webrtc"}   ->   ticket checked (section 6 rules)
//	                                      <-   {type:"offer",sdp}  (recvonly audio + video, plus the peer's tracks if known)
//	{type:"answer",sdp}                   ->
//	{type:"candidate",candidate}          <->  trickle ICE, null = end of candidates
//	                                      <-   {type:"paired",peer}   both PeerConnections connected
//	                                      <-   {type:"offer",sdp}     when the peer's tracks arrive (renegotiation)
//	{type:"renegotiate"}                  ->   optional: asks for a fresh offer
//	                                      <-   close 1000 "unpaired"  (PeerConnections closed first)
//
// Unpair stops forwarding before it returns: every forwarded RTP or RTCP
// packet is written under the call's forwarding read lock after checking
// its stopped flag, and the teardown sets the flag under the write lock.

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/user-media-plug/umplug/internal/pionlog"
	"github.com/user-media-plug/umplug/internal/rtcapi"
	"github.com/user-media-plug/umplug/protocol"
)

// DefaultICEPort is the UDP (and TCP) port `umplug serve` uses for ICE.
const DefaultICEPort = 7882

// udpBufferSize is the socket buffer asked for the ICE UDP port.
const udpBufferSize = 4 << 20

// defaultSignalPing is how often an idle WebRTC signalling connection is
// pinged (keepAlive): under the common 60 s proxy idle timeouts.
const defaultSignalPing = 25 * time.Second

// maxEarlyCandidates bounds the device candidates kept while no answer has
// been applied yet.
const maxEarlyCandidates = 64

// WebRTCConfig enables the WebRTC mode and says where ICE listens. All ICE
// traffic of all calls goes through one UDP port (a mux) and, as the
// fallback for networks that block UDP, one TCP port.
type WebRTCConfig struct {
	// UDPPort is the ICE UDP port, opened on every allowed local address.
	// 0 picks an ephemeral port (tests).
	UDPPort int
	// TCPPort is the ICE-TCP (passive) port; 0 picks an ephemeral port,
	// a negative value disables ICE over TCP.
	TCPPort int
	// IPs, when set, restricts ICE to these local addresses: only they are
	// listened on and advertised as host candidates. Tests use 127.0.0.1.
	IPs []net.IP
	// Interfaces, when set, restricts ICE to the addresses of these network
	// interfaces (by name, e.g. "eth0").
	Interfaces []string
	// PublicIPs are advertised instead of the local addresses in host
	// candidates: for a server behind 1:1 NAT (cloud VMs).
	PublicIPs []string
	// PingInterval is how often the signalling WebSocket is pinged; zero
	// means 25 s (under common proxy idle timeouts).
	PingInterval time.Duration
}

// rtcEngine is the WebRTC part of a Server: the shared API and the ICE
// listeners, closed by Server.Close.
type rtcEngine struct {
	api   *webrtc.API
	udp   *ice.MultiUDPMuxDefault
	tcp   *ice.TCPMuxDefault // nil without ICE-TCP
	tcpLn net.Listener
	m     *rtcMetrics
	ping  time.Duration // WebRTCConfig.PingInterval
}

func newRTCEngine(cfg WebRTCConfig, log *slog.Logger, reg prometheus.Registerer) (*rtcEngine, error) {
	ipOK := func(ip net.IP) bool {
		return len(cfg.IPs) == 0 || slices.ContainsFunc(cfg.IPs, ip.Equal)
	}
	ifOK := func(name string) bool {
		return len(cfg.Interfaces) == 0 || slices.Contains(cfg.Interfaces, name)
	}
	lf := pionlog.Factory(log)
	m, err := newRTCMetrics(reg)
	if err != nil {
		return nil, err
	}
	udp, err := ice.NewMultiUDPMuxFromPort(cfg.UDPPort,
		ice.UDPMuxFromPortWithIPFilter(ipOK),
		ice.UDPMuxFromPortWithInterfaceFilter(ifOK),
		ice.UDPMuxFromPortWithLoopback(),
		// One socket carries every call: a deep buffer absorbs the bursts
		// of many video frames sent at once (the kernel caps it at
		// net.core.rmem_max / wmem_max).
		ice.UDPMuxFromPortWithReadBufferSize(udpBufferSize),
		ice.UDPMuxFromPortWithWriteBufferSize(udpBufferSize),
		ice.UDPMuxFromPortWithLogger(lf.NewLogger("ice-udp")))
	if err != nil {
		return nil, fmt.Errorf("media: ICE UDP port %d: %w", cfg.UDPPort, err)
	}
	if len(udp.GetListenAddresses()) == 0 {
		_ = udp.Close()
		return nil, fmt.Errorf("media: ICE UDP port %d: %w", cfg.UDPPort, ErrNoICEAddress)
	}
	e := &rtcEngine{udp: udp, m: m, ping: cfg.PingInterval}
	if e.ping <= 0 {
		e.ping = defaultSignalPing
	}
	var se webrtc.SettingEngine
	se.LoggerFactory = lf
	se.SetICEUDPMux(udp)
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIPFilter(ipOK)
	se.SetInterfaceFilter(ifOK)
	// The server never initiates traffic: ICE-lite (it answers the device's
	// connectivity checks but sends none of its own, so a device cannot
	// make it send packets to addresses named in its candidates), and no
	// active ICE-TCP candidates.
	se.SetLite(true)
	se.DisableActiveTCP(true)
	networks := []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6}
	if cfg.TCPPort >= 0 {
		host := ""
		if len(cfg.IPs) == 1 {
			host = cfg.IPs[0].String()
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(cfg.TCPPort)))
		if err != nil {
			_ = udp.Close()
			return nil, fmt.Errorf("media: ICE TCP port %d: %w", cfg.TCPPort, err)
		}
		e.tcpLn = ln
		// A bounded write buffer: a TCP receiver that does not drain
		// drops packets instead of blocking the forwarder.
		// Connections that do not present a known ICE username soon are
		// dropped (anyone can open one).
		e.tcp = ice.NewTCPMuxDefault(ice.TCPMuxParams{Listener: ln, Logger: lf.NewLogger("ice-tcp"),
			ReadBufferSize: 64, WriteBufferSize: 1 << 20,
			FirstStunBindTimeout: 5 * time.Second, AliveDurationForConnFromStun: 10 * time.Second})
		se.SetICETCPMux(e.tcp)
		networks = append(networks, webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6)
	}
	se.SetNetworkTypes(networks)
	if len(cfg.PublicIPs) > 0 {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External: cfg.PublicIPs, AsCandidateType: webrtc.ICECandidateTypeHost,
		}); err != nil {
			e.close()
			return nil, fmt.Errorf("media: ICE public IPs: %w", err)
		}
	}
	api, err := rtcapi.NewAPI(se)
	if err != nil {
		e.close()
		return nil, fmt.Errorf("media: %w", err)
	}
	e.api = api
	return e, nil
}

func (e *rtcEngine) close() {
	if e.tcp != nil {
		_ = e.tcp.Close()
	}
	if e.tcpLn != nil {
		_ = e.tcpLn.Close()
	}
	_ = e.udp.Close()
}

// ICEAddrs returns the addresses ICE listens on (UDP, and TCP when
// enabled); both nil when the WebRTC mode is off.
func (s *Server) ICEAddrs() (udp []net.Addr, tcp net.Addr) {
	if s.rtc == nil {
		return nil, nil
	}
	if s.rtc.tcpLn != nil {
		tcp = s.rtc.tcpLn.Addr()
	}
	return s.rtc.udp.GetListenAddresses(), tcp
}

type rtcMetrics struct {
	packets   prometheus.Counter // RTP packets forwarded, both directions
	keyframes prometheus.Counter // keyframe requests sent to senders
	remb      prometheus.Counter // REMB packets forwarded to senders
}

func newRTCMetrics(reg prometheus.Registerer) (*rtcMetrics, error) {
	m := &rtcMetrics{
		packets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "umplug_media_webrtc_forwarded_packets_total",
			Help: "RTP packets forwarded between the two PeerConnections of WebRTC calls (both directions).",
		}),
		keyframes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "umplug_media_webrtc_keyframe_requests_total",
			Help: "Keyframe requests (PLI) sent to WebRTC senders: receivers joining and forwarded PLI/FIR.",
		}),
		remb: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "umplug_media_webrtc_remb_forwarded_total",
			Help: "REMB congestion feedback packets forwarded from WebRTC receivers to senders.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.packets, m.keyframes, m.remb} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMetrics, err)
		}
	}
	return m, nil
}

// rtcCall is the WebRTC state of a call.
type rtcCall struct {
	fwdMu   sync.RWMutex // guards stopped; read-held around every forwarded packet
	stopped bool

	mu      sync.Mutex // guards the following
	peers   [2]*rtcPeer
	sources [2][]*source // tracks received from side i
}

// forwarding runs f (a write towards a device) unless the call is over; it
// reports whether f ran. Teardown takes the write lock, so once it returns
// no f is running and none will.
func (rc *rtcCall) forwarding(f func()) bool {
	rc.fwdMu.RLock()
	defer rc.fwdMu.RUnlock()
	if rc.stopped {
		return false
	}
	f()
	return true
}

// source is one track received from a device and its copy towards the peer.
type source struct {
	from   *rtcPeer
	remote *webrtc.TrackRemote
	local  *webrtc.TrackLocalStaticRTP
	rw     *seqRewriter // the copy's numbering, shared like local (rtpseq.go)
	gen    uint64       // this sender's generation for rw
}

// rtcPeer is one device's PeerConnection with the server and its
// signalling connection.
type rtcPeer struct {
	s    *Server
	sd   *side
	pc   *webrtc.PeerConnection
	conn *websocket.Conn
	log  *slog.Logger

	wmu sync.Mutex // serialises data writes to conn

	negMu    sync.Mutex // guards the following: the offer/answer state; held across pion calls
	awaiting bool       // an offer is out and its answer not in yet
	again    bool       // another offer is due once the answer is in
	early    []webrtc.ICECandidateInit

	sigMu     sync.Mutex // guards the following; never held across pion calls
	offerSent bool       // the first offer is on the wire: candidates may follow
	queued    []protocol.ICECandidate

	lifeMu sync.Mutex // guards closed and wg.Add
	closed bool
	wg     sync.WaitGroup // goroutines reading this PeerConnection
}

// enter counts a goroutine that reads p's PeerConnection; false once p is
// closing.
func (p *rtcPeer) enter() bool {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	return true
}

// close closes the PeerConnection and waits for its readers. Idempotent.
func (p *rtcPeer) close() {
	p.lifeMu.Lock()
	p.closed = true
	p.lifeMu.Unlock()
	if err := p.pc.Close(); err != nil {
		p.log.Debug("media: close peer connection", "err", err)
	}
	p.wg.Wait()
}

// send writes one signalling message; a failure closes the socket, which
// ends the read loop and so the call.
func (p *rtcPeer) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		p.log.Error("media: encode signal", "err", err)
		return
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = p.conn.SetWriteDeadline(time.Now().Add(p.s.writeTimeout))
	if err := p.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		p.log.Debug("media: write signal", "err", err)
		if !errors.Is(err, websocket.ErrCloseSent) {
			_ = p.conn.Close() // not the close handshake under way: cut
		}
	}
}

// serveRTC runs a webrtc side from its hello to its end and returns the
// side to blame (always sd: its socket or PeerConnection failed), or nil
// when the call ended first; clean is false when the signalling connection
// dropped (no close frame: the side may come back, resume.go).
func (s *Server) serveRTC(sd *side) (blamed *side, clean bool) {
	cl := sd.call
	p, err := s.newPeer(sd)
	if err != nil {
		s.log.Error("media: new peer connection", "call", cl.id, "err", err)
		return sd, true
	}
	defer p.close()
	s.mu.Lock()
	if cl.ended {
		s.mu.Unlock()
		return nil, true
	}
	sd.rp = p
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if sd.rp == p {
			sd.rp = nil
		}
		s.mu.Unlock()
	}()

	rc := &cl.rtc
	rc.mu.Lock()
	rc.peers[sd.idx] = p
	srcs := slices.Clone(rc.sources[1-sd.idx])
	rc.mu.Unlock()
	for _, src := range srcs {
		p.attach(src)
	}
	p.negotiate()
	stopPings := p.keepAlive()
	clean = p.readLoop()
	stopPings()
	s.mu.Lock()
	ended := cl.ended
	s.mu.Unlock()
	if ended {
		return nil, true
	}
	return sd, clean
}

func (s *Server) newPeer(sd *side) (*rtcPeer, error) {
	pc, err := s.rtc.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("media: peer connection: %w", err)
	}
	p := &rtcPeer{s: s, sd: sd, pc: pc, conn: sd.conn,
		log: s.log.With("call", sd.call.id, "user", sd.user)}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{
			Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			_ = pc.Close()
			return nil, fmt.Errorf("media: add %s transceiver: %w", k, err)
		}
	}
	pc.OnICECandidate(p.onLocalCandidate)
	pc.OnConnectionStateChange(p.onState)
	pc.OnTrack(p.onTrack)
	return p, nil
}

// keepAlive pings the signalling connection every PingInterval until
// stop is called. Once negotiated, a WebRTC call's /media WebSocket carries
// nothing for its whole length, and reverse proxies cut WebSockets idle for
// a minute or so, which would end the call; browsers and gorilla answer
// pings by themselves. (Liveness stays /meta's job, as in relay mode.)
func (p *rtcPeer) keepAlive() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(p.s.rtc.ping)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = p.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(p.s.writeTimeout))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// readLoop reads signalling until the connection ends; it reports whether
// it ended cleanly (a 1000 close from the device, or an answer refused)
// rather than by a drop (resume.go).
func (p *rtcPeer) readLoop() (clean bool) {
	for {
		mt, data, err := p.conn.ReadMessage()
		if err != nil {
			return deliberate(err)
		}
		if mt != websocket.TextMessage {
			continue
		}
		var m protocol.Signal
		if err := json.Unmarshal(data, &m); err != nil {
			p.log.Debug("media: bad signal ignored", "err", err)
			continue
		}
		switch m.Type {
		case protocol.TypeAnswer:
			if err := p.onAnswer(m.SDP); err != nil {
				p.log.Info("media: answer refused", "err", err)
				return true
			}
		case protocol.TypeCandidate:
			p.onRemoteCandidate(m.Candidate)
		case protocol.TypeRenegotiate:
			p.negotiate()
		default:
			p.log.Debug("media: signal ignored", "type", m.Type)
		}
	}
}

// negotiate sends a new offer, or marks one due if an answer is awaited.
func (p *rtcPeer) negotiate() {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if p.awaiting {
		p.again = true
		return
	}
	offer, err := p.pc.CreateOffer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(offer)
	}
	if err != nil {
		p.log.Debug("media: create offer", "err", err)
		_ = p.conn.Close()
		return
	}
	p.awaiting = true
	p.send(protocol.SessionDescription{Type: protocol.TypeOffer, SDP: offer.SDP})
	p.sigMu.Lock()
	defer p.sigMu.Unlock()
	if !p.offerSent {
		p.offerSent = true
		for _, c := range p.queued {
			p.send(c)
		}
		p.queued = nil
	}
}

func (p *rtcPeer) onAnswer(sdp string) error {
	p.negMu.Lock()
	if !p.awaiting {
		p.negMu.Unlock()
		p.log.Debug("media: unexpected answer ignored")
		return nil
	}
	err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp})
	p.awaiting = false
	early := p.early
	p.early = nil
	again := p.again
	p.again = false
	p.negMu.Unlock()
	if err != nil {
		return fmt.Errorf("media: set answer: %w", err)
	}
	for _, c := range early {
		if err := p.pc.AddICECandidate(c); err != nil {
			p.log.Debug("media: remote candidate refused", "err", err)
		}
	}
	if again {
		p.negotiate()
	}
	// The device may receive new tracks now: give it a keyframe to start.
	p.s.mu.Lock()
	up := p.sd.rtcUp
	p.s.mu.Unlock()
	if up {
		p.requestKeyframes()
	}
	return nil
}

func (p *rtcPeer) onRemoteCandidate(raw json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return // end of candidates: nothing to do for pion
	}
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal(raw, &c); err != nil || c.Candidate == "" {
		return
	}
	p.negMu.Lock()
	if p.pc.RemoteDescription() == nil {
		if len(p.early) < maxEarlyCandidates {
			p.early = append(p.early, c)
		}
		p.negMu.Unlock()
		return
	}
	p.negMu.Unlock()
	if err := p.pc.AddICECandidate(c); err != nil {
		p.log.Debug("media: remote candidate refused", "err", err)
	}
}

// onLocalCandidate trickles a server candidate (nil: the end) to the
// device, never before the first offer.
func (p *rtcPeer) onLocalCandidate(c *webrtc.ICECandidate) {
	msg := protocol.ICECandidate{Type: protocol.TypeCandidate, Candidate: json.RawMessage("null")}
	if c != nil {
		b, err := json.Marshal(c.ToJSON())
		if err != nil {
			return
		}
		msg.Candidate = b
	}
	p.sigMu.Lock()
	defer p.sigMu.Unlock()
	if !p.offerSent {
		p.queued = append(p.queued, msg)
		return
	}
	p.send(msg)
}

func (p *rtcPeer) onState(st webrtc.PeerConnectionState) {
	switch st {
	case webrtc.PeerConnectionStateConnected:
		p.s.rtcConnected(p)
	case webrtc.PeerConnectionStateFailed:
		p.log.Info("media: peer connection failed")
		if p.s.loser != nil {
			// A drop: cut the signalling too, its ServeConn reports the
			// side lost (resume.go).
			_ = p.conn.Close()
			return
		}
		p.s.fail(p.sd.call, p.sd.user)
	case webrtc.PeerConnectionStateClosed:
		// Closed by the device (DTLS close_notify), not by us: it left.
		p.lifeMu.Lock()
		ours := p.closed
		p.lifeMu.Unlock()
		if !ours && p.s.current(p.sd, p.conn) {
			// (Not current: the side was rebound or lost, resume.go; its
			// device closing the old connection ends nothing.)
			p.log.Info("media: peer connection closed by the device")
			if p.s.loser != nil {
				// A browser closes its peer connections when the page
				// reloads, racing the 1001 on the signalling: a drop,
				// like the failed state. Hanging up is an unpair on /meta
				// or a 1000 on the signalling.
				_ = p.conn.Close()
				return
			}
			p.s.fail(p.sd.call, p.sd.user)
		}
	}
}

// rtcConnected records that p's PeerConnection is up; when both are, the
// call is paired.
func (s *Server) rtcConnected(p *rtcPeer) {
	cl := p.sd.call
	s.mu.Lock()
	if cl.ended || p.sd.rtcUp {
		s.mu.Unlock()
		return
	}
	p.sd.rtcUp = true
	rejoined := cl.joined
	both := cl.sides[0].rtcUp && cl.sides[1].rtcUp
	if both {
		cl.joined = true
	}
	if both && cl.timer != nil {
		cl.timer.Stop()
		cl.timer = nil
	}
	s.mu.Unlock()
	p.requestKeyframes()
	if rejoined {
		// A side back after a drop: only it learns it is paired again.
		p.send(protocol.Paired{Type: protocol.TypePaired, Peer: p.sd.peer().user})
		return
	}
	if !both {
		return
	}
	for _, sd := range cl.sides {
		s.mu.Lock()
		rp := sd.rp
		s.mu.Unlock()
		if rp == nil {
			return // that side is leaving: its ServeConn ends the call
		}
		rp.send(protocol.Paired{Type: protocol.TypePaired, Peer: sd.peer().user})
	}
	s.mu.Lock()
	if !cl.ended && !cl.paired {
		cl.paired = true
		s.m.active.Inc()
		close(cl.ready)
	}
	s.mu.Unlock()
}

// onTrack starts forwarding a track the device sends: it is added to the
// other side's PeerConnection (which is renegotiated) and its packets are
// copied there until the call ends.
func (p *rtcPeer) onTrack(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	if !p.enter() {
		return
	}
	defer p.wg.Done()
	local, err := webrtc.NewTrackLocalStaticRTP(remote.Codec().RTPCodecCapability, remote.ID(), remote.StreamID())
	if err != nil {
		p.log.Warn("media: track copy", "err", err)
		return
	}
	p.log.Debug("media: track arrived", "kind", remote.Kind().String(), "codec", remote.Codec().MimeType)
	src := &source{from: p, remote: remote, local: local, rw: newSeqRewriter(remote.Codec().ClockRate), gen: senderGen.Add(1)}
	cl := p.sd.call
	rc := &cl.rtc
	rc.mu.Lock()
	reused := false
	for i, old := range rc.sources[p.sd.idx] {
		// A side back after a drop (resume.go): its new track feeds the
		// copy the peer already receives, so the peer's connection needs
		// no renegotiation.
		if old.from != p && old.from.isClosed() && old.remote.Kind() == remote.Kind() &&
			strings.EqualFold(old.local.Codec().MimeType, remote.Codec().MimeType) {
			src.local, src.rw = old.local, old.rw
			rc.sources[p.sd.idx][i] = src
			reused = true
			break
		}
	}
	if !reused {
		rc.sources[p.sd.idx] = append(rc.sources[p.sd.idx], src)
	}
	to := rc.peers[1-p.sd.idx]
	rc.mu.Unlock()
	if reused {
		src.requestKeyframe(rc, 0) // the peer's decoder needs one from the new sender
	} else if to != nil {
		to.attach(src)
		to.negotiate()
	}
	if p.enter() {
		go func() {
			defer p.wg.Done()
			for {
				if _, _, err := recv.ReadRTCP(); err != nil {
					return
				}
			}
		}()
	}
	p.s.forward(rc, src)
}

// forward copies src's RTP packets to its local track until the call stops
// or the track ends.
func (s *Server) forward(rc *rtcCall, src *source) {
	buf := make([]byte, 1500)
	for {
		n, _, err := src.remote.Read(buf)
		if err != nil {
			return
		}
		if !src.rw.rewrite(src.gen, buf[:n], s.clock.Now()) {
			continue
		}
		// Counted under the lock too: once Unpair returned, the count is
		// final (tests rely on it).
		if !rc.forwarding(func() {
			if _, err := src.local.Write(buf[:n]); err == nil {
				s.rtc.m.packets.Inc()
			}
		}) {
			return
		}
	}
}

// attach adds src's copy to p's PeerConnection (the caller renegotiates)
// and relays the RTCP feedback p's device sends about it.
func (p *rtcPeer) attach(src *source) {
	sender, err := p.pc.AddTrack(src.local)
	if err != nil {
		p.log.Debug("media: add peer track", "err", err)
		return
	}
	if !p.enter() {
		return
	}
	go func() {
		defer p.wg.Done()
		p.feedback(sender, src)
	}()
}

// feedback relays a receiver's keyframe requests and REMB about src to
// src's sender, with the media SSRC rewritten to the sender's own.
func (p *rtcPeer) feedback(sender *webrtc.RTPSender, src *source) {
	rc := &p.sd.call.rtc
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		cur := rc.current(src)
		for _, pkt := range pkts {
			switch r := pkt.(type) {
			case *rtcp.PictureLossIndication:
				cur.requestKeyframe(rc, r.SenderSSRC)
			case *rtcp.FullIntraRequest:
				cur.requestKeyframe(rc, r.SenderSSRC)
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				cur.forwardREMB(rc, r)
			}
		}
	}
}

// current returns the source that feeds src's local track now: src, or
// the one that replaced it when its side came back after a drop.
func (rc *rtcCall) current(src *source) *source {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, side := range rc.sources {
		for _, x := range side {
			if x.local == src.local {
				return x
			}
		}
	}
	return src
}

// isClosed reports whether p is closing or closed.
func (p *rtcPeer) isClosed() bool {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	return p.closed
}

// requestKeyframes asks the peer's video senders for a keyframe for p (p
// joined or renegotiated).
func (p *rtcPeer) requestKeyframes() {
	rc := &p.sd.call.rtc
	rc.mu.Lock()
	srcs := slices.Clone(rc.sources[1-p.sd.idx])
	rc.mu.Unlock()
	for _, src := range srcs {
		src.requestKeyframe(rc, 0)
	}
}

// requestKeyframe sends src's sender a PLI. senderSSRC is the receiver's
// RTCP sender SSRC when forwarding its request, 0 when the server asks.
func (src *source) requestKeyframe(rc *rtcCall, senderSSRC uint32) {
	if src.remote.Kind() != webrtc.RTPCodecTypeVideo {
		return
	}
	pli := &rtcp.PictureLossIndication{SenderSSRC: senderSSRC, MediaSSRC: uint32(src.remote.SSRC())}
	var err error
	if rc.forwarding(func() { err = src.from.pc.WriteRTCP([]rtcp.Packet{pli}) }) && err == nil {
		src.from.s.rtc.m.keyframes.Inc()
	}
}

func (src *source) forwardREMB(rc *rtcCall, r *rtcp.ReceiverEstimatedMaximumBitrate) {
	out := &rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: r.SenderSSRC, Bitrate: r.Bitrate,
		SSRCs: []uint32{uint32(src.remote.SSRC())}}
	var err error
	if rc.forwarding(func() { err = src.from.pc.WriteRTCP([]rtcp.Packet{out}) }) && err == nil {
		src.from.s.rtc.m.remb.Inc()
	}
}

// endRTCLocked stops the call's forwarding (returning once no packet is
// being written) and closes its PeerConnections in the background. Called
// with s.mu held, from endLocked.
func (s *Server) endRTCLocked(cl *call) {
	rc := &cl.rtc
	rc.fwdMu.Lock()
	rc.stopped = true
	rc.fwdMu.Unlock()
	for _, sd := range cl.sides {
		if p := sd.rp; p != nil {
			// sd's ServeConn is running (it clears rp before returning),
			// so wg's count is positive.
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				p.close()
			}()
		}
	}
}

// ErrNoICEAddress means no local address passed the ICE address filters.
var ErrNoICEAddress = errors.New("no local address matches the ICE filters")
