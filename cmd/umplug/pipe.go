package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/protocol"
)

const pipeUsage = `usage: umplug pipe -user NAME (-call PEER | -answer [-from PEER]) [flags]

Log in, call a peer (or answer a call), and relay stdin to the peer and the
peer's bytes to stdout through the server's media relay:

  bob$   umplug pipe -user bob -answer > received.bin < /dev/null
  alice$ umplug pipe -user alice -call bob < file.bin

The password is read from -password-file or from the environment variable
UMPLUG_PASSWORD, never from a flag: command lines are visible to every user
of the machine (ps). The server URL comes from -server or UMPLUG_SERVER.

What pipe promises (both ends must be umplug pipe; another client sees
stream frames, not raw bytes): every byte read from stdin is written to the
peer's stdout exactly once and in order, through network drops and server
restarts, provided both ends are back within -reconnect of the trouble.
The receiver acknowledges what it has written; the sender keeps up to
-buffer unacknowledged bytes to resend, and stops reading stdin while they
fill it. A drop shorter than the server's resume window resumes the same
call; after a server restart the caller calls again, the answerer accepts
the same peer again, and both streams go on from the acknowledged offsets.

End: pipe exits 0 once both streams have ended and each side has
acknowledged the other's, or when the peer hangs up and every byte read
from stdin so far is acknowledged. If the peer's stream has not ended and
nothing of it arrives for -linger after ours is fully acknowledged, pipe
hangs up. Any other end (the peer gone for longer than -reconnect, its hang
up with bytes unacknowledged) exits 1 with the reason.

Logs go to stderr.

flags:
`

// pipeConfig is the parsed command line of umplug pipe.
type pipeConfig struct {
	server       string
	user         string
	passwordFile string
	call         string
	answer       bool
	from         string
	register     bool
	peers        []string
	linger       time.Duration
	reconnect    time.Duration
	buffer       int
	verbose      bool
}

// hangupWait bounds the hang-up and the wait for the relay to close.
const hangupWait = 5 * time.Second

func parsePipe(args []string, stderr io.Writer) (*pipeConfig, error) {
	fs := flag.NewFlagSet("pipe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, pipeUsage)
		fs.PrintDefaults()
	}
	defServer := os.Getenv("UMPLUG_SERVER")
	if defServer == "" {
		defServer = "http://127.0.0.1:8080"
	}
	cfg := &pipeConfig{}
	var peers string
	fs.StringVar(&cfg.server, "server", defServer, "server base URL (http[s]://host:port) or its ws[s]://…/meta endpoint; env UMPLUG_SERVER")
	fs.StringVar(&cfg.user, "user", "", "user name to log in as (required)")
	fs.StringVar(&cfg.passwordFile, "password-file", "", "file holding the password (first line); default: env UMPLUG_PASSWORD")
	fs.StringVar(&cfg.call, "call", "", "call this peer and wait until it accepts (waits for it to come online)")
	fs.BoolVar(&cfg.answer, "answer", false, "wait for an incoming call and accept the first one")
	fs.StringVar(&cfg.from, "from", "", "with -answer: only accept calls from this peer")
	fs.BoolVar(&cfg.register, "register", false, "create the account first if it does not exist")
	fs.StringVar(&peers, "peers", "", "comma-separated peers to add to the account after login (both sides must list each other)")
	fs.DurationVar(&cfg.linger, "linger", 10*time.Second, "once our stream is acknowledged, hang up when the peer's has not ended and sent nothing for this long (0: hang up at once)")
	fs.DurationVar(&cfg.reconnect, "reconnect", time.Minute, "after a drop or a server restart, how long to try to get the call and both streams back before giving up (0: never reconnect)")
	fs.IntVar(&cfg.buffer, "buffer", defaultPipeBuffer, "bytes read from stdin and kept until the peer acknowledges them (stdin waits while they fill it)")
	fs.BoolVar(&cfg.verbose, "v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("pipe: unexpected argument %q", fs.Arg(0))
	}
	for p := range strings.SplitSeq(peers, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.peers = append(cfg.peers, p)
		}
	}
	switch {
	case cfg.user == "":
		return nil, errors.New("pipe: -user is required")
	case (cfg.call == "") == !cfg.answer:
		return nil, errors.New("pipe: exactly one of -call PEER and -answer is required")
	case cfg.from != "" && !cfg.answer:
		return nil, errors.New("pipe: -from only goes with -answer")
	case cfg.call == cfg.user:
		return nil, errors.New("pipe: cannot call yourself")
	case cfg.linger < 0:
		return nil, errors.New("pipe: -linger must not be negative")
	case cfg.reconnect < 0:
		return nil, errors.New("pipe: -reconnect must not be negative")
	case cfg.buffer < pipeFrameData:
		return nil, fmt.Errorf("pipe: -buffer must be at least %d", pipeFrameData)
	}
	return cfg, nil
}

