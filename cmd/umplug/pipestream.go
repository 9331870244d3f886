package main

// The pipe stream: what two `umplug pipe` processes speak inside the raw
// relay frames of their call, so that each one's byte stream survives a
// change of media connection (a resume after a drop, a new call after a
// server restart) with nothing lost and nothing written twice.
//
// Every relay frame carries one stream frame:
//
//	kind (1 byte) | flags (1 byte) | offset (8 bytes, big endian) | payload
//
//	'D' data   offset: stream position of the payload's first byte;
//	           payload: 1..pipeFrameData bytes of the sender's stdin.
//	'F' fin    offset: the stream's total length (stdin ended there).
//	'A' ack    offset: bytes of the peer's stream written to stdout so far
//	           (cumulative); flag finSeen: and its fin arrived, so the
//	           stream is complete on this side.
//	'H' hello  sent first on every new media connection (and in answer to
//	           one): offset and finSeen as in an ack (the next byte the
//	           receiver wants); flag reply: this answers a hello, do not
//	           answer it; payload: the 8-byte random id of the sending
//	           process.
//	'E' done   the sender's own stream is acknowledged to its fin, and it
//	           has written the peer's stream to its fin: it may hang up.
//
// Decisions:
//   - The sender keeps every byte read from stdin until the peer
//     acknowledges it, in a ring of -buffer bytes; stdin is not read while
//     the ring is full (backpressure, as the relay has).
//   - An acknowledgement means written to stdout (the write returned), not
//     merely received: a byte acknowledged is never sent again, so a
//     receiver must not lose it after acknowledging it.
//   - The receiver writes only the byte it expects next: a frame that
//     starts beyond it (a gap: frames were lost with a dead connection) is
//     dropped, and so is what it already wrote (a resend). Nothing is
//     buffered out of order; the sender resends from the receiver's offset
//     after every hello.
//   - A new media connection sends a hello (not a reply) and sends no data
//     until the peer's first hello on it tells where to resume. A hello
//     that is not a reply is answered and makes the sender rewind to the
//     offset it names (the peer's connection is new: what was in flight
//     toward it is lost). So a side whose connection stayed open (its peer
//     resumed and re-paired with it) learns of the new connection from the
//     peer's hello alone.
//   - The process id in the hello guards against a peer that restarted
//     (its stream state, and what it acknowledged, is gone): a different id
//     than the first one seen is an error, not a silent resend from
//     another offset.
//   - End: once both directions are complete (own stream acknowledged
//     including its fin, peer's stream written including its fin), a side
//     sends done; a complete side that receives the peer's done hangs up,
//     and a complete side whose peer hangs up ends well too. A done lost
//     with a connection is sent again after the next hello.

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// Stream frame kinds.
const (
	kindData  = 'D'
	kindFin   = 'F'
	kindAck   = 'A'
	kindHello = 'H'
	kindDone  = 'E'
)

// Stream frame flags.
const (
	flagFinSeen = 1 << 0 // ack, hello: the peer's fin was written too
	flagReply   = 1 << 1 // hello: an answer to a hello
)

const (
	// pipeHeaderLen is the size of a stream frame's header.
	pipeHeaderLen = 10
	// pipeFrameData is the most stdin bytes one data frame carries.
	pipeFrameData = 32 << 10
	// pipeMaxOffset bounds offsets: far beyond any stream, far from
	// overflowing offset+length arithmetic.
	pipeMaxOffset = 1 << 62
	// defaultPipeBuffer is the default -buffer: unacknowledged bytes kept
	// for resending.
	defaultPipeBuffer = 4 << 20
)

// errPipeProtocol marks a frame that breaks the stream protocol: the peer
// is not a pipe of this version, or it restarted.
var errPipeProtocol = errors.New("pipe stream protocol")

// streamFrame is one decoded stream frame. payload aliases the relay frame.
type streamFrame struct {
	kind    byte
	flags   byte
	offset  uint64
	payload []byte
}

