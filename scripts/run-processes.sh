#!/usr/bin/env bash
# Starts a small Strata cluster as separate processes (no S3 gateway): one metanode
# (a single-member Raft group, RocksDB under ./data/meta) and three datanodes, each
# with one 1 GiB file-backed device under ./data, registered with the metanode. Runs a
# short demo (a replica:3 stream, an extent placed on three datanodes, appends, a
# fenced writer) and keeps everything in the foreground until Ctrl-C.
#   STRATA_DATA (default ./data), STRATA_META_PORT (7100), STRATA_DATANODE_PORT (7201..7203)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q -p datanode -p client -p metanode
data="${STRATA_DATA:-data}"
mport="${STRATA_META_PORT:-7100}"
dport="${STRATA_DATANODE_PORT:-7201}"
mkdir -p "$data"
bin="${CARGO_TARGET_DIR:-target}/release"
# Every process (and the CLIs below) authenticates with these secrets.
[ -f "$data/cluster.secrets" ] || "$bin/metanode" secrets "$data/cluster.secrets"
export STRATA_SECRETS_FILE="$data/cluster.secrets"
meta="127.0.0.1:$mport"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM

# Waits until file $1 says "listening on" (the line every server prints when ready).
wait_listening() {
  for _ in $(seq 1 600); do
    grep -q "listening on" "$1" 2>/dev/null && { cat "$1"; return 0; }
    kill -0 "$2" 2>/dev/null || { echo "failed to start; log:" >&2; cat "$3" >&2; exit 1; }
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; exit 1
}

"$bin/metanode" serve --id 1 --listen "$meta" --data "$data/meta" --init "1=$meta" \
  >"$data/metanode.out" 2>"$data/metanode.log" &
pids+=($!)
wait_listening "$data/metanode.out" $! "$data/metanode.log"
for i in 1 2 3; do
  "$bin/datanode" --node-id "$i" --listen "127.0.0.1:$((dport + i - 1))" --device "$data/dn$i.img:1G" \
    --meta "$meta" --zone "zone$i" >"$data/datanode$i.out" 2>"$data/datanode$i.log" &
  pids+=($!)
  wait_listening "$data/datanode$i.out" $! "$data/datanode$i.log"
done
for _ in $(seq 1 100); do
  [ "$("$bin/metanode" nodes --meta "$meta" | grep -c '"state": "up"')" -ge 3 ] && break
  sleep 0.2
done
echo "--- datanodes known to the metanode:"
"$bin/metanode" nodes --meta "$meta" | grep -E '^    "(id|addr|zone|state)"' | paste - - - -
"$bin/strata" --meta "$meta" demo-stream
echo
echo "cluster running: metanode $meta, datanodes 127.0.0.1:$dport..$((dport + 2)) (logs in $data/)"
echo "try: export STRATA_SECRETS_FILE=$data/cluster.secrets; $bin/metanode status --meta $meta; $bin/metanode streams --meta $meta"
echo "Ctrl-C stops it."
wait