// readPassword takes the password from the file, else from UMPLUG_PASSWORD.
func readPassword(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("pipe: read password file: %w", err)
		}
		pw, _, _ := strings.Cut(string(b), "\n")
		pw = strings.TrimSuffix(pw, "\r")
		if pw == "" {
			return "", fmt.Errorf("pipe: password file %s is empty", file)
		}
		return pw, nil
	}
	if pw := os.Getenv("UMPLUG_PASSWORD"); pw != "" {
		return pw, nil
	}
	return "", errors.New("pipe: no password: use -password-file or set UMPLUG_PASSWORD")
}

// Reconnect pacing: exponential backoff with jitter, so that many pipes
// (and browser tabs) coming back after a restart do not all knock at once.
const (
	reconnectFirstDelay = 100 * time.Millisecond
	reconnectMaxDelay   = 5 * time.Second
	// mediaDialTimeout bounds the dial of one media connection.
	mediaDialTimeout = 10 * time.Second
	// resumeConfirm bounds the wait for the fresh force-call that follows a
	// resume in an active call. The server sends it right after the whoami
	// response; when none comes, the call is gone after all (a safety net:
	// device ids carry a random tag per server run, so a restarted server
	// never gives back the id asked for).
	resumeConfirm = 5 * time.Second
)

var (
	// errCallGone: the call ended otherwise than by the peer's hang-up
	// (server shutdown, the peer's device gone): pipe calls again.
	errCallGone = errors.New("pipe: the call ended")
	// errMetaLost: the /meta connection ended: pipe reconnects.
	errMetaLost = errors.New("pipe: connection to the server lost")
)

// piper is one run of umplug pipe: the server connection of the moment, the
// call with the peer, and the stream that outlives both.
type piper struct {
	cfg      *pipeConfig
	password string
	log      *slog.Logger
	opts     *client.Options
	stdin    io.Reader
	st       *stream

	// Used by the run's goroutine only.
	c       *client.Client // the current /meta connection
	peer    string         // set by the first call: every later one is with the same peer
	trouble time.Time      // when the current outage began; zero while the stream flows
}

// runPipe implements umplug pipe.
func runPipe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg, err := parsePipe(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	password, err := readPassword(cfg.passwordFile)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("user", cfg.user)
	p := &piper{cfg: cfg, password: password, log: log, opts: &client.Options{Logger: log}, stdin: stdin,
		st: newStream(log, cfg.buffer, stdout), peer: cfg.call}
	defer p.st.stop()

	c, err := client.Dial(ctx, cfg.server, p.opts)
	if err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	p.c = c
	defer func() { p.c.Close() }()
	if cfg.register {
		switch err := c.Register(ctx, cfg.user, password); {
		case err == nil:
			log.Info("account created")
		case errors.Is(err, &protocol.Error{Code: protocol.ErrExists}):
		default:
			return fmt.Errorf("pipe: register: %w", err)
		}
	}
	device, err := c.Login(ctx, cfg.user, password)
	if err != nil {
		return fmt.Errorf("pipe: login: %w", err)
	}
	log.Info("logged in", "device", device)
	if len(cfg.peers) > 0 {
		var perr *protocol.Error
		switch err := c.AddPeers(ctx, cfg.peers...); {
		case err == nil:
		case errors.As(err, &perr) && perr.Code == protocol.ErrNotFound:
			// Not fatal: the other side may register later and call us.
			log.Warn("peers not added: not registered", "missing", strings.Join(perr.Missing, ","))
		default:
			return fmt.Errorf("pipe: add peers: %w", err)
		}
	}
	return p.run(ctx)
}

