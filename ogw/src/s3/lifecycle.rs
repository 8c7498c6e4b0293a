//! Bucket lifecycle as S3 shows it (`crate::lifecycle` holds the model, the worker is
//! `catalog/lifecycle.rs`): Put/Get/DeleteBucketLifecycleConfiguration, checked as AWS
//! checks them, and the `x-amz-expiration` header of the objects a rule will expire.

use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::dto::{ms_of, ts};
use super::Gateway;
use crate::catalog::{ConfigCache, ConfigKind};
use crate::lifecycle::{Expiration, Filter, Lifecycle, NoncurrentExpiration, Rule, DAY_MS};

/// The most rules a configuration may hold (as AWS).
const RULES_MAX: usize = 1000;
/// The longest rule id (as AWS).
const ID_CHARS_MAX: usize = 255;

/// Buckets' lifecycle configurations, as `x-amz-expiration` reads them.
pub(super) fn cache() -> ConfigCache<Lifecycle> {
    ConfigCache::new(ConfigKind::Lifecycle, |doc, _| serde_json::from_str(doc).ok())
}

fn invalid(msg: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, msg.to_owned())
}

fn days(n: Option<i32>, what: &str) -> S3Result<Option<i32>> {
    match n {
        Some(d) if d <= 0 => Err(invalid(&format!("'{what}' in a lifecycle rule must be a positive integer"))),
        d => Ok(d),
    }
}

/// A rule as stored, checked.
fn rule_of(r: &LifecycleRule) -> S3Result<Rule> {
    let enabled = match r.status.as_str() {
        ExpirationStatus::ENABLED => true,
        ExpirationStatus::DISABLED => false,
        _ => return Err(s3_error!(MalformedXML, "a rule's Status must be Enabled or Disabled")),
    };
    let id = match r.id.as_deref() {
        None | Some("") => random_id(),
        Some(id) if id.chars().count() > ID_CHARS_MAX => {
            return Err(invalid("ID length should not exceed allowed limit of 255"))
        }
        Some(id) => id.to_owned(),
    };
    if r.transitions.as_ref().is_some_and(|t| !t.is_empty())
        || r.noncurrent_version_transitions.as_ref().is_some_and(|t| !t.is_empty())
    {
        for t in r.transitions.iter().flatten() {
            if t.date.as_ref().is_some_and(|d| ms_of(d).rem_euclid(DAY_MS) != 0) {
                return Err(invalid("'Date' must be at midnight GMT"));
            }
        }
        return Err(s3_error!(
            NotImplemented,
            "lifecycle transitions are not supported; move objects between storage classes with `ogw bucket-transition`"
        ));
    }
    if r.prefix.is_some() && r.filter.is_some() {
        return Err(s3_error!(MalformedXML, "a rule takes a Prefix or a Filter, not both"));
    }
    let filter = r.filter.as_ref().map(filter_of).transpose()?;
    let expiration = match &r.expiration {
        None => None,
        Some(e) => {
            let date_ms = e.date.as_ref().map(ms_of);
            if date_ms.is_some_and(|d| d.rem_euclid(DAY_MS) != 0) {
                return Err(invalid("'Date' must be at midnight GMT"));
            }
            let x = Expiration {
                days: days(e.days, "Days")?,
                date_ms,
                expired_object_delete_marker: e.expired_object_delete_marker,
            };
            let set = [x.days.is_some(), x.date_ms.is_some(), x.expired_object_delete_marker.is_some()];
            if set.iter().filter(|s| **s).count() != 1 {
                return Err(s3_error!(
                    MalformedXML,
                    "Expiration takes one of Days, Date and ExpiredObjectDeleteMarker"
                ));
            }
            Some(x)
        }
    };
    let noncurrent = match &r.noncurrent_version_expiration {
        None => None,
        Some(n) => {
            let x = NoncurrentExpiration {
                days: days(n.noncurrent_days, "NoncurrentDays")?,
                newer_versions: n.newer_noncurrent_versions,
            };
            if x.newer_versions.is_some_and(|v| v <= 0) {
                return Err(invalid("'NewerNoncurrentVersions' must be a positive integer"));
            }
            if x.days.is_none() && x.newer_versions.is_none() {
                return Err(s3_error!(MalformedXML, "NoncurrentVersionExpiration needs NoncurrentDays"));
            }
            Some(x)
        }
    };
    let abort_days = days(
        r.abort_incomplete_multipart_upload.as_ref().and_then(|a| a.days_after_initiation),
        "DaysAfterInitiation",
    )?;
    let tagged = filter.as_ref().is_some_and(|f| !f.tags.is_empty());
    if tagged && (abort_days.is_some() || expiration.as_ref().is_some_and(|e| e.expired_object_delete_marker.is_some()))
    {
        return Err(s3_error!(
            InvalidRequest,
            "AbortIncompleteMultipartUpload and ExpiredObjectDeleteMarker cannot be given with tag filters"
        ));
    }
    if expiration.is_none() && noncurrent.is_none() && abort_days.is_none() {
        return Err(s3_error!(InvalidRequest, "At least one action needs to be specified in a rule"));
    }
    Ok(Rule { id, enabled, prefix: r.prefix.clone(), filter, expiration, noncurrent, abort_days })
}

