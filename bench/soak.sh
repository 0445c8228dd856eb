#!/usr/bin/env bash
# A soak: SECONDS (default 600) of mixed traffic against one swarmgate, all
# at once:
#   verify       wrk: POST /auth/verify-permission with a JWT (c=4)
#   chat         wrk: a chat completion proxied to mock-upstream (API key,
#                model permission, metering, usage recording) (c=4)
#   chat_stream  wrk: the same with stream: true, the mock sending a chunk
#                every 20 ms (c=4)
#   login, key_create, key_check, key_revoke
#                a Python driver, about two rounds a second: log in, create
#                an API key with that session, use it (200), revoke it (204),
#                use it again (401, expected)
# Reports the requests of each kind and its errors (any other status, or a
# socket error: the run fails unless there are none), and swarmgate's
# resident memory (VmRSS) every 30 s, and from minute 2 on: the range of
# the first and last thirds and the trend (MiB per minute).
#
#   bash bench/soak.sh [SECONDS]      # SG_BIN=target/debug/swarmgate to use a given binary
#
# Installs wrk from Debian's packages when missing; builds the release
# binary unless SG_BIN is given.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

DURATION="${1:-600}"
need_packages wrk
swarmgate_binary
WORK="$(mktemp -d)"
MOCK_PORT="$(free_port)"; SG_PORT="$(free_port)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

MODEL=soak-model
"$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" --models "$MODEL" >/dev/null 2>&1 &
PIDS+=($!)
cat >"$WORK/swarmgate.toml" <<CONF
[[models]]
name = "$MODEL"
upstreams = ["http://127.0.0.1:$MOCK_PORT"]
CONF
PASSWORD='Adm1n!Soak-Bench-9'
# The driver logs in twice a second from one address for the whole run.
start_swarmgate "$WORK" "$SG_PORT" "$PASSWORD" SWARMGATE_CONFIG="$WORK/swarmgate.toml" \
  SWARMGATE_SECURITY__LOGIN_RATE_PER_MINUTE=100000
PIDS+=("$SG_PID")
SG="http://127.0.0.1:$SG_PORT"
wait_up "http://127.0.0.1:$MOCK_PORT/v1/models" "$SG/health"
TOKEN="$(admin_token "$SG" "$PASSWORD")"
KEY="$(api_key "$SG" "$TOKEN" "{\"name\":\"soak\",\"permissions\":[\"models.$MODEL.invoke\"]}")"

lua() { # NAME BODY HEADER: a wrk script POSTing BODY with HEADER
  cat >"$WORK/$1.lua" <<LUA
wrk.method = "POST"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "$3"
LUA
}
CHAT="{\"model\":\"$MODEL\",\"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":\"Hello there, how are you today?\"}]}"
lua verify '{"permission":"tasks.read"}' "Bearer $TOKEN"
lua chat "$CHAT" "Bearer $KEY"
lua chat_stream "${CHAT/\"max_tokens\"/\"stream\":true,\"max_tokens\"}" "Bearer $KEY"

# The load runs 2 s past the last sample, so that one is taken under load.
LOAD_SECONDS=$(( DURATION + 2 ))
echo "machine: $(nproc) cores; ${DURATION}s of mixed traffic; VmRSS of swarmgate (pid $SG_PID) every 30 s" >&2
declare -A URL=([verify]="$SG/auth/verify-permission" [chat]="$SG/v1/chat/completions"
  [chat_stream]="$SG/v1/chat/completions")
for kind in verify chat chat_stream; do
  wrk -t1 -c4 -d"${LOAD_SECONDS}s" -s "$WORK/$kind.lua" "${URL[$kind]}" >"$WORK/$kind.out" 2>&1 &
  PIDS+=($!)
  echo "$!" >"$WORK/$kind.pid"
done
python3 - "$SG_PORT" "$PASSWORD" "$LOAD_SECONDS" >"$WORK/driver.out" <<'PY' &
import http.client, json, sys, time

port, password, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
counts = {k: [0, 0] for k in ("login", "key_create", "key_check", "key_revoke")}
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

def call(kind, expected, method, path, body=None, headers=None):
    counts[kind][0] += 1
    global conn
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        data = r.read()
    except OSError as e:
        print(f"{kind}: {e}", file=sys.stderr)
        counts[kind][1] += 1
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        return None
    if r.status != expected:
        print(f"{kind}: {r.status} (expected {expected}) {data[:200]!r}", file=sys.stderr)
        counts[kind][1] += 1
        return None
    return json.loads(data) if data else {}

