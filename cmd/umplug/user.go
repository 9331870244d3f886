package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/user-media-plug/umplug/internal/admin"
	"github.com/user-media-plug/umplug/internal/password"
	"github.com/user-media-plug/umplug/internal/store"
	"github.com/user-media-plug/umplug/protocol"
)

const userUsage = `usage: umplug user [-data DIR] <command> [flags]

Administer the user store offline (the server must not be running on DIR),
except passwd, which also works while a server runs on DIR (through its
admin socket DIR/admin.sock). Passwords are read from the first line of
stdin, never from the command line.

commands:
  add NAME [-peers a,b]          create a user (password on stdin)
  del NAME                       delete a user and remove it from every peer list
  passwd NAME                    set a user's password (password on stdin), revoke
                                 every session of the user and close its connections
  list                           print every user and their peers
  peers NAME [-add a,b] [-del c] print or change a user's peers

flags (before or after the command):
  -data DIR   data directory of the user store (env UMPLUG_DATA, default ./umplug-data)
`

// runUser administers the Pebble user store directly. It holds the store's
// directory lock for the duration of one command, so it fails cleanly (with
// store.ErrLocked) while a server is running on the same directory.
func runUser(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	def := os.Getenv("UMPLUG_DATA")
	if def == "" {
		def = "./umplug-data"
	}
	top := flag.NewFlagSet("umplug user", flag.ContinueOnError)
	top.SetOutput(stderr)
	top.Usage = func() { fmt.Fprint(stderr, userUsage) }
	data := top.String("data", def, "data directory of the user store (env UMPLUG_DATA)")
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("user: %w", err)
	}
	if top.NArg() == 0 {
		fmt.Fprint(stderr, userUsage)
		return errors.New("user: missing command")
	}
	cmd, rest := top.Arg(0), top.Args()[1:]
	u := &userCmd{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}

	fs := flag.NewFlagSet("umplug user "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(data, "data", *data, "data directory of the user store (env UMPLUG_DATA)")
	var peers, add, del string
	var want int // positional arguments
	switch cmd {
	case "add":
		fs.StringVar(&peers, "peers", "", "comma-separated initial peers; each must exist")
		want = 1
	case "del", "passwd":
		want = 1
	case "list":
		want = 0
	case "peers":
		fs.StringVar(&add, "add", "", "comma-separated peers to add; each must exist")
		fs.StringVar(&del, "del", "", "comma-separated peers to remove (absent ones are ignored)")
		want = 1
	case "help", "-h", "--help":
		fmt.Fprint(stdout, userUsage)
		return nil
	default:
		fmt.Fprint(stderr, userUsage)
		return fmt.Errorf("user: unknown command %q", cmd)
	}
	pos, err := userParseInterspersed(fs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("user %s: %w", cmd, err)
	}
	if len(pos) != want {
		fs.Usage()
		return fmt.Errorf("user %s: want %d argument(s), got %d", cmd, want, len(pos))
	}
	var name string
	if want == 1 {
		name = pos[0]
		if err := protocol.CheckName(name); err != nil {
			return fmt.Errorf("user %s: name %q: %w", cmd, name, err)
		}
	}

	s, err := store.OpenPebble(*data, nil)
	if err != nil {
		if errors.Is(err, store.ErrLocked) && cmd == "passwd" {
			if err := u.passwdOnline(*data, name); err != nil {
				return fmt.Errorf("user %s: %w", cmd, err)
			}
			return nil
		}
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("user %s: the data directory %s is held by a running umplug server; "+
				"stop the server first, or use the protocol (reg-user, add-peers) while it runs: %w", cmd, *data, err)
		}
		return fmt.Errorf("user %s: %w", cmd, err)
	}
	u.s = s
	defer s.Close()

	switch cmd {
	case "add":
		err = u.add(name, peers)
	case "del":
		err = u.del(name)
	case "passwd":
		err = u.passwd(name)
	case "list":
		err = u.list()
	case "peers":
		err = u.peers(name, add, del)
	}
	if err != nil {
		return fmt.Errorf("user %s: %w", cmd, err)
	}
	// Close reports a failed final sync; a successful command must not hide it.
	if err := s.Close(); err != nil {
		return fmt.Errorf("user %s: %w", cmd, err)
	}
	return nil
}

// userCmd carries one invocation's store and streams.
type userCmd struct {
	ctx            context.Context
	s              store.Store
	stdin          io.Reader
	stdout, stderr io.Writer
}

func (u *userCmd) add(name, peersFlag string) error {
	peers, err := userNames(peersFlag)
	if err != nil {
		return fmt.Errorf("-peers: %w", err)
	}
	if slices.Contains(peers, name) {
		return errors.New("-peers: cannot list the user itself")
	}
	if len(peers) > protocol.MaxPeers {
		return fmt.Errorf("-peers: more than %d entries", protocol.MaxPeers)
	}
	// Fail before asking for a password when the command cannot succeed.
	// Names are unique regardless of case, as reg-user enforces: a scan
	// costs nothing for a one-off admin command.
	var taken string
	if err := u.s.List(u.ctx, func(o store.User) bool {
		if strings.EqualFold(o.Name, name) {
			taken = o.Name
		}
		return taken == ""
	}); err != nil {
		return err
	}
	if taken != "" {
		return fmt.Errorf("%q (as %q; names are unique regardless of case): %w", name, taken, store.ErrExists)
	}
	if err := u.mustExist(peers); err != nil {
		return err
	}
	hash, err := u.readAndHash()
	if err != nil {
		return err
	}
	if err := u.s.Create(u.ctx, store.User{Name: name, Password: hash, Peers: peers}); err != nil {
		return err
	}
	fmt.Fprintf(u.stdout, "added %s\n", name)
	return nil
}

