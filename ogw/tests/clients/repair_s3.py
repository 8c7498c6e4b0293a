"""Objects through S3 while datanodes are lost for good (the test kills them): written
once as STANDARD (replica:3) and STANDARD_IA (ec:2+1), then read back whole after each
loss has been repaired.

Usage: repair_s3.py ENDPOINT ACCESS SECRET SEED
Writes the objects and prints "written N"; then, for every line on stdin, reads every
object back, checks its bytes, and prints "checked N"; at end of input prints
"repair s3 passed".
"""
import hashlib
import random
import sys

from s3util import check, client

endpoint, access, secret, seed = sys.argv[1:5]
rng = random.Random(int(seed))
s3 = client(endpoint, access, secret)
want = {}
for bucket, cls in (("hot", "STANDARD"), ("cold", "STANDARD_IA")):
    s3.create_bucket(Bucket=bucket)
    for i in range(24):
        body = rng.randbytes(rng.choice([1, 4096, 100_000, 1 << 20, 3 << 20]))
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=body, StorageClass=cls)
        want[(bucket, f"k{i}")] = hashlib.sha256(body).hexdigest()
print(f"written {len(want)}", flush=True)
for _ in sys.stdin:
    for (b, k), digest in want.items():
        got = s3.get_object(Bucket=b, Key=k)["Body"].read()
        check(f"{b}/{k} reads back", hashlib.sha256(got).hexdigest() == digest, f"{len(got)} bytes")
    print(f"checked {len(want)}", flush=True)
print("repair s3 passed", flush=True)
