"""Server-side encryption through boto3 (issue 17): SSE-C, SSE-S3 and SSE-KMS round
trips (whole, ranges, multipart, copies between them), the answers' headers, refusals
of missing, wrong and conflicting keys, a bucket's default encryption, and the bytes on
the datanodes' devices encrypted (a plaintext never found there, while a plain object's
is).

Usage: encryption.py ENDPOINT ACCESS SECRET DATA_DIR
"""
import base64
import hashlib
import os
import subprocess
import sys
import time

from s3util import check, client, code

endpoint, access, secret, data_dir = sys.argv[1:5]
s3 = client(endpoint, access, secret)
B = "sse-%d" % (time.time_ns() % 10**9)
s3.create_bucket(Bucket=B)


def ckey(seed):
    k = hashlib.sha256(seed).digest()
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(k).decode(),
            "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(k).digest()).decode()}


K1, K2 = ckey(b"one"), ckey(b"two")
body = os.urandom(300_000)

# --- SSE-C
r = s3.put_object(Bucket=B, Key="c", Body=body, **K1)
check("SSE-C PUT echoes the key's MD5", r.get("SSECustomerKeyMD5") == K1["SSECustomerKeyMD5"], r)
check("GET without the key refused", code(s3.get_object, Bucket=B, Key="c")[1] == 400)
check("GET with another key refused", code(s3.get_object, Bucket=B, Key="c", **K2)[1] == 400)
check("HEAD without the key refused", code(s3.head_object, Bucket=B, Key="c")[1] == 400)
check("GET with the key", s3.get_object(Bucket=B, Key="c", **K1)["Body"].read() == body)
check("a range across AES blocks", s3.get_object(Bucket=B, Key="c", Range="bytes=17-100020", **K1)["Body"].read()
      == body[17:100021])
bad = dict(K1, SSECustomerKeyMD5=base64.b64encode(b"x" * 16).decode())
check("a key whose MD5 does not match refused", code(s3.put_object, Bucket=B, Key="c2", Body=b"x", **bad)[1] == 400)
check("SSE-C with SSE-S3 at once refused",
      code(s3.put_object, Bucket=B, Key="c2", Body=b"x", ServerSideEncryption="AES256", **K1) == ("InvalidArgument", 400))
check("nothing stored by refusals", code(s3.head_object, Bucket=B, Key="c2")[1] == 404)

# --- SSE-S3, SSE-KMS
r = s3.put_object(Bucket=B, Key="s", Body=body, ServerSideEncryption="AES256")
check("SSE-S3 echoed", r.get("ServerSideEncryption") == "AES256")
g = s3.get_object(Bucket=B, Key="s")
check("SSE-S3 reads back, saying so", g["Body"].read() == body and g.get("ServerSideEncryption") == "AES256")
r = s3.put_object(Bucket=B, Key="k", Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId="key-a")
check("SSE-KMS echoes its key id", r.get("SSEKMSKeyId") == "key-a" and r.get("ServerSideEncryption") == "aws:kms", r)
h = s3.head_object(Bucket=B, Key="k")
check("HEAD says KMS and the key", h.get("ServerSideEncryption") == "aws:kms" and h.get("SSEKMSKeyId") == "key-a")
check("SSE-KMS reads back", s3.get_object(Bucket=B, Key="k")["Body"].read() == body)
check("a key id without aws:kms refused",
      code(s3.put_object, Bucket=B, Key="x", Body=b"x", SSEKMSKeyId="key-a") == ("InvalidArgument", 400))

# --- copies between encryptions
s3.copy_object(Bucket=B, Key="c-to-s", CopySource={"Bucket": B, "Key": "c"}, ServerSideEncryption="AES256",
               CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=K1["SSECustomerKey"],
               CopySourceSSECustomerKeyMD5=K1["SSECustomerKeyMD5"])
check("SSE-C to SSE-S3 copy", s3.get_object(Bucket=B, Key="c-to-s")["Body"].read() == body)
check("a copy of an SSE-C object without its key refused",
      code(s3.copy_object, Bucket=B, Key="c-x", CopySource={"Bucket": B, "Key": "c"})[1] == 400)
