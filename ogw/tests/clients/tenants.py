"""A second tenant's key, created by the admin command, through every kind of request,
many times over: what it may not touch is refused with AccessDenied (never with an
authentication error), and what is its own works.

Also the connection-level cause of a SignatureDoesNotMatch seen in CI (issue 22):
botocore sends PUTs with `Expect: 100-continue` and, when the answer is a refusal
instead of `100 Continue`, does not send the body and reuses the connection. A
server that kept that connection open would later take the first bytes of the next
request as the unsent body and parse the rest as a request of its own ("ET / ..."),
whose signature cannot match. The raw-socket check below puts the next request's
bytes on the wire before the server can drain, so the old behaviour fails every time.

Usage: tenants.py ENDPOINT ACCESS SECRET OTHER_ACCESS OTHER_SECRET WORKERS ROUNDS
Exits non-zero on the first failure.
"""
import concurrent.futures
import hashlib
import socket
import sys
import time
import urllib.parse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import s3util
from s3util import code

endpoint, access, secret, other_access, other_secret, workers, rounds = sys.argv[1:8]
workers, rounds = int(workers), int(rounds)


def client(a, s):
    # A retry would hide a refused request behind a second attempt.
    return s3util.client(endpoint, a, s, retries={"max_attempts": 1, "mode": "standard"})


def check(name, got, want):
    if got != want:
        raise AssertionError(f"{name}: got {got!r}, expected {want!r}")


tag = time.time_ns() % 10**9
B = f"tenant-a-{tag}"
OB = f"tenant-b-{tag}"
setup = client(access, secret)
setup.create_bucket(Bucket=B)
setup.put_object(Bucket=B, Key="k", Body=b"tenant a's bytes")
# An upload in progress in the first tenant's bucket, with one part.
U = setup.create_multipart_upload(Bucket=B, Key="m")["UploadId"]
P1 = setup.upload_part(Bucket=B, Key="m", UploadId=U, PartNumber=1, Body=b"p" * (5 << 20))["ETag"]
client(other_access, other_secret).create_bucket(Bucket=OB)
OU = client(other_access, other_secret).create_multipart_upload(Bucket=OB, Key="own")["UploadId"]
denied = ("AccessDenied", 403)


def rounds_of(w):
    """One worker: its own clients (so its own connections), `rounds` times over."""
    s3 = client(access, secret)
    other = client(other_access, other_secret)
    mine = f"mine-{w}"
    other.put_object(Bucket=OB, Key=mine, Body=b"tenant b's bytes")
    for r in range(rounds):
        # Everything on the first tenant's bucket is refused, exactly with AccessDenied.
        check("list v2", code(other.list_objects_v2, Bucket=B), denied)
        check("list v1", code(other.list_objects, Bucket=B), denied)
        check("put", code(other.put_object, Bucket=B, Key="x", Body=b"x"), denied)
        check("put large", code(other.put_object, Bucket=B, Key="x", Body=b"y" * 70000), denied)
        check("get", code(other.get_object, Bucket=B, Key="k"), denied)
        # HEAD has no body: botocore reports the status as the code.
        check("head", code(other.head_object, Bucket=B, Key="k"), ("403", 403))
        check("head bucket", code(other.head_bucket, Bucket=B), ("403", 403))
        check("delete", code(other.delete_object, Bucket=B, Key="k"), denied)
        check("delete many", code(other.delete_objects, Bucket=B, Delete={"Objects": [{"Key": "k"}]}), denied)
        check("copy out", code(other.copy_object, Bucket=OB, Key="c", CopySource={"Bucket": B, "Key": "k"}), denied)
        check("copy in", code(other.copy_object, Bucket=B, Key="c", CopySource={"Bucket": OB, "Key": mine}), denied)
        check("multipart", code(other.create_multipart_upload, Bucket=B, Key="m"), denied)
        check("uploads", code(other.list_multipart_uploads, Bucket=B), denied)
        check("delete bucket", code(other.delete_bucket, Bucket=B), denied)
        # The first tenant's upload: no part, copy, listing, abort or completion.
        check("upload part", code(other.upload_part, Bucket=B, Key="m", UploadId=U, PartNumber=2, Body=b"x"), denied)
        check(
            "upload part copy in",
            code(other.upload_part_copy, Bucket=B, Key="m", UploadId=U, PartNumber=2, CopySource={"Bucket": OB, "Key": mine}),
            denied,
        )
        check(
            "upload part copy out",
            code(other.upload_part_copy, Bucket=OB, Key="own", UploadId=OU, PartNumber=1, CopySource={"Bucket": B, "Key": "k"}),
            denied,
        )
        check("list parts", code(other.list_parts, Bucket=B, Key="m", UploadId=U), denied)
        check("abort", code(other.abort_multipart_upload, Bucket=B, Key="m", UploadId=U), denied)
        check(
            "complete",
            code(
                other.complete_multipart_upload,
                Bucket=B,
                Key="m",
                UploadId=U,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": P1}]},
            ),
            denied,
        )
        # Its own upload id used on the first tenant's bucket.
        check("own upload, other bucket", code(other.upload_part, Bucket=B, Key="own", UploadId=OU, PartNumber=1, Body=b"x"), denied)
        check("location", code(other.get_bucket_location, Bucket=B), denied)
        check("create taken bucket", code(other.create_bucket, Bucket=B), ("BucketAlreadyExists", 409))
        # ListBuckets right after refused requests on the same connections.
        names = [b["Name"] for b in other.list_buckets()["Buckets"]]
        check("list buckets", (B in names, OB in names), (False, True))
        # Its own bucket works.
        body = b"worker %d round %d" % (w, r)
        other.put_object(Bucket=OB, Key=mine, Body=body)
        check("own get", other.get_object(Bucket=OB, Key=mine)["Body"].read(), body)
        check("own list", [o["Key"] for o in other.list_objects_v2(Bucket=OB, Prefix=mine)["Contents"]], [mine])
        # The first tenant still reads its own object.
        check("first tenant", s3.get_object(Bucket=B, Key="k")["Body"].read(), b"tenant a's bytes")


