package media

import (
	"io"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// relayBufSize is the chunk one relay direction copies at a time: the
// smaller, the less memory a frame in flight holds. BenchmarkRelayBufferSize
// (media_bench_test.go) sweeps it together with the WebSocket buffers, 4 to
// 256 KiB, against a copy proxy of the same size: 4 KiB had about a third of
// the throughput of the larger sizes, and from 16 KiB up the differences
// were within the noise of the shared 2-core machine (docs/benchmarks.md has
// the latest run). BenchmarkRelay64KiB measures this size with the
// production WebSocket buffers.
const relayBufSize = 64 << 10

// relayBufs holds the copy buffers. A buffer is taken per frame, so that
// memory grows with the number of frames in flight, not with the number of
// (mostly idle, at 30 fps) connections.
var relayBufs = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}

// relay copies the binary messages of src's connection c to the other
// side until something fails, and returns the side to blame: src when
// reading from c failed (clean: the device closed with 1000, see deliberate), the other
// side when writing to it failed for good; nil when the call ended. It reads
// c's next message only after the previous one was fully written, so a slow
// receiver slows its sender through TCP flow control and memory stays
// bounded by one chunk per direction. When the other side drops and may
// come back (resume.go), relay waits for its new connection before reading
// on, and the message being written is lost.
func (s *Server) relay(src *side, c *websocket.Conn) (blamed *side, clean bool) {
	dst := src.peer()
	var dc, bad *websocket.Conn // the receiving connection; the last one that failed
	dw := &deadlineWriter{timeout: s.writeTimeout}
	for {
		mt, r, err := c.NextReader()
		if err != nil {
			return src, deliberate(err)
		}
		if mt != websocket.BinaryMessage {
			// Text after the hello is ignored (see the package doc).
			if _, err := copyDiscard(r, s.maxFrame); err != nil {
				return src, false
			}
			continue
		}
		if dc != nil && dst.live.Load() != dc {
			dc = nil // dst dropped or was rebound since the last message
		}
		if dc == nil {
			if dc = s.target(dst, bad); dc == nil {
				return nil, true
			}
		}
		dst.wmu.Lock()
		w, err := dc.NextWriter(websocket.BinaryMessage)
		if err == nil {
			dw.c, dw.w, dw.err = dc, w, nil
			bufp := relayBufs.Get().(*[]byte)
			var n int64
			n, err = io.CopyBuffer(dw, onlyReader{r}, *bufp)
			relayBufs.Put(bufp)
			if err != nil && dw.err == nil {
				dst.wmu.Unlock()
				return src, false // reading src failed mid-message
			}
			if err == nil {
				_ = dc.SetWriteDeadline(time.Now().Add(s.writeTimeout))
				if err = w.Close(); err == nil {
					dst.wmu.Unlock()
					s.m.frames.Inc()
					s.m.bytes.Add(float64(n))
					continue
				}
			}
		}
		dst.wmu.Unlock()
		// Writing to dst failed.
		if s.cut(dc, err) {
			return dst, false
		}
		if _, err := copyDiscard(r, s.maxFrame); err != nil {
			return src, false
		}
		bad, dc = dc, nil
	}
}

// deadlineWriter renews the write deadline before every chunk, so that
// WriteTimeout bounds how long the receiver takes to drain one chunk, not
// how long the sender takes to produce a whole message.
type deadlineWriter struct {
	c       *websocket.Conn
	w       io.Writer
	timeout time.Duration
	err     error // the last write error: the receiver's fault
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.c.SetWriteDeadline(time.Now().Add(d.timeout))
	n, err := d.w.Write(p)
	if err != nil {
		d.err = err
	}
	return n, err
}

// onlyReader hides any WriterTo so that io.CopyBuffer uses the pooled buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// copyDiscard reads and drops up to limit bytes of r.
func copyDiscard(r io.Reader, limit int64) (int64, error) {
	return io.Copy(io.Discard, io.LimitReader(r, limit))
}
