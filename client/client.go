// Package client is the Go client of the umplug server: it speaks the /meta
// protocol (accounts, peers, presence, calls) and the /media relay of
// package protocol's contract.
//
// A Client is one /meta WebSocket, that is one device of one user:
//
//	c, err := client.Dial(ctx, "http://127.0.0.1:8080", nil) // or "ws://127.0.0.1:8080/meta"
//	if err != nil { … }
//	defer c.Close()
//	if _, err := c.Login(ctx, "alice", password); err != nil { … }
//	if _, err := c.Call(ctx, "bob"); err != nil { … } // ok means ringing
//	session := c.Session() // later: c2.LoginSession(ctx, "alice", session), no password
//	for ev := range c.Events() {  // status, call, accept, reject, cancel, unpair, force-call, missed-call
//		if ev.Type == protocol.TypeForceCall {
//			m, err := c.Media(ctx, ev) // the media relay of this call
//			<-m.Paired()
//			m.Write([]byte("hello")) // or use m as an io.ReadWriteCloser
//		}
//	}
//
// Every request method sends one message and waits for its response, matched
// by tx, so a Client may be used from several goroutines at once. A failed
// response is returned as a *protocol.Error: test it with
// errors.Is(err, &protocol.Error{Code: protocol.ErrBusy}). Server-initiated
// messages arrive on Events, in order and never silently dropped: events not
// yet read queue up to Options.EventBuffer (default DefaultEventBuffer); one
// more closes the connection with ErrEventsOverflow (see Events).
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/protocol"
)

// Options configures Dial. A nil *Options and every zero field mean the
// default.
type Options struct {
	// Header is sent with the WebSocket upgrades of /meta and /media. Leave
	// Origin unset unless the server allows it: a foreign Origin is refused.
	Header http.Header
	// Dialer dials /meta and /media; nil means a copy of
	// websocket.DefaultDialer with a 10 s handshake timeout.
	Dialer *websocket.Dialer
	// Logger receives debug logs; nil discards them. Passwords and tickets
	// are never logged.
	Logger *slog.Logger
	// IdleTimeout closes the connection when the server sends nothing, not
	// even a ping, for this long. Zero means protocol.IdleTimeout (the
	// server pings every protocol.PingInterval); negative disables it.
	IdleTimeout time.Duration
	// EventBuffer bounds the events received but not yet read from Events.
	// Zero or negative means DefaultEventBuffer. When an event arrives with
	// the buffer full, the client closes the connection and Err reports
	// ErrEventsOverflow (see Events).
	EventBuffer int
}

// DefaultEventBuffer is the default Options.EventBuffer: far more than a
// reading app ever has queued (a login announces at most protocol.MaxPeers
// peers' statuses, and most are not online), small enough that an app that
// stopped reading is noticed in kilobytes, not gigabytes.
const DefaultEventBuffer = 1024

// Timeouts of the client's own.
const (
	defaultHandshakeTimeout = 10 * time.Second
	// defaultWriteTimeout bounds a write whose context has no deadline, so
	// that a dead peer cannot hold the write mutex forever.
	defaultWriteTimeout = 10 * time.Second
	closeGrace          = time.Second
	// maxServerFrame bounds a /meta frame from the server: a peers answer
	// with protocol.MaxPeers long names is about 150 KiB.
	maxServerFrame = 1 << 20
)

// Client is a connection to the /meta endpoint of an umplug server. Its
// methods are safe for concurrent use.
type Client struct {
	conn    *websocket.Conn
	log     *slog.Logger
	metaURL *url.URL
	dialer  *websocket.Dialer
	header  http.Header
	idle    time.Duration

	wmu sync.Mutex // serialises writes: gorilla allows one concurrent writer

	mu sync.Mutex // guards the following
	// nextTx numbers requests of this connection.
	nextTx int64
	// pending holds, per tx, the waiters in send order. The server answers
	// strictly in order, so the oldest waiter of a tx owns its next
	// response. A waiter whose context ended stays queued so that the late
	// response is consumed (and discarded) by it, not by a younger request.
	pending map[protocol.Tx][]chan *protocol.Response
	user    string
	device  string
	session string // the session secret of the last Login/LoginSession/Passwd
	err     error  // why the connection ended, set once before done closes
	closing bool   // Close was called

	qmu       sync.Mutex       // guards queue and readEnded
	queue     []protocol.Event // received, not yet read from Events; at most maxEvents
	readEnded bool
	notify    chan struct{} // capacity 1: the queue grew or the read loop ended
	maxEvents int

	events    chan protocol.Event
	done      chan struct{} // closed when the read loop ended
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
}

