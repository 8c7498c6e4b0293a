//! Between s3s's types and the gateway's records: timestamps, ETags, and an object's
//! content headers and user metadata.

use std::time::Duration;

use s3s::dto::*;
use s3s::{s3_error, S3Result};

use crate::catalog::ObjectInfo;
use crate::limits::USER_METADATA_BYTES_MAX;

pub(super) fn ts(ms: i64) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

pub(super) fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

pub(super) fn ms_of(t: &Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Content headers and user metadata of a PUT, Copy (REPLACE) or CreateMultipartUpload.
#[allow(clippy::too_many_arguments)]
pub(super) fn info_from(
    content_type: Option<ContentType>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
) -> S3Result<ObjectInfo> {
    // The aws-chunked framing is transport, not a property of the object.
    let content_encoding = content_encoding
        .map(|e| {
            e.split(',').map(str::trim).filter(|p| !p.eq_ignore_ascii_case("aws-chunked")).collect::<Vec<_>>().join(",")
        })
        .filter(|e| !e.is_empty());
    let expires = expires.map(|t| {
        let mut buf = Vec::new();
        let _ = t.format(TimestampFormat::HttpDate, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let user: std::collections::BTreeMap<String, String> = metadata.unwrap_or_default().into_iter().collect();
    let user_bytes: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if user_bytes > USER_METADATA_BYTES_MAX {
        return Err(s3_error!(MetadataTooLarge, "user metadata is limited to 2 KB"));
    }
    Ok(ObjectInfo {
        content_type: content_type.map(|c| c.to_string()),
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        expires,
        user,
        ..Default::default()
    })
}

pub(super) fn parse_expires(s: &Option<String>) -> Option<Timestamp> {
    s.as_ref().and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok())
}
