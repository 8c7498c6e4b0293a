//! Bucket policies at the gateway (`crate::policy` parses and decides): the policy of a
//! bucket read through a short cache (this gateway's Put/DeleteBucketPolicy clear it),
//! a request's condition values, the S3 action of each operation, and the operations
//! Put/Get/DeleteBucketPolicy and GetBucketPolicyStatus.

use std::collections::HashMap;
use std::sync::Arc;

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::Gateway;
use crate::catalog::{Catalog, ConfigCache, ConfigKind};
use crate::policy::Policy;

/// Buckets' policies, cached (stored documents were checked when set).
pub struct Policies(ConfigCache<Policy>);

impl Default for Policies {
    fn default() -> Self {
        Policies(ConfigCache::new(ConfigKind::Policy, |doc, bucket| Policy::parse(doc, bucket).ok()))
    }
}

impl Policies {
    /// The policy of `bucket` (`None`: none, or no such bucket). A failed read is an
    /// error: what guards access never fails open.
    pub(super) async fn get(&self, catalog: &Catalog, bucket: &str) -> S3Result<Option<Arc<Policy>>> {
        Ok(self.0.get(catalog, bucket).await?)
    }

    fn forget(&self, bucket: &str) {
        self.0.forget(bucket);
    }
}

/// The S3 action an operation is authorized as (IAM's names).
pub(super) fn action_of(op: &str) -> &'static str {
    match op {
        "GetObject" | "HeadObject" => "s3:GetObject",
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "s3:PutObject",
        "DeleteObject" | "DeleteObjects" => "s3:DeleteObject",
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "s3:ListBucket",
        "ListObjectVersions" => "s3:ListBucketVersions",
        "AbortMultipartUpload" => "s3:AbortMultipartUpload",
        "ListParts" => "s3:ListMultipartUploadParts",
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "GetBucketAcl" => "s3:GetBucketAcl",
        "PutBucketAcl" => "s3:PutBucketAcl",
        "GetObjectAcl" => "s3:GetObjectAcl",
        "PutObjectAcl" => "s3:PutObjectAcl",
        "GetObjectTagging" => "s3:GetObjectTagging",
        "PutObjectTagging" => "s3:PutObjectTagging",
        "DeleteObjectTagging" => "s3:DeleteObjectTagging",
        "GetObjectAttributes" => "s3:GetObjectAttributes",
        "GetBucketTagging" => "s3:GetBucketTagging",
        "PutBucketTagging" | "DeleteBucketTagging" => "s3:PutBucketTagging",
        "GetBucketCors" => "s3:GetBucketCORS",
        "PutBucketCors" | "DeleteBucketCors" => "s3:PutBucketCORS",
        "GetBucketPolicy" => "s3:GetBucketPolicy",
        "PutBucketPolicy" => "s3:PutBucketPolicy",
        "DeleteBucketPolicy" => "s3:DeleteBucketPolicy",
        "GetBucketPolicyStatus" => "s3:GetBucketPolicyStatus",
        "GetBucketLocation" => "s3:GetBucketLocation",
        "DeleteBucket" => "s3:DeleteBucket",
        "CreateBucket" => "s3:CreateBucket",
        _ => "s3:Unknown",
    }
}

/// The condition values of a request (keys lower-cased).
pub(super) fn values(
    uri: &http::Uri,
    headers: &http::HeaderMap,
    peer: Option<crate::server::Peer>,
    tenant: Option<&str>,
) -> HashMap<String, Vec<String>> {
    let mut v: HashMap<String, Vec<String>> = HashMap::new();
    let mut put = |k: &str, x: String| v.entry(k.to_owned()).or_default().push(x);
    if let Some(p) = peer {
        put("aws:sourceip", p.ip.to_string());
        put("aws:securetransport", p.secure.to_string());
    }
    if let Some(t) = tenant {
        put("aws:principalaccount", t.to_owned());
    }
    for (h, k) in [
        ("user-agent", "aws:useragent"),
        ("referer", "aws:referer"),
        ("x-amz-acl", "s3:x-amz-acl"),
        ("x-amz-server-side-encryption", "s3:x-amz-server-side-encryption"),
        ("x-amz-server-side-encryption-aws-kms-key-id", "s3:x-amz-server-side-encryption-aws-kms-key-id"),
        ("x-amz-server-side-encryption-customer-algorithm", "s3:x-amz-server-side-encryption-customer-algorithm"),
    ] {
        if let Some(x) = headers.get(h).and_then(|x| x.to_str().ok()) {
            put(k, x.to_owned());
        }
    }
    if let Some(t) = headers.get("x-amz-tagging").and_then(|x| x.to_str().ok()) {
        for (tk, tv) in form_urlencoded::parse(t.as_bytes()) {
            put(&format!("s3:requestobjecttag/{}", tk.to_ascii_lowercase()), tv.into_owned());
        }
    }
    for (k, x) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "prefix" => put("s3:prefix", x.into_owned()),
            "delimiter" => put("s3:delimiter", x.into_owned()),
            "max-keys" => put("s3:max-keys", x.into_owned()),
            _ => {}
        }
    }
    // A listing without a prefix has the empty prefix.
    v.entry("s3:prefix".to_owned()).or_insert_with(|| vec![String::new()]);
    v
}

pub(super) async fn get_bucket_policy(
    gw: &Gateway,
    req: S3Request<GetBucketPolicyInput>,
) -> S3Result<S3Response<GetBucketPolicyOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let doc = gw.catalog.bucket_config(&b.name, ConfigKind::Policy).await?;
    let Some(doc) = doc else { return Err(s3_error!(NoSuchBucketPolicy)) };
    Ok(S3Response::new(GetBucketPolicyOutput { policy: Some(doc) }))
}

pub(super) async fn put_bucket_policy(
    gw: &Gateway,
    req: S3Request<PutBucketPolicyInput>,
) -> S3Result<S3Response<PutBucketPolicyOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let doc = &req.input.policy;
    Policy::parse(doc, &b.name).map_err(|m| s3_error!(MalformedPolicy, "{m}"))?;
    gw.catalog.set_bucket_config(&b, ConfigKind::Policy, Some(doc)).await?;
    gw.policies.forget(&b.name);
    Ok(S3Response::new(PutBucketPolicyOutput::default()))
}

pub(super) async fn delete_bucket_policy(
    gw: &Gateway,
    req: S3Request<DeleteBucketPolicyInput>,
) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    gw.catalog.set_bucket_config(&b, ConfigKind::Policy, None).await?;
    gw.policies.forget(&b.name);
    Ok(S3Response::new(DeleteBucketPolicyOutput::default()))
}

pub(super) async fn get_bucket_policy_status(
    gw: &Gateway,
    req: S3Request<GetBucketPolicyStatusInput>,
) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let public = gw.bucket_acl(&b.name).await?.is_public()
        || gw.policies.get(&gw.catalog, &b.name).await?.is_some_and(|p| p.is_public());
    Ok(S3Response::new(GetBucketPolicyStatusOutput { policy_status: Some(PolicyStatus { is_public: Some(public) }) }))
}