// run gets the call, then keeps the stream going through its calls.
func (p *piper) run(ctx context.Context) error {
	fc, err := p.establish(ctx, true)
	if err != nil {
		return err
	}
	go p.st.readStdin(p.stdin)
	for {
		err := p.inCall(ctx, fc)
		if !errors.Is(err, errCallGone) {
			return err
		}
		if p.cfg.reconnect == 0 {
			return err
		}
		p.troubleBegins("call ended")
		if fc, err = p.establish(ctx, false); err != nil {
			if p.complete() {
				// Both streams were delivered; only the goodbye is missing.
				p.log.Info("everything delivered both ways; the peer did not come back to confirm", "err", err)
				return nil
			}
			return err
		}
	}
}

// peerDone reports whether the peer said it has everything.
func (p *piper) peerDone() bool {
	select {
	case <-p.st.peerDoneCh:
		return true
	default:
		return false
	}
}

// complete reports whether both streams were delivered.
func (p *piper) complete() bool {
	select {
	case <-p.st.completeCh:
		return true
	default:
		return false
	}
}

// troubleBegins starts the -reconnect clock, unless it is running.
func (p *piper) troubleBegins(why string) {
	if p.trouble.IsZero() {
		p.trouble = time.Now()
		p.log.Info("connection trouble, getting the stream back", "why", why, "within", p.cfg.reconnect)
	}
}

// troubleCtx bounds an attempt to get back by the -reconnect clock.
func (p *piper) troubleCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.trouble.IsZero() || p.cfg.reconnect == 0 {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, p.trouble.Add(p.cfg.reconnect))
}

// troubleErr explains an attempt cut short by ctx (from troubleCtx).
func (p *piper) troubleErr(parent context.Context, err error) error {
	if parent.Err() != nil {
		return fmt.Errorf("pipe: %w", parent.Err())
	}
	return fmt.Errorf("pipe: not back with %s within -reconnect %v (%s): %w", p.peer, p.cfg.reconnect, p.st.progress(), err)
}

// establish gets a call with the peer, placing it (-call) or accepting it
// (-answer), and returns our force-call. It reconnects to the server when
// the connection drops (while in trouble, within -reconnect).
func (p *piper) establish(ctx context.Context, first bool) (protocol.Event, error) {
	for {
		rctx, cancel := p.troubleCtx(ctx)
		var fc protocol.Event
		var err error
		if p.cfg.call != "" {
			fc, err = p.placeCall(rctx, first)
		} else {
			fc, err = p.answerCall(rctx, first)
		}
		cancel()
		switch {
		case err == nil:
			return fc, nil
		case errors.Is(err, errMetaLost) && p.cfg.reconnect > 0:
			p.troubleBegins("connection to the server lost")
			if _, err := p.reconnect(ctx); err != nil {
				return fc, err
			}
			if first {
				// Back before any stream: wait for the peer as long as
				// before (only ctx bounds it).
				p.trouble = time.Time{}
			}
		case rctx.Err() != nil:
			return fc, p.troubleErr(ctx, err)
		default:
			return fc, err
		}
	}
}

