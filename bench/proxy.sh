#!/usr/bin/env bash
# The gateway against a plain reverse proxy, in one run, interleaved:
#   direct   wrk -> mock-upstream
#   nginx    wrk -> nginx (1 worker, keep-alive upstream) -> mock-upstream
#   nginx_id nginx adding fixed headers of the size swarmgate adds (the
#            identity headers, the assertion, X-Forwarded-*), which the
#            upstream echoes back: how much of the gap is those bytes
#   hyper    wrk -> bench/src/bin/hyper_proxy (hyper on one single-threaded
#            runtime per thread and swarmgate's per-thread upstream pool, as
#            swarmgate serves, checking nothing: the floor of its stack)
#   sg_key   wrk -> swarmgate (API key, permission check) -> mock-upstream
#   sg_jwt   wrk -> swarmgate (JWT, permission check) -> mock-upstream
#   sg_lim   sg_key with a key that has limits (rpm, max_concurrent) never
#            reached: the quota step's own cost (in-process state)
# each at concurrency 32 (throughput, p50, p99) and 1 (p50, p99 latency).
#
#   bash bench/proxy.sh          # DURATION=5 ROUNDS=2 to change
#
# swarmgate and hyper_proxy answer on SG_THREADS threads (default: one per
# core, swarmgate's own default).
#
# SG_BASELINE_BIN=PATH adds old_key and old_jwt: another swarmgate binary
# (an earlier build, say) on the same route, measured in the same rounds,
# so a change's cost per request is read against its own baseline.
#
# Installs wrk and nginx from Debian's packages when missing; builds the
# release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-2}"
need_packages wrk nginx
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

cargo build --release -p swarmgate -p swarmgate-bench --bin swarmgate --bin hyper_proxy
BIN="$PWD/target/release/swarmgate"
THREADS="${SG_THREADS:-$(nproc)}"
WORK="$(mktemp -d)"
MOCK_PORT="$(free_port)"; NGINX_PORT="$(free_port)"; NGINX_ID_PORT="$(free_port)"; SG_PORT="$(free_port)"; HYPER_PORT="$(free_port)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" >/dev/null 2>&1 &
PIDS+=($!)
MOCK_PID=$!

cat >"$WORK/swarmgate.toml" <<CONF
[[routes]]
name = "orchestrator"
path_prefix = "/tasks"
upstreams = ["http://127.0.0.1:$MOCK_PORT"]
permissions = { GET = "tasks.read" }
CONF
PASSWORD='Adm1n!Proxy-Bench-9'
start_swarmgate "$WORK" "$SG_PORT" "$PASSWORD" SWARMGATE_CONFIG="$WORK/swarmgate.toml" \
  SWARMGATE_SERVER__WORKER_THREADS="$THREADS"
PIDS+=("$SG_PID")
"$PWD/target/release/hyper_proxy" "127.0.0.1:$HYPER_PORT" "127.0.0.1:$MOCK_PORT" "$THREADS" &
PIDS+=($!)
HYPER_PID=$!
SG="http://127.0.0.1:$SG_PORT"
wait_up "http://127.0.0.1:$MOCK_PORT/tasks" "http://127.0.0.1:$HYPER_PORT/tasks" "$SG/health"
TOKEN="$(admin_token "$SG" "$PASSWORD")"
KEY="$(api_key "$SG" "$TOKEN" '{"name":"bench","permissions":["tasks.read"]}')"
TARGETS=(direct nginx nginx_id hyper sg_key sg_jwt sg_lim)
if [ -n "${SG_BASELINE_BIN:-}" ]; then
  OLD_PORT="$(free_port)"; mkdir -p "$WORK/old"
  NEW_BIN="$BIN"; NEW_PID="$SG_PID"; BIN="$SG_BASELINE_BIN"
  start_swarmgate "$WORK/old" "$OLD_PORT" "$PASSWORD" SWARMGATE_CONFIG="$WORK/swarmgate.toml" \
    SWARMGATE_SERVER__WORKER_THREADS="$THREADS"
  BIN="$NEW_BIN"; OLD_PID="$SG_PID"; SG_PID="$NEW_PID"
  PIDS+=("$OLD_PID")
  OLD="http://127.0.0.1:$OLD_PORT"
  wait_up "$OLD/health"
  OLD_TOKEN="$(admin_token "$OLD" "$PASSWORD")"
  OLD_KEY="$(api_key "$OLD" "$OLD_TOKEN" '{"name":"bench","permissions":["tasks.read"]}')"
  TARGETS+=(old_key old_jwt)
fi
LIMITED="$(api_key "$SG" "$TOKEN" \
  '{"name":"bench-limited","permissions":["tasks.read"],"limits":{"rpm":1000000000,"max_concurrent":100000}}')"

# What swarmgate sends upstream, as the echo shows it.
IDENTITY_HEADERS="$(curl -fs "$SG/tasks/1" -H "X-API-Key: $KEY" | python3 -c '
import json, sys
headers = json.load(sys.stdin)["headers"]
for name, value in sorted(headers.items()):
    if name.startswith(("x-swarm-", "x-forwarded-")):
        print(f"      proxy_set_header {name} \"{value}\";")
