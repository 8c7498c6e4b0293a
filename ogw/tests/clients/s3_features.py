"""The S3 features beyond objects and buckets (issue 17), through boto3: object and
bucket tagging, CORS (rules, preflights, answers' headers), ACLs (canned and granted,
anonymous reads where granted), bucket policies, GetObjectAttributes, a CompleteMultipartUpload sent again, ListBuckets
pages, ListObjectVersions of an unversioned bucket, appends (x-amz-write-offset-bytes,
concurrent appenders), and the answers the conformance suite
found different from AWS's (listing edges, 304 with its ETag, part numbers, encodings).

Usage: s3_features.py ENDPOINT ACCESS SECRET OTHER_ACCESS OTHER_SECRET OTHER_TENANT
"""
import base64
import hashlib
import json
import sys
import time

import requests

from s3util import check, client, code

endpoint, access, secret, other_access, other_secret, other_tenant = sys.argv[1:7]
s3 = client(endpoint, access, secret)
other = client(endpoint, other_access, other_secret)
B = "features-%d" % (time.time_ns() % 10**9)
s3.create_bucket(Bucket=B)


def tags(key):
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=B, Key=key)["TagSet"]}


def tagset(d):
    return {"TagSet": [{"Key": k, "Value": v} for k, v in d.items()]}


# --- object tagging
s3.put_object(Bucket=B, Key="t", Body=b"tagged", Tagging="a=1&b=two%20words&empty=")
check("tags from x-amz-tagging", tags("t") == {"a": "1", "b": "two words", "empty": ""}, tags("t"))
check("GET counts the tags", s3.get_object(Bucket=B, Key="t")["TagCount"] == 3)
head = s3.head_object(Bucket=B, Key="t")["ResponseMetadata"]["HTTPHeaders"]
check("HEAD counts the tags", head.get("x-amz-tagging-count") == "3", head)
s3.put_object_tagging(Bucket=B, Key="t", Tagging=tagset({"k": "v", "é": "ü"}))
check("PutObjectTagging replaces them", tags("t") == {"k": "v", "é": "ü"}, tags("t"))
check("the bytes stay", s3.get_object(Bucket=B, Key="t")["Body"].read() == b"tagged")
bad = [
    ("eleven tags", {f"k{i}": "v" for i in range(11)}),
    ("a key of 129 characters", {"k" * 129: "v"}),
    ("a value of 257 characters", {"k": "v" * 257}),
    ("an aws: key", {"aws:x": "v"}),
]
for what, t in bad:
    check(f"{what} refused", code(s3.put_object_tagging, Bucket=B, Key="t", Tagging=tagset(t)) == ("InvalidTag", 400))
dup = {"TagSet": [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]}
check("a key twice refused", code(s3.put_object_tagging, Bucket=B, Key="t", Tagging=dup) == ("InvalidTag", 400))
check("refusals changed nothing", tags("t") == {"k": "v", "é": "ü"}, tags("t"))
check("ten tags and the longest key and value are fine",
      s3.put_object_tagging(Bucket=B, Key="t", Tagging=tagset({f"k{i}": "v" * 256 for i in range(9)} | {"k" * 128: ""}))
      ["ResponseMetadata"]["HTTPStatusCode"] == 200)
check("PUT with eleven tags refused",
      code(s3.put_object, Bucket=B, Key="t2", Body=b"x", Tagging="&".join(f"k{i}=v" for i in range(11)))
      == ("InvalidTag", 400))
check("and stored nothing", code(s3.head_object, Bucket=B, Key="t2") == ("404", 404))
s3.delete_object_tagging(Bucket=B, Key="t")
check("DeleteObjectTagging empties them", tags("t") == {})
check("no count without tags", "TagCount" not in s3.get_object(Bucket=B, Key="t"))
check("tags of a missing key", code(s3.get_object_tagging, Bucket=B, Key="none") == ("NoSuchKey", 404))
check("tagging a missing key", code(s3.put_object_tagging, Bucket=B, Key="none", Tagging=tagset({"a": "b"}))
      == ("NoSuchKey", 404))