// reconnect replaces the dead /meta connection: the session first, with the
// device id (a resume: same call, if the server still has it), the password
// if the session is no longer valid. It retries with backoff and jitter
// until it succeeds or the -reconnect clock runs out. resumed reports that
// the server gave the device (and its call) back.
func (p *piper) reconnect(ctx context.Context) (resumed bool, err error) {
	rctx, cancel := p.troubleCtx(ctx)
	defer cancel()
	delay := reconnectFirstDelay
	for {
		c, resumed, err := client.Reconnect(rctx, p.cfg.server, p.opts, p.c)
		if errors.Is(err, &protocol.Error{Code: protocol.ErrAuthFailed}) {
			p.log.Info("session no longer valid, logging in with the password")
			c, err = p.login(rctx)
			resumed = false
		}
		if err == nil {
			p.c.Close() // the dead one: releases its goroutines
			p.c = c
			p.log.Info("reconnected", "device", c.Device(), "resumed", resumed)
			return resumed, nil
		}
		if rctx.Err() != nil {
			return false, p.troubleErr(ctx, err)
		}
		if errors.Is(err, &protocol.Error{Code: protocol.ErrAuthFailed}) {
			return false, fmt.Errorf("pipe: log in again: %w", err)
		}
		d := jitter(delay)
		p.log.Info("reconnect failed, retrying", "in", d.Round(time.Millisecond), "err", err)
		if err := wait(rctx, d); err != nil {
			return false, p.troubleErr(ctx, err)
		}
		delay = min(2*delay, reconnectMaxDelay)
	}
}

// login dials and logs in with the password.
func (p *piper) login(ctx context.Context) (*client.Client, error) {
	c, err := client.Dial(ctx, p.cfg.server, p.opts)
	if err != nil {
		return nil, err
	}
	if _, err := c.Login(ctx, p.cfg.user, p.password); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// jitter returns a duration in [d/2, d): spread, but never much shorter.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2)
}

// wait waits for d or ctx.
func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// nextEvent waits for the next event; errMetaLost when the connection ended.
func (p *piper) nextEvent(ctx context.Context) (protocol.Event, error) {
	select {
	case ev, ok := <-p.c.Events():
		if !ok {
			return ev, fmt.Errorf("%w: %w", errMetaLost, p.c.Err())
		}
		return ev, nil
	case <-ctx.Done():
		return protocol.Event{}, fmt.Errorf("pipe: %w", ctx.Err())
	}
}

// requestErr turns the failure of a request into errMetaLost when the
// connection ended under it.
func requestErr(what string, err error) error {
	if errors.Is(err, client.ErrClosed) {
		return fmt.Errorf("%w: %s: %w", errMetaLost, what, err)
	}
	return fmt.Errorf("pipe: %s: %w", what, err)
}

// placeCall rings the peer until it accepts and returns our force-call. An
// offline peer is waited for. Unless first, a peer that is busy, did not
// answer in time, or a server that cannot take the call yet is tried again
// (after a restart the peer may not be back yet, or not idle yet).
func (p *piper) placeCall(ctx context.Context, first bool) (protocol.Event, error) {
	delay := reconnectFirstDelay
	retry := func(why string) error {
		d := jitter(delay)
		delay = min(2*delay, reconnectMaxDelay)
		p.log.Info("calling again", "peer", p.peer, "why", why, "in", d.Round(time.Millisecond))
		if err := wait(ctx, d); err != nil {
			return fmt.Errorf("pipe: call %s: %s: %w", p.peer, why, err)
		}
		return nil
	}
	for {
		_, err := p.c.Call(ctx, p.peer)
		var perr *protocol.Error
		switch {
		case err == nil:
		case errors.As(err, &perr) && perr.Code == protocol.ErrOffline:
			p.log.Info("peer offline, waiting for it to come online", "peer", p.peer)
			if err := p.waitOnline(ctx); err != nil {
				return protocol.Event{}, err
			}
			continue
		case !first && errors.As(err, &perr) && (perr.Code == protocol.ErrBusy ||
			perr.Code == protocol.ErrUnavailable || perr.Code == protocol.ErrRateLimited):
			if err := retry(string(perr.Code)); err != nil {
				return protocol.Event{}, err
			}
			continue
		default:
			return protocol.Event{}, requestErr("call "+p.peer, err)
		}
		p.log.Info("ringing", "peer", p.peer)
		fc, again, err := p.waitAnswer(ctx, first)
		if err != nil || !again {
			return fc, err
		}
		if err := retry("no answer"); err != nil {
			return protocol.Event{}, err
		}
	}
}

