#!/usr/bin/env bash
# Fuzzes the parsers that take outside input (fuzz/: rollout specs, tenant import files,
# Microsoft Graph's answers) for a short while each; fails on the first crash or panic.
# Needs the nightly toolchain and cargo-fuzz; skipped (with a warning) without them, unless
# FUZZ_REQUIRED=1.
#
# Longer by hand, e.g. an hour on one target:
#   cargo +nightly fuzz run graph_responses -- -max_total_time=3600
# A crash is saved under fuzz/artifacts/<target>/; replay it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"
TARGETS=(rollout_spec tenant_import graph_responses)

missing() {
  if [ "${FUZZ_REQUIRED:-0}" = "1" ]; then echo "FAIL: $*" >&2; exit 1; fi
  echo "WARNING: $*; fuzzing skipped" >&2
  exit 0
}
rustup toolchain list 2>/dev/null | grep -q '^nightly' || missing "no nightly toolchain (rustup toolchain install nightly)"
cargo fuzz --version >/dev/null 2>&1 || missing "cargo-fuzz is not installed (cargo install cargo-fuzz)"

# A build directory of its own: sanitizer builds share nothing with the normal ones.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/sspr-fleet-target}-fuzz}"
cargo +nightly fuzz build
for target in "${TARGETS[@]}"; do
  printf '\n==> fuzz %s for %ss\n' "$target" "$SECONDS_PER_TARGET"
  mkdir -p "fuzz/corpus/$target"
  cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1
done
