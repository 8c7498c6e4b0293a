"""Churn under an aggressive GC: writers overwrite, delete, copy, multipart-upload and
UploadPartCopy their own keys (replicated and erasure-coded), while readers GET every
key and check that each body is one that was written to that key. Every body any key
may hold is registered (by SHA-256) before the write that stores it starts, so a read
of bytes that were never written there (another object's, a reused cluster's, a torn
mix) is caught.

Usage: gc_churn.py ENDPOINT ACCESS SECRET SECONDS SEED
Prints "churned" when the churn ends, then waits for a line on stdin (the test waits
for GC to delete what the churn left behind), checks every key against the last write
acknowledged for it, and prints "gc churn passed".
"""
import hashlib
import random
import sys
import threading
import time

import botocore

from s3util import check, client

endpoint, access, secret, seconds, seed = sys.argv[1:6]
seconds, seed = float(seconds), int(seed)
MiB = 1 << 20
WRITERS, READERS, KEYS = 3, 2, 6
BUCKETS = {"churn": None, "churn-ia": "STANDARD_IA"}

s3 = client(endpoint, access, secret, retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=32)
for b in BUCKETS:
    s3.create_bucket(Bucket=b)

lock = threading.Lock()
accepted = {}  # (bucket, key) -> set of SHA-256 digests a GET may return
stats = {"writes": 0, "gets": 0, "refused": 0, "get_failed": 0}
stop = threading.Event()
errors = []


def digest(b):
    return hashlib.sha256(b).hexdigest()


def body(rng, size):
    return rng.randbytes(size)


def accept(bk, data):
    with lock:
        accepted.setdefault(bk, set()).add(digest(data))


def bump(name):
    with lock:
        stats[name] += 1


def transient(e):
    """A refusal that leaves nothing behind: the write raced GC, the cluster was busy,
    or it was full for a moment (GC behind a churn on a loaded machine)."""
    status = e.response["ResponseMetadata"]["HTTPStatusCode"]
    return status in (500, 503, 507)


class Writer:
    def __init__(self, n):
        self.n = n
        self.rng = random.Random(seed * 100 + n)
        self.model = {}  # (bucket, key) -> bytes last acknowledged, or None when deleted

    def keys(self):
        return [(b, f"w{self.n}/k{i}") for b in BUCKETS for i in range(KEYS)]

    def put(self, bk, data):
        accept(bk, data)
        kw = {"StorageClass": BUCKETS[bk[0]]} if BUCKETS[bk[0]] else {}
        s3.put_object(Bucket=bk[0], Key=bk[1], Body=data, **kw)
        return data

    def copy(self, bk, src):
        accept(bk, self.model[src])
        kw = {"StorageClass": BUCKETS[bk[0]]} if BUCKETS[bk[0]] else {}
        s3.copy_object(Bucket=bk[0], Key=bk[1], CopySource={"Bucket": src[0], "Key": src[1]}, **kw)
        return self.model[src]

    def multipart(self, bk, src):
        """Part 1: 5 MiB written; part 2: a copy of `src` (UploadPartCopy), if any,
        else a small part written."""
        p1 = body(self.rng, 5 * MiB)
        if src is not None:
            p2 = self.model[src]
            lo = self.rng.randrange(len(p2))
            hi = self.rng.randrange(lo, len(p2))
            p2 = p2[lo : hi + 1]
        else:
            lo = hi = None
            p2 = body(self.rng, self.rng.randrange(1, 300_000))
        whole = p1 + p2
        accept(bk, whole)
        kw = {"StorageClass": BUCKETS[bk[0]]} if BUCKETS[bk[0]] else {}
        up = s3.create_multipart_upload(Bucket=bk[0], Key=bk[1], **kw)["UploadId"]
        try:
            e1 = s3.upload_part(Bucket=bk[0], Key=bk[1], UploadId=up, PartNumber=1, Body=p1)["ETag"]
            if src is not None:
                r = s3.upload_part_copy(
                    Bucket=bk[0], Key=bk[1], UploadId=up, PartNumber=2,
                    CopySource={"Bucket": src[0], "Key": src[1]}, CopySourceRange=f"bytes={lo}-{hi}",
                )
                e2 = r["CopyPartResult"]["ETag"]
            else:
                e2 = s3.upload_part(Bucket=bk[0], Key=bk[1], UploadId=up, PartNumber=2, Body=p2)["ETag"]
            parts = [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]
            s3.complete_multipart_upload(Bucket=bk[0], Key=bk[1], UploadId=up, MultipartUpload={"Parts": parts})
        except Exception:
            s3.abort_multipart_upload(Bucket=bk[0], Key=bk[1], UploadId=up)
            raise
        return whole

    def step(self):
        bk = self.rng.choice(self.keys())
        present = [k for k, v in self.model.items() if v is not None and k != bk]
        src = self.rng.choice(present) if present else None
        op = self.rng.choice(["put", "put", "put", "delete", "copy", "multipart"])
        if op == "put":
            size = self.rng.choice([1, 1000, 100_000, 3 * MiB, 9 * MiB])
            result = self.put(bk, body(self.rng, size))
        elif op == "delete":
            s3.delete_object(Bucket=bk[0], Key=bk[1])
            result = None
        elif op == "copy" and src is not None:
            result = self.copy(bk, src)
        else:
            result = self.multipart(bk, src)
        self.model[bk] = result
        bump("writes")

    def run(self):
        try:
            while not stop.is_set():
                try:
                    self.step()
                except botocore.exceptions.ClientError as e:
                    if not transient(e):
                        raise
                    bump("refused")  # not acknowledged: the model keeps the last write
        except Exception as e:  # noqa: BLE001
            errors.append(f"writer {self.n}: {e!r}")
            stop.set()


