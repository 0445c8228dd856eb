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
# and the LLM path: the same 1 KiB chat completion body (max_tokens 64) to
# mock-upstream's /v1/chat/completions, plain and streamed (a chunk per
# word, unpaced), through
#   direct_chat, direct_stream  no proxy
#   nginx_chat, nginx_stream    nginx forwarding it as it is
#   hyper_chat, hyper_stream    the bare hyper proxy
#   sg_chat, sg_stream          swarmgate with an API key that has a token
#                               budget and an rpm (never reached): the model
#                               permission, the reservation and its
#                               settlement, the usage read and recorded
#   sg_chat_jwt                 the same with a JWT and no limits
# each at concurrency 32 (throughput, p50, p99) and 1 (p50, p99 latency).
# 'vs nginx' and 'vs hyper' compare each row with nginx and hyper on the
# same request (the GET, the chat or the stream).
#
#   bash bench/proxy.sh          # DURATION=5 ROUNDS=2 to change
#   ONLY='chat|stream' bash bench/proxy.sh   # only the targets matching a regex
#                                 # (ratios to rows left out print as -)
#
# swarmgate and hyper_proxy answer on SG_THREADS threads (default: one per
# core, swarmgate's own default).
#
# SG_BASELINE_BIN=PATH adds old_key, old_jwt, old_chat and old_stream: another swarmgate binary
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
  [ -f "$WORK/nginx/nginx.pid" ] && kill "$(cat "$WORK/nginx/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" --chunk-interval-ms 0 >/dev/null 2>&1 &
PIDS+=($!)
MOCK_PID=$!

gateway_config "$WORK/swarmgate.toml" "$MOCK_PORT"
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
# The chat rows' key: an rpm and a token budget, never reached.
CHAT_KEY_BODY='{"name":"bench-chat","permissions":["models.*"],"limits":{"rpm":1000000000,"tokens_per_day":1000000000000}}'
CHAT_PATH=/v1/chat/completions
TARGETS=(direct nginx nginx_id hyper sg_key sg_jwt sg_lim
  direct_chat nginx_chat hyper_chat sg_chat sg_chat_jwt direct_stream nginx_stream hyper_stream sg_stream)
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
  OLD_CHAT_KEY="$(api_key "$OLD" "$OLD_TOKEN" "$CHAT_KEY_BODY")"
  TARGETS+=(old_key old_jwt old_chat old_stream)
