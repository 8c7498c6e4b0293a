//! Object Lock as S3 shows it (`crate::lock` holds the model): Get/PutObjectLockConfiguration,
//! Get/PutObjectRetention, Get/PutObjectLegalHold, the lock a new version is given by
//! its request's `x-amz-object-lock-*` headers or the bucket's default, and whether a
//! request may bypass GOVERNANCE retention.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::dto::{ms_of, ts};
use super::Gateway;
use crate::catalog::{Bucket as BucketRec, CatalogError, ConfigCache, ConfigKind, ObjectInfo, Versioning};
use crate::db::now_ms;
use crate::lock::{may_change, may_delete, LockConfig, Mode, Period, Retention};

/// Buckets' lock configurations, as writes and deletes consult them.
pub(super) fn cache() -> ConfigCache<LockConfig> {
    ConfigCache::new(ConfigKind::ObjectLock, |doc, _| serde_json::from_str(doc).ok())
}

impl Gateway {
    /// The bucket's lock configuration, if it has Object Lock.
    pub(super) async fn lock_config(&self, b: &BucketRec) -> S3Result<Option<std::sync::Arc<LockConfig>>> {
        Ok(self.locks.get(&self.catalog, &b.name).await?)
    }

    pub(super) async fn object_lock_enabled(&self, b: &BucketRec) -> S3Result<bool> {
        Ok(self.lock_config(b).await?.is_some())
    }

    /// Whether `req` asks to bypass GOVERNANCE retention and may: the bucket's owner
    /// may (the header alone is not enough).
    pub(super) async fn bypass<T>(&self, req: &S3Request<T>, b: &BucketRec) -> S3Result<bool> {
        let asked = req
            .headers
            .get("x-amz-bypass-governance-retention")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(asked && self.caller(req).await?.as_deref() == Some(b.tenant.as_str()))
    }

    /// The lock check a version's deletion runs in its transaction.
    pub(super) fn delete_check(bypass: bool) -> impl Fn(&ObjectInfo) -> crate::catalog::Result<()> + Sync {
        move |info: &ObjectInfo| {
            may_delete(info.retention.as_ref(), info.legal_hold, bypass, now_ms())
                .map_err(|e| CatalogError::Locked(e.to_string()))
        }
    }

    /// Sets a new version's lock in `info` from its request's headers, else (with
    /// `default`) the bucket's default retention. Lock headers on a bucket without
    /// Object Lock are refused.
    pub(super) async fn lock_new(
        &self,
        b: &BucketRec,
        info: &mut ObjectInfo,
        h: LockHeaders<'_>,
        default: bool,
    ) -> S3Result<()> {
        let asked = h.object_lock_mode.is_some()
            || h.object_lock_retain_until_date.is_some()
            || h.object_lock_legal_hold_status.is_some();
        let Some(config) = self.lock_config(b).await? else {
            if asked {
                return Err(s3_error!(InvalidRequest, "Bucket is missing Object Lock Configuration"));
            }
            return Ok(());
        };
        info.retention = match (h.object_lock_mode, h.object_lock_retain_until_date) {
            (Some(m), Some(d)) => {
                let mode =
                    Mode::parse(m.as_str()).ok_or_else(|| s3_error!(InvalidArgument, "Unknown wormMode directive."))?;
                let until_ms = ms_of(d);
                if until_ms <= now_ms() {
                    return Err(s3_error!(InvalidArgument, "The retain until date must be in the future!"));
                }
                Some(Retention { mode, until_ms })
            }
            (None, None) if default => config.default_retention(now_ms()),
            (None, None) => None,
            _ => {
                return Err(s3_error!(
                    InvalidArgument,
                    "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied"
                ))
            }
        };
        info.legal_hold = match h.object_lock_legal_hold_status.as_ref().map(|s| s.as_str()) {
            None | Some(ObjectLockLegalHoldStatus::OFF) => false,
            Some(ObjectLockLegalHoldStatus::ON) => true,
            Some(_) => return Err(s3_error!(InvalidArgument, "Legal Hold must be either of 'ON' or 'OFF'")),
        };
        Ok(())
    }

    /// The bucket of a retention or legal hold request, which must have Object Lock.
    async fn locked_bucket<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<BucketRec> {
        let b = self.owned(req, bucket).await?;
        if !self.object_lock_enabled(&b).await? {
            return Err(s3_error!(InvalidRequest, "Bucket is missing Object Lock Configuration"));
        }
        Ok(b)
    }
}

