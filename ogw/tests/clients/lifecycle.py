"""Bucket lifecycle through boto3 (issue 17), on a gateway whose lifecycle day lasts
DAY seconds (`--lifecycle-day`, a shifted clock): the configuration's checks and round
trip, x-amz-expiration, and the worker expiring current versions (by prefix, tag and
size), noncurrent versions (keeping the newest), lone delete markers and old uploads,
while Object Lock keeps what it retains.

Usage: lifecycle.py ENDPOINT ACCESS SECRET DAY
"""
import re
import sys
import time

from s3util import check, client, code

endpoint, access, secret, day = sys.argv[1:5]
DAY = float(day)
s3 = client(endpoint, access, secret)
B = "lc-%d" % (time.time_ns() % 10**9)
s3.create_bucket(Bucket=B)


def put_rules(rules, bucket=B):
    return s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})


def wait_for(what, cond, days):
    """Waits until `cond()` holds, at most `days` lifecycle days."""
    end = time.time() + days * DAY
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def exists(bucket, key, version):
    try:
        s3.head_object(Bucket=bucket, Key=key, VersionId=version)
        return True
    except Exception as e:  # noqa: BLE001
        if e.response["ResponseMetadata"]["HTTPStatusCode"] != 404:
            raise
        return False


def keys(bucket=B):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


# --- the configuration
check("no configuration: 404", code(s3.get_bucket_lifecycle_configuration, Bucket=B)
      == ("NoSuchLifecycleConfiguration", 404))
bad = [
    ("Days 0", [{"ID": "a", "Status": "Enabled", "Prefix": "", "Expiration": {"Days": 0}}], "InvalidArgument"),
    ("an ID of 256 characters", [{"ID": "a" * 256, "Status": "Enabled", "Prefix": "", "Expiration": {"Days": 1}}],
     "InvalidArgument"),
    ("the same ID twice", [{"ID": "a", "Status": "Enabled", "Prefix": "x", "Expiration": {"Days": 1}},
                           {"ID": "a", "Status": "Enabled", "Prefix": "y", "Expiration": {"Days": 1}}], "InvalidArgument"),
    ("a lowercase status", [{"ID": "a", "Status": "enabled", "Prefix": "", "Expiration": {"Days": 1}}], "MalformedXML"),
    ("no action", [{"ID": "a", "Status": "Enabled", "Prefix": ""}], "InvalidRequest"),
    ("a date not at midnight", [{"ID": "a", "Status": "Enabled", "Prefix": "",
                                 "Expiration": {"Date": "2030-01-01T10:00:00Z"}}], "InvalidArgument"),
]
for what, rules, want in bad:
    check(f"{what} refused", code(put_rules, rules) == (want, 400), code(put_rules, rules))
