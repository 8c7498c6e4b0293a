//! Versioning as S3 shows it: Get/PutBucketVersioning, finding the version a request
//! names (`versionId`), the answers for delete markers, and ListObjectVersions. The
//! versions themselves are kept by the catalog (`catalog/versions.rs`).

use http::{HeaderMap, HeaderValue, StatusCode};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result};

use super::dto::{checksum_algorithm, class_name, etag, owner, ts};
use super::Gateway;
use crate::acl::Perm;
use crate::catalog::{valid_version_id, Bucket as BucketRec, Entry, Marker, Object, VersionCursor, Versioning};
use crate::limits::{LIST_BATCH_MIN, LIST_ENTRIES_MAX};

pub(super) async fn get_bucket_versioning(
    gw: &Gateway,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    Ok(S3Response::new(GetBucketVersioningOutput {
        status: b.versioning.status().map(BucketVersioningStatus::from_static),
        mfa_delete: None,
    }))
}

pub(super) async fn put_bucket_versioning(
    gw: &Gateway,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let c = &req.input.versioning_configuration;
    if c.mfa_delete.as_ref().is_some_and(|m| m.as_str() == MFADelete::ENABLED) {
        return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
    }
    let to = match c.status.as_ref().map(|s| s.as_str()) {
        Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
        _ => return Err(s3_error!(MalformedXML, "Status must be Enabled or Suspended")),
    };
    if to == Versioning::Suspended && gw.object_lock_enabled(&b).await? {
        return Err(s3_error!(InvalidBucketState, "versioning cannot be suspended on a bucket with Object Lock"));
    }
    gw.catalog.set_versioning(&b, to).await?;
    Ok(S3Response::new(PutBucketVersioningOutput::default()))
}

/// The version a request names by `versionId`: none (the current one), `null`, or an
/// id of this gateway's; anything else is `InvalidArgument` (as AWS).
pub(super) fn version_arg(v: Option<&str>) -> S3Result<Option<&str>> {
    match v {
        None => Ok(None),
        Some(v) if valid_version_id(v) => Ok(Some(v)),
        Some(_) => Err(s3_error!(InvalidArgument, "Invalid version id specified")),
    }
}

/// The `x-amz-version-id` an answer carries about `o` in bucket `b`: its id, `null`
/// for the null version of a bucket that has had versioning, none otherwise.
pub(super) fn version_header(b: &BucketRec, version: &Option<String>) -> Option<String> {
    match version {
        Some(v) => Some(v.clone()),
        None if b.versioning != Versioning::Off => Some("null".into()),
        None => None,
    }
}

/// The answer to a GET or HEAD that finds a delete marker: 404 `NoSuchKey` when it is
/// the key's latest version (asked for without an id), 405 `MethodNotAllowed` when it
/// was asked for by id; both say it is a delete marker and which.
fn marker_error(m: &Marker, by_id: bool) -> S3Error {
    let mut e = if by_id {
        let mut e = s3_error!(MethodNotAllowed, "The specified method is not allowed against this resource.");
        e.set_status_code(StatusCode::METHOD_NOT_ALLOWED);
        e
    } else {
        s3_error!(NoSuchKey)
    };
    let mut h = HeaderMap::new();
    h.insert("x-amz-delete-marker", HeaderValue::from_static("true"));
    let v = m.version.as_deref().unwrap_or("null");
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert("x-amz-version-id", v);
    }
    if by_id {
        h.insert(http::header::ALLOW, HeaderValue::from_static("DELETE"));
        let mut date = Vec::new();
        if ts(m.modified_ms).format(s3s::dto::TimestampFormat::HttpDate, &mut date).is_ok() {
            if let Ok(t) = HeaderValue::from_bytes(&date) {
                h.insert(http::header::LAST_MODIFIED, t);
            }
        }
    }
    e.set_headers(h);
    e
}

