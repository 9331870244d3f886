package media

import (
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// quiet is the benchmark configuration: no per-frame debug logging.
func quiet(c *Config) { c.Logger = nil }

// The throughput benchmarks stream 64 KiB messages one way, client to
// server to client, over loopback. Run them as scripts/bench.sh does:
//
//	go test -run '^$' -bench 'Relay64KiB|RelayBufferSize' -count 10 ./internal/media/ > new.txt
//	benchstat -col /impl new.txt     # relay against the copy proxy, per buffer size
//	benchstat -col /buf new.txt      # the sweep: one size against the others
//
// On Linux, io.Copy between two TCP sockets uses splice(2) and never copies
// the bytes into user space; that is not what the relay can do (it must
// parse and re-frame every message), so the baseline here is a proxy that
// copies through a user-space buffer of the relay's size.

// sweepSizes are the buffer sizes BenchmarkRelayBufferSize measures.
var sweepSizes = []int{4 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10}

// BenchmarkRelay64KiB measures the relay as the server runs it: the
// buffers of Upgrader and Dialer, copy chunks of relayBufSize.
func BenchmarkRelay64KiB(b *testing.B) { benchRelay64KiB(b, 0) }

// BenchmarkRelayBufferSize sweeps buffer sizes, each for the relay and for a
// user-space copy proxy of the same size:
//
//   - impl=relay: the media relay with WebSocket read and write buffers of
//     buf on the server and both clients (whatever Upgrader and Dialer
//     use), and the relay's copy chunk (relayBufSize in production) of buf
//     too;
//   - impl=copy: two loopback TCP connections joined by a proxy that reads
//     into one buf-sized buffer and writes it out (no splice, no framing).
//
// This is what the buffer-size claims next to BufferSize and relayBufSize
// rest on.
func BenchmarkRelayBufferSize(b *testing.B) {
	for _, size := range sweepSizes {
		b.Run(fmt.Sprintf("buf=%dKiB/impl=relay", size>>10), func(b *testing.B) {
			defer setRelayChunk(size)()
			benchRelay64KiB(b, size)
		})
		b.Run(fmt.Sprintf("buf=%dKiB/impl=copy", size>>10), func(b *testing.B) {
			benchCopyProxy(b, size)
		})
	}
}

// setRelayChunk makes the relay copy in chunks of size until the returned
// restore is called. Benchmarks run one at a time, and no relay runs
// between two of them (the env's cleanup waits for every ServeConn).
func setRelayChunk(size int) (restore func()) {
	use := func(n int) {
		relayBufs.New = func() any { b := make([]byte, n); return &b }
		// Drop the pooled buffers of the other size: Get empties the pool
		// (stealing from every P) before it calls New.
		for {
			bp := relayBufs.Get().(*[]byte)
			if len(*bp) == n {
				relayBufs.Put(bp)
				return
			}
		}
	}
	use(size)
	return func() { use(relayBufSize) }
}

func benchRelay64KiB(b *testing.B, bufSize int) {
	e := newEnvBuf(b, 10*time.Minute, quiet, bufSize)
	src, dst := e.connect("bench", "alice", "bob")
	frame := make([]byte, 64<<10)
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() {
		for range b.N {
			if err := src.WriteMessage(websocket.BinaryMessage, frame); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for range b.N {
		_, r, err := dst.NextReader()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

// onlyWriter hides a ReaderFrom, as onlyReader hides a WriterTo: together
// they keep io.CopyBuffer on its buffer, off splice(2) and sendfile(2).
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// benchCopyProxy streams 64 KiB writes through a user-space copy proxy
// with a bufSize buffer: client -> proxy -> sink, all loopback TCP.
func benchCopyProxy(b *testing.B, bufSize int) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	proxy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer proxy.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		in, err := proxy.Accept()
		if err != nil {
			return
		}
		defer in.Close()
		out, err := net.Dial("tcp", sink.Addr().String())
		if err != nil {
			return
		}
		defer out.Close()
		_, _ = io.CopyBuffer(onlyWriter{out}, onlyReader{in}, make([]byte, bufSize))
	}()
	client, err := net.Dial("tcp", proxy.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	server, err := sink.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	frame := make([]byte, 64<<10)
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	go func() {
		for range b.N {
			if _, err := client.Write(frame); err != nil {
				break
			}
		}
		client.Close()
	}()
	// The receiving client reads with a buffer of the same size, as the
	// relay's receiving client reads through its bufSize read buffer.
	n, err := io.CopyBuffer(io.Discard, onlyReader{server}, make([]byte, bufSize))
	if err != nil || n != int64(b.N)*int64(len(frame)) {
		b.Fatalf("sink got %d bytes, %v", n, err)
	}
	b.StopTimer()
	wg.Wait()
}

// BenchmarkTCPPipe64KiB is the floor of the kernel alone: the same bytes
// joined with io.Copy, which on Linux splices socket to socket and never
// copies them through the proxy's memory. No user-space proxy can match
// it; BenchmarkRelayBufferSize's impl=copy is the fair baseline.
func BenchmarkTCPPipe64KiB(b *testing.B) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	proxy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer proxy.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		in, err := proxy.Accept()
		if err != nil {
			return
		}
		defer in.Close()
		out, err := net.Dial("tcp", sink.Addr().String())
		if err != nil {
			return
		}
		defer out.Close()
		_, _ = io.Copy(out, in)
	}()
	client, err := net.Dial("tcp", proxy.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	server, err := sink.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	frame := make([]byte, 64<<10)
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	go func() {
		for range b.N {
			if _, err := client.Write(frame); err != nil {
				break
			}
		}
		client.Close()
	}()
	n, err := io.Copy(io.Discard, server)
	if err != nil || n != int64(b.N)*int64(len(frame)) {
		b.Fatalf("sink got %d bytes, %v", n, err)
	}
	b.StopTimer()
	wg.Wait()
}

// BenchmarkRelay1KiBFrames measures many small frames: 50 pairs, each side
// sending 1 KiB frames to the other at once.
func BenchmarkRelay1KiBFrames(b *testing.B) {
	const pairs = 50
	e := newEnv(b, 10*time.Minute, quiet)
	var conns [][2]*websocket.Conn
	for i := range pairs {
		ca, cb := e.connect(fmt.Sprintf("c%d", i), fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
		conns = append(conns, [2]*websocket.Conn{ca, cb})
	}
	frame := make([]byte, 1<<10)
	per := b.N/(2*pairs) + 1
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, 4*pairs)
	for _, p := range conns {
		for j := range 2 {
			src, dst := p[j], p[1-j]
			wg.Add(2)
			go func() {
				defer wg.Done()
				for range per {
					if err := src.WriteMessage(websocket.BinaryMessage, frame); err != nil {
						errc <- err
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for range per {
					_, r, err := dst.NextReader()
					if err == nil {
						_, err = io.Copy(io.Discard, r)
					}
					if err != nil {
						errc <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errc)
	for err := range errc {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per*2*pairs)/elapsed.Seconds(), "frames/s")
}

// BenchmarkRelayLatency measures the one-way time of a 10 KiB frame through
// the relay with one frame in flight (a 30 fps stream never has more), from
// the sender's write call to the receiver's complete read. BenchmarkTCPPipe
// figures are not subtracted: on loopback the physical part is a few µs.
func BenchmarkRelayLatency(b *testing.B) {
	e := newEnv(b, 10*time.Minute, quiet)
	src, dst := e.connect("lat", "alice", "bob")
	frame := make([]byte, 10<<10)
	buf := make([]byte, len(frame))
	lat := make([]time.Duration, 0, b.N)
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := src.WriteMessage(websocket.BinaryMessage, frame); err != nil {
			b.Fatal(err)
		}
		_, r, err := dst.NextReader()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
