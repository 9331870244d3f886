package loadgen

// The webrtc scenario: Pairs concurrent WebRTC calls through the server's
// SFU (contract section 10), each side sending a synthetic 30 fps video
// track of about 1 Mbit/s in VP8-sized packets and an Opus-sized audio
// track, through real ICE, DTLS and SRTP. It reports the packets forwarded
// per second, loss, the one-way latency the path adds (sender and receiver
// share this process's clock) and the server's CPU per forwarded packet.
//
// It must run in a network namespace with only loopback (ICE gathers every
// interface it sees), and refuses to run otherwise:
//
//	go build -o umplug ./cmd/umplug
//	unshare -n sh -c 'ip link set lo up
//	  ./umplug serve -data /tmp/umplug-bench -log-level warn & pid=$!
//	  sleep 1; ./umplug bench -scenario webrtc -pairs 100 -duration 10s -pid $pid; kill $pid'

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/protocol"
)

// The synthetic media of one side.
const (
	videoFPS        = 30
	videoPacketSize = 1042 // payload bytes; 4 per frame at 30 fps ≈ 1.0 Mbit/s
	videoPackets    = 4    // per frame
	audioInterval   = 20 * time.Millisecond
	audioPacketSize = 120 // an Opus frame of 20 ms at ~48 kbit/s
	rtcHeader       = 16  // send time (ns since the run's start) and sequence number
)

// ErrNotIsolated means the webrtc scenario was started where a network
// interface other than loopback is up.
var ErrNotIsolated = errors.New("the webrtc scenario runs only in a network namespace with loopback alone (unshare -n)")

// WebRTCResult is the outcome of the webrtc scenario.
type WebRTCResult struct {
	Pairs     int
	Window    time.Duration // the sending window
	Sent      int64         // RTP packets sent, every track of every side
	Received  int64         // RTP packets received
	InWindow  int64         // received within Window
	Lost      int64         // sent and never received (after a drain of up to 2 s)
	Bad       int64         // received with a changed payload
	Latency   latencies     // one way, sender → server → receiver
	Hangups   int           // calls ended cleanly (both sides told unpaired)
	Failures  map[string]int
	ServerCPU time.Duration
	CPUSource string
	ClientCPU time.Duration
}

// PacketsPerSec is the forwarding rate while every side sent.
func (r *WebRTCResult) PacketsPerSec() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.InWindow) / r.Window.Seconds()
}

// LossPercent is the share of sent packets never received.
func (r *WebRTCResult) LossPercent() float64 {
	if r.Sent == 0 {
		return 0
	}
	return 100 * float64(r.Lost) / float64(r.Sent)
}

// Rows implements Result.
func (r *WebRTCResult) Rows() []Row {
	return []Row{
		{"calls", strconv.Itoa(r.Pairs), "100"},
		{"media per side", fmt.Sprintf("video %d fps × %d × %d B (%.2f Mbit/s), audio %d B every %v",
			videoFPS, videoPackets, videoPacketSize, float64(videoFPS*videoPackets*videoPacketSize*8)/1e6,
			audioPacketSize, audioInterval), ""},
		{"sending window", r.Window.Round(time.Millisecond).String(), ""},
		{"RTP packets sent / received", fmt.Sprintf("%d / %d", r.Sent, r.Received), ""},
		{"packets/s forwarded", fmt.Sprintf("%.0f", r.PacketsPerSec()), ""},
		{"loss", fmt.Sprintf("%.3f %% (%d)", r.LossPercent(), r.Lost), "≤ 0.5 %"},
		{"changed payloads", strconv.FormatInt(r.Bad, 10), "0"},
		{"one-way latency p50", us(r.Latency.P50), ""},
		{"one-way latency p99", us(r.Latency.P99), ""},
		{"one-way latency max", us(r.Latency.Max), ""},
		{"clean hang-ups", fmt.Sprintf("%d/%d", r.Hangups, r.Pairs), ""},
		{"failures", formatCounts(r.Failures), ""},
		{"server CPU", fmt.Sprintf("%v = %.2f cores (%s)", r.ServerCPU.Round(time.Millisecond), cores(r.ServerCPU, r.Window), r.CPUSource), ""},
		{"server CPU per forwarded packet", fmt.Sprintf("%.2f µs", float64(cpuPer(r.ServerCPU, r.InWindow))/1e3), "≤ 10 µs"},
		{"load generator CPU", fmt.Sprintf("%v = %.2f cores", r.ClientCPU.Round(time.Millisecond), cores(r.ClientCPU, r.Window)), ""},
	}
}

