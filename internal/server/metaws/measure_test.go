package metaws_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/user-media-plug/umplug/internal/server/metaws"
)

// TestMeasureIdle measures what an idle upgraded /meta connection costs the
// server, as the slope between two connection counts. (At commit 170402b it
// also measured the previous transport, wsloop, in the same run: see
// docs/architecture.md.) The server runs in a child process (this test binary
// re-executed), so the client's sockets and buffers are not counted. It is a
// measurement, not a test: run it by hand, once, with
//
//	METAWS_MEASURE=5000,10000 go test -run TestMeasureIdle -v -timeout 10m ./internal/server/metaws
//
// (two counts; the second at most ~18,000 with a 20,000 open-file limit).
func TestMeasureIdle(t *testing.T) {
	if os.Getenv("METAWS_SERVE") != "" {
		measureServe()
		return
	}
	spec := os.Getenv("METAWS_MEASURE")
	if spec == "" {
		t.Skip("a measurement: set METAWS_MEASURE=5000,10000 to run it")
	}
	var counts []int
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, n)
	}
	if len(counts) != 2 || counts[0] >= counts[1] {
		t.Fatal("METAWS_MEASURE wants two increasing counts")
	}
	for _, kind := range []string{"metaws"} {
		t.Run(kind, func(t *testing.T) { measureKind(t, kind, counts) })
	}
}

type sample struct {
	rss, heap, stacks, goroutines int64
}

func measureKind(t *testing.T, kind string, counts []int) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestMeasureIdle$")
	cmd.Env = append(os.Environ(), "METAWS_SERVE="+kind)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { in.Close(); cmd.Wait() }()
	out := bufio.NewScanner(outp)
	line := func() string {
		for out.Scan() {
			if s := out.Text(); strings.HasPrefix(s, "measure ") {
				return strings.TrimPrefix(s, "measure ")
			}
		}
		t.Fatalf("child: %v", out.Err())
		return ""
	}
	addr := line()
	ask := func() sample {
		fmt.Fprintln(in, "sample")
		var s sample
		fmt.Sscan(line(), &s.rss, &s.heap, &s.stacks, &s.goroutines)
		return s
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	base := ask()
	var got []sample
	for _, n := range counts {
		for len(conns) < n {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			c, _, _, err := ws.Dial(ctx, "ws://"+addr+"/")
			cancel()
			if err != nil {
				t.Fatalf("%d connections: %v", len(conns), err)
			}
			conns = append(conns, c)
		}
		fmt.Fprintln(in, "wait", n)
		line()
		got = append(got, ask())
	}
	d := float64(counts[1] - counts[0])
	a, b := got[0], got[1]
	t.Logf("%s: base RSS %.1f MiB; at %d: RSS %.1f MiB, %d goroutines; at %d: RSS %.1f MiB, %d goroutines",
		kind, mib(base.rss), counts[0], mib(a.rss), a.goroutines, counts[1], mib(b.rss), b.goroutines)
	t.Logf("%s per idle connection (slope %d→%d): RSS %.0f B, heap %.0f B, stacks %.0f B, goroutines %.3f",
		kind, counts[0], counts[1], float64(b.rss-a.rss)/d, float64(b.heap-a.heap)/d, float64(b.stacks-a.stacks)/d,
		float64(b.goroutines-a.goroutines)/d)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// measureServe is the child: a /meta-like server with the chosen transport
// that answers "sample" and "wait N" on stdin.
func measureServe() {
	kind := os.Getenv("METAWS_SERVE")
	open := make(chan struct{}, 1<<16)
	var h http.HandlerFunc
	switch kind {
	case "metaws":
		l := metaws.New(metaws.Config{})
		h = func(w http.ResponseWriter, r *http.Request) {
			c, err := l.Upgrade(w, r)
			if err != nil {
				return
			}
			c.Start(nopHandler{})
			open <- struct{}{}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go http.Serve(ln, h)
	fmt.Println("measure", ln.Addr())
	in := bufio.NewScanner(os.Stdin)
	n := 0
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch f[0] {
		case "wait":
			want, _ := strconv.Atoi(f[1])
			for ; n < want; n++ {
				<-open
			}
			// Let net/http's goroutines of the upgraded connections end.
			deadline := time.Now().Add(10 * time.Second)
			for runtime.NumGoroutine() > 50 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			fmt.Println("measure ok")
		case "sample":
			runtime.GC()
			debug.FreeOSMemory()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			fmt.Println("measure", vmRSS(), m.HeapInuse, m.StackInuse, runtime.NumGoroutine())
		}
	}
	os.Exit(0)
}

func vmRSS() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

type nopHandler struct{}

func (nopHandler) Handle([]byte) {}
func (nopHandler) Close()        {}
