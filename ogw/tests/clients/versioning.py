"""Versioning and Object Lock through boto3 (issue 17): version ids, delete markers,
GET/HEAD/DELETE/copy/tagging by version, the null version, suspending, listing versions
in pages; Object Lock's default retention, GOVERNANCE (and its bypass), COMPLIANCE and
legal holds refusing deletes, one by one and in DeleteObjects.

Usage: versioning.py ENDPOINT ACCESS SECRET OTHER_ACCESS OTHER_SECRET
"""
import datetime
import sys
import time

from s3util import check, client, code

endpoint, access, secret, other_access, other_secret = sys.argv[1:6]
s3 = client(endpoint, access, secret)
other = client(endpoint, other_access, other_secret)
B = "vers-%d" % (time.time_ns() % 10**9)
s3.create_bucket(Bucket=B)


def body(key, **kw):
    return s3.get_object(Bucket=B, Key=key, **kw)["Body"].read()


def versions(bucket=B, **kw):
    """(key, version, is latest, is a delete marker) of every entry, paging through
    (boto3 splits a page into versions and markers: each page's versions come first)."""
    out, kw = [], dict(kw)
    while True:
        r = s3.list_object_versions(Bucket=bucket, **kw)
        page = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in r.get("Versions", [])]
        page += [(m["Key"], m["VersionId"], m["IsLatest"], True) for m in r.get("DeleteMarkers", [])]
        out += page
        if not r["IsTruncated"]:
            return out
        kw["KeyMarker"], kw["VersionIdMarker"] = r["NextKeyMarker"], r["NextVersionIdMarker"]


# --- an unversioned bucket: no status, no version ids, the null version
check("a new bucket has no versioning status", "Status" not in s3.get_bucket_versioning(Bucket=B))
r = s3.put_object(Bucket=B, Key="k", Body=b"null-0")
check("an unversioned PUT names no version", "VersionId" not in r, r)
e = None
try:
    s3.head_object(Bucket=B, Key="gone")
except Exception as x:  # noqa: BLE001
    e = x.response["ResponseMetadata"]["HTTPHeaders"]
check("a 404 says no delete marker hides the key", e and e.get("x-amz-delete-marker") == "false", e)

# --- enabled: every write a version, deletes add markers
s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Enabled"})
check("status Enabled", s3.get_bucket_versioning(Bucket=B)["Status"] == "Enabled")
# At once (the gateway read the bucket just before, unversioned): the object written
# before is the null version.
h = s3.head_object(Bucket=B, Key="k")
check("the object from before is the null version at once", h.get("VersionId") == "null", h)
v1 = s3.put_object(Bucket=B, Key="k", Body=b"one")["VersionId"]
v2 = s3.put_object(Bucket=B, Key="k", Body=b"two")["VersionId"]
check("versions have distinct ids", v1 != v2 and v1 != "null")
check("GET reads the latest, saying which", body("k") == b"two"
      and s3.get_object(Bucket=B, Key="k")["VersionId"] == v2)
check("GET by version reads that version", body("k", VersionId=v1) == b"one" and body("k", VersionId="null") == b"null-0")
check("a range of an old version", body("k", VersionId=v1, Range="bytes=1-2") == b"ne")
check("HEAD by version", s3.head_object(Bucket=B, Key="k", VersionId=v1)["ContentLength"] == 3)
check("an unknown version is NoSuchVersion",
      code(s3.get_object, Bucket=B, Key="k", VersionId="A" * 32) == ("NoSuchVersion", 404))
check("a malformed version id is refused", code(s3.get_object, Bucket=B, Key="k", VersionId="nope")[1] == 400)
check("another tenant reads no version", code(other.get_object, Bucket=B, Key="k", VersionId=v1)[1] == 403)
d = s3.delete_object(Bucket=B, Key="k")
check("DELETE adds a delete marker", d.get("DeleteMarker") is True and d.get("VersionId") not in (None, v1, v2), d)
marker = d["VersionId"]
try:
    s3.get_object(Bucket=B, Key="k")
    raise AssertionError("GET of a deleted key succeeded")
except Exception as x:  # noqa: BLE001
    h = x.response["ResponseMetadata"]["HTTPHeaders"]
    check("GET of a key under a marker: 404 saying so", x.response["Error"]["Code"] == "NoSuchKey"
          and h.get("x-amz-delete-marker") == "true" and h.get("x-amz-version-id") == marker, h)
