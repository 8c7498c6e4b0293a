"""S3 behaviour as boto3 (default settings, default checksums) sees it.

Usage: boto3_suite.py ENDPOINT ACCESS SECRET OTHER_ACCESS OTHER_SECRET
(the second key belongs to another tenant). Exits non-zero on the first failure.
"""
import base64
import concurrent.futures
import datetime
import hashlib
import os
import sys
import time
import urllib.parse
import zlib

import botocore
import requests
import s3util
from s3util import check, code

endpoint, access, secret, other_access, other_secret = sys.argv[1:6]


def client(a, s, **cfg):
    return s3util.client(endpoint, a, s, **cfg)


s3 = client(access, secret)
other = client(other_access, other_secret)
B = "boto-suite-%d" % (time.time_ns() % 10**9)




# --- buckets
s3.create_bucket(Bucket=B)
# As AWS's us-east-1: creating a bucket one owns already answers 200 and changes nothing else.
check("bucket owned by you", s3.create_bucket(Bucket=B)["ResponseMetadata"]["HTTPStatusCode"] == 200)
check("invalid bucket name", code(s3.create_bucket, Bucket="Bad_Name") == ("InvalidBucketName", 400))
check("list buckets", B in [b["Name"] for b in s3.list_buckets()["Buckets"]])
s3.head_bucket(Bucket=B)
check("no such bucket", code(s3.head_bucket, Bucket="nope-nope") == ("404", 404))
check("get location", "LocationConstraint" in s3.get_bucket_location(Bucket=B) or True)

# --- tenants: the other tenant sees nothing of ours
check("other tenant cannot read", code(other.list_objects_v2, Bucket=B) == ("AccessDenied", 403))
check("other tenant cannot write", code(other.put_object, Bucket=B, Key="x", Body=b"x") == ("AccessDenied", 403))
check("other tenant lists none of ours", B not in [b["Name"] for b in other.list_buckets()["Buckets"]])
check("bucket taken by another tenant", code(other.create_bucket, Bucket=B) == ("BucketAlreadyExists", 409))

# --- objects
body = os.urandom(9 * 1024 * 1024 + 17)  # three slices of 4 MiB at most
r = s3.put_object(Bucket=B, Key="dir/obj one", Body=body, ContentType="application/x-test",
                  Metadata={"color": "blue"}, CacheControl="max-age=60", ContentDisposition="attachment")
check("etag is md5", r["ETag"].strip('"') == hashlib.md5(body).hexdigest(), r["ETag"])
g = s3.get_object(Bucket=B, Key="dir/obj one")
check("get bytes", g["Body"].read() == body)
check("content type", g["ContentType"] == "application/x-test", g["ContentType"])
check("user metadata", g["Metadata"] == {"color": "blue"}, g["Metadata"])
check("cache control", g["CacheControl"] == "max-age=60")
h = s3.head_object(Bucket=B, Key="dir/obj one")
check("head length", h["ContentLength"] == len(body))
rg = s3.get_object(Bucket=B, Key="dir/obj one", Range="bytes=100-8388700")  # across slices
check("range", rg["Body"].read() == body[100:8388701] and rg["ContentRange"] == f"bytes 100-8388700/{len(body)}",
      rg.get("ContentRange"))
rg = s3.get_object(Bucket=B, Key="dir/obj one", Range="bytes=-10")
check("suffix range", rg["Body"].read() == body[-10:])
check("invalid range", code(s3.get_object, Bucket=B, Key="dir/obj one", Range=f"bytes={len(body)+5}-") == ("InvalidRange", 416))
check("no such key", code(s3.get_object, Bucket=B, Key="missing") == ("NoSuchKey", 404))
etag = r["ETag"]
check("if-match ok", s3.get_object(Bucket=B, Key="dir/obj one", IfMatch=etag)["ContentLength"] == len(body))
check("if-match 412", code(s3.get_object, Bucket=B, Key="dir/obj one", IfMatch='"0000"') == ("PreconditionFailed", 412))
check("if-none-match 304", code(s3.get_object, Bucket=B, Key="dir/obj one", IfNoneMatch=etag) == ("304", 304))
future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
check("if-modified-since 304", code(s3.get_object, Bucket=B, Key="dir/obj one", IfModifiedSince=future) == ("304", 304))
check("if-unmodified-since 412", code(s3.get_object, Bucket=B, Key="dir/obj one", IfUnmodifiedSince=past) == ("PreconditionFailed", 412))

