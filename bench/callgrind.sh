#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: unlike seconds,
# the same for the same binary and requests whatever else the machine does.
# Each proxy runs under callgrind on one serving thread, in front of a
# native mock-upstream; a client sends WARMUP requests on one keep-alive
# connection, the counters are zeroed, N more are sent, and the count of
# those N (every thread of the process, background work included) is
# divided by N:
#   get     GET /tasks/1 (swarmgate: an API key and the route's permission)
#   chat    the 1 KiB chat completion of bench/proxy.sh (swarmgate: an API
#           key with an rpm and a token budget)
#   stream  the same with stream: true (a chunk per word, unpaced)
# through swarmgate, the bare hyper proxy (bench/src/bin/hyper_proxy.rs)
# and nginx (one process).
#
#   bash bench/callgrind.sh [N]         # default 2000 (WARMUP=200)
#   TOP=25 bash bench/callgrind.sh      # also swarmgate's 25 costliest functions per request kind
#   SG_BIN=PATH bash bench/callgrind.sh # another swarmgate binary (an earlier build, say)
#
# Installs valgrind, nginx and wrk's packages when missing; builds the
# release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

N="${1:-2000}"
WARMUP="${WARMUP:-200}"
TOP="${TOP:-0}"
need_packages valgrind nginx
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
cargo build --release -p swarmgate -p swarmgate-bench --bin swarmgate --bin hyper_proxy
MOCK_BIN="$PWD/target/release/swarmgate"
BIN="$(realpath "${SG_BIN:-target/release/swarmgate}")"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

MOCK_PORT="$(free_port)"
"$MOCK_BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" --chunk-interval-ms 0 >/dev/null 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$MOCK_PORT/tasks"

# The client: WARMUP requests, then zero the counters, N requests, dump.
cat >"$WORK/client.py" <<'PY'
import http.client, subprocess, sys
from chat_body import chat_body
port, pid, kind, n, warmup, auth = sys.argv[1:7]
method, path, body = {
    "get": ("GET", "/tasks/1", None),
    "chat": ("POST", "/v1/chat/completions", chat_body().encode()),
    "stream": ("POST", "/v1/chat/completions", chat_body(stream=True).encode()),
}[kind]
headers = {"Content-Type": "application/json"} if body else {}
if auth:
    headers["Authorization"] = auth
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
def send(count):
    for _ in range(count):
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"{kind}: status {r.status}")
send(int(warmup))
subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
send(int(n))
subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
PY

# callgrind_run NAME PORT AUTH COMMAND...: COMMAND under callgrind (with
# the environment VG_ENV, an `env` prefix), once per request kind; appends
# "NAME KIND INSTRUCTIONS-PER-REQUEST" rows.
callgrind_run() {
  local name="$1" port="$2" auth="$3"
  shift 3
  local kind dir vg dump ir
  for kind in get chat stream; do
    dir="$WORK/$name-$kind"
    mkdir -p "$dir"
    # env must come first: valgrind does not follow an exec.
    "${VG_ENV[@]}" valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out.%p" \
      "$@" >"$dir/log" 2>&1 &
    vg=$!
    wait_callgrind_up "$port" "$dir/log"
    PYTHONPATH=bench python3 "$WORK/client.py" "$port" "$vg" "$kind" "$N" "$WARMUP" "$auth"
    for _ in $(seq 100); do
      dump="$(find "$dir" -name 'callgrind.out.*.*' | head -1)"
      [ -n "$dump" ] && grep -q '^totals:\|^summary:' "$dump" && break
      sleep 0.1
    done
    ir="$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")"
    echo "$name $kind $(( ir / N ))" >>"$WORK/results"
    if [ "$TOP" -gt 0 ] && [ "$name" = swarmgate ]; then
      echo "--- $name $kind: the $TOP costliest functions (self cost, all $N requests)" >&2
      # The first rows are the threads' entry points, at 100% each.
      callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null \
        | grep -A "$(( TOP + 5 ))" -m1 'file:function' >&2 || true
    fi
    kill "$vg" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true
  done
}

# wait_callgrind_up PORT LOG: valgrind starts slowly; wait for the port.
wait_callgrind_up() {
  for _ in $(seq 1200); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  echo "not up under valgrind after 120 s:" >&2
  tail -20 "$2" >&2
  return 1
}

# swarmgate: on a SQLite file made natively (the admin's password hash and
# the API keys), then served under callgrind on one thread.
SG_PORT="$(free_port)"
PASSWORD='Adm1n!Callgrind-Bench-9'
gateway_config "$WORK/swarmgate.toml" "$MOCK_PORT"
start_swarmgate "$WORK" "$SG_PORT" "$PASSWORD" SWARMGATE_CONFIG="$WORK/swarmgate.toml"
SG="http://127.0.0.1:$SG_PORT"
wait_up "$SG/health"
TOKEN="$(admin_token "$SG" "$PASSWORD")"
KEY="$(api_key "$SG" "$TOKEN" \
  '{"name":"bench","permissions":["tasks.read","models.*"],"limits":{"rpm":1000000000,"tokens_per_day":1000000000000}}')"
kill "$SG_PID"; wait "$SG_PID" 2>/dev/null || true
swarmgate_env "$WORK" "$SG_PORT" "$PASSWORD" SWARMGATE_CONFIG="$WORK/swarmgate.toml" \
  SWARMGATE_SERVER__WORKER_THREADS=1
VG_ENV=("${SG_ENV[@]}")
callgrind_run swarmgate "$SG_PORT" "Bearer $KEY" "$BIN" serve
VG_ENV=(env)

HYPER_PORT="$(free_port)"
callgrind_run hyper "$HYPER_PORT" "" "$PWD/target/release/hyper_proxy" "127.0.0.1:$HYPER_PORT" "127.0.0.1:$MOCK_PORT" 1

NGINX_PORT="$(free_port)"
nginx_conf "$WORK/nginx" "$MOCK_PORT" "daemon off; master_process off;" "$NGINX_PORT"
callgrind_run nginx "$NGINX_PORT" "" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"

echo "machine: $(nproc) cores; instructions per request (callgrind), $N requests on one keep-alive connection after $WARMUP, one serving thread"
python3 - "$WORK/results" <<'PY'
import sys
ir = {}
for line in open(sys.argv[1]):
    name, kind, n = line.split()
    ir[(name, kind)] = int(n)
print(f"{'request':<8}{'swarmgate':>12}{'hyper':>10}{'nginx':>10}{'swarmgate / hyper':>19}{'swarmgate / nginx':>19}")
for kind in ("get", "chat", "stream"):
    sg, hy, ng = ir[("swarmgate", kind)], ir[("hyper", kind)], ir[("nginx", kind)]
    print(f"{kind:<8}{sg:>12,}{hy:>10,}{ng:>10,}{sg / hy:>19.2f}{sg / ng:>19.2f}")
PY
