#!/usr/bin/env bash
# Load harness: sidecache vs nginx proxy_cache vs Varnish, all in one run, on loopback.
#
#   ./dev bench-load [--quick] [--scenarios 1,2,...] [--rounds N] [--baseline BIN]
#                                                                   (builds release first)
#   benches/load/run.sh [same options]                             (expects the release binaries)
# --baseline BIN also runs BIN (another sidecache build, e.g. the previous commit's) as the
# system "sidecache-base" in scenarios 1, 2, 4 and 5, interleaved with the others, and as
# "sidecache-base-flood" (a fresh process) in scenario 7, so a change
# is measured as new vs old in one run ("×base" in the report).
# Full: 3 rounds of 8 s per system and scenario (~10 min); --quick: 1 round of 3 s (~1.5 min).
#
# Scenarios: 1 hot L1 hit (64 conns) | 2 mixed, 10,000 ids, zipf skew (64 conns) |
# 3 L2 hit (sidecache, L1 disabled, Redis on loopback) | 4 pass-through (uncached route, and the
# origin direct), and pass-through of an unmatched path in default origin mode (the backend
# sends no cache headers) | 5 1,000 and 10,000 connections on a hot URL | 6 stampede: 500
# simultaneous requests for one cold key against a 150 ms origin | 7 flood of 200,000 distinct
# keys (all misses, 64 conns) into a fresh sidecache with a 64 MiB L1: keys/s and peak RSS, and
# the same into one with Redis L2 too (every miss stored in both tiers; Redis's CPU counted) |
# 8 a stalled route: p99 of hot hits on 64 connections before and while 200 other connections
# wait on a 5 s origin | 9 10,000 connections on a fresh sidecache with a 64 MiB L1: peak RSS.
#
# Method. Every server (origin, sidecache, nginx, varnishd, redis) is pinned to CPU 0 and the
# load generator to CPU 1 with taskset; systems are interleaved per scenario (sidecache, nginx,
# varnish, then the next scenario) so machine drift hits all alike. On a shared box the absolute
# numbers move; the ratios against nginx measured in the same run are the figures to use, and
# CPU time per request (utime+stime of the server's processes from /proc/<pid>/stat, summed over
# the process tree, before/after, / requests) is the headline: it does not depend on how fast
# the client is. Peak RSS is VmHWM summed over the tree, reset before each run through
# /proc/<pid>/clear_refs (so: the peak during that scenario, caches filled so far included).
# Origin hits are counted by the origin itself (GET /test/count) for every system alike, so the
# hit ratio is 1 - origin requests / client requests.
#
# Origin: examples/load_origin.rs, the repo's stand-in backend (sidecache::demo::Backend) with
# --listen/--delay (0 ms; the stampede uses /test/respond?delay_ms=150). A Python stdlib origin
# would be the bottleneck in the pass-through comparison. The stampede client is
# examples/load_stampede.rs (wrk re-sends on each connection, so it cannot show what the first
# 500 saw).
#
# L2 scenario: [cache.l1] max_bytes = "0" disables L1, but validation then forces
# max_object_bytes = 0, so that instance can never store anything. A second sidecache instance
# with L1 ("writer") fills Redis; the measured instance (L1 off) only reads it. The CPU of that
# scenario includes redis-server.
#
# Installs nothing: wrk is required; missing nginx/varnishd/redis-server only drop their rows.
# Every process started here is stopped on exit. Results: a Markdown table on stdout and
# benches/load/results/<timestamp>.json. CI never runs this.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SIDECACHE=$TARGET/release/sidecache
ORIGIN=$TARGET/release/examples/load_origin
STAMPEDE=$TARGET/release/examples/load_stampede