impl Gateway {
    /// The object version a request names: the current object (`version` none), or
    /// that version. Not found is the inner error: `NoSuchKey` (saying so when the
    /// latest version is a delete marker), `NoSuchVersion`, or `MethodNotAllowed` for
    /// a delete marker asked for by id; the caller decides whether the caller may
    /// learn it.
    pub(super) async fn lookup(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> S3Result<Result<Object, S3Error>> {
        Ok(match version {
            None => match self.catalog.object(bucket, key).await? {
                Some(o) => Ok(o),
                None => match self.catalog.latest_marker(bucket, key).await? {
                    Some(m) => Err(marker_error(&m, false)),
                    None => Err(s3_error!(NoSuchKey)),
                },
            },
            Some(v) => match self.catalog.version(bucket, key, v).await? {
                Some(Entry::Object(o)) => Ok(o),
                Some(Entry::Marker(m)) => Err(marker_error(&m, true)),
                None => Err(s3_error!(NoSuchVersion, "The specified version does not exist.")),
            },
        })
    }
}

/// ListObjectVersions: every version and delete marker under the prefix, by key and
/// newest first, with common prefixes; a page continues after the key and version-id
/// markers.
pub(super) async fn list_object_versions(
    gw: &Gateway,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let tenant = gw.bucket_for(&req, &req.input.bucket, Perm::Read).await?.tenant;
    let i = &req.input;
    let vmarker = i.version_id_marker.as_deref().filter(|m| !m.is_empty());
    let kmarker = i.key_marker.clone().unwrap_or_default();
    if vmarker.is_some() && kmarker.is_empty() {
        return Err(s3_error!(InvalidArgument, "A version-id marker cannot be specified without a key marker."));
    }
    if vmarker.is_some_and(|v| !valid_version_id(v)) {
        return Err(s3_error!(InvalidArgument, "Invalid version id specified"));
    }
    let max = i.max_keys.unwrap_or(LIST_ENTRIES_MAX);
    if max < 0 {
        return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
    }
    let prefix = i.prefix.clone().unwrap_or_default();
    let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
    let enc = |s: String| if url { super::listing::url_encode(&s) } else { s };
    let page = match max {
        0 => Default::default(),
        _ => {
            let cursor: VersionCursor = gw.catalog.version_cursor(&i.bucket, &kmarker, vmarker).await?;
            let max = max.min(LIST_ENTRIES_MAX) as usize;
            gw.catalog.version_page(&i.bucket, &prefix, i.delimiter.as_deref(), cursor, max, LIST_BATCH_MIN).await?
        }
    };
    let who = owner(&tenant);
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    for (e, latest) in page.entries {
        match e {
            Entry::Object(o) => versions.push(ObjectVersion {
                key: Some(enc(o.key.clone())),
                e_tag: Some(etag(&o.etag)),
                last_modified: Some(ts(o.modified_ms)),
                size: Some(o.size as i64),
                storage_class: Some(ObjectVersionStorageClass::from(class_name(o.info.storage_class).to_owned())),
                owner: Some(who.clone()),
                checksum_algorithm: o.info.checksum.as_ref().map(|c| vec![checksum_algorithm(c.algo)]),
                checksum_type: o.info.checksum_type.map(|k| ChecksumType::from_static(k.name())),
                is_latest: Some(latest),
                version_id: Some(o.version.unwrap_or_else(|| "null".into())),
                ..Default::default()
            }),
            Entry::Marker(m) => markers.push(DeleteMarkerEntry {
                key: Some(enc(m.key.clone())),
                last_modified: Some(ts(m.modified_ms)),
                owner: Some(who.clone()),
                is_latest: Some(latest),
                version_id: Some(m.version.unwrap_or_else(|| "null".into())),
            }),
        }
    }
    let (next_key, next_version) = match page.next {
        Some((k, v)) => (Some(enc(k)), v),
        None => (None, None),
    };
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(i.bucket.clone()),
        prefix: Some(enc(prefix)),
        delimiter: i.delimiter.clone().filter(|d| !d.is_empty()).map(enc),
        key_marker: Some(enc(kmarker)),
        version_id_marker: i.version_id_marker.clone(),
        max_keys: Some(max),
        is_truncated: Some(next_key.is_some()),
        next_key_marker: next_key,
        next_version_id_marker: next_version,
        versions: Some(versions),
        delete_markers: (!markers.is_empty()).then_some(markers),
        common_prefixes: Some(page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
        encoding_type: i.encoding_type.clone(),
        ..Default::default()
    }))
}
