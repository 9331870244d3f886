package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/protocol"
)

// mediaHeader is the head of every bench frame: the send time (ns since the
// run's shared start, monotonic) and the sequence number, little-endian.
const mediaHeader = 16

// mediaBufSize is the WebSocket buffer size of the media scenario's
// connections, the server's own /media size (internal/media.BufferSize): a
// frame up to 32 KiB leaves in one write, unfragmented, as a real media
// client would send it. gorilla's client side otherwise splits a message
// into frames of its write buffer.
const mediaBufSize = 32 << 10

// mediaBufPool shares write buffers between the media scenario's
// connections; gorilla wants one pool per buffer size.
var mediaBufPool sync.Pool

// MediaResult is the outcome of the media scenario.
type MediaResult struct {
	Pairs      int           `json:"pairs"`
	FrameBytes int           `json:"frame_bytes"`
	FPS        float64       `json:"fps"`        // per side; 0: as fast as possible
	Window     time.Duration `json:"window_ns"`  // the sending window: shared start → stop
	InWindow   int64         `json:"in_window"`  // frames received within Window
	Elapsed    time.Duration `json:"elapsed_ns"` // shared start → the last frame received
	Sent       int64         `json:"sent"`       // frames sent, both directions
	Received   int64         `json:"received"`   // frames received, both directions
	// OrderErrors counts frames whose sequence number was not above the
	// previous one's: reordered or duplicated.
	OrderErrors int64 `json:"order_errors"`
	// Lost counts sequence numbers never received: gaps, and the tail that
	// had not arrived when the drain timed out.
	Lost int64 `json:"lost"`
	// BadFrames counts frames of the wrong length or with a wrong payload
	// mark: the relay changed them.
	BadFrames int64          `json:"bad_frames"`
	Latency   latencies      `json:"latency"` // one way: send timestamp → receipt
	Hangups   int            `json:"hangups"` // calls ended cleanly: both media closed as unpaired
	Failures  map[string]int `json:"failures"`
	ServerCPU time.Duration  `json:"server_cpu_ns"`
	CPUSource string         `json:"cpu_source"`
	ClientCPU time.Duration  `json:"client_cpu_ns"` // the load generator's own CPU meanwhile
}

// Summary implements Result.
func (r *MediaResult) Summary() map[string]float64 {
	return map[string]float64{
		"frames_per_sec":          r.FramesPerSec(),
		"mb_per_sec":              r.MBPerSec(),
		"latency_p50_ns":          float64(r.Latency.P50),
		"latency_p99_ns":          float64(r.Latency.P99),
		"latency_max_ns":          float64(r.Latency.Max),
		"server_cpu_per_frame_ns": float64(r.CPUPerFrame()),
		"server_cores":            cores(r.ServerCPU, r.Elapsed),
		"order_errors":            float64(r.OrderErrors),
		"lost":                    float64(r.Lost),
		"bad_frames":              float64(r.BadFrames),
		"failures":                float64(sumCounts(r.Failures)),
	}
}

// FramesPerSec is the relayed frame rate while every side sent, both
// directions together. Frames still in flight at the stop (socket buffers
// hold many) count in Received but not here.
func (r *MediaResult) FramesPerSec() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.InWindow) / r.Window.Seconds()
}

// MBPerSec is the relayed payload rate in MB/s (10^6 bytes), both
// directions together.
func (r *MediaResult) MBPerSec() float64 {
	return r.FramesPerSec() * float64(r.FrameBytes) / 1e6
}

// CPUPerFrame is server CPU time per relayed frame.
func (r *MediaResult) CPUPerFrame() time.Duration {
	return cpuPer(r.ServerCPU, r.Received)
}