# Copies keep the source's tags, or take the request's with REPLACE; uploads take theirs.
s3.put_object_tagging(Bucket=B, Key="t", Tagging=tagset({"src": "1"}))
s3.copy_object(Bucket=B, Key="c1", CopySource={"Bucket": B, "Key": "t"})
check("a copy keeps the tags", tags("c1") == {"src": "1"}, tags("c1"))
s3.copy_object(Bucket=B, Key="c2", CopySource={"Bucket": B, "Key": "t"}, TaggingDirective="REPLACE", Tagging="new=2")
check("a REPLACE copy takes the request's", tags("c2") == {"new": "2"}, tags("c2"))
up = s3.create_multipart_upload(Bucket=B, Key="mp", Tagging="mp=yes")["UploadId"]
e = s3.upload_part(Bucket=B, Key="mp", UploadId=up, PartNumber=1, Body=b"m" * 100)["ETag"]
s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=up,
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
check("a multipart object has its upload's tags", tags("mp") == {"mp": "yes"}, tags("mp"))
check("an overwrite drops the old tags", s3.put_object(Bucket=B, Key="mp", Body=b"new") and tags("mp") == {})

# --- bucket tagging
check("no bucket tags yet", code(s3.get_bucket_tagging, Bucket=B) == ("NoSuchTagSet", 404))
s3.put_bucket_tagging(Bucket=B, Tagging=tagset({"team": "logs", "cost": "7"}))
got = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=B)["TagSet"]}
check("bucket tags", got == {"team": "logs", "cost": "7"}, got)
check("51 bucket tags refused",
      code(s3.put_bucket_tagging, Bucket=B, Tagging=tagset({f"k{i}": "v" for i in range(51)})) == ("InvalidTag", 400))
s3.delete_bucket_tagging(Bucket=B)
check("bucket tags deleted", code(s3.get_bucket_tagging, Bucket=B) == ("NoSuchTagSet", 404))

# --- another tenant reaches none of it
s3.put_object_tagging(Bucket=B, Key="t", Tagging=tagset({"mine": "1"}))
for what, fn, kw in [
    ("get object tags", other.get_object_tagging, {"Key": "t"}),
    ("put object tags", other.put_object_tagging, {"Key": "t", "Tagging": tagset({"x": "y"})}),
    ("delete object tags", other.delete_object_tagging, {"Key": "t"}),
    ("get bucket tags", other.get_bucket_tagging, {}),
    ("put bucket tags", other.put_bucket_tagging, {"Tagging": tagset({"x": "y"})}),
    ("delete bucket tags", other.delete_bucket_tagging, {}),
]:
    check(f"another tenant may not {what}", code(fn, Bucket=B, **kw) == ("AccessDenied", 403))
check("and changed nothing", tags("t") == {"mine": "1"} and code(s3.get_bucket_tagging, Bucket=B)[0] == "NoSuchTagSet")

# --- GetObjectAttributes
ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
put = s3.put_object(Bucket=B, Key="plain", Body=b"p" * 1000, ChecksumAlgorithm="CRC32")
a = s3.get_object_attributes(Bucket=B, Key="plain", ObjectAttributes=ALL)
check("attributes: size", a["ObjectSize"] == 1000)
check("attributes: ETag unquoted", a["ETag"] == put["ETag"].strip('"'), (a["ETag"], put["ETag"]))
check("attributes: class", a["StorageClass"] == "STANDARD")
check("attributes: checksum", a["Checksum"].get("ChecksumCRC32") == put["ChecksumCRC32"], a.get("Checksum"))
check("attributes: no parts for a plain object", "ObjectParts" not in a)
a = s3.get_object_attributes(Bucket=B, Key="plain", ObjectAttributes=["ObjectSize"])
check("attributes: only those asked", "ETag" not in a and "StorageClass" not in a and a["ObjectSize"] == 1000)
check("attributes of a missing key",
      code(s3.get_object_attributes, Bucket=B, Key="none", ObjectAttributes=ALL) == ("NoSuchKey", 404))
check("attributes of another tenant's object",
      code(other.get_object_attributes, Bucket=B, Key="plain", ObjectAttributes=ALL) == ("AccessDenied", 403))
PART = 5 << 20
parts, sums = [], []
up = s3.create_multipart_upload(Bucket=B, Key="mp6", ChecksumAlgorithm="SHA256")["UploadId"]
for n in range(1, 7):
    body = bytes([n]) * (PART if n < 6 else 1000)
    sums.append(base64.b64encode(hashlib.sha256(body).digest()).decode())
    r = s3.upload_part(Bucket=B, Key="mp6", UploadId=up, PartNumber=n, Body=body, ChecksumAlgorithm="SHA256")
    parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