s3.copy_object(Bucket=B, Key="k-to-c", CopySource={"Bucket": B, "Key": "k"}, **K2)
check("SSE-KMS to SSE-C copy", s3.get_object(Bucket=B, Key="k-to-c", **K2)["Body"].read() == body)
s3.copy_object(Bucket=B, Key="s-to-plain", CopySource={"Bucket": B, "Key": "s"})
g = s3.get_object(Bucket=B, Key="s-to-plain")
check("SSE-S3 to plain copy", g["Body"].read() == body and "ServerSideEncryption" not in g)

# --- multipart with SSE-C: the key on every part and on completion
part = os.urandom(5 * 1024 * 1024)
up = s3.create_multipart_upload(Bucket=B, Key="mp", **K1)["UploadId"]
check("a part without the key refused",
      code(s3.upload_part, Bucket=B, Key="mp", UploadId=up, PartNumber=1, Body=part)[1] == 400)
e1 = s3.upload_part(Bucket=B, Key="mp", UploadId=up, PartNumber=1, Body=part, **K1)["ETag"]
e2 = s3.upload_part_copy(Bucket=B, Key="mp", UploadId=up, PartNumber=2, CopySource={"Bucket": B, "Key": "s"},
                         CopySourceRange="bytes=0-99999", **K1)["CopyPartResult"]["ETag"]
parts = {"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]}
check("completing without the key refused",
      code(s3.complete_multipart_upload, Bucket=B, Key="mp", UploadId=up, MultipartUpload=parts)[1] == 400)
s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=up, MultipartUpload=parts, **K1)
whole = part + body[:100000]
check("the multipart SSE-C object reads back", s3.get_object(Bucket=B, Key="mp", **K1)["Body"].read() == whole)
lo, hi = len(part) - 1000, len(part) + 999
check("a range across the parts' boundary (two IVs)",
      s3.get_object(Bucket=B, Key="mp", Range=f"bytes={lo}-{hi}", **K1)["Body"].read() == whole[lo:hi + 1])
check("part 2 by number", s3.get_object(Bucket=B, Key="mp", PartNumber=2, **K1)["Body"].read() == body[:100000])

# --- a bucket's default encryption
check("no default: 404", code(s3.get_bucket_encryption, Bucket=B)
      == ("ServerSideEncryptionConfigurationNotFoundError", 404), code(s3.get_bucket_encryption, Bucket=B))
s3.put_bucket_encryption(Bucket=B, ServerSideEncryptionConfiguration={"Rules": [
    {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "key-b"}}]})
rule = s3.get_bucket_encryption(Bucket=B)["ServerSideEncryptionConfiguration"]["Rules"][0]
check("the default reads back", rule["ApplyServerSideEncryptionByDefault"]
      == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "key-b"}, rule)
r = s3.put_object(Bucket=B, Key="d", Body=body)
check("a PUT without headers takes the default", r.get("SSEKMSKeyId") == "key-b", r)
s3.delete_bucket_encryption(Bucket=B)
r = s3.put_object(Bucket=B, Key="plain", Body=b"PLAINTEXT-NEEDLE-%d" % os.getpid() * 100)
check("without a default, stored in clear", "ServerSideEncryption" not in r)

# --- at rest: an encrypted object's plaintext is on no device; a plain one's is
needle = b"SECRET-NEEDLE-%d-" % os.getpid()
for key, extra in [("n-c", K1), ("n-s", {"ServerSideEncryption": "AES256"}),
                   ("n-k", {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "key-a"})]:
    s3.put_object(Bucket=B, Key=key, Body=needle * 2000, **extra)


def on_disk(b):
    return subprocess.run(["grep", "-rlaF", b.decode(), data_dir], capture_output=True).stdout.strip() != b""


# Acknowledged writes are on the devices (the plain one shows it).
check("a plain object's bytes are found on the devices", on_disk(b"PLAINTEXT-NEEDLE-%d" % os.getpid()))
check("no encrypted object's plaintext is", not on_disk(needle))
print("encryption suite passed")