QUICK=0
ROUNDS_ARG=
BASELINE=
SCENARIOS=1,2,3,4,5,6,7,8,9
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS_ARG=${2:?--rounds needs a number}; shift ;;
    --baseline) BASELINE=${2:?--baseline needs a sidecache binary}; shift ;;
    --scenarios) SCENARIOS=${2:?--scenarios needs a list, e.g. 1,2}; shift ;;
    --scenarios=*) SCENARIOS=${1#*=} ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
if [[ $QUICK -eq 1 ]]; then DURATION=3; ROUNDS=1; else DURATION=8; ROUNDS=3; fi
ROUNDS=${ROUNDS_ARG:-$ROUNDS}

log() { printf 'bench-load: %s\n' "$*" >&2; }

# --- prerequisites -----------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  log "wrk is required. Install it with: sudo apt-get install -y wrk"
  exit 1
fi
for bin in "$SIDECACHE" "$ORIGIN" "$STAMPEDE"; do
  if [[ ! -x $bin ]]; then
    log "missing $bin; build with: cargo build --release --bin sidecache --example load_origin --example load_stampede"
    exit 1
  fi
done
have() { command -v "$1" >/dev/null 2>&1; }
HAVE_NGINX=0; have nginx && HAVE_NGINX=1
HAVE_VARNISH=0; have varnishd && HAVE_VARNISH=1
HAVE_REDIS=0; have redis-server && HAVE_REDIS=1
[[ $HAVE_NGINX -eq 1 ]] || log "nginx not installed (apt-get install -y nginx): its rows say so"
[[ $HAVE_VARNISH -eq 1 ]] || log "varnishd not installed (apt-get install -y varnish): its rows say so"
[[ $HAVE_REDIS -eq 1 ]] || log "redis-server not installed (apt-get install -y redis-server): scenario 3 skipped"

if [[ $(nproc) -ge 2 ]]; then SERVER_CPU=0; CLIENT_CPU=1; else SERVER_CPU=0; CLIENT_CPU=0; fi
# Arrays, not functions: a backgrounded function is a subshell, and $! would not be the server.
ON_SERVER=(taskset -c "$SERVER_CPU")
ON_CLIENT=(taskset -c "$CLIENT_CPU")

# 10,000 client connections plus as many server-side sockets (sidecache has no LimitNOFILE here).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited || $NOFILE -ge 20000 ]] || log "ulimit -n is $NOFILE: 10,000 connections may fail"

WORK=$(mktemp -d /tmp/sidecache-load.XXXXXX)
RUNS=$WORK/runs.jsonl
: >"$RUNS"
declare -A PID=()   # system name -> pid of its top process

cleanup() {
  local name pid
  for name in "${!PID[@]}"; do
    pid=${PID[$name]}
    # sidecache: SIGINT is pingora's fast exit (SIGTERM waits for the grace period).
    if [[ $name == sidecache* ]]; then kill -INT "$pid" 2>/dev/null || true
    else kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for name in "${!PID[@]}"; do
    pid=${PID[$name]}
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # URL: until any HTTP answer, at most 15 s
  for _ in $(seq 150); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  log "no answer from $1"; return 1
}

fill() { # TEMPLATE OUT KEY=VALUE...
  local tmpl=$1 out=$2 expr=() kv
  shift 2
  for kv in "$@"; do expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${expr[@]}" "$tmpl" >"$out"
}

# --- process accounting ------------------------------------------------------------------------
tree() { # PID...: the pids and all their descendants
  local p
  for p in "$@"; do
    echo "$p"
    # shellcheck disable=SC2046
    tree $(ps -o pid= --ppid "$p" 2>/dev/null || true)
  done
}
cpu_ticks() { # PID...: utime+stime of the trees, clock ticks
  local total=0 p f
  for p in $(tree "$@"); do
    # Fields after the ")" of comm: utime and stime are fields 14 and 15 of the whole line.
    f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    read -r -a a <<<"$f"
    total=$((total + a[11] + a[12]))
  done
  echo "$total"
}
hwm_kb() { # PID...: sum of VmHWM over the trees
  local total=0 p v
  for p in $(tree "$@"); do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
reset_hwm() { # PID...: restart VmHWM at the current RSS, so the peak is this scenario's
  local p
  for p in $(tree "$@"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
}
HZ=$(getconf CLK_TCK)

origin_count() { # PATH_REGEX: origin requests on matching paths (excluding /test/count)
  curl -s "http://127.0.0.1:$ORIGIN_PORT/test/count" |
    python3 -c 'import json,re,sys; d=json.load(sys.stdin); print(sum(v for k,v in d["paths"].items() if re.match(sys.argv[1],k)))' "$1"
}

sidecache_outcomes() { # ADMIN_PORT ROUTE: JSON {outcome: count}
  curl -s "http://127.0.0.1:$1/metrics" | python3 -c '
import json, re, sys
out = {}
for line in sys.stdin:
    if line.startswith("sidecache_requests_total{") and "route=\"%s\"" % sys.argv[1] in line:
        cache = re.search(r"cache=\"([^\"]+)\"", line).group(1)
        out[cache] = out.get(cache, 0) + int(float(line.rsplit(" ", 1)[1]))
print(json.dumps(out))' "$2"
}

# --- starting the systems ----------------------------------------------------------------------
ORIGIN_PORT=$(free_port)
"${ON_SERVER[@]}" "$ORIGIN" --listen "127.0.0.1:$ORIGIN_PORT" --delay 0ms 2>"$WORK/origin.log" &
PID[origin]=$!
wait_http "http://127.0.0.1:$ORIGIN_PORT/test/count"
declare -A PORT=([origin]=$ORIGIN_PORT)
declare -A ADMIN=()

start_sidecache() { # NAME L1_MAX_BYTES L1_MAX_OBJECT_BYTES [REDIS_PORT]
  local name=$1 conf=$WORK/$1.toml bin=$SIDECACHE
  [[ $name == sidecache-base* ]] && bin=$BASELINE
  PORT[$name]=$(free_port); ADMIN[$name]=$(free_port)
  fill "$HERE/sidecache.toml.tmpl" "$conf" PORT="${PORT[$name]}" ADMIN_PORT="${ADMIN[$name]}" \
    ORIGIN_PORT="$ORIGIN_PORT" L1_MAX_BYTES="$2" L1_MAX_OBJECT_BYTES="$3"
  if [[ -n ${4:-} ]]; then
    # The writer and the reader share entries though clients address each by its own port.
    printf '\n[cache]\nkey_host = false\n\n[cache.l2]\nurl = "redis://127.0.0.1:%s"\nprefix = "bench:"\ntimeout = "50ms"\n' "$4" >>"$conf"
  fi
  RUST_LOG=warn "${ON_SERVER[@]}" "$bin" --config "$conf" 2>"$WORK/$name.log" &
  PID[$name]=$!
  wait_http "http://127.0.0.1:${PORT[$name]}/health"
}

start_sidecache sidecache 256MiB 8MiB
if [[ -n $BASELINE ]]; then
  [[ -x $BASELINE ]] || { log "--baseline $BASELINE is not an executable"; exit 1; }
  start_sidecache sidecache-base 256MiB 8MiB
fi

# Fresh processes for the memory scenarios: their peak RSS is theirs alone, from start.
run_in() { [[ ,$SCENARIOS, == *,$1,* ]]; }
if run_in 7; then
  start_sidecache sidecache-flood 64MiB 8MiB
  [[ -n $BASELINE ]] && start_sidecache sidecache-base-flood 64MiB 8MiB
fi
if run_in 9; then start_sidecache sidecache-fresh 64MiB 8MiB; fi

if [[ $HAVE_NGINX -eq 1 ]]; then
  mkdir -p "$WORK/nginx"
  PORT[nginx]=$(free_port)
  USER_LINE=""; [[ $(id -u) -eq 0 ]] && USER_LINE="user root;"
  fill "$HERE/nginx.conf.tmpl" "$WORK/nginx/nginx.conf" WORK="$WORK" PORT="${PORT[nginx]}" \
    ORIGIN_PORT="$ORIGIN_PORT" USER_LINE="$USER_LINE"
  "${ON_SERVER[@]}" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
  PID[nginx]=$!
  wait_http "http://127.0.0.1:${PORT[nginx]}/test/count"
fi

if [[ $HAVE_VARNISH -eq 1 ]]; then
  mkdir -p "$WORK/varnish"
  PORT[varnish]=$(free_port)
  fill "$HERE/varnish.vcl.tmpl" "$WORK/varnish/default.vcl" ORIGIN_PORT="$ORIGIN_PORT"
  JAIL=(); [[ $(id -u) -eq 0 ]] && JAIL=(-j none)
  "${ON_SERVER[@]}" varnishd -F "${JAIL[@]}" -n "$WORK/varnish/state" -a "127.0.0.1:${PORT[varnish]}" \
    -f "$WORK/varnish/default.vcl" -s malloc,256m -p thread_pool_max=10000 \
    >"$WORK/varnish/log" 2>&1 &
  PID[varnish]=$!
  wait_http "http://127.0.0.1:${PORT[varnish]}/test/count"
fi

if [[ $HAVE_REDIS -eq 1 ]] && { run_in 3 || run_in 7; }; then
  REDIS_PORT=$(free_port)
  while [[ $REDIS_PORT -eq 6379 ]]; do REDIS_PORT=$(free_port); done
  "${ON_SERVER[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    >"$WORK/redis.log" 2>&1 &
  PID[redis]=$!
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  if run_in 3; then
    # Measured: L1 off, L2 on. Writer: L1 + L2, only fills Redis.
    start_sidecache sidecache-l2 0 0 "$REDIS_PORT"
    start_sidecache sidecache-l2w 64MiB 8MiB "$REDIS_PORT"
  fi
  # The flood with L2: every miss stored in both tiers; its CPU includes redis-server's.
  if run_in 7; then start_sidecache sidecache-flood-l2 64MiB 8MiB "$REDIS_PORT"; fi
fi

# --- one measured run --------------------------------------------------------------------------
installed() {
  case "$1" in
    nginx) [[ $HAVE_NGINX -eq 1 ]] ;;
    varnish) [[ $HAVE_VARNISH -eq 1 ]] ;;
    *) return 0 ;;
  esac
}

