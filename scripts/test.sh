#!/usr/bin/env bash
# Runs every test of the workspace on this machine, installing what it lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo nextest run --workspace --no-fail-fast "$@"
