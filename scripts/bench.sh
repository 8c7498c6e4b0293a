#!/usr/bin/env bash
# Usage: scripts/bench.sh SUITE   (suites: datanode [--backend spdk], metanode, logstream, s3, ec, gc, repair)
# Prints one JSON object per line: suite, case, value, unit, and where a baseline was
# measured in the same run: baseline, baseline_value, ratio (higher is better), target.
set -euo pipefail
cd "$(dirname "$0")/.."
suite="${1:-}"
case "$suite" in
  datanode)
    scripts/setup.sh >&2
    if [ "${2:-}" = "--backend" ] && [ "${3:-}" = "spdk" ]; then
      # Portable and SPDK side by side; needs SPDK installed (SPDK_DIR, see README).
      STRATA_BENCH_BACKEND=spdk cargo bench -q -p datanode --features spdk --bench datanode 2>/dev/null | grep '^{'
    else
      cargo bench -q -p datanode --bench datanode 2>/dev/null | grep '^{'
    fi
    ;;
  metanode)
    scripts/setup.sh >&2
    # The benchmark (in `client`, which does not link RocksDB) runs the release binaries.
    cargo build --release -q -p metanode -p datanode
    cargo bench -q -p client --bench metanode 2>/dev/null | grep '^{'
    # The state machine alone as one stream grows to a million extents.
    state=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-state.XXXXXX")
    "${CARGO_TARGET_DIR:-target}/release/metanode" bench-state --dir "$state" --extents "${STRATA_BENCH_EXTENTS:-1000000}"
    rm -rf "$state"
    ;;
  logstream)
    scripts/setup.sh >&2
    cargo build --release -q -p metanode -p datanode
    cargo bench -q -p client --bench logstream 2>/dev/null | grep '^{'
    ;;
  s3)
    scripts/setup.sh >&2
    # The peers. Ceph RGW from Debian's packages; scripts/ceph-rgw.sh makes a one-OSD
    # cluster for the run under the bench's data directory (outside the project).
    if ! command -v radosgw >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v ceph-mon >/dev/null \
        || ! command -v uuidgen >/dev/null || ! command -v curl >/dev/null; then
      echo "bench: installing Ceph RGW (apt: radosgw ceph-osd ceph-mon ceph-common)" >&2
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
      $SUDO apt-get update -q >&2
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        radosgw ceph-osd ceph-mon ceph-common uuid-runtime curl >&2
    fi
    # Garage from crates.io, built once into a cache outside the project.
    GARAGE_ROOT="${GARAGE_ROOT:-$HOME/.cache/strata/garage}"
    if [ ! -x "$GARAGE_ROOT/bin/garage" ]; then
      echo "bench: installing Garage (cargo install garage; takes a while once)" >&2
      cargo install -q --locked --root "$GARAGE_ROOT" garage >&2
    fi
    export GARAGE_BIN="$GARAGE_ROOT/bin/garage"
    cargo build --release -q -p ogw
    cargo bench -q -p ogw --bench s3 | grep '^{'   # progress goes to stderr
    ;;
  ec)
    scripts/setup.sh >&2
    cargo bench -q -p client --bench ec 2>/dev/null | grep '^{'
    # S3 PUTs of 64 MiB objects, STANDARD (replica:3) against STANDARD_IA (ec:4+2).
    cargo build --release -q -p ogw -p metanode -p datanode
    STRATA_BENCH_S3_MODE=ec cargo bench -q -p ogw --bench s3 | grep '^{'   # progress goes to stderr
    # The same comparison at the LogStream layer (no HTTP, no MD5): 4 MiB appends.
    STRATA_BENCH_LOGSTREAM_MODE=ec cargo bench -q -p client --bench logstream | grep '^{'
    ;;
  repair)
    scripts/setup.sh >&2
    # Re-protection after a datanode loss, and client I/O while it runs (see
    # client/benches/repair.rs).
    cargo build --release -q -p metanode -p datanode
    cargo bench -q -p client --bench repair | grep '^{'   # progress goes to stderr
    ;;
  gc)
    scripts/setup.sh >&2
    # GC on one standalone: space amplification, compaction and reclaim rates, PUTs
    # while compacting (see ogw/benches/s3/gc.rs).
    cargo build --release -q -p ogw
    STRATA_BENCH_S3_MODE=gc cargo bench -q -p ogw --bench s3 | grep '^{'   # progress goes to stderr
    ;;
  *)
    echo "usage: scripts/bench.sh SUITE   (suites: datanode, metanode, logstream, s3, ec, gc, repair)" >&2
    exit 2
    ;;
esac
