#!/usr/bin/env bash
# N (default 10000) concurrent keep-alive connections to one swarmgate, each
# having made one request (a GET proxied to mock-upstream with an API key:
# authentication, the route's permission check, the upstream pool) and then
# left open, idle. While all N are held, wrk keeps making the same request
# on connections of its own, and must get only 2xx answers. Reports
# swarmgate's resident memory (VmRSS) before, with all N held, and per
# connection.
#
#   bash bench/conns.sh [N]      # DURATION=10 (the wrk run); SG_BIN=target/debug/swarmgate to use a given binary
#
# Raises the open-file limit to N plus some (swarmgate and the client each
# hold N sockets); fails when the hard limit is lower. Installs wrk from
# Debian's packages when missing; builds the release binary unless SG_BIN
# is given.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

N="${1:-10000}"
DURATION="${DURATION:-10}"
FILES=$(( N + 1024 ))
if [ "$(ulimit -n)" -lt "$FILES" ]; then
  ulimit -n "$FILES" 2>/dev/null \
    || { echo "need ulimit -n $FILES; the hard limit is $(ulimit -Hn)" >&2; exit 1; }
fi
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

"$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" >/dev/null 2>&1 &
PIDS+=($!)
gateway_config "$WORK/swarmgate.toml" "$MOCK_PORT"
PASSWORD='Adm1n!Conns-Bench-9'
start_swarmgate "$WORK" "$SG_PORT" "$PASSWORD" SWARMGATE_CONFIG="$WORK/swarmgate.toml"
PIDS+=("$SG_PID")
SG="http://127.0.0.1:$SG_PORT"
wait_up "http://127.0.0.1:$MOCK_PORT/tasks" "$SG/health"
TOKEN="$(admin_token "$SG" "$PASSWORD")"
KEY="$(api_key "$SG" "$TOKEN" '{"name":"conns","permissions":["tasks.read"]}')"
# Warm: the first requests fill caches and the upstream pool, which are
# not per connection.
DURATION=2 run_wrk warmup 8 -H "X-API-Key: $KEY" "$SG/tasks/1"
sleep 1
BEFORE="$(rss_kib "$SG_PID")"

echo "machine: $(nproc) cores; $N connections held; wrk ${DURATION}s at c=8 meanwhile" >&2
# Opens N connections (a few hundred connecting at a time, within the
# listen backlog), one request each, then holds them until $WORK/release
# appears; writes how many are held to $WORK/held.
python3 - "$SG_PORT" "$KEY" "$N" "$WORK" <<'PY' &
import asyncio, os, sys

port, key, n, work = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
request = (f"GET /tasks/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n\r\n").encode()

async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    else:  # chunked
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status

async def open_one(gate, held, failures):
    async with gate:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            failures.append(repr(e))
            return
    if status != 200:
        failures.append(f"status {status}")
        writer.close()
        return
    held.append((reader, writer))

async def main():
    gate, held, failures = asyncio.Semaphore(256), [], []
    await asyncio.gather(*(open_one(gate, held, failures) for _ in range(n)))
    with open(f"{work}/held.tmp", "w") as f:
        f.write(f"{len(held)} {len(failures)}\n")
    os.rename(f"{work}/held.tmp", f"{work}/held")
    if failures:
        print("failures:", sorted(set(failures))[:5], file=sys.stderr)
    while not os.path.exists(f"{work}/release"):
        await asyncio.sleep(0.2)
    # Still open at the end, or the server closed it (EOF) meanwhile.
    closed = sum(1 for reader, _ in held if reader.at_eof())
    with open(f"{work}/closed", "w") as f:
        f.write(f"{closed}\n")
    for _, writer in held:
        writer.close()

asyncio.run(main())
PY
CLIENT=$!
PIDS+=("$CLIENT")
for _ in $(seq 3000); do
  [ -f "$WORK/held" ] && break
  kill -0 "$CLIENT" 2>/dev/null || { echo "the client stopped before holding its connections" >&2; exit 1; }
  sleep 0.1
done
[ -f "$WORK/held" ] || { echo "the connections were not all open after 300 s" >&2; exit 1; }
read -r HELD FAILED <"$WORK/held"
sleep 1
ESTABLISHED="$(ss -Htn state established "( sport = :$SG_PORT )" | wc -l)"
WITH_N="$(rss_kib "$SG_PID")"
run_wrk held 8 -H "X-API-Key: $KEY" "$SG/tasks/1"
HEALTH="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$SG/health")"
AFTER_WRK="$(rss_kib "$SG_PID")"
touch "$WORK/release"
wait "$CLIENT"
CLOSED="$(cat "$WORK/closed")"

echo "connections: $HELD of $N held after one request each ($FAILED failed); $ESTABLISHED established at swarmgate's port; $CLOSED closed by the server while held"
echo "while held: wrk c=8 ${DURATION}s $WRK_REQUESTS requests, all 2xx ($(cut -d' ' -f1 <<<"$WRK_ROW") req/s, p50 $(cut -d' ' -f2 <<<"$WRK_ROW"), p99 $(cut -d' ' -f3 <<<"$WRK_ROW")); GET /health $HEALTH"
echo "VmRSS: before $(( BEFORE / 1024 )) MiB, with $HELD held $(( WITH_N / 1024 )) MiB, after wrk $(( AFTER_WRK / 1024 )) MiB;" \
  "per connection $(( (WITH_N - BEFORE) * 1024 / (HELD > 0 ? HELD : 1) )) bytes ($(( (WITH_N - BEFORE) / (HELD > 0 ? HELD : 1) )) KiB)"
if [ "$FAILED" -ne 0 ] || [ "$HELD" -ne "$N" ] || [ "$CLOSED" -ne 0 ] || [ "$HEALTH" != 200 ]; then
  echo "not every connection was held, or swarmgate stopped answering" >&2
  exit 1
fi
