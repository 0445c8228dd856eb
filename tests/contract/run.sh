#!/usr/bin/env bash
# The contract: schemathesis drives every operation of /openapi.json on a
# fresh server (SQLite, in-process state) and checks each answer against
# the document: no 5xx, only documented statuses and content types, bodies
# that match their schemas. Once with an admin's JWT, once with an API key.
#
#   bash tests/contract/run.sh            # from the repository root
#
# SWARMGATE_BIN (default target/debug/swarmgate) and SCHEMATHESIS (default
# target/ci-venv/bin/schemathesis) name the programs; CONTRACT_MAX_TIME
# bounds each of the two runs in seconds (default 90).
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN="${SWARMGATE_BIN:-target/debug/swarmgate}"
ST="${SCHEMATHESIS:-target/ci-venv/bin/schemathesis}"
MAX_TIME="${CONTRACT_MAX_TIME:-90}"
PY="$(dirname "$ST")/python"
[ -x "$PY" ] || PY=python3
PASSWORD='Adm1n!Contract-Run'

[ -x "$BIN" ] || { echo "no swarmgate binary at $BIN (cargo build -p swarmgate)" >&2; exit 1; }
[ -x "$ST" ] || { echo "no schemathesis at $ST (pip install -r tests/python/requirements.txt)" >&2; exit 1; }
ST="$(realpath "$ST")"

TMP="$(mktemp -d)"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"

SWARMGATE_LISTEN="127.0.0.1:$PORT" \
DATABASE_URL="sqlite://$TMP/swarmgate.db" \
SWARMGATE_ADMIN_PASSWORD="$PASSWORD" \
SWARMGATE_SECURITY__LOGIN_RATE_PER_MINUTE=100000 \
SWARMGATE_SECURITY__REGISTER_RATE_PER_HOUR=100000 \
  "$BIN" serve 2>"$TMP/server.log" >/dev/null &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

for _ in $(seq 100); do
  curl -fs -o /dev/null "$BASE/api/metrics/health" && break
  sleep 0.1
done

json_field() { "$PY" -c "import json, sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

JWT="$(curl -fsS -X POST "$BASE/auth/login" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" | json_field access_token)"

FAILED=0
run() {
  local label="$1"
  shift
  echo "--- schemathesis, $label"
  # From the scratch folder: schemathesis keeps a cache of past cases in
  # its working directory, and each run starts from nothing.
  (cd "$TMP" && "$ST" run "$BASE/openapi.json" --url "$BASE" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples 30 --max-time "$MAX_TIME" --workers 1 --seed 15 \
    --generation-with-security-parameters false --generation-database none \
    --suppress-health-check too_slow,filter_too_much \
    --no-color "$@") || FAILED=1
}

# The admin's own session must outlive its run: logging out is covered by
# the API-key run, where it ends nothing the run still needs.
run "as admin (JWT)" -H "Authorization: Bearer $JWT" --exclude-path /auth/logout
# Made after the admin's run, whose stateful phase revokes the keys it
# finds (as it may). The key's own run leaves DELETE /auth/api-keys/{id}
# to the admin's: it would find its own id in the list and revoke itself,
# and every operation after that would see only 401.
KEY="$(curl -fsS -X POST "$BASE/auth/api-keys" -H "Authorization: Bearer $JWT" \
  -H 'Content-Type: application/json' \
  -d '{"name":"contract","permissions":["*"]}' | json_field key)"
run "with an API key (X-API-Key)" -H "X-API-Key: $KEY" --exclude-path '/auth/api-keys/{id}'
[ "$FAILED" = 0 ] || { echo "schemathesis found failures (above)" >&2; exit 1; }
echo "contract: both schemathesis runs passed"