// Rows implements Result.
func (r *MediaResult) Rows() []Row {
	pacing := "unpaced (as fast as possible)"
	if r.FPS > 0 {
		pacing = fmt.Sprintf("%g frames/s per side", r.FPS)
	}
	return []Row{
		{"pairs", strconv.Itoa(r.Pairs), ""},
		{"frame size", strconv.Itoa(r.FrameBytes) + " B", ""},
		{"pacing", pacing, ""},
		{"sending window / until drained", r.Window.Round(time.Millisecond).String() + " / " + r.Elapsed.Round(time.Millisecond).String(), ""},
		{"frames sent / received", fmt.Sprintf("%d / %d", r.Sent, r.Received), ""},
		{"frames/s relayed (both directions)", fmt.Sprintf("%.0f", r.FramesPerSec()), "≥ 100000 (1 KiB, unpaced)"},
		{"MB/s relayed", fmt.Sprintf("%.1f", r.MBPerSec()), ""},
		{"latency p50", us(r.Latency.P50), ""},
		{"latency p99", us(r.Latency.P99), "≤ 1000 µs (30 fps, 10 KiB)"},
		{"latency max", us(r.Latency.Max), ""},
		{"order errors", strconv.FormatInt(r.OrderErrors, 10), "0"},
		{"lost frames", strconv.FormatInt(r.Lost, 10), "0"},
		{"bad frames", strconv.FormatInt(r.BadFrames, 10), "0"},
		{"clean hang-ups", fmt.Sprintf("%d/%d", r.Hangups, r.Pairs), ""},
		{"failures", formatCounts(r.Failures), ""},
		{"server CPU", fmt.Sprintf("%v = %.2f cores (%s)", r.ServerCPU.Round(time.Millisecond), cores(r.ServerCPU, r.Elapsed), r.CPUSource), ""},
		{"server CPU per frame", fmt.Sprintf("%.2f µs", float64(r.CPUPerFrame())/1e3), ""},
		{"load generator CPU", fmt.Sprintf("%v = %.2f cores", r.ClientCPU.Round(time.Millisecond), cores(r.ClientCPU, r.Elapsed)), ""},
	}
}

// cores is the average number of CPUs busy with cpu over wall time.
func cores(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return cpu.Seconds() / wall.Seconds()
}

func us(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + " µs"
}

// mediaDir is one direction of a call's media: the sender writes on w, the
// receiver reads on r.
type mediaDir struct {
	w, r *client.Media

	// final is the number of frames sent once the sender stopped, -1
	// before; last is the highest sequence number received. drained closes
	// once both are known and last reached final.
	final   atomic.Int64
	last    atomic.Int64
	recv    atomic.Int64
	drained chan struct{}
	once    sync.Once

	// Owned by the receiver goroutine; read once recvDone is closed.
	order, gaps, bad int64
	lat              []time.Duration
	recvDone         chan struct{}
}

func newMediaDir(w, r *client.Media) *mediaDir {
	d := &mediaDir{w: w, r: r, drained: make(chan struct{}), recvDone: make(chan struct{})}
	d.final.Store(-1)
	return d
}

func (d *mediaDir) checkDrained() {
	if f := d.final.Load(); f >= 0 && d.last.Load() >= f {
		d.once.Do(func() { close(d.drained) })
	}
}

// mediaPair is one call of the media scenario.
type mediaPair struct {
	*callPair
	ma, mb *client.Media
	ab, ba *mediaDir
}

// mediaRunner runs the media scenario.
type mediaRunner struct {
	g     *gen
	pairs []*mediaPair
	errs  *errCounter
	base  time.Time   // the shared start of the frames' timestamps
	stop  atomic.Bool // senders stop before their next frame
}

func (g *gen) runMedia(ctx context.Context) (*MediaResult, error) {
	r, err := g.prepareMedia(ctx)
	if err != nil {
		return nil, err
	}
	defer r.close()
	if err := r.connect(ctx); err != nil {
		return nil, err
	}
	cpu0, src, err := g.serverCPU(ctx)
	if err != nil {
		return nil, err
	}
	self0 := selfCPU()
	window, inWindow, elapsed := r.stream(ctx)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cpu1, _, err := g.serverCPU(ctx)
	if err != nil {
		return nil, err
	}
	self1 := selfCPU()
	hangups := r.hangUp(ctx)
	res := &MediaResult{
		Pairs:      len(r.pairs),
		FrameBytes: g.cfg.FrameBytes,
		FPS:        g.cfg.FPS,
		Window:     window,
		InWindow:   inWindow,
		Elapsed:    elapsed,
		Hangups:    hangups,
		ServerCPU:  cpu1 - cpu0,
		CPUSource:  src,
		ClientCPU:  self1 - self0,
	}
	var lat []time.Duration
	for _, p := range r.pairs {
		for _, d := range []*mediaDir{p.ab, p.ba} {
			<-d.recvDone // hangUp ended every media connection
			final := max(d.final.Load(), 0)
			res.Sent += final
			res.Received += d.recv.Load()
			res.OrderErrors += d.order
			res.BadFrames += d.bad
			res.Lost += d.gaps + max(final-d.last.Load(), 0)
			lat = append(lat, d.lat...)
		}
	}
	res.Latency = summarize(lat)
	res.Failures = r.errs.snapshot()
	return res, nil
}