check("GET of the marker by id: 405", code(s3.get_object, Bucket=B, Key="k", VersionId=marker)[1] == 405)
check("the versions stay readable", body("k", VersionId=v2) == b"two")
check("the key is gone from the object listing", s3.list_objects_v2(Bucket=B).get("KeyCount") == 0)
listed = versions()
check("ListObjectVersions: the marker is the latest, then v2, v1 and null",
      listed == [("k", v2, False, False), ("k", v1, False, False), ("k", "null", False, False),
                 ("k", marker, True, True)], listed)
r = s3.list_object_versions(Bucket=B)
check("Versions newest first", [v["VersionId"] for v in r["Versions"]] == [v2, v1, "null"], r["Versions"])
# Deleting the marker for good brings v2 back.
d = s3.delete_object(Bucket=B, Key="k", VersionId=marker)
check("deleting a marker by id", d.get("DeleteMarker") is True and d.get("VersionId") == marker, d)
check("the previous version is current again", body("k") == b"two")
s3.delete_object(Bucket=B, Key="k", VersionId=v2)
check("deleting the current version for good: the one before is current", body("k") == b"one")

# --- pages of versions, with a delimiter
for i in range(3):
    for n in range(2):
        s3.put_object(Bucket=B, Key=f"p/{i}", Body=b"x")
    s3.put_object(Bucket=B, Key=f"q{i}", Body=b"y")
s3.delete_object(Bucket=B, Key="q1")
whole = versions()
ones = versions(MaxKeys=1)
check("pages of 1 list the same as one page", sorted(ones) == sorted(whole), (ones, whole))
check("in listing order: a marker before the versions it hides",
      [x for x in ones if x[0] == "q1"][0][3] is True, ones)
check("pages of 2 too", sorted(versions(MaxKeys=2)) == sorted(whole))
r = s3.list_object_versions(Bucket=B, Delimiter="/")
check("a delimiter rolls p/ up", [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["p/"]
      and all("/" not in v["Key"] for v in r["Versions"]), r)
r = s3.list_object_versions(Bucket=B, Prefix="p/", MaxKeys=3)
check("a prefix and truncation", r["IsTruncated"] and len(r["Versions"]) == 3 and r["NextKeyMarker"].startswith("p/"), r)

# --- copy from a version, tagging a version
c = s3.copy_object(Bucket=B, Key="copy", CopySource={"Bucket": B, "Key": "k", "VersionId": "null"})
check("copy from the null version", body("copy") == b"null-0" and c.get("CopySourceVersionId") == "null", c)
s3.put_object_tagging(Bucket=B, Key="k", VersionId=v1, Tagging={"TagSet": [{"Key": "v", "Value": "1"}]})
check("tags of one version", s3.get_object_tagging(Bucket=B, Key="k", VersionId=v1)["TagSet"] == [{"Key": "v", "Value": "1"}]
      and s3.get_object_tagging(Bucket=B, Key="k", VersionId="null")["TagSet"] == [])

# --- suspended: writes replace the null version only
s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Suspended"})
r = s3.put_object(Bucket=B, Key="k", Body=b"null-1")
check("a suspended PUT names no version", "VersionId" not in r, r)
check("it replaced the old null version", body("k", VersionId="null") == b"null-1"
      and [v[1] for v in versions(Prefix="k") if v[0] == "k"] == ["null", v1])
d = s3.delete_object(Bucket=B, Key="k")
check("a suspended DELETE: a null marker", d.get("DeleteMarker") is True and d.get("VersionId") == "null", d)
check("v1 stays", body("k", VersionId=v1) == b"one")

# --- DeleteObjects by version, then the bucket empties
left = [{"Key": k, "VersionId": v} for k, v, _, _ in versions()]
r = s3.delete_objects(Bucket=B, Delete={"Objects": left})
check("DeleteObjects removes every version", len(r.get("Deleted", [])) == len(left) and not r.get("Errors"), r)
r = s3.delete_objects(Bucket=B, Delete={"Objects": left[:2]})
check("deleting versions already gone succeeds", len(r["Deleted"]) == 2 and not r.get("Errors"), r)
check("nothing left", versions() == [])
s3.delete_bucket(Bucket=B)

# --- Object Lock
L = B + "-lock"
check("lock configuration on a plain bucket refused",
      (s3.create_bucket(Bucket=L + "p") and code(s3.put_object_lock_configuration, Bucket=L + "p",
       ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})) == ("InvalidBucketState", 409))