view! {
    /// The `x-amz-object-lock-*` headers of a request that makes a version.
    pub(super) struct LockHeaders {
        object_lock_mode: Option<ObjectLockMode>,
        object_lock_retain_until_date: Option<ObjectLockRetainUntilDate>,
        object_lock_legal_hold_status: Option<ObjectLockLegalHoldStatus>,
    } for PutObjectInput, CopyObjectInput, CreateMultipartUploadInput
}

/// Object Lock on a new bucket (`x-amz-bucket-object-lock-enabled: true`): versioning
/// enabled, and the lock with no default retention.
pub(super) async fn enable_on_create(gw: &Gateway, b: &BucketRec) -> S3Result<()> {
    gw.catalog.set_versioning(b, Versioning::Enabled).await?;
    set_config(gw, b, &LockConfig::default()).await
}

async fn set_config(gw: &Gateway, b: &BucketRec, c: &LockConfig) -> S3Result<()> {
    let doc = serde_json::to_string(c).expect("plain data");
    gw.catalog.set_bucket_config(b, ConfigKind::ObjectLock, Some(&doc)).await?;
    gw.locks.forget(&b.name);
    Ok(())
}

pub(super) async fn put_object_lock_configuration(
    gw: &Gateway,
    req: S3Request<PutObjectLockConfigurationInput>,
) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let c = req.input.object_lock_configuration.as_ref().ok_or_else(|| s3_error!(MalformedXML))?;
    if c.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some(ObjectLockEnabled::ENABLED) {
        return Err(s3_error!(MalformedXML, "ObjectLockEnabled must be Enabled"));
    }
    let default = match c.rule.as_ref().and_then(|r| r.default_retention.as_ref()) {
        None => None,
        Some(d) => {
            let mode = d
                .mode
                .as_ref()
                .and_then(|m| Mode::parse(m.as_str()))
                .ok_or_else(|| s3_error!(MalformedXML, "Mode must be GOVERNANCE or COMPLIANCE"))?;
            let period = match (d.days, d.years) {
                (Some(n), None) => Period::Days(n),
                (None, Some(n)) => Period::Years(n),
                _ => return Err(s3_error!(MalformedXML, "DefaultRetention takes one of Days and Years")),
            };
            if matches!(period, Period::Days(n) | Period::Years(n) if n <= 0) {
                let mut e = s3s::S3Error::with_message(
                    s3s::S3ErrorCode::Custom("InvalidRetentionPeriod".into()),
                    "the retention period must be a positive integer",
                );
                e.set_status_code(http::StatusCode::BAD_REQUEST);
                return Err(e);
            }
            Some((mode, period))
        }
    };
    // As AWS: Object Lock needs versioning (enabled, not suspended), which it then keeps.
    if b.versioning != Versioning::Enabled {
        return Err(s3_error!(
            InvalidBucketState,
            "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration"
        ));
    }
    set_config(gw, &b, &LockConfig { default }).await?;
    Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
}

pub(super) async fn get_object_lock_configuration(
    gw: &Gateway,
    req: S3Request<GetObjectLockConfigurationInput>,
) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let c = gw.lock_config(&b).await?.ok_or_else(|| {
        s3_error!(ObjectLockConfigurationNotFoundError, "Object Lock configuration does not exist for this bucket")
    })?;
    let rule = c.default.map(|(mode, period)| ObjectLockRule {
        default_retention: Some(DefaultRetention {
            mode: Some(ObjectLockRetentionMode::from_static(mode.name())),
            days: match period {
                Period::Days(n) => Some(n),
                Period::Years(_) => None,
            },
            years: match period {
                Period::Years(n) => Some(n),
                Period::Days(_) => None,
            },
        }),
    });
    Ok(S3Response::new(GetObjectLockConfigurationOutput {
        object_lock_configuration: Some(ObjectLockConfiguration {
            object_lock_enabled: Some(ObjectLockEnabled::from_static(ObjectLockEnabled::ENABLED)),
            rule,
        }),
    }))
}