// prepareMedia registers and logs in the pairs: bench-media-a-i and
// bench-media-b-i, mutual peers.
func (g *gen) prepareMedia(ctx context.Context) (*mediaRunner, error) {
	pairs, err := g.preparePairs(ctx, "media", "media", g.loginMedia)
	if err != nil {
		return nil, err
	}
	r := &mediaRunner{g: g, pairs: make([]*mediaPair, len(pairs)), errs: newErrCounter()}
	for i, p := range pairs {
		r.pairs[i] = &mediaPair{callPair: p}
	}
	return r, nil
}

// loginMedia is loginClient with media-sized WebSocket buffers: the client
// dials /media with the dialer it dialled /meta with.
func (g *gen) loginMedia(ctx context.Context, user string) (*client.Client, error) {
	d := g.dialer(nil)
	d.ReadBufferSize, d.WriteBufferSize, d.WriteBufferPool = mediaBufSize, mediaBufSize, &mediaBufPool
	return g.loginWith(ctx, user, d)
}

// close ends every media connection and client; a call still up ends as
// disconnected.
func (r *mediaRunner) close() {
	for _, p := range r.pairs {
		for _, m := range []*client.Media{p.ma, p.mb} {
			if m != nil {
				m.Close()
			}
		}
		p.a.Close()
		p.b.Close()
	}
}

// connect sets every pair's call up and opens its media: call → accept →
// both force-calls → both media connections → both paired.
func (r *mediaRunner) connect(ctx context.Context) error {
	var paired atomic.Int64
	stop := r.g.progress(func() string { return fmt.Sprintf("media: paired %d/%d", paired.Load(), len(r.pairs)) })
	defer stop()
	err := r.g.eachPair(ctx, len(r.pairs), func(i int) error {
		if err := r.connectPair(ctx, r.pairs[i]); err != nil {
			return fmt.Errorf("%s → %s: %w", r.pairs[i].aName, r.pairs[i].bName, err)
		}
		paired.Add(1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: media: %w", ErrSetup, err)
	}
	return nil
}

func (r *mediaRunner) connectPair(ctx context.Context, p *mediaPair) error {
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
	if p.ma, err = p.a.Media(sctx, fa.ev); err != nil {
		return err
	}
	if p.mb, err = p.b.Media(sctx, fb.ev); err != nil {
		return err
	}
	for _, m := range []*client.Media{p.ma, p.mb} {
		select {
		case <-m.Paired():
		case <-m.Done():
			return fmt.Errorf("media ended before paired: %w", m.Err())
		case <-sctx.Done():
			return fmt.Errorf("%w for paired: %w", ErrTimeout, sctx.Err())
		}
	}
	p.ab, p.ba = newMediaDir(p.ma, p.mb), newMediaDir(p.mb, p.ma)
	return nil
}

// stream sends frames both ways on every pair for Duration, then waits
// until every frame sent has arrived (or Timeout passed). It returns the
// sending window and the frames received in it, and the time from the
// shared start to the last frame.
func (r *mediaRunner) stream(ctx context.Context) (window time.Duration, inWindow int64, elapsed time.Duration) {
	var dirs []*mediaDir
	for _, p := range r.pairs {
		dirs = append(dirs, p.ab, p.ba)
	}
	r.base = time.Now()
	for _, d := range dirs {
		go r.receive(d)
	}
	stopProgress := r.g.progress(func() string {
		var n int64
		for _, d := range dirs {
			n += d.recv.Load()
		}
		return fmt.Sprintf("media: %d frames received (%.0f/s), failures: %s", n,
			float64(n)/time.Since(r.base).Seconds(), r.errs)
	})
	defer stopProgress()
	var wg sync.WaitGroup
	for _, d := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.send(ctx, d)
		}()
	}
	t := time.NewTimer(r.g.cfg.Duration)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	window = time.Since(r.base)
	for _, d := range dirs {
		inWindow += d.recv.Load()
	}
	r.stop.Store(true)
	wg.Wait()
	drain := time.NewTimer(r.g.cfg.Timeout)
	defer drain.Stop()
	for _, d := range dirs {
		select {
		case <-d.drained:
		case <-drain.C:
			r.errs.add(fmt.Errorf("%w: drain: frames still in flight", ErrTimeout))
			return window, inWindow, time.Since(r.base)
		case <-ctx.Done():
			return window, inWindow, time.Since(r.base)
		}
	}
	return window, inWindow, time.Since(r.base)
}

