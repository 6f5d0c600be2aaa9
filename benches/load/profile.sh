#!/usr/bin/env bash
# Callgrind profile of sidecache's L1-hit path (perf has no hardware counters on this VM:
# `perf stat -e instructions true` says <not supported>).
#
#   benches/load/profile.sh [SECONDS]   (default 15; expects the release binaries, see run.sh)
#   PROFILE_PATH=/api/events/1/context benches/load/profile.sh    pass-through (never cached)
#   PROFILE_MISS=1 benches/load/profile.sh                         every request a stored miss
#   PROFILE_L2=1 PROFILE_MISS=1 benches/load/profile.sh            ... stored in L1 and a Redis
#                  L2 (redis-server on a free port; its per-command cost is printed too)
#   SIDECACHE_BIN=/path/to/sidecache benches/load/profile.sh       another build (old vs new)
#
# Starts the load origin and sidecache (release, debug line tables) under valgrind
# --tool=callgrind with instrumentation off, warms one contractor bundle, switches
# instrumentation on, drives 4 wrk connections at the hot URL for SECONDS, dumps, and prints
# the top inclusive and exclusive functions plus instructions per request.
# Output: benches/load/results/callgrind.out.<timestamp> (gitignored).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SECONDS_LOAD=${1:-15}
for cmd in valgrind callgrind_control callgrind_annotate wrk; do
  command -v "$cmd" >/dev/null || { echo "profile.sh: $cmd missing (apt-get install -y valgrind wrk)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/sidecache-profile.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 300); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.2; done; return 1; }

ORIGIN_PORT=$(port); PORT=$(port); ADMIN_PORT=$(port)
taskset -c 0 "$TARGET/release/examples/load_origin" --listen "127.0.0.1:$ORIGIN_PORT" --delay 0ms 2>/dev/null &
PIDS+=($!)
sed -e "s|@PORT@|$PORT|g" -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" \
  -e "s|@L1_MAX_BYTES@|256MiB|g" -e "s|@L1_MAX_OBJECT_BYTES@|8MiB|g" \
  "$HERE/sidecache.toml.tmpl" >"$WORK/sidecache.toml"
if [[ -n ${PROFILE_L2:-} ]]; then
  REDIS_PORT=$(port)
  taskset -c 0 redis-server --port "$REDIS_PORT" --save '' --appendonly no --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
  printf '\n[cache]\nkey_host = false\n\n[cache.l2]\nurl = "redis://127.0.0.1:%s"\nprefix = "bench:"\ntimeout = "50ms"\n' \
    "$REDIS_PORT" >>"$WORK/sidecache.toml"
fi
mkdir -p "$HERE/results"
OUT=$HERE/results/callgrind.out.$(date -u +%Y%m%dT%H%M%SZ)
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT" \
  "${SIDECACHE_BIN:-$TARGET/release/sidecache}" --config "$WORK/sidecache.toml" 2>"$WORK/valgrind.log" &
PIDS+=($!)
VG=$!
wait_http "http://127.0.0.1:$PORT/health"
# PROFILE_PATH picks another path, e.g. /api/events/1/context (pass-through, never cached).
URL=http://127.0.0.1:$PORT${PROFILE_PATH:-/api/contractors/hot/bundle}
for _ in 1 2 3; do curl -s -o /dev/null "$URL"; done
callgrind_control -i on "$VG" >/dev/null 2>&1
[[ -n ${PROFILE_L2:-} ]] && redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
# PROFILE_MISS: every request a new contractor id, so a stored miss (the warm-up above used
# the hot URL only).
UNIQUE=${PROFILE_MISS:+miss$$}
UNIQUE_IDS=$UNIQUE taskset -c 1 wrk -t1 -c4 -d"${SECONDS_LOAD}s" -s "$HERE/load.lua" "$URL" | tee "$WORK/wrk.out" | grep -E 'Requests/sec|WRKJSON'
callgrind_control -i off "$VG" >/dev/null 2>&1
callgrind_control -d "$VG" >/dev/null 2>&1
sleep 1
REQUESTS=$(sed -n 's/^WRKJSON {"requests":\([0-9]*\).*/\1/p' "$WORK/wrk.out")
DUMP=$(ls -S "$OUT"* | head -1) # the -d dump (the exit dump is empty: instrumentation is off)
TOTAL=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n {gsub(",","",$1); print $1; n=1}')
echo "requests: $REQUESTS, instructions: $TOTAL, per request: $((TOTAL / REQUESTS))"
if [[ -n ${PROFILE_L2:-} ]]; then
  echo "== redis: commands (calls, usec per call), CPU seconds, keys"
  redis-cli -p "$REDIS_PORT" info commandstats | grep -E '^cmdstat' | tr -d '\r'
  redis-cli -p "$REDIS_PORT" info cpu | grep -E 'used_cpu_(sys|user):' | tr -d '\r'
  redis-cli -p "$REDIS_PORT" dbsize
fi
echo "== inclusive (top 40)"
callgrind_annotate --inclusive=yes --threshold=100 "$DUMP" 2>/dev/null | sed -n '/^Ir/,$p' | head -45 || true
echo "== exclusive (top 30)"
callgrind_annotate --threshold=100 "$DUMP" 2>/dev/null | sed -n '/^Ir/,$p' | head -35 || true
echo "dump: $DUMP"
