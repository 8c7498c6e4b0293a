//! Tags of objects and buckets. An object's tags live in its row's `info` (set by PUT,
//! copy and multipart uploads from `x-amz-tagging`, replaced by PutObjectTagging); a
//! bucket's are its `tagging` configuration document. Limits as AWS's: 10 tags an
//! object, 50 a bucket, keys of 1 to 128 characters, values of at most 256, no key
//! twice, none starting with `aws:`.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::versioning::{version_arg, version_header};
use super::Gateway;
use crate::catalog::ConfigKind;

pub(super) const OBJECT_TAGS_MAX: usize = 10;
const BUCKET_TAGS_MAX: usize = 50;
const TAG_KEY_CHARS_MAX: usize = 128;
const TAG_VALUE_CHARS_MAX: usize = 256;

pub(super) type Tags = Vec<(String, String)>;

/// Checks a tag set against S3's limits (`max` tags).
pub(super) fn validate(tags: &Tags, max: usize) -> S3Result<()> {
    if tags.len() > max {
        return Err(s3_error!(InvalidTag, "at most {max} tags are allowed"));
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        let chars = k.chars().count();
        if chars == 0 || chars > TAG_KEY_CHARS_MAX {
            return Err(s3_error!(InvalidTag, "a tag key must have 1 to {TAG_KEY_CHARS_MAX} characters"));
        }
        if v.chars().count() > TAG_VALUE_CHARS_MAX {
            return Err(s3_error!(InvalidTag, "a tag value may have at most {TAG_VALUE_CHARS_MAX} characters"));
        }
        if k.starts_with("aws:") {
            return Err(s3_error!(InvalidTag, "tag keys starting with aws: are reserved"));
        }
        if tags[..i].iter().any(|(other, _)| other == k) {
            return Err(s3_error!(InvalidTag, "the tag key {k:?} is given twice"));
        }
    }
    Ok(())
}

/// The tags of an `x-amz-tagging` header (URL-encoded `k1=v1&k2=v2`), checked.
pub(super) fn from_header(h: Option<&str>) -> S3Result<Tags> {
    let Some(h) = h.filter(|h| !h.is_empty()) else { return Ok(Vec::new()) };
    let tags: Tags = form_urlencoded::parse(h.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    validate(&tags, OBJECT_TAGS_MAX)?;
    Ok(tags)
}

fn from_set(set: TagSet) -> Tags {
    set.into_iter().map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default())).collect()
}

fn to_set(tags: &Tags) -> TagSet {
    tags.iter().map(|(k, v)| Tag { key: Some(k.clone()), value: Some(v.clone()) }).collect()
}

pub(super) async fn get_object_tagging(
    gw: &Gateway,
    req: S3Request<GetObjectTaggingInput>,
) -> S3Result<S3Response<GetObjectTaggingOutput>> {
    let i = &req.input;
    let b = gw.owned(&req, &i.bucket).await?;
    let version = version_arg(i.version_id.as_deref())?;
    let o = gw.lookup(&i.bucket, &i.key, version).await??;
    Ok(S3Response::new(GetObjectTaggingOutput {
        tag_set: to_set(&o.info.tags),
        version_id: version_header(&b, &o.version),
    }))
}

pub(super) async fn put_object_tagging(
    gw: &Gateway,
    req: S3Request<PutObjectTaggingInput>,
) -> S3Result<S3Response<PutObjectTaggingOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let i = req.input;
    let version = version_arg(i.version_id.as_deref())?;
    let tags = from_set(i.tagging.tag_set);
    validate(&tags, OBJECT_TAGS_MAX)?;
    if !gw
        .catalog
        .update_object_info(&b, &i.key, version, |info| {
            info.tags = tags.clone();
            Ok(())
        })
        .await?
    {
        return Err(s3_error!(NoSuchKey));
    }
    Ok(S3Response::new(PutObjectTaggingOutput { version_id: version.map(str::to_owned) }))
}

pub(super) async fn delete_object_tagging(
    gw: &Gateway,
    req: S3Request<DeleteObjectTaggingInput>,
) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let i = &req.input;
    let version = version_arg(i.version_id.as_deref())?;
    if !gw
        .catalog
        .update_object_info(&b, &i.key, version, |info| {
            info.tags.clear();
            Ok(())
        })
        .await?
    {
        return Err(s3_error!(NoSuchKey));
    }
    Ok(S3Response::new(DeleteObjectTaggingOutput { version_id: version.map(str::to_owned) }))
}

pub(super) async fn get_bucket_tagging(
    gw: &Gateway,
    req: S3Request<GetBucketTaggingInput>,
) -> S3Result<S3Response<GetBucketTaggingOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let doc = gw.catalog.bucket_config(&b.name, ConfigKind::Tagging).await?;
    let Some(doc) = doc else { return Err(s3_error!(NoSuchTagSet)) };
    let tags: Tags = serde_json::from_str(&doc).map_err(super::errors::internal)?;
    Ok(S3Response::new(GetBucketTaggingOutput { tag_set: to_set(&tags) }))
}

pub(super) async fn put_bucket_tagging(
    gw: &Gateway,
    req: S3Request<PutBucketTaggingInput>,
) -> S3Result<S3Response<PutBucketTaggingOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let tags = from_set(req.input.tagging.tag_set);
    validate(&tags, BUCKET_TAGS_MAX)?;
    let doc = serde_json::to_string(&tags).expect("plain data");
    gw.catalog.set_bucket_config(&b, ConfigKind::Tagging, Some(&doc)).await?;
    Ok(S3Response::new(PutBucketTaggingOutput::default()))
}

pub(super) async fn delete_bucket_tagging(
    gw: &Gateway,
    req: S3Request<DeleteBucketTaggingInput>,
) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    gw.catalog.set_bucket_config(&b, ConfigKind::Tagging, None).await?;
    Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
}