fn filter_of(f: &LifecycleRuleFilter) -> S3Result<Filter> {
    let tag = |t: &Tag| (t.key.clone().unwrap_or_default(), t.value.clone().unwrap_or_default());
    let given = [
        f.prefix.is_some(),
        f.tag.is_some(),
        f.object_size_greater_than.is_some(),
        f.object_size_less_than.is_some(),
        f.and.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(s3_error!(MalformedXML, "a Filter takes one condition; use And for more"));
    }
    Ok(match &f.and {
        Some(a) => Filter {
            prefix: a.prefix.clone(),
            tags: a.tags.iter().flatten().map(tag).collect(),
            size_gt: a.object_size_greater_than,
            size_lt: a.object_size_less_than,
            and: true,
        },
        None => Filter {
            prefix: f.prefix.clone(),
            tags: f.tag.iter().map(tag).collect(),
            size_gt: f.object_size_greater_than,
            size_lt: f.object_size_less_than,
            and: false,
        },
    })
}

/// A rule as S3 answers it: as it was given.
fn rule_dto(r: &Rule) -> LifecycleRule {
    let tag = |(k, v): &(String, String)| Tag { key: Some(k.clone()), value: Some(v.clone()) };
    let filter = r.filter.as_ref().map(|f| {
        if f.and {
            LifecycleRuleFilter {
                and: Some(LifecycleRuleAndOperator {
                    prefix: f.prefix.clone(),
                    tags: (!f.tags.is_empty()).then(|| f.tags.iter().map(tag).collect()),
                    object_size_greater_than: f.size_gt,
                    object_size_less_than: f.size_lt,
                }),
                ..Default::default()
            }
        } else {
            LifecycleRuleFilter {
                prefix: f.prefix.clone(),
                tag: f.tags.first().map(tag),
                object_size_greater_than: f.size_gt,
                object_size_less_than: f.size_lt,
                and: None,
            }
        }
    });
    LifecycleRule {
        id: Some(r.id.clone()),
        status: ExpirationStatus::from_static(if r.enabled {
            ExpirationStatus::ENABLED
        } else {
            ExpirationStatus::DISABLED
        }),
        prefix: r.prefix.clone(),
        filter,
        expiration: r.expiration.as_ref().map(|e| LifecycleExpiration {
            days: e.days,
            date: e.date_ms.map(ts),
            expired_object_delete_marker: e.expired_object_delete_marker,
        }),
        noncurrent_version_expiration: r.noncurrent.as_ref().map(|n| NoncurrentVersionExpiration {
            noncurrent_days: n.days,
            newer_noncurrent_versions: n.newer_versions,
        }),
        abort_incomplete_multipart_upload: r
            .abort_days
            .map(|d| AbortIncompleteMultipartUpload { days_after_initiation: Some(d) }),
        transitions: None,
        noncurrent_version_transitions: None,
    }
}

fn random_id() -> String {
    use rand::Rng;
    let mut r = rand::thread_rng();
    (0..16).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[r.gen_range(0..36)])).collect()
}

pub(super) async fn put_bucket_lifecycle_configuration(
    gw: &Gateway,
    req: S3Request<PutBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let given = req.input.lifecycle_configuration.as_ref().ok_or_else(|| s3_error!(MalformedXML))?;
    if given.rules.is_empty() || given.rules.len() > RULES_MAX {
        return Err(s3_error!(MalformedXML, "a lifecycle configuration has 1 to {RULES_MAX} rules"));
    }
    let rules = given.rules.iter().map(rule_of).collect::<S3Result<Vec<_>>>()?;
    let mut ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid("Rule ID must be unique. Found same ID for more than one rule"));
    }
    let doc = serde_json::to_string(&Lifecycle { rules }).expect("plain data");
    gw.catalog.set_bucket_config(&b, ConfigKind::Lifecycle, Some(&doc)).await?;
    gw.lifecycles.forget(&b.name);
    Ok(S3Response::new(PutBucketLifecycleConfigurationOutput::default()))
}

pub(super) async fn get_bucket_lifecycle_configuration(
    gw: &Gateway,
    req: S3Request<GetBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let l = gw
        .lifecycles
        .get(&gw.catalog, &b.name)
        .await?
        .ok_or_else(|| s3_error!(NoSuchLifecycleConfiguration, "The lifecycle configuration does not exist"))?;
    Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
        rules: Some(l.rules.iter().map(rule_dto).collect()),
        ..Default::default()
    }))
}

pub(super) async fn delete_bucket_lifecycle(
    gw: &Gateway,
    req: S3Request<DeleteBucketLifecycleInput>,
) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    gw.catalog.set_bucket_config(&b, ConfigKind::Lifecycle, None).await?;
    gw.lifecycles.forget(&b.name);
    Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
}

impl Gateway {
    /// `x-amz-expiration` for the current version of `key` in `bucket`: when the first
    /// rule that applies expires it, and that rule's id. A configuration that cannot be
    /// read leaves the header out (it only informs).
    pub(super) async fn expiration(
        &self,
        bucket: &str,
        key: &str,
        tags: &[(String, String)],
        size: u64,
        modified_ms: i64,
    ) -> Option<String> {
        let l = self.lifecycles.get(&self.catalog, bucket).await.ok()??;
        let (at, id) = l.expiry(key, tags, size, modified_ms)?;
        let mut date = Vec::new();
        ts(at).format(TimestampFormat::HttpDate, &mut date).ok()?;
        Some(format!("expiry-date=\"{}\", rule-id=\"{id}\"", String::from_utf8_lossy(&date)))
    }
}
