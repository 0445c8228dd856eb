#!/usr/bin/env bash
# swarmgate against the LiteLLM proxy, the gateway people put in front of
# OpenAI-compatible servers today, on the same upstream, in one run,
# interleaved:
#   direct     wrk -> mock-upstream
#   litellm    wrk -> LiteLLM proxy (its master key, no database: its
#              cheapest authentication; WORKERS uvicorn workers) -> mock-upstream
#   swarmgate  wrk -> swarmgate (an API key, the model's permission, token
#              metering and usage recording) -> mock-upstream
# for a chat completion, plain and streamed (stream: true), each at
# concurrency 32 (throughput, p50, p99) and 1 (p50, p99), with the CPU time
# each request cost the gateway (all its processes).
#
#   bash bench/litellm.sh          # DURATION=5 ROUNDS=2 WORKERS=2 to change
#
# Installs wrk from Debian's packages when missing and LiteLLM
# (litellm[proxy], pinned below) into target/bench-litellm-venv with pip;
# builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-2}"
WORKERS="${WORKERS:-$(nproc)}"
LITELLM_VERSION="1.108.7"
need_packages wrk
VENV="$PWD/target/bench-litellm-venv"
if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" != "$LITELLM_VERSION" ]; then
  echo "installing litellm[proxy]==$LITELLM_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
fi

cargo build --release -p swarmgate --bin swarmgate
BIN="$PWD/target/release/swarmgate"
WORK="$(mktemp -d)"
MOCK_PORT="$(free_port)"; SG_PORT="$(free_port)"; LL_PORT="$(free_port)"
PIDS=()
LL_PGID=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$LL_PGID" ] && kill -- "-$LL_PGID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

MODEL=bench-model
"$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" --models "$MODEL" >/dev/null 2>&1 &
PIDS+=($!)
MOCK_PID=$!

cat >"$WORK/swarmgate.toml" <<CONF
[[models]]
name = "$MODEL"
upstreams = ["http://127.0.0.1:$MOCK_PORT"]
CONF
PASSWORD='Adm1n!LiteLLM-Bench-9'
start_swarmgate "$WORK" "$SG_PORT" "$PASSWORD" SWARMGATE_CONFIG="$WORK/swarmgate.toml"
PIDS+=("$SG_PID")

MASTER_KEY="sk-bench-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
cat >"$WORK/litellm.yaml" <<CONF
model_list:
  - model_name: $MODEL
    litellm_params:
      model: openai/$MODEL
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: unused
general_settings:
  master_key: $MASTER_KEY
CONF
# Its own process group, so its workers are counted and stopped with it.
# The cost map is read from the package (there is no network here).
LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR setsid "$VENV/bin/litellm" \
  --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$LL_PORT" --num_workers "$WORKERS" \
  >"$WORK/litellm.log" 2>&1 &
LL_PGID=$!

SG="http://127.0.0.1:$SG_PORT"
wait_up "http://127.0.0.1:$MOCK_PORT/v1/models" "$SG/health" "http://127.0.0.1:$LL_PORT/health/liveliness" \
  || { tail -20 "$WORK/litellm.log" >&2; exit 1; }
TOKEN="$(admin_token "$SG" "$PASSWORD")"
KEY="$(api_key "$SG" "$TOKEN" "{\"name\":\"litellm-bench\",\"permissions\":[\"models.$MODEL.invoke\"]}")"

chat() { # the request body, with the fields in $1 added
  printf '{"model":"%s","max_tokens":16,%s"messages":[{"role":"user","content":"Hello there, how are you today?"}]}' "$MODEL" "$1"
}
PLAIN="$(chat '')"
STREAMED="$(chat '"stream":true,')"
for kind in plain streamed; do
  body="$PLAIN"; [ "$kind" = streamed ] && body="$STREAMED"
  cat >"$WORK/$kind.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA
done

declare -A URL=([direct]="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
  [litellm]="http://127.0.0.1:$LL_PORT/v1/chat/completions" [swarmgate]="$SG/v1/chat/completions")
