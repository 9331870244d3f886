package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/user-media-plug/umplug/internal/testlog"
)

// frame builds a raw stream frame for the decoder tests.
func frame(kind, flags byte, offset uint64, payload []byte) []byte {
	return appendFrame(nil, kind, flags, offset, payload)
}

func TestDecodeFrame(t *testing.T) {
	id := binary.BigEndian.AppendUint64(nil, 42)
	tests := []struct {
		name    string
		in      []byte
		want    streamFrame
		wantErr string
	}{
		{name: "data", in: frame(kindData, 0, 7, []byte("abc")), want: streamFrame{kind: kindData, offset: 7, payload: []byte("abc")}},
		{name: "full data", in: frame(kindData, 0, 0, make([]byte, pipeFrameData)), want: streamFrame{kind: kindData, payload: make([]byte, pipeFrameData)}},
		{name: "fin", in: frame(kindFin, 0, 1<<40, nil), want: streamFrame{kind: kindFin, offset: 1 << 40}},
		{name: "ack", in: frame(kindAck, 0, 5, nil), want: streamFrame{kind: kindAck, offset: 5}},
		{name: "ack fin", in: frame(kindAck, flagFinSeen, 5, nil), want: streamFrame{kind: kindAck, flags: flagFinSeen, offset: 5}},
		{name: "hello", in: frame(kindHello, 0, 9, id), want: streamFrame{kind: kindHello, offset: 9, payload: id}},
		{name: "hello reply fin", in: frame(kindHello, flagReply|flagFinSeen, 9, id), want: streamFrame{kind: kindHello, flags: flagReply | flagFinSeen, offset: 9, payload: id}},
		{name: "done", in: frame(kindDone, 0, 0, nil), want: streamFrame{kind: kindDone}},
		{name: "max offset", in: frame(kindAck, 0, pipeMaxOffset, nil), want: streamFrame{kind: kindAck, offset: pipeMaxOffset}},

		{name: "empty frame (the old end mark)", in: []byte{}, wantErr: "0-byte frame"},
		{name: "short header", in: []byte{kindData, 0, 0, 0}, wantErr: "4-byte frame"},
		{name: "unknown kind", in: frame('X', 0, 0, nil), wantErr: "unknown frame kind"},
		{name: "empty data", in: frame(kindData, 0, 0, nil), wantErr: "data frame of 0 bytes"},
		{name: "oversize data", in: frame(kindData, 0, 0, make([]byte, pipeFrameData+1)), wantErr: "data frame of"},
		{name: "data with flags", in: frame(kindData, flagFinSeen, 0, []byte("x")), wantErr: "flags"},
		{name: "fin with payload", in: frame(kindFin, 0, 3, []byte("x")), wantErr: "with a payload"},
		{name: "ack with payload", in: frame(kindAck, 0, 3, []byte("x")), wantErr: "with a payload"},
		{name: "done with payload", in: frame(kindDone, 0, 0, []byte("x")), wantErr: "with a payload"},
		{name: "ack with reply flag", in: frame(kindAck, flagReply, 3, nil), wantErr: "flags"},
		{name: "fin with flags", in: frame(kindFin, flagFinSeen, 3, nil), wantErr: "flags"},
		{name: "hello unknown flag", in: frame(kindHello, 4, 0, id), wantErr: "flags"},
		{name: "hello without id", in: frame(kindHello, 0, 0, nil), wantErr: "0-byte id"},
		{name: "hello long id", in: frame(kindHello, 0, 0, append(id, 0)), wantErr: "9-byte id"},
		{name: "offset out of range", in: frame(kindAck, 0, pipeMaxOffset+1, nil), wantErr: "out of range"},
		{name: "offset overflow", in: frame(kindData, 0, ^uint64(0), []byte("x")), wantErr: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeFrame(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errPipeProtocol) {
					t.Fatalf("decodeFrame = %+v, %v; want an errPipeProtocol containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.kind != tt.want.kind || got.flags != tt.want.flags || got.offset != tt.want.offset || !bytes.Equal(got.payload, tt.want.payload) {
				t.Fatalf("decodeFrame = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// FuzzDecodeFrame: any input either fails with errPipeProtocol or decodes
// to a frame that encodes back to the same bytes, within the limits the
// stream logic relies on.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(frame(kindData, 0, 7, []byte("abc")))
	f.Add(frame(kindHello, flagReply, 9, binary.BigEndian.AppendUint64(nil, 1)))
	f.Add(frame(kindAck, flagFinSeen, 1, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			if !errors.Is(err, errPipeProtocol) {
				t.Fatalf("error %v is not errPipeProtocol", err)
			}
			return
		}
		if fr.offset > pipeMaxOffset || len(fr.payload) > pipeFrameData {
			t.Fatalf("out of limits: %+v", fr)
		}
		if fr.kind == kindData && len(fr.payload) == 0 {
			t.Fatal("empty data frame accepted")
		}
		if re := appendFrame(nil, fr.kind, fr.flags, fr.offset, fr.payload); !bytes.Equal(re, b) {
			t.Fatalf("re-encoded %x, want %x", re, b)
		}
	})
}

// fakeRelay stands for the server's media relay between two streams, over
// in-memory connections it can cut: a cut loses every frame queued toward
// the cut side, and the other side's writes are held until the cut side
// attaches again (as the relay holds the next message of the side that
// stayed). Every cutEvery relayed frames it cuts side 0 (stay) or both
// sides (restart: every frame in flight either way is lost), at most
// maxCuts times.
type fakeRelay struct {
	mu       sync.Mutex // guards the following
	cond     *sync.Cond
	conns    [2]*fakeConn // current connection per side; nil while away
	frames   int
	cutEvery int
	cuts     int
	maxCuts  int
	both     bool
	closed   bool
}

type fakeConn struct {
	r    *fakeRelay
	side int
	q    [][]byte // frames toward this side, guarded by r.mu
	dead bool     // guarded by r.mu
}

var errFakeCut = errors.New("fake relay: connection cut")

func newFakeRelay(cutEvery, maxCuts int, both bool) *fakeRelay {
	r := &fakeRelay{cutEvery: cutEvery, maxCuts: maxCuts, both: both}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// attach gives side a new connection.
func (r *fakeRelay) attach(side int) *fakeConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &fakeConn{r: r, side: side, dead: r.closed}
	r.conns[side] = c
	r.cond.Broadcast()
	return c
}

// close cuts everything for good.
func (r *fakeRelay) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, c := range r.conns {
		if c != nil {
			c.dead = true
		}
	}
	r.cond.Broadcast()
}

func (r *fakeRelay) cutLocked() {
	r.cuts++
	for s, c := range r.conns {
		if c != nil && (s == 0 || r.both) {
			c.dead = true
			r.conns[s] = nil
		}
	}
	r.cond.Broadcast()
}

func (c *fakeConn) ReadFrame() ([]byte, error) {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(c.q) == 0 && !c.dead {
		r.cond.Wait()
	}
	if c.dead {
		return nil, errFakeCut
	}
	f := c.q[0]
	c.q = c.q[1:]
	return f, nil
}

func (c *fakeConn) WriteFrame(p []byte) error {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	for !c.dead && r.conns[1-c.side] == nil {
		r.cond.Wait() // held until the other side is back
	}
	if c.dead {
		return errFakeCut
	}
	dst := r.conns[1-c.side]
	dst.q = append(dst.q, bytes.Clone(p))
	r.frames++
	if r.cuts < r.maxCuts && r.frames%r.cutEvery == 0 {
		r.cutLocked()
	}
	r.cond.Broadcast()
	return nil
}

// choppyReader returns its data in reads of random sizes (ring wrap-around
// at every alignment).
type choppyReader struct {
	data []byte
	rng  *mrand.Rand
}

func (r *choppyReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.data), 1+r.rng.IntN(20000))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// lockedBuffer is a bytes.Buffer for a stream's output, read by the test
// after the stream stopped.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) Bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.b.Bytes())
}

// TestStreamSurvivesCuts runs two streams over a relay that keeps cutting
// connections mid-stream, with a ring much smaller than the data (so
// backpressure and wrap-around are exercised), and checks that each output
// is exactly the other's input: nothing lost, nothing twice, in order.
func TestStreamSurvivesCuts(t *testing.T) {
	tests := []struct {
		name     string
		cutEvery int
		both     bool
		up, down int
	}{
		{name: "one side drops, the other stays", cutEvery: 7, up: 1 << 20, down: 300 << 10},
		{name: "both sides drop (server restart)", cutEvery: 5, both: true, up: 700 << 10, down: 500 << 10},
		{name: "one way", cutEvery: 11, up: 400 << 10},
		{name: "nothing to send", cutEvery: 3, both: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rng := mrand.New(mrand.NewPCG(uint64(i), 7))
			up, down := make([]byte, tt.up), make([]byte, tt.down)
			for _, b := range [][]byte{up, down} {
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
			}
			r := newFakeRelay(tt.cutEvery, 200, tt.both)
			var outs [2]lockedBuffer
			var sts [2]*stream
			ins := [2][]byte{up, down}
			for s := range sts {
				sts[s] = newStream(testlog.New(t).With("side", s), 2*pipeFrameData, &outs[s])
				go sts[s].readStdin(&choppyReader{data: ins[s], rng: mrand.New(mrand.NewPCG(uint64(s), 1))})
			}
			// A complete side goes on attaching until both are: the other
			// may still need its acknowledgement (the pipe does the same:
			// it calls again to say done).
			allDone := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for s := range sts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st := sts[s]
					for {
						l := st.attach(r.attach(s))
						select {
						case <-l.readDone:
							<-l.writeDone
							if err := st.Err(); err != nil {
								errs <- err
								return
							}
						case <-allDone:
							return
						}
					}
				}()
			}
			for s := range sts {
				select {
				case <-sts[s].completeCh:
				case err := <-errs:
					t.Fatalf("stream failed: %v", err)
				case <-ctx.Done():
					t.Fatalf("side %d not complete: %v", s, ctx.Err())
				}
			}
			close(allDone)
			r.close()
			for _, st := range sts {
				st.stop()
			}
			wg.Wait()
			if got := outs[1].Bytes(); !bytes.Equal(got, up) {
				t.Errorf("side 1 wrote %d bytes, want side 0's %d (equal prefix: %v)", len(got), len(up), bytes.HasPrefix(up, got))
			}
			if got := outs[0].Bytes(); !bytes.Equal(got, down) {
				t.Errorf("side 0 wrote %d bytes, want side 1's %d", len(got), len(down))
			}
			r.mu.Lock()
			t.Logf("%d frames relayed, %d cuts", r.frames, r.cuts)
			r.mu.Unlock()
		})
	}
}