pids_of() { # SYSTEM: the processes whose CPU counts for it
  case "$1" in
    sidecache-l2 | sidecache-flood-l2) echo "${PID[$1]} ${PID[redis]}" ;;
    *) echo "${PID[$1]}" ;;
  esac
}

record() { # JSON object fields (already formatted), appended as one line
  echo "{$1}" >>"$RUNS"
}

not_installed() { # SCENARIO SYSTEM
  record "\"scenario\":\"$1\",\"system\":\"$2\",\"status\":\"not installed\""
}

# wrk_run SCENARIO SYSTEM CONNS THREADS PATH ORIGIN_PATH_REGEX [ENV=VALUE...]
wrk_run() {
  local scenario=$1 system=$2 conns=$3 threads=$4 path=$5 origin_re=$6
  shift 6
  if ! installed "$system"; then not_installed "$scenario" "$system"; return; fi
  local pids url=http://127.0.0.1:${PORT[$system]}$path
  read -r -a pids <<<"$(pids_of "$system")"
  local o0 c0 c1 o1 s0='{}' s1='{}' out json
  [[ $system == sidecache* ]] && s0=$(sidecache_outcomes "${ADMIN[$system]}" contractor_bundle)
  o0=$(origin_count "$origin_re")
  reset_hwm "${pids[@]}"
  c0=$(cpu_ticks "${pids[@]}")
  out=$(env "$@" "${ON_CLIENT[@]}" wrk -t"$threads" -c"$conns" -d"${DURATION}s" \
    --timeout 10s --latency -s "$HERE/load.lua" "$url" 2>&1) || true
  c1=$(cpu_ticks "${pids[@]}")
  o1=$(origin_count "$origin_re")
  [[ $system == sidecache* ]] && s1=$(sidecache_outcomes "${ADMIN[$system]}" contractor_bundle)
  json=$(grep '^WRKJSON ' <<<"$out" | sed 's/^WRKJSON //') || true
  if [[ -z $json ]]; then
    log "wrk failed for $scenario/$system: $(tail -3 <<<"$out")"
    json='{"requests":0,"errors":-1}'
  fi
  record "\"scenario\":\"$scenario\",\"system\":\"$system\",\"status\":\"ok\",\"round\":${round:-1},\"conns\":$conns,\"wrk\":$json,\"cpu_s\":$(python3 -c "print(($c1-$c0)/$HZ)"),\"rss_kb\":$(hwm_kb "${pids[@]}"),\"origin_requests\":$((o1 - o0)),\"outcomes_before\":$s0,\"outcomes_after\":$s1"
  log "$scenario $system: $(grep -E 'Requests/sec' <<<"$out" | tr -s ' ')"
}

