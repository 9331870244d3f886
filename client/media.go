package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/protocol"
)

// maxMediaWrite is the largest frame Write sends: longer writes are split.
// It stays within the /meta frame limit, which every server accepts for
// media too (servers usually allow more, see their MaxFrameBytes).
const maxMediaWrite = protocol.MaxFrameBytes

// Media is the media connection of one call (contract section 6): once
// paired, every binary frame written is delivered unchanged and in order to
// the peer, and the peer's frames are read here. It is also an
// io.ReadWriteCloser over the byte stream of those frames.
//
// One goroutine may read (ReadFrame, Read) while others write (WriteFrame,
// Write); writes are serialised.
type Media struct {
	conn *websocket.Conn
	log  *slog.Logger

	wmu sync.Mutex // serialises writes

	rmu  sync.Mutex // guards rbuf, the rest of a frame partly consumed by Read
	rbuf []byte

	paired     chan struct{} // closed when {type:"paired"} arrived
	pairedOnce sync.Once
	frames     chan []byte   // unbuffered: a slow reader slows the peer
	done       chan struct{} // closed when the connection ended
	closed     chan struct{} // closed by Close
	closeOnce  sync.Once

	mu      sync.Mutex // guards the following
	peer    string
	err     error // set once before done closes
	closing bool
}

// Media opens the media connection of a force-call event fc: it dials the
// media endpoint fc.Media (resolved against the /meta URL) and presents
// fc.Ticket. It returns once the ticket is sent, before the peer is there:
// wait on Paired. A refused ticket shows as Done with ErrTicketRefused.
// ctx bounds the dial only.
func (c *Client) Media(ctx context.Context, fc protocol.Event) (*Media, error) {
	if fc.Type != protocol.TypeForceCall || fc.Ticket == "" {
		return nil, fmt.Errorf("%w (type %q)", ErrNotForceCall, fc.Type)
	}
	u, err := mediaURL(c.metaURL, fc.Media)
	if err != nil {
		return nil, err
	}
	conn, resp, err := c.dialer.DialContext(ctx, u.String(), c.header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("client: dial media %s: %w (HTTP %s)", u.Redacted(), err, resp.Status)
		}
		return nil, fmt.Errorf("client: dial media %s: %w", u.Redacted(), err)
	}
	hello, err := json.Marshal(protocol.MediaHello{Type: protocol.TypeMedia, Ticket: fc.Ticket})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("client: encode media hello: %w", err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultWriteTimeout)
	}
	_ = conn.SetWriteDeadline(deadline)
	if err := conn.WriteMessage(websocket.TextMessage, hello); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("client: send media ticket: %w", err)
	}
	// Media frames are backpressured, not timed: a write waits as long as
	// the peer is slow. Close or the end of the call unblocks it.
	_ = conn.SetWriteDeadline(time.Time{})
	m := &Media{
		conn:   conn,
		log:    c.log.With("peer", fc.Peer),
		peer:   fc.Peer,
		paired: make(chan struct{}),
		frames: make(chan []byte),
		done:   make(chan struct{}),
		closed: make(chan struct{}),
	}
	go m.readLoop()
	return m, nil
}

// readLoop reads the media connection: the paired notice and the peer's
// frames, handed over one at a time so that TCP carries the backpressure.
func (m *Media) readLoop() {
	var err error
loop:
	for {
		var typ int
		var data []byte
		typ, data, err = m.conn.ReadMessage()
		if err != nil {
			break
		}
		switch typ {
		case websocket.TextMessage:
			var p protocol.Paired
			if jerr := json.Unmarshal(data, &p); jerr != nil || p.Type != protocol.TypePaired {
				m.log.Debug("ignoring media text frame")
				continue
			}
			m.mu.Lock()
			if p.Peer != "" {
				m.peer = p.Peer
			}
			m.mu.Unlock()
			m.pairedOnce.Do(func() { close(m.paired) })
			m.log.Debug("media paired")
		case websocket.BinaryMessage:
			select {
			case m.frames <- data:
			case <-m.closed:
				err = ErrClosed
				break loop
			}
		}
	}
	m.mu.Lock()
	err = mediaErr(err, m.closing)
	m.err = err
	m.mu.Unlock()
	m.log.Debug("media ended", "err", err) // before done: see Client.readLoop
	_ = m.conn.Close()
	close(m.done)
}

// mediaErr maps the error that ended a media connection to the package's
// sentinels, keeping the cause.
func mediaErr(err error, closing bool) error {
	if closing {
		return ErrClosed
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case protocol.CloseNormal:
			return fmt.Errorf("%w: %w", ErrUnpaired, err)
		case protocol.ClosePolicy:
			return fmt.Errorf("%w: %w", ErrTicketRefused, err)
		}
	}
	return err
}

// Paired is closed when both devices of the call are connected: from then
// on frames flow.
func (m *Media) Paired() <-chan struct{} { return m.paired }

// Peer returns the user on the other side.
func (m *Media) Peer() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peer
}

// Done is closed when the media connection has ended; Err then tells why.
func (m *Media) Done() <-chan struct{} { return m.done }

// Err returns why the media connection ended: ErrUnpaired when the call
// ended, ErrTicketRefused for a refused ticket, ErrClosed after Close, else
// the underlying error; nil while it is open.
func (m *Media) Err() error {
	select {
	case <-m.done:
	default:
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// WriteFrame sends p as one binary frame. Frames written before Paired wait
// in the network until the peer is there. It blocks while the peer is slow.
func (m *Media) WriteFrame(p []byte) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if err := m.conn.WriteMessage(websocket.BinaryMessage, p); err != nil {
		select {
		case <-m.done:
			return m.Err()
		default:
		}
		return fmt.Errorf("client: media write: %w", err)
	}
	return nil
}

// ReadFrame returns the peer's next binary frame, waiting for it (and so for
// Paired). After the connection ended it returns Err().
func (m *Media) ReadFrame() ([]byte, error) {
	select {
	case f := <-m.frames:
		return f, nil
	case <-m.done:
		return nil, m.Err()
	}
}

// Read reads the byte stream of the peer's frames. A normal end of the call
// (ErrUnpaired) is io.EOF.
func (m *Media) Read(p []byte) (int, error) {
	m.rmu.Lock()
	defer m.rmu.Unlock()
	for len(m.rbuf) == 0 {
		f, err := m.ReadFrame()
		if err != nil {
			if errors.Is(err, ErrUnpaired) {
				return 0, io.EOF
			}
			return 0, err
		}
		m.rbuf = f
	}
	n := copy(p, m.rbuf)
	m.rbuf = m.rbuf[n:]
	return n, nil
}

// Write sends p as one binary frame, or as several of at most 64 KiB when it
// is longer. An empty p sends nothing.
func (m *Media) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		chunk := p[n:min(len(p), n+maxMediaWrite)]
		if err := m.WriteFrame(chunk); err != nil {
			return n, err
		}
		n += len(chunk)
	}
	return n, nil
}

// Close closes the media connection. The server treats it as this side
// leaving: the call ends as disconnected. Prefer Client.Unpair to hang up.
func (m *Media) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closing = true
		m.mu.Unlock()
		close(m.closed)
		closeNormal(m.conn)
	})
	<-m.done
	return nil
}

var _ io.ReadWriteCloser = (*Media)(nil)
