//! Conditional requests: `If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since` on reads (and on a copy's source), `If-Match` and
//! `If-None-Match: *` on writes.

use s3s::dto::*;
use s3s::{s3_error, S3Result};

use super::dto::ms_of;
use super::errors::not_modified;
use crate::catalog::WriteCondition;

/// Whether a read of an object with `etag` modified at `modified_ms` goes on, per the
/// request's conditions (RFC 7232 order, as S3 applies it).
pub(super) fn read_conditions(
    etag_: &str,
    modified_ms: i64,
    if_match: &Option<IfMatch>,
    if_none_match: &Option<IfNoneMatch>,
    if_modified_since: &Option<IfModifiedSince>,
    if_unmodified_since: &Option<IfUnmodifiedSince>,
) -> S3Result<()> {
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag_,
    };
    let secs = modified_ms / 1000;
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(s3_error!(PreconditionFailed));
        }
    } else if let Some(t) = if_unmodified_since {
        if secs > ms_of(t) / 1000 {
            return Err(s3_error!(PreconditionFailed));
        }
    }
    if let Some(c) = if_none_match {
        if matches(c) {
            return Err(not_modified());
        }
    } else if let Some(t) = if_modified_since {
        if secs <= ms_of(t) / 1000 {
            return Err(not_modified());
        }
    }
    Ok(())
}

pub(super) fn write_condition(
    if_match: Option<IfMatch>,
    if_none_match: Option<IfNoneMatch>,
) -> S3Result<WriteCondition> {
    let mut c = WriteCondition::default();
    match if_none_match {
        None => {}
        Some(ETagCondition::Any) => c.if_none_match_any = true,
        Some(_) => return Err(s3_error!(NotImplemented, "If-None-Match on writes takes only *")),
    }
    c.if_match = match if_match {
        None => None,
        Some(ETagCondition::Any) => Some("*".into()),
        Some(ETagCondition::ETag(e)) => Some(e.value().to_string()),
    };
    Ok(c)
}