fi
CHAT_KEY="$(api_key "$SG" "$TOKEN" "$CHAT_KEY_BODY")"
PYTHONPATH=bench python3 - "$WORK" <<'PY'
import json, sys
from chat_body import chat_body
for kind in ("chat", "stream"):
    body = chat_body(stream=kind == "stream")
    with open(f"{sys.argv[1]}/{kind}.lua", "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n')
PY
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
# nginx_id: the same, adding what swarmgate adds upstream (identity
# headers, the assertion, X-Forwarded-*), as fixed values of the same size.
nginx_conf "$WORK/nginx" "$MOCK_PORT" "" "$NGINX_PORT" "$NGINX_ID_PORT $IDENTITY_HEADERS"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
wait_up "http://127.0.0.1:$NGINX_PORT/tasks" "http://127.0.0.1:$NGINX_ID_PORT/tasks"

RESULTS="$WORK/results"
# CPU time (user + system, in clock ticks) a process has used so far: read
# around each run to give the CPU each request cost the proxy and the
# upstream. On a machine that wrk, the upstream and the proxy share, that
# sum is what throughput comes down to.
NGINX_WORKER="$(awk -v master="$(cat "$WORK/nginx/nginx.pid")" '$4 == master {print $1; exit}' /proc/[0-9]*/stat 2>/dev/null || true)"
[ -n "$NGINX_WORKER" ] || { echo "nginx's worker process was not found" >&2; exit 1; }
declare -A PROXY_PID=([direct]="" [nginx]="$NGINX_WORKER" [nginx_id]="$NGINX_WORKER" [hyper]="$HYPER_PID"
  [sg_key]="$SG_PID" [sg_jwt]="$SG_PID" [sg_lim]="$SG_PID" [old_key]="${OLD_PID:-}" [old_jwt]="${OLD_PID:-}"
  [direct_chat]="" [nginx_chat]="$NGINX_WORKER" [hyper_chat]="$HYPER_PID" [sg_chat]="$SG_PID" [sg_chat_jwt]="$SG_PID"
  [direct_stream]="" [nginx_stream]="$NGINX_WORKER" [hyper_stream]="$HYPER_PID" [sg_stream]="$SG_PID"
  [old_chat]="${OLD_PID:-}" [old_stream]="${OLD_PID:-}")
measure() { # name connections url [header]
  local name="$1" c="$2" url="$3"; shift 3
  [[ "$name" =~ ${ONLY:-.} ]] || return 0
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
    for kind in chat stream; do
      measure "direct_$kind" "$c" "http://127.0.0.1:$MOCK_PORT$CHAT_PATH" -s "$WORK/$kind.lua"
      measure "nginx_$kind" "$c" "http://127.0.0.1:$NGINX_PORT$CHAT_PATH" -s "$WORK/$kind.lua"
      measure "hyper_$kind" "$c" "http://127.0.0.1:$HYPER_PORT$CHAT_PATH" -s "$WORK/$kind.lua"
      measure "sg_$kind" "$c" "$SG$CHAT_PATH" -s "$WORK/$kind.lua" -H "Authorization: Bearer $CHAT_KEY"
    done
    measure sg_chat_jwt "$c" "$SG$CHAT_PATH" -s "$WORK/chat.lua" -H "Authorization: Bearer $TOKEN"
    if [ -n "${OLD:-}" ]; then
      measure old_key "$c" "$OLD/tasks/1" -H "X-API-Key: $OLD_KEY"
      measure old_jwt "$c" "$OLD/tasks/1" -H "Authorization: Bearer $OLD_TOKEN"
      measure old_chat "$c" "$OLD$CHAT_PATH" -s "$WORK/chat.lua" -H "Authorization: Bearer $OLD_CHAT_KEY"
      measure old_stream "$c" "$OLD$CHAT_PATH" -s "$WORK/stream.lua" -H "Authorization: Bearer $OLD_CHAT_KEY"
    fi
  done
  echo "round $round done" >&2
done

SELECTED=()
for t in "${TARGETS[@]}"; do [[ "$t" =~ ${ONLY:-.} ]] && SELECTED+=("$t"); done
PYTHONPATH=bench python3 - "$RESULTS" "${SELECTED[@]}" <<'PY'
import sys
from results import load, median
rows = load(sys.argv[1], 2)
targets = sys.argv[2:]
def med(name, c, i):
    return median(rows, (name, c), i)
def group(name):
    # The rows each target is compared with: the same request through nginx
    # and the bare hyper proxy, and without a proxy.
    for kind in ("chat", "stream"):
        if name.endswith(kind) or name.endswith(kind + "_jwt"):
            return f"nginx_{kind}", f"hyper_{kind}", f"direct_{kind}"
    return "nginx", "hyper", "direct"
print(f"{'target':<14}{'req/s c=32':>11}{'p50 c=32':>10}{'p99 c=32':>10}{'p50 c=1':>10}{'p99 c=1':>10}{'vs nginx':>9}{'vs hyper':>9}{'added p50 c=1':>14}{'added p99 c=1':>14}{'CPU/req proxy':>14}{'upstream':>10}{'CPU vs nginx':>13}")
def ratio(value, name, i):
    # '-' when ONLY= left the row to compare with out.
    return f"{value / med(name, 32, i):.0%}" if (name, 32) in rows else "-"
for name in targets:
    nginx, hyper, direct = group(name)
    rps = med(name, 32, 0)
    proxied = not name.startswith("direct")
    cpu = med(name, 32, 3)
    have_direct = (direct, 1) in rows
    added = lambda i: f"{med(name,1,i)-med(direct,1,i):.3f}m" if have_direct else "-"
    cpu_ratio = f"{cpu / med(nginx,32,3):.2f}x" if proxied and (nginx, 32) in rows else "-"
    print(f"{name:<14}{rps:>11.0f}{med(name,32,1):>9.2f}m{med(name,32,2):>9.2f}m"
          f"{med(name,1,1):>9.3f}m{med(name,1,2):>9.3f}m{ratio(rps, nginx, 0):>9}"
          f"{ratio(rps, hyper, 0):>9}{added(1):>14}{added(2):>14}"
          f"{format(cpu, '.1f') + 'us' if proxied else '-':>14}{med(name,32,4):>8.1f}us"
          f"{cpu_ratio:>13}")
print("(m = milliseconds; medians over rounds; 'added' is p50 (p99) at c=1 minus the same request's direct one;")
print(" CPU/req: user + system CPU time per request at c=32, of the proxy and of the upstream behind it;")
print(" 'CPU vs nginx': the proxy's CPU per request over nginx's on the same request)")
PY
