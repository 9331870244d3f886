#!/usr/bin/env bash
# Regenerates docs/benchmarks.md from measurements, with nothing typed by
# hand: builds umplug, runs every `umplug bench` scenario with -json against
# a fresh `umplug serve` (its own temp data dir and port, the flags the doc
# names), runs the go test benchmarks with -count 10 and benchstat, and
# renders scripts/benchmarks.md.tmpl with scripts/benchdoc.
#
#   scripts/bench.sh                full size: about 18 minutes on 2 cores
#                                   (10,000 argon2 logins for idle: ~5 min;
#                                   the media buffer sweep, -count 10: ~5 min;
#                                   webrtc with 100 calls and the browser
#                                   glass-to-glass test: ~2 min; the
#                                   reconnect storm of 10,000 devices, 1,250
#                                   of them logging in with a password: ~1 min)
#   QUICK=1 scripts/bench.sh        small counts, -count 3: about 3 minutes;
#                                   writes $TMPDIR/umplug-bench-quick.md,
#                                   labelled QUICK (never docs/)
#   OUT=path scripts/bench.sh       write the document there instead
#   KEEP=1 scripts/bench.sh         keep the work dir (JSON reports, logs)
#   BASELINE=<commit> scripts/bench.sh
#                                   also build that commit (git worktree in
#                                   the work dir) and compare server CPU per
#                                   call setup, baseline vs this build, in the
#                                   same run (alternating servers; ~3 min more)
#
# The webrtc scenario runs in a loopback-only network namespace
# (unshare -n: needs root or unprivileged user namespaces). The
# glass-to-glass browser test (go test ./web/ -run TestGlassToGlass) needs
# chromium; without it the document says it was not measured.
#
# Run it on an otherwise idle machine: the server and the load generator
# share its cores, and every figure is a measurement of both. Needs go,
# benchstat (go install golang.org/x/perf/cmd/benchstat@latest) and about
# 10,000 open files (ulimit -n) for the idle scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

QUICK="${QUICK:-}"
if [ -n "$QUICK" ]; then
  OUT="${OUT:-${TMPDIR:-/tmp}/umplug-bench-quick.md}"
else
  OUT="${OUT:-docs/benchmarks.md}"
fi
BENCHSTAT="${BENCHSTAT:-$(command -v benchstat || echo "$(go env GOPATH)/bin/benchstat")}"
if [ ! -x "$BENCHSTAT" ]; then
  echo "bench.sh: benchstat not found: go install golang.org/x/perf/cmd/benchstat@latest" >&2
  exit 1
fi

# Sizes: full, or QUICK.
if [ -n "$QUICK" ]; then
  CALLS_DURATION=3s MEDIA_DURATION=3s
  IDLE_CONNS=200,400 IDLE_SETTLE=2s
  PRES_PEERS=100 PRES_CHANGES=20
  FLOOD=100 FLOOD_DURATION=5s
  MEDIA_PAIRS=10 MEDIA_PACED_PAIRS=5
  WEBRTC_PAIRS=5 WEBRTC_DURATION=3s
  RECONNECT_CONNS=400
  COUNT=3 BENCHTIME=200ms
else
  CALLS_DURATION=10s MEDIA_DURATION=10s
  IDLE_CONNS=5000,10000 IDLE_SETTLE=5s
  PRES_PEERS=1000 PRES_CHANGES=200
  FLOOD=1000 FLOOD_DURATION=10s
  MEDIA_PAIRS=50 MEDIA_PACED_PAIRS=20
  WEBRTC_PAIRS=100 WEBRTC_DURATION=10s
  RECONNECT_CONNS=10000
  COUNT=10 BENCHTIME=1s
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/umplug-bench.XXXXXX")"
SERVER_PID=
SERVER_BIN="$WORK/umplug"
BASELINE="${BASELINE:-}"
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  # A server the reconnect scenario restarted is not this shell's child.
  if [ -f "$WORK/reports/reconnect.pid" ]; then
    kill "$(cat "$WORK/reports/reconnect.pid")" 2>/dev/null || true
  fi
  if [ -d "$WORK/baseline-src" ]; then
    git worktree remove --force "$WORK/baseline-src" 2>/dev/null || true
  fi
  if [ -n "${KEEP:-}" ]; then
    echo "bench.sh: work dir kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