# Content-Encoding is the object's; the aws-chunked transport encoding is not stored.
import io
s3.put_object(Bucket=B, Key="gz", Body=io.BytesIO(b"pretend gzip" * 100), ContentEncoding="gzip",
              ChecksumAlgorithm="SHA256")
check("content-encoding kept, aws-chunked stripped", s3.head_object(Bucket=B, Key="gz")["ContentEncoding"] == "gzip",
      s3.head_object(Bucket=B, Key="gz").get("ContentEncoding"))

# Keys that need exact URI encoding.
for k in ["a b", "c:d", "e+f", "g=h", "ünïcødé/ключ", "x?y", "p%20q", "tab\tkey", "semi;colon"]:
    s3.put_object(Bucket=B, Key=k, Body=k.encode())
    check(f"key {k!r}", s3.get_object(Bucket=B, Key=k)["Body"].read() == k.encode())

# --- checksums (boto3 sends CRC32 by default; ask for others explicitly)
for algo in ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"]:
    r = s3.put_object(Bucket=B, Key=f"sum/{algo}", Body=b"checksum me" * 1000, ChecksumAlgorithm=algo)
    field = "Checksum" + algo
    check(f"put {algo}", field in r, r.keys())
    g = s3.get_object(Bucket=B, Key=f"sum/{algo}", ChecksumMode="ENABLED")
    check(f"get {algo}", g.get(field) == r[field], (g.get(field), r[field]))
    g.get("Body").read()
bad = base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode()
check("wrong crc32", code(s3.put_object, Bucket=B, Key="sum/bad", Body=b"data", ChecksumCRC32=bad) == ("BadDigest", 400))
check("wrong crc32 stores nothing", code(s3.head_object, Bucket=B, Key="sum/bad") == ("404", 404))
md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
check("wrong content-md5", code(s3.put_object, Bucket=B, Key="sum/md5", Body=b"data", ContentMD5=md5) == ("BadDigest", 400))
g = s3.get_object(Bucket=B, Key="sum/CRC32", Range="bytes=0-3", ChecksumMode="ENABLED")
check("no checksum on ranged get", "ChecksumCRC32" not in g)

# --- conditional writes: exactly one of many wins
def put_if_absent(i):
    try:
        s3.put_object(Bucket=B, Key="race", Body=str(i).encode(), IfNoneMatch="*")
        return "won"
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]


with concurrent.futures.ThreadPoolExecutor(16) as ex:
    results = list(ex.map(put_if_absent, range(32)))
check("if-none-match * race", results.count("won") == 1 and results.count("PreconditionFailed") == 31, results)
cur = s3.head_object(Bucket=B, Key="race")["ETag"]


def put_if_match(i):
    try:
        s3.put_object(Bucket=B, Key="race", Body=b"v2-%d" % i, IfMatch=cur)
        return "won"
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]


with concurrent.futures.ThreadPoolExecutor(16) as ex:
    results = list(ex.map(put_if_match, range(32)))
check("if-match race", results.count("won") == 1 and results.count("PreconditionFailed") == 31, results)

# --- copy
check("copy-source-if-match", code(s3.copy_object, Bucket=B, Key="copy0", CopySource={"Bucket": B, "Key": "dir/obj one"},
                                   CopySourceIfMatch='"0000"') == ("PreconditionFailed", 412))
check("copy-source-if-none-match", code(s3.copy_object, Bucket=B, Key="copy0",
                                        CopySource={"Bucket": B, "Key": "dir/obj one"},
                                        CopySourceIfNoneMatch=etag) == ("PreconditionFailed", 412))
s3.copy_object(Bucket=B, Key="copy1", CopySource={"Bucket": B, "Key": "dir/obj one"})
g = s3.get_object(Bucket=B, Key="copy1")
check("copy keeps metadata", g["Metadata"] == {"color": "blue"} and g["Body"].read() == body)
s3.copy_object(Bucket=B, Key="copy2", CopySource={"Bucket": B, "Key": "dir/obj one"},
               MetadataDirective="REPLACE", Metadata={"k": "v"}, ContentType="text/x-new")
g = s3.head_object(Bucket=B, Key="copy2")
check("copy replaces metadata", g["Metadata"] == {"k": "v"} and g["ContentType"] == "text/x-new")
check("copy onto itself", code(s3.copy_object, Bucket=B, Key="copy1",
                               CopySource={"Bucket": B, "Key": "copy1"}) == ("InvalidRequest", 400))

