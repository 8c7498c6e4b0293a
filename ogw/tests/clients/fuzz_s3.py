"""Random S3 requests through the whole gateway: routing, authentication, our handlers,
the catalog and the data path. Each request is drawn from a seed (method, bucket, odd
keys, sub-resources with good and bad values, headers S3 knows with good and bad
values, XML bodies whole, cut or mangled, random bytes) and signed, so it gets past
authentication. Every answer must be a 2xx/3xx/4xx or 501, every error an S3 XML body
whose RequestId is the x-amz-request-id header; and a bucket the requests never name
must read back as it was written.

Usage: fuzz_s3.py ENDPOINT ACCESS SECRET SEED [REQUESTS]
"""
import collections
import hashlib
import random
import sys
import time
import urllib.parse

import boto3
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

endpoint, access, secret, seed = sys.argv[1:5]
count = int(sys.argv[5]) if len(sys.argv) > 5 else 1500
rng = random.Random(int(seed))
creds = Credentials(access, secret)
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                  region_name="us-east-1")
http = requests.Session()

tag = "%d" % (time.time_ns() % 10**9)
KEEP = "fz-keep-" + tag
BUCKETS = ["fz-a-" + tag, "fz-b-" + tag]
for b in [KEEP] + BUCKETS:
    s3.create_bucket(Bucket=b)
kept = {}
for i in range(8):
    k = f"kept/{i}" + "/é" * (i % 3)
    v = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 4096, 70000])))
    s3.put_object(Bucket=KEEP, Key=k, Body=v)
    kept[k] = v
KEYS = ["a", "dir/b", "dir/", "sp ace", "pct%25", "q?x", "hash#1", "plus+", "uni-é-中", "..", "./x", "a//b",
        "~tilde", "k" * 1024, "ctl\x01", "semi;colon", "amp&=eq", "star*", "tab\tk", "emoji-😀"]
uploads = []
for b in BUCKETS:
    for k in KEYS[:6]:
        s3.put_object(Bucket=b, Key=k, Body=b"seed-" + k.encode())
    uploads.append((b, "mp", s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]))
s3.upload_part(Bucket=BUCKETS[0], Key="mp", UploadId=uploads[0][2], PartNumber=1, Body=b"p" * (5 << 20))


def pick(*xs):
    return rng.choice(xs)


def junk(n=None):
    n = n if n is not None else rng.choice([0, 1, 7, 64, 300])
    return "".join(rng.choice("abcXYZ019-_.~%/?=&+ <>\"'\\é中\x7f") for _ in range(n))


def number():
    return str(pick(-1, 0, 1, 2, 999, 1000, 1001, 10000, 10001, 2**31, 2**63, 2**64, "abc", "", "1.5", "0x10"))


def upload_id():
    return pick(rng.choice(uploads)[2], junk(), "", "0" * 64)


SUBRESOURCES = {
    "uploads": lambda: pick("", junk(3)),
    "uploadId": upload_id,
    "partNumber": number,
    "list-type": lambda: pick("2", "1", "3", junk(2)),
    "max-keys": number,
    "max-uploads": number,
    "max-parts": number,
    "max-buckets": number,
    "part-number-marker": number,
    "prefix": lambda: pick("", "dir/", junk()),
    "delimiter": lambda: pick("", "/", "\n", junk(2)),
    "marker": junk,
    "key-marker": junk,
    "upload-id-marker": junk,
    "start-after": junk,
    "continuation-token": lambda: pick(junk(), "AAAA", "////", ""),
    "encoding-type": lambda: pick("url", "", junk(4)),
    "fetch-owner": lambda: pick("true", "false", junk(2)),
    "delete": lambda: "",
    "tagging": lambda: "",
    "versioning": lambda: "",
    "versions": lambda: "",
    "versionId": lambda: pick("null", junk()),
    "acl": lambda: "",
    "cors": lambda: "",
    "lifecycle": lambda: "",
    "policy": lambda: "",
    "location": lambda: "",
    "attributes": lambda: "",
    "object-lock": lambda: "",
    "retention": lambda: "",
    "legal-hold": lambda: "",
    "website": lambda: "",
    "logging": lambda: "",
    "notification": lambda: "",
    "replication": lambda: "",
    "encryption": lambda: "",
    "accelerate": lambda: "",
    "requestPayment": lambda: "",
    "restore": lambda: "",
    "select": lambda: "",
    "select-type": lambda: "2",
    "x-id": lambda: pick("PutObject", "GetObject", junk(5)),
    "response-content-type": junk,
    "response-content-disposition": junk,
    "response-expires": junk,
}


