package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"
)

// A figure is only worth what is known about how it was taken: every run
// prints a Header (what was measured, with what, on what) before its
// results, and -json writes both as one Report.

// Setting is one configuration value of a run, named as its umplug bench
// flag.
type Setting struct {
	Name  string
	Value any // string, int, float64 or bool; durations as Go duration strings
}

// pacing is the per-connection pacing in messages per second, 0 when
// unpaced.
func (c *Config) pacing() float64 {
	if c.Unpaced {
		return 0
	}
	return c.Rate
}

// Settings lists the configuration cfg.Scenario runs with, defaults
// applied: the settings the scenario reads, in flag order. The password is
// left out.
func (c Config) Settings() ([]Setting, error) {
	if err := c.setDefaults(); err != nil {
		return nil, err
	}
	uses := map[string][]string{
		"calls":       {"duration", "pairs"},
		"idle":        {"conns", "settle", "gc-url", "sources"},
		"presence":    {"peers", "changes", "sources"},
		"login-flood": {"duration", "pairs", "flood", "sources"},
		"media":       {"duration", "pairs", "frame-bytes", "fps"},
		"reconnect":   {"conns", "restart", "reconnect-jitter", "sources"},
	}[c.Scenario]
	used := func(name string) bool {
		for _, u := range uses {
			if u == name {
				return true
			}
		}
		return false
	}
	s := []Setting{{"scenario", c.Scenario}, {"server", c.Server}}
	add := func(name string, v any) {
		if used(name) {
			s = append(s, Setting{name, v})
		}
	}
	add("duration", c.Duration.String())
	add("pairs", c.Pairs)
	add("frame-bytes", c.FrameBytes)
	add("fps", c.FPS)
	if used("conns") && c.Scenario == "idle" {
		s = append(s, Setting{"conns", fmt.Sprintf("%d,%d", c.ConnsBase, c.Conns)})
	} else {
		add("conns", c.Conns) // reconnect: one count
	}
	add("restart", c.RestartCmd)
	add("reconnect-jitter", c.ReconnectJitter.String())
	add("peers", c.Peers)
	add("changes", c.Changes)
	add("flood", c.Flood)
	s = append(s, Setting{"rate", c.pacing()}, Setting{"unpaced", c.Unpaced})
	add("sources", c.Sources)
	s = append(s, Setting{"concurrency", c.Concurrency}, Setting{"pid", c.PID})
	add("settle", c.Settle.String())
	add("gc-url", c.GCURL)
	s = append(s, Setting{"timeout", c.Timeout.String()}, Setting{"prefix", c.Prefix})
	return s, nil
}

// Header says what a run measured, with which build, on which machine.
// Its JSON field names are stable: scripts read them.
type Header struct {
	Tool    string    `json:"tool"`    // "umplug bench"
	Time    time.Time `json:"time"`    // the run's start, UTC
	Command []string  `json:"command"` // the load generator's command line
	// Commit is the load generator's source revision, CommitModified
	// whether the tree had uncommitted changes, CommitSource where both
	// came from: "buildinfo" (stamped by go build), "git rev-parse" (the
	// working directory's checkout: a go run or go test build) or
	// "unknown".
	Commit         string `json:"commit"`
	CommitModified bool   `json:"commit_modified"`
	CommitSource   string `json:"commit_source"`
	GoVersion      string `json:"go_version"`
	GOOS           string `json:"goos"`
	GOARCH         string `json:"goarch"`
	GOMAXPROCS     int    `json:"gomaxprocs"`
	NumCPU         int    `json:"num_cpu"`
	CPUModel       string `json:"cpu_model"` // /proc/cpuinfo "model name"
	// Config is the scenario's configuration, defaults applied, keyed by
	// flag name (Settings).
	Config map[string]any `json:"config"`
	// ConfigOrder is Config's keys in flag order, for printing.
	ConfigOrder []string    `json:"-"`
	Server      *ServerInfo `json:"server"`
}

// ServerInfo is what the load generator knows of the server under test:
// its URL, and with Config.PID its process, command line and build.
type ServerInfo struct {
	URL     string   `json:"url"`
	PID     int      `json:"pid,omitempty"`
	Cmdline []string `json:"cmdline,omitempty"` // /proc/PID/cmdline: the server's flags
	// Commit and CommitModified come from the server binary's build info
	// (/proc/PID/exe), when it was stamped.
	Commit         string `json:"commit,omitempty"`
	CommitModified bool   `json:"commit_modified,omitempty"`
	GoVersion      string `json:"go_version,omitempty"`
	// Error says why PID's details could not be read.
	Error string `json:"error,omitempty"`
}