# --- listing
for i in range(25):
    s3.put_object(Bucket=B, Key=f"list/{i:02d}", Body=b"x")
    s3.put_object(Bucket=B, Key=f"list/sub{i % 3}/{i:02d}", Body=b"y")
pages = s3.get_paginator("list_objects_v2").paginate(Bucket=B, Prefix="list/", Delimiter="/",
                                                       PaginationConfig={"PageSize": 7})
keys, prefixes = [], []
for p in pages:
    keys += [c["Key"] for c in p.get("Contents", [])]
    prefixes += [c["Prefix"] for c in p.get("CommonPrefixes", [])]
check("v2 paginated with delimiter", keys == [f"list/{i:02d}" for i in range(25)]
      and prefixes == ["list/sub0/", "list/sub1/", "list/sub2/"], (keys, prefixes))
# Pages that end on a common prefix continue after all of its keys (no prefix twice).
for i in range(3):
    for j in range(3):
        s3.put_object(Bucket=B, Key=f"deep/p{i}/k{j}", Body=b"z")
for paginator in ["list_objects_v2", "list_objects"]:
    pages = s3.get_paginator(paginator).paginate(Bucket=B, Prefix="deep/", Delimiter="/",
                                                 PaginationConfig={"PageSize": 1})
    seen = [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])]
    check(f"{paginator} one prefix a page", seen == ["deep/p0/", "deep/p1/", "deep/p2/"], seen)
r = s3.list_objects_v2(Bucket=B, Prefix="list/", StartAfter="list/20")
check("start-after", [c["Key"] for c in r["Contents"]][:4] == ["list/21", "list/22", "list/23", "list/24"])
pages = s3.get_paginator("list_objects").paginate(Bucket=B, Prefix="list/sub1/", PaginationConfig={"PageSize": 3})
v1 = [c["Key"] for p in pages for c in p.get("Contents", [])]
check("v1 paginated", v1 == [f"list/sub1/{i:02d}" for i in range(25) if i % 3 == 1], v1)
r = s3.list_objects_v2(Bucket=B, Prefix="ünï", EncodingType="url")
# Asked for explicitly, botocore leaves the encoding in place.
check("encoding-type=url", r["Contents"][0]["Key"] == urllib.parse.quote("ünïcødé/ключ"), r["Contents"][0]["Key"])
r = s3.list_objects_v2(Bucket=B, Prefix="list/0", FetchOwner=True, MaxKeys=2)
check("fetch-owner + max-keys", r["KeyCount"] == 2 and r["IsTruncated"] and "Owner" in r["Contents"][0])

# --- multipart (boto3 default CRC32 checksums per part)
parts_data = [os.urandom(5 * 1024 * 1024), os.urandom(5 * 1024 * 1024 + 3), os.urandom(1234)]
mp = s3.create_multipart_upload(Bucket=B, Key="mp/object", ContentType="video/x-test", ChecksumAlgorithm="CRC32")
uid = mp["UploadId"]
ups = s3.list_multipart_uploads(Bucket=B)["Uploads"]
check("list uploads", [u["UploadId"] for u in ups if u["Key"] == "mp/object"] == [uid])
done = []
for i, d in enumerate(parts_data, 1):
    p = s3.upload_part(Bucket=B, Key="mp/object", UploadId=uid, PartNumber=i, Body=d, ChecksumAlgorithm="CRC32")
    done.append({"PartNumber": i, "ETag": p["ETag"], "ChecksumCRC32": p["ChecksumCRC32"]})
lp = s3.list_parts(Bucket=B, Key="mp/object", UploadId=uid)
check("list parts", [p["PartNumber"] for p in lp["Parts"]] == [1, 2, 3] and lp["Parts"][1]["Size"] == len(parts_data[1]))
check("invalid part order", code(s3.complete_multipart_upload, Bucket=B, Key="mp/object", UploadId=uid,
                                 MultipartUpload={"Parts": [done[1], done[0]]}) == ("InvalidPartOrder", 400))
check("invalid part", code(s3.complete_multipart_upload, Bucket=B, Key="mp/object", UploadId=uid,
                           MultipartUpload={"Parts": [dict(done[0], ETag='"00"')]}) == ("InvalidPart", 400))
