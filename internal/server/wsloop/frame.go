package wsloop

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/gobwas/ws"
)

// readers are the read buffers, held only while a goroutine serves a
// readable connection.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// connReader reads the bytes that came with the handshake, then the socket.
type connReader struct{ c *Conn }

func (r connReader) Read(p []byte) (int, error) {
	if c := r.c; len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return r.c.nc.Read(p)
}

// serve reads and handles frames. With blocking it runs for the whole
// connection (a goroutine per connection); without, it returns once every
// byte read so far is handled, leaving no buffer behind. A frame that
// arrived in part is waited for (bounded by the idle timeout).
func (c *Conn) serve(blocking bool) {
	br := readers.Get().(*bufio.Reader)
	br.Reset(connReader{c})
	for c.state.Load() != stateEnded {
		if err := c.step(br); err != nil {
			c.end()
			break
		}
		if !blocking && br.Buffered() == 0 && len(c.pending) == 0 {
			break
		}
	}
	br.Reset(nil)
	readers.Put(br)
	c.done()
}

// header is a frame header.
type header struct {
	fin    bool
	rsv    byte
	op     ws.OpCode
	masked bool
	mask   [4]byte
	length int64
}

// readHeader reads a frame header; it returns errProtocol for a length the
// RFC forbids.
func readHeader(br *bufio.Reader) (h header, err error) {
	b, err := br.Peek(2)
	if err != nil {
		return h, err
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = b[0] & 0x70
	h.op = ws.OpCode(b[0] & 0x0f)
	h.masked = b[1]&0x80 != 0
	n := 2
	switch b[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h.masked {
		n += 4
	}
	if b, err = br.Peek(n); err != nil {
		return h, err
	}
	switch l := b[1] & 0x7f; l {
	case 126:
		h.length = int64(b[2])<<8 | int64(b[3])
	case 127:
		if b[2]&0x80 != 0 {
			return h, fmt.Errorf("%w: 64-bit length with the top bit set", errProtocol)
		}
		for i := 2; i < 10; i++ {
			h.length = h.length<<8 | int64(b[i])
		}
	default:
		h.length = int64(l)
	}
	if h.masked {
		copy(h.mask[:], b[n-4:n])
	}
	br.Discard(n)
	return h, nil
}

// step reads one frame and acts on it. An error means the connection is
// over (read error or end of stream).
func (c *Conn) step(br *bufio.Reader) error {
	if c.state.Load() == stateDraining {
		// The framing can no longer be trusted: discard raw input until the
		// peer closes or the grace is over.
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				return err
			}
		}
		br.Discard(br.Buffered())
		return nil
	}
	h, err := readHeader(br)
	if err != nil {
		if errors.Is(err, errProtocol) {
			c.closeWith(stateDraining, int(ws.StatusProtocolError), "protocol error")
			return nil
		}
		return err
	}
	switch {
	case h.rsv != 0:
		c.closeWith(stateDraining, int(ws.StatusProtocolError), "reserved bits set")
		return nil
	case !h.masked:
		c.closeWith(stateDraining, int(ws.StatusProtocolError), "unmasked client frame")
		return nil
	case h.op.IsReserved():
		c.closeWith(stateDraining, int(ws.StatusProtocolError), "reserved opcode")
		return nil
	case h.op.IsControl():
		return c.control(br, h)
	}
	if h.length > c.l.cfg.MaxMessageBytes-int64(len(c.msg)) {
		c.msg, c.inMsg = nil, false
		c.closeWith(stateDraining, int(ws.StatusMessageTooBig), "message too big")
		return nil
	}
	closing := c.state.Load() != stateOpen
	if !closing {
		switch {
		case h.op == ws.OpContinuation && !c.inMsg, h.op != ws.OpContinuation && c.inMsg:
			c.closeWith(stateDraining, int(ws.StatusProtocolError), "bad fragmentation")
			return nil
		case h.op == ws.OpBinary:
			// Refused, and so is all that follows: the state is closing
			// from here on, and closing discards data frames.
			c.closeWith(stateClosing, int(ws.StatusUnsupportedData), "binary frames are not allowed")
			closing = true
		}
	}
	if closing {
		if _, err := br.Discard(int(h.length)); err != nil {
			return err
		}
		c.lastSeen.Store(now())
		return nil
	}
	off := len(c.msg)
	c.msg = append(c.msg, make([]byte, h.length)...)
	if _, err := io.ReadFull(br, c.msg[off:]); err != nil {
		return err
	}
	ws.Cipher(c.msg[off:], h.mask, 0)
	c.lastSeen.Store(now())
	if !h.fin {
		c.inMsg = true
		if c.msg == nil {
			c.msg = []byte{} // a text message with an empty first fragment
		}
		return nil
	}
	msg := c.msg
	c.msg, c.inMsg = nil, false
	if msg == nil {
		msg = []byte{}
	}
	c.h.Handle(msg)
	return nil
}

// control handles a ping, pong or close frame.
func (c *Conn) control(br *bufio.Reader, h header) error {
	if !h.fin || h.length > 125 {
		c.closeWith(stateDraining, int(ws.StatusProtocolError), "bad control frame")
		return nil
	}
	var buf [125]byte
	p := buf[:h.length]
	b, err := br.Peek(len(p))
	if err != nil {
		return err
	}
	copy(p, b)
	br.Discard(len(p))
	ws.Cipher(p, h.mask, 0)
	c.lastSeen.Store(now())
	switch h.op {
	case ws.OpPing:
		c.wmu.Lock()
		if c.state.Load() == stateOpen {
			c.writeLocked(ws.OpPong, p, c.l.cfg.WriteTimeout)
		}
		c.wmu.Unlock()
	case ws.OpClose:
		if c.state.Load() == stateOpen {
			// Echo the peer's code, then hang up.
			var body []byte
			if len(p) >= 2 {
				body = p[:2]
			}
			c.wmu.Lock()
			c.writeLocked(ws.OpClose, body, c.l.cfg.CloseGrace)
			c.wmu.Unlock()
		}
		return io.EOF
	}
	return nil
}