// rtcStream is one track of one side, as sent and as received.
type rtcStream struct {
	track    *webrtc.TrackLocalStaticRTP
	size     int
	interval time.Duration
	burst    int // packets per interval
	pt       uint8

	sent atomic.Int64
	recv atomic.Int64
	// Counts at the end of the warm-up (the measurement starts there).
	sent0, recv0 int64

	mu  sync.Mutex // guards the following (the receiving OnTrack goroutine writes)
	bad int64
	lat []time.Duration
}

type rtcCallPair struct {
	*callPair
	wa, wb  *client.WebRTC
	streams map[string]*rtcStream // by stream id "/" track id
}

type webrtcRunner struct {
	g     *gen
	pairs []*rtcCallPair
	errs  *errCounter
	base  time.Time
	stop  atomic.Bool

	// CPU time within the measurement window, set by stream.
	cpu, selfCPU time.Duration
	cpuSrc       string
}

// checkIsolated refuses to run where ICE could reach another network.
func checkIsolated() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotIsolated, err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("%w: interface %s is up", ErrNotIsolated, i.Name)
		}
	}
	return nil
}

func (g *gen) runWebRTC(ctx context.Context) (*WebRTCResult, error) {
	if err := checkIsolated(); err != nil {
		return nil, err
	}
	// Each login from its own loopback address: hundreds of fresh logins
	// from one address would meet the server's per-address login budget.
	login := func(ctx context.Context, user string) (*client.Client, error) {
		return g.loginWith(ctx, user, g.dialer(g.regSource()))
	}
	pairs, err := g.preparePairs(ctx, "webrtc", "webrtc", login)
	if err != nil {
		return nil, err
	}
	r := &webrtcRunner{g: g, errs: newErrCounter(), base: time.Now()}
	for _, p := range pairs {
		r.pairs = append(r.pairs, &rtcCallPair{callPair: p, streams: map[string]*rtcStream{}})
	}
	defer r.close()
	var up atomic.Int64
	stopProgress := g.progress(func() string { return fmt.Sprintf("webrtc: connected %d/%d", up.Load(), len(r.pairs)) })
	err = g.eachPair(ctx, len(r.pairs), func(i int) error {
		if err := r.connect(ctx, r.pairs[i]); err != nil {
			return fmt.Errorf("%s → %s: %w", r.pairs[i].aName, r.pairs[i].bName, err)
		}
		up.Add(1)
		return nil
	})
	stopProgress()
	if err != nil {
		return nil, fmt.Errorf("%w: webrtc: %w", ErrSetup, err)
	}
	window, inWindow, err := r.stream(ctx)
	if err != nil {
		return nil, err
	}
	res := &WebRTCResult{Pairs: len(r.pairs), Window: window, InWindow: inWindow,
		ServerCPU: r.cpu, CPUSource: r.cpuSrc, ClientCPU: r.selfCPU}
	var lat []time.Duration
	for _, p := range r.pairs {
		for _, s := range p.streams {
			s.mu.Lock()
			sent, recv := s.sent.Load()-s.sent0, s.recv.Load()-s.recv0
			res.Sent += sent
			res.Received += recv
			res.Lost += max(sent-recv, 0)
			res.Bad += s.bad
			lat = append(lat, s.lat...)
			s.mu.Unlock()
		}
	}
	res.Latency = summarize(lat)
	res.Hangups = r.hangUp(ctx)
	res.Failures = r.errs.snapshot()
	return res, nil
}

