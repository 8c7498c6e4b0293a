#!/usr/bin/env bash
# Starts a working Strata cluster on this machine, on the embedded default: `ogw
# standalone` runs a metanode (one-member Raft group), three datanodes on files, the
# S3 gateway and SQLite in one process, all under $STRATA_DATA, and prints the S3
# endpoint and credentials. Runs in the foreground until Ctrl-C.
#   STRATA_DATA (default ./data/standalone), STRATA_S3_ADDR (default 127.0.0.1:9000),
#   STRATA_ADMIN_ADDR (metrics, health, readiness; default 127.0.0.1:9001),
#   STRATA_ACCESS_KEY / STRATA_SECRET_KEY (generated on the first start when unset),
#   STRATA_DEVICE_SIZE (each datanode's device file, made on the first start; default
#   auto: half the disk's free space shared among the three, 64G each at most).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --build
echo "building (the first build takes about 10 minutes on 2 cores; then seconds)..." >&2
cargo build --release -q -p ogw -p client
# Through cargo, which knows the target directory wherever it is configured.
exec cargo run --release -q -p ogw --bin ogw -- standalone \
  --data "${STRATA_DATA:-data/standalone}" \
  --s3-addr "${STRATA_S3_ADDR:-127.0.0.1:9000}" \
  --admin-addr "${STRATA_ADMIN_ADDR:-127.0.0.1:9001}" \
  --device-size "${STRATA_DEVICE_SIZE:-auto}"