done = s3.complete_multipart_upload(Bucket=B, Key="mp6", UploadId=up, MultipartUpload={"Parts": parts})
a = s3.get_object_attributes(Bucket=B, Key="mp6", ObjectAttributes=ALL)
op = a["ObjectParts"]
check("attributes: parts count", op.get("TotalPartsCount", op.get("PartsCount")) == 6, op)
check("attributes: each part's size and checksum",
      [(p["PartNumber"], p["Size"], p["ChecksumSHA256"]) for p in op["Parts"]]
      == [(n, PART if n < 6 else 1000, sums[n - 1]) for n in range(1, 7)], op["Parts"])
check("attributes: the object's checksum", a["Checksum"]["ChecksumSHA256"] == done["ChecksumSHA256"], a["Checksum"])
g = s3.get_object(Bucket=B, Key="mp6", PartNumber=2)
check("GET of a part answers the part's checksum", g.get("ChecksumSHA256") == sums[1]
      and g.get("ChecksumType") == "COMPOSITE" and g["Body"].read() == bytes([2]) * PART, g.get("ChecksumSHA256"))
a = s3.get_object_attributes(Bucket=B, Key="mp6", ObjectAttributes=["ObjectParts"], MaxParts=2, PartNumberMarker=3)
op = a["ObjectParts"]
check("attributes: a page of parts",
      [p["PartNumber"] for p in op["Parts"]] == [4, 5] and op["IsTruncated"] and op["NextPartNumberMarker"] == 5
      and op["PartNumberMarker"] == 3 and op["MaxParts"] == 2, op)

# --- Listings print what HEAD says of each object: v1 and v2 read only the fields they
# print from each row, the version listing reads rows whole; all three must agree.
def listed(entries):
    return {o["Key"]: (o["ETag"], o["Size"], o["StorageClass"], o.get("ChecksumAlgorithm"), o.get("ChecksumType"))
            for o in entries}