def copy_source():
    b = rng.choice(BUCKETS + [KEEP, "no-such-bucket-" + tag])
    k = rng.choice(KEYS + list(kept))
    src = "/" + b + "/" + urllib.parse.quote(k)
    return pick(src, src + "?versionId=" + junk(4), junk(), "/" + b, "/", b + "/" + k, urllib.parse.quote(src, safe=""))


def http_date():
    return pick("Tue, 01 Dec 2026 00:00:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", junk(10), "")


HEADERS = {
    "Range": lambda: pick("bytes=0-0", "bytes=0-", "bytes=-1", "bytes=5-2", "bytes=0-1,3-4", "bytes=99999999-",
                          "bytes=-0", "items=0-1", junk(6)),
    "If-Match": lambda: pick("*", '"' + "0" * 32 + '"', junk(8)),
    "If-None-Match": lambda: pick("*", '"' + "0" * 32 + '"', junk(8)),
    "If-Modified-Since": http_date,
    "If-Unmodified-Since": http_date,
    "x-amz-copy-source": copy_source,
    "x-amz-copy-source-range": lambda: pick("bytes=0-0", "bytes=0-5242879", "bytes=9-1", junk(5)),
    "x-amz-copy-source-if-match": lambda: pick("*", junk(4)),
    "x-amz-metadata-directive": lambda: pick("COPY", "REPLACE", junk(4)),
    "x-amz-tagging-directive": lambda: pick("COPY", "REPLACE", junk(4)),
    "Content-MD5": lambda: pick("1B2M2Y8AsgTpgAMYC5r6Mw==", junk(24), ""),
    "x-amz-checksum-crc32": lambda: pick("AAAAAA==", junk(8)),
    "x-amz-checksum-crc32c": lambda: pick("AAAAAA==", junk(8)),
    "x-amz-checksum-crc64nvme": lambda: pick("AAAAAAAAAAA=", junk(12)),
    "x-amz-checksum-sha256": lambda: pick("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", junk(44)),
    "x-amz-checksum-algorithm": lambda: pick("CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME", junk(5)),
    "x-amz-checksum-type": lambda: pick("FULL_OBJECT", "COMPOSITE", junk(5)),
    "x-amz-sdk-checksum-algorithm": lambda: pick("CRC32", junk(5)),
    "x-amz-checksum-mode": lambda: pick("ENABLED", junk(3)),
    "x-amz-storage-class": lambda: pick("STANDARD", "STANDARD_IA", "GLACIER", "DEEP_ARCHIVE", junk(6)),
    "x-amz-tagging": lambda: pick("a=b", "a=b&c=d", junk()),
    "x-amz-acl": lambda: pick("private", "public-read", junk(5)),
    "x-amz-meta-fz": junk,
    "x-amz-meta-" + "m" * 200: junk,
    "Content-Type": lambda: pick("text/plain", "application/xml", "multipart/form-data; boundary=x", junk()),
    "Content-Encoding": lambda: pick("gzip", "aws-chunked", "gzip, aws-chunked", junk(4)),
    "Content-Disposition": junk,
    "Cache-Control": junk,
    "Expires": http_date,
    "x-amz-decoded-content-length": number,
    "x-amz-server-side-encryption": lambda: pick("AES256", "aws:kms", junk(4)),
    "x-amz-object-lock-mode": lambda: pick("GOVERNANCE", "COMPLIANCE", junk(4)),
    "x-amz-object-lock-retain-until-date": http_date,
    "x-amz-bypass-governance-retention": lambda: pick("true", junk(3)),
    "x-amz-expected-bucket-owner": junk,
    "x-amz-request-payer": lambda: "requester",
    "x-amz-write-offset-bytes": number,
    "x-amz-mp-parts-count": number,
    "x-amz-object-attributes": lambda: pick("ETag", "ETag,ObjectSize,ObjectParts,Checksum,StorageClass", junk(6)),
    "Expect": lambda: pick("100-continue", junk(4)),
}

XML = [
    b"<Delete><Object><Key>a</Key></Object><Object><Key>dir/b</Key><VersionId>null</VersionId></Object>"
    b"<Quiet>true</Quiet></Delete>",
    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"x\"</ETag></Part></CompleteMultipartUpload>",
    b"<CreateBucketConfiguration><LocationConstraint>us-east-1</LocationConstraint></CreateBucketConfiguration>",
    b"<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>",
    b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
    b"<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>*</AllowedOrigin></CORSRule>"
    b"</CORSConfiguration>",
    b"<LifecycleConfiguration><Rule><ID>r</ID><Status>Enabled</Status><Filter><Prefix></Prefix></Filter>"
    b"<Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>",
    b"<AccessControlPolicy><Owner><ID>x</ID></Owner><AccessControlList/></AccessControlPolicy>",
    b'{"Version":"2012-10-17","Statement":[]}',
]


