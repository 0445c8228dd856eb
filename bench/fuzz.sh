#!/usr/bin/env bash
# Runs the coverage-guided fuzz targets of fuzz/ (cargo-fuzz, libFuzzer)
# one after the other, each for SECONDS (default 60), at the lowest CPU
# priority so builds beside it keep the cores; prints a row per target
# and fails when any target found a crash.
#
#   bash bench/fuzz.sh [SECONDS] [TARGET...]
#
# Each target's corpus grows in fuzz/corpus/TARGET (git-ignored), starting
# from the committed seeds in fuzz/seeds/TARGET; a crashing input is saved
# in fuzz/artifacts/TARGET/ and can be replayed with
# `fuzz/target/<host>/release/TARGET fuzz/artifacts/TARGET/crash-…`.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-60}"
shift || true

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cd fuzz && cargo +nightly fuzz list)
fi

# One build for every target. Without a sanitizer: the code under test is
# safe Rust, and AddressSanitizer would halve the executions. With debug
# assertions: an arithmetic overflow is a crash, not a silently wrong count.
(cd fuzz && nice -n 19 cargo +nightly fuzz build --sanitizer none --debug-assertions)
HOST="$(rustc +nightly -vV | sed -n 's/^host: //p')"
BIN_DIR="fuzz/target/$HOST/release"

# stat NAME LOG: one of libFuzzer's final statistics.
stat() { sed -n "s/^stat::$1: *//p" "$2"; }

printf '%-12s %8s %12s %8s %7s %8s\n' target seconds executions exec/s corpus crashes
failed=0
for target in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/$target" artifacts="fuzz/artifacts/$target"
  log="$(mktemp)"
  mkdir -p "$corpus" "$artifacts"
  before="$(find "$artifacts" -type f | wc -l)"
  start="$(date +%s)"
  # The seeds are read, never written: new inputs go to the corpus.
  rc=0
  nice -n 19 "$BIN_DIR/$target" "$corpus" "fuzz/seeds/$target" \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  elapsed=$(( $(date +%s) - start ))
  crashes=$(( $(find "$artifacts" -type f | wc -l) - before ))
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
  printf '%-12s %8s %12s %8s %7s %8s\n' "$target" "$elapsed" \
    "$(stat number_of_executed_units "$log")" "$(stat average_exec_per_sec "$log")" \
    "$(find "$corpus" -type f | wc -l)" "$crashes"
  if [ "$crashes" -gt 0 ]; then
    failed=1
    echo "--- $target: the end of libFuzzer's output" >&2
    tail -n 40 "$log" >&2
  fi
  rm -f "$log"
done
exit "$failed"
