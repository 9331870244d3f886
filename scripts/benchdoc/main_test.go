package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRender renders a small template from a fixture run: every function
// the real template uses, and the QUICK label.
func TestRender(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("idle.json", `{"header":{"time":"2026-11-26T12:00:00Z","commit":"abc123","commit_modified":true,
		"commit_source":"git rev-parse","go_version":"go1.26.8","goos":"linux","goarch":"amd64",
		"gomaxprocs":2,"num_cpu":2,"cpu_model":"Test CPU","config":{"conns":"5000,10000"}},
		"summary":{"rss_per_conn_bytes":2048,"connected":10000},
		"rows":[{"metric":"RSS per idle connection","value":"2.00 KiB","target":"≤ 2 KiB"}]}`)
	write("idle.cmd", "umplug serve &\numplug bench -scenario idle -pid $!\n")
	write("media.benchstat", "name  B/s\nRelay  1Gi\n")
	write("total.seconds", "61\n")
	tmpl := filepath.Join(dir, "doc.tmpl")
	write("doc.tmpl", `{{if .Quick}}QUICK {{end}}{{.Commit}} {{.CommitSource}} {{.CPU}} {{.NumCPU}} {{.Date}} {{.TotalMinutes}}
{{sum "idle" "rss_per_conn_bytes" | kib}} {{sum "idle" "connected" | f0}} {{config "idle" "conns"}}
{{cmd "idle"}}
{{table "idle"}}
{{stat "media"}}
`)
	out := filepath.Join(dir, "out.md")
	var stderr bytes.Buffer
	if err := run([]string{"-dir", dir, "-template", tmpl, "-out", out, "-quick"}, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{
		"QUICK abc123 (with uncommitted changes) git rev-parse Test CPU 2 2026-11-26 2",
		"2.00 KiB 10,000 5000,10000",
		"```sh\numplug serve &\numplug bench -scenario idle -pid $!\n```",
		"RSS per idle connection  2.00 KiB  ≤ 2 KiB\n```",
		"```\nname  B/s\nRelay  1Gi\n```",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}

	// A figure the template asks for and the run lacks is an error, not a
	// blank in the document.
	write("doc.tmpl", `{{sum "idle" "nope"}}`)
	if err := run([]string{"-dir", dir, "-template", tmpl, "-out", out}, &stderr); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing figure: err = %v", err)
	}
}

func TestGroup(t *testing.T) {
	for in, want := range map[string]string{"0": "0", "999": "999", "1000": "1,000", "11712": "11,712", "-1234567": "-1,234,567"} {
		if got := group(in); got != want {
			t.Errorf("group(%q) = %q, want %q", in, got, want)
		}
	}
}