def headed(key):
    h = s3.head_object(Bucket=B, Key=key, ChecksumMode="ENABLED")
    algos = [a for a in ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"] if f"Checksum{a}" in h]
    return (h["ETag"], h["ContentLength"], h.get("StorageClass", "STANDARD"), algos or None, h.get("ChecksumType"))
v2 = listed(s3.list_objects_v2(Bucket=B)["Contents"])
check("listing: a full-object and a composite checksum",
      v2["plain"][3:] == (["CRC32"], "FULL_OBJECT") and v2["mp6"][3:] == (["SHA256"], "COMPOSITE"), v2)
check("listing v2 agrees with HEAD", v2 == {k: headed(k) for k in v2}, v2)
check("listing v1 agrees with v2", listed(s3.list_objects(Bucket=B)["Contents"]) == v2)
versions = [v for v in s3.list_object_versions(Bucket=B)["Versions"] if v["IsLatest"]]
check("the version listing agrees with v2", listed(versions) == v2, listed(versions))

# --- CompleteMultipartUpload sent again after it succeeded: the same answer (AWS does).
again = s3.complete_multipart_upload(Bucket=B, Key="mp6", UploadId=up, MultipartUpload={"Parts": parts})
check("a repeated complete answers as the first", again["ETag"] == done["ETag"], (again, done))
gone = s3.create_multipart_upload(Bucket=B, Key="mp6")["UploadId"]
s3.abort_multipart_upload(Bucket=B, Key="mp6", UploadId=gone)
check("an aborted upload does not complete",
      code(s3.complete_multipart_upload, Bucket=B, Key="mp6", UploadId=gone, MultipartUpload={"Parts": parts})
      == ("NoSuchUpload", 404))
check("another tenant's repeat is refused",
      code(other.complete_multipart_upload, Bucket=B, Key="mp6", UploadId=up, MultipartUpload={"Parts": parts})
      == ("AccessDenied", 403))
s3.put_object(Bucket=B, Key="mp6", Body=b"overwritten")
check("nor once the object it made is replaced",
      code(s3.complete_multipart_upload, Bucket=B, Key="mp6", UploadId=up, MultipartUpload={"Parts": parts})
      == ("NoSuchUpload", 404))

# --- Conditional writes as AWS answers them
et = s3.put_object(Bucket=B, Key="cond", Body=b"one")["ETag"]
check("If-None-Match: the current ETag refused",
      code(s3.put_object, Bucket=B, Key="cond", Body=b"two", IfNoneMatch=et) == ("PreconditionFailed", 412))
check("If-None-Match: another ETag writes", s3.put_object(Bucket=B, Key="cond", Body=b"two", IfNoneMatch='"0"')
      ["ETag"] != et)
check("If-Match on a key without an object is a 404",
      code(s3.put_object, Bucket=B, Key="nocond", Body=b"x", IfMatch=et) == ("NoSuchKey", 404))
check("and writes nothing", code(s3.head_object, Bucket=B, Key="nocond") == ("404", 404))
s3.delete_object(Bucket=B, Key="cond")

# --- ListObjectVersions of a bucket never versioned: each object, its null version.
v = s3.list_object_versions(Bucket=B, Prefix="c")
check("versions: each object once, null, latest",
      [(x["Key"], x["VersionId"], x["IsLatest"]) for x in v["Versions"]] == [("c1", "null", True), ("c2", "null", True)],
      v.get("Versions"))
v = s3.list_object_versions(Bucket=B, MaxKeys=1)
check("versions: paged by key marker", v["IsTruncated"] and v["NextVersionIdMarker"] == "null", v)
v2 = s3.list_object_versions(Bucket=B, MaxKeys=1, KeyMarker=v["NextKeyMarker"], VersionIdMarker="null")
check("versions: the next page", v2["Versions"][0]["Key"] > v["Versions"][0]["Key"], (v, v2))

# --- ListBuckets in pages, and by prefix
names = [f"{B}-p{i}" for i in range(3)]
for n in names:
    s3.create_bucket(Bucket=n)
seen, token = [], None
while True:
    kw = {"ContinuationToken": token} if token else {}
    r = s3.list_buckets(MaxBuckets=2, Prefix=B + "-p", **kw)
    check("bucket pages hold at most 2", len(r["Buckets"]) <= 2)
    seen += [b["Name"] for b in r["Buckets"]]
    token = r.get("ContinuationToken")
    if not token:
        break
check("bucket pages list each once, in order", seen == names, seen)
for n in names:
    s3.delete_bucket(Bucket=n)

# --- CORS
check("no CORS rules yet", code(s3.get_bucket_cors, Bucket=B) == ("NoSuchCORSConfiguration", 404))
url = f"{endpoint}/{B}/t"


def preflight(origin, method, headers=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(url, headers=h)


check("a preflight without rules is refused", preflight("https://app.example.com", "GET").status_code == 403)
rules = {"CORSRules": [
    {"AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["GET", "PUT"],
     "AllowedHeaders": ["x-amz-*", "content-type"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]},
]}
s3.put_bucket_cors(Bucket=B, CORSConfiguration=rules)
got = s3.get_bucket_cors(Bucket=B)["CORSRules"]
check("CORS rules read back", [(r["AllowedOrigins"], r["AllowedMethods"]) for r in got]
      == [(["https://*.example.com"], ["GET", "PUT"]), (["*"], ["HEAD"])], got)
r = preflight("https://app.example.com", "PUT", "x-amz-date, Content-Type")
check("an allowed preflight", r.status_code == 200
      and r.headers.get("access-control-allow-origin") == "https://app.example.com"
      and r.headers.get("access-control-allow-methods") == "GET, PUT"
      and r.headers.get("access-control-allow-headers") == "x-amz-date, content-type"
      and r.headers.get("access-control-max-age") == "600", dict(r.headers))
check("a method no rule allows", preflight("https://app.example.com", "DELETE").status_code == 403)
check("an origin no rule allows", preflight("https://evil.test", "GET").status_code == 403)
check("a header no rule allows", preflight("https://app.example.com", "GET", "authorization").status_code == 403)
r = preflight("https://any.where", "HEAD")
check("a wildcard origin answers *", r.status_code == 200 and r.headers.get("access-control-allow-origin") == "*")
r = requests.options(url, headers={"Origin": "https://app.example.com"})
check("a preflight without a method is a 400", r.status_code == 400 and b"<RequestId>" in r.content, r.content)
signed = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "t"})
r = requests.get(signed, headers={"Origin": "https://app.example.com"})
check("an actual GET from an allowed origin", r.status_code == 200
      and r.headers.get("access-control-allow-origin") == "https://app.example.com"
      and r.headers.get("access-control-expose-headers") == "ETag", dict(r.headers))
