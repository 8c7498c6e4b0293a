#!/usr/bin/env bash
# Runs every test of the workspace on this machine, installing what it lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The gateway's client tests run boto3 and aws cli v1 from this venv (see setup.sh).
export STRATA_PYTHON="${STRATA_PYTHON:-${STRATA_VENV:-$HOME/.cache/strata/venv}/bin/python}"
cargo nextest run --workspace --no-fail-fast "$@"
