#!/usr/bin/env bash
# Runs the public S3 conformance suite (ceph/s3-tests) against `ogw standalone` and
# prints the counts per group, core and extended.
#
#   S3TESTS_DIR=/path/to/s3-tests scripts/s3-tests.sh [PYTEST ARGS...]
#
# S3TESTS_DIR is a checkout of https://github.com/ceph/s3-tests (never part of this
# repository). Its Python packages go to a venv under ~/.cache/strata/s3tests-venv.
# The gateway is the debug build unless OGW_BIN names another. Tests marked
# fails_on_aws are left out (they check RGW's own behaviour), as are the STS, IAM,
# SNS and S3 Select files. Extra arguments go to pytest (e.g. -k versioning).
#
# Groups: a test is "extended" when it is marked with a feature (versioning, lifecycle,
# object lock, bucket policy, tagging, encryption, ...) or its name says ACL, CORS or
# policy; the rest is "core". Results: $OUT/report.jsonl (one line per test, with the
# last error line of each failure) and the summary printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${S3TESTS_DIR:?set S3TESTS_DIR to a checkout of https://github.com/ceph/s3-tests}"
S3TESTS_DIR=$(cd "$S3TESTS_DIR" && pwd)
OUT=${OUT:-$(mktemp -d /tmp/strata-s3tests.XXXXXX)}
mkdir -p "$OUT"
VENV=$HOME/.cache/strata/s3tests-venv
if [ ! -x "$VENV/bin/pytest" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$S3TESTS_DIR/requirements.txt"
fi
TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
OGW=${OGW_BIN:-$TARGET/debug/ogw}
if [ -z "${OGW_BIN:-}" ]; then
  cargo build --workspace --tests -q
fi

DATA=$OUT/data
# Lifecycle tests sleep a number of "days"; a day lasts LC_DAY seconds here, as
# RGW's rgw_lc_debug_interval (the suite's lc_debug_interval).
LC_DAY=${LC_DAY:-10}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
STRATA_ACCESS_KEY=S3TESTSMAINKEY000001 STRATA_SECRET_KEY=s3tests-main-secret-000000000000000000001 \
  "$OGW" standalone --data "$DATA" --s3-addr "127.0.0.1:$PORT" --admin-addr 127.0.0.1:0 --no-zero-fill --device-size 2G \
    --lifecycle-day "${LC_DAY}s" --gc-interval 1s \
  >"$OUT/ogw.out" 2>"$OUT/ogw.log" &
GW=$!
trap 'kill $GW 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q "S3 endpoint" "$OUT/ogw.out" 2>/dev/null && break
  kill -0 $GW 2>/dev/null || { cat "$OUT/ogw.log" >&2; exit 1; }
  sleep 0.1
done
DB=(--db "sqlite://$DATA/ogw.db" --master-key "$DATA/master.key")
"$OGW" tenant-create "${DB[@]}" alt
"$OGW" tenant-create "${DB[@]}" testx
read -r ALT_KEY ALT_SECRET < <("$OGW" key-create "${DB[@]}" alt)
read -r TEN_KEY TEN_SECRET < <("$OGW" key-create "${DB[@]}" testx)

cat >"$OUT/s3tests.conf" <<EOF
[DEFAULT]
host = 127.0.0.1
port = $PORT
is_secure = False
ssl_verify = False

[fixtures]
bucket prefix = s3t-{random}-

[s3 main]
display_name = default
user_id = default
email = main@example.com
api_name = default
access_key = S3TESTSMAINKEY000001
secret_key = s3tests-main-secret-000000000000000000001
lc_debug_interval = $LC_DAY

[s3 alt]
display_name = alt
user_id = alt
email = alt@example.com
access_key = $ALT_KEY
secret_key = $ALT_SECRET

[s3 tenant]
display_name = testx
user_id = testx
email = testx@example.com
access_key = $TEN_KEY
secret_key = $TEN_SECRET
tenant = testx

[iam]
email = iam@example.com
user_id = iam
access_key = NOIAMKEY000000000000
secret_key = noiamsecret
display_name = iam

[iam root]
access_key = NOIAMROOT00000000000
secret_key = noiamroot
user_id = iamroot
email = iamroot@example.com

[iam alt root]
access_key = NOIAMALTROOT00000000
secret_key = noiamaltroot
user_id = iamaltroot
email = iamaltroot@example.com
EOF

cd "$S3TESTS_DIR"
set +e
TZ=UTC S3TEST_CONF=$OUT/s3tests.conf S3TESTS_REPORT=$OUT/report.jsonl PYTHONPATH=$ROOT/scripts \
  "$VENV/bin/pytest" -p s3tests_report -q -m "not fails_on_aws" \
  s3tests/functional/test_s3.py s3tests/functional/test_headers.py -p no:cacheprovider \
  "$@" >"$OUT/pytest.log" 2>&1
set -e
python3 - "$OUT/report.jsonl" <<'EOF'
import collections, json, sys
# Feature groups: by the suite's markers, and by test names where it marks none.
MARKERS = {"lifecycle_expiration": "lifecycle", "lifecycle_transition": "lifecycle", "sse_s3": "encryption",
           "bucket_encryption": "encryption", "bucket_logging": "logging", "delete_marker": "versioning"}
FEATURES = ["versioning", "lifecycle", "object_lock", "bucket_policy", "tagging", "encryption", "logging",
            "s3website", "appendobject", "checksum", "conditional_write", "storage_class", "object_ownership",
            "cloud_transition", "cloud_restore", "iam_tenant", "user_policy", "role_policy", "session_policy",
            "group_policy", "abac_test"]
NAMES = [("versioning", "versioning"), ("versioned", "versioning"), ("version_id", "versioning"),
         ("lifecycle", "lifecycle"), ("object_lock", "object_lock"), ("legal_hold", "object_lock"),
         ("retention", "object_lock"), ("policy", "bucket_policy"), ("tagging", "tagging"), ("tags", "tagging"),
         ("acl", "acl"), ("cors", "cors"), ("sse", "encryption"), ("encrypt", "encryption"),
         ("logging", "logging"), ("ownership", "object_ownership")]
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = collections.defaultdict(lambda: [0, 0])
for r in rows:
    if r["outcome"] == "skipped":
        continue
    feats = {MARKERS.get(m, m) for m in r["markers"]} & (set(FEATURES) | set(MARKERS.values()))
    feats |= {g for pat, g in NAMES if pat in r["test"]}
    ok = r["outcome"] == "passed"
    for g in ["extended" if feats else "core"] + sorted(feats):
        groups[g][0] += ok
        groups[g][1] += 1
for g in ["core", "extended"] + sorted(k for k in groups if k not in ("core", "extended")):
    p, n = groups[g]
    print(f"s3-tests {g:22} {p:4} / {n:4}")
skipped = sum(r["outcome"] == "skipped" for r in rows)
print(f"s3-tests skipped {skipped}; report: {sys.argv[1]}")
EOF