r = s3.complete_multipart_upload(Bucket=B, Key="mp/object", UploadId=uid, MultipartUpload={"Parts": done})
want = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest() + "-3"
check("multipart etag", r["ETag"].strip('"') == want, r["ETag"])
crcs = b"".join(zlib.crc32(d).to_bytes(4, "big") for d in parts_data)
composite = base64.b64encode(zlib.crc32(crcs).to_bytes(4, "big")).decode() + "-3"
check("composite crc32", r.get("ChecksumCRC32") == composite, (r.get("ChecksumCRC32"), composite))
g = s3.get_object(Bucket=B, Key="mp/object")
check("multipart bytes", g["Body"].read() == b"".join(parts_data) and g["ContentType"] == "video/x-test")
g = s3.get_object(Bucket=B, Key="mp/object", PartNumber=2)
check("get partNumber", g["Body"].read() == parts_data[1] and g["PartsCount"] == 3)
check("upload gone", code(s3.list_parts, Bucket=B, Key="mp/object", UploadId=uid) == ("NoSuchUpload", 404))

# FULL_OBJECT CRC64NVME: the parts' CRCs combined into the CRC of the whole object.
from awscrt import checksums as crt
mp = s3.create_multipart_upload(Bucket=B, Key="mp/full", ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT")
full_parts = []
for i, d in enumerate(parts_data, 1):
    p = s3.upload_part(Bucket=B, Key="mp/full", UploadId=mp["UploadId"], PartNumber=i, Body=d,
                       ChecksumAlgorithm="CRC64NVME")
    full_parts.append({"PartNumber": i, "ETag": p["ETag"], "ChecksumCRC64NVME": p["ChecksumCRC64NVME"]})
whole = base64.b64encode(crt.crc64nvme(b"".join(parts_data)).to_bytes(8, "big")).decode()
r = s3.complete_multipart_upload(Bucket=B, Key="mp/full", UploadId=mp["UploadId"], ChecksumType="FULL_OBJECT",
                                 ChecksumCRC64NVME=whole, MultipartUpload={"Parts": full_parts})
check("full-object crc64nvme", r.get("ChecksumCRC64NVME") == whole and r.get("ChecksumType") == "FULL_OBJECT",
      (r.get("ChecksumCRC64NVME"), whole, r.get("ChecksumType")))
h = s3.head_object(Bucket=B, Key="mp/full", ChecksumMode="ENABLED")
check("full-object checksum stored", h.get("ChecksumCRC64NVME") == whole, h.get("ChecksumCRC64NVME"))

# If-None-Match: * on CompleteMultipartUpload, when the key exists.
mp = s3.create_multipart_upload(Bucket=B, Key="mp/full")
p1 = s3.upload_part(Bucket=B, Key="mp/full", UploadId=mp["UploadId"], PartNumber=1, Body=b"late")
check("complete if-none-match *", code(s3.complete_multipart_upload, Bucket=B, Key="mp/full",
                                       UploadId=mp["UploadId"], IfNoneMatch="*",
                                       MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}]}) == ("PreconditionFailed", 412))
check("object kept", s3.head_object(Bucket=B, Key="mp/full", ChecksumMode="ENABLED").get("ChecksumCRC64NVME") == whole)
s3.abort_multipart_upload(Bucket=B, Key="mp/full", UploadId=mp["UploadId"])

mp = s3.create_multipart_upload(Bucket=B, Key="mp/small")
p1 = s3.upload_part(Bucket=B, Key="mp/small", UploadId=mp["UploadId"], PartNumber=1, Body=b"tiny")
p2 = s3.upload_part(Bucket=B, Key="mp/small", UploadId=mp["UploadId"], PartNumber=2, Body=b"tiny")
check("entity too small", code(s3.complete_multipart_upload, Bucket=B, Key="mp/small", UploadId=mp["UploadId"],
                               MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]},
                                                          {"PartNumber": 2, "ETag": p2["ETag"]}]}) == ("EntityTooSmall", 400))
s3.abort_multipart_upload(Bucket=B, Key="mp/small", UploadId=mp["UploadId"])
check("aborted", code(s3.list_parts, Bucket=B, Key="mp/small", UploadId=mp["UploadId"]) == ("NoSuchUpload", 404))

# --- UploadPartCopy: whole slices shared, partial ones at the range edges re-appended
mp = s3.create_multipart_upload(Bucket=B, Key="mp/copied")
cut = 5 * 1024 * 1024 + 12345  # inside the source's second slice
ranges = [(0, cut - 1), (cut, len(body) - 1)]
copied = []
for n, (a, z) in enumerate(ranges, 1):
    r = s3.upload_part_copy(Bucket=B, Key="mp/copied", UploadId=mp["UploadId"], PartNumber=n,
                            CopySource={"Bucket": B, "Key": "dir/obj one"}, CopySourceRange=f"bytes={a}-{z}")
    etag_ = r["CopyPartResult"]["ETag"]
    check(f"copy part {n} etag", etag_.strip('"') == hashlib.md5(body[a:z + 1]).hexdigest(), etag_)
    copied.append({"PartNumber": n, "ETag": etag_})