// waitOnline waits for a status event saying the peer is online.
func (p *piper) waitOnline(ctx context.Context) error {
	for {
		ev, err := p.nextEvent(ctx)
		if err != nil {
			return err
		}
		if ev.Type == protocol.TypeStatus && ev.User == p.peer && ev.Status != protocol.StatusOffline {
			return nil
		}
	}
}

// waitAnswer waits for the answer to our ringing call: the force-call, or a
// rejection (again: call again, unless first).
func (p *piper) waitAnswer(ctx context.Context, first bool) (fc protocol.Event, again bool, err error) {
	for {
		ev, err := p.nextEvent(ctx)
		if err != nil {
			if !errors.Is(err, errMetaLost) {
				hangup(ctx, p.c, p.log, p.peer)
			}
			return ev, false, err
		}
		switch {
		case ev.Type == protocol.TypeAccept && ev.User == p.peer:
			p.log.Info("accepted", "peer", p.peer)
		case ev.Type == protocol.TypeReject && ev.User == p.peer:
			if first {
				return ev, false, fmt.Errorf("pipe: %s did not take the call (%s)", p.peer, ev.Reason)
			}
			return ev, true, nil
		case ev.Type == protocol.TypeForceCall && ev.Peer == p.peer:
			return ev, false, nil
		}
	}
}

// answerCall waits for a call (from -from, or, after the first call, from
// the same peer), accepts it and returns our force-call.
func (p *piper) answerCall(ctx context.Context, first bool) (protocol.Event, error) {
	from := p.cfg.from
	if p.peer != "" {
		from = p.peer
	}
	p.log.Info("waiting for a call", "from", from)
	accepted := "" // set once we accepted
	for {
		ev, err := p.nextEvent(ctx)
		if err != nil {
			if accepted != "" && !errors.Is(err, errMetaLost) {
				hangup(ctx, p.c, p.log, accepted)
			}
			return ev, err
		}
		switch {
		case ev.Type == protocol.TypeCall && accepted == "":
			if from != "" && ev.User != from {
				p.log.Info("ignoring call", "from", ev.User)
				continue
			}
			if err := p.c.Accept(ctx, ev.User, ev.Tx); err != nil {
				if errors.Is(err, &protocol.Error{Code: protocol.ErrNoCall}) {
					p.log.Info("call gone before it was accepted", "from", ev.User)
					continue
				}
				return ev, requestErr("accept "+ev.User, err)
			}
			accepted = ev.User
			p.log.Info("accepted call", "from", accepted)
		case ev.Type == protocol.TypeForceCall && accepted != "" && ev.Peer == accepted:
			p.peer = accepted
			return ev, nil
		case (ev.Type == protocol.TypeUnpair || ev.Type == protocol.TypeCancel) && accepted != "" && ev.User == accepted:
			if first {
				return ev, fmt.Errorf("pipe: %s hung up (%s)", accepted, ev.Reason)
			}
			p.log.Info("call ended before it started, waiting for another", "reason", ev.Reason)
			accepted = ""
		}
	}
}

// hangup ends the call with peer (if any) with a fresh deadline: it also
// runs when ctx is done.
func hangup(ctx context.Context, c *client.Client, log *slog.Logger, peer string) {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), hangupWait)
	defer cancel()
	// A call still ringing is cancelled; one in progress is unpaired. The
	// other request then fails with no-call, which is fine.
	if err := c.Unpair(hctx, peer); err == nil {
		log.Info("hung up", "peer", peer)
		return
	} else if !errors.Is(err, &protocol.Error{Code: protocol.ErrNoCall}) {
		log.Warn("hang up failed", "peer", peer, "err", err)
	}
	_ = c.Cancel(hctx, peer)
}

