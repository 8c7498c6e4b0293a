"""Small objects kept in their catalog row (`catalog::Layout::Inline`), through boto3:
every way to read, copy, version, append to, encrypt and delete them returns the bytes
written, and the catalog (read here with Python's sqlite3) keeps exactly the objects of
at most INLINE_MAX bytes written whole in their rows, naming no extents.

Usage: inline.py ENDPOINT ACCESS SECRET DB_FILE INLINE_MAX
"""
import base64
import hashlib
import os
import sqlite3
import sys
import time

from s3util import check, client, code

endpoint, access, secret, db_file, inline_max = sys.argv[1:6]
inline_max = int(inline_max)
s3 = client(endpoint, access, secret)
B = "inline-%d" % (time.time_ns() % 10**9)
s3.create_bucket(Bucket=B)
db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)


def stored(key, bucket=B):
    """The `slices` column of the current row of `key`: (kept bytes or None, its length)."""
    r = db.execute("SELECT slices, rid FROM objects WHERE bucket = ? AND okey = ?", (bucket, key.encode())).fetchone()
    assert r is not None, f"no row for {key}"
    col, rid = r
    refs = db.execute("SELECT COUNT(*) FROM extent_refs WHERE owner = ?", ("o:" + rid,)).fetchone()[0]
    if len(col) % 24 == 0:
        return None, refs
    return col[1:] if col[0] == 0x49 else col[2:], refs


def kept(key, bucket=B):
    return stored(key, bucket)[0]


def get(key, **kw):
    return s3.get_object(Bucket=B, Key=key, **kw)["Body"].read()


def body(n, seed):
    return hashlib.shake_256(b"%d-%d" % (seed, n)).digest(n) if n else b""


# Sizes around the limit, and around the lengths where the stored header pads (a
# length one short of a multiple of 24).
sizes = sorted({0, 1, 22, 23, 24, 47, 100, 4095, 4096, 4097, 100_000} | {inline_max - 1, inline_max, inline_max + 1})
sizes = [n for n in sizes if n >= 0]
for n in sizes:
    data = body(n, 1)
    r = s3.put_object(Bucket=B, Key=f"o{n}", Body=data)
    check(f"{n} bytes: the ETag is their MD5", r["ETag"].strip('"') == hashlib.md5(data).hexdigest(), r["ETag"])
    got, refs = stored(f"o{n}")
    if 0 < n <= inline_max:
        check(f"{n} bytes are kept in the row, naming no extent", got == data and refs == 0, (got and len(got), refs))
    else:
        check(f"{n} bytes are not kept in the row", got is None, len(got or b""))
    check(f"{n} bytes read back", get(f"o{n}") == data)
    h = s3.head_object(Bucket=B, Key=f"o{n}")
    check(f"{n} bytes: HEAD's length", h["ContentLength"] == n, h["ContentLength"])

data = body(4096, 1)
for rng, want in [("bytes=0-0", data[:1]), ("bytes=100-199", data[100:200]), ("bytes=-10", data[-10:]),
                  ("bytes=4000-", data[4000:]), ("bytes=4090-5000", data[4090:])]:
    r = s3.get_object(Bucket=B, Key="o4096", Range=rng)
    check(f"4096 bytes: Range {rng}", r["Body"].read() == want and r["ContentRange"].startswith("bytes "))
check("4096 bytes: a range past the end is 416", code(s3.get_object, Bucket=B, Key="o4096", Range="bytes=5000-")
      == ("InvalidRange", 416))
check("4096 bytes: If-None-Match with their ETag is 304",
      code(s3.get_object, Bucket=B, Key="o4096", IfNoneMatch=hashlib.md5(data).hexdigest())[1] == 304)

small, big = body(100, 2), body(200_000, 3)
# Overwrites each way.
s3.put_object(Bucket=B, Key="swap", Body=small)
s3.put_object(Bucket=B, Key="swap", Body=big)
check("kept bytes overwritten by a large object", get("swap") == big and kept("swap") is None)
s3.put_object(Bucket=B, Key="swap", Body=small)
check("a large object overwritten by kept bytes", get("swap") == small and kept("swap") == (small if inline_max >= 100 else None))

# Copies: the same class keeps the bytes in the copy's row; another class rewrites them.
s3.copy_object(Bucket=B, Key="copy", CopySource={"Bucket": B, "Key": "o100"})
check("a copy of kept bytes reads back", get("copy") == body(100, 1))
check("a copy of kept bytes keeps them", kept("copy") == (body(100, 1) if inline_max >= 100 else None))
s3.copy_object(Bucket=B, Key="copy-ia", CopySource={"Bucket": B, "Key": "o100"}, StorageClass="STANDARD_IA")
check("a copy to another class reads back", get("copy-ia") == body(100, 1))
check("... and reports it", s3.head_object(Bucket=B, Key="copy-ia").get("StorageClass") == "STANDARD_IA")
check("... and, still small, keeps them", kept("copy-ia") == (body(100, 1) if inline_max >= 100 else None))
s3.copy_object(Bucket=B, Key="o100", CopySource={"Bucket": B, "Key": "o100"}, MetadataDirective="REPLACE",
               Metadata={"a": "b"})
