#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run and test Strata; with
# --build (scripts/run.sh), only what building needs. Idempotent: does nothing that is
# already done.
set -euo pipefail
need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
# librocksdb-sys (the metanode's store) generates its bindings with bindgen: libclang.
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
# The metanode links the system's RocksDB (.cargo/config.toml) unless ROCKSDB_COMPILE=1.
[ "${ROCKSDB_COMPILE:-}" = 1 ] || dpkg -s librocksdb-dev >/dev/null 2>&1 || need_apt+=(librocksdb-dev)
# The tools the tests use; scripts/run.sh passes --build and needs only the above.
if [ "${1:-}" != --build ]; then
  # Real S3 clients for the gateway's tests: aws cli v2 from Debian (/usr/bin/aws), and a
  # Python venv for boto3 and aws cli v1 from PyPI.
  [ -x /usr/bin/aws ] || need_apt+=(awscli)
  # SQL servers the gateway's metadata layer is tested against (the tests start their own
  # instances on temporary directories; the packages' services are not used).
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
  command -v mariadbd >/dev/null 2>&1 || need_apt+=(mariadb-server)
  # The chaos run (scripts/chaos.sh): nftables for partitions and packet loss inside its
  # network namespaces, libfaketime for a gateway's skewed clock.
  command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || need_apt+=(faketime)
  # Prometheus, which a test runs against a standalone's /metrics.
  [ -x /usr/bin/prometheus ] || need_apt+=(prometheus)
  command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
  # ogw/tests/deploy.rs: `systemd-analyze verify`/`security` on deploy/systemd's units,
  # and PyYAML to read deploy/compose.yaml.
  [ -x /usr/bin/systemd-analyze ] || need_apt+=(systemd)
  /usr/bin/python3 -c 'import yaml' >/dev/null 2>&1 || python3 -c 'import yaml' >/dev/null 2>&1 || need_apt+=(python3-yaml)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
  # The web console's browser test: Debian's Chromium, driven by playwright-core (npm).
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: no Rust toolchain (cargo) found; install one with rustup" >&2; exit 1; }
[ "${1:-}" = --build ] && exit 0
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
# playwright-core for the console test, at the version ogw/tests/console's lock names
# (no browser download: it drives /usr/bin/chromium). It needs Node.js 18 or later.
CONSOLE_TEST="$(cd "$(dirname "$0")/.." && pwd)/ogw/tests/console"
if [ ! -f "$CONSOLE_TEST/node_modules/playwright-core/package.json" ]; then
  echo "setup: installing playwright-core from npm into $CONSOLE_TEST"
  (cd "$CONSOLE_TEST" && npm ci --no-audit --no-fund --loglevel=error)
fi
# boto3 at its latest, and aws cli v1 (which pins its own botocore) in a venv of its own.
VENV="${STRATA_VENV:-$HOME/.cache/strata/venv}"
if ! "$VENV/bin/python" -c 'import boto3, awscrt, requests' >/dev/null 2>&1; then
  echo "setup: installing boto3, awscrt and requests from PyPI into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q --upgrade 'boto3[crt]' requests
fi
if ! "$VENV-awscli1/bin/aws" --version >/dev/null 2>&1; then
  echo "setup: installing aws cli v1 from PyPI into $VENV-awscli1"
  python3 -m venv "$VENV-awscli1"
  "$VENV-awscli1/bin/pip" install -q --upgrade pip
  "$VENV-awscli1/bin/pip" install -q awscli
fi
