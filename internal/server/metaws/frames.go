package metaws

import "github.com/gobwas/ws"

// tracker parses the raw byte stream of a connection incrementally: it
// holds at most a frame header (14 bytes) and a few counters, and hands back
// the payload bytes of each read as they arrive, so that a frame costs the
// bytes received so far, never a buffer of its declared length. It refuses,
// as soon as a header is complete, what RFC 6455 and the contract forbid:
// unmasked client frames, reserved bits and opcodes, bad fragmentation,
// fragmented or long control frames, 64-bit lengths with the top bit set, a
// 1-byte close payload, binary messages (1003) and messages over the size
// limit (1009). It also tells whether an unfinished frame or message is
// pending, for the frame deadline (Config.FrameTimeout).
type tracker struct {
	max    int64 // message size limit
	remain int64 // payload bytes still to come in the current frame
	pos    int64 // payload bytes of the current frame consumed so far
	msgLen int64 // payload bytes of the unfinished data message so far (declared)

	hdr     [14]byte
	key     [4]byte // masking key of the current frame
	nh      uint8   // header bytes held
	op      byte
	msgOp   byte // opcode of the unfinished data message (text or binary)
	fin     bool
	inFrame bool // the header is complete; payload follows
	inMsg   bool // a data message is unfinished (a non-final frame was seen)
}

// Opcodes (RFC 6455 5.2).
const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xa
)

// Close codes used here (RFC 6455 7.4.1).
const (
	closeNormal      = 1000
	closeProtocol    = 1002
	closeUnsupported = 1003
	closeNoStatus    = 1005
	closeInvalidData = 1007
	closePolicy      = 1008
	closeTooBig      = 1009
)

// step is what one call to tracker.step found.
type step struct {
	done    bool   // the current frame ended within this step
	op      byte   // the frame's opcode (valid once its header is complete)
	fin     bool   // the frame is final
	payload []byte // payload bytes in this step, still masked (a sub-slice of the input)
	off     int64  // offset of payload[0] in the frame's payload, for unmasking
	empty   bool   // done, and a text message of zero bytes ended with it
	code    int    // non-zero: refuse with this close code
	reason  string
	fatal   bool // framing is lost or the frame must not be parsed at all
}

// partial reports whether bytes of an unfinished frame, or an unfinished
// fragmented message, are pending.
func (t *tracker) partial() bool { return t.nh > 0 || t.inMsg }

// headerLen is the header length as far as the bytes held tell.
func (t *tracker) headerLen() int {
	if t.nh < 2 {
		return 2
	}
	n := 2
	switch t.hdr[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if t.hdr[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// step consumes the bytes of b that belong to the current frame, at most up
// to its end. On a fatal refusal it stops right after the header.
func (t *tracker) step(b []byte) (n int, s step) {
	if !t.inFrame {
		for n < len(b) && int(t.nh) < t.headerLen() {
			t.hdr[t.nh] = b[n]
			t.nh++
			n++
		}
		if int(t.nh) < t.headerLen() {
			return n, s
		}
		s = t.begin()
		if s.fatal {
			return n, s
		}
	}
	s.op, s.fin = t.op, t.fin
	k := min(int64(len(b)-n), t.remain)
	s.payload, s.off = b[n:n+int(k)], t.pos
	n += int(k)
	t.remain -= k
	t.pos += k
	if t.remain == 0 {
		s.done = true
		if t.op < opClose && t.fin {
			s.empty = t.msgOp == opText && t.msgLen == 0
			t.inMsg, t.msgLen = false, 0
		}
		t.inFrame, t.nh = false, 0
	}
	return n, s
}

// begin validates a complete header.
func (t *tracker) begin() step {
	h := t.hdr[:t.nh]
	fin := h[0]&0x80 != 0
	op := h[0] & 0x0f
	var length int64
	switch l := h[1] & 0x7f; l {
	case 126:
		length = int64(h[2])<<8 | int64(h[3])
	case 127:
		if h[2]&0x80 != 0 {
			return step{code: closeProtocol, reason: "64-bit length with the top bit set", fatal: true}
		}
		for _, x := range h[2:10] {
			length = length<<8 | int64(x)
		}
	default:
		length = int64(l)
	}
	bad := func(reason string) step { return step{code: closeProtocol, reason: reason, fatal: true} }
	switch {
	case h[0]&0x70 != 0:
		return bad("reserved bits set")
	case h[1]&0x80 == 0:
		return bad("unmasked client frame")
	}
	var s step
	switch op {
	case opCont:
		if !t.inMsg {
			return bad("continuation frame outside a message")
		}
	case opText, opBinary:
		if t.inMsg {
			return bad("new message inside a fragmented one")
		}
		t.msgOp, t.msgLen = op, 0
		if op == opBinary {
			s = step{code: closeUnsupported, reason: "binary frames are not allowed"}
		}
	case opClose, opPing, opPong:
		if !fin || length > 125 {
			return bad("bad control frame")
		}
		if op == opClose && length == 1 {
			return bad("close payload of one byte")
		}
	default:
		return bad("reserved opcode")
	}
	if op < opClose {
		if length > t.max-t.msgLen {
			return step{code: closeTooBig, reason: "message too big", fatal: true}
		}
		t.msgLen += length
		t.inMsg = true // until its final frame ends
	}
	t.inFrame, t.remain, t.op, t.fin, t.pos = true, length, op, fin, 0
	copy(t.key[:], h[len(h)-4:])
	return s
}

// unmask unmasks p, found at offset off of the current frame's payload.
func (t *tracker) unmask(p []byte, off int64) { ws.Cipher(p, t.key, int(off&3)) }

// validCloseCode reports whether a peer may send code in a close frame
// (RFC 6455 7.4 and the IANA registry): 1004-1006 and 1015 are reserved for
// reporting, below 1000 and 1016-2999 are unassigned.
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// appendFrame appends one final, unmasked server frame.
func appendFrame(b []byte, op byte, p []byte) []byte {
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|op, byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|op, 127)
		for i := 56; i >= 0; i -= 8 {
			b = append(b, byte(uint64(n)>>i))
		}
	}
	return append(b, p...)
}

// closeBody is a close frame payload: the code, then the reason cut to fit
// a control frame.
func closeBody(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	return append([]byte{byte(code >> 8), byte(code)}, reason...)
}
