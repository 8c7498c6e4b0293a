//! Objects: PUT (the body streamed into the LogStreams through its hashes), GET and
//! HEAD (with Range, partNumber and conditions), DELETE, DeleteObjects, and CopyObject
//! (sharing the source's slices when the policy is the same).

use base64::Engine;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::conditions::{read_conditions, write_condition};
use super::dto::{etag, info_from, parse_expires, ts};
use super::errors::{bad_digest, invalid_part_number, invalid_range, unreadable};
use super::{Gateway, Redundancy};
use crate::catalog::{Object, WriteCondition};
use crate::checksum::{self, Algo, Checksum, Kind};
use crate::db::now_ms;
use crate::limits::{DELETE_KEYS_MAX, KEY_BYTES_MAX, PUT_BYTES_MAX};

/// The bytes `[start, end)` of an object a GET or HEAD serves.
struct Served {
    start: u64,
    end: u64,
    partial: bool,
}

/// A body's checksums, the requested flexible one and Content-MD5 checked once it
/// has all passed through.
pub(super) struct Hashing {
    pub(super) md5: Md5,
    pub(super) algo: Option<(Algo, checksum::Hasher)>,
}

impl Hashing {
    pub(super) fn new(algo: Option<Algo>) -> Hashing {
        Hashing { md5: Md5::new(), algo: algo.map(|a| (a, a.hasher())) }
    }
    pub(super) fn update(&mut self, b: &[u8]) {
        self.md5.update(b);
        if let Some((_, h)) = &mut self.algo {
            h.update(b);
        }
    }
}

/// What a PUT or UploadPart stored: size, slices, MD5 (hex), and the flexible checksum.
pub(super) struct Stored {
    pub(super) size: u64,
    pub(super) slices: Vec<client::Slice>,
    pub(super) md5: [u8; 16],
    pub(super) checksum: Option<Checksum>,
}

impl Gateway {
    /// Streams a body into the LogStreams, checking Content-MD5 and the flexible
    /// checksum (from a header or the aws-chunked trailer).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn store_body<T>(
        &self,
        req: &S3Request<T>,
        policy: Redundancy,
        body: Option<StreamingBlob>,
        limit: u64,
        content_md5: &Option<String>,
        algorithm: &Option<ChecksumAlgorithm>,
        given: &checksum::Given,
        content_length: Option<i64>,
    ) -> S3Result<Stored> {
        if content_length.is_some_and(|l| l as u64 > limit) {
            return Err(s3_error!(EntityTooLarge));
        }
        let want_md5 = match content_md5 {
            None => None,
            Some(s) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .ok()
                    .filter(|b| b.len() == 16)
                    .ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not a base64 MD5"))?,
            ),
        };
        let trailer = req.headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
        let algo = checksum::requested(algorithm.as_ref().map(|a| a.as_str()), given.present(), trailer.as_deref())?;
        let mut h = Hashing::new(algo);
        let (slices, size) = match body {
            Some(b) => self.data.put(policy, b, limit, |x| h.update(x)).await?,
            None => (Vec::new(), 0),
        };
        if content_length.is_some_and(|l| l as u64 != size) {
            return Err(s3_error!(IncompleteBody, "the body is shorter or longer than Content-Length"));
        }
        let md5: [u8; 16] = h.md5.finalize().into();
        if let Some(w) = want_md5 {
            if w != md5 {
                return Err(s3_error!(BadDigest, "the Content-MD5 you specified did not match what we received"));
            }
        }
        let checksum = match h.algo {
            None => None,
            Some((a, hasher)) => {
                let got = hasher.finish();
                let expected = given.get(a).or_else(|| {
                    req.trailing_headers.as_ref().and_then(|t| {
                        t.read(|hs| hs.get(a.header()).and_then(|v| v.to_str().ok()).map(str::to_string)).flatten()
                    })
                });
                if let Some(e) = expected {
                    if e != got.value {
                        return Err(bad_digest(a));
                    }
                }
                Some(got)
            }
        };
        Ok(Stored { size, slices, md5, checksum })
    }
}

pub(super) fn validate_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(s3_error!(KeyTooLongError, "keys are 1 to {KEY_BYTES_MAX} bytes"));
    }
    Ok(())
}

pub(super) async fn put_object(gw: &Gateway, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    validate_key(&req.input.key)?;
    let i = &req.input;
    let cond = write_condition(i.if_match.clone(), i.if_none_match.clone())?;
    let mut info = info_of!(i)?;
    let policy = gw.classify(&mut info, i.storage_class.as_ref(), &b)?;
    let given = given!(i);
    let (algorithm, md5h, len) = (i.checksum_algorithm.clone(), i.content_md5.clone(), i.content_length);
    let (bucket, key) = (i.bucket.clone(), i.key.clone());
    let mut req = req;
    let body = req.input.body.take();
    let st = gw.store_body(&req, policy, body, PUT_BYTES_MAX, &md5h, &algorithm, &given, len).await?;
    info.checksum = st.checksum.clone();
    if info.checksum.is_some() {
        info.checksum_type = Some(Kind::FullObject);
    }
    let o = Object { key, size: st.size, etag: hex::encode(st.md5), modified_ms: now_ms(), info, slices: st.slices };
    gw.catalog.put_object(&bucket, &o, &cond).await?;
    let mut out = PutObjectOutput { e_tag: Some(etag(&o.etag)), ..Default::default() };
    if let Some(c) = &o.info.checksum {
        set_checksum!(out, c);
        out.checksum_type = Some(ChecksumType::from_static(ChecksumType::FULL_OBJECT));
    }
    Ok(S3Response::new(out))
}

