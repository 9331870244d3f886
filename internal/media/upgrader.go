package media

import (
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// BufferSize is the read and write buffer size for /media WebSockets in
// the Go client and the relay's write side. BenchmarkRelayBufferSize sweeps
// every buffer of the relay path, 4–256 KiB, against a user-space copy
// proxy of the same size: 4 KiB has about a third of the throughput; from
// 16 KiB up the differences were within the noise of the shared 2-core
// machine (docs/benchmarks.md). 32 KiB is a middle of that plateau.
const BufferSize = 32 << 10

// writeBufs is shared by every media connection's writer: a connection
// holds a write buffer only while it writes a message.
var writeBufs = &sync.Pool{}

// Upgrader returns the WebSocket upgrader the HTTP layer should use for
// /media. checkOrigin is the server's origin policy (cross-site WebSocket
// hijacking protection). Compression stays off: media is already compressed
// and deflate would cost CPU and break the streaming relay.
//
// Buffers: writes go through BufferSize buffers from a pool, held only
// while a message is written. Reads reuse net/http's 4 KiB reader of the
// hijacked connection (ReadBufferSize 0) instead of a BufferSize one of
// their own: a connection that has not shown its ticket yet (anyone can
// open one) then holds no buffer beyond what its HTTP request already had.
// BenchmarkMediaPreTicket (internal/server): 47.6 KB of heap per such
// connection with a 32 KiB read buffer, 14.5 KB without. The cost is more
// read syscalls per relayed fragment: BenchmarkRelay64KiB on the shared
// 2-core machine measured 1.1 GB/s against 1.75 GB/s in one quiet pair of
// runs and no difference beyond noise in four loaded ones; either is far
// above what calls need, and memory an anonymous client can pin matters
// more. (Re-measure on a quiet machine before changing it back.)
func Upgrader(checkOrigin func(*http.Request) bool) *websocket.Upgrader {
	return &websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		WriteBufferSize:  BufferSize,
		WriteBufferPool:  writeBufs,
		CheckOrigin:      checkOrigin,
	}
}

// Dialer returns a WebSocket dialer for media clients with the same buffer
// sizes as Upgrader.
func Dialer() *websocket.Dialer {
	return &websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   BufferSize,
		WriteBufferSize:  BufferSize,
		WriteBufferPool:  writeBufs,
	}
}
