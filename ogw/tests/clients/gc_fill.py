"""A full cluster, emptied, fills again: PUT objects until the cluster refuses for want
of space (each refusal must be quick and say so), delete everything, and PUT again until
at least 80 % of the first amount is stored, within a deadline (GC must give the space
back on its own). Every object of the second round reads back byte-identical.

Usage: gc_fill.py ENDPOINT ACCESS SECRET DEADLINE_SECONDS
"""
import hashlib
import sys
import time

import botocore

from s3util import check, client

endpoint, access, secret, deadline = sys.argv[1:5]
deadline = float(deadline)
SIZE = 4 << 20
s3 = client(endpoint, access, secret, retries={"max_attempts": 1, "mode": "standard"})
s3.create_bucket(Bucket="fill")


def blob(i, rnd):
    seed = hashlib.sha256(f"{rnd}/{i}".encode()).digest()
    return (seed * (SIZE // len(seed) + 1))[:SIZE]


def put_until_full(rnd, stop_at=None, until=None):
    """PUTs objects until the cluster says it is full (or `stop_at` bytes are stored);
    with `until`, a full cluster is waited out until then. Returns the keys stored."""
    keys, stored, refusals = [], 0, 0
    i = 0
    while stop_at is None or stored < stop_at:
        key = f"{rnd}/{i:06d}"
        t = time.monotonic()
        try:
            s3.put_object(Bucket="fill", Key=key, Body=blob(i, rnd))
        except botocore.exceptions.ClientError as e:
            took = time.monotonic() - t
            err = e.response["Error"]
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            check("a full cluster answers 507 InsufficientCapacity",
                  (err["Code"], status) == ("InsufficientCapacity", 507), f"{err} {status}")
            check("a full cluster refuses within 2 s", took < 2.0, f"{took:.2f} s")
            refusals += 1
            if until is None:
                return keys, stored, refusals
            check("space came back before the deadline", time.monotonic() < until,
                  f"{stored} of {stop_at} bytes stored again")
            time.sleep(1)
            continue
        keys.append(key)
        stored += SIZE
        i += 1
    return keys, stored, refusals


keys, first, _ = put_until_full("a")
print(f"full after {first >> 20} MiB in {len(keys)} objects", flush=True)
check("the cluster took something", first > 0)
for n in range(0, len(keys), 1000):
    batch = [{"Key": k} for k in keys[n:n + 1000]]
    r = s3.delete_objects(Bucket="fill", Delete={"Objects": batch, "Quiet": True})
    check("every delete succeeded", not r.get("Errors"), str(r.get("Errors")))
t = time.monotonic()
again, second, waits = put_until_full("b", stop_at=int(first * 0.8), until=t + deadline)
print(f"stored {second >> 20} MiB again {time.monotonic() - t:.0f} s after the deletes ({waits} refusals)", flush=True)
for i, k in enumerate(again):
    got = s3.get_object(Bucket="fill", Key=k)["Body"].read()
    check(f"{k} reads back", got == blob(i, "b"))
print("gc fill passed")