// Dial connects to the /meta endpoint. rawURL is either the endpoint itself
// ("ws://host:port/meta", "wss://…") or the server's base URL
// ("http://host:port", "https://host/prefix", "host:port") from which /meta
// is derived. ctx bounds the dial only.
func Dial(ctx context.Context, rawURL string, opts *Options) (*Client, error) {
	if opts == nil {
		opts = &Options{}
	}
	u, err := metaURL(rawURL)
	if err != nil {
		return nil, err
	}
	dialer := opts.Dialer
	if dialer == nil {
		d := *websocket.DefaultDialer
		d.HandshakeTimeout = defaultHandshakeTimeout
		dialer = &d
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	idle := opts.IdleTimeout
	if idle == 0 {
		idle = protocol.IdleTimeout
	}
	maxEvents := opts.EventBuffer
	if maxEvents <= 0 {
		maxEvents = DefaultEventBuffer
	}
	conn, resp, err := dialer.DialContext(ctx, u.String(), opts.Header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("client: dial %s: %w (HTTP %s)", u.Redacted(), err, resp.Status)
		}
		return nil, fmt.Errorf("client: dial %s: %w", u.Redacted(), err)
	}
	c := &Client{
		conn:      conn,
		log:       log.With("server", u.Host),
		metaURL:   u,
		dialer:    dialer,
		header:    opts.Header,
		idle:      idle,
		pending:   make(map[protocol.Tx][]chan *protocol.Response),
		notify:    make(chan struct{}, 1),
		maxEvents: maxEvents,
		events:    make(chan protocol.Event),
		done:      make(chan struct{}),
		closed:    make(chan struct{}),
	}
	conn.SetReadLimit(maxServerFrame)
	c.extendDeadline()
	conn.SetPingHandler(func(data string) error {
		c.extendDeadline()
		// WriteControl may run concurrently with the writer holding wmu. A
		// failed pong is not fatal here: a broken socket fails the read.
		_ = conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(closeGrace))
		return nil
	})
	go c.readLoop()
	go c.pump()
	return c, nil
}

// metaURL derives the /meta WebSocket URL from what the user typed.
func metaURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: %q has no host", ErrBadURL, raw)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
		// A ws URL with a path names the endpoint itself.
		if strings.Trim(u.Path, "/") != "" {
			return u, nil
		}
	default:
		return nil, fmt.Errorf("%w: scheme %q (want http, https, ws or wss)", ErrBadURL, u.Scheme)
	}
	u.Fragment, u.RawFragment = "", ""
	p := strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(p, "/meta") {
		p += "/meta"
	}
	u.Path, u.RawPath = p, ""
	return u, nil
}

// mediaURL resolves a force-call's media reference (normally "/media")
// against the /meta URL, the way a browser resolves a link.
func mediaURL(meta *url.URL, ref string) (*url.URL, error) {
	if ref == "" {
		ref = protocol.MediaPath
	}
	r, err := url.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: media %q: %w", ErrBadURL, ref, err)
	}
	u := meta.ResolveReference(r)
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return nil, fmt.Errorf("%w: media scheme %q", ErrBadURL, u.Scheme)
	}
	return u, nil
}

// extendDeadline pushes the read deadline: any frame or ping proves the
// server alive.
func (c *Client) extendDeadline() {
	if c.idle > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(c.idle))
	}
}

