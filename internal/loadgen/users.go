package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/protocol"
)

// userSpec is a bench user and the peers it lists from birth.
type userSpec struct {
	name  string
	peers []string
}

// regPerConn is how many registrations go through one connection (and so
// one source address) before the next: the server's default per-address
// limit.
const regPerConn = 20

// ensureUsers registers users, phase after phase: a user's initial peers
// must be in an earlier phase. A taken name counts as done (the user comes
// from an earlier run, with the same password and peers), so reruns cost
// little. Each connection registers up to regPerConn users from its own
// source address; one refused as rate-limited moves to a fresh address.
func (g *gen) ensureUsers(ctx context.Context, label string, phases ...[]userSpec) error {
	total := 0
	for _, p := range phases {
		total += len(p)
	}
	var created, existed atomic.Int64
	stop := g.progress(func() string {
		return fmt.Sprintf("%s: registering users %d/%d (%d new, %d existed)",
			label, created.Load()+existed.Load(), total, created.Load(), existed.Load())
	})
	defer stop()
	for _, phase := range phases {
		var chunks [][]userSpec
		for i := 0; i < len(phase); i += regPerConn {
			chunks = append(chunks, phase[i:min(i+regPerConn, len(phase))])
		}
		work := make(chan []userSpec)
		errc := make(chan error, 1)
		var wg sync.WaitGroup
		for range min(8, len(chunks)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for chunk := range work {
					if err := g.registerChunk(ctx, chunk, &created, &existed); err != nil {
						select {
						case errc <- err:
						default:
						}
					}
				}
			}()
		}
	feed:
		for _, c := range chunks {
			select {
			case work <- c:
			case err := <-errc:
				errc <- err
				break feed
			case <-ctx.Done():
				break feed
			}
		}
		close(work)
		wg.Wait()
		select {
		case err := <-errc:
			return fmt.Errorf("%w: register %s users: %w", ErrSetup, label, err)
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	g.log.Info("users ready", "scenario", label, "total", total, "created", created.Load())
	return nil
}

func (g *gen) registerChunk(ctx context.Context, chunk []userSpec, created, existed *atomic.Int64) error {
	var conn *rawConn
	defer func() {
		if conn != nil {
			conn.close()
		}
	}()
	const maxMoves = 100
	moves := 0
	for i := 0; i < len(chunk); {
		if conn == nil {
			c, err := g.dialRaw(ctx, g.regSource())
			if err != nil {
				return err
			}
			conn = c
		}
		u := chunk[i]
		peers := u.peers
		if peers == nil {
			peers = []string{}
		}
		rctx, cancel := context.WithTimeout(ctx, 10*g.cfg.Timeout)
		_, err := conn.request(rctx, map[string]any{
			"type": protocol.TypeRegUser, "user": u.name, "password": g.cfg.Password, "peers": peers,
		})
		cancel()
		switch {
		case err == nil:
			created.Add(1)
		case errors.Is(err, &protocol.Error{Code: protocol.ErrExists}):
			existed.Add(1)
		case errors.Is(err, &protocol.Error{Code: protocol.ErrRateLimited}) && g.loopback && moves < maxMoves:
			// This address is used up for the server's window: move on.
			moves++
			conn.close()
			conn = nil
			continue
		default:
			return fmt.Errorf("reg-user %s: %w", u.name, err)
		}
		i++
	}
	return nil
}

// loginClient dials /meta with the Go client and logs in as user.
func (g *gen) loginClient(ctx context.Context, user string) (*client.Client, error) {
	return g.loginWith(ctx, user, g.dialer(nil))
}

// loginWith dials /meta with the Go client through d and logs in as user;
// a login queues behind password hashing, so it gets 10× Timeout.
func (g *gen) loginWith(ctx context.Context, user string, d *websocket.Dialer) (*client.Client, error) {
	c, err := client.Dial(ctx, g.metaURL, &client.Options{Dialer: d, Logger: g.log})
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, 10*g.cfg.Timeout)
	defer cancel()
	if _, err := c.Login(lctx, user, g.cfg.Password); err != nil {
		c.Close()
		return nil, fmt.Errorf("login %s: %w", user, err)
	}
	return c, nil
}

// loginRaw dials a raw connection from src and logs in as user.
func (g *gen) loginRaw(ctx context.Context, src net.IP, user string) (*rawConn, error) {
	c, err := g.dialRaw(ctx, src)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, 10*g.cfg.Timeout)
	defer cancel()
	// A user's first device logs in with the password, the others with the
	// session it got (section 8): one argon2 hash per user, not per device,
	// as real devices of one user would do.
	msg := map[string]any{"type": protocol.TypeWhoami, "user": user, "password": g.cfg.Password}
	if s, ok := g.sessions.Load(user); ok {
		msg = map[string]any{"type": protocol.TypeWhoami, "user": user, "session": s.(string)}
	}
	res, err := c.request(lctx, msg)
	if err != nil {
		c.close()
		return nil, fmt.Errorf("login %s: %w", user, err)
	}
	if res.Session != "" {
		g.sessions.LoadOrStore(user, res.Session)
	}
	return c, nil
}

// userName is <prefix>-<kind>-<i>.
func (g *gen) userName(kind string, i int) string {
	return fmt.Sprintf("%s-%s-%d", g.cfg.Prefix, kind, i)
}