r = requests.get(signed, headers={"Origin": "https://evil.test"})
check("no CORS headers for another origin", r.status_code == 200 and "access-control-allow-origin" not in r.headers)
for bad in [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]},
            {"AllowedOrigins": ["*.*.example.com"], "AllowedMethods": ["GET"]}]:
    check(f"CORS rule {bad} refused",
          code(s3.put_bucket_cors, Bucket=B, CORSConfiguration={"CORSRules": [bad]}) == ("InvalidRequest", 400))
check("another tenant may not set CORS",
      code(other.put_bucket_cors, Bucket=B, CORSConfiguration=rules) == ("AccessDenied", 403))
check("nor read it", code(other.get_bucket_cors, Bucket=B) == ("AccessDenied", 403))
s3.delete_bucket_cors(Bucket=B)
check("CORS rules deleted", code(s3.get_bucket_cors, Bucket=B) == ("NoSuchCORSConfiguration", 404))
check("and preflights refused again", preflight("https://app.example.com", "GET").status_code == 403)

# --- ACLs
ALL = "http://acs.amazonaws.com/groups/global/AllUsers"
A = B + "-acl"
s3.create_bucket(Bucket=A, ACL="public-read")
s3.put_object(Bucket=A, Key="private", Body=b"secret")
s3.put_object(Bucket=A, Key="public", Body=b"hello", ACL="public-read")
check("anonymous lists a public-read bucket", requests.get(f"{endpoint}/{A}").status_code == 200)
check("anonymous reads a public-read object", requests.get(f"{endpoint}/{A}/public").content == b"hello")
r = requests.get(f"{endpoint}/{A}/private")
check("but not a private object in it", r.status_code == 403 and b"AccessDenied" in r.content, r.content)
check("a missing key is a 404 to whoever may list", requests.get(f"{endpoint}/{A}/none").status_code == 404)
check("anonymous writes nothing to a public-read bucket",
      requests.put(f"{endpoint}/{A}/anon", data=b"x").status_code == 403
      and requests.post(f"{endpoint}/{A}", files={"key": (None, "anon"), "file": ("f", b"x")}).status_code == 403
      and code(s3.head_object, Bucket=A, Key="anon") == ("404", 404))
check("anonymous reads no ACL", requests.get(f"{endpoint}/{A}?acl").status_code == 403)
check("nor tags, nor uploads, of a public bucket", requests.get(f"{endpoint}/{A}/public?tagging").status_code == 403
      and requests.post(f"{endpoint}/{A}/k?uploads").status_code == 403)
grants = s3.get_bucket_acl(Bucket=A)["Grants"]
check("the bucket ACL lists the owner and AllUsers READ",
      {(g["Grantee"].get("URI") or g["Grantee"].get("ID"), g["Permission"]) for g in grants}
      == {(s3.get_bucket_acl(Bucket=A)["Owner"]["ID"], "FULL_CONTROL"), (ALL, "READ")}, grants)
check("the object ACL too", any(g["Grantee"].get("URI") == ALL and g["Permission"] == "READ"
                                 for g in s3.get_object_acl(Bucket=A, Key="public")["Grants"]))
s3.put_bucket_acl(Bucket=A, ACL="private")
check("a private bucket again refuses anonymous lists", requests.get(f"{endpoint}/{A}").status_code == 403)
check("another tenant may not list a private bucket", code(other.list_objects_v2, Bucket=A) == ("AccessDenied", 403))
s3.put_bucket_acl(Bucket=A, GrantRead=f'id="{other_tenant}"')
check("a READ grant lets another tenant list", [o["Key"] for o in other.list_objects_v2(Bucket=A)["Contents"]]
      == ["private", "public"])