// inCall runs the stream over the media of one call until the call ends.
// It follows the call's media connections: a fresh force-call (after our
// media or /meta dropped and came back) replaces the media connection, and
// a dropped /meta is resumed. It returns nil when the pipe is done,
// errCallGone when the call ended and another is needed, or the error that
// ends the pipe.
func (p *piper) inCall(ctx context.Context, fc protocol.Event) (err error) {
	var (
		m        *client.Media
		l        *link
		mediaEnd <-chan struct{} // l.readDone until it fired
		synced   <-chan struct{} // l.syncedCh until it fired
	)
	// drop abandons the current media connection and waits until its
	// goroutines are gone: one reader at a time writes stdout.
	drop := func() {
		if l == nil {
			return
		}
		p.st.abandon(l)
		// Close sends a close frame, which would end the call if the server
		// still counted this connection; it does not: it had dropped, or
		// the fresh ticket cut it (or we are leaving anyway).
		_ = m.Close()
		<-l.readDone
		<-l.writeDone
		m, l, mediaEnd, synced = nil, nil, nil, nil
	}
	defer drop()
	open := func(fc protocol.Event) {
		drop()
		mctx, cancel := context.WithTimeout(ctx, mediaDialTimeout)
		defer cancel()
		mm, err := p.c.Media(mctx, fc)
		if err != nil {
			// The server ends the call if we do not come (MediaWait): an
			// unpair, or another force-call, follows.
			p.log.Warn("media connection failed", "err", err)
			p.troubleBegins("media connection failed")
			return
		}
		m, l = mm, p.st.attach(mm)
		mediaEnd, synced = l.readDone, l.syncedCh
	}
	// end hangs up (the call may be over already: that is fine) and returns
	// res.
	end := func(res error) error {
		hangup(ctx, p.c, p.log, p.peer)
		return res
	}
	open(fc)

	var (
		troubleAt    time.Time
		troubleTimer *time.Timer
		troubleC     <-chan time.Time
		sentAll      = (<-chan struct{})(p.st.sentAllCh)
		complete     = (<-chan struct{})(p.st.completeCh)
		peerDone     = (<-chan struct{})(p.st.peerDoneCh)
		lingerTimer  *time.Timer
		lingerC      <-chan time.Time
		lingerSeen   uint64
		confirmTimer *time.Timer // from a resume until its force-call
		peerAway     bool        // between the peer's reconnecting and resumed
		confirmC     <-chan time.Time
	)
	defer func() {
		if confirmTimer != nil {
			confirmTimer.Stop()
		}
		if troubleTimer != nil {
			troubleTimer.Stop()
		}
		if lingerTimer != nil {
			lingerTimer.Stop()
		}
	}()
	for {
		if p.trouble != troubleAt {
			troubleAt = p.trouble
			if troubleTimer != nil {
				troubleTimer.Stop()
			}
			troubleC = nil
			if !troubleAt.IsZero() && p.cfg.reconnect > 0 {
				troubleTimer = time.NewTimer(time.Until(troubleAt.Add(p.cfg.reconnect)))
				troubleC = troubleTimer.C
			}
		}
		if complete == nil && peerDone == nil {
			p.log.Info("done: both streams delivered", "peer", p.peer)
			return end(nil)
		}
		select {
		case ev, ok := <-p.c.Events():
			if !ok {
				if p.cfg.reconnect == 0 {
					return fmt.Errorf("%w: %w", errMetaLost, p.c.Err())
				}
				p.troubleBegins("connection to the server lost")
				resumed, err := p.reconnect(ctx)
				if err != nil {
					return err
				}
				if !resumed {
					return errCallGone // a new device: the call is gone
				}
				// A fresh force-call follows.
				if confirmTimer != nil {
					confirmTimer.Stop()
				}
				confirmTimer = time.NewTimer(resumeConfirm)
				confirmC = confirmTimer.C
				continue
			}
			switch {
			case ev.Type == protocol.TypeForceCall && ev.Peer == p.peer:
				p.log.Debug("fresh force-call: new media connection")
				if confirmTimer != nil {
					confirmTimer.Stop()
					confirmC = nil
				}
				open(ev)
			case ev.Type == protocol.TypeUnpair && ev.User == p.peer:
				return p.callEnded(ev.Reason)
			case (ev.Type == protocol.TypeReconnecting || ev.Type == protocol.TypeResumed) && ev.User == p.peer:
				p.log.Info("peer "+ev.Type, "peer", p.peer)
				peerAway = ev.Type == protocol.TypeReconnecting
			default:
				p.log.Debug("event during the call", "type", ev.Type, "user", ev.User)
			}
		case <-mediaEnd:
			mediaEnd, synced = nil, nil
			if err := p.st.Err(); err != nil {
				return end(err)
			}
			p.log.Info("media connection ended", "err", l.err)
			if !errors.Is(l.err, client.ErrUnpaired) {
				p.troubleBegins("media connection lost")
			}
			// What next comes on /meta: an unpair (the call ended), a
			// fresh force-call (the server kept the call), or the end of
			// /meta itself.
		case <-synced:
			synced = nil
			if !p.trouble.IsZero() {
				p.log.Info("stream back", "peer", p.peer, "after", time.Since(p.trouble).Round(time.Millisecond))
				p.trouble = time.Time{}
			} else {
				p.log.Info("connected", "peer", p.peer)
			}
		case <-confirmC:
			p.log.Info("no fresh force-call after the resume: the call is gone (the server restarted?)", "waited", resumeConfirm)
			return errCallGone
		case <-troubleC:
			if p.complete() {
				p.log.Info("everything delivered both ways; the peer did not come back to confirm")
				return end(nil)
			}
			return end(fmt.Errorf("pipe: the stream did not come back within -reconnect %v (%s)", p.cfg.reconnect, p.st.progress()))
		case <-p.st.failedCh:
			return end(p.st.Err())
		case <-complete:
			complete = nil
		case <-peerDone:
			peerDone = nil
		case <-sentAll:
			sentAll = nil
			if p.cfg.linger == 0 {
				p.log.Info("our stream is acknowledged; hanging up (-linger 0)")
				return end(nil)
			}
			lingerSeen, _ = p.st.peerActivity()
			lingerTimer = time.NewTimer(p.cfg.linger)
			lingerC = lingerTimer.C
		case <-lingerC:
			if now, writing := p.st.peerActivity(); now != lingerSeen || writing || !p.trouble.IsZero() || peerAway {
				lingerSeen = now // the peer is still sending, or one of us is reconnecting
				lingerTimer.Reset(p.cfg.linger)
				continue
			}
			p.log.Info("our stream is acknowledged and the peer's is idle, hanging up", "linger", p.cfg.linger)
			return end(nil)
		case <-ctx.Done():
			return end(fmt.Errorf("pipe: %w", ctx.Err()))
		}
	}
}

// callEnded decides what the end of the call (an unpair with reason) means.
func (p *piper) callEnded(reason string) error {
	if p.complete() && (reason == protocol.ReasonHangup || p.peerDone() || p.cfg.reconnect == 0) {
		p.log.Info("call ended; both streams delivered", "peer", p.peer, "reason", reason)
		return nil
	}
	if p.complete() {
		// The peer may not know yet that its stream arrived (our last
		// acknowledgement was lost with the call): call again to say so;
		// run ends well if the peer does not come back.
		p.log.Info("call ended before the goodbye", "peer", p.peer, "reason", reason)
		return errCallGone
	}
	if reason == protocol.ReasonHangup {
		n, eof := p.st.unacked()
		if n == 0 {
			p.log.Info("peer hung up; everything read from stdin was acknowledged", "peer", p.peer, "stdin ended", eof)
			return nil
		}
		return fmt.Errorf("pipe: %s hung up with %d bytes of ours not acknowledged (%s)", p.peer, n, p.st.progress())
	}
	p.log.Info("call ended", "peer", p.peer, "reason", reason)
	if p.cfg.reconnect == 0 {
		return fmt.Errorf("pipe: call with %s ended (%s)", p.peer, reason)
	}
	return errCallGone
}