# With a baseline, the two sidecache builds swap places every round: the first system of a
# round measured a few percent slower than an identical second one.
systems() {
  if [[ -n $BASELINE && $(( ${round:-1} % 2 )) -eq 0 ]]; then
    echo sidecache-base sidecache nginx varnish
  else
    echo sidecache ${BASELINE:+sidecache-base} nginx varnish
  fi
}

# --- scenarios ---------------------------------------------------------------------------------
# Each scenario runs ROUNDS times, systems interleaved inside every round; the report takes the
# median of each figure over the rounds.
HOT=/api/contractors/hot/bundle
BUNDLE_RE='^/api/contractors/'

warm() { installed "$1" && curl -s -o /dev/null "http://127.0.0.1:${PORT[$1]}$2" || true; }

if run_in 1; then
  for round in $(seq "$ROUNDS"); do
    for s in $(systems); do
      warm "$s" "$HOT"
      wrk_run 1-hot-hit "$s" 64 1 "$HOT" "$BUNDLE_RE"
    done
    # The floor of a dedicated L1 fast path: sidecache answering /health from request_filter
    # (no cache machinery, tiny body). nginx is the peer for the ratio.
    wrk_run 1-floor-health sidecache 64 1 /health '^$'
  done
fi

if run_in 2; then
  for round in $(seq "$ROUNDS"); do
    for s in $(systems); do
      # A fresh id range per round: every system starts each round with a cold cache.
      wrk_run 2-mixed-zipf "$s" 64 1 / "$BUNDLE_RE" ZIPF_N=10000 ZIPF_S=1.0 \
        ZIPF_OFFSET=$((round * 100000))
    done
  done
