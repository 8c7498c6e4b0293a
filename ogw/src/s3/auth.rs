//! Who is calling: s3s asks `Auth` for an access key's secret to check the signature;
//! the operation that follows asks the gateway for the key's tenant. Both come from one
//! lookup, remembered: the secret for `KEY_SECRET_TTL`, the tenant for `KEY_CACHE_TTL`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Request, S3Result};

use super::Gateway;
use crate::catalog::Catalog;
use crate::limits::{KEY_CACHE_TTL, KEY_SECRET_TTL};

/// Access key -> what its last lookup found.
pub(super) type KeyCache = Arc<Mutex<HashMap<String, KnownKey>>>;

/// An access key as it was looked up.
pub(super) struct KnownKey {
    tenant: String,
    secret: String,
    at: Instant,
}

/// Keys remembered at most (the cache is cleared when it grows past; only keys that
/// exist are remembered).
const KEYS_CACHED_MAX: usize = 10_000;

/// Looks `access_key` up in the catalog, and remembers it.
async fn look_up(catalog: &Catalog, keys: &KeyCache, access_key: &str) -> S3Result<(String, String)> {
    let (tenant, secret) = catalog.key(access_key).await?.ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
    let mut k = keys.lock();
    if k.len() >= KEYS_CACHED_MAX {
        k.clear();
    }
    k.insert(access_key.to_owned(), KnownKey { tenant: tenant.clone(), secret: secret.clone(), at: Instant::now() });
    Ok((tenant, secret))
}

/// Looks up secrets for s3s's signature checks; remembers each key's tenant for the
/// operation that follows.
pub struct Auth {
    pub(super) catalog: Catalog,
    pub(super) keys: KeyCache,
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if let Some(k) = self.keys.lock().get(access_key) {
            if k.at.elapsed() < KEY_SECRET_TTL {
                return Ok(SecretKey::from(k.secret.clone()));
            }
        }
        let (_, secret) = look_up(&self.catalog, &self.keys, access_key).await?;
        Ok(SecretKey::from(secret))
    }
}

/// s3s's access hook, run before an operation's input is read. An anonymous request
/// reaches only the operations an ACL or policy can open to everyone (which then
/// decide); the rest are refused before their body is read, so that nobody learns
/// anything from them (not even whether their XML parses). Then the bucket's policy:
/// a matching `Deny` refuses the request, whoever asks (the owner too); a matching
/// `Allow` is left in the request's extensions (`PolicyAllows`) for the operation.
pub struct Access {
    pub(super) catalog: Catalog,
    pub(super) keys: KeyCache,
    pub(super) policies: Arc<super::policy::Policies>,
}

/// The operations an anonymous request may reach: reads, and single-object writes
/// (a `public-read-write` bucket, by PUT or by a browser's form POST, whose file s3s
/// has read, bounded, by then), none of them with an XML body.
const ANONYMOUS_OPS: [&str; 11] = [
    "GetObject",
    "HeadObject",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "HeadBucket",
    "PutObject",
    "PostObject",
    "DeleteObject",
    "GetBucketAcl",
    "GetObjectAcl",
];

/// A bucket policy allowed this request (its operation may go on for a non-owner).
#[derive(Clone, Copy, Debug)]
pub struct PolicyAllows;

#[async_trait::async_trait]
impl s3s::access::S3Access for Access {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name().to_owned();
        if let Some(slot) = cx.extensions_mut().get::<crate::metrics::OpName>() {
            slot.set(&op);
        }
        let op = op.as_str();
        if cx.credentials().is_none() && !ANONYMOUS_OPS.contains(&op) {
            return Err(s3_error!(AccessDenied, "Access Denied"));
        }
        let (bucket, key) = match cx.s3_path() {
            s3s::path::S3Path::Root => return Ok(()),
            s3s::path::S3Path::Bucket { bucket } => (bucket.to_string(), None),
            s3s::path::S3Path::Object { bucket, key } => (bucket.to_string(), Some(key.to_string())),
        };
        let Some(policy) = self.policies.get(&self.catalog, &bucket).await? else { return Ok(()) };
        let tenant = match cx.credentials() {
            None => None,
            Some(c) => Some(tenant_of(&self.catalog, &self.keys, &c.access_key).await?),
        };
        let peer = cx.extensions_mut().get::<crate::server::Peer>().copied();
        let values = super::policy::values(cx.uri(), cx.headers(), peer, tenant.as_deref());
        let r = crate::policy::Request {
            caller: match &tenant {
                None => crate::acl::Caller::Anonymous,
                Some(t) => crate::acl::Caller::Tenant(t),
            },
            action: super::policy::action_of(op),
            resource: match key {
                Some(k) => format!("arn:aws:s3:::{bucket}/{k}"),
                None => format!("arn:aws:s3:::{bucket}"),
            },
            values,
        };
        match policy.decide(&r) {
            crate::policy::Decision::Deny => Err(s3_error!(AccessDenied, "Access Denied")),
            crate::policy::Decision::Allow => {
                cx.extensions_mut().insert(PolicyAllows);
                Ok(())
            }
            crate::policy::Decision::Neither => Ok(()),
        }
    }
}

/// The tenant of an access key, through the key cache.
async fn tenant_of(catalog: &Catalog, keys: &KeyCache, access_key: &str) -> S3Result<String> {
    if let Some(k) = keys.lock().get(access_key) {
        if k.at.elapsed() < KEY_CACHE_TTL {
            return Ok(k.tenant.clone());
        }
    }
    Ok(look_up(catalog, keys, access_key).await?.0)
}

impl Gateway {
    /// The caller's tenant (the key was looked up by the signature check just before).
    pub(super) async fn tenant<T>(&self, req: &S3Request<T>) -> S3Result<String> {
        let Some(c) = &req.credentials else { return Err(s3_error!(AccessDenied, "anonymous access is not allowed")) };
        tenant_of(&self.catalog, &self.keys, &c.access_key).await
    }
}