def reader(n):
    rng = random.Random(seed * 1000 + n)
    try:
        while not stop.is_set():
            b = rng.choice(list(BUCKETS))
            bk = (b, f"w{rng.randrange(WRITERS)}/k{rng.randrange(KEYS)}")
            try:
                data = s3.get_object(Bucket=bk[0], Key=bk[1])["Body"].read()
            except botocore.exceptions.ClientError as e:
                code = e.response["Error"]["Code"]
                if code == "NoSuchKey":
                    continue
                if transient(e):
                    bump("get_failed")  # a clean failure is allowed; wrong bytes are not
                    continue
                raise
            with lock:
                ok = digest(data) in accepted.get(bk, ())
            if not ok:
                raise AssertionError(f"GET {bk} returned {len(data)} bytes never written there")
            bump("gets")
    except Exception as e:  # noqa: BLE001
        errors.append(f"reader {n}: {e!r}")
        stop.set()


writers = [Writer(n) for n in range(WRITERS)]
threads = [threading.Thread(target=w.run) for w in writers]
threads += [threading.Thread(target=reader, args=(n,)) for n in range(READERS)]
for t in threads:
    t.start()
deadline = time.monotonic() + seconds
while time.monotonic() < deadline and not stop.is_set():
    time.sleep(0.2)
stop.set()
for t in threads:
    t.join()
check("no errors during the churn", not errors, "; ".join(errors))
print(f"churned: {stats}", flush=True)
check("the churn wrote and read", stats["writes"] > 20 and stats["gets"] > 20, str(stats))

sys.stdin.readline()
for w in writers:
    for bk, want in w.model.items():
        try:
            got = s3.get_object(Bucket=bk[0], Key=bk[1])["Body"].read()
        except botocore.exceptions.ClientError as e:
            got = None
            check(f"{bk} absent only as NoSuchKey", e.response["Error"]["Code"] == "NoSuchKey", str(e))
        check(f"{bk} reads back as last written", got == want,
              f"got {None if got is None else len(got)} bytes, want {None if want is None else len(want)}")
print("gc churn passed")
