#!/usr/bin/env bash
# S3 behaviour as the aws cli (default settings) sees it.
# Usage: awscli_suite.sh AWS_BINARY ENDPOINT   (credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)
set -euo pipefail
AWS="$1"; EP="$2"
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null
aws() { "$AWS" --endpoint-url "$EP" "$@"; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
B="cli-suite-$RANDOM$RANDOM"
ok() { echo "ok $*"; }

aws s3 mb "s3://$B" >/dev/null
ok mb
head -c 23000000 /dev/urandom > "$W/big.bin"           # above the 8 MiB multipart threshold
echo "small file" > "$W/small.txt"
aws s3 cp --only-show-errors "$W/big.bin" "s3://$B/big one.bin"
aws s3 cp --only-show-errors "$W/small.txt" "s3://$B/dir/small.txt"
aws s3 cp --only-show-errors "s3://$B/big one.bin" "$W/big.out"
cmp "$W/big.bin" "$W/big.out"; ok "cp multipart round trip"
etag=$(aws s3api head-object --bucket "$B" --key "big one.bin" --query ETag --output text)
[[ "$etag" == *-3\" || "$etag" == *-3 ]] || { echo "multipart etag $etag"; exit 1; }; ok "multipart etag $etag"
mkdir -p "$W/tree/a/b" "$W/tree/c"
for f in a/1.log a/b/2.log c/3.log top.log "c/with space.log"; do echo "$f $RANDOM" > "$W/tree/$f"; done
aws s3 sync --only-show-errors "$W/tree" "s3://$B/tree"
n=$(aws s3 ls --recursive "s3://$B/tree/" | wc -l); [ "$n" = 5 ] || { echo "sync listed $n"; exit 1; }; ok "sync up"
aws s3 sync --only-show-errors "s3://$B/tree" "$W/back"
diff -r "$W/tree" "$W/back"; ok "sync down"
echo changed > "$W/tree/top.log"
out=$(aws s3 sync "$W/tree" "s3://$B/tree" --no-progress); [[ "$out" == *top.log* ]] || { echo "sync did not re-upload: $out"; exit 1; }; ok "sync changed file"
aws s3 ls "s3://$B/" | grep "PRE tree/" >/dev/null; ok "ls common prefixes"
aws s3 ls | grep "$B" >/dev/null; ok "ls buckets"
aws s3api put-object --bucket "$B" --key api/obj --body "$W/small.txt" --content-type text/x-api --metadata k=v >/dev/null
aws s3api get-object --bucket "$B" --key api/obj "$W/api.out" >/dev/null
cmp "$W/small.txt" "$W/api.out"; ok "s3api put/get"
[ "$(aws s3api head-object --bucket "$B" --key api/obj --query Metadata.k --output text)" = v ]; ok "s3api metadata"
[ "$(aws s3api list-objects-v2 --bucket "$B" --prefix tree/ --max-items 2 --query 'length(Contents)' --output text)" = 2 ]; ok "s3api list-objects-v2"
if aws s3api get-object --bucket "$B" --key nope "$W/x" 2>"$W/err"; then echo "missing key read"; exit 1; fi
grep -q NoSuchKey "$W/err"; ok "NoSuchKey"
if aws s3 rb "s3://$B" 2>"$W/err"; then echo "non-empty bucket removed"; exit 1; fi
grep -q BucketNotEmpty "$W/err"; ok "rb refuses a non-empty bucket"
aws s3 rm --only-show-errors --recursive "s3://$B"
[ -z "$(aws s3 ls --recursive "s3://$B")" ]; ok "rm --recursive"
aws s3 rb "s3://$B" >/dev/null; ok rb
echo "aws cli suite passed ($("$AWS" --version 2>&1 | cut -d' ' -f1))"
