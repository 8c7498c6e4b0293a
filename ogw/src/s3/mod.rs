//! The S3 operations, on `s3s` (which parses requests, verifies SigV4 in headers,
//! presigned URLs and aws-chunked bodies, and writes the S3 XML and errors).
//! Every operation first resolves the caller's tenant; a bucket of another tenant
//! answers `AccessDenied`. One `impl S3 for Gateway` names every operation and hands
//! it to its family: `buckets`, `objects`, `listing`, `multipart`; `auth` finds the
//! caller's tenant, `conditions` checks `If-*` headers, `errors` maps every error to
//! its S3 code, `dto` turns records into s3s's types and back.

use std::sync::Arc;

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use crate::class::Classes;
/// A redundancy policy (`s3s::dto` has a `Policy` of its own: bucket policy JSON).
type Redundancy = proto::meta::Policy;
use crate::catalog::{Catalog, Object, ObjectInfo};
use crate::data::Data;

/// The checksum values of a request's headers (the inputs share field names).
macro_rules! given {
    ($i:expr) => {
        checksum::Given {
            crc32: $i.checksum_crc32.clone(),
            crc32c: $i.checksum_crc32c.clone(),
            crc64nvme: $i.checksum_crc64nvme.clone(),
            sha1: $i.checksum_sha1.clone(),
            sha256: $i.checksum_sha256.clone(),
        }
    };
}

/// `info_from` over a request's content headers, metadata and storage class.
macro_rules! info_of {
    ($i:expr) => {
        info_from(
            $i.content_type.clone(),
            $i.content_encoding.clone(),
            $i.content_disposition.clone(),
            $i.content_language.clone(),
            $i.cache_control.clone(),
            $i.expires.clone(),
            $i.metadata.clone(),
        )
    };
}

/// The source object of a CopyObject or UploadPartCopy, as (bucket, key, object): in a
/// bucket of the caller's tenant, meeting the `x-amz-copy-source-if-*` conditions
/// (a failed one is 412, never 304).
macro_rules! copy_source {
    ($gw:expr, $tenant:expr, $i:expr) => {{
        let CopySource::Bucket { bucket, key, .. } = &$i.copy_source else {
            return Err(s3_error!(NotImplemented, "copy from access points is not supported"));
        };
        $gw.catalog.owned_bucket(&$tenant, bucket).await?;
        let src = $gw.object(bucket, key).await?;
        read_conditions(
            &src.etag,
            src.modified_ms,
            &$i.copy_source_if_match,
            &$i.copy_source_if_none_match,
            &$i.copy_source_if_modified_since,
            &$i.copy_source_if_unmodified_since,
        )
        .map_err(|e| if *e.code() == S3ErrorCode::NotModified { s3_error!(PreconditionFailed) } else { e })?;
        (bucket.to_string(), key.to_string(), src)
    }};
}

/// The headers GET and HEAD answer with (the outputs share field names): the object's
/// content headers and metadata, the range served, and its checksum when asked for
/// and the whole object is served.
macro_rules! object_output {
    ($ty:ident, $o:expr, $r:expr, $part_number:expr, $checksum_mode:expr) => {{
        let (o, r): (&Object, &Served) = (&$o, &$r);
        let mut out = $ty {
            content_length: Some((r.end - r.start) as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&o.etag)),
            last_modified: Some(ts(o.modified_ms)),
            content_type: o.info.content_type.as_ref().and_then(|c| c.parse().ok()),
            content_encoding: o.info.content_encoding.clone(),
            content_disposition: o.info.content_disposition.clone(),
            content_language: o.info.content_language.clone(),
            cache_control: o.info.cache_control.clone(),
            expires: parse_expires(&o.info.expires),
            metadata: (!o.info.user.is_empty()).then(|| o.info.user.clone().into_iter().collect()),
            // S3 names the class only when it is not STANDARD.
            storage_class: o
                .info
                .storage_class
                .filter(|c| *c != crate::class::StorageClass::Standard)
                .map(|c| StorageClass::from_static(c.name())),
            parts_count: $part_number.map(|_| o.info.parts.len().max(1) as i32),
            ..Default::default()
        };
        if r.partial {
            out.content_range = Some(format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), o.size));
        }
        let want = $checksum_mode.as_ref().is_some_and(|m: &ChecksumMode| m.as_str() == ChecksumMode::ENABLED);
        if let (true, false, Some(c)) = (want, r.partial, &o.info.checksum) {
            set_checksum!(out, c);
            out.checksum_type = o.info.checksum_type.map(|k| ChecksumType::from_static(k.name()));
        }
        let mut resp = S3Response::new(out);
        if r.partial {
            resp.status = Some(http::StatusCode::PARTIAL_CONTENT);
        }
        resp
    }};
}

mod auth;
mod buckets;
mod conditions;
mod dto;
mod errors;
mod listing;
mod multipart;
mod objects;

pub use auth::Auth;
use auth::KeyCache;

pub struct Gateway {
    pub catalog: Catalog,
    pub data: Arc<Data>,
    /// Storage classes and their policies (the standard one is new buckets' default).
    pub classes: Classes,
    keys: KeyCache,
}

impl Gateway {
    /// The gateway and the authenticator that shares its key cache.
    pub fn new(catalog: Catalog, data: Arc<Data>, classes: Classes) -> (Gateway, Auth) {
        let keys = KeyCache::default();
        (Gateway { catalog: catalog.clone(), data, classes, keys: keys.clone() }, Auth { catalog, keys })
    }

    pub(super) async fn bucket_of<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<String> {
        Ok(self.owned(req, bucket).await?.tenant)
    }

    /// The bucket, if the caller's tenant owns it.
    pub(super) async fn owned<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<crate::catalog::Bucket> {
        let tenant = self.tenant(req).await?;
        Ok(self.catalog.owned_bucket(&tenant, bucket).await?)
    }

    /// The policy an object's bytes were written with.
    pub(super) fn policy_of(&self, info: &ObjectInfo) -> Redundancy {
        info.policy.unwrap_or(self.classes.standard)
    }

    /// Sets a new object's storage class and policy: the class asked for, else the
    /// bucket's default.
    pub(super) fn classify(
        &self,
        info: &mut ObjectInfo,
        requested: Option<&StorageClass>,
        bucket: &crate::catalog::Bucket,
    ) -> S3Result<Redundancy> {
        let (class, policy) = self.classes.resolve(requested.map(|c| c.as_str()), bucket.policy)?;
        info.storage_class = Some(class);
        info.policy = Some(policy);
        Ok(policy)
    }

    pub(super) async fn object(&self, bucket: &str, key: &str) -> S3Result<Object> {
        self.catalog.object(bucket, key).await?.ok_or_else(|| s3_error!(NoSuchKey))
    }

    pub(super) fn owner(tenant: &str) -> Owner {
        Owner { display_name: Some(tenant.to_string()), id: Some(tenant.to_string()) }
    }
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        buckets::list_buckets(self, req).await
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        buckets::create_bucket(self, req).await
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        buckets::head_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        buckets::get_bucket_location(self, req).await
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        buckets::delete_bucket(self, req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        objects::put_object(self, req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        objects::get_object(self, req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        objects::head_object(self, req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        objects::delete_object(self, req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        objects::delete_objects(self, req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        objects::copy_object(self, req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        listing::list_objects_v2(self, req).await
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        listing::list_objects(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(self, req).await
    }
}
