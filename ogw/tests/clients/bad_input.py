"""Bad input gets the S3 error clients parse, nothing is stored, and the server keeps
serving. Requests are signed with botocore's SigV4 signer and sent raw.

Usage: bad_input.py ENDPOINT ACCESS SECRET [DOMAIN]
(with DOMAIN, the gateway was started with --domain DOMAIN: virtual-host style is checked)
"""
import datetime
import hashlib
import http.client
import sys
import time
import urllib.parse

import boto3
import botocore
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

endpoint, access, secret = sys.argv[1:4]
creds = Credentials(access, secret)
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                  region_name="us-east-1")
B = "bad-input-%d" % (time.time_ns() % 10**9)
s3.create_bucket(Bucket=B)


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok {name}")


def signed(method, path, body=b"", headers=None, payload_hash=None, date=None):
    url = endpoint + path
    h = dict(headers or {})
    h["x-amz-content-sha256"] = payload_hash or hashlib.sha256(body).hexdigest()
    req = AWSRequest(method=method, url=url, data=body, headers=h)
    signer = SigV4Auth(creds, "s3", "us-east-1")
    if date is not None:
        # Sign as if the clock said `date`.
        real = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: date.replace(tzinfo=None)
        try:
            signer.add_auth(req)
        finally:
            botocore.auth.get_current_datetime = real
    else:
        signer.add_auth(req)
    return requests.request(method, url, data=body, headers=dict(req.headers))


def error_code(r):
    body = r.content.decode(errors="replace")
    if "<Code>" not in body:
        return None
    return body.split("<Code>")[1].split("</Code>")[0]


def absent(key):
    try:
        s3.head_object(Bucket=B, Key=key)
        return False
    except botocore.exceptions.ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# Malformed XML.
r = signed("POST", f"/{B}?delete", body=b"<Delete><Object><Key>x</Key>", headers={"Content-MD5": ""})
check("malformed delete XML", r.status_code == 400 and error_code(r) == "MalformedXML", (r.status_code, r.content))
up = s3.create_multipart_upload(Bucket=B, Key="mp")["UploadId"]
r = signed("POST", f"/{B}/mp?uploadId={up}", body=b"<CompleteMultipartUpload><Part>")
check("malformed complete XML", r.status_code == 400 and error_code(r) == "MalformedXML", (r.status_code, r.content))
check("nothing completed", absent("mp"))

# A checksum type S3 does not have: refused, no upload started.
before = len(s3.list_multipart_uploads(Bucket=B).get("Uploads", []))
r = signed("POST", f"/{B}/mp-bogus?uploads",
           headers={"x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "BOGUS"})
check("unknown checksum type", r.status_code == 400 and error_code(r) == "InvalidRequest", (r.status_code, r.content))
check("no upload started", len(s3.list_multipart_uploads(Bucket=B).get("Uploads", [])) == before)

# A payload that does not match its signed hash.
r = signed("PUT", f"/{B}/hash", body=b"actual body", payload_hash=hashlib.sha256(b"other").hexdigest())
check("payload hash mismatch", r.status_code == 400 and error_code(r) == "XAmzContentSHA256Mismatch",
      (r.status_code, r.content))
check("nothing stored (hash)", absent("hash"))

# A request signed 20 minutes ago.
old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
r = signed("PUT", f"/{B}/skew", body=b"x", date=old)
check("clock skew", r.status_code == 403 and error_code(r) == "RequestTimeTooSkewed", (r.status_code, r.content))
check("nothing stored (skew)", absent("skew"))

# Oversized header block.
r = signed("GET", f"/{B}?list-type=2", headers={"x-amz-meta-big": "v" * 200_000})
check("oversized headers refused", r.status_code == 431, r.status_code)

# User metadata over 2 KB.
r = signed("PUT", f"/{B}/meta", body=b"x", headers={"x-amz-meta-big": "v" * 3000})
check("metadata too large", r.status_code == 400 and error_code(r) == "MetadataTooLarge", (r.status_code, r.content))
check("nothing stored (meta)", absent("meta"))

# Key longer than 1024 bytes.
r = signed("PUT", f"/{B}/" + "k" * 1100, body=b"x")
check("key too long", r.status_code == 400 and error_code(r) == "KeyTooLongError", (r.status_code, r.content))

# A body larger than a single PUT may be: refused from its Content-Length, before it is read.
u = urllib.parse.urlparse(endpoint)
req = AWSRequest(method="PUT", url=f"{endpoint}/{B}/huge", headers={
    "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Length": str(6 * 1024**3)})
SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
c.putrequest("PUT", f"/{B}/huge", skip_accept_encoding=True)
for k, v in req.headers.items():
    c.putheader(k, v)
c.endheaders()
c.send(b"x" * 65536)
resp = c.getresponse()
body = resp.read()
check("entity too large", resp.status == 400 and b"EntityTooLarge" in body, (resp.status, body))
c.close()
check("nothing stored (huge)", absent("huge"))

# Invalid bucket names.
for name in ["UPPER", "a", "-lead", "trail-", "has..dots", "192.168.1.1", "x" * 64]:
    r = signed("PUT", f"/{name}")
    check(f"invalid bucket {name[:12]!r}", r.status_code == 400 and error_code(r) == "InvalidBucketName",
          (r.status_code, r.content))

# Virtual-host style: bucket in the Host header, signed as such.
if len(sys.argv) > 4:
    domain = sys.argv[4]
    u = urllib.parse.urlparse(endpoint)
    vhost = f"{B}.{domain}:{u.port}"

    def vsigned(method, key, body=b""):
        req = AWSRequest(method=method, url=f"http://{vhost}/{key}", data=body,
                         headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
        SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
        h = dict(req.headers)
        h["Host"] = vhost
        return requests.request(method, f"{endpoint}/{key}", data=body, headers=h)

    r = vsigned("PUT", "vh key", b"virtual host")
    check("virtual-host put", r.status_code == 200, (r.status_code, r.content))
    check("virtual-host object is in the bucket", s3.get_object(Bucket=B, Key="vh key")["Body"].read() == b"virtual host")
    r = vsigned("GET", "vh key")
    check("virtual-host get", r.content == b"virtual host", r.content)
    s3.delete_object(Bucket=B, Key="vh key")

# And the server still serves.
s3.put_object(Bucket=B, Key="after", Body=b"still here")
check("still serving", s3.get_object(Bucket=B, Key="after")["Body"].read() == b"still here")
s3.delete_object(Bucket=B, Key="after")
s3.abort_multipart_upload(Bucket=B, Key="mp", UploadId=up)
s3.delete_bucket(Bucket=B)
print("bad input suite passed")
