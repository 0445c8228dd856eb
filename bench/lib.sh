# Shared by the bench scripts, sourced from the repository's root: Debian
# packages they need, free ports, a swarmgate on its own SQLite file, its
# admin's token and API keys, wrk runs and the CPU time of processes.

# need_packages COMMAND...: installs Debian's package of each command that
# is missing (each is named as its package).
need_packages() {
  local missing=() cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || missing+=("$cmd")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_up URL...: returns once each answers 2xx; fails after 60 s.
wait_up() {
  local url
  for url in "$@"; do
    for _ in $(seq 600); do
      curl -fs --max-time 2 "$url" >/dev/null && continue 2
      sleep 0.1
    done
    echo "not up after 60 s: $url" >&2
    return 1
  done
}

# swarmgate_env WORK PORT PASSWORD [VAR=VALUE...]: sets SG_ENV to the
# `env -i ...` prefix swarmgate runs under: a fresh SQLite file in WORK,
# only the given environment, logging at warn (the access log line would
# cost every request the same).
swarmgate_env() {
  local work="$1" port="$2" password="$3"
  shift 3
  SG_ENV=(env -i PATH="$PATH" HOME="$HOME" SWARMGATE_LISTEN="127.0.0.1:$port"
    DATABASE_URL="sqlite://$work/swarmgate.db" SWARMGATE_ADMIN_PASSWORD="$password"
    RUST_LOG=warn "$@")
}

# start_swarmgate WORK PORT PASSWORD [VAR=VALUE...]: `$BIN serve` under
# swarmgate_env; sets SG_PID.
start_swarmgate() {
  swarmgate_env "$@"
  "${SG_ENV[@]}" "$BIN" serve >"$1/swarmgate.log" 2>&1 &
  SG_PID=$!
}

# gateway_config FILE MOCK_PORT: the configuration the proxy benchmarks
# serve: the route /tasks (GET needs tasks.read) and the model mock-model,
# both to mock-upstream on MOCK_PORT.
gateway_config() {
  cat >"$1" <<CONF
[[routes]]
name = "orchestrator"
path_prefix = "/tasks"
upstreams = ["http://127.0.0.1:$2"]
permissions = { GET = "tasks.read" }

[[models]]
name = "mock-model"
upstreams = ["http://127.0.0.1:$2"]
CONF
}

json_field() {
  python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}

# admin_token BASE PASSWORD: the bootstrap admin's access token.
admin_token() {
  curl -fs -X POST "$1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$2\"}" | json_field access_token
}

# proc_ticks PID: user + system CPU time (clock ticks) of PID so far; 0
# without a PID. A process gone stops the script: it is an error, not a
# figure.
proc_ticks() {
  if [ -z "$1" ]; then echo 0; return; fi
  awk '{print $14 + $15}' "/proc/$1/stat" || { echo "process $1 is gone" >&2; exit 1; }
}
TICK_US=$(( 1000000 / $(getconf CLK_TCK) ))

# run_wrk NAME CONNECTIONS WRK_ARGS...: wrk for $DURATION s (one wrk thread
# at one connection, two otherwise); sets WRK_ROW to "req/s p50 p99" and
# WRK_REQUESTS. Any non-2xx answer, or none at all, stops the script.
run_wrk() {
  local name="$1" c="$2" out
  shift 2
  out="$(wrk -t"$(( c < 2 ? 1 : 2 ))" -c"$c" -d"${DURATION}s" --latency "$@")"
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx responses" >&2; echo "$out" >&2; exit 1; fi
  WRK_REQUESTS="$(awk '/requests in/ {print $1}' <<<"$out")"
  if [ "${WRK_REQUESTS:-0}" -eq 0 ]; then echo "$name: no request completed" >&2; echo "$out" >&2; exit 1; fi
  WRK_ROW="$(awk '/Requests\/sec/ {rps = $2} $1 == "50%" {p50 = $2} $1 == "99%" {p99 = $2} END {print rps, p50, p99}' <<<"$out")"
}

# api_key BASE TOKEN BODY: the secret of a new API key made with BODY.
api_key() {
  curl -fs -X POST "$1/auth/api-keys" -H "Authorization: Bearer $2" \
    -H 'Content-Type: application/json' -d "$3" | json_field key
}

# swarmgate_binary: sets BIN to $SG_BIN when given (a debug build, say, to
# check a script quickly: its figures are not a release build's), else
# builds the release binary.
swarmgate_binary() {
  if [ -n "${SG_BIN:-}" ]; then
    BIN="$(realpath "$SG_BIN")"
    echo "using SG_BIN=$BIN, not a release build of this checkout" >&2
  else
    cargo build --release -p swarmgate --bin swarmgate
    BIN="$PWD/target/release/swarmgate"
  fi
}

# rss_kib PID: resident memory (VmRSS) of PID in KiB. A process gone stops
# the script, as in proc_ticks.
rss_kib() {
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status" || { echo "process $1 is gone" >&2; exit 1; }
}

# nginx_conf DIR MOCK_PORT PREAMBLE SERVER...: writes DIR/nginx.conf, one
# worker proxying to mock-upstream on MOCK_PORT over keep-alive
# connections, with PREAMBLE at the top (say, "daemon off;") and one
# server per SERVER: "PORT" for a plain proxy on PORT, or "PORT
# DIRECTIVES" for one that also applies DIRECTIVES (proxy_set_header
# lines, say) in its location.
nginx_conf() {
  local dir="$1" mock="$2" preamble="$3" server port extra
  shift 3
  mkdir -p "$dir"
  {
    printf '%s\nworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n' "$preamble" "$dir" "$dir"
    printf 'events { worker_connections 1024; }\nhttp {\n  access_log off;\n'
    printf '  client_body_temp_path %s/body;\n  proxy_temp_path %s/proxy;\n' "$dir" "$dir"
    printf '  upstream mock { server 127.0.0.1:%s; keepalive 64; }\n' "$mock"
    for server in "$@"; do
      port="${server%% *}"; extra=""
      [ "$port" = "$server" ] || extra="${server#* }"
      printf '  server {\n    listen 127.0.0.1:%s;\n    location / {\n' "$port"
      printf '      proxy_pass http://mock;\n      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n'
      [ -z "$extra" ] || printf '%s\n' "$extra"
      printf '    }\n  }\n'
    done
    printf '}\n'
  } >"$dir/nginx.conf"
}

