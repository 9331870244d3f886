package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
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

End of stream: when stdin ends, pipe sends an end mark (an empty frame) and
waits until the peer confirms it has received everything (a second pipe does
so once its own stdin has ended too), at most -linger; then it hangs up. When
the peer hangs up, pipe writes what it received and exits 0. Another client
sees the marks as empty frames.

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
	verbose      bool
}

// pipeReadSize is how much of stdin goes into one media frame.
const pipeReadSize = 32 << 10

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
	fs.DurationVar(&cfg.linger, "linger", 10*time.Second, "after stdin ends, how long to wait for the peer to confirm it has everything before hanging up (0: hang up at once)")
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

	c, err := client.Dial(ctx, cfg.server, &client.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	defer c.Close()
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

	var fc protocol.Event
	if cfg.call != "" {
		fc, err = placeCall(ctx, c, log, cfg.call)
	} else {
		fc, err = answerCall(ctx, c, log, cfg.from)
	}
	if err != nil {
		return err
	}
	peer := fc.Peer
	m, err := c.Media(ctx, fc)
	if err != nil {
		return fmt.Errorf("pipe: media: %w", err)
	}
	defer m.Close()
	select {
	case <-m.Paired():
	case <-m.Done():
		return fmt.Errorf("pipe: media ended before the peer joined: %w", m.Err())
	case <-ctx.Done():
		hangup(ctx, c, log, peer)
		return fmt.Errorf("pipe: waiting for %s's media: %w", peer, ctx.Err())
	}
	log.Info("connected", "peer", peer)
	// Nothing below waits for an event, but the client bounds the unread
	// ones (client.Options.EventBuffer): keep reading them, so that a long
	// call with chatty peers is not ended by ErrEventsOverflow. The loop
	// ends when c is closed.
	go func() {
		for ev := range c.Events() {
			log.Debug("event during the call", "type", ev.Type, "user", ev.User)
		}
	}()
	return relay(ctx, c, m, log, peer, cfg.linger, stdin, stdout)
}

// nextEvent waits for c's next event.
func nextEvent(ctx context.Context, c *client.Client) (protocol.Event, error) {
	select {
	case ev, ok := <-c.Events():
		if !ok {
			return ev, fmt.Errorf("pipe: connection to the server ended: %w", c.Err())
		}
		return ev, nil
	case <-ctx.Done():
		return protocol.Event{}, fmt.Errorf("pipe: %w", ctx.Err())
	}
}

// placeCall rings peer until it accepts and returns our force-call. An
// offline peer is waited for.
func placeCall(ctx context.Context, c *client.Client, log *slog.Logger, peer string) (protocol.Event, error) {
	for {
		_, err := c.Call(ctx, peer)
		if errors.Is(err, &protocol.Error{Code: protocol.ErrOffline}) {
			log.Info("peer offline, waiting for it to come online", "peer", peer)
			for {
				ev, err := nextEvent(ctx, c)
				if err != nil {
					return ev, err
				}
				if ev.Type == protocol.TypeStatus && ev.User == peer && ev.Status != protocol.StatusOffline {
					break
				}
			}
			continue
		}
		if err != nil {
			return protocol.Event{}, fmt.Errorf("pipe: call %s: %w", peer, err)
		}
		break
	}
	log.Info("ringing", "peer", peer)
	for {
		ev, err := nextEvent(ctx, c)
		if err != nil {
			hangup(ctx, c, log, peer)
			return ev, err
		}
		switch {
		case ev.Type == protocol.TypeAccept && ev.User == peer:
			log.Info("accepted", "peer", peer)
		case ev.Type == protocol.TypeReject && ev.User == peer:
			return ev, fmt.Errorf("pipe: %s did not take the call (%s)", peer, ev.Reason)
		case ev.Type == protocol.TypeForceCall && ev.Peer == peer:
			return ev, nil
		}
	}
}

