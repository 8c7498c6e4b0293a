//! Buckets: list, create, head, location, delete (only when empty).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN;
use base64::Engine;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::dto::{owner, ts};
use super::Gateway;
use crate::catalog::{CatalogError, ConfigKind};
use crate::limits::BUCKET_NAME_BYTES;

pub(super) async fn list_buckets(
    gw: &Gateway,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let tenant = gw.tenant(&req).await?;
    let i = &req.input;
    let max = match i.max_buckets {
        None => usize::MAX,
        Some(n @ 1..=BUCKETS_PAGE_MAX) => n as usize,
        Some(_) => return Err(s3_error!(InvalidArgument, "max-buckets must be 1 to {BUCKETS_PAGE_MAX}")),
    };
    // The token is the last name of the page before (buckets come in name order).
    let after = match &i.continuation_token {
        Some(t) => String::from_utf8(TOKEN.decode(t).map_err(|_| bad_token())?).map_err(|_| bad_token())?,
        None => String::new(),
    };
    let prefix = i.prefix.clone().unwrap_or_default();
    let mut names =
        gw.catalog.buckets(&tenant).await?.into_iter().filter(|b| b.name.starts_with(&prefix) && b.name > after);
    let list: Vec<Bucket> = names
        .by_ref()
        .take(max)
        .map(|b| Bucket { name: Some(b.name), creation_date: Some(ts(b.created_ms)), bucket_region: None })
        .collect();
    let next = match names.next() {
        Some(_) => list.last().and_then(|b| b.name.as_ref()).map(|n| TOKEN.encode(n)),
        None => None,
    };
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(list),
        owner: Some(owner(&tenant)),
        continuation_token: next,
        prefix: i.prefix.clone(),
    }))
}

/// The most buckets one ListBuckets page may ask for (as AWS).
const BUCKETS_PAGE_MAX: i32 = 10_000;

fn bad_token() -> s3s::S3Error {
    s3_error!(InvalidArgument, "the continuation token is not valid")
}

pub(super) async fn create_bucket(
    gw: &Gateway,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let tenant = gw.tenant(&req).await?;
    let i = &req.input;
    validate_bucket_name(&i.bucket)?;
    let acl = super::acl::AclRequest::of(i.acl.as_ref().map(|a| a.as_str()), i.into(), None).acl(gw).await?;
    match gw.catalog.create_bucket(&tenant, &i.bucket, gw.classes.standard).await {
        // As AWS's default region (us-east-1, for legacy compatibility): creating a
        // bucket one owns already succeeds, and resets its ACL to the one asked for.
        Err(CatalogError::BucketExists { owned_by_you: true }) => {
            let b = gw.catalog.owned_bucket(&tenant, &i.bucket).await?;
            super::acl::set_bucket_acl(gw, &b, &acl.unwrap_or_default()).await?;
            return Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{}", i.bucket)) }));
        }
        r => r?,
    }
    let location = i
        .create_bucket_configuration
        .as_ref()
        .and_then(|c| c.location_constraint.as_ref())
        .map(|l| l.as_str().to_owned())
        .filter(|l| !l.is_empty());
    if let Some(l) = location {
        let b = gw.catalog.owned_bucket(&tenant, &i.bucket).await?;
        gw.catalog.set_bucket_config(&b, ConfigKind::Location, Some(&l)).await?;
    }
    if i.object_lock_enabled_for_bucket == Some(true) {
        let b = gw.catalog.owned_bucket(&tenant, &i.bucket).await?;
        super::lock::enable_on_create(gw, &b).await?;
    }
    // Made private first; the grants follow (a failure leaves it private).
    if let Some(acl) = acl.filter(|a| !a.grants.is_empty()) {
        let b = gw.catalog.owned_bucket(&tenant, &i.bucket).await?;
        super::acl::set_bucket_acl(gw, &b, &acl).await?;
    }
    Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{}", req.input.bucket)) }))
}

pub(super) async fn head_bucket(
    gw: &Gateway,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    gw.bucket_for(&req, &req.input.bucket, crate::acl::Perm::Read).await?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

pub(super) async fn get_bucket_location(
    gw: &Gateway,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    // The LocationConstraint it was created with (none: the default region).
    let location = gw.catalog.bucket_config(&b.name, ConfigKind::Location).await?;
    Ok(S3Response::new(GetBucketLocationOutput { location_constraint: location.map(BucketLocationConstraint::from) }))
}

pub(super) async fn delete_bucket(
    gw: &Gateway,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let tenant = gw.tenant(&req).await?;
    gw.catalog.delete_bucket(&tenant, &req.input.bucket).await?;
    Ok(S3Response::new(DeleteBucketOutput::default()))
}

/// S3's bucket naming rules: 3 to 63 of a-z 0-9 - ., starting and ending with a letter
/// or digit, no `..`, not an IPv4 address.
fn validate_bucket_name(name: &str) -> S3Result<()> {
    let ok = BUCKET_NAME_BYTES.contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err();
    if ok {
        Ok(())
    } else {
        Err(s3_error!(InvalidBucketName))
    }
}