pub(super) async fn get_object(gw: &Gateway, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
    gw.bucket_of(&req, &req.input.bucket).await?;
    let i = &req.input;
    let o = gw.object(&i.bucket, &i.key).await?;
    read_conditions(
        &o.etag,
        o.modified_ms,
        &i.if_match,
        &i.if_none_match,
        &i.if_modified_since,
        &i.if_unmodified_since,
    )?;
    let r = served(&o, &i.range, i.part_number)?;
    let body = gw.data.get_started(&o.slices, r.start, r.end).await.map_err(|e| {
        tracing::error!("GET {}/{}: {e}", i.bucket, i.key);
        unreadable(e)
    })?;
    let mut resp = object_output!(GetObjectOutput, o, r, i.part_number, i.checksum_mode);
    resp.output.body = Some(StreamingBlob::wrap(body));
    Ok(resp)
}

pub(super) async fn head_object(
    gw: &Gateway,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    gw.bucket_of(&req, &req.input.bucket).await?;
    let i = &req.input;
    let o = gw.object(&i.bucket, &i.key).await?;
    read_conditions(
        &o.etag,
        o.modified_ms,
        &i.if_match,
        &i.if_none_match,
        &i.if_modified_since,
        &i.if_unmodified_since,
    )?;
    let r = served(&o, &i.range, i.part_number)?;
    Ok(object_output!(HeadObjectOutput, o, r, i.part_number, i.checksum_mode))
}

pub(super) async fn delete_object(
    gw: &Gateway,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    gw.bucket_of(&req, &req.input.bucket).await?;
    let i = &req.input;
    if let Some(c) = &i.if_match {
        let cur = gw.catalog.object(&i.bucket, &i.key).await?;
        let ok = match (c, &cur) {
            (_, None) => false,
            (ETagCondition::Any, Some(_)) => true,
            (ETagCondition::ETag(e), Some(o)) => e.value() == o.etag,
        };
        if !ok {
            return Err(s3_error!(PreconditionFailed));
        }
    }
    gw.catalog.delete_object(&i.bucket, &i.key).await?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

pub(super) async fn delete_objects(
    gw: &Gateway,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    gw.bucket_of(&req, &req.input.bucket).await?;
    let i = &req.input;
    if i.delete.objects.len() > DELETE_KEYS_MAX {
        return Err(s3_error!(MalformedXML, "at most {DELETE_KEYS_MAX} keys per request"));
    }
    let quiet = i.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for o in &i.delete.objects {
        match gw.catalog.delete_object(&i.bucket, &o.key).await {
            Ok(_) if quiet => {}
            Ok(_) => deleted.push(DeletedObject { key: Some(o.key.clone()), ..Default::default() }),
            Err(e) => errors.push(s3s::dto::Error {
                code: Some("InternalError".into()),
                key: Some(o.key.clone()),
                message: Some(e.to_string()),
                version_id: None,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    }))
}

pub(super) async fn copy_object(
    gw: &Gateway,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let tenant = b.tenant.clone();
    let i = &req.input;
    validate_key(&i.key)?;
    let (sb, sk, src) = copy_source!(gw, tenant, i);
    let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    if sb == i.bucket && sk == i.key && !replace && i.storage_class.is_none() {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
        ));
    }
    let mut info = if replace { info_of!(i)? } else { src.info.clone() };
    info.checksum = src.info.checksum.clone();
    info.checksum_type = src.info.checksum_type;
    info.parts = src.info.parts.clone();
    // The copy's class is the one asked for, else the bucket's default (as S3 does).
    let policy = gw.classify(&mut info, i.storage_class.as_ref(), &b)?;
    let slices = if gw.policy_of(&src.info) == policy {
        // The bytes are shared: the new object names the same slices.
        src.slices
    } else {
        // Another policy: the bytes are written anew, coded the copy's way.
        let body = gw.data.get(&src.slices, 0, src.size);
        gw.data.put(policy, body, src.size, |_| {}).await?.0
    };
    let o = Object { key: i.key.clone(), size: src.size, etag: src.etag.clone(), modified_ms: now_ms(), info, slices };
    gw.catalog.put_object(&i.bucket, &o, &WriteCondition::default()).await?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&o.etag)),
            last_modified: Some(ts(o.modified_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// What a GET or HEAD with `range` or `part_number` serves of `o`.
fn served(o: &Object, range: &Option<Range>, part_number: Option<i32>) -> S3Result<Served> {
    let (start, end, partial) = match (range, part_number) {
        (Some(_), Some(_)) => return Err(s3_error!(InvalidRequest, "Range and partNumber cannot both be given")),
        (Some(r), None) => {
            let rg = r.check(o.size).map_err(|_| invalid_range())?;
            (rg.start, rg.end, true)
        }
        (None, Some(n)) => part_range(o, n)?,
        (None, None) => (0, o.size, false),
    };
    Ok(Served { start, end, partial })
}

/// The byte range of part `n` of an object (a single-part object has part 1 only).
fn part_range(o: &Object, n: i32) -> S3Result<(u64, u64, bool)> {
    if o.info.parts.is_empty() {
        return if n == 1 { Ok((0, o.size, false)) } else { Err(invalid_part_number()) };
    }
    if n < 1 || n as usize > o.info.parts.len() {
        return Err(invalid_part_number());
    }
    let start: u64 = o.info.parts[..n as usize - 1].iter().sum();
    Ok((start, start + o.info.parts[n as usize - 1], true))
}