mkdir -p "$WORK/reports"
cut -d" " -f1-3 /proc/loadavg > "$WORK/reports/load.start" 2>/dev/null || true
START=$(date +%s)
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "bench.sh: building umplug into $WORK" >&2
go build -o "$WORK/umplug" ./cmd/umplug
if [ -n "$BASELINE" ]; then
  # The baseline's server only; the load generator is always this build.
  echo "bench.sh: building baseline $BASELINE into $WORK" >&2
  git worktree add --quiet --detach "$WORK/baseline-src" "$BASELINE"
  (cd "$WORK/baseline-src" && go build -o "$WORK/umplug-baseline" ./cmd/umplug)
  git -C "$WORK/baseline-src" log -1 --format='%h %s' >"$WORK/reports/baseline.commit"
  git log -1 --format='%h %s' >"$WORK/reports/current.commit"
fi

# start_server NAME [serve flags…]: a fresh server on a free loopback port;
# sets SERVER_PID, SERVER_URL and, with -debug-addr, DEBUG_URL.
start_server() {
  local name=$1
  shift
  local log="$WORK/reports/$name.server.log"
  "$SERVER_BIN" serve -addr 127.0.0.1:0 -data "$WORK/data-$name" "$@" 2>"$log" &
  SERVER_PID=$!
  SERVER_URL= DEBUG_URL=
  for _ in $(seq 100); do
    SERVER_URL=$(grep -o 'url=http://[0-9.:]*/' "$log" | head -1 | sed 's/^url=//; s,/$,,') || true
    if [ -n "$SERVER_URL" ] && curl -fsS "$SERVER_URL/healthz" >/dev/null 2>&1; then
      DEBUG_URL=$(grep -o 'msg="serving pprof" addr=[0-9.:]*' "$log" | head -1 | sed 's/.*addr=/http:\/\//') || true
      return
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "bench.sh: server $name exited:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "bench.sh: server $name not serving after 10 s:" >&2
  cat "$log" >&2
  exit 1
}

stop_server() {
  kill "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
}

# scenario NAME "SERVE FLAGS" BENCH FLAGS…: one scenario against its own
# server; the report goes to reports/NAME.json, the commands (as a reader
# would type them) to reports/NAME.cmd. A literal $DEBUG_URL in a bench flag
# becomes the server's pprof address (serve -debug-addr 127.0.0.1:0).
scenario() {
  local name=$1 serve_flags=$2
  shift 2
  echo "bench.sh: scenario $name" >&2
  # shellcheck disable=SC2086 # serve_flags is a list of flags
  start_server "$name" $serve_flags
  local args=() shown=() a
  for a in "$@"; do
    args+=("${a//\$DEBUG_URL/$DEBUG_URL}")
    shown+=("${a//\$DEBUG_URL/http://127.0.0.1:6060}")
  done
  {
    echo "umplug serve${serve_flags:+ ${serve_flags//127.0.0.1:0/127.0.0.1:6060}} &"
    echo "umplug bench ${shown[*]} -pid \$!"
  } >"$WORK/reports/$name.cmd"
  local t0
  t0=$(date +%s)
  "$WORK/umplug" bench -json -server "$SERVER_URL" -pid "$SERVER_PID" "${args[@]}" \
    >"$WORK/reports/$name.json" 2>"$WORK/reports/$name.progress"
  echo $(($(date +%s) - t0)) >"$WORK/reports/$name.seconds"
  stop_server
}