// readLoop owns the reading side: it matches responses to waiters and
// queues events, and never blocks on either.
func (c *Client) readLoop() {
	var err error
	for {
		var typ int
		var data []byte
		typ, data, err = c.conn.ReadMessage()
		if err != nil {
			break
		}
		c.extendDeadline()
		if typ != websocket.TextMessage {
			c.log.Debug("ignoring non-text frame from server")
			continue
		}
		var m protocol.ServerMessage
		if jerr := json.Unmarshal(data, &m); jerr != nil {
			c.log.Warn("ignoring undecodable frame from server", "err", jerr)
			continue
		}
		if m.Type == protocol.TypeRes {
			c.dispatch(&m.Response)
			continue
		}
		ev := m.Event()
		c.log.Debug("event", "type", ev.Type, "from", ev.User, "to", ev.Peer, "reason", ev.Reason)
		c.qmu.Lock()
		full := len(c.queue) >= c.maxEvents
		if !full {
			c.queue = append(c.queue, ev)
		}
		c.qmu.Unlock()
		if full {
			// Dropping this event would leave the app with a wrong picture
			// (a call it never hears of, a hang-up it misses), so the
			// connection ends instead: the app sees why and reconnects.
			err = fmt.Errorf("%w: %d events unread, %s not queued", ErrEventsOverflow, c.maxEvents, ev.Type)
			c.log.Warn("closing: events not read", "unread", c.maxEvents)
			_ = c.conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseGoingAway, "events not read"), time.Now().Add(closeGrace))
			break
		}
		c.wake()
	}
	c.mu.Lock()
	if c.closing {
		err = ErrClosed
	}
	c.err = err
	c.mu.Unlock()
	// Log first: once done is closed the caller may have returned from
	// Close, and its logger (a test's t.Log) may be gone.
	c.log.Debug("connection ended", "err", err)
	_ = c.conn.Close()
	close(c.done)
	c.qmu.Lock()
	c.readEnded = true
	c.qmu.Unlock()
	c.wake()
}

func (c *Client) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// dispatch hands a response to the oldest waiter of its tx.
func (c *Client) dispatch(r *protocol.Response) {
	c.mu.Lock()
	q := c.pending[r.Tx]
	var w chan *protocol.Response
	if len(q) > 0 {
		w = q[0]
		if len(q) == 1 {
			delete(c.pending, r.Tx)
		} else {
			c.pending[r.Tx] = q[1:]
		}
	}
	c.mu.Unlock()
	if w == nil {
		c.log.Warn("response matches no request", "for", r.For, "tx", string(r.Tx), "error", r.Error)
		return
	}
	w <- r // capacity 1, one response per waiter: never blocks
}

// pump moves queued events to the Events channel, so that a slow consumer
// never blocks the read loop. An event leaves the queue only once Events
// delivered it, so the queue's length counts every event not yet read (the
// bound of Options.EventBuffer). It closes Events once the connection ended
// and every event was delivered, or at once when Close is called.
func (c *Client) pump() {
	defer close(c.events)
	for {
		c.qmu.Lock()
		var ev protocol.Event
		have, ended := len(c.queue) > 0, c.readEnded
		if have {
			ev = c.queue[0]
		}
		c.qmu.Unlock()
		if have {
			select {
			case c.events <- ev:
			case <-c.closed:
				return
			}
			c.qmu.Lock()
			c.queue[0] = protocol.Event{} // let the event's strings go
			c.queue = c.queue[1:]
			if len(c.queue) == 0 {
				c.queue = nil // release the drained backing array
			}
			c.qmu.Unlock()
			continue
		}
		if ended {
			return
		}
		select {
		case <-c.notify:
		case <-c.closed:
			return
		}
	}
}

// Events returns the server-initiated messages (status, call, accept,
// reject, cancel, unpair, force-call, missed-call) in arrival order. None is dropped
// silently: they queue until read, up to Options.EventBuffer (default
// DefaultEventBuffer). An event arriving with the queue full ends the
// connection (a close 1001 "events not read" to the server, which then
// treats the device as gone: a call it was in ends); the queued events are
// still delivered, then the channel closes and Err wraps ErrEventsOverflow.
// An app that sees it should reconnect and re-read its state (Peers). The
// channel is closed after the connection ended and the queue is drained, or
// when Close is called. Read it until it is closed, or call Close, or its
// goroutine stays alive.
func (c *Client) Events() <-chan protocol.Event { return c.events }

