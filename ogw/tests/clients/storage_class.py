"""Storage classes through boto3: STANDARD_IA and GLACIER_IR objects are erasure-coded
(the gateway's --ec-policy), STANDARD ones replicated; the class is stored and returned.

Usage: storage_class.py ENDPOINT ACCESS SECRET STATE_FILE PHASE
  write     create the bucket and objects, record their MD5s in STATE_FILE
  verify    every object reads back byte-identical (whole and ranged)
  degraded  every object either reads back byte-identical or fails with an error,
            never wrong bytes; prints how many of each
Exits non-zero on the first failure.
"""
import hashlib
import json
import sys

from s3util import check, client, code

endpoint, access, secret, state_file, phase = sys.argv[1:6]
# A read that fails must fail quickly and clearly, not be retried for minutes.
s3 = client(endpoint, access, secret, retries={"max_attempts": 1, "mode": "standard"}, read_timeout=60)
B = "classes"
MiB = 1 << 20


def body(n, seed):
    return hashlib.shake_256(b"%d" % seed).digest(n) if n else b""


if phase == "write":
    s3.create_bucket(Bucket=B)
    objects = {}  # key -> (md5, size, class)
    for i, (size, cls) in enumerate(
        [(1, "STANDARD_IA"), (1000, "STANDARD_IA"), (4096, "GLACIER_IR"), (5 * MiB + 3, "STANDARD_IA"),
         (17 * MiB + 11, "ONEZONE_IA"), (3000, "STANDARD"), (9 * MiB, None)]
    ):
        data = body(size, i)
        kw = {"StorageClass": cls} if cls else {}
        s3.put_object(Bucket=B, Key=f"o{i}", Body=data, **kw)
        objects[f"o{i}"] = (hashlib.md5(data).hexdigest(), size, cls or "STANDARD")
    # Multipart, erasure-coded: the class is given when the upload starts.
    up = s3.create_multipart_upload(Bucket=B, Key="mp", StorageClass="STANDARD_IA")
    parts, whole = [], b""
    for n in range(1, 4):
        data = body(5 * MiB + n * 1000, 100 + n)
        whole += data
        r = s3.upload_part(Bucket=B, Key="mp", UploadId=up["UploadId"], PartNumber=n, Body=data)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    check("list parts keeps the class",
          s3.list_parts(Bucket=B, Key="mp", UploadId=up["UploadId"])["StorageClass"] == "STANDARD_IA")
    s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
    objects["mp"] = (hashlib.md5(whole).hexdigest(), len(whole), "STANDARD_IA")
    # Copies change the class: the bytes are written anew with the other policy.
    s3.copy_object(Bucket=B, Key="ia-to-std", CopySource={"Bucket": B, "Key": "o3"})
    objects["ia-to-std"] = (objects["o3"][0], objects["o3"][1], "STANDARD")
    s3.copy_object(Bucket=B, Key="std-to-ia", CopySource={"Bucket": B, "Key": "o6"}, StorageClass="STANDARD_IA")
    objects["std-to-ia"] = (objects["o6"][0], objects["o6"][1], "STANDARD_IA")
    # Classes this store does not offer are refused, and nothing is stored.
    for bad in ["GLACIER", "DEEP_ARCHIVE"]:
        check(f"{bad} refused", code(s3.put_object, Bucket=B, Key="bad", Body=b"x", StorageClass=bad)
              == ("InvalidStorageClass", 400))
    check("nothing stored for refused classes", code(s3.head_object, Bucket=B, Key="bad") == ("404", 404))
    # The class is returned by HEAD, GET and listings (S3 omits it for STANDARD on HEAD).
    for k, (_, _, cls) in objects.items():
        h = s3.head_object(Bucket=B, Key=k)
        check(f"head {k} class", h.get("StorageClass", "STANDARD") == cls, h.get("StorageClass"))
        g = s3.get_object(Bucket=B, Key=k, Range="bytes=0-0") if objects[k][1] else s3.get_object(Bucket=B, Key=k)
        check(f"get {k} class", g.get("StorageClass", "STANDARD") == cls, g.get("StorageClass"))
    listed = {o["Key"]: o["StorageClass"] for o in s3.list_objects_v2(Bucket=B)["Contents"]}
    check("listing classes", all(listed[k] == v[2] for k, v in objects.items()), listed)
    with open(state_file, "w") as f:
        json.dump(objects, f)
    print(f"wrote {len(objects)} objects")
    sys.exit(0)

with open(state_file) as f:
    objects = json.load(f)

good = failed = 0
for k, (md5, size, cls) in sorted(objects.items()):
    try:
        got = s3.get_object(Bucket=B, Key=k)["Body"].read()
    except Exception as e:  # a clear failure: an S3 error, or a body cut short
        if phase != "degraded":
            raise
        print(f"{k}: read failed: {type(e).__name__}: {str(e)[:200]}")
        failed += 1
        continue
    if hashlib.md5(got).hexdigest() != md5:
        # Never acceptable. A body shorter than Content-Length raises above.
        raise AssertionError(f"{k}: wrong bytes ({len(got)} of {size})")
    if size > 2 * MiB and phase == "verify":
        a, b = size // 3, size // 3 + MiB + 5
        part = s3.get_object(Bucket=B, Key=k, Range=f"bytes={a}-{b}")["Body"].read()
        check(f"range of {k}", part == body(size, int(k[1:]))[a:b + 1] if k[0] == "o" and k[1:].isdigit() else len(part) == b - a + 1)
    good += 1
print(f"{phase}: {good} read back identical, {failed} failed")
if phase == "verify":
    check("all objects read back", failed == 0)
