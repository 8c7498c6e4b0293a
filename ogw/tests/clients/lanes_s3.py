"""Objects through a gateway that is restarted (the test restarts it) while one of
its LogStreams cannot be opened.

Usage: lanes_s3.py ACCESS SECRET SEED
Commands on stdin, one per line; each answers one line:
  put ENDPOINT PREFIX N   writes N objects PREFIX-i (bucket "lanes", made if missing)
                          -> "put N"
  check ENDPOINT          reads back every object written so far, byte for byte
                          -> "checked N"
At end of input prints "lanes s3 passed".
"""
import hashlib
import random
import sys

from s3util import check, client

access, secret, seed = sys.argv[1:4]
rng = random.Random(int(seed))
want = {}
for line in sys.stdin:
    cmd = line.split()
    s3 = client(cmd[1], access, secret)
    if cmd[0] == "put":
        prefix, n = cmd[2], int(cmd[3])
        if not want:
            s3.create_bucket(Bucket="lanes")
        for i in range(n):
            body = rng.randbytes(rng.choice([1, 5000, 300_000]))
            s3.put_object(Bucket="lanes", Key=f"{prefix}-{i}", Body=body)
            want[f"{prefix}-{i}"] = hashlib.sha256(body).hexdigest()
        print(f"put {n}", flush=True)
    elif cmd[0] == "check":
        for k, digest in want.items():
            got = s3.get_object(Bucket="lanes", Key=k)["Body"].read()
            check(f"{k} reads back", hashlib.sha256(got).hexdigest() == digest, f"{len(got)} bytes")
        print(f"checked {len(want)}", flush=True)
print("lanes s3 passed", flush=True)
