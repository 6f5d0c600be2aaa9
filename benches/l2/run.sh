#!/usr/bin/env bash
# L2-hit latency, standalone Redis vs a 3-master Redis Cluster, measured the same way:
# a sidecache with L1 off (every request is an L2 read) in front of the load origin, the
# same 8 contractor bundles filled once, then `sidecache bench` (sequential requests, so
# the figure is one request's latency, not a queue's) on each of them.
#
#   benches/l2/run.sh [ITERATIONS]      (default 2000 per URL; needs redis-server, redis-cli)
#   NO_BUILD=1 benches/l2/run.sh        (use target/release as it is)
#
# Builds release sidecache and the load origin; everything runs on loopback on free ports
# and is torn down on exit. Prints one line per mode: p50 / p95 / p99 (ms) and the X-Cache mix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

iterations="${1:-2000}"
[[ -n "${NO_BUILD:-}" ]] || cargo build --release --bin sidecache --example load_origin >/dev/null
bin=target/release/sidecache
origin_bin=target/release/examples/load_origin
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { # a port p with p and p+10000 (cluster bus) free
  python3 - <<'PY'
import random, socket
while True:
    p = random.randint(20000, 40000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass
PY
}

wait_port() { for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

redis() { # redis PORT [args...]: start a throw-away redis-server
  local port=$1; shift
  mkdir -p "$work/r$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/r$port" "$@" >/dev/null &
  pids+=($!)
  wait_port "$port"
}

origin_port=$(free_port)
"$origin_bin" --listen "127.0.0.1:$origin_port" --delay 0ms >/dev/null 2>&1 &
pids+=($!)
wait_port "$origin_port"

measure() { # measure NAME L2_TOML
  local name=$1 l2=$2 listen admin
  listen=$(free_port); admin=$(free_port)
  cat >"$work/$name.toml" <<TOML
[server]
listen = "127.0.0.1:$listen"
admin_listen = "127.0.0.1:$admin"
threads = 2
[proxy]
default_upstream = "backend"
[[upstreams]]
name = "backend"
address = "127.0.0.1:$origin_port"
[[routes]]
name = "contractor_bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "10m"
[cache]
key_host = false
[cache.l1]
max_bytes = 0
[cache.l2]
$l2
timeout = "50ms"
TOML
  "$bin" --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
  local sc=$!
  pids+=($sc)
  wait_port "$listen"
  local args=()
  for id in 1 2 3 4 5 6 7 8; do
    local url="http://127.0.0.1:$listen/api/contractors/$id/bundle"
    curl -fsS -o /dev/null "$url"
    args+=(--url "$url")
  done
  sleep 1 # the L2 writes are in the background
  "$bin" bench "${args[@]}" --iterations "$iterations" --concurrency 1 --json >"$work/$name.json" || true
  python3 - "$name" "$work/$name.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
p = {k: sorted(u["latency_ms"][k] for u in r["urls"]) for k in ("p50", "p95", "p99")}
mix = {}
for u in r["urls"]:
    for k, v in u["x_cache"].items():
        mix[k] = mix.get(k, 0) + v
med = lambda xs: xs[len(xs) // 2]
print(f"{name:<10} L2 hit p50 {med(p['p50']):.3f} ms  p95 {med(p['p95']):.3f} ms  "
      f"p99 {med(p['p99']):.3f} ms  (median over 8 urls)  x-cache {mix}")
PY
  kill "$sc"; wait "$sc" 2>/dev/null || true
}

# standalone
rp=$(free_port); redis "$rp"
measure standalone "url = \"redis://127.0.0.1:$rp\""

# cluster
nodes=()
for _ in 1 2 3; do
  p=$(free_port)
  redis "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
  nodes+=("$p")
done
redis-cli --cluster create "${nodes[@]/#/127.0.0.1:}" --cluster-yes >/dev/null
for _ in $(seq 100); do
  redis-cli -p "${nodes[0]}" cluster info | grep -q cluster_state:ok && break
  sleep 0.1
done
measure cluster "mode = \"cluster\"
nodes = [\"redis://127.0.0.1:${nodes[0]}\", \"redis://127.0.0.1:${nodes[1]}\", \"redis://127.0.0.1:${nodes[2]}\"]"
