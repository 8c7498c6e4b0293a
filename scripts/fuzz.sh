#!/usr/bin/env bash
# Runs one fuzz target for SECONDS (default 600) with cargo-fuzz (nightly, AddressSanitizer):
#   scripts/fuzz.sh frame|handshake|metanode_api|s3_request [SECONDS]
# Targets are in fuzz/fuzz_targets/; corpora and crashes stay under fuzz/ (not committed).
# Prints the last line of libFuzzer's statistics; exits non-zero on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}"
secs="${2:-600}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
# A target directory of its own: sanitizer flags would rebuild the workspace's otherwise.
export CARGO_TARGET_DIR="${STRATA_FUZZ_TARGET:-$HOME/.cache/strata/fuzz-target}"
mkdir -p "fuzz/corpus/$target"
cargo +nightly fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
  -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tee "/tmp/fuzz-$target.log" | tail -n 25
