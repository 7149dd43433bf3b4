#!/usr/bin/env bash
# Measures start-up of `sspr-fleet serve` on an empty SQLite file until /readyz answers 200,
# against a baseline measured in the same run: the same binary printing its version (process
# start alone). Usage: bench/startup.sh [RUNS] (release build expected; builds it if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/sspr-fleet"
[ -x "$bin" ] || cargo build --release -p sspr-fleet
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

now_us() { date +%s%6N; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

ready=(); base=()
for _ in $(seq "$runs"); do
  dir=$(mktemp -d)
  t0=$(now_us); "$bin" --version >/dev/null; base+=($(( $(now_us) - t0 )))
  t0=$(now_us)
  ( cd "$dir" && SSPR_FLEET_LISTEN="127.0.0.1:$port" SSPR_FLEET_LOG=warn exec "$bin" serve 2>/dev/null ) &
  pid=$!
  until curl -fs -o /dev/null "http://127.0.0.1:$port/readyz"; do :; done
  ready+=($(( $(now_us) - t0 )))
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$dir"
done

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.1f %.1f %.1f", a[1]/1000, a[int((NR+1)/2)]/1000, a[NR]/1000}'; }
read -r rmin rmed rmax <<<"$(stats "${ready[@]}")"
read -r bmin bmed bmax <<<"$(stats "${base[@]}")"
echo "runs: $runs"
echo "serve on an empty SQLite file -> /readyz 200: min ${rmin} ms, median ${rmed} ms, max ${rmax} ms"
echo "baseline (sspr-fleet --version):            min ${bmin} ms, median ${bmed} ms, max ${bmax} ms"
awk -v r="$rmed" -v b="$bmed" 'BEGIN {printf "ratio of medians: %.1fx the bare process start\n", r/b}'