// Done is closed when the connection has ended; Err then tells why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Next returns the next event whose type is one of types, discarding the
// events before it (a program waiting for its call to be accepted need not
// care about presence meanwhile). It fails when ctx ends or the connection
// does; don't mix it with another reader of Events.
func (c *Client) Next(ctx context.Context, types ...string) (protocol.Event, error) {
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				return protocol.Event{}, fmt.Errorf("client: waiting for %v: %w", types, errors.Join(ErrClosed, c.Err()))
			}
			if slices.Contains(types, ev.Type) {
				return ev, nil
			}
		case <-ctx.Done():
			return protocol.Event{}, fmt.Errorf("client: waiting for %v: %w", types, ctx.Err())
		}
	}
}

// Err returns why the connection ended (ErrClosed after Close,
// ErrEventsOverflow when Events was not read, else the read error, e.g. a
// *websocket.CloseError), or nil while it is open.
func (c *Client) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection (a normal close) and waits for the read loop to
// stop. The server then treats this device as disconnected: a call it was in
// ends. Events is closed at once, dropping undelivered events.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		close(c.closed)
		closeNormal(c.conn)
	})
	<-c.done
	return nil
}

// closeNormal sends a normal close frame (bounded by closeGrace) and closes
// the socket; the read loop then ends.
func closeNormal(conn *websocket.Conn) {
	_ = conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(closeGrace))
	_ = conn.Close()
}

// User returns the user name of the successful Login, or "".
func (c *Client) User() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// Device returns the device id the server assigned at Login, or "".
func (c *Client) Device() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.device
}

// Send sends a raw message and returns its response whatever its ok. It is
// the escape hatch for conformance tests and messages this package does not
// wrap. req is not modified. When req has no "tx" a fresh one is set; a
// caller-provided numeric tx is matched by its JSON text, and a non-numeric
// one (answered with tx null) by order. The returned error is about transport
// only (ctx, closed connection), never the response's ok.
func (c *Client) Send(ctx context.Context, req map[string]any) (*protocol.Response, error) {
	msg := make(map[string]any, len(req)+1)
	for k, v := range req {
		msg[k] = v
	}
	var key protocol.Tx
	if v, ok := msg["tx"]; ok {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("client: encode tx: %w", err)
		}
		// The server echoes a numeric tx's text byte for byte and answers
		// null for anything else; Tx's decoder gives exactly those keys.
		_ = key.UnmarshalJSON(b)
	} else {
		key = c.newTx()
		msg["tx"] = key
	}
	return c.roundTrip(ctx, msg, key)
}

func (c *Client) newTx() protocol.Tx {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextTx++
	return protocol.TxInt(c.nextTx)
}

// roundTrip writes msg and waits for the response carrying tx key.
func (c *Client) roundTrip(ctx context.Context, msg map[string]any, key protocol.Tx) (*protocol.Response, error) {
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("client: encode %v: %w", msg["type"], err)
	}
	typ, _ := msg["type"].(string)
	w := make(chan *protocol.Response, 1)
	// Queue the waiter before writing: the response may beat the return
	// of WriteMessage.
	c.mu.Lock()
	c.pending[key] = append(c.pending[key], w)
	c.mu.Unlock()

	if err := c.write(ctx, b); err != nil {
		c.forget(key, w) // never sent, so never answered
		return nil, fmt.Errorf("client: send %s: %w", typ, err)
	}
	select {
	case r := <-w:
		return r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("client: %s: %w", typ, ctx.Err())
	case <-c.done:
		select {
		case r := <-w:
			return r, nil
		default:
		}
		return nil, fmt.Errorf("client: %s: %w", typ, c.endErr())
	}
}

// forget removes waiter w of tx key.
func (c *Client) forget(key protocol.Tx, w chan *protocol.Response) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.pending[key]
	for i, x := range q {
		if x == w {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(c.pending, key)
	} else {
		c.pending[key] = q
	}
}

// endErr is the error of a request cut short by the end of the connection.
func (c *Client) endErr() error {
	err := c.Err()
	if err == nil || errors.Is(err, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrClosed, err)
}