def mangle(b):
    choice = rng.randrange(7)
    if choice == 0 and b:
        return b[: rng.randrange(len(b))]
    if choice == 1 and b:
        b = bytearray(b)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.getrandbits(8)
        return bytes(b)
    if choice == 2:
        return b.replace(b"</", b"</" * 2, 1)
    if choice == 3:
        i = b.find(b"><")
        return b[: i + 1] * rng.randint(2, 50) + b[i + 1:] if i > 0 else b
    if choice == 4:
        return b.replace(b"1", str(rng.choice([0, -1, 2**70])).encode())
    if choice == 5:
        return b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>' + b
    return b


def body():
    c = rng.randrange(5)
    if c == 0:
        return b""
    if c == 1:
        return bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 100, 5000])))
    x = rng.choice(XML)
    return x if c == 2 else mangle(x)


def request():
    method = pick("GET", "GET", "PUT", "PUT", "POST", "DELETE", "HEAD")
    target = rng.randrange(10)
    if target == 0:
        path = "/"
    else:
        b = rng.choice(BUCKETS) if rng.random() < 0.8 else pick(
            "fz-new-" + tag, "no-such-" + tag, "UPPER", "a", "x" * 70, "b..c", "1.2.3.4")
        path = "/" + b
        if target > 2:
            path += "/" + urllib.parse.quote(rng.choice(KEYS + ["mp", junk(5)]), safe="/~")
    query = []
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 5])):
        k = rng.choice(list(SUBRESOURCES))
        query.append((k, SUBRESOURCES[k]()))
    headers = {}
    for _ in range(rng.choice([0, 1, 2, 4])):
        k = rng.choice(list(HEADERS))
        v = HEADERS[k]()
        if not v.isascii():
            # Signers and senders disagree on the bytes of other characters.
            v = urllib.parse.quote(v)
        # Bytes HTTP forbids in a header (hyper refuses the request before S3 sees it).
        headers[k] = "".join(c if c == "\t" or " " <= c != "\x7f" else " " for c in v)
    return method, path, query, headers, body() if method in ("PUT", "POST") or rng.random() < 0.05 else b""


def send(method, path, query, headers, data):
    qs = "&".join(urllib.parse.quote(k, safe="-_.~") + ("=" + urllib.parse.quote(v, safe="-_.~") if v else "")
                  for k, v in query)
    url = endpoint + path + ("?" + qs if qs else "")
    h = dict(headers)
    h["x-amz-content-sha256"] = pick(hashlib.sha256(data).hexdigest(), "UNSIGNED-PAYLOAD")
    req = AWSRequest(method=method, url=url, data=data, headers=h)
    S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    r = http.request(method, url, data=data, headers=dict(req.headers), timeout=60, allow_redirects=False,
                     stream=True)
    # The bytes as sent: an object stored with Content-Encoding: gzip is not gzip.
    return r.status_code, r.headers, r.raw.read(decode_content=False)


statuses = collections.Counter()
codes = collections.Counter()
for n in range(count):
    method, path, query, headers, data = request()
    what = f"request {n}: {method} {path} {query} {headers} body {data[:80]!r}"
    try:
        status, rheaders, content = send(method, path, query, headers, data)
    except requests.exceptions.RequestException as e:
        # A request line or header requests itself refuses to send is not the server's fault.
        if isinstance(e, (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader)):
            statuses["unsendable"] += 1
            continue
        raise AssertionError(f"{what}: no answer: {e}")
    statuses[status] += 1
    if status >= 500 and status != 501:
        raise AssertionError(f"{what}: {status} {content[:500]!r}")
    if status >= 300 and status != 304 and method != "HEAD":
        text = content.decode(errors="replace")
        rid = rheaders.get("x-amz-request-id")
        if "<Code>" not in text or f"<RequestId>{rid}</RequestId>" not in text:
            raise AssertionError(f"{what}: {status} without an S3 error body: {text[:500]!r} (id {rid})")
        codes[text.split("<Code>")[1].split("</Code>")[0]] += 1

# The bucket no request named is as it was.
listed = {o["Key"]: o["Size"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=KEEP)
          for o in p.get("Contents", [])}
assert listed == {k: len(v) for k, v in kept.items()}, listed
for k, v in kept.items():
    assert s3.get_object(Bucket=KEEP, Key=k)["Body"].read() == v, k
print("statuses", dict(sorted(statuses.items(), key=str)))
print("error codes", dict(codes.most_common()))
print(f"fuzz s3 passed: {count} requests, seed {seed}")