check("but not write", code(other.put_object, Bucket=A, Key="o", Body=b"x") == ("AccessDenied", 403))
check("nor read a private object", code(other.get_object, Bucket=A, Key="private") == ("AccessDenied", 403))
check("nor change the ACL", code(other.put_bucket_acl, Bucket=A, ACL="public-read-write") == ("AccessDenied", 403))
s3.put_bucket_acl(Bucket=A, GrantWrite=f'id="{other_tenant}"', GrantRead=f'id="{other_tenant}"')
other.put_object(Bucket=A, Key="from-other", Body=b"theirs")
check("a WRITE grant lets another tenant write", s3.get_object(Bucket=A, Key="from-other")["Body"].read() == b"theirs")
check("which it cannot then read back",
      code(other.get_object, Bucket=A, Key="from-other") == ("AccessDenied", 403))
check("nor copy a private object out", code(other.copy_object, Bucket=A, Key="copied",
                                            CopySource={"Bucket": A, "Key": "private"}) == ("AccessDenied", 403))
s3.put_object_acl(Bucket=A, Key="private", GrantRead=f'id="{other_tenant}"')
check("an object READ grant lets it read that one", other.get_object(Bucket=A, Key="private")["Body"].read() == b"secret")
other.copy_object(Bucket=A, Key="copied", CopySource={"Bucket": A, "Key": "private"})
check("and copy it", s3.get_object(Bucket=A, Key="copied")["Body"].read() == b"secret")
s3.delete_object(Bucket=A, Key="copied")
check("a grant to a tenant that does not exist",
      code(s3.put_bucket_acl, Bucket=A, GrantRead='id="no-such-tenant"') == ("InvalidArgument", 400))
check("a canned ACL and grants together",
      code(s3.put_bucket_acl, Bucket=A, ACL="private", GrantRead=f'id="{other_tenant}"') == ("InvalidRequest", 400))
s3.put_bucket_acl(Bucket=A, ACL="public-read-write")
check("public-read-write lets anonymous write", requests.put(f"{endpoint}/{A}/anon", data=b"anon").status_code == 200
      and s3.get_object(Bucket=A, Key="anon")["Body"].read() == b"anon")
check("but not delete the bucket", requests.delete(f"{endpoint}/{A}").status_code == 403)
r = requests.post(f"{endpoint}/{A}", files={"key": (None, "posted"), "success_action_status": (None, "201"),
                                            "file": ("f", b"form body")})
check("an anonymous form POST to a public-read-write bucket", r.status_code == 201 and b"<Key>posted</Key>" in r.content
      and s3.get_object(Bucket=A, Key="posted")["Body"].read() == b"form body", (r.status_code, r.content))
s3.delete_object(Bucket=A, Key="posted")
s3.put_bucket_acl(Bucket=A, AccessControlPolicy={
    "Owner": {"ID": "x"}, "Grants": [{"Grantee": {"Type": "Group", "URI": ALL}, "Permission": "READ"}]})
check("an AccessControlPolicy body sets it", requests.get(f"{endpoint}/{A}").status_code == 200
      and requests.put(f"{endpoint}/{A}/anon2", data=b"x").status_code == 403)
for k in ["private", "public", "from-other", "anon"]:
    s3.delete_object(Bucket=A, Key=k)
s3.delete_bucket(Bucket=A)

# --- Bucket policies
P = B + "-pol"
s3.create_bucket(Bucket=P)
for k in ["public/a", "private/b", "keep/c"]:
    s3.put_object(Bucket=P, Key=k, Body=k.encode())


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