// del also removes name from every other user's peers: otherwise whoever
// registers the name next would inherit the old user's contacts.
func (u *userCmd) del(name string) error {
	if _, err := u.s.Get(u.ctx, name); err != nil {
		return err
	}
	var listers []string
	if err := u.s.List(u.ctx, func(o store.User) bool {
		if slices.Contains(o.Peers, name) {
			listers = append(listers, o.Name)
		}
		return true
	}); err != nil {
		return err
	}
	// Scrub first: if this is interrupted, running del again finishes it.
	for _, o := range listers {
		if _, err := u.s.UpdatePeers(u.ctx, o, func(p []string) ([]string, error) {
			return slices.DeleteFunc(p, func(x string) bool { return x == name }), nil
		}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("remove %s from %s's peers: %w", name, o, err)
		}
	}
	if err := u.s.Delete(u.ctx, name); err != nil {
		return err
	}
	fmt.Fprintf(u.stdout, "deleted %s (removed from %d peer list(s))\n", name, len(listers))
	return nil
}

func (u *userCmd) passwd(name string) error {
	if _, err := u.s.Get(u.ctx, name); err != nil {
		return err
	}
	hash, err := u.readAndHash()
	if err != nil {
		return err
	}
	// Sessions first: interrupted in between, the old password stays with
	// no session, never the new one with old sessions.
	n, err := u.s.DeleteSessions(u.ctx, name)
	if err != nil {
		return err
	}
	if err := u.s.SetPassword(u.ctx, name, hash); err != nil {
		return err
	}
	fmt.Fprintf(u.stdout, "password of %s changed; %d session(s) revoked\n", name, n)
	return nil
}

// passwdOnline changes the password through the running server's admin
// socket: the server revokes the sessions and closes the user's
// connections. The password is hashed here; only the hash is sent.
func (u *userCmd) passwdOnline(dir, name string) error {
	hash, err := u.readAndHash()
	if err != nil {
		return err
	}
	revoked, closed, err := admin.SetPassword(u.ctx, dir, name, hash)
	if err != nil {
		return err
	}
	fmt.Fprintf(u.stdout, "password of %s changed by the running server; %d session(s) revoked, %d connection(s) closed\n", name, revoked, closed)
	return nil
}

// list prints "name<TAB>peer,peer" per user, in name order.
func (u *userCmd) list() error {
	return u.s.List(u.ctx, func(o store.User) bool {
		fmt.Fprintf(u.stdout, "%s\t%s\n", o.Name, strings.Join(o.Peers, ","))
		return true
	})
}

// peers prints (one per line) or changes name's peers with the protocol's
// rules: deduplicated, never the user itself, added ones must exist, at most
// protocol.MaxPeers.
func (u *userCmd) peers(name, addFlag, delFlag string) error {
	add, err := userNames(addFlag)
	if err != nil {
		return fmt.Errorf("-add: %w", err)
	}
	del, err := userNames(delFlag)
	if err != nil {
		return fmt.Errorf("-del: %w", err)
	}
	if slices.Contains(add, name) {
		return errors.New("-add: cannot add the user itself")
	}
	var cur store.User
	if len(add) == 0 && len(del) == 0 {
		if cur, err = u.s.Get(u.ctx, name); err != nil {
			return err
		}
	} else {
		if _, err := u.s.Get(u.ctx, name); err != nil {
			return err
		}
		if err := u.mustExist(add); err != nil {
			return err
		}
		cur, err = u.s.UpdatePeers(u.ctx, name, func(p []string) ([]string, error) {
			p = slices.DeleteFunc(p, func(x string) bool { return slices.Contains(del, x) })
			for _, a := range add {
				if !slices.Contains(p, a) {
					p = append(p, a)
				}
			}
			if len(p) > protocol.MaxPeers {
				return nil, fmt.Errorf("%s would have %d peers, more than %d", name, len(p), protocol.MaxPeers)
			}
			return p, nil
		})
		if err != nil {
			return err
		}
	}
	for _, p := range cur.Peers {
		fmt.Fprintln(u.stdout, p)
	}
	return nil
}

// mustExist fails naming every one of names that is not a registered user.
func (u *userCmd) mustExist(names []string) error {
	var missing []string
	for _, n := range names {
		if _, err := u.s.Get(u.ctx, n); errors.Is(err, store.ErrNotFound) {
			missing = append(missing, n)
		} else if err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("peers not registered: %s", strings.Join(missing, ", "))
	}
	return nil
}

// readAndHash reads the password from the first line of stdin, checks it
// with the contract's rules and returns its argon2id hash (OWASP params).
func (u *userCmd) readAndHash() (string, error) {
	if f, ok := u.stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprint(u.stderr, "password (shown as typed; or pipe it in): ")
		}
	}
	// One byte over the limit is enough to tell "too long"; never buffer more.
	r := bufio.NewReader(io.LimitReader(u.stdin, protocol.MaxPasswordLen+3))
	line, err := r.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if pw == "" {
		return "", errors.New(`no password on stdin (e.g. printf '%s\n' "$PASSWORD" | umplug user add NAME)`)
	}
	if err := protocol.CheckPassword(pw); err != nil {
		return "", fmt.Errorf("password: %w", err)
	}
	hash, err := password.New(password.Config{}).Hash(u.ctx, pw)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return hash, nil
}

// userNames splits a comma-separated flag into valid, deduplicated names.
func userNames(s string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if err := protocol.CheckName(n); err != nil {
			return nil, fmt.Errorf("%q: %w", n, err)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// userParseInterspersed parses fs allowing flags after positional arguments
// ("add alice -peers bob"), which the flag package alone stops at.
func userParseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