check("a copy onto itself (new metadata) keeps the bytes", get("o100") == body(100, 1)
      and s3.head_object(Bucket=B, Key="o100")["Metadata"] == {"a": "b"}
      and kept("o100") == (body(100, 1) if inline_max >= 100 else None))

# A part copied from kept bytes: written out as a part (parts are never kept).
up = s3.create_multipart_upload(Bucket=B, Key="mp")["UploadId"]
p1 = body(5 << 20, 4)
e1 = s3.upload_part(Bucket=B, Key="mp", UploadId=up, PartNumber=1, Body=p1)["ETag"]
r = s3.upload_part_copy(Bucket=B, Key="mp", UploadId=up, PartNumber=2, CopySource={"Bucket": B, "Key": "o4096"},
                        CopySourceRange="bytes=10-99")
e2 = r["CopyPartResult"]["ETag"]
check("a part copied from kept bytes has their MD5", e2.strip('"') == hashlib.md5(body(4096, 1)[10:100]).hexdigest())
s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=up,
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
check("a multipart object with a part copied from kept bytes", get("mp") == p1 + body(4096, 1)[10:100])

# An append to kept bytes: the object moves to slices, its bytes in order.
s3.put_object(Bucket=B, Key="log", Body=b"first;")
s3.put_object(Bucket=B, Key="log", Body=b"second;", WriteOffsetBytes=6)
check("an append to kept bytes", get("log") == b"first;second;" and kept("log") is None)

# Versions: each version keeps its own bytes; the noncurrent ones are read by id.
V = B + "-v"
s3.create_bucket(Bucket=V)
s3.put_bucket_versioning(Bucket=V, VersioningConfiguration={"Status": "Enabled"})
ids = [s3.put_object(Bucket=V, Key="k", Body=body(50 + i, 5))["VersionId"] for i in range(3)]
for i, v in enumerate(ids):
    got = s3.get_object(Bucket=V, Key="k", VersionId=v)["Body"].read()
    check(f"version {i} reads back its own bytes", got == body(50 + i, 5))
s3.delete_object(Bucket=V, Key="k", VersionId=ids[2])
check("the previous version is current again", s3.get_object(Bucket=V, Key="k")["Body"].read() == body(51, 5))
s3.delete_object(Bucket=V, Key="k")
check("behind a delete marker: NoSuchKey", code(s3.get_object, Bucket=V, Key="k") == ("NoSuchKey", 404))
check("a noncurrent version still reads", s3.get_object(Bucket=V, Key="k", VersionId=ids[0])["Body"].read()
      == body(50, 5))
vs = s3.list_object_versions(Bucket=V)
check("versions listed with their sizes", sorted(v["Size"] for v in vs.get("Versions", [])) == [50, 51])

# SSE-C: the row keeps the ciphertext; the key is needed to read.
key = os.urandom(32)
sse = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(key).decode(),
       "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode()}
s3.put_object(Bucket=B, Key="secret", Body=small, **sse)
got = kept("secret")
if inline_max >= 100:
    check("encrypted kept bytes are ciphertext", got is not None and len(got) == 100 and got != small)
check("encrypted kept bytes read back with the key", get("secret", **sse) == small)
check("... and not without it", code(s3.get_object, Bucket=B, Key="secret")[1] == 400)

# A body cut short of its Content-Length (the client half-closes): refused, nothing kept.
def cut_put(key, length, sent):
    import socket
    import urllib.parse
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    url = f"{endpoint}/{B}/{key}"
    req = AWSRequest(method="PUT", url=url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                                                    "Content-Length": str(length)})
    SigV4Auth(Credentials(access, secret), "s3", "us-east-1").add_auth(req)
    u = urllib.parse.urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    head = f"PUT {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    sock.sendall(head.encode() + b"\r\n" + sent)
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    return answer.split(b"\r\n", 1)[0].decode()


status = cut_put("cut", 100, b"x" * 40)
check("a body cut short is refused", status.split()[1].startswith("4"), status)
check("... and nothing is stored", code(s3.head_object, Bucket=B, Key="cut")[1] == 404)

# Deletes take the row with them.
s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": f"o{n}"} for n in sizes]})
left = [n for n in sizes if db.execute("SELECT 1 FROM objects WHERE bucket = ? AND okey = ?",
                                      (B, f"o{n}".encode())).fetchone()]
check("deleted objects leave no row", not left, left)
print("inline suite passed", flush=True)