// write sends one text frame. ctx is only checked before: a write cut short
// breaks the connection for good (gorilla cannot resume a half-written
// frame), so a short request timeout must not cut it; defaultWriteTimeout
// bounds it instead.
func (c *Client) write(ctx context.Context, b []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-c.done:
		return c.endErr()
	case <-c.closed:
		return ErrClosed
	default:
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(defaultWriteTimeout))
	if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		_ = c.conn.Close()
		select {
		case <-c.closed:
			return ErrClosed
		default:
		}
		<-c.done // closing the socket ends the read loop
		return fmt.Errorf("%w: %w", c.endErr(), err)
	}
	return nil
}

// request sends a typed message and turns a failed response into its
// *protocol.Error.
func (c *Client) request(ctx context.Context, msg map[string]any) (*protocol.Response, error) {
	tx, ok := msg["tx"].(protocol.Tx)
	if !ok {
		tx = c.newTx()
		msg["tx"] = tx
	}
	r, err := c.roundTrip(ctx, msg, tx)
	if err != nil {
		return nil, err
	}
	if perr := r.Err(); perr != nil {
		return r, perr
	}
	return r, nil
}

// userRequest is request for the messages that carry the logged-in user.
func (c *Client) userRequest(ctx context.Context, typ string, fields map[string]any) (*protocol.Response, error) {
	user := c.User()
	if user == "" {
		return nil, fmt.Errorf("client: %s: %w", typ, ErrNotLoggedIn)
	}
	if fields == nil {
		fields = make(map[string]any, 3)
	}
	fields["type"] = typ
	fields["user"] = user
	return c.request(ctx, fields)
}

// nonNil makes an absent peer list encode as [] rather than null.
func nonNil(peers []string) []string {
	if peers == nil {
		return []string{}
	}
	return peers
}

// Register creates an account with initial peers, which must all be
// registered (else a protocol.ErrNotFound error listing them in Missing, and
// no account is created). It does not log the connection in.
func (c *Client) Register(ctx context.Context, user, password string, peers ...string) error {
	_, err := c.request(ctx, map[string]any{
		"type": protocol.TypeRegUser, "user": user, "password": password, "peers": nonNil(peers),
	})
	return err
}

// Login identifies this connection as user (whoami) and returns the device
// id the server assigned. Later requests carry user. The server also gives
// a session (Session), with which LoginSession identifies a later
// connection without the password.
func (c *Client) Login(ctx context.Context, user, password string) (device string, err error) {
	return c.login(ctx, user, map[string]any{"type": protocol.TypeWhoami, "user": user, "password": password})
}

// LoginSession identifies this connection as user with a session from an
// earlier Login (no password, no password hashing on the server). An
// unknown, expired or revoked session fails with protocol.ErrAuthFailed,
// like a wrong password: log in with the password then.
func (c *Client) LoginSession(ctx context.Context, user, session string) (device string, err error) {
	return c.login(ctx, user, map[string]any{"type": protocol.TypeWhoami, "user": user, "session": session})
}

func (c *Client) login(ctx context.Context, user string, msg map[string]any) (string, error) {
	r, err := c.request(ctx, msg)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.user, c.device, c.session = user, r.Device, r.Session
	c.mu.Unlock()
	return r.Device, nil
}

// Session returns the session secret the server gave this connection
// (at Login, LoginSession or Passwd), or "". It identifies the user without
// the password until it expires (30 days after its last use by default) or
// is revoked (Logout, a password change): keep it as secret as a password.
func (c *Client) Session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// Passwd changes the user's password from current to newPassword. The
// server revokes every session of the user, closes the user's other
// connections, and gives this connection a new session (Session).
func (c *Client) Passwd(ctx context.Context, current, newPassword string) error {
	r, err := c.userRequest(ctx, protocol.TypePasswd, map[string]any{"password": current, "new": newPassword})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.session = r.Session
	c.mu.Unlock()
	return nil
}

// Logout revokes this connection's session on the server; the connection
// stays identified until it is closed.
func (c *Client) Logout(ctx context.Context) error {
	if _, err := c.userRequest(ctx, protocol.TypeLogout, nil); err != nil {
		return err
	}
	c.mu.Lock()
	c.session = ""
	c.mu.Unlock()
	return nil
}