declare -A AUTH=([direct]="Authorization: Bearer unused" [litellm]="Authorization: Bearer $MASTER_KEY"
  [swarmgate]="Authorization: Bearer $KEY")
# Each answers with the mock's reply, plain and streamed, before anything
# is timed (this also warms LiteLLM's first-request paths).
for name in direct litellm swarmgate; do
  for _ in 1 2 3; do
    curl -fs "${URL[$name]}" -H "${AUTH[$name]}" -H 'Content-Type: application/json' -d "$PLAIN" \
      | grep -q '"content":"Mock reply' || { echo "$name: no chat completion" >&2; exit 1; }
    curl -fsN "${URL[$name]}" -H "${AUTH[$name]}" -H 'Content-Type: application/json' -d "$STREAMED" \
      | grep -q '^data: \[DONE\]' || { echo "$name: no streamed chat completion" >&2; exit 1; }
  done
done

RESULTS="$WORK/results"
# CPU time (user + system, clock ticks) of a gateway so far: every process
# of LiteLLM's group (its workers), swarmgate's one process.
ticks() {
  case "$1" in
    direct) echo 0 ;;
    # A process may end between the glob and the read; a name may hold
    # spaces, so fields are counted from after its closing parenthesis.
    litellm) { cat /proc/[0-9]*/stat 2>/dev/null || true; } \
      | awk -v g="$LL_PGID" '{sub(/^.*\) /, "")} $3 == g {t += $12 + $13} END {print t + 0}' ;;
    swarmgate) proc_ticks "$SG_PID" ;;
  esac
}
measure() { # name kind connections
  local name="$1" kind="$2" c="$3" before after
  before="$(ticks "$name")"
  run_wrk "$name $kind" "$c" -s "$WORK/$kind.lua" -H "${AUTH[$name]}" "${URL[$name]}"
  after="$(ticks "$name")"
  echo "$name $kind $c $WRK_ROW $(( (after - before) * TICK_US * 100 / WRK_REQUESTS ))" >>"$RESULTS"
}
echo "machine: $(nproc) cores; wrk ${DURATION}s per cell, $ROUNDS rounds interleaved; everything shares the cores; swarmgate: one serving thread per core, LiteLLM $LITELLM_VERSION: $WORKERS workers" >&2
for round in $(seq "$ROUNDS"); do
  for kind in plain streamed; do
    for c in 32 1; do
      for name in direct litellm swarmgate; do measure "$name" "$kind" "$c"; done
    done
  done
  echo "round $round done" >&2
done

PYTHONPATH=bench python3 - "$RESULTS" <<'PY'
import sys
from results import load, median
rows = load(sys.argv[1], 3)
def med(name, kind, c, i):
    return median(rows, (name, kind, c), i)
print(f"{'chat completion':<26}{'req/s c=32':>11}{'p50 c=32':>10}{'p99 c=32':>10}{'p50 c=1':>10}{'p99 c=1':>10}{'added p50 c=1':>15}{'CPU/req':>10}")
for kind in ["plain", "streamed"]:
    for name in ["direct", "litellm", "swarmgate"]:
        cpu = "-" if name == "direct" else f"{med(name, kind, 32, 3):.0f}us"
        print(f"{name + ', ' + kind:<26}{med(name, kind, 32, 0):>11.0f}{med(name, kind, 32, 1):>9.2f}m{med(name, kind, 32, 2):>9.2f}m"
              f"{med(name, kind, 1, 1):>9.3f}m{med(name, kind, 1, 2):>9.3f}m"
              f"{med(name, kind, 1, 1) - med('direct', kind, 1, 1):>14.3f}m{cpu:>10}")
    ratio = med("swarmgate", kind, 32, 0) / med("litellm", kind, 32, 0)
    print(f"  {kind}: swarmgate serves {ratio:.0f}x LiteLLM's requests/s at c=32")
print("(m = milliseconds; medians over rounds; 'added' is p50 at c=1 minus direct's;")
print(" CPU/req: user + system CPU time per request at c=32 of the gateway, all its processes)")
PY
