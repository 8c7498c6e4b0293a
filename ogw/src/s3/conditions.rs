//! Conditional requests: `If-Match`, `If-None-Match`, `If-Modified-Since` and
//! `If-Unmodified-Since` on reads and on a copy's source; `If-Match` and
//! `If-None-Match: *` on writes and `If-Match` on deletes.

use s3s::dto::*;
use s3s::{s3_error, S3Result};

use super::dto::ms_of;
use super::errors::not_modified;
use crate::catalog::{Object, WriteCondition};

view! {
    /// The `If-*` conditions of a read (a copy's source has them as
    /// `x-amz-copy-source-if-*`).
    pub(super) struct ReadConditions {
        if_match: Option<IfMatch>,
        if_none_match: Option<IfNoneMatch>,
        if_modified_since: Option<IfModifiedSince>,
        if_unmodified_since: Option<IfUnmodifiedSince>,
    } for GetObjectInput, HeadObjectInput
}

impl ReadConditions<'_> {
    /// Whether a read of `o` goes on (RFC 7232 order, as S3 applies it): 412 when
    /// `If-Match`/`If-Unmodified-Since` fail, else 304 when
    /// `If-None-Match`/`If-Modified-Since` do.
    pub(super) fn check(&self, o: &Object) -> S3Result<()> {
        let secs = o.modified_ms / 1000;
        if let Some(c) = self.if_match {
            if !matches(c, &o.etag) {
                return Err(s3_error!(PreconditionFailed));
            }
        } else if let Some(t) = self.if_unmodified_since {
            if secs > ms_of(t) / 1000 {
                return Err(s3_error!(PreconditionFailed));
            }
        }
        if let Some(c) = self.if_none_match {
            if matches(c, &o.etag) {
                return Err(not_modified(&o.etag));
            }
        } else if let Some(t) = self.if_modified_since {
            if secs <= ms_of(t) / 1000 {
                return Err(not_modified(&o.etag));
            }
        }
        Ok(())
    }

    /// As `check`, for the source of a copy: a failed condition is 412, never 304.
    pub(super) fn check_source(&self, o: &Object) -> S3Result<()> {
        self.check(o).map_err(|e| {
            if *e.code() == s3s::S3ErrorCode::NotModified {
                s3_error!(PreconditionFailed)
            } else {
                e
            }
        })
    }
}

/// Whether an object with `etag` meets an `If-Match`/`If-None-Match` value.
fn matches(c: &ETagCondition, etag: &str) -> bool {
    match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

/// The condition a PUT or CompleteMultipartUpload puts on the current object, checked
/// by the catalog in the write's transaction.
pub(super) fn write_condition(
    if_match: &Option<IfMatch>,
    if_none_match: &Option<IfNoneMatch>,
) -> S3Result<WriteCondition> {
    let mut c = WriteCondition::default();
    match if_none_match {
        None => {}
        Some(ETagCondition::Any) => c.if_none_match_any = true,
        Some(ETagCondition::ETag(e)) => c.if_none_match = Some(e.value().to_string()),
    }
    c.if_match = match if_match {
        None => None,
        Some(ETagCondition::Any) => Some("*".into()),
        Some(ETagCondition::ETag(e)) => Some(e.value().to_string()),
    };
    Ok(c)
}

/// Whether a DELETE with `If-Match: c` goes on, given the current object.
pub(super) fn delete_allowed(c: &ETagCondition, current: Option<&Object>) -> bool {
    current.is_some_and(|o| matches(c, &o.etag))
}