')"
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  # The same, adding what swarmgate adds upstream (identity headers, the
  # assertion, X-Forwarded-*), as fixed values of the same size.
  server {
    listen 127.0.0.1:$NGINX_ID_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
$IDENTITY_HEADERS
    }
  }
}
CONF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
wait_up "http://127.0.0.1:$NGINX_PORT/tasks" "http://127.0.0.1:$NGINX_ID_PORT/tasks"

RESULTS="$WORK/results"
# CPU time (user + system, in clock ticks) a process has used so far: read
# around each run to give the CPU each request cost the proxy and the
# upstream. On a machine that wrk, the upstream and the proxy share, that
# sum is what throughput comes down to.
NGINX_WORKER="$(awk -v master="$(cat "$WORK/nginx.pid")" '$4 == master {print $1; exit}' /proc/[0-9]*/stat 2>/dev/null || true)"
[ -n "$NGINX_WORKER" ] || { echo "nginx's worker process was not found" >&2; exit 1; }
declare -A PROXY_PID=([direct]="" [nginx]="$NGINX_WORKER" [nginx_id]="$NGINX_WORKER" [hyper]="$HYPER_PID"
  [sg_key]="$SG_PID" [sg_jwt]="$SG_PID" [sg_lim]="$SG_PID" [old_key]="${OLD_PID:-}" [old_jwt]="${OLD_PID:-}")
measure() { # name connections url [header]
  local name="$1" c="$2" url="$3"; shift 3
  local proxy_before mock_before proxy_after mock_after
  proxy_before="$(proc_ticks "${PROXY_PID[$name]}")"; mock_before="$(proc_ticks "$MOCK_PID")"
  run_wrk "$name" "$c" "$@" "$url"
  proxy_after="$(proc_ticks "${PROXY_PID[$name]}")"; mock_after="$(proc_ticks "$MOCK_PID")"
  echo "$name $c $WRK_ROW" \
    "$(( (proxy_after - proxy_before) * TICK_US * 100 / WRK_REQUESTS ))" \
    "$(( (mock_after - mock_before) * TICK_US * 100 / WRK_REQUESTS ))" >>"$RESULTS"
}
echo "machine: $(nproc) cores; wrk ${DURATION}s per cell, $ROUNDS rounds interleaved; everything shares the cores; swarmgate and hyper_proxy: $THREADS worker threads, nginx: 1 worker" >&2
for round in $(seq "$ROUNDS"); do
  for c in 32 1; do
    measure direct "$c" "http://127.0.0.1:$MOCK_PORT/tasks/1"
    measure nginx "$c" "http://127.0.0.1:$NGINX_PORT/tasks/1"
    measure nginx_id "$c" "http://127.0.0.1:$NGINX_ID_PORT/tasks/1"
    measure hyper "$c" "http://127.0.0.1:$HYPER_PORT/tasks/1"
    measure sg_key "$c" "$SG/tasks/1" -H "X-API-Key: $KEY"
    measure sg_jwt "$c" "$SG/tasks/1" -H "Authorization: Bearer $TOKEN"
    measure sg_lim "$c" "$SG/tasks/1" -H "X-API-Key: $LIMITED"
    if [ -n "${OLD:-}" ]; then
      measure old_key "$c" "$OLD/tasks/1" -H "X-API-Key: $OLD_KEY"
      measure old_jwt "$c" "$OLD/tasks/1" -H "Authorization: Bearer $OLD_TOKEN"
    fi
  done
  echo "round $round done" >&2
done

PYTHONPATH=bench python3 - "$RESULTS" "${TARGETS[@]}" <<'PY'
import sys
from results import load, median
rows = load(sys.argv[1], 2)
targets = sys.argv[2:]
def med(name, c, i):
    return median(rows, (name, c), i)
print(f"{'target':<8}{'req/s c=32':>12}{'p50 c=32':>10}{'p99 c=32':>10}{'p50 c=1':>10}{'p99 c=1':>10}{'vs nginx':>10}{'vs hyper':>10}{'added p50 c=1':>15}{'CPU/req proxy':>15}{'upstream':>10}")
for name in targets:
    rps = med(name, 32, 0)
    print(f"{name:<8}{rps:>12.0f}{med(name,32,1):>9.2f}m{med(name,32,2):>9.2f}m"
          f"{med(name,1,1):>9.3f}m{med(name,1,2):>9.3f}m{rps/med('nginx',32,0):>10.0%}"
          f"{rps/med('hyper',32,0):>10.0%}{med(name,1,1)-med('direct',1,1):>14.3f}m"
          f"{'-' if name == 'direct' else format(med(name,32,3), '.1f') + 'us':>15}{med(name,32,4):>8.1f}us")
print("(m = milliseconds; medians over rounds; 'added' is p50 at c=1 minus direct's;")
print(" CPU/req: user + system CPU time per request at c=32, of the proxy and of the upstream behind it)")
PY