# Several workers at once: a busy gateway is slower to drain a refused request's
# connection, which is when the old code misread the next request.
with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for f in [pool.submit(rounds_of, w) for w in range(workers)]:
        f.result()
print(f"{workers}x{rounds} rounds of a second tenant's requests ok")

# Nothing the refused requests asked for happened: the first tenant's bucket holds its
# one object with its bytes, and its upload its one part.
check("objects after", [o["Key"] for o in setup.list_objects_v2(Bucket=B)["Contents"]], ["k"])
check("bytes after", setup.get_object(Bucket=B, Key="k")["Body"].read(), b"tenant a's bytes")
check("uploads after", [u["UploadId"] for u in setup.list_multipart_uploads(Bucket=B).get("Uploads", [])], [U])
check("parts after", [(p["PartNumber"], p["ETag"]) for p in setup.list_parts(Bucket=B, Key="m", UploadId=U)["Parts"]], [(1, P1)])
print("a second tenant changed nothing of the first's")


# --- the raw-socket check: refused PUT with Expect: 100-continue, then the next
# request already on the wire.
u = urllib.parse.urlsplit(endpoint)
host = u.netloc
creds = Credentials(other_access, other_secret)


def signed(method, path, headers=None, body=b""):
    req = AWSRequest(method=method, url=f"{endpoint}{path}", data=body)
    for k, v in (headers or {}).items():
        req.headers[k] = v
    req.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    for k, v in req.headers.items():
        if k.lower() != "host":
            head += f"{k}: {v}\r\n"
    return head + "\r\n"


def read_response(sock_file):
    status = sock_file.readline()
    if not status:
        return None, {}, b""
    headers = {}
    while True:
        line = sock_file.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = sock_file.read(int(headers.get("content-length", "0")))
    return status.decode().strip(), headers, body


for i in range(20):
    put = signed("PUT", f"/{B}/x", {"Content-Length": "1", "Expect": "100-continue"}, b"x")
    nxt = signed("GET", "/")
    s = socket.create_connection((u.hostname, u.port))
    s.settimeout(30)
    # The PUT's head and, at once, the next request: the client never sends the body.
    s.sendall(put.encode() + nxt.encode())
    f = s.makefile("rb")
    status, headers, body = read_response(f)
    if status is None or " 403 " not in status + " " or b"AccessDenied" not in body:
        raise AssertionError(f"refused PUT: {status!r} {body!r}")
    # The server must not read the next request's bytes as the PUT's body: it closes the
    # connection (and says so) instead of answering a request made of the leftovers.
    if headers.get("connection", "").lower() != "close":
        raise AssertionError(f"a refused request with an unread body keeps the connection: {headers}")
    status2, _, body2 = read_response(f)
    if status2 is not None:
        raise AssertionError(f"the server answered the leftovers of a refused request: {status2} {body2[:300]!r}")
    s.close()
print("refused requests with unread bodies close their connections")
print("tenants suite passed")
