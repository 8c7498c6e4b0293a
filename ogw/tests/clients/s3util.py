"""What the boto3 suites share: a client for an endpoint, the S3 error of a call that
must fail, and a named check."""
import boto3
import botocore
from botocore.config import Config


def client(endpoint, access, secret, **cfg):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(**cfg),
    )


def code(fn, *a, **kw):
    """(S3 error code, HTTP status) of a call that must fail."""
    try:
        fn(*a, **kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{fn.__name__} succeeded, expected an error")


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok {name}")
