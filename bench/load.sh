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

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null
fi

cargo build --release -p swarmgate
BIN="$PWD/target/release/swarmgate"

WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
PASSWORD='Adm1n!Load-Bench-9'
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Logging at warn: the access log line costs the same on every endpoint, and
# the point here is the authentication path.
env -i PATH="$PATH" HOME="$HOME" \
  SWARMGATE_LISTEN="127.0.0.1:$PORT" DATABASE_URL="sqlite://$WORK/swarmgate.db" \
  SWARMGATE_ADMIN_PASSWORD="$PASSWORD" RUST_LOG=warn \
  "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -fs "$BASE/health" >/dev/null && break; sleep 0.1; done

TOKEN="$(curl -fs -X POST "$BASE/auth/login" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
KEY="$(curl -fs -X POST "$BASE/auth/api-keys" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"name":"load","permissions":["tasks.read"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

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
