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

// BenchmarkRelay64KiB measures one relayed pair, 64 KiB binary frames in one
// direction, client to server to client. Compare with BenchmarkTCPPipe64KiB.
func BenchmarkRelay64KiB(b *testing.B) { benchRelay64KiB(b, BufferSize) }

// BenchmarkRelayBufferSize is BenchmarkRelay64KiB with other WebSocket
// buffer sizes (server and clients): how BufferSize was chosen.
func BenchmarkRelayBufferSize(b *testing.B) {
	for _, size := range []int{4 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) { benchRelay64KiB(b, size) })
	}
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

// BenchmarkTCPPipe64KiB is the physical baseline of BenchmarkRelay64KiB:
// the same bytes through two loopback TCP connections joined by io.Copy in a
// process-local proxy (client -> proxy -> server), no WebSocket framing.
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