s3.delete_bucket(Bucket=L + "p")
s3.create_bucket(Bucket=L, ObjectLockEnabledForBucket=True)
check("a lock bucket is versioned", s3.get_bucket_versioning(Bucket=L)["Status"] == "Enabled")
check("and cannot be suspended", code(s3.put_bucket_versioning, Bucket=L,
                                      VersioningConfiguration={"Status": "Suspended"}) == ("InvalidBucketState", 409))
conf = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}
s3.put_object_lock_configuration(Bucket=L, ObjectLockConfiguration=conf)
check("the configuration reads back", s3.get_object_lock_configuration(Bucket=L)["ObjectLockConfiguration"] == conf)
bad = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1, "Years": 1}}}
check("Days and Years together refused",
      code(s3.put_object_lock_configuration, Bucket=L, ObjectLockConfiguration=bad) == ("MalformedXML", 400))
g = s3.put_object(Bucket=L, Key="g", Body=b"governed")["VersionId"]
h = s3.head_object(Bucket=L, Key="g")
check("the default retention applies", h.get("ObjectLockMode") == "GOVERNANCE"
      and h["ObjectLockRetainUntilDate"] > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=23), h)
check("a GOVERNANCE version cannot be deleted",
      code(s3.delete_object, Bucket=L, Key="g", VersionId=g) == ("AccessDenied", 403))
check("nor its retention shortened", code(s3.put_object_retention, Bucket=L, Key="g", VersionId=g, Retention={
    "Mode": "GOVERNANCE", "RetainUntilDate": datetime.datetime.now(datetime.timezone.utc)
    + datetime.timedelta(minutes=5)}) == ("AccessDenied", 403))
d = s3.delete_object(Bucket=L, Key="g")
check("a plain DELETE adds a marker over it", d.get("DeleteMarker") is True)
check("the version survives", s3.get_object(Bucket=L, Key="g", VersionId=g)["Body"].read() == b"governed")
until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
c = s3.put_object(Bucket=L, Key="c", Body=b"kept", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)["VersionId"]
check("COMPLIANCE refuses even with bypass",
      code(s3.delete_object, Bucket=L, Key="c", VersionId=c, BypassGovernanceRetention=True) == ("AccessDenied", 403))
check("COMPLIANCE cannot become GOVERNANCE", code(s3.put_object_retention, Bucket=L, Key="c", VersionId=c,
      Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until}, BypassGovernanceRetention=True)[1] == 403)
s3.put_object_retention(Bucket=L, Key="c", VersionId=c,
                        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until + datetime.timedelta(days=1)})
check("COMPLIANCE can be lengthened",
      s3.get_object_retention(Bucket=L, Key="c", VersionId=c)["Retention"]["RetainUntilDate"].date()
      == (until + datetime.timedelta(days=1)).date())
hv = s3.put_object(Bucket=L, Key="h", Body=b"held", ObjectLockLegalHoldStatus="ON")["VersionId"]
s3.put_object_retention(Bucket=L, Key="h", VersionId=hv, BypassGovernanceRetention=True, Retention={})
r = s3.delete_objects(Bucket=L, Delete={"Objects": [{"Key": "h", "VersionId": hv}, {"Key": "g", "VersionId": g}]},
                      BypassGovernanceRetention=True)
check("DeleteObjects: the held version refused, the bypassed one deleted",
      [e["Key"] for e in r.get("Errors", [])] == ["h"] and r["Errors"][0]["Code"] == "AccessDenied"
      and [x["Key"] for x in r.get("Deleted", [])] == ["g"], r)
check("another tenant cannot bypass", code(other.delete_object, Bucket=L, Key="c", VersionId=c,
                                           BypassGovernanceRetention=True)[1] == 403)
s3.put_object_legal_hold(Bucket=L, Key="h", VersionId=hv, LegalHold={"Status": "OFF"})
check("hold off", s3.get_object_legal_hold(Bucket=L, Key="h", VersionId=hv)["LegalHold"]["Status"] == "OFF")
s3.delete_object(Bucket=L, Key="h", VersionId=hv)
check("a released version goes", code(s3.head_object, Bucket=L, Key="h", VersionId=hv)[1] in (404, 405))
check("a bucket with a retained version cannot be deleted", code(s3.delete_bucket, Bucket=L) == ("BucketNotEmpty", 409))
print("versioning suite passed")
