#!/usr/bin/env bash
# Starts a Strata datanode on two file-backed devices under ./data (created on first
# run), runs a short demo against it with the `strata` CLI, and keeps the datanode in
# the foreground until Ctrl-C. Later issues grow this into the standalone cluster.
#   STRATA_LISTEN (default 127.0.0.1:7100), STRATA_DATA (default ./data)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q -p datanode -p client
listen="${STRATA_LISTEN:-127.0.0.1:7100}"
data="${STRATA_DATA:-data}"
mkdir -p "$data"
target="${CARGO_TARGET_DIR:-target}"
log="$data/datanode.log"
"$target/release/datanode" --listen "$listen" --node-id 1 \
  --device "$data/dev0.img:1G" --device "$data/dev1.img:1G" >"$data/datanode.out" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
# Wait for the datanode to say it listens (it prints one line when ready).
for _ in $(seq 1 600); do
  grep -q "listening on" "$data/datanode.out" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
cat "$data/datanode.out"
extent=$(( $(date +%s) ))
"$target/release/strata" --datanode "$listen" demo --extent "$extent"
echo
echo "datanode running on $listen (log: $log); try: $target/release/strata --datanode $listen list"
echo "Ctrl-C stops it."
wait $pid
