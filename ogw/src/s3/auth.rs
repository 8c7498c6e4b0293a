//! Who is calling: s3s asks `Auth` for an access key's secret to check the signature;
//! the operation that follows asks the gateway for the key's tenant, remembered from
//! that lookup for `KEY_CACHE_TTL`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Request, S3Result};

use super::Gateway;
use crate::catalog::Catalog;
use crate::limits::KEY_CACHE_TTL;

/// Access key -> (tenant, when it was looked up).
pub(super) type KeyCache = Arc<Mutex<HashMap<String, (String, Instant)>>>;

/// Looks up secrets for s3s's signature checks; remembers each key's tenant for the
/// operation that follows.
pub struct Auth {
    pub(super) catalog: Catalog,
    pub(super) keys: KeyCache,
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let (tenant, secret) = self.catalog.key(access_key).await?.ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
        self.keys.lock().insert(access_key.to_string(), (tenant, Instant::now()));
        Ok(SecretKey::from(secret))
    }
}

/// s3s's access hook, which by default refuses every request without a signature: here
/// an anonymous request reaches the operations an ACL can open to everyone (which then
/// decide by the ACL; `Gateway::tenant` refuses anonymous callers everywhere else).
/// Others are refused before their body is read, so that nobody learns anything from
/// them (not even whether their XML parses).
pub struct Access;

/// The operations an anonymous request may reach: reads, and single-object writes
/// (a `public-read-write` bucket), none of them with an XML body.
const ANONYMOUS_OPS: [&str; 10] = [
    "GetObject",
    "HeadObject",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "HeadBucket",
    "PutObject",
    "DeleteObject",
    "GetBucketAcl",
    "GetObjectAcl",
];

#[async_trait::async_trait]
impl s3s::access::S3Access for Access {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_some() || ANONYMOUS_OPS.contains(&cx.s3_op().name()) {
            return Ok(());
        }
        Err(s3_error!(AccessDenied, "Access Denied"))
    }
}

impl Gateway {
    /// The caller's tenant (the key was looked up by the signature check just before).
    pub(super) async fn tenant<T>(&self, req: &S3Request<T>) -> S3Result<String> {
        let Some(c) = &req.credentials else { return Err(s3_error!(AccessDenied, "anonymous access is not allowed")) };
        if let Some((t, at)) = self.keys.lock().get(&c.access_key) {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(t.clone());
            }
        }
        let (t, _) = self.catalog.key(&c.access_key).await?.ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
        self.keys.lock().insert(c.access_key.clone(), (t.clone(), Instant::now()));
        Ok(t)
    }
}