check("and nothing was set", code(s3.get_bucket_lifecycle_configuration, Bucket=B)[1] == 404)
rules = [
    {"ID": "logs", "Status": "Enabled", "Prefix": "logs/", "Expiration": {"Days": 2}},
    {"ID": "big-tmp", "Status": "Enabled", "Filter": {"And": {"Prefix": "tmp/", "Tags": [{"Key": "t", "Value": "1"}],
                                                              "ObjectSizeGreaterThan": 10}},
     "Expiration": {"Days": 1}},
    {"ID": "uploads", "Status": "Enabled", "Filter": {"Prefix": "mp/"},
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    {"ID": "off", "Status": "Disabled", "Filter": {"Prefix": "keep/"}, "Expiration": {"Days": 1}},
]
put_rules(rules)
got = s3.get_bucket_lifecycle_configuration(Bucket=B)["Rules"]
check("the rules read back as given", got == rules, got)
s3.put_object(Bucket=B, Key="logs/a", Body=b"a")
h = s3.head_object(Bucket=B, Key="logs/a")["ResponseMetadata"]["HTTPHeaders"].get("x-amz-expiration", "")
m = re.match(r'expiry-date="(.+)", rule-id="(.+)"', h)
check("x-amz-expiration names the rule and a midnight", m and m.group(2) == "logs" and "00:00:00 GMT" in m.group(1), h)

# --- the worker, with a day of DAY seconds
s3.put_object(Bucket=B, Key="logs/b", Body=b"b")
s3.put_object(Bucket=B, Key="tmp/big", Body=b"x" * 100, Tagging="t=1")
s3.put_object(Bucket=B, Key="tmp/small", Body=b"x", Tagging="t=1")
s3.put_object(Bucket=B, Key="tmp/untagged", Body=b"x" * 100)
s3.put_object(Bucket=B, Key="keep/k", Body=b"k")
up = s3.create_multipart_upload(Bucket=B, Key="mp/x")["UploadId"]
start = time.time()
check("the big tagged tmp object and the upload go after a day",
      wait_for("tmp", lambda: "tmp/big" not in keys(), 3)
      and wait_for("upload", lambda: not s3.list_multipart_uploads(Bucket=B).get("Uploads"), 3))
# (Not too early: two days have not passed since the logs were written, unless this
# machine was slow enough to make them pass.)
check("logs are still there after one day", {"logs/a", "logs/b"} <= set(keys()) or time.time() - start >= 2 * DAY)
check("logs go after two days", wait_for("logs", lambda: not any(k.startswith("logs/") for k in keys()), 4))
check("what no rule matches stays", {"tmp/small", "tmp/untagged", "keep/k"} <= set(keys()), keys())
s3.delete_bucket_lifecycle(Bucket=B)
check("deleted configuration: 404", code(s3.get_bucket_lifecycle_configuration, Bucket=B)[1] == 404)
for k in keys():
    s3.delete_object(Bucket=B, Key=k)
s3.delete_bucket(Bucket=B)

# --- versions: noncurrent expiry keeps the newest, then the lone marker goes
V = B + "-v"
s3.create_bucket(Bucket=V)
s3.put_bucket_versioning(Bucket=V, VersioningConfiguration={"Status": "Enabled"})
for i in range(3):
    s3.put_object(Bucket=V, Key="k", Body=b"%d" % i)
s3.delete_object(Bucket=V, Key="k")
s3.put_object(Bucket=V, Key="live", Body=b"live")
put_rules([
    {"ID": "nc", "Status": "Enabled", "Filter": {}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1,
                                                                                       "NewerNoncurrentVersions": 1}},
], bucket=V)


def versions_of(key):
    r = s3.list_object_versions(Bucket=V, Prefix=key)
    return [v for v in r.get("Versions", []) if v["Key"] == key], [m for m in r.get("DeleteMarkers", []) if m["Key"] == key]


check("noncurrent versions past the newest one kept go", wait_for("nc", lambda: len(versions_of("k")[0]) == 1, 4),
      versions_of("k"))
check("the kept one is the newest", s3.get_object(Bucket=V, Key="k", VersionId=versions_of("k")[0][0]["VersionId"])
      ["Body"].read() == b"2")
check("the current object of another key stays", s3.get_object(Bucket=V, Key="live")["Body"].read() == b"live")
put_rules([
    {"ID": "nc", "Status": "Enabled", "Filter": {}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
    {"ID": "dm", "Status": "Enabled", "Filter": {}, "Expiration": {"ExpiredObjectDeleteMarker": True}},
], bucket=V)
check("then the last noncurrent version, and the marker left alone",
      wait_for("marker", lambda: versions_of("k") == ([], []), 4), versions_of("k"))
s3.delete_bucket_lifecycle(Bucket=V)
for v in s3.list_object_versions(Bucket=V).get("Versions", []):
    s3.delete_object(Bucket=V, Key=v["Key"], VersionId=v["VersionId"])
s3.delete_bucket(Bucket=V)

# --- Object Lock keeps what a rule would expire
L = B + "-l"
s3.create_bucket(Bucket=L, ObjectLockEnabledForBucket=True)
old = s3.put_object(Bucket=L, Key="k", Body=b"old", ObjectLockLegalHoldStatus="ON")["VersionId"]
s3.put_object(Bucket=L, Key="k", Body=b"new")
put_rules([{"ID": "nc", "Status": "Enabled", "Filter": {}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}],
          bucket=L)
time.sleep(3 * DAY)
check("a held noncurrent version outlives its rule", s3.get_object(Bucket=L, Key="k", VersionId=old)["Body"].read() == b"old")
s3.put_object_legal_hold(Bucket=L, Key="k", VersionId=old, LegalHold={"Status": "OFF"})
check("released, it goes", wait_for("released", lambda: not exists(L, "k", old), 3))
print("lifecycle suite passed")