// TestReceiverWritesOnce feeds a receiver data frames in the orders a
// change of connection produces (resends overlapping what was written,
// frames beyond a gap) and checks that each byte is written once, in order.
func TestReceiverWritesOnce(t *testing.T) {
	data := []byte("0123456789abcdefghij")
	d := func(from, to int) []byte { return frame(kindData, 0, uint64(from), data[from:to]) }
	tests := []struct {
		name    string
		frames  [][]byte
		want    string
		wantErr string
	}{
		{name: "in order", frames: [][]byte{d(0, 5), d(5, 10)}, want: "0123456789"},
		{name: "gap dropped, then resent", frames: [][]byte{d(0, 5), d(8, 12), d(5, 12)}, want: "0123456789ab"},
		{name: "full duplicate", frames: [][]byte{d(0, 5), d(0, 5), d(2, 4), d(5, 6)}, want: "012345"},
		{name: "partial overlap", frames: [][]byte{d(0, 5), d(3, 9)}, want: "012345678"},
		{name: "fin beyond a gap ignored", frames: [][]byte{d(0, 5), frame(kindFin, 0, 20, nil), d(5, 20)}, want: string(data)},
		{name: "fin then resent fin", frames: [][]byte{d(0, 4), frame(kindFin, 0, 4, nil), frame(kindFin, 0, 4, nil), d(0, 4)}, want: "0123"},
		{name: "data after fin", frames: [][]byte{d(0, 4), frame(kindFin, 0, 4, nil), d(4, 6)}, want: "0123", wantErr: "after the fin"},
		{name: "fin before what was written", frames: [][]byte{d(0, 4), frame(kindFin, 0, 2, nil)}, want: "0123", wantErr: "fin at 2"},
		{name: "ack of unsent bytes", frames: [][]byte{frame(kindAck, 0, 1, nil)}, wantErr: "only 0 sent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			s := newStream(testlog.New(t), pipeFrameData, &out)
			l := &link{syncedCh: make(chan struct{})}
			var err error
			for _, b := range tt.frames {
				f, derr := decodeFrame(b)
				if derr != nil {
					t.Fatal(derr)
				}
				if err = s.handle(l, f); err != nil {
					break
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Fatalf("wrote %q, want %q", out.String(), tt.want)
			}
		})
	}
}

