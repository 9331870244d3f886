package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/user-media-plug/umplug/protocol"
)

// Resume identifies this connection with a session and asks the server to
// give it back device, the id an earlier connection of this device had
// (contract section 8). resumed reports whether the server did: the
// earlier connection dropped less than the grace window (default 20 s) ago,
// so this connection has its device id, its presence never flapped and its
// call goes on — the server then sends the events the device missed, and,
// in an active call, a fresh force-call to reconnect its media (the old
// Media is dead: open a new one with it). resumed is false when the window
// had passed, the server restarted, or device is not this user's: the
// connection is identified all the same, with a new device id.
func (c *Client) Resume(ctx context.Context, user, session, device string) (resumed bool, err error) {
	d, err := c.login(ctx, user, map[string]any{"type": protocol.TypeWhoami, "user": user,
		"session": session, "resume": device})
	if err != nil {
		return false, err
	}
	return device != "" && d == device, nil
}

// Reconnect dials rawURL again and identifies the new connection as prev's
// user with prev's session, resuming prev's device (Resume). prev may
// already be closed (its connection dropped); Reconnect does not close it.
// It fails with protocol.ErrAuthFailed if the session is no longer valid
// (revoked, expired): log in with the password then. A drop is any end but
// Close: Close sends close 1000, which the server takes as goodbye, so a
// client that wants to resume later must not Close a connection it still
// wants back; it just dials again.
func Reconnect(ctx context.Context, rawURL string, opts *Options, prev *Client) (c *Client, resumed bool, err error) {
	user, session, device := prev.User(), prev.Session(), prev.Device()
	if user == "" || session == "" {
		return nil, false, errors.New("client: reconnect: the previous connection was not identified with a session")
	}
	c, err = Dial(ctx, rawURL, opts)
	if err != nil {
		return nil, false, fmt.Errorf("client: reconnect: %w", err)
	}
	resumed, err = c.Resume(ctx, user, session, device)
	if err != nil {
		c.Close()
		return nil, false, fmt.Errorf("client: reconnect: %w", err)
	}
	return c, resumed, nil
}

// Drop ends the connection without a WebSocket close frame, as a network
// failure would: the server keeps the device for the grace window, and
// Reconnect may take it back. (Close is a goodbye: the device is gone at
// once.) Events is closed as with Close.
func (c *Client) Drop() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		close(c.closed)
		_ = c.conn.Close()
	})
	<-c.done
}
