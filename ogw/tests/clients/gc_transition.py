"""Lazy erasure coding: a bucket whose objects move to an erasure-coded policy once a
second old (`ogw bucket-transition`). Objects of many sizes, a multipart one and a
copy sharing slices are written replicated; while GC moves them, a reader GETs every
key and a writer overwrites some (a write racing a move wins; its object moves later).

Usage: gc_transition.py ENDPOINT ACCESS SECRET SEED
Prints "bucket ready" and waits for a line on stdin (the test sets the rule); prints
"moved N objects: live L bytes, overwritten O bytes" once every object reports
STANDARD_IA, then waits for a line on stdin (the test waits for GC to delete the
replicas) and checks every object again; last line "gc transition passed".
"""
import hashlib
import random
import sys
import threading
import time

from s3util import check, client

endpoint, access, secret, seed = sys.argv[1:5]
rng = random.Random(int(seed))
MiB = 1 << 20
B = "cold"
DEADLINE = 180

s3 = client(endpoint, access, secret, max_pool_connections=8)
s3.create_bucket(Bucket=B)
print("bucket ready", flush=True)
sys.stdin.readline()

lock = threading.Lock()
model = {}  # key -> bytes last acknowledged
accepted = {}  # key -> digests a GET may return
overwritten = 0
errors = []


def digest(b):
    return hashlib.sha256(b).hexdigest()


def put(key, data):
    global overwritten
    with lock:
        accepted.setdefault(key, set()).add(digest(data))
    s3.put_object(Bucket=B, Key=key, Body=data)
    with lock:
        overwritten += len(model.get(key, b""))
        model[key] = data


sizes = [0, 1, 4096, 100_000, MiB, 3 * MiB + 17, 12 * MiB + 5] + [rng.randrange(1, 2 * MiB) for _ in range(9)]
for i, n in enumerate(sizes):
    put(f"obj/{i}", rng.randbytes(n))
# A multipart object (5 MiB + 5 MiB + a tail) and a copy sharing the slices of one.
parts = [rng.randbytes(5 * MiB), rng.randbytes(5 * MiB), rng.randbytes(777_777)]
up = s3.create_multipart_upload(Bucket=B, Key="mp")["UploadId"]
etags = [
    s3.upload_part(Bucket=B, Key="mp", UploadId=up, PartNumber=i + 1, Body=p)["ETag"] for i, p in enumerate(parts)
]
s3.complete_multipart_upload(
    Bucket=B, Key="mp", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]}
)
model["mp"] = b"".join(parts)
accepted["mp"] = {digest(model["mp"])}
s3.copy_object(Bucket=B, Key="copy", CopySource={"Bucket": B, "Key": "obj/5"})
model["copy"] = model["obj/5"]
accepted["copy"] = {digest(model["copy"])}

stop = threading.Event()
gets = [0]


def reader():
    r = random.Random(int(seed) + 1)
    while not stop.is_set():
        key = r.choice(sorted(accepted))
        got = s3.get_object(Bucket=B, Key=key)["Body"].read()
        with lock:
            ok = digest(got) in accepted[key]
            gets[0] += 1
        if not ok:
            errors.append(f"GET {key}: {len(got)} bytes that were never written there")


def writer():
    r = random.Random(int(seed) + 2)
    for _ in range(6):
        if stop.is_set():
            return
        put(f"obj/{r.randrange(len(sizes))}", r.randbytes(r.randrange(1, MiB)))
        time.sleep(0.7)


def classes():
    return {k: s3.head_object(Bucket=B, Key=k).get("StorageClass", "STANDARD") for k in model}


threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
for t in threads:
    t.start()
start = time.time()
while True:
    time.sleep(0.5)
    c = classes()
    if all(v == "STANDARD_IA" for v in c.values()) and not threads[1].is_alive():
        break
    if time.time() - start > DEADLINE or errors:
        stop.set()
        for t in threads:
            t.join()
        check("every object moved", False, f"after {time.time() - start:.0f} s: {c}; errors {errors[:3]}")
stop.set()
for t in threads:
    t.join()
check("no GET returned wrong bytes", not errors, "; ".join(errors[:5]))
# The copy was made sharing the slices of obj/5: its replicated bytes are stored once.
live = sum(len(v) for v in model.values()) - len(model["copy"])
print(f"moved {len(model)} objects: live {live} bytes, overwritten {overwritten} bytes ({gets[0]} GETs meanwhile)", flush=True)

sys.stdin.readline()
for k, v in sorted(model.items()):
    got = s3.get_object(Bucket=B, Key=k)["Body"].read()
    check(f"{k} reads back as last written", got == v, f"{len(got)} bytes, wrote {len(v)}")
    h = s3.head_object(Bucket=B, Key=k)
    check(f"{k} reports STANDARD_IA", h.get("StorageClass") == "STANDARD_IA", str(h.get("StorageClass")))
print("gc transition passed", flush=True)
