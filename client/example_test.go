package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/user-media-plug/umplug/client"
	"github.com/user-media-plug/umplug/internal/servertest"
	"github.com/user-media-plug/umplug/protocol"
)

// mustUser registers user with password "sesameopen" and logs a new
// connection in: the boilerplate of the examples below.
func mustUser(ctx context.Context, serverURL, user string, peers ...string) *client.Client {
	c, err := client.Dial(ctx, serverURL, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Register(ctx, user, "sesameopen", peers...); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Login(ctx, user, "sesameopen"); err != nil {
		log.Fatal(err)
	}
	return c
}

// waitEvent returns c's next event of type typ, skipping presence updates.
func waitEvent(c *client.Client, typ string) protocol.Event {
	ev, err := c.Next(context.Background(), typ)
	if err != nil {
		log.Fatal(err)
	}
	return ev
}

func ExampleDial() {
	srv, stop := servertest.StartExample(nil) // a real server on 127.0.0.1
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The server's base URL works as well as "ws://host:port/meta".
	c, err := client.Dial(ctx, srv.URL, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if err := c.Register(ctx, "alice", "sesameopen"); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Login(ctx, "alice", "sesameopen"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("logged in as", c.User())

	// Server errors are *protocol.Error values with a stable code.
	err = c.AddPeers(ctx, "bob")
	fmt.Println(errors.Is(err, &protocol.Error{Code: protocol.ErrNotFound}))
	// Output:
	// logged in as alice
	// true
}

func ExampleClient_Call() {
	srv, stop := servertest.StartExample(nil)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := mustUser(ctx, srv.URL, "alice")
	defer alice.Close()
	bob := mustUser(ctx, srv.URL, "bob", "alice")
	defer bob.Close()
	if err := alice.AddPeers(ctx, "bob"); err != nil { // now mutual peers
		log.Fatal(err)
	}

	if _, err := alice.Call(ctx, "bob"); err != nil { // ok: ringing
		log.Fatal(err)
	}
	in := waitEvent(bob, protocol.TypeCall)
	fmt.Println("bob: call from", in.User)
	if err := bob.Accept(ctx, in.User, in.Tx); err != nil { // answer with the call's tx
		log.Fatal(err)
	}
	fmt.Println("alice: accepted by", waitEvent(alice, protocol.TypeAccept).User)
	fmt.Println("alice: connect media with", waitEvent(alice, protocol.TypeForceCall).Peer)
	fmt.Println("bob: connect media with", waitEvent(bob, protocol.TypeForceCall).Peer)
	// Output:
	// bob: call from alice
	// alice: accepted by bob
	// alice: connect media with bob
	// bob: connect media with alice
}

func ExampleClient_Media() {
	srv, stop := servertest.StartExample(nil)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := mustUser(ctx, srv.URL, "alice")
	defer alice.Close()
	bob := mustUser(ctx, srv.URL, "bob", "alice")
	defer bob.Close()
	if err := alice.AddPeers(ctx, "bob"); err != nil {
		log.Fatal(err)
	}
	if _, err := alice.Call(ctx, "bob"); err != nil {
		log.Fatal(err)
	}
	in := waitEvent(bob, protocol.TypeCall)
	if err := bob.Accept(ctx, in.User, in.Tx); err != nil {
		log.Fatal(err)
	}

	// Each side opens its media with its own force-call.
	ma, err := alice.Media(ctx, waitEvent(alice, protocol.TypeForceCall))
	if err != nil {
		log.Fatal(err)
	}
	defer ma.Close()
	mb, err := bob.Media(ctx, waitEvent(bob, protocol.TypeForceCall))
	if err != nil {
		log.Fatal(err)
	}
	defer mb.Close()
	<-ma.Paired()
	fmt.Println("alice: paired with", ma.Peer())

	// Frames go through unchanged; Media is also an io.ReadWriter.
	if err := ma.WriteFrame([]byte("hello bob")); err != nil {
		log.Fatal(err)
	}
	frame, err := mb.ReadFrame()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bob: got %q\n", frame)

	// Hanging up ends both media connections.
	if err := bob.Unpair(ctx, "alice"); err != nil {
		log.Fatal(err)
	}
	_, err = io.ReadAll(ma) // io.EOF at the end of the call
	fmt.Println("alice: call over:", err == nil, errors.Is(ma.Err(), client.ErrUnpaired))
	// Output:
	// alice: paired with bob
	// bob: got "hello bob"
	// alice: call over: true true
}

// A session from Login identifies a later connection (a reconnect, a
// restarted program) without the password.
func ExampleClient_LoginSession() {
	srv, stop := servertest.StartExample(nil)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	first := mustUser(ctx, srv.URL, "alice")
	session := first.Session() // keep it like a password
	first.Close()

	c, err := client.Dial(ctx, srv.URL, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.LoginSession(ctx, "alice", session); err != nil {
		log.Fatal(err)
	}
	fmt.Println("back as", c.User())

	// Logout revokes it: the next LoginSession fails like a wrong password.
	if err := c.Logout(ctx); err != nil {
		log.Fatal(err)
	}
	c2, err := client.Dial(ctx, srv.URL, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c2.Close()
	_, err = c2.LoginSession(ctx, "alice", session)
	fmt.Println(errors.Is(err, &protocol.Error{Code: protocol.ErrAuthFailed}))
	// Output:
	// back as alice
	// true
}

// Calls to a user who is offline are kept for them as missed calls.
func ExampleClient_MissedCalls() {
	srv, stop := servertest.StartExample(nil)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	bob := mustUser(ctx, srv.URL, "bob")
	alice := mustUser(ctx, srv.URL, "alice", "bob")
	defer alice.Close()
	if err := bob.AddPeers(ctx, "alice"); err != nil {
		log.Fatal(err)
	}
	bob.Close()
	for { // wait until the server saw bob leave
		ev := waitEvent(alice, protocol.TypeStatus)
		if ev.User == "bob" && ev.Status == protocol.StatusOffline {
			break
		}
	}

	_, err := alice.Call(ctx, "bob")
	fmt.Println(errors.Is(err, &protocol.Error{Code: protocol.ErrOffline}))

	c, err := client.Dial(ctx, srv.URL, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, "bob", "sesameopen"); err != nil {
		log.Fatal(err)
	}
	calls, err := c.MissedCalls(ctx, true) // and clear the list
	if err != nil {
		log.Fatal(err)
	}
	for _, mc := range calls {
		fmt.Println(mc.User, mc.Reason)
	}
	// Output:
	// true
	// alice offline
}