// NewHeader describes a run of cfg started now by the command line args.
func NewHeader(ctx context.Context, cfg Config, args []string) (*Header, error) {
	settings, err := cfg.Settings()
	if err != nil {
		return nil, err
	}
	h := &Header{
		Tool:       "umplug bench",
		Time:       time.Now().UTC().Truncate(time.Second),
		Command:    args,
		GoVersion:  runtime.Version(),
		GOOS:       runtime.GOOS,
		GOARCH:     runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU:     runtime.NumCPU(),
		CPUModel:   cpuModel("/proc/cpuinfo"),
		Config:     make(map[string]any, len(settings)),
	}
	for _, s := range settings {
		h.Config[s.Name] = s.Value
		h.ConfigOrder = append(h.ConfigOrder, s.Name)
	}
	h.Commit, h.CommitModified, h.CommitSource = commit(ctx)
	h.Server = &ServerInfo{URL: h.Config["server"].(string), PID: cfg.PID}
	if cfg.PID > 0 {
		h.Server.read(cfg.PID)
	}
	return h, nil
}

// commit finds the load generator's source revision: from the build info
// go build stamps, else from git in the working directory.
func commit(ctx context.Context) (rev string, modified bool, source string) {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if rev, modified, ok := vcsInfo(bi); ok {
			return rev, modified, "buildinfo"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "", false, "unknown"
	}
	rev = strings.TrimSpace(string(out))
	// Untracked files do not make the build differ; changed tracked ones do.
	st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output()
	return rev, err == nil && len(bytes.TrimSpace(st)) > 0, "git rev-parse"
}

// vcsInfo reads vcs.revision and vcs.modified from build info.
func vcsInfo(bi *debug.BuildInfo) (rev string, modified, ok bool) {
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	return rev, modified, rev != ""
}

// read fills in the server process's command line and build.
func (s *ServerInfo) read(pid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		s.Error = err.Error()
		return
	}
	s.Cmdline = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	bi, err := buildinfo.ReadFile(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		s.Error = "build info: " + err.Error()
		return
	}
	s.GoVersion = bi.GoVersion
	s.Commit, s.CommitModified, _ = vcsInfo(bi)
}

// cpuModel returns the first "model name" of a /proc/cpuinfo, or "".
func cpuModel(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// WriteHeader prints h as aligned "key  value" lines.
func WriteHeader(w io.Writer, h *Header) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rev := h.Commit
	if rev == "" {
		rev = "unknown"
	}
	if h.CommitModified {
		rev += " (modified)"
	}
	fmt.Fprintf(tw, "%s\t%s\n", h.Tool, h.Time.Format(time.RFC3339))
	fmt.Fprintf(tw, "commit\t%s [%s]\n", rev, h.CommitSource)
	fmt.Fprintf(tw, "go\t%s %s/%s GOMAXPROCS=%d NumCPU=%d\n", h.GoVersion, h.GOOS, h.GOARCH, h.GOMAXPROCS, h.NumCPU)
	fmt.Fprintf(tw, "cpu\t%s\n", h.CPUModel)
	var cfg strings.Builder
	for i, k := range h.ConfigOrder {
		if i > 0 {
			cfg.WriteByte(' ')
		}
		fmt.Fprintf(&cfg, "%s=%v", k, h.Config[k])
	}
	fmt.Fprintf(tw, "config\t%s\n", cfg.String())
	if s := h.Server; s != nil {
		line := s.URL
		if s.PID > 0 {
			line += fmt.Sprintf(" pid %d", s.PID)
		}
		if len(s.Cmdline) > 0 {
			line += ": " + strings.Join(s.Cmdline, " ")
		}
		fmt.Fprintf(tw, "server\t%s\n", line)
		if s.Commit != "" {
			mod := ""
			if s.CommitModified {
				mod = " (modified)"
			}
			fmt.Fprintf(tw, "server build\t%s%s %s\n", s.Commit, mod, s.GoVersion)
		}
		if s.Error != "" {
			fmt.Fprintf(tw, "server info\t%s\n", s.Error)
		}
	}
	return tw.Flush()
}

// Report is the -json output: one object per run.
type Report struct {
	Header *Header `json:"header"`
	// Summary holds the scenario's key figures under stable names whose
	// suffix is the unit (_ns, _bytes, _per_sec; none for counts).
	Summary map[string]float64 `json:"summary"`
	// Result is the scenario's full result (CallsResult, IdleResult, …).
	Result Result `json:"result"`
	// Rows is the table the text output prints.
	Rows []Row `json:"rows"`
}

// NewReport puts a header and a result together.
func NewReport(h *Header, r Result) *Report {
	return &Report{Header: h, Summary: r.Summary(), Result: r, Rows: r.Rows()}
}

// WriteJSON writes rep as one indented JSON object and a newline.
func WriteJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("loadgen: encode report: %w", err)
	}
	return nil
}

// sumCounts adds the counts of a failure table.
func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