// connect sets up one call and both sides' WebRTC media.
func (r *webrtcRunner) connect(ctx context.Context, p *rtcCallPair) error {
	sctx, cancel := context.WithTimeout(ctx, r.g.cfg.Timeout)
	defer cancel()
	if err := p.aP.wait(sctx); err != nil {
		return err
	}
	if _, err := p.a.Call(sctx, p.bName); err != nil {
		return fmt.Errorf("call: %w", err)
	}
	ring, err := waitEv(sctx, p.bEv, protocol.TypeCall)
	if err != nil {
		return err
	}
	if err := p.bP.wait(sctx); err != nil {
		return err
	}
	if err := p.b.Accept(sctx, p.aName, ring.ev.Tx); err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	fa, err := waitEv(sctx, p.aEv, protocol.TypeForceCall)
	if err != nil {
		return err
	}
	fb, err := waitEv(sctx, p.bEv, protocol.TypeForceCall)
	if err != nil {
		return err
	}
	// Every stream exists before any media flows: receivers only read the
	// map.
	for _, user := range []string{p.aName, p.bName} {
		if err := p.addStreams(user); err != nil {
			return err
		}
	}
	if p.wa, err = p.openSide(sctx, r, p.a, p.aName, fa.ev); err != nil {
		return err
	}
	if p.wb, err = p.openSide(sctx, r, p.b, p.bName, fb.ev); err != nil {
		return err
	}
	for _, w := range []*client.WebRTC{p.wa, p.wb} {
		select {
		case <-w.Paired():
		case <-w.Done():
			return fmt.Errorf("media ended before paired: %w", w.Err())
		case <-sctx.Done():
			return fmt.Errorf("%w for paired: %w", ErrTimeout, sctx.Err())
		}
	}
	return nil
}

// addStreams makes user's audio and video tracks.
func (p *rtcCallPair) addStreams(user string) error {
	video, err := webrtc.NewTrackLocalStaticRTP(client.CodecVP8, "video", user)
	if err != nil {
		return fmt.Errorf("video track: %w", err)
	}
	audio, err := webrtc.NewTrackLocalStaticRTP(client.CodecOpus, "audio", user)
	if err != nil {
		return fmt.Errorf("audio track: %w", err)
	}
	p.streams[user+"/video"] = &rtcStream{track: video, size: videoPacketSize, burst: videoPackets,
		interval: time.Second / videoFPS, pt: 96}
	p.streams[user+"/audio"] = &rtcStream{track: audio, size: audioPacketSize, burst: 1,
		interval: audioInterval, pt: 111}
	return nil
}

// openSide opens one side's WebRTC media with its audio and video tracks.
func (p *rtcCallPair) openSide(ctx context.Context, r *webrtcRunner, c *client.Client, user string, fc protocol.Event) (*client.WebRTC, error) {
	opts := &client.WebRTCOptions{
		Tracks:  []webrtc.TrackLocal{p.streams[user+"/audio"].track, p.streams[user+"/video"].track},
		OnTrack: func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { r.receive(p.streams[t.StreamID()+"/"+t.ID()], t) },
	}
	if r.g.loopback {
		opts.ICEIPs = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	return c.WebRTC(ctx, fc, opts)
}

// receive reads a peer track, checking each payload and recording its
// one-way latency.
func (r *webrtcRunner) receive(s *rtcStream, t *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return
		}
		if s == nil {
			continue
		}
		at := time.Since(r.base)
		if err := pkt.Unmarshal(buf[:n]); err != nil || len(pkt.Payload) != s.size {
			s.mu.Lock()
			s.bad++
			s.mu.Unlock()
			continue
		}
		sentAt := time.Duration(binary.LittleEndian.Uint64(pkt.Payload))
		seq := binary.LittleEndian.Uint64(pkt.Payload[8:])
		s.recv.Add(1)
		s.mu.Lock()
		if pkt.Payload[len(pkt.Payload)-1] != byte(seq) {
			s.bad++
		}
		s.lat = append(s.lat, at-sentAt)
		s.mu.Unlock()
	}
}

