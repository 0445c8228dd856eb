#!/usr/bin/env bash
# Streamed chat completions (server-sent events, one chunk every 20 ms from
# mock-upstream) read by a client whose kernel delays its ACKs, as clients
# on a real network do: the gaps between chunks as they arrive, directly
# from the upstream and through swarmgate, in the same run. A server that
# leaves Nagle's algorithm on holds each chunk until the previous one is
# acknowledged, which shows here as gaps of about 40 ms instead of 20.
#
#   bash bench/stream.sh          # STREAMS=5 to change
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

cargo build --release -p swarmgate
BIN="$PWD/target/release/swarmgate"
WORK="$(mktemp -d)"
MOCK_PORT="$(free_port)"; SG_PORT="$(free_port)"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" >/dev/null 2>&1 &
PIDS+=($!)
cat >"$WORK/swarmgate.toml" <<CONF
[[models]]
name = "mock-model"
upstreams = ["http://127.0.0.1:$MOCK_PORT"]
CONF
PASSWORD='Adm1n!Stream-Bench-9'
start_swarmgate "$WORK" "$SG_PORT" "$PASSWORD" SWARMGATE_CONFIG="$WORK/swarmgate.toml"
PIDS+=("$SG_PID")
SG="http://127.0.0.1:$SG_PORT"
wait_up "http://127.0.0.1:$MOCK_PORT/v1/models" "$SG/health"
TOKEN="$(admin_token "$SG" "$PASSWORD")"
KEY="$(api_key "$SG" "$TOKEN" '{"name":"stream-bench","permissions":["models.*"]}')"

echo "machine: $(nproc) cores; ${STREAMS:-5} streams each; mock-upstream sends a chunk every 20 ms" >&2
python3 - "$MOCK_PORT" "$SG_PORT" "$KEY" "${STREAMS:-5}" <<'PY'
import http.client, json, socket, sys, time

mock_port, sg_port, key, streams = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def gaps(port, key):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.connect()
    # Linux acknowledges at once unless told not to; a client on a real
    # network mostly delays its ACKs (up to 40 ms). Not sticky: set again
    # after every read.
    delay_acks = lambda: conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
    delay_acks()
    out = []
    for _ in range(streams):
        body = json.dumps({"model": "mock-model", "stream": True, "max_tokens": 40,
                           "messages": [{"role": "user", "content": "hello " * 20}]})
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request("POST", "/v1/chat/completions", body, headers)
        response = conn.getresponse()
        if response.status != 200:
            sys.exit(f"port {port}: status {response.status}")
        arrivals = []
        while data := response.read1(65536):
            arrivals.append(time.perf_counter())
            delay_acks()
        out += [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])]
    return sorted(out)

print(f"{'path':<10}{'gaps':>6}{'p50':>9}{'p90':>9}{'max':>9}")
for name, port, k in [("direct", mock_port, None), ("swarmgate", sg_port, key)]:
    g = gaps(port, k)
    pct = lambda q: g[min(len(g) - 1, int(len(g) * q))]
    print(f"{name:<10}{len(g):>6}{pct(0.5):>7.1f}ms{pct(0.9):>7.1f}ms{g[-1]:>7.1f}ms")
PY
