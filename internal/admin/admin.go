// Package admin is the running server's local administration endpoint: a
// unix socket in the data directory, so that `umplug user passwd` works
// while a server holds the store (the CLI cannot open a Pebble directory a
// server has locked) and the server can revoke the user's sessions and
// close the user's connections itself.
//
// Security: file permissions are the authentication. The socket is
// <data>/admin.sock, mode 0600, inside the data directory, which the store
// keeps 0700: only the user the server runs as (and root) can connect,
// exactly who could read the user store's files anyway. The password never
// crosses the socket: the CLI hashes it (argon2id) and sends the hash.
//
// Protocol: one JSON object per line each way, one request per connection:
//
//	-> {"op":"passwd","user":"alice","hash":"$argon2id$v=19$…"}
//	<- {"ok":true,"revoked":2,"closed":1}
//	<- {"ok":false,"error":"store: user not found","not_found":true}
package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

// SocketName is the socket's file name inside the data directory.
const SocketName = "admin.sock"

// maxLine bounds a request; a PHC hash is about 100 bytes.
const maxLine = 16 << 10

// timeout bounds one admin connection, reading, work and answer.
const timeout = 30 * time.Second

// Request is one admin command.
type Request struct {
	Op   string `json:"op"` // "passwd"
	User string `json:"user"`
	Hash string `json:"hash"` // argon2id PHC string of the new password
}

// Response answers a Request.
type Response struct {
	OK       bool   `json:"ok"`
	Error    string `json:"error,omitempty"`
	NotFound bool   `json:"not_found,omitempty"` // the user does not exist
	Revoked  int    `json:"revoked"`             // sessions revoked
	Closed   int    `json:"closed"`              // connections closed
}

// Passworder is what the socket drives: meta.Server.
type Passworder interface {
	SetPassword(ctx context.Context, user, hash string) (revoked, closed int, err error)
}

// Server serves the admin socket.
type Server struct {
	ln   net.Listener
	path string
	h    Passworder
	log  *slog.Logger
	wg   sync.WaitGroup

	mu     sync.Mutex // guards closed
	closed bool
}

// Listen serves the admin socket in dir (the data directory). The caller
// must hold the store of dir (a running server's Pebble lock): a socket file
// left by a crashed server is then stale and replaced.
func Listen(dir string, h Passworder, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(dir, SocketName)
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("admin: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin: remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin: listen: %w", err)
	}
	// The directory is 0700 already; the socket's own mode is a second wall.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: chmod socket: %w", err)
	}
	s := &Server{ln: ln, path: path, h: h, log: log}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Close stops serving, waits for commands in progress and removes the
// socket file. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.ln.Close() // also removes the socket file (net.UnixListener unlinks it)
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("admin socket stopped", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

func (s *Server) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(io.LimitReader(c, maxLine+1)).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return
	}
	res := s.do(line)
	b, _ := json.Marshal(res)
	_, _ = c.Write(append(b, '\n'))
}

func (s *Server) do(line []byte) Response {
	if len(line) > maxLine {
		return Response{Error: "request too long"}
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return Response{Error: "bad request: " + err.Error()}
	}
	switch {
	case req.Op != "passwd":
		return Response{Error: fmt.Sprintf("unknown op %q", req.Op)}
	case protocol.CheckName(req.User) != nil:
		return Response{Error: "bad user name"}
	case !strings.HasPrefix(req.Hash, "$argon2id$"):
		return Response{Error: "hash: not an argon2id PHC string"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	revoked, closed, err := s.h.SetPassword(ctx, req.User, req.Hash)
	if err != nil {
		return Response{Error: err.Error(), NotFound: errors.Is(err, store.ErrNotFound)}
	}
	s.log.Info("admin: password set", "user", req.User, "sessions_revoked", revoked, "connections_closed", closed)
	return Response{OK: true, Revoked: revoked, Closed: closed}
}

// SetPassword asks the server running on data directory dir to set user's
// password hash (revoking the user's sessions and closing its connections).
// An unknown user gives an error wrapping store.ErrNotFound.
func SetPassword(ctx context.Context, dir, user, hash string) (revoked, closed int, err error) {
	path := filepath.Join(dir, SocketName)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return 0, 0, fmt.Errorf("admin: connect to the running server at %s: %w", path, err)
	}
	defer c.Close()
	dl := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = c.SetDeadline(dl)
	b, _ := json.Marshal(Request{Op: "passwd", User: user, Hash: hash})
	if _, err := c.Write(append(b, '\n')); err != nil {
		return 0, 0, fmt.Errorf("admin: send: %w", err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return 0, 0, fmt.Errorf("admin: read answer: %w", err)
	}
	var res Response
	if err := json.Unmarshal(line, &res); err != nil {
		return 0, 0, fmt.Errorf("admin: bad answer: %w", err)
	}
	switch {
	case res.NotFound:
		return 0, 0, fmt.Errorf("admin: %q: %w", user, store.ErrNotFound)
	case !res.OK:
		return 0, 0, fmt.Errorf("admin: the server refused: %s", res.Error)
	}
	return res.Revoked, res.Closed, nil
}