// stream sends on every track for Duration, then waits up to 2 s for
// packets in flight.
func (r *webrtcRunner) stream(ctx context.Context) (window time.Duration, inWindow int64, err error) {
	var all []*rtcStream
	for _, p := range r.pairs {
		for _, s := range p.streams {
			all = append(all, s)
		}
	}
	r.base = time.Now()
	stopProgress := r.g.progress(func() string {
		var n int64
		for _, s := range all {
			n += s.recv.Load()
		}
		return fmt.Sprintf("webrtc: %d packets received (%.0f/s), failures: %s", n,
			float64(n)/time.Since(r.base).Seconds(), r.errs)
	})
	defer stopProgress()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.send(ctx, s)
		}()
	}
	// Warm-up: until every receiver has its peer's tracks (the server
	// renegotiates when a track's first packet arrives, and packets before
	// that have nowhere to go), plus a second for the connections to
	// settle. Then the measurement starts from zero.
	warm := time.NewTicker(20 * time.Millisecond)
	for flowing := false; !flowing; {
		select {
		case <-warm.C:
		case <-ctx.Done():
		}
		flowing = ctx.Err() != nil || time.Since(r.base) > r.g.cfg.Timeout
		if !flowing {
			flowing = true
			for _, s := range all {
				flowing = flowing && s.recv.Load() > 0
			}
		}
	}
	warm.Stop()
	_ = sleep(ctx, time.Second)
	cpu0, src, err := r.g.serverCPU(ctx)
	if err != nil {
		r.stop.Store(true)
		wg.Wait()
		return 0, 0, err
	}
	self0 := selfCPU()
	start := time.Now()
	for _, s := range all {
		s.mu.Lock()
		s.sent0, s.recv0 = s.sent.Load(), s.recv.Load()
		s.lat = s.lat[:0]
		s.bad = 0
		s.mu.Unlock()
	}
	t := time.NewTimer(r.g.cfg.Duration)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	window = time.Since(start)
	for _, s := range all {
		inWindow += s.recv.Load() - s.recv0
	}
	cpu1, _, cerr := r.g.serverCPU(ctx)
	r.cpu, r.cpuSrc, r.selfCPU = cpu1-cpu0, src, selfCPU()-self0
	if cerr != nil {
		err = cerr
	}
	r.stop.Store(true)
	wg.Wait()
	drain := time.NewTimer(2 * time.Second)
	defer drain.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		done := true
		for _, s := range all {
			if s.recv.Load() < s.sent.Load() {
				done = false
				break
			}
		}
		if done {
			return window, inWindow, err
		}
		select {
		case <-tick.C:
		case <-drain.C:
			return window, inWindow, err
		case <-ctx.Done():
			return window, inWindow, err
		}
	}
}

// send paces s's packets: burst packets every interval, from a random
// phase, each stamped with its send time and sequence number.
func (r *webrtcRunner) send(ctx context.Context, s *rtcStream) {
	pace := &pacer{interval: s.interval, next: r.base.Add(rand.N(s.interval))}
	ssrcless := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: s.pt}}
	payload := make([]byte, s.size)
	var seq uint64
	var ts uint32
	for !r.stop.Load() {
		if err := pace.wait(ctx); err != nil {
			return
		}
		ts += uint32(s.interval / (time.Second / 90000))
		for i := range s.burst {
			seq++
			binary.LittleEndian.PutUint64(payload, uint64(time.Since(r.base)))
			binary.LittleEndian.PutUint64(payload[8:], seq)
			for j := rtcHeader; j < len(payload); j++ {
				payload[j] = byte(seq)
			}
			pkt := ssrcless
			pkt.SequenceNumber = uint16(seq)
			pkt.Timestamp = ts
			pkt.Marker = i == s.burst-1
			pkt.Payload = payload
			if err := s.track.WriteRTP(&pkt); err != nil {
				if ctx.Err() == nil {
					r.errs.add(fmt.Errorf("rtp write: %w", err))
				}
				return
			}
			s.sent.Add(1)
		}
	}
}

// hangUp ends every call from its caller and counts the calls whose two
// sides were told unpaired.
func (r *webrtcRunner) hangUp(ctx context.Context) int {
	var clean atomic.Int64
	_ = r.g.eachPair(ctx, len(r.pairs), func(i int) error {
		p := r.pairs[i]
		sctx, cancel := context.WithTimeout(ctx, r.g.cfg.Timeout)
		defer cancel()
		if err := p.a.Unpair(sctx, p.bName); err != nil {
			r.errs.add(fmt.Errorf("unpair: %w", err))
			return nil
		}
		for _, w := range []*client.WebRTC{p.wa, p.wb} {
			select {
			case <-w.Done():
				if !errors.Is(w.Err(), client.ErrUnpaired) {
					r.errs.add(fmt.Errorf("hang-up: %w", w.Err()))
					return nil
				}
			case <-sctx.Done():
				r.errs.add(fmt.Errorf("%w: hang-up", ErrTimeout))
				return nil
			}
		}
		clean.Add(1)
		return nil
	})
	return int(clean.Load())
}

func (r *webrtcRunner) close() {
	for _, p := range r.pairs {
		for _, w := range []*client.WebRTC{p.wa, p.wb} {
			if w != nil {
				w.Close()
			}
		}
		p.a.Close()
		p.b.Close()
	}
}