deadline = time.monotonic() + seconds
while (start := time.monotonic()) < deadline:
    session = call("login", 200, "POST", "/auth/login", {"username": "admin", "password": password})
    if session:
        bearer = {"Authorization": f"Bearer {session['access_token']}"}
        key = call("key_create", 201, "POST", "/auth/api-keys",
                   {"name": "soak-round", "permissions": ["tasks.read"]}, bearer)
        if key:
            with_key = {"X-API-Key": key["key"]}
            check = {"permission": "tasks.read"}
            ok = call("key_check", 200, "POST", "/auth/verify-permission", check, with_key)
            if ok is not None and ok.get("allowed") is not True:
                print(f"key_check: not allowed {ok}", file=sys.stderr)
                counts["key_check"][1] += 1
            call("key_revoke", 204, "DELETE", f"/auth/api-keys/{key['id']}", None, bearer)
            # A revoked key is refused: the expected answer.
            call("key_check", 401, "POST", "/auth/verify-permission", check, with_key)
    time.sleep(max(0.0, 0.5 - (time.monotonic() - start)))
for kind, (n, errors) in counts.items():
    print(kind, n, errors)
PY
DRIVER=$!
PIDS+=("$DRIVER")

START=$EPOCHREALTIME
: >"$WORK/rss"
for (( t = 0; t <= DURATION; t += 30 )); do
  sleep "$(python3 -c "import sys; print(max(0, float(sys.argv[1]) + $t - float(sys.argv[2])))" "$START" "$EPOCHREALTIME")"
  echo "$t $(rss_kib "$SG_PID")" >>"$WORK/rss"
  echo "${t}s: VmRSS $(( $(tail -1 "$WORK/rss" | cut -d' ' -f2) / 1024 )) MiB" >&2
done
for kind in verify chat chat_stream; do wait "$(cat "$WORK/$kind.pid")"; done
wait "$DRIVER"
rss_kib "$SG_PID" >/dev/null  # still alive at the end

python3 - "$WORK" "$LOAD_SECONDS" <<'PY'
import re, statistics, sys
work, duration = sys.argv[1], int(sys.argv[2])
rows, failed = [], False
for kind in ("verify", "chat", "chat_stream"):
    out = open(f"{work}/{kind}.out").read()
    m = re.search(r"(\d+) requests in", out)
    if not m:
        sys.exit(f"{kind}: no wrk summary\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    m2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(m2.group(1)) if m2 else 0
    rows.append((kind, int(m.group(1)), errors))
for line in open(f"{work}/driver.out"):
    kind, n, errors = line.split()
    rows.append((kind, int(n), int(errors)))
print(f"{'kind':<12}{'requests':>10}{'req/s':>9}{'errors':>8}")
for kind, n, errors in rows:
    failed |= errors > 0 or n == 0
    print(f"{kind:<12}{n:>10}{n / duration:>9.1f}{errors:>8}")
samples = dict(tuple(map(int, line.split())) for line in open(f"{work}/rss"))
print("VmRSS every 30 s (MiB): " + ", ".join(f"{t}s {kib / 1024:.1f}" for t, kib in samples.items()))
# mimalloc hands freed pages back in batches, so single samples swing by
# 20 MiB either way: compare the ranges of the first and last thirds of
# minutes 2-10 and fit a line through all of them.
late = {t: kib / 1024 for t, kib in samples.items() if t >= 120}
if len(late) >= 6:
    times = sorted(late)
    third = len(times) // 3
    def span(ts):
        values = [late[t] for t in ts]
        return f"{ts[0]}-{ts[-1]}s {min(values):.1f}-{max(values):.1f} MiB (median {statistics.median(values):.1f})"
    slope = statistics.linear_regression(times, [late[t] for t in times]).slope * 60
    print(f"from minute 2: {span(times[:third])}; {span(times[-third:])}; trend {slope:+.2f} MiB per minute")
else:
    first, last = min(samples), max(samples)
    print(f"(too short for a trend from minute 2) {first}s: {samples[first] / 1024:.1f} MiB, "
          f"{last}s: {samples[last] / 1024:.1f} MiB, difference: {(samples[last] - samples[first]) / 1024:+.1f} MiB")
if failed:
    sys.exit("errors (or a kind with no request) in the soak")
PY