// MissedCalls returns the user's missed calls, newest first; with clear the
// server empties the list after returning it. While the user is online,
// each new missed call also arrives on Events as a protocol.TypeMissedCall
// event (User: the caller, At, Reason).
func (c *Client) MissedCalls(ctx context.Context, clear bool) ([]protocol.MissedCall, error) {
	r, err := c.userRequest(ctx, protocol.TypeMissedCalls, map[string]any{"clear": clear})
	if err != nil {
		return nil, err
	}
	calls := []protocol.MissedCall{}
	if len(r.Calls) > 0 {
		if err := json.Unmarshal(r.Calls, &calls); err != nil {
			return nil, fmt.Errorf("client: decode missed calls: %w", err)
		}
	}
	return calls, nil
}

// AddPeers adds peers to the user's list. Unknown names fail the whole call
// with protocol.ErrNotFound (Missing lists them).
func (c *Client) AddPeers(ctx context.Context, peers ...string) error {
	_, err := c.userRequest(ctx, protocol.TypeAddPeers, map[string]any{"peers": nonNil(peers)})
	return err
}

// DelPeers removes peers from the user's list; absent ones are ignored.
func (c *Client) DelPeers(ctx context.Context, peers ...string) error {
	_, err := c.userRequest(ctx, protocol.TypeDelPeers, map[string]any{"peers": nonNil(peers)})
	return err
}

// Peers lists the user's peers. Online and Status are only revealed for
// mutual peers.
func (c *Client) Peers(ctx context.Context) ([]protocol.PeerInfo, error) {
	r, err := c.userRequest(ctx, protocol.TypePeers, nil)
	if err != nil {
		return nil, err
	}
	var peers []protocol.PeerInfo
	if len(r.Peers) > 0 {
		if err := json.Unmarshal(r.Peers, &peers); err != nil {
			return nil, fmt.Errorf("client: decode peers: %w", err)
		}
	}
	return peers, nil
}

// PeersOnline lists the online mutual peers.
func (c *Client) PeersOnline(ctx context.Context) ([]string, error) {
	r, err := c.userRequest(ctx, protocol.TypePeersOnline, nil)
	if err != nil {
		return nil, err
	}
	var peers []string
	if len(r.Peers) > 0 {
		if err := json.Unmarshal(r.Peers, &peers); err != nil {
			return nil, fmt.Errorf("client: decode peers-online: %w", err)
		}
	}
	return peers, nil
}

// SetStatus sets the user's status, which online mutual peers receive as a
// status event.
func (c *Client) SetStatus(ctx context.Context, status string) error {
	_, err := c.userRequest(ctx, protocol.TypeStatus, map[string]any{"status": status})
	return err
}

// Call rings peer. Success means ringing: the outcome arrives later on
// Events (accept then force-call, or reject). The returned tx identifies
// the call; the callee answers with it.
func (c *Client) Call(ctx context.Context, peer string) (protocol.Tx, error) {
	tx := c.newTx()
	if _, err := c.userRequest(ctx, protocol.TypeCall, map[string]any{"peer": peer, "tx": tx}); err != nil {
		return "", err
	}
	return tx, nil
}

// Accept takes the ringing call from peer. tx is the Tx of the incoming call
// event. A force-call event follows on Events.
func (c *Client) Accept(ctx context.Context, peer string, tx protocol.Tx) error {
	_, err := c.userRequest(ctx, protocol.TypeAccept, map[string]any{"peer": peer, "tx": tx})
	return err
}

// Reject declines the ringing call from peer; tx is the call event's Tx.
func (c *Client) Reject(ctx context.Context, peer string, tx protocol.Tx) error {
	_, err := c.userRequest(ctx, protocol.TypeReject, map[string]any{"peer": peer, "tx": tx})
	return err
}

// Cancel stops ringing peer before an answer.
func (c *Client) Cancel(ctx context.Context, peer string) error {
	_, err := c.userRequest(ctx, protocol.TypeCancel, map[string]any{"peer": peer})
	return err
}

// Unpair hangs up the active call with peer. The server then closes both
// media connections.
func (c *Client) Unpair(ctx context.Context, peer string) error {
	_, err := c.userRequest(ctx, protocol.TypeUnpair, map[string]any{"peer": peer})
	return err
}