// answerCall waits for a call (from from, if set), accepts it and returns
// our force-call.
func answerCall(ctx context.Context, c *client.Client, log *slog.Logger, from string) (protocol.Event, error) {
	log.Info("waiting for a call")
	peer := "" // set once we accepted
	for {
		ev, err := nextEvent(ctx, c)
		if err != nil {
			if peer != "" {
				hangup(ctx, c, log, peer)
			}
			return ev, err
		}
		switch {
		case ev.Type == protocol.TypeCall && peer == "":
			if from != "" && ev.User != from {
				log.Info("ignoring call", "from", ev.User)
				continue
			}
			if err := c.Accept(ctx, ev.User, ev.Tx); err != nil {
				if errors.Is(err, &protocol.Error{Code: protocol.ErrNoCall}) {
					log.Info("call gone before it was accepted", "from", ev.User)
					continue
				}
				return ev, fmt.Errorf("pipe: accept %s: %w", ev.User, err)
			}
			peer = ev.User
			log.Info("accepted call", "from", peer)
		case ev.Type == protocol.TypeForceCall && peer != "" && ev.Peer == peer:
			return ev, nil
		case ev.Type == protocol.TypeUnpair && ev.User == peer && peer != "":
			return ev, fmt.Errorf("pipe: %s hung up (%s)", peer, ev.Reason)
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

// relay copies stdin to the peer and the peer to stdout until the call
// ends. It always returns after the receiving side has stopped writing to
// stdout.
func relay(ctx context.Context, c *client.Client, m *client.Media, log *slog.Logger, peer string,
	linger time.Duration, stdin io.Reader, stdout io.Writer) error {
	marks := make(chan struct{}, 2) // the peer's empty frames: end mark, then its confirmation
	recvDone := make(chan error, 1)
	go func() {
		for {
			f, err := m.ReadFrame()
			if err != nil {
				if errors.Is(err, client.ErrUnpaired) {
					err = nil
				}
				recvDone <- err
				return
			}
			if len(f) == 0 {
				select {
				case marks <- struct{}{}:
				default:
				}
				continue
			}
			if _, err := stdout.Write(f); err != nil {
				recvDone <- fmt.Errorf("pipe: write stdout: %w", err)
				return
			}
		}
	}()
	sendDone := make(chan error, 1)
	go func() {
		buf := make([]byte, pipeReadSize)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				if werr := m.WriteFrame(buf[:n]); werr != nil {
					sendDone <- werr
					return
				}
			}
			if err == io.EOF {
				sendDone <- nil
				return
			}
			if err != nil {
				sendDone <- fmt.Errorf("pipe: read stdin: %w", err)
				return
			}
		}
	}()

	// end hangs up and waits for the receiver to flush.
	end := func(cause error) error {
		hangup(ctx, c, log, peer)
		select {
		case err := <-recvDone:
			if cause == nil {
				cause = err
			}
		case <-time.After(hangupWait):
			m.Close()
			<-recvDone
		}
		return cause
	}
	sendCh := (<-chan error)(sendDone)
	var lingerC <-chan time.Time
	var sentEOF, gotEOF, sentConfirm bool
	for {
		select {
		case err := <-sendCh:
			sendCh = nil
			if err != nil {
				select {
				case <-m.Done(): // the peer hung up while we were sending
					continue
				default:
				}
				return end(err)
			}
			log.Debug("stdin ended")
			if linger == 0 {
				return end(nil)
			}
			if err := m.WriteFrame(nil); err != nil { // end mark
				continue // the call is ending: recvDone follows
			}
			sentEOF = true
			t := time.NewTimer(linger)
			defer t.Stop()
			lingerC = t.C
		case <-marks:
			if !gotEOF {
				gotEOF = true
				log.Debug("peer finished sending")
			} else {
				log.Debug("peer confirmed it has everything")
				return end(nil)
			}
		case err := <-recvDone:
			if err == nil {
				log.Info("call ended", "peer", peer)
			}
			return err
		case <-lingerC:
			log.Info("peer did not confirm the end in time, hanging up", "linger", linger)
			return end(nil)
		case <-ctx.Done():
			return end(fmt.Errorf("pipe: %w", ctx.Err()))
		}
		if sentEOF && gotEOF && !sentConfirm {
			sentConfirm = true
			if err := m.WriteFrame(nil); err != nil {
				log.Debug("confirmation not sent", "err", err)
			}
		}
	}
}
