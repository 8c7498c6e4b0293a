"""aws-chunked uploads with signed chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), signed here
by hand from the SigV4 specification: a good upload is stored byte-exact; one chunk
with a wrong signature is refused with SignatureDoesNotMatch and nothing is stored; a
body sent with Transfer-Encoding: chunked and no Content-Length works too.

Usage: signed_chunks.py ENDPOINT ACCESS SECRET
"""
import datetime
import hashlib
import hmac
import http.client
import sys
import time
import urllib.parse

import boto3
import botocore

endpoint, access, secret = sys.argv[1:4]
u = urllib.parse.urlparse(endpoint)
host = f"{u.hostname}:{u.port}"
region, service = "us-east-1", "s3"
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                  region_name=region)
B = "chunks-%d" % (time.time_ns() % 10**9)
s3.create_bucket(Bucket=B)
EMPTY = hashlib.sha256(b"").hexdigest()


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok {name}")


def hm(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def put_chunked(key, data, chunk=64 * 1024, corrupt=None, te_chunked=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{region}/{service}/aws4_request"
    signing_key = hm(hm(hm(hm(("AWS4" + secret).encode(), day), region), service), "aws4_request")
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    sizes = [len(p) for p in pieces]
    # Encoded length: each chunk is "hex;chunk-signature=<64 hex>\r\n" + data + "\r\n".
    encoded_len = sum(len(f"{n:x};chunk-signature=") + 64 + 2 + n + 2 for n in sizes)
    path = f"/{B}/{urllib.parse.quote(key)}"
    headers = {
        "host": host,
        "content-encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-date": amz_date,
        "x-amz-decoded-content-length": str(len(data)),
    }
    if not te_chunked:
        headers["content-length"] = str(encoded_len)
    signed = sorted(headers)
    canonical = "\n".join([
        "PUT", path, "",
        "".join(f"{h}:{headers[h]}\n" for h in signed),
        ";".join(signed),
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    ])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    seed = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                f"SignedHeaders={';'.join(signed)}, Signature={seed}")
    body = b""
    prev = seed
    for i, p in enumerate(pieces):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY, hashlib.sha256(p).hexdigest()])
        sig = hmac.new(signing_key, sts.encode(), hashlib.sha256).hexdigest()
        prev = sig
        if corrupt == i:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        body += f"{len(p):x};chunk-signature={sig}\r\n".encode() + p + b"\r\n"
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        c.putheader(k, v)
    if te_chunked:
        c.putheader("transfer-encoding", "chunked")
        c.endheaders()
        for i in range(0, len(body), 100_000):
            part = body[i:i + 100_000]
            c.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        c.send(b"0\r\n\r\n")
    else:
        c.endheaders()
        c.send(body)
    r = c.getresponse()
    out = (r.status, r.read())
    c.close()
    return out


def stored(key):
    try:
        return s3.get_object(Bucket=B, Key=key)["Body"].read()
    except botocore.exceptions.ClientError:
        return None


data = bytes((i * 7 + 3) % 251 for i in range(300_000))
status, body = put_chunked("good", data)
check("signed chunks accepted", status == 200, (status, body))
check("signed chunks stored exactly", stored("good") == data)
status, body = put_chunked("bad", data, corrupt=2)
check("a bad chunk signature is refused", status == 403 and b"SignatureDoesNotMatch" in body, (status, body))
check("nothing stored for the bad upload", stored("bad") is None)
status, body = put_chunked("te", data, te_chunked=True)
check("transfer-encoding chunked, no content-length", status == 200, (status, body))
check("stored exactly (te)", stored("te") == data)
for k in ["good", "te"]:
    s3.delete_object(Bucket=B, Key=k)
s3.delete_bucket(Bucket=B)
print("signed chunks suite passed")