// TestHelloFromAnotherProcess: a peer that restarted (another id) cannot
// continue the stream; and a hello asking for bytes already acknowledged
// is refused.
func TestHelloFromAnotherProcess(t *testing.T) {
	s := newStream(testlog.New(t), pipeFrameData, io.Discard)
	s.readStdin(bytes.NewReader([]byte("hello")))
	l := &link{syncedCh: make(chan struct{})}
	hello := func(id, off uint64) error {
		f, err := decodeFrame(frame(kindHello, 0, off, binary.BigEndian.AppendUint64(nil, id)))
		if err != nil {
			t.Fatal(err)
		}
		return s.handle(l, f)
	}
	if err := hello(1, 3); err != nil {
		t.Fatal(err)
	}
	if s.next != 3 || s.base != 3 || l.hello != helloReply || !l.synced {
		t.Fatalf("after a hello: next %d base %d hello %v synced %v", s.next, s.base, l.hello, l.synced)
	}
	if f, _ := decodeFrame(frame(kindAck, 0, 1, nil)); s.handle(l, f) != nil || s.base != 3 {
		t.Fatalf("a stale ack (overtaken by the hello) changed the state: base %d", s.base)
	}
	if err := hello(1, 2); err == nil || !strings.Contains(err.Error(), "were acknowledged") {
		t.Fatalf("hello from before the acknowledged offset: %v", err)
	}
	if err := hello(2, 3); err == nil || !strings.Contains(err.Error(), "another pipe process") {
		t.Fatalf("hello with another id: %v", err)
	}
}