check("no policy yet", code(s3.get_bucket_policy, Bucket=P) == ("NoSuchBucketPolicy", 404))
check("another tenant may not list", code(other.list_objects_v2, Bucket=P) == ("AccessDenied", 403))
doc = policy(
    {"Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam::{other_tenant}:root"]},
     "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": [f"arn:aws:s3:::{P}", f"arn:aws:s3:::{P}/*"]},
    {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{P}",
     "Condition": {"StringLike": {"s3:prefix": "public/*"}}},
    {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject", "Resource": f"arn:aws:s3:::{P}/keep/*"})
s3.put_bucket_policy(Bucket=P, Policy=doc)
check("the policy reads back", json.loads(s3.get_bucket_policy(Bucket=P)["Policy"]) == json.loads(doc))
check("a policy grant lets another tenant list", len(other.list_objects_v2(Bucket=P)["Contents"]) == 3)
check("and read", other.get_object(Bucket=P, Key="private/b")["Body"].read() == b"private/b")
check("but not write", code(other.put_object, Bucket=P, Key="x", Body=b"x") == ("AccessDenied", 403))
check("anonymous lists under the allowed prefix", requests.get(f"{endpoint}/{P}?prefix=public/").status_code == 200)
check("but not elsewhere", requests.get(f"{endpoint}/{P}?prefix=private/").status_code == 403)
check("a missing key under the prefix is a 404 to anonymous",
      requests.head(f"{endpoint}/{P}/public/none").status_code == 404
      and requests.head(f"{endpoint}/{P}/private/none").status_code == 403)
check("a Deny binds the owner too", code(s3.delete_object, Bucket=P, Key="keep/c") == ("AccessDenied", 403)
      and s3.get_object(Bucket=P, Key="keep/c")["Body"].read() == b"keep/c")
check("the policy makes the bucket public", s3.get_bucket_policy_status(Bucket=P)["PolicyStatus"]["IsPublic"])
s3.put_bucket_policy(Bucket=P, Policy=policy(
    {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{P}/*",
     "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}))
check("a source-address condition", code(s3.get_object, Bucket=P, Key="public/a") == ("AccessDenied", 403))
check("a new policy replaces the old", code(other.list_objects_v2, Bucket=P) == ("AccessDenied", 403))
check("not public", not s3.get_bucket_policy_status(Bucket=P)["PolicyStatus"]["IsPublic"])
for bad in ["{not json", policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                 "Resource": "arn:aws:s3:::another-bucket/*"}),
            policy({"Effect": "Perhaps", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{P}/*"})]:
    check(f"policy {bad[:40]!r}... refused", code(s3.put_bucket_policy, Bucket=P, Policy=bad) == ("MalformedPolicy", 400))
check("another tenant may not set a policy", code(other.put_bucket_policy, Bucket=P, Policy=doc) == ("AccessDenied", 403))
check("nor read it", code(other.get_bucket_policy, Bucket=P) == ("AccessDenied", 403))
s3.delete_bucket_policy(Bucket=P)
check("policy deleted: the owner reads again", s3.get_object(Bucket=P, Key="public/a")["Body"].read() == b"public/a")
for k in ["public/a", "private/b", "keep/c"]:
    s3.delete_object(Bucket=P, Key=k)
s3.delete_bucket(Bucket=P)

# --- Bucket location, recreation, expected owner
L = B + "-loc"
s3.create_bucket(Bucket=L, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
check("the location constraint reads back", s3.get_bucket_location(Bucket=L)["LocationConstraint"] == "eu-west-1")
check("no constraint: the default region", s3.get_bucket_location(Bucket=B).get("LocationConstraint") is None)
s3.put_bucket_acl(Bucket=L, ACL="public-read")
s3.put_object(Bucket=L, Key="kept", Body=b"kept")
s3.create_bucket(Bucket=L)
check("creating one's bucket again keeps its objects and resets its ACL",
      s3.get_object(Bucket=L, Key="kept")["Body"].read() == b"kept"
      and requests.get(f"{endpoint}/{L}").status_code == 403)
check("another tenant's name is taken", code(other.create_bucket, Bucket=L) == ("BucketAlreadyExists", 409))
me = s3.get_bucket_acl(Bucket=L)["Owner"]["ID"]
check("the expected owner matches", s3.list_objects_v2(Bucket=L, ExpectedBucketOwner=me)["KeyCount"] == 1)
check("another expected owner is refused",
      code(s3.list_objects_v2, Bucket=L, ExpectedBucketOwner=me + "x") == ("AccessDenied", 403)
      and code(s3.put_object, Bucket=L, Key="n", Body=b"n", ExpectedBucketOwner=me + "x") == ("AccessDenied", 403)
      and code(s3.get_object, Bucket=L, Key="kept", ExpectedBucketOwner=me + "x") == ("AccessDenied", 403))
s3.delete_object(Bucket=L, Key="kept")
s3.delete_bucket(Bucket=L)

# --- Listing edges, as AWS answers them
for k in ["e/a", "e/b", "e/c"]:
    s3.put_object(Bucket=B, Key=k, Body=b"e")
for v in (1, 2):
    ls = s3.list_objects if v == 1 else s3.list_objects_v2
    r = ls(Bucket=B, Prefix="e/", MaxKeys=0)
    check(f"v{v}: max-keys 0 lists nothing and is not truncated", r["IsTruncated"] is False and "Contents" not in r, r)
    r = ls(Bucket=B, Prefix="e/", Delimiter="")
    check(f"v{v}: an empty delimiter is no delimiter, not echoed",
          "Delimiter" not in r and [c["Key"] for c in r["Contents"]] == ["e/a", "e/b", "e/c"], r)
    r = ls(Bucket=B, Prefix="\n")
    check(f"v{v}: a prefix of a newline comes back as given", r["Prefix"] == "\n" and "Contents" not in r, r.get("Prefix"))

# --- A 304 carries the ETag; a part number the object lacks is 400 InvalidPart.
et = s3.put_object(Bucket=B, Key="e/a", Body=b"e")["ETag"]
try:
    s3.get_object(Bucket=B, Key="e/a", IfNoneMatch=et)
    check("304", False)
except s3.exceptions.ClientError as e:
    h = e.response["ResponseMetadata"]["HTTPHeaders"]
    check("304 with its ETag", e.response["ResponseMetadata"]["HTTPStatusCode"] == 304 and h.get("etag") == et, h)
check("part 2 of a single-part object", code(s3.get_object, Bucket=B, Key="e/a", PartNumber=2) == ("InvalidPart", 400))
check("part 1 is the object", s3.get_object(Bucket=B, Key="e/a", PartNumber=1)["Body"].read() == b"e")

# --- Encryption the gateway does not do is refused, not silently skipped.

# --- Content-Encoding lists keep their spacing; aws-chunked is framing, not kept.
for given, kept in [("deflate, gzip", "deflate, gzip"), ("gzip, aws-chunked", "gzip"), ("aws-chunked", None)]:
    s3.put_object(Bucket=B, Key="e/enc", Body=b"x", ContentEncoding=given)
    check(f"Content-Encoding {given!r}", s3.head_object(Bucket=B, Key="e/enc").get("ContentEncoding") == kept)
for k in ["e/a", "e/b", "e/c", "e/enc"]:
    s3.delete_object(Bucket=B, Key=k)

# --- appends (x-amz-write-offset-bytes, as S3 Express One Zone)
import threading  # noqa: E402

import botocore  # noqa: E402


def append(key, data, offset):
    return s3.put_object(Bucket=B, Key=key, Body=data, WriteOffsetBytes=offset)


append("log", b"first;", 0)
append("log", b"second;", 6)
check("appends grow the object", s3.get_object(Bucket=B, Key="log")["Body"].read() == b"first;second;")
check("a wrong offset: InvalidWriteOffset", code(append, "log", b"x", 6) == ("InvalidWriteOffset", 400))
check("an offset past the end too", code(append, "log", b"x", 100) == ("InvalidWriteOffset", 400))
check("refusals changed nothing", s3.head_object(Bucket=B, Key="log")["ContentLength"] == 13)
chunks, errors = [], []


def appender(n):
    for i in range(5):
        piece = b"<%d.%d>" % (n, i)
        while True:
            size = s3.head_object(Bucket=B, Key="log")["ContentLength"]
            try:
                append("log", piece, size)
                chunks.append(piece)
                break
            except botocore.exceptions.ClientError as e:
                if e.response["Error"]["Code"] != "InvalidWriteOffset":
                    errors.append(e)
                    return


threads = [threading.Thread(target=appender, args=(n,)) for n in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
got = s3.get_object(Bucket=B, Key="log")["Body"].read()
rest = got[len(b"first;second;"):]
check("concurrent appenders: every acknowledged piece once, none torn", not errors and len(chunks) == 20
      and len(rest) == sum(len(c) for c in chunks) and all(rest.count(c) == 1 for c in chunks), (errors, got))
s3.delete_object(Bucket=B, Key="log")

# A bucket made again under the name starts without the old one's tags.
s3.put_bucket_tagging(Bucket=B, Tagging=tagset({"old": "1"}))
for k in ["t", "c1", "c2", "mp", "plain", "mp6"]:
    s3.delete_object(Bucket=B, Key=k)
s3.delete_bucket(Bucket=B)
s3.create_bucket(Bucket=B)
check("a new bucket of the name has no tags", code(s3.get_bucket_tagging, Bucket=B) == ("NoSuchTagSet", 404))
s3.delete_bucket(Bucket=B)
print("s3 features suite passed")
