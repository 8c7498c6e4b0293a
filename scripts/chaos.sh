#!/usr/bin/env bash
# Usage: scripts/chaos.sh [--seed N] [--minutes M] [--workers W] [--keep] [--release]
# A seeded chaos run of a whole cluster: 3 metanodes, 6 datanodes, 2 gateways on one
# PostgreSQL, and GC, each in its own network namespace (needs root), driven through S3
# while the seed's schedule kills, pauses, partitions, slows and skews them; then a
# check of the history (nothing acknowledged lost, nothing corrupt, conditional writes
# linearizable), full redundancy, and GC giving the space back. The last line reads
# "chaos: seed S, F faults, A acknowledged operations, 0 lost, 0 corrupt, 0
# linearizability violations"; the exit status is 0 only when every check passed.
# Debug binaries by default (what the tests build); --release for long runs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "chaos: needs root (it makes network namespaces)" >&2; exit 2; }
scripts/setup.sh >&2
profile=debug
args=()
for a in "$@"; do
  if [ "$a" = --release ]; then profile=release; else args+=("$a"); fi
done
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p chaos -p metanode -p datanode -p ogw -p gc
target=$(cargo metadata -q --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target/$profile/chaos" "${args[@]}"