fi

if run_in 3; then
  if [[ $HAVE_REDIS -eq 1 ]]; then
    L2HOT=/api/contractors/l2hot/bundle
    curl -s -o /dev/null "http://127.0.0.1:${PORT[sidecache-l2w]}$L2HOT"
    for _ in $(seq 50); do [[ $(redis-cli -p "$REDIS_PORT" dbsize) -gt 0 ]] && break; sleep 0.1; done
    tier=$(curl -s -o /dev/null -D - "http://127.0.0.1:${PORT[sidecache-l2]}$L2HOT" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache" {print $2}')
    [[ $tier == HIT-L2 ]] || log "L2 warm-up answered X-Cache '$tier', expected HIT-L2"
    warm nginx "$L2HOT"
    for round in $(seq "$ROUNDS"); do
      # 64 connections saturate the one server CPU (p99 is then queueing); 4 connections
      # show the latency of one L2 hit. The same-run peer: nginx's (only) cache tier.
      for c in 64 4; do
        wrk_run "3-l2-hit-c$c" sidecache-l2 "$c" 1 "$L2HOT" "$BUNDLE_RE"
        wrk_run "3-l2-hit-c$c" nginx "$c" 1 "$L2HOT" "$BUNDLE_RE"
      done
    done
  else
    record '"scenario":"3-l2-hit-c64","system":"sidecache-l2","status":"redis-server not installed"'
  fi
fi

if run_in 4; then
  for round in $(seq "$ROUNDS"); do
    for s in $(systems) origin; do
      wrk_run 4-pass-through "$s" 64 1 /api/events/1/context '^/api/events/'
      # No route matches /test/echo: default origin mode, and the answer has no cache headers.
      wrk_run 4-pass-origin-mode "$s" 64 1 /test/echo '^/test/echo$'
    done
  done
fi

if run_in 5; then
  for c in 1000 10000; do
    for round in $(seq "$ROUNDS"); do
      for s in $(systems); do
        warm "$s" "$HOT"
        wrk_run "5-conns-$c" "$s" "$c" 2 "$HOT" "$BUNDLE_RE"
      done
    done
  done
fi

if run_in 6; then
  for round in $(seq "$ROUNDS"); do
    for s in $(systems); do
      if ! installed "$s"; then not_installed 6-stampede "$s"; continue; fi
      path="/test/respond?delay_ms=150&v=$s-$round-$RANDOM$RANDOM"
      read -r -a pids <<<"$(pids_of "$s")"
      o0=$(origin_count '^/test/respond$'); reset_hwm "${pids[@]}"; c0=$(cpu_ticks "${pids[@]}")
      out=$("${ON_CLIENT[@]}" "$STAMPEDE" --addr "127.0.0.1:${PORT[$s]}" --path "$path" -n 500)
      c1=$(cpu_ticks "${pids[@]}"); o1=$(origin_count '^/test/respond$')
      record "\"scenario\":\"6-stampede\",\"system\":\"$s\",\"status\":\"ok\",\"round\":$round,\"conns\":500,\"stampede\":$out,\"cpu_s\":$(python3 -c "print(($c1-$c0)/$HZ)"),\"rss_kb\":$(hwm_kb "${pids[@]}"),\"origin_requests\":$((o1 - o0)),\"origin_delay_ms\":150"
      log "6-stampede $s: $out, origin requests $((o1 - o0))"
    done
  done
fi

if run_in 7; then
  # 200,000 keys once per system (3 rounds would take minutes each); --quick: 20,000.
  FLOOD_KEYS=200000; [[ $QUICK -eq 1 ]] && FLOOD_KEYS=20000
  saved=$DURATION; DURATION=300
  flood_l2=; [[ -n ${PID[sidecache-flood-l2]:-} ]] && flood_l2=sidecache-flood-l2
  for s in sidecache-flood ${BASELINE:+sidecache-base-flood} $flood_l2 nginx; do
    round=1 wrk_run 7-flood "$s" 64 1 / "$BUNDLE_RE" UNIQUE_IDS="flood-$s-$RANDOM" \
      UNIQUE_LIMIT=$FLOOD_KEYS
  done
  DURATION=$saved
fi

if run_in 8; then
  for round in $(seq "$ROUNDS"); do
    for s in sidecache nginx; do
      installed "$s" || { not_installed 8-stall-before "$s"; continue; }
      warm "$s" "$HOT"
      wrk_run 8-stall-before "$s" 64 1 "$HOT" "$BUNDLE_RE"
      # 200 connections on a 5 s origin answer (unmatched path: default origin mode), held
      # for the whole measured run; then the same hot-hit run again.
      "${ON_CLIENT[@]}" wrk -t1 -c200 -d"$((DURATION + 6))s" --timeout 10s \
        "http://127.0.0.1:${PORT[$s]}/test/slow?ms=5000" >/dev/null 2>&1 &
      staller=$!
      sleep 1
      wrk_run 8-stall-during "$s" 64 1 "$HOT" "$BUNDLE_RE"
      kill "$staller" 2>/dev/null || true; wait "$staller" 2>/dev/null || true
      sleep 5   # the stalled origin requests finish before the next system
    done
  done
fi

if run_in 9; then
  for round in $(seq "$ROUNDS"); do
    for s in sidecache-fresh nginx; do
      warm "$s" "$HOT"
      wrk_run 9-rss-10000 "$s" 10000 2 "$HOT" "$BUNDLE_RE"
    done
  done
fi

# --- report ------------------------------------------------------------------------------------
mkdir -p "$HERE/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
# the raw runs are kept beside the results when the report fails, so a run is never lost
python3 "$HERE/report.py" "$RUNS" "$HERE/results/$STAMP.json" \
  --meta "duration_s=$DURATION" "rounds=$ROUNDS" "quick=$QUICK" "scenarios=$SCENARIOS" \
  "server_cpu=$SERVER_CPU" "client_cpu=$CLIENT_CPU" "nproc=$(nproc)" \
  "cpu_model=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/,"",$2); print $2; exit}')" \
  "kernel=$(uname -r)" "sidecache_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" || {
  cp "$RUNS" "$HERE/results/$STAMP.runs.jsonl"
  log "report failed; the raw runs are in $HERE/results/$STAMP.runs.jsonl"
  exit 1
}
log "results: $HERE/results/$STAMP.json"