pub(super) async fn put_object_retention(
    gw: &Gateway,
    req: S3Request<PutObjectRetentionInput>,
) -> S3Result<S3Response<PutObjectRetentionOutput>> {
    let b = gw.locked_bucket(&req, &req.input.bucket).await?;
    let bypass = gw.bypass(&req, &b).await?;
    let i = &req.input;
    let version = super::versioning::version_arg(i.version_id.as_deref())?;
    let new = match &i.retention {
        None => None,
        Some(r) => match (&r.mode, &r.retain_until_date) {
            (None, None) => None,
            (Some(m), Some(d)) => Some(Retention {
                mode: Mode::parse(m.as_str())
                    .ok_or_else(|| s3_error!(MalformedXML, "Mode must be GOVERNANCE or COMPLIANCE"))?,
                until_ms: ms_of(d),
            }),
            _ => return Err(s3_error!(MalformedXML, "Retention takes both Mode and RetainUntilDate")),
        },
    };
    if new.is_some_and(|n| n.until_ms <= now_ms()) {
        return Err(s3_error!(InvalidArgument, "The retain until date must be in the future!"));
    }
    let set = |info: &mut ObjectInfo| {
        may_change(info.retention.as_ref(), new.as_ref(), bypass, now_ms())
            .map_err(|e| CatalogError::Locked(e.to_string()))?;
        info.retention = new;
        Ok(())
    };
    if !gw.catalog.update_object_info(&b, &i.key, version, set).await? {
        return Err(gw.lookup(&i.bucket, &i.key, version).await?.err().unwrap_or_else(|| s3_error!(NoSuchKey)));
    }
    Ok(S3Response::new(PutObjectRetentionOutput::default()))
}

pub(super) async fn get_object_retention(
    gw: &Gateway,
    req: S3Request<GetObjectRetentionInput>,
) -> S3Result<S3Response<GetObjectRetentionOutput>> {
    let b = gw.locked_bucket(&req, &req.input.bucket).await?;
    let i = &req.input;
    let version = super::versioning::version_arg(i.version_id.as_deref())?;
    let o = gw.lookup(&b.name, &i.key, version).await??;
    let r = o.info.retention.ok_or_else(|| {
        s3_error!(NoSuchObjectLockConfiguration, "The specified object does not have a ObjectLock configuration")
    })?;
    Ok(S3Response::new(GetObjectRetentionOutput {
        retention: Some(ObjectLockRetention {
            mode: Some(ObjectLockRetentionMode::from_static(r.mode.name())),
            retain_until_date: Some(ts(r.until_ms)),
        }),
    }))
}

pub(super) async fn put_object_legal_hold(
    gw: &Gateway,
    req: S3Request<PutObjectLegalHoldInput>,
) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
    let b = gw.locked_bucket(&req, &req.input.bucket).await?;
    let i = &req.input;
    let version = super::versioning::version_arg(i.version_id.as_deref())?;
    let on = match i.legal_hold.as_ref().and_then(|h| h.status.as_ref()).map(|s| s.as_str()) {
        Some(ObjectLockLegalHoldStatus::ON) => true,
        Some(ObjectLockLegalHoldStatus::OFF) => false,
        _ => return Err(s3_error!(MalformedXML, "Status must be ON or OFF")),
    };
    let set = |info: &mut ObjectInfo| {
        info.legal_hold = on;
        Ok(())
    };
    if !gw.catalog.update_object_info(&b, &i.key, version, set).await? {
        return Err(gw.lookup(&i.bucket, &i.key, version).await?.err().unwrap_or_else(|| s3_error!(NoSuchKey)));
    }
    Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
}

pub(super) async fn get_object_legal_hold(
    gw: &Gateway,
    req: S3Request<GetObjectLegalHoldInput>,
) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
    let b = gw.locked_bucket(&req, &req.input.bucket).await?;
    let i = &req.input;
    let version = super::versioning::version_arg(i.version_id.as_deref())?;
    let o = gw.lookup(&b.name, &i.key, version).await??;
    let status = if o.info.legal_hold { ObjectLockLegalHoldStatus::ON } else { ObjectLockLegalHoldStatus::OFF };
    Ok(S3Response::new(GetObjectLegalHoldOutput {
        legal_hold: Some(ObjectLockLegalHold { status: Some(ObjectLockLegalHoldStatus::from_static(status)) }),
    }))
}

/// The lock headers of a GET or HEAD answer about a version with `info`.
pub(super) fn lock_headers(info: &ObjectInfo, out: &mut HeadObjectOutput) {
    if let Some(r) = &info.retention {
        out.object_lock_mode = Some(ObjectLockMode::from_static(r.mode.name()));
        out.object_lock_retain_until_date = Some(ts(r.until_ms));
    }
    if info.legal_hold {
        out.object_lock_legal_hold_status = Some(ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON));
    }
}