// decodeFrame parses one relay frame. It checks everything a peer could get
// wrong, so that the stream logic may trust the result.
func decodeFrame(b []byte) (streamFrame, error) {
	if len(b) < pipeHeaderLen {
		return streamFrame{}, fmt.Errorf("%w: a %d-byte frame (an older umplug pipe, or not a pipe at all?)", errPipeProtocol, len(b))
	}
	f := streamFrame{kind: b[0], flags: b[1], offset: binary.BigEndian.Uint64(b[2:10]), payload: b[pipeHeaderLen:]}
	if f.offset > pipeMaxOffset {
		return streamFrame{}, fmt.Errorf("%w: offset %d out of range", errPipeProtocol, f.offset)
	}
	var allowed byte
	switch f.kind {
	case kindData:
		if len(f.payload) == 0 || len(f.payload) > pipeFrameData {
			return streamFrame{}, fmt.Errorf("%w: data frame of %d bytes", errPipeProtocol, len(f.payload))
		}
	case kindAck:
		allowed = flagFinSeen
	case kindHello:
		allowed = flagFinSeen | flagReply
		if len(f.payload) != 8 {
			return streamFrame{}, fmt.Errorf("%w: hello with a %d-byte id", errPipeProtocol, len(f.payload))
		}
	case kindFin, kindDone:
	default:
		return streamFrame{}, fmt.Errorf("%w: unknown frame kind %q", errPipeProtocol, f.kind)
	}
	if f.kind != kindData && f.kind != kindHello && len(f.payload) != 0 {
		return streamFrame{}, fmt.Errorf("%w: %q frame with a payload", errPipeProtocol, f.kind)
	}
	if f.flags&^allowed != 0 {
		return streamFrame{}, fmt.Errorf("%w: flags %#x on a %q frame", errPipeProtocol, f.flags, f.kind)
	}
	return f, nil
}

// appendFrame encodes a frame with its header into dst[:0].
func appendFrame(dst []byte, kind, flags byte, offset uint64, payload []byte) []byte {
	dst = append(dst[:0], kind, flags)
	dst = binary.BigEndian.AppendUint64(dst, offset)
	return append(dst, payload...)
}

// frameConn is what the stream needs of a media connection
// (*client.Media): one reader and one writer at a time.
type frameConn interface {
	ReadFrame() ([]byte, error)
	WriteFrame(p []byte) error
}

// helloState is what a link still owes the peer.
type helloState int

const (
	helloNone  helloState = iota
	helloReply            // answer the peer's hello
	helloFirst            // open the connection (it dominates a reply)
)

// link is the stream's use of one media connection.
type link struct {
	m frameConn

	// Guarded by stream.mu:
	hello      helloState
	synced     bool   // the peer's first hello arrived: data may flow
	ackSent    uint64 // the receive offset the peer was last told
	finAckSent bool
	finSent    bool // fin sent since the last rewind
	sendDone   bool // a done frame is due
	dead       bool // the connection failed or was abandoned

	syncedCh  chan struct{} // closed when synced
	readDone  chan struct{} // closed when the read loop ended; then err is set
	writeDone chan struct{} // closed when the write loop ended
	err       error         // why the read loop ended
}

// stream is both directions of one pipe's byte stream, across the media
// connections of its calls.
type stream struct {
	log *slog.Logger
	id  uint64 // this process's random id, sent in hellos
	out io.Writer

	mu   sync.Mutex // guards the following
	cond *sync.Cond // signalled on every change of the state below

	// Sending: ring holds stream bytes [base, end) at ring[offset % len].
	ring     []byte
	base     uint64 // first byte not acknowledged
	end      uint64 // bytes read from stdin
	next     uint64 // next byte to send on the current link
	eof      bool   // stdin ended at end
	finAcked bool   // the peer acknowledged the fin: our stream is delivered

	// Receiving.
	recv     uint64 // bytes of the peer's stream written to out
	recvFin  bool   // the peer's fin arrived at recv
	peerID   uint64 // from the peer's first hello; 0 until then
	peerDone bool   // the peer sent done
	// activity counts the peer's data frames, and writing is set while one
	// is being written out: -linger's measure of an idle peer (a slow
	// stdout is not an idle peer).
	activity uint64
	writing  bool

	cur     *link
	failed  error // a fatal error (stdin, stdout, protocol); failedCh is closed
	stopped bool

	sentAllCh  chan struct{} // closed when finAcked
	completeCh chan struct{} // closed when finAcked && recvFin
	peerDoneCh chan struct{} // closed when peerDone
	failedCh   chan struct{}
}

