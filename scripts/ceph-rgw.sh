#!/usr/bin/env bash
# A one-node Ceph RGW for `scripts/bench.sh s3` to compare against: one monitor, one
# BlueStore OSD on a file, pool size 1, and radosgw (beast, tcp_nodelay) on loopback.
# Debian's packages (radosgw, ceph-osd, ceph-mon) are installed by scripts/bench.sh.
#
#   scripts/ceph-rgw.sh start DIR PORT [SIZE]   prints endpoint=, access=, secret=, pids=
#   scripts/ceph-rgw.sh stop DIR                stops the daemons started in DIR
#
# DIR must be outside the repository; it holds the configuration, the monitor's store,
# the OSD's block file (SIZE, default 24G, sparse), logs and pid files.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start DIR PORT [SIZE] | stop DIR" >&2; exit 2; }

stop() {
  for f in "$dir"/run/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
  done
  for f in "$dir"/run/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "usage: $0 start DIR PORT [SIZE] | stop DIR" >&2; exit 2 ;;
esac

port="${3:?start needs a PORT for the S3 endpoint}"
size="${4:-24G}"
for b in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph-authtool ceph uuidgen curl python3; do
  command -v "$b" >/dev/null || { echo "ceph-rgw: $b is missing (apt-get install radosgw ceph-osd ceph-mon ceph-common uuid-runtime curl python3)" >&2; exit 2; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -e "$dir/ceph.conf" ]; then
  echo "ceph-rgw: $dir already holds a cluster; stop it and remove the directory first" >&2
  exit 2
fi
mkdir -p "$dir"/{run,log,mon,osd0}
fsid=$(uuidgen)
mon_port=$(free_port)
conf="$dir/ceph.conf"
cat > "$conf" <<EOF
[global]
fsid = $fsid
mon_host = [v1:127.0.0.1:$mon_port]
mon_initial_members = a
public_network = 127.0.0.0/8
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = $dir/run
admin_socket = $dir/run/\$name.asok
pid_file = $dir/run/\$name.pid
log_file = $dir/log/\$name.log
keyring = $dir/\$name.keyring
ms_bind_msgr2 = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
mon_warn_on_pool_no_redundancy = false
[mon.a]
mon_data = $dir/mon
[osd.0]
osd_data = $dir/osd0
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = $size
[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:$port tcp_nodelay=1
rgw_data = $dir/rgw
rgw_dns_name = localhost
EOF
mkdir -p "$dir/rgw"
C=(-c "$conf")
monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
ceph-authtool --create-keyring "$dir/mon.a.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.a.keyring" 2>"$dir/log/mkfs-mon.err"
ceph-mon "${C[@]}" -i a 2>>"$dir/log/start.err"
osd_uuid=$(uuidgen)
# The monitor takes a moment to form its quorum of one; until then it refuses commands.
id=""
for _ in $(seq 120); do
  id=$(timeout 30 ceph "${C[@]}" osd new "$osd_uuid" 2>>"$dir/log/osd-new.err") && break
  sleep 0.5
done
[ "$id" = 0 ] || { echo "ceph-rgw: ceph osd new gave '$id', expected 0" >&2; exit 1; }
ceph-osd "${C[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>"$dir/log/mkfs-osd.err" >/dev/null
ceph-osd "${C[@]}" -i 0 2>>"$dir/log/start.err"
for _ in $(seq 120); do
  timeout 10 ceph "${C[@]}" osd stat 2>/dev/null | grep -q "1 up" && break
  sleep 0.5
done
timeout 10 ceph "${C[@]}" osd stat | grep -q "1 up" || { echo "ceph-rgw: the OSD did not come up; see $dir/log" >&2; exit 1; }
radosgw "${C[@]}" -n client.rgw 2>>"$dir/log/start.err"
access="BENCH$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)"
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
for _ in $(seq 120); do
  if timeout 30 radosgw-admin "${C[@]}" user create --uid bench --display-name bench \
      --access-key "$access" --secret "$secret" >/dev/null 2>"$dir/log/user.err"; then
    break
  fi
  sleep 0.5
done
for _ in $(seq 240); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.5
done
curl -s -o /dev/null "http://127.0.0.1:$port/" || { echo "ceph-rgw: radosgw does not answer on $port; see $dir/log" >&2; exit 1; }
echo "endpoint=http://127.0.0.1:$port"
echo "access=$access"
echo "secret=$secret"
echo "pids=$(cat "$dir"/run/*.pid | tr '\n' ' ')"
