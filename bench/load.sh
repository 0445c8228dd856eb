#!/usr/bin/env bash
# Load benchmark of the check endpoint beside /health on the same server in
# the same run: POST /auth/verify-permission with a JWT and with an API key,
# GET /health (which pings the database) and GET /.well-known/jwks.json
# (served from memory), each with wrk at concurrency 32.
#
#   bash bench/load.sh            # DURATION=10 CONNECTIONS=32 THREADS=2 to change
#
# It installs wrk (Debian package) if missing and builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"

need_packages wrk

cargo build --release -p swarmgate
BIN="$PWD/target/release/swarmgate"

WORK="$(mktemp -d)"
PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
PASSWORD='Adm1n!Load-Bench-9'
SG_PID=""
trap '[ -z "$SG_PID" ] || kill "$SG_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

start_swarmgate "$WORK" "$PORT" "$PASSWORD"
wait_up "$BASE/health"
TOKEN="$(admin_token "$BASE" "$PASSWORD")"
KEY="$(api_key "$BASE" "$TOKEN" '{"name":"load","permissions":["tasks.read"]}')"

cat >"$WORK/verify.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"permission":"tasks.read","resource":"tasks:1"}'
wrk.headers["Content-Type"] = "application/json"
local header = os.getenv("CRED_HEADER")
wrk.headers[header] = os.getenv("CRED_VALUE")
LUA

run() { # name, then wrk arguments
  local name="$1"; shift
  local out
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@")"
  local rps p99
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  local non2xx
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  printf '%s %s %s %s\n' "$name" "$rps" "$p99" "${non2xx:-0}"
}

echo "machine: $(nproc) cores; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; release build; server and wrk share the cores" >&2
RESULTS="$WORK/results"
run health "$BASE/health" | tee -a "$RESULTS" >&2
# /health pings the database on every call; the JWKS document is served from
# memory, the cheapest route there is: a second, stricter reference.
run jwks_no_io "$BASE/.well-known/jwks.json" | tee -a "$RESULTS" >&2
CRED_HEADER=Authorization CRED_VALUE="Bearer $TOKEN" run verify_jwt -s "$WORK/verify.lua" "$BASE/auth/verify-permission" | tee -a "$RESULTS" >&2
CRED_HEADER=X-API-Key CRED_VALUE="$KEY" run verify_api_key -s "$WORK/verify.lua" "$BASE/auth/verify-permission" | tee -a "$RESULTS" >&2

python3 - "$RESULTS" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
base = float(rows[0][1])
noio = float(rows[1][1])
print(f"{'endpoint':<16}{'req/s':>12}{'p99':>10}{'of /health':>12}{'of jwks':>9}{'non-2xx':>9}")
failed = False
for name, rps, p99, non2xx in rows:
    share = float(rps) / base
    print(f"{name:<16}{float(rps):>12.0f}{p99:>10}{share:>11.0%}{float(rps) / noio:>9.0%}{non2xx:>9}")
    failed |= non2xx != "0"
if failed:
    sys.exit("some responses were not 2xx: the run is invalid")
PY