// send writes frames on d until the run stops: each one stamped with its
// send time and sequence number, and its last byte set to the sequence
// number's low byte so that the receiver notices a changed payload.
func (r *mediaRunner) send(ctx context.Context, d *mediaDir) {
	var seq int64
	defer func() {
		d.final.Store(seq)
		d.checkDrained()
	}()
	buf := make([]byte, r.g.cfg.FrameBytes)
	var pace *pacer
	if r.g.cfg.FPS > 0 {
		// A random phase: real streams do not all send at the same instant.
		iv := time.Duration(float64(time.Second) / r.g.cfg.FPS)
		pace = &pacer{interval: iv, next: r.base.Add(rand.N(iv))}
	}
	for !r.stop.Load() {
		if pace != nil {
			if err := pace.wait(ctx); err != nil {
				return
			}
		}
		binary.LittleEndian.PutUint64(buf[8:], uint64(seq+1))
		buf[len(buf)-1] = byte(seq + 1)
		binary.LittleEndian.PutUint64(buf, uint64(time.Since(r.base)))
		if err := d.w.WriteFrame(buf); err != nil {
			if ctx.Err() == nil {
				r.errs.add(fmt.Errorf("media write: %w", err))
			}
			return
		}
		seq++
	}
}

// receive reads d's frames until the media connection ends, checking order,
// loss and payload, and recording each frame's one-way latency.
func (r *mediaRunner) receive(d *mediaDir) {
	defer close(d.recvDone)
	fb := r.g.cfg.FrameBytes
	for {
		f, err := d.r.ReadFrame()
		if err != nil {
			if !errors.Is(err, client.ErrUnpaired) && !errors.Is(err, client.ErrClosed) {
				r.errs.add(fmt.Errorf("media read: %w", err))
			}
			return
		}
		now := time.Since(r.base)
		if len(f) < mediaHeader {
			d.bad++
			continue
		}
		sent := time.Duration(binary.LittleEndian.Uint64(f))
		seq := int64(binary.LittleEndian.Uint64(f[8:]))
		if len(f) != fb || f[len(f)-1] != byte(seq) {
			d.bad++
		}
		last := d.last.Load()
		switch {
		case seq <= last:
			d.order++
		case seq > last+1:
			d.gaps += seq - last - 1
		}
		d.lat = append(d.lat, now-sent)
		d.recv.Add(1)
		if seq > last {
			d.last.Store(seq)
			d.checkDrained()
		}
	}
}

// hangUp ends every call from a's side and counts the clean ones: the
// unpair answered, b told, both media connections closed as unpaired. A
// call that did not end cleanly has its media closed, which ends it.
func (r *mediaRunner) hangUp(ctx context.Context) int {
	var clean atomic.Int64
	r.g.eachPair(ctx, len(r.pairs), func(i int) error {
		p := r.pairs[i]
		if err := r.hangUpPair(ctx, p); err != nil {
			r.errs.add(err)
			r.g.log.Debug("media hang-up failed", "caller", p.aName, "err", err)
			p.ma.Close()
			p.mb.Close()
			return nil
		}
		clean.Add(1)
		return nil
	})
	return int(clean.Load())
}

func (r *mediaRunner) hangUpPair(ctx context.Context, p *mediaPair) error {
	hctx, cancel := context.WithTimeout(ctx, r.g.cfg.Timeout)
	defer cancel()
	if err := p.aP.wait(hctx); err != nil {
		return err
	}
	if err := p.a.Unpair(hctx, p.bName); err != nil {
		return fmt.Errorf("unpair: %w", err)
	}
	if _, err := waitEv(hctx, p.bEv, protocol.TypeUnpair); err != nil {
		return err
	}
	for _, m := range []*client.Media{p.ma, p.mb} {
		select {
		case <-m.Done():
			if err := m.Err(); !errors.Is(err, client.ErrUnpaired) {
				return fmt.Errorf("media ended: %w", err)
			}
		case <-hctx.Done():
			return fmt.Errorf("%w for media end: %w", ErrTimeout, hctx.Err())
		}
	}
	return nil
}