scenario calls-paced "" -scenario calls -pairs 20 -duration "$CALLS_DURATION"
scenario calls "-msg-rate -1" -scenario calls -pairs 20 -duration "$CALLS_DURATION" -unpaced
# idle: the server's debug endpoint lets the load generator force a GC
# and the return of freed memory to the OS before each memory reading
# (-gc-url), so that argon2 arenas left by the logins stay out of the slope.
scenario idle "-debug-addr 127.0.0.1:0" -scenario idle -conns "$IDLE_CONNS" -settle "$IDLE_SETTLE" -sources 50 -gc-url '$DEBUG_URL/debug/freeosmemory'
scenario presence "" -scenario presence -peers "$PRES_PEERS" -changes "$PRES_CHANGES" -sources 20
scenario login-flood "-msg-rate -1" -scenario login-flood -flood "$FLOOD" -pairs 20 -duration "$FLOOD_DURATION" -unpaced -sources 50
scenario media "-msg-rate -1" -scenario media -pairs "$MEDIA_PAIRS" -duration "$MEDIA_DURATION" -unpaced
scenario media-paced "" -scenario media -pairs "$MEDIA_PACED_PAIRS" -fps 30 -frame-bytes 10240 -duration "$MEDIA_DURATION"

# reconnect: RECONNECT_CONNS identified devices (a password login per 8
# devices, sessions for the rest), then the bench runs the restart command:
# SIGTERM, wait until the server has exited, start it again on the same
# data and port (in the background, output redirected) and print its pid,
# so that the storm's server CPU is read from /proc. The new server is not
# this shell's child: it is stopped by pid and waited for by polling.
reconnect_scenario() {
  echo "bench.sh: scenario reconnect" >&2
  start_server reconnect
  local old=$SERVER_PID addr=${SERVER_URL#http://}
  local data="$WORK/data-reconnect" pidfile="$WORK/reports/reconnect.pid"
  local restart="kill $old; while ps -o stat= -p $old | grep -qv Z; do sleep 0.05; done
'$SERVER_BIN' serve -addr $addr -data '$data' </dev/null >/dev/null 2>>'$WORK/reports/reconnect.server.log' &
echo \$! >'$pidfile'; echo \$!"
  # What a reader would type.
  {
    echo 'umplug serve -addr 127.0.0.1:8080 -data DIR & pid=$!'
    echo "umplug bench -scenario reconnect -conns $RECONNECT_CONNS -pid \$pid \\"
    echo '  -restart "kill $pid; while kill -0 $pid; do sleep 0.05; done'
    echo '    umplug serve -addr 127.0.0.1:8080 -data DIR </dev/null >/dev/null 2>&1 &'
    echo '    echo \$!"'
  } >"$WORK/reports/reconnect.cmd"
  local t0
  t0=$(date +%s)
  "$WORK/umplug" bench -json -server "$SERVER_URL" -pid "$SERVER_PID" \
    -scenario reconnect -conns "$RECONNECT_CONNS" -restart "$restart" \
    >"$WORK/reports/reconnect.json" 2>"$WORK/reports/reconnect.progress"
  echo $(($(date +%s) - t0)) >"$WORK/reports/reconnect.seconds"
  wait "$old" 2>/dev/null || true
  SERVER_PID=
  local pid
  pid=$(cat "$pidfile")
  kill "$pid"
  # Until it is gone or a zombie (its reaper is not this shell).
  while ps -o stat= -p "$pid" | grep -qv Z; do sleep 0.1; done
  rm -f "$pidfile"
}
reconnect_scenario

# webrtc: the scenario refuses to run unless loopback is the only interface
# up, so server and load generator run in a private network namespace (the
# binary is built; nothing inside needs the network). The inner shell gets
# the functions and variables it needs exported, and kills its server if
# the scenario fails.
export WORK SERVER_BIN SERVER_PID WEBRTC_PAIRS WEBRTC_DURATION
export -f scenario start_server stop_server
unshare -n bash -c 'set -euo pipefail
  trap '\''[ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true'\'' EXIT
  ip link set lo up
  scenario webrtc "" -scenario webrtc -pairs "$WEBRTC_PAIRS" -duration "$WEBRTC_DURATION"'
# What a reader would type (the scenario wrote the commands without the namespace):
cat >"$WORK/reports/webrtc.cmd" <<EOF
unshare -n sh -c 'ip link set lo up
  umplug serve & pid=\$!; sleep 1
  umplug bench -scenario webrtc -pairs $WEBRTC_PAIRS -duration $WEBRTC_DURATION -pid \$pid
  kill \$pid; wait'
EOF

# Glass-to-glass in the browser: the test logs its figures (median, p95,
# accept to first frame) and benchdoc reads them from g2g.txt. A failure is
# reported in the document, not fatal: the other figures stand.
echo "go test -count=1 -run TestGlassToGlass -v ./web/" >"$WORK/reports/g2g.cmd"
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then
  echo "bench.sh: go test -run TestGlassToGlass ./web/" >&2
  status=0
  go test -count=1 -run TestGlassToGlass -v ./web/ >"$WORK/reports/g2g.txt" 2>&1 || status=$?
  echo "$status" >"$WORK/reports/g2g.status"
else
  echo "chromium not found" >"$WORK/reports/g2g.skipped"
fi

# Baseline comparison: the calls scenario, paced and unpaced, alternately
# against the baseline's server and this build's (baseline, current,
# baseline, current), so that both see the same machine load. Only flags
# the baseline has (-msg-rate).
if [ -n "$BASELINE" ]; then
  for i in 1 2; do
    for side in baseline current; do
      if [ $side = baseline ]; then SERVER_BIN="$WORK/umplug-baseline"; else SERVER_BIN="$WORK/umplug"; fi
      scenario "cmp-paced-$side-$i" "" -scenario calls -pairs 20 -duration "$CALLS_DURATION"
      scenario "cmp-unpaced-$side-$i" "-msg-rate -1" -scenario calls -pairs 20 -duration "$CALLS_DURATION" -unpaced
    done
  done
  SERVER_BIN="$WORK/umplug"
fi

# gotest NAME PKG BENCH: go test benchmarks, COUNT runs each, raw output
# kept for benchstat; the command goes to NAME.cmd.
gotest() {
  local name=$1 pkg=$2 bench=$3
  echo "bench.sh: go test -bench '$bench' $pkg (-count $COUNT)" >&2
  echo "go test -run '^\$' -bench '$bench' -benchtime $BENCHTIME -count $COUNT $pkg > $name.txt" >"$WORK/reports/$name.cmd"
  go test -run '^$' -bench "$bench" -benchtime "$BENCHTIME" -count "$COUNT" "$pkg" >"$WORK/reports/$name.txt"
}
gotest media-buf ./internal/media/ 'Relay64KiB|RelayBufferSize|TCPPipe64KiB'
gotest media-small ./internal/media/ 'Relay1KiBFrames|RelayLatency'
gotest password ./internal/password/ 'HashOWASP'
(
  # From the reports dir, so that benchstat labels columns by file name.
  cd "$WORK/reports"
  "$BENCHSTAT" -filter '.name:RelayBufferSize' -col /impl media-buf.txt >media-buf-impl.benchstat
  "$BENCHSTAT" -filter '-.name:RelayBufferSize' media-buf.txt >media-buf-other.benchstat
  "$BENCHSTAT" media-small.txt >media-small.benchstat
  "$BENCHSTAT" password.txt >password.benchstat
  {
    echo "benchstat -filter '.name:RelayBufferSize' -col /impl media-buf.txt"
    echo "benchstat -filter '-.name:RelayBufferSize' media-buf.txt"
  } >>media-buf.cmd
  echo "benchstat media-small.txt" >>media-small.cmd
  echo "benchstat password.txt" >>password.cmd
)

echo $(($(date +%s) - START)) >"$WORK/reports/total.seconds"
cut -d" " -f1-3 /proc/loadavg > "$WORK/reports/load.end" 2>/dev/null || true
go run ./scripts/benchdoc -dir "$WORK/reports" -template scripts/benchmarks.md.tmpl \
  -out "$OUT" ${QUICK:+-quick}
echo "bench.sh: wrote $OUT in $(($(date +%s) - START)) s" >&2