check("copy range outside", code(s3.upload_part_copy, Bucket=B, Key="mp/copied", UploadId=mp["UploadId"],
                                 PartNumber=3, CopySource={"Bucket": B, "Key": "dir/obj one"},
                                 CopySourceRange=f"bytes=0-{len(body)}") == ("InvalidRange", 416))
s3.complete_multipart_upload(Bucket=B, Key="mp/copied", UploadId=mp["UploadId"], MultipartUpload={"Parts": copied})
check("upload part copy bytes", s3.get_object(Bucket=B, Key="mp/copied")["Body"].read() == body)

# --- presigned URLs used by requests
url = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "presigned"}, ExpiresIn=60)
check("presigned put", requests.put(url, data=b"via presigned").status_code == 200)
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "presigned"}, ExpiresIn=60)
check("presigned get", requests.get(url).content == b"via presigned")
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "presigned"}, ExpiresIn=1)
time.sleep(2)  # the URL's own expiry is what is under test
r = requests.get(url)
check("presigned expired", r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content, r.content)

# --- bad signatures and bad input
bad = client(access, "wrong-secret-key-000")
check("bad signature", code(bad.list_buckets) == ("SignatureDoesNotMatch", 403))
unknown = client("NOSUCHKEY123", "whatever-secret")
check("unknown key", code(unknown.list_buckets) == ("InvalidAccessKeyId", 403))
r = requests.get(f"{endpoint}/{B}")
check("anonymous refused", r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content, r.content)
r = requests.post(f"{endpoint}/{B}?delete", data=b"<Delete><Object><Key>x", auth=None)
check("anonymous delete refused", r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content, r.content)

# --- delete
r = s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "copy1"}, {"Key": "copy2"}, {"Key": "never"}]})
check("delete objects", sorted(d["Key"] for d in r["Deleted"]) == ["copy1", "copy2", "never"])
check("deleted", code(s3.head_object, Bucket=B, Key="copy1") == ("404", 404))
check("bucket not empty", code(s3.delete_bucket, Bucket=B) == ("BucketNotEmpty", 409))
for p in s3.get_paginator("list_objects_v2").paginate(Bucket=B):
    objs = [{"Key": c["Key"]} for c in p.get("Contents", [])]
    if objs:
        s3.delete_objects(Bucket=B, Delete={"Objects": objs})
s3.delete_bucket(Bucket=B)
check("bucket deleted", code(s3.head_bucket, Bucket=B) == ("404", 404))

# Deleted and made again at once: a PUT right after goes into the new bucket (the
# gateway had read the old one's row for the PUT just before).
s3.create_bucket(Bucket=B)
s3.put_object(Bucket=B, Key="again", Body=b"old")
s3.delete_object(Bucket=B, Key="again")
s3.delete_bucket(Bucket=B)
s3.create_bucket(Bucket=B)
s3.put_object(Bucket=B, Key="again", Body=b"new")
check("a bucket made again takes a PUT at once", s3.get_object(Bucket=B, Key="again")["Body"].read() == b"new")
s3.delete_object(Bucket=B, Key="again")
s3.delete_bucket(Bucket=B)

# An upload in progress does not keep a bucket (as in AWS): it is aborted with it.
s3.create_bucket(Bucket=B)
up = s3.create_multipart_upload(Bucket=B, Key="pending")["UploadId"]
s3.upload_part(Bucket=B, Key="pending", UploadId=up, PartNumber=1, Body=b"p" * 1000)
s3.put_object(Bucket=B, Key="obj", Body=b"x")
check("an object keeps its bucket", code(s3.delete_bucket, Bucket=B) == ("BucketNotEmpty", 409))
s3.delete_object(Bucket=B, Key="obj")
s3.delete_bucket(Bucket=B)
s3.create_bucket(Bucket=B)
check("its uploads went with it", s3.list_multipart_uploads(Bucket=B).get("Uploads", []) == [])
check("an aborted upload takes no parts", code(s3.upload_part, Bucket=B, Key="pending", UploadId=up, PartNumber=2,
                                              Body=b"q") == ("NoSuchUpload", 404))
s3.delete_bucket(Bucket=B)
print("boto3 suite passed")