// newStream makes a stream that keeps at most bufSize unacknowledged bytes
// and writes the peer's stream to out.
func newStream(log *slog.Logger, bufSize int, out io.Writer) *stream {
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	s := &stream{
		log:        log,
		id:         binary.BigEndian.Uint64(id[:]) | 1, // never 0: 0 means unknown
		out:        out,
		ring:       make([]byte, bufSize),
		sentAllCh:  make(chan struct{}),
		completeCh: make(chan struct{}),
		peerDoneCh: make(chan struct{}),
		failedCh:   make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// failLocked records the first fatal error.
func (s *stream) failLocked(err error) {
	if s.failed == nil {
		s.failed = err
		close(s.failedCh)
	}
	s.cond.Broadcast()
}

// Err returns the fatal error, if any.
func (s *stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// stop ends the stream's goroutines (the stdin reader only once its
// current Read returns).
func (s *stream) stop() {
	s.mu.Lock()
	s.stopped = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// unacked returns how many bytes read from stdin the peer has not
// acknowledged, and whether stdin has ended.
func (s *stream) unacked() (n uint64, eof bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end - s.base, s.eof
}

// progress says how far both streams got, for the error that ends a pipe.
func (s *stream) progress() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ours := "stdin still open"
	if s.eof {
		ours = "stdin ended"
	}
	theirs := "its stream not ended"
	if s.recvFin {
		theirs = "its stream ended"
	}
	return fmt.Sprintf("%d bytes read from stdin, %d of them acknowledged, %s; %d bytes of the peer's written, %s",
		s.end, s.base, ours, s.recv, theirs)
}

// peerActivity returns a count that changes whenever a data frame of the
// peer arrives, and whether one is being written out now.
func (s *stream) peerActivity() (count uint64, writing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.activity, s.writing
}

// readStdin fills the ring from r until r ends, waiting while the ring is
// full. It runs in its own goroutine for the life of the process.
func (s *stream) readStdin(r io.Reader) {
	tmp := make([]byte, pipeFrameData)
	for {
		s.mu.Lock()
		for !s.stopped && s.end-s.base == uint64(len(s.ring)) {
			s.cond.Wait()
		}
		if s.stopped {
			s.mu.Unlock()
			return
		}
		free := uint64(len(s.ring)) - (s.end - s.base)
		s.mu.Unlock()

		n, err := r.Read(tmp[:min(free, uint64(len(tmp)))])

		s.mu.Lock()
		for i := 0; i < n; {
			at := int((s.end + uint64(i)) % uint64(len(s.ring)))
			i += copy(s.ring[at:], tmp[i:n])
		}
		s.end += uint64(n)
		switch {
		case err == io.EOF:
			s.eof = true
			s.log.Debug("stdin ended", "bytes", s.end)
		case err != nil:
			s.failLocked(fmt.Errorf("pipe: read stdin: %w", err))
		}
		s.cond.Broadcast()
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// attach starts using m: a hello, then the stream from wherever the peer's
// hello says. The previous link must have ended (readDone) so that one
// reader at a time writes to out.
func (s *stream) attach(m frameConn) *link {
	l := &link{m: m, hello: helloFirst,
		syncedCh: make(chan struct{}), readDone: make(chan struct{}), writeDone: make(chan struct{})}
	s.mu.Lock()
	if s.cur != nil {
		s.cur.dead = true
	}
	s.cur = l
	s.cond.Broadcast()
	s.mu.Unlock()
	go s.writeLoop(l)
	go s.readLoop(l)
	return l
}

// abandon marks l dead, so that its write loop ends once its current write
// returns (the caller closes the connection to make sure it does).
func (s *stream) abandon(l *link) {
	s.mu.Lock()
	l.dead = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// writeLoop sends l's frames: hello, acks, done, data, fin, in that
// priority, until l is dead.
func (s *stream) writeLoop(l *link) {
	defer close(l.writeDone)
	buf := make([]byte, 0, pipeHeaderLen+pipeFrameData)
	for {
		s.mu.Lock()
		var f []byte
		for {
			if l.dead || s.stopped || s.failed != nil {
				s.mu.Unlock()
				return
			}
			if f = s.nextFrameLocked(l, buf); f != nil {
				break
			}
			s.cond.Wait()
		}
		s.mu.Unlock()
		if err := l.m.WriteFrame(f); err != nil {
			s.abandon(l) // the read loop sees the connection end too
			return
		}
	}
}

// nextFrameLocked encodes l's next frame into buf, or returns nil when
// nothing is due. It updates the state as if the frame were sent: a write
// that fails ends the link, and the next one resends from the peer's offset.
func (s *stream) nextFrameLocked(l *link, buf []byte) []byte {
	finSeen := byte(0)
	if s.recvFin {
		finSeen = flagFinSeen
	}
	switch {
	case l.hello != helloNone:
		flags := finSeen
		if l.hello == helloReply {
			flags |= flagReply
		}
		l.hello = helloNone
		l.ackSent, l.finAckSent = s.recv, s.recvFin
		if s.finAcked && s.recvFin {
			l.sendDone = true // it may have been lost with an old connection
		}
		return appendFrame(buf, kindHello, flags, s.recv, binary.BigEndian.AppendUint64(nil, s.id))
	case l.ackSent != s.recv || l.finAckSent != s.recvFin:
		l.ackSent, l.finAckSent = s.recv, s.recvFin
		return appendFrame(buf, kindAck, finSeen, s.recv, nil)
	case l.sendDone:
		l.sendDone = false
		return appendFrame(buf, kindDone, 0, 0, nil)
	case !l.synced:
		return nil // data waits for the peer's offset
	case s.next < s.end:
		n := min(s.end-s.next, pipeFrameData)
		f := appendFrame(buf, kindData, 0, s.next, nil)
		for i := uint64(0); i < n; {
			at := (s.next + i) % uint64(len(s.ring))
			chunk := s.ring[at:min(uint64(len(s.ring)), at+(n-i))]
			f = append(f, chunk...)
			i += uint64(len(chunk))
		}
		s.next += n
		return f
	case s.eof && !l.finSent && !s.finAcked:
		l.finSent = true
		return appendFrame(buf, kindFin, 0, s.end, nil)
	}
	return nil
}

// readLoop handles l's incoming frames until the connection ends or the
// stream fails; then l.err tells why and l.readDone is closed.
func (s *stream) readLoop(l *link) {
	defer func() {
		s.mu.Lock()
		l.dead = true
		s.cond.Broadcast()
		s.mu.Unlock()
		close(l.readDone)
	}()
	for {
		b, err := l.m.ReadFrame()
		if err != nil {
			l.err = err
			return
		}
		f, err := decodeFrame(b)
		if err == nil {
			err = s.handle(l, f)
		}
		if err != nil {
			s.mu.Lock()
			s.failLocked(err)
			s.mu.Unlock()
			l.err = err
			return
		}
	}
}

// handle applies one frame from the peer.
func (s *stream) handle(l *link, f streamFrame) error {
	if f.kind == kindData {
		return s.handleData(f)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.cond.Broadcast()
	switch f.kind {
	case kindFin:
		switch {
		case f.offset < s.recv:
			return fmt.Errorf("%w: fin at %d after %d bytes were written", errPipeProtocol, f.offset, s.recv)
		case f.offset == s.recv && !s.recvFin:
			s.recvFin = true
			s.log.Debug("peer's stream ended", "bytes", s.recv)
			s.checkLocked()
		}
		// Beyond recv: a gap, the data is resent first.
	case kindAck:
		if f.offset < s.base {
			return nil // overtaken by a hello on a newer connection
		}
		return s.ackLocked(f)
	case kindHello:
		id := binary.BigEndian.Uint64(f.payload)
		if s.peerID == 0 {
			s.peerID = id
		} else if id != s.peerID {
			return fmt.Errorf("%w: the peer is another pipe process now (it restarted?): the stream cannot go on", errPipeProtocol)
		}
		if err := s.ackLocked(f); err != nil {
			return err
		}
		first := !l.synced
		if first {
			l.synced = true
			close(l.syncedCh)
		}
		if f.flags&flagReply == 0 && l.hello == helloNone {
			l.hello = helloReply
		}
		if first || f.flags&flagReply == 0 {
			// The peer wants its stream from f.offset: what was in flight
			// beyond it is lost (or will be dropped as a gap).
			if s.next != f.offset {
				s.log.Debug("resending", "from", f.offset, "was at", s.next)
			}
			s.next = f.offset
			l.finSent = false
		}
	case kindDone:
		if !s.peerDone {
			s.peerDone = true
			close(s.peerDoneCh)
		}
	}
	return nil
}

// ackLocked applies the peer's cumulative acknowledgement in an ack or a
// hello: the ring space up to it is free again.
func (s *stream) ackLocked(f streamFrame) error {
	if f.offset > s.end || (f.flags&flagFinSeen != 0 && (!s.eof || f.offset != s.end)) {
		return fmt.Errorf("%w: acknowledgement of %d bytes (fin %v), only %d sent", errPipeProtocol,
			f.offset, f.flags&flagFinSeen != 0, s.end)
	}
	if f.offset < s.base {
		// A hello that wants bytes its sender had acknowledged: they are
		// gone.
		return fmt.Errorf("%w: the peer asks from byte %d, but %d were acknowledged", errPipeProtocol, f.offset, s.base)
	}
	s.base = f.offset
	if f.flags&flagFinSeen != 0 && !s.finAcked {
		s.finAcked = true
		s.log.Debug("the peer has all of our stream", "bytes", s.end)
		close(s.sentAllCh)
		s.checkLocked()
	}
	return nil
}

// checkLocked notices completion: done is due.
func (s *stream) checkLocked() {
	if !s.finAcked || !s.recvFin {
		return
	}
	select {
	case <-s.completeCh:
		return
	default:
	}
	close(s.completeCh)
	if s.cur != nil {
		s.cur.sendDone = true
	}
}

// handleData writes the part of f that comes next in the peer's stream.
func (s *stream) handleData(f streamFrame) error {
	s.mu.Lock()
	recv, fin := s.recv, s.recvFin
	s.activity++
	s.mu.Unlock()
	end := f.offset + uint64(len(f.payload))
	switch {
	case fin && end > recv:
		return fmt.Errorf("%w: data up to %d after the fin at %d", errPipeProtocol, end, recv)
	case f.offset > recv || end <= recv:
		return nil // a gap (resent later) or a resend of what was written
	}
	// Only this goroutine advances recv: no one else writes out.
	p := f.payload[recv-f.offset:]
	s.mu.Lock()
	s.writing = true
	s.mu.Unlock()
	_, err := s.out.Write(p)
	s.mu.Lock()
	s.writing = false
	s.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("pipe: write stdout: %w", err)
		s.mu.Lock()
		s.failLocked(err)
		s.mu.Unlock()
		return err
	}
	s.mu.Lock()
	s.recv += uint64(len(p))
	s.cond.Broadcast()
	s.mu.Unlock()
	return nil
}
