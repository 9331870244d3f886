// Command umplug is the user-media-plug server and its tools:
//
//	umplug serve            run the metadata + media server and the web app
//	umplug user …           administer the user store offline
//	umplug pipe …           call or answer a peer and pipe stdin/stdout through the media relay
//	umplug bench …          load generator that prints figures
//
// main stays thin: run parses the subcommand and its flags into a config and
// does the work, so that tests can call run directly.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "umplug:", err)
		os.Exit(1)
	}
}

// signalContext is done at the first SIGINT or SIGTERM, which starts a
// graceful shutdown; signal handling is then given back to the runtime, so a
// second signal ends the process at once.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
			// Stop before cancelling, so that by the time anyone sees ctx
			// done, a second signal has its default action again.
			signal.Stop(ch)
			cancel()
		case <-ctx.Done():
			signal.Stop(ch)
		}
	}()
	return ctx, cancel
}

const usage = `usage: umplug <command> [flags]

commands:
  serve   run the server (metadata /meta, media /media, web app /)
  user    administer users offline: add, del, passwd, list, peers
  pipe    log in, call or answer a peer, and relay stdin/stdout as media
  bench   load generator: call setups, idle connections, presence, login flood

Run 'umplug <command> -h' for a command's flags.
`

// run dispatches a subcommand. args[0] is the program name.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("missing command")
	}
	cmd, rest := args[1], args[2:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stderr)
	case "user":
		return runUser(ctx, rest, stdin, stdout, stderr)
	case "pipe":
		return runPipe(ctx, rest, stdin, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
