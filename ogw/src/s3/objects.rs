//! Objects: PUT, GET and HEAD (one read path: conditions, Range or partNumber, the
//! headers both answer with), DELETE, DeleteObjects, and CopyObject (sharing the
//! source's slices when the policy is the same). How a body is stored is in `ingest`.

use s3s::dto::{self, *};
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::acl::AclRequest;
use super::conditions::{delete_allowed, write_condition, ReadConditions};
use super::dto::{etag, parse_expires, ts, Checksums, ContentHeaders};
use super::errors::{internal, invalid_part_number, invalid_range, unreadable};
use super::Gateway;
use crate::acl::{Acl, Perm};
use crate::catalog::{Deleted, Layout, Object, WriteCondition};
use crate::checksum::Kind;
use crate::class::StorageClass as Class;
use crate::db::now_ms;
use crate::limits::{DELETE_KEYS_MAX, KEY_BYTES_MAX};

/// Object bytes on their way, boxed (plain, or decrypted on the way).
pub(super) type ByteStreamOf =
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static>>;

pub(super) async fn put_object(
    gw: &Gateway,
    mut req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    // Held until the row is committed: GC leaves what this write names alone.
    let _pinned = gw.data.pin();
    let blob = req.input.body.take();
    let b = gw.bucket_to_put(&req, &req.input.bucket).await?;
    let i = &req.input;
    validate_key(&i.key)?;
    let enc = gw.encryption_of(&b, i.into()).await?;
    let mut cond = write_condition(&i.if_match, &i.if_none_match)?;
    let appending = appended_to(gw, &b.name, &i.key, i.write_offset_bytes, enc.is_some()).await?;
    let mut info = ContentHeaders::from(i).info()?;
    info.tags = super::tagging::from_header(i.tagging.as_deref())?;
    info.acl = object_acl(gw, i.acl.as_ref(), Grants::from(i)).await?;
    gw.lock_new(&b, &mut info, i.into(), true).await?;
    let policy = gw.classify(&mut info, i.storage_class.as_ref(), &b)?;
    let iv = crate::sse::new_iv();
    // Appends grow an object by slices: they are never kept inline.
    let keep_max = if i.write_offset_bytes.is_some() { 0 } else { gw.inline_max };
    let sealing = enc.as_ref().map(|(_, k)| (*k, iv.as_str()));
    let st = gw.store_body(&req, policy, keep_max, blob, None, sealing).await?;
    info.sse = enc.map(|(s, _)| crate::sse::Sse { ivs: vec![iv], ..s });
    info.checksum = st.checksum;
    info.checksum_type = info.checksum.is_some().then_some(Kind::FullObject);
    let mut o = Object {
        key: i.key.clone(),
        size: st.size,
        etag: hex::encode(st.md5),
        modified_ms: now_ms(),
        info,
        layout: st.layout,
        version: None,
    };
    if let Some(prev) = appending {
        // The object grows by the new slices only; it keeps its metadata, and its
        // ETag names both parts (it is not the MD5 of the whole, as for multipart).
        cond.append_to = Some(Some((prev.etag.clone(), prev.modified_ms, prev.size)));
        o.etag = hex::encode(<md5::Md5 as md5::Digest>::digest(format!("{}{}", prev.etag, o.etag)));
        o.size += prev.size;
        let before = match prev.layout {
            Layout::Slices(s) => s,
            // Kept in its row: written out first, as the slices the new ones follow.
            Layout::Inline(b) => {
                let body = futures::stream::iter([Ok::<_, std::io::Error>(b)]);
                gw.data.put(policy, body, prev.size, Some(prev.size)).await?.0
            }
        };
        o.layout = Layout::Slices(before.into_iter().chain(o.layout.named().iter().copied()).collect());
        let mut info = prev.info.clone();
        if !info.parts.is_empty() {
            info.parts.push(st.size);
        }
        info.checksum = None;
        info.checksum_type = None;
        info.part_sums.clear();
        info.upload = None;
        o.info = info;
    } else if i.write_offset_bytes.is_some() {
        cond.append_to = Some(None); // an append at 0 makes the object, if still absent
    }
    let version = gw.catalog.put_object_in(&b, &o, &cond).await?;
    let mut out = PutObjectOutput {
        e_tag: Some(etag(&o.etag)),
        version_id: version,
        expiration: gw.expiration(&b.name, &o.key, &o.info.tags, o.size, o.modified_ms).await,
        ..Default::default()
    };
    if let Some(c) = &o.info.checksum {
        Checksums::from(&mut out).set(c);
        out.checksum_type = Some(ChecksumType::from_static(ChecksumType::FULL_OBJECT));
    }
    super::sse::sse_headers!(out, &o.info.sse);
    Ok(S3Response::new(out))
}

/// The object a PUT with `x-amz-write-offset-bytes` appends to (as S3 Express One Zone
/// does): the offset must be the object's size (0 with no object: the PUT makes it).
/// Encrypted objects are not appended to.
async fn appended_to(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    offset: Option<i64>,
    encrypting: bool,
) -> S3Result<Option<Object>> {
    let Some(offset) = offset else { return Ok(None) };
    if offset < 0 {
        return Err(s3_error!(InvalidArgument, "x-amz-write-offset-bytes must not be negative"));
    }
    match gw.catalog.object(bucket, key).await? {
        None if offset == 0 => Ok(None),
        Some(o) if o.size as i64 == offset => {
            if o.info.sse.is_some() || encrypting {
                return Err(s3_error!(NotImplemented, "appending to encrypted objects is not supported"));
            }
            Ok(Some(o))
        }
        _ => Err(crate::catalog::CatalogError::WrongOffset.into()),
    }
}

pub(super) async fn get_object(gw: &Gateway, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
    let i = &req.input;
    let (o, served, head) = read(gw, &req, i.into(), i.into(), i.into()).await?;
    let body = gw.data.get_started(&o.layout, served.start, served.end).await.map_err(|e| {
        tracing::error!("GET {}/{}: {e}", i.bucket, i.key);
        unreadable(e)
    })?;
    let mut out = match served.key {
        None => get_output(head, StreamingBlob::wrap(body)),
        Some(k) => {
            let c = super::sse::cipher(k, &o.info, o.size, served.start)?;
            get_output(head, StreamingBlob::wrap(super::sse::decrypting(body, c)))
        }
    };
    out.version_id = served.version.clone();
    out.tag_count = (!o.info.tags.is_empty()).then_some(o.info.tags.len() as i32);
    Ok(respond(out, &served))
}

pub(super) async fn head_object(
    gw: &Gateway,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let i = &req.input;
    let (o, served, head) = read(gw, &req, i.into(), i.into(), i.into()).await?;
    let mut head = head;
    head.version_id = served.version.clone();
    let mut resp = respond(head, &served);
    // (s3s's HEAD output has no field for it.)
    if !o.info.tags.is_empty() {
        resp.headers.insert("x-amz-tagging-count", o.info.tags.len().into());
    }
    Ok(resp)
}

view! {
    /// What GET and HEAD ask of an object (besides its `ReadConditions`).
    pub(super) struct Read {
        bucket: String,
        key: String,
        range: Option<Range>,
        part_number: Option<PartNumber>,
        checksum_mode: Option<ChecksumMode>,
        version_id: Option<ObjectVersionId>,
    } for GetObjectInput, HeadObjectInput
}

/// The bytes `[start, end)` of an object a GET or HEAD serves, and the version id
/// the answer names.
struct Served {
    start: u64,
    end: u64,
    partial: bool,
    version: Option<String>,
    /// The data key of encrypted bytes.
    key: Option<crate::sse::DataKey>,
}

/// The object a GET or HEAD asks for, what of it is served, and the headers both
/// answer with.
async fn read<T>(
    gw: &Gateway,
    req: &S3Request<T>,
    r: Read<'_>,
    conditions: ReadConditions<'_>,
    key: super::sse::KeyGiven<'_>,
) -> S3Result<(Object, Served, HeadObjectOutput)> {
    let version = super::versioning::version_arg(r.version_id.as_deref())?;
    let (b, o) = match gw.object_for(req, r.bucket, r.key, version, Perm::Read).await {
        Ok(found) => found,
        Err(mut e) if *e.code() == s3s::S3ErrorCode::NoSuchKey && e.headers().is_none() => {
            // (As S3: a 404 of a key says whether a delete marker hides it.)
            let mut h = http::HeaderMap::new();
            h.insert("x-amz-delete-marker", http::HeaderValue::from_static("false"));
            e.set_headers(h);
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if req.headers.contains_key("x-amz-server-side-encryption") {
        return Err(s3_error!(InvalidArgument, "x-amz-server-side-encryption is for requests that store bytes"));
    }
    conditions.check(&o)?;
    let mut s = served(&o, r.range, *r.part_number)?;
    s.key = gw.data_key(&o.info, key.key()?.as_ref())?;
    s.version = super::versioning::version_header(&b, &o.version);
    let mut out = head_output(&o, &s, *r.part_number, r.checksum_mode);
    // Only the current version expires by a rule's Expiration.
    if version.is_none() || gw.catalog.object(&b.name, &o.key).await?.is_some_and(|c| c.version == o.version) {
        out.expiration = gw.expiration(&b.name, &o.key, &o.info.tags, o.size, o.modified_ms).await;
    }
    Ok((o, s, out))
}

/// The headers of a GET or HEAD serving `s` of `o`: its content headers and metadata,
/// the range served, and its checksum when asked for and the whole object is served.
fn head_output(o: &Object, s: &Served, part_number: Option<i32>, mode: &Option<ChecksumMode>) -> HeadObjectOutput {
    let mut out = HeadObjectOutput {
        content_length: Some((s.end - s.start) as i64),
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
            .filter(|c| *c != Class::Standard)
            .map(|c| dto::StorageClass::from_static(c.name())),
        parts_count: part_number.map(|_| o.info.parts.len().max(1) as i32),
        ..Default::default()
    };
    super::lock::lock_headers(&o.info, &mut out);
    super::sse::sse_headers!(out, &o.info.sse);
    if s.partial {
        out.content_range = Some(format!("bytes {}-{}/{}", s.start, s.end.saturating_sub(1), o.size));
    }
    let want = mode.as_ref().is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
    // A part of a multipart object completed with checksums is served with its own.
    let part_sum = part_number.and_then(|n| o.info.part_sums.get(usize::try_from(n).ok()?.checked_sub(1)?));
    if let (Some(c), Some(v)) = (&o.info.checksum, part_sum) {
        Checksums::from(&mut out).set(&crate::checksum::Checksum { algo: c.algo, value: v.clone() });
        out.checksum_type = o.info.checksum_type.map(|k| ChecksumType::from_static(k.name()));
    } else if let (true, false, Some(c)) = (want, s.partial, &o.info.checksum) {
        Checksums::from(&mut out).set(c);
        out.checksum_type = o.info.checksum_type.map(|k| ChecksumType::from_static(k.name()));
    }
    out
}

/// GET answers with HEAD's headers (every field `head_output` sets) and the body.
fn get_output(h: HeadObjectOutput, body: StreamingBlob) -> GetObjectOutput {
    GetObjectOutput {
        body: Some(body),
        content_length: h.content_length,
        accept_ranges: h.accept_ranges,
        e_tag: h.e_tag,
        last_modified: h.last_modified,
        content_type: h.content_type,
        content_encoding: h.content_encoding,
        content_disposition: h.content_disposition,
        content_language: h.content_language,
        cache_control: h.cache_control,
        expires: h.expires,
        metadata: h.metadata,
        storage_class: h.storage_class,
        parts_count: h.parts_count,
        content_range: h.content_range,
        checksum_crc32: h.checksum_crc32,
        checksum_crc32c: h.checksum_crc32c,
        checksum_crc64nvme: h.checksum_crc64nvme,
        checksum_sha1: h.checksum_sha1,
        checksum_sha256: h.checksum_sha256,
        checksum_type: h.checksum_type,
        object_lock_mode: h.object_lock_mode,
        server_side_encryption: h.server_side_encryption,
        ssekms_key_id: h.ssekms_key_id,
        sse_customer_algorithm: h.sse_customer_algorithm,
        sse_customer_key_md5: h.sse_customer_key_md5,
        expiration: h.expiration,
        object_lock_retain_until_date: h.object_lock_retain_until_date,
        object_lock_legal_hold_status: h.object_lock_legal_hold_status,
        ..Default::default()
    }
}

/// The answer, 206 when only part of the object is served.
fn respond<O>(out: O, s: &Served) -> S3Response<O> {
    let mut resp = S3Response::new(out);
    if s.partial {
        resp.status = Some(http::StatusCode::PARTIAL_CONTENT);
    }
    resp
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
    Ok(Served { start, end, partial, version: None, key: None })
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

pub(super) async fn delete_object(
    gw: &Gateway,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let b = gw.bucket_for(&req, &req.input.bucket, Perm::Write).await?;
    let i = &req.input;
    let version = super::versioning::version_arg(i.version_id.as_deref())?;
    if let Some(c) = &i.if_match {
        let current = gw.catalog.object(&i.bucket, &i.key).await?;
        if !delete_allowed(c, current.as_ref()) {
            return Err(s3_error!(PreconditionFailed));
        }
    }
    let d = gw.delete_one(&b, &i.key, version, gw.bypass(&req, &b).await?).await?;
    Ok(S3Response::new(DeleteObjectOutput {
        delete_marker: d.marker.then_some(true),
        version_id: (version.is_some() || d.marker).then(|| d.version.unwrap_or_else(|| "null".into())),
        ..Default::default()
    }))
}

impl Gateway {
    /// Deletes the key `key` of `b` (a delete marker in a versioned bucket), or its
    /// version `version` for good if Object Lock lets it go (`bypass`: GOVERNANCE
    /// retention is bypassed).
    async fn delete_one(
        &self,
        b: &crate::catalog::Bucket,
        key: &str,
        version: Option<&str>,
        bypass: bool,
    ) -> S3Result<Deleted> {
        Ok(match version {
            None => self.catalog.delete_object(&b.name, key).await?,
            Some(v) => self.catalog.delete_version(b, key, v, &Gateway::delete_check(bypass)).await?,
        })
    }
}

pub(super) async fn delete_objects(
    gw: &Gateway,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let b = gw.bucket_for(&req, &req.input.bucket, Perm::Write).await?;
    let i = &req.input;
    if i.delete.objects.len() > DELETE_KEYS_MAX {
        return Err(s3_error!(MalformedXML, "at most {DELETE_KEYS_MAX} keys per request"));
    }
    let quiet = i.delete.quiet.unwrap_or(false);
    let bypass = gw.bypass(&req, &b).await?;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for o in &i.delete.objects {
        let version = match super::versioning::version_arg(o.version_id.as_deref()) {
            Ok(v) => v,
            Err(e) => {
                errors.push(dto::Error {
                    code: Some(e.code().as_str().to_owned()),
                    key: Some(o.key.clone()),
                    message: e.message().map(str::to_owned),
                    version_id: o.version_id.clone(),
                });
                continue;
            }
        };
        match gw.delete_one(&b, &o.key, version, bypass).await {
            Ok(_) if quiet => {}
            Ok(d) => deleted.push(DeletedObject {
                key: Some(o.key.clone()),
                version_id: o.version_id.clone(),
                delete_marker: d.marker.then_some(true),
                delete_marker_version_id: d.marker.then(|| d.version.unwrap_or_else(|| "null".into())),
            }),
            Err(e) => {
                let internal = *e.code() == s3s::S3ErrorCode::InternalError;
                if internal {
                    tracing::error!("request {}: deleting {:?}: {e}", super::stamp::current(), o.key);
                }
                errors.push(dto::Error {
                    code: Some(e.code().as_str().to_owned()),
                    key: Some(o.key.clone()),
                    message: e.message().map(str::to_owned),
                    version_id: o.version_id.clone(),
                })
            }
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
    // Held until the row is committed: GC leaves what this write names alone.
    let _pinned = gw.data.pin();
    // The source is checked against the caller's own rights, never the destination's.
    let caller = gw.tenant(&req).await?;
    let b = gw.bucket_for(&req, &req.input.bucket, Perm::Write).await?;
    let i = &req.input;
    validate_key(&i.key)?;
    let enc = gw.encryption_of(&b, i.into()).await?;
    let (sb, sk, src, src_version) = copy_source(gw, &caller, i.into()).await?;
    let src_key = gw.data_key(&src.info, super::sse::SourceKey::from(i).key()?.as_ref())?;
    let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    if sb == i.bucket && sk == i.key && !replace && i.storage_class.is_none() && enc.is_none() {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
        ));
    }
    let mut info = if replace { ContentHeaders::from(i).info()? } else { src.info.clone() };
    info.acl = object_acl(gw, i.acl.as_ref(), Grants::from(i)).await?;
    info.tags = match &i.tagging_directive {
        Some(d) if d.as_str() == TaggingDirective::REPLACE => super::tagging::from_header(i.tagging.as_deref())?,
        Some(d) if d.as_str() != TaggingDirective::COPY => {
            return Err(s3_error!(InvalidArgument, "x-amz-tagging-directive must be COPY or REPLACE"))
        }
        _ => src.info.tags.clone(),
    };
    info.checksum = src.info.checksum.clone();
    info.checksum_type = src.info.checksum_type;
    // A copy is a new version: its lock is its own request's (or the default).
    info.retention = None;
    info.legal_hold = false;
    gw.lock_new(&b, &mut info, i.into(), true).await?;
    info.parts = src.info.parts.clone();
    // The copy's class is the one asked for, else the bucket's default (as S3 does).
    let policy = gw.classify(&mut info, i.storage_class.as_ref(), &b)?;
    info.sse = None;
    let layout = if gw.policy_of(&src.info) == policy && src_key.is_none() && enc.is_none() {
        // The bytes are shared: the new object names the same slices (or keeps the same
        // bytes in its row).
        src.layout
    } else {
        // Another policy or another encryption: the bytes are written anew, coded and
        // encrypted the copy's way.
        let body = gw.data.get(&src.layout, 0, src.size);
        let body: ByteStreamOf = match src_key {
            Some(k) => Box::pin(super::sse::decrypting(body, super::sse::cipher(k, &src.info, src.size, 0)?)),
            None => Box::pin(body),
        };
        let size = Some(src.size);
        match &enc {
            None => gw.data.put_object(policy, body, src.size, size, gw.inline_max).await?.0,
            Some((s, k)) => {
                let iv = crate::sse::new_iv();
                let c = crate::sse::Cipher::new(*k, std::slice::from_ref(&iv), &[u64::MAX], 0).map_err(internal)?;
                info.sse = Some(crate::sse::Sse { ivs: vec![iv], ..s.clone() });
                let sealed = super::sse::decrypting(body, c);
                gw.data.put_object(policy, sealed, src.size, size, gw.inline_max).await?.0
            }
        }
    };
    let o = Object {
        key: i.key.clone(),
        size: src.size,
        etag: src.etag.clone(),
        modified_ms: now_ms(),
        info,
        layout,
        version: None,
    };
    let version = gw.catalog.put_object_in(&b, &o, &WriteCondition::default()).await?;
    let mut out = CopyObjectOutput {
        version_id: version,
        copy_source_version_id: src_version,
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&o.etag)),
            last_modified: Some(ts(o.modified_ms)),
            ..Default::default()
        }),
        ..Default::default()
    };
    super::sse::sse_headers!(out, &o.info.sse);
    Ok(S3Response::new(out))
}

view! {
    /// The source a CopyObject or UploadPartCopy names, and its conditions.
    pub(super) struct CopySourceOf {
        copy_source: CopySource,
        copy_source_if_match: Option<CopySourceIfMatch>,
        copy_source_if_none_match: Option<CopySourceIfNoneMatch>,
        copy_source_if_modified_since: Option<CopySourceIfModifiedSince>,
        copy_source_if_unmodified_since: Option<CopySourceIfUnmodifiedSince>,
    } for CopyObjectInput, UploadPartCopyInput
}

/// The source object of a CopyObject or UploadPartCopy (the current one, or the
/// version named), as (bucket, key, object, its version id as the answer names it):
/// readable by the caller's tenant, meeting the `x-amz-copy-source-if-*` conditions (a
/// failed one is 412, never 304).
pub(super) async fn copy_source(
    gw: &Gateway,
    tenant: &str,
    s: CopySourceOf<'_>,
) -> S3Result<(String, String, Object, Option<String>)> {
    let CopySource::Bucket { bucket, key, version_id } = s.copy_source else {
        return Err(s3_error!(NotImplemented, "copy from access points is not supported"));
    };
    let version = super::versioning::version_arg(version_id.as_deref())?;
    let (b, src) = gw.readable_source(tenant, bucket, key, version).await?;
    let src_version = super::versioning::version_header(&b, &src.version);
    let conditions = ReadConditions {
        if_match: s.copy_source_if_match,
        if_none_match: s.copy_source_if_none_match,
        if_modified_since: s.copy_source_if_modified_since,
        if_unmodified_since: s.copy_source_if_unmodified_since,
    };
    conditions.check_source(&src)?;
    Ok((bucket.to_string(), key.to_string(), src, src_version))
}

view! {
    /// The `x-amz-grant-*` headers of a request that makes an object.
    pub(super) struct Grants {
        grant_full_control: Option<GrantFullControl>,
        grant_read: Option<GrantRead>,
        grant_read_acp: Option<GrantReadACP>,
        grant_write_acp: Option<GrantWriteACP>,
    } for PutObjectInput, CopyObjectInput, CreateMultipartUploadInput
}

/// The ACL a new object is given by its request's `x-amz-acl` or grant headers (none:
/// private).
pub(super) async fn object_acl(gw: &Gateway, canned: Option<&ObjectCannedACL>, g: Grants<'_>) -> S3Result<Option<Acl>> {
    let none = None;
    let r = AclRequest {
        canned: canned.map(|a| a.as_str()),
        full_control: g.grant_full_control,
        read: g.grant_read,
        read_acp: g.grant_read_acp,
        write: &none,
        write_acp: g.grant_write_acp,
        policy: None,
    };
    Ok(r.acl(gw).await?.filter(|a| !a.grants.is_empty()))
}

pub(super) fn validate_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(s3_error!(KeyTooLongError, "keys are 1 to {KEY_BYTES_MAX} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ObjectInfo;
    use crate::checksum::{Algo, Checksum};

    /// GET carries every header `head_output` sets (s3s's Debug names the fields set).
    #[test]
    fn get_answers_with_every_header_of_head() {
        let info = ObjectInfo {
            content_type: Some("text/plain".into()),
            content_encoding: Some("gzip".into()),
            content_disposition: Some("inline".into()),
            content_language: Some("en".into()),
            cache_control: Some("no-cache".into()),
            expires: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            user: [("k".to_string(), "v".to_string())].into(),
            checksum: Some(Checksum { algo: Algo::Crc32, value: "AAAAAA==".into() }),
            checksum_type: Some(Kind::FullObject),
            parts: vec![5, 5],
            storage_class: Some(Class::StandardIa),
            policy: None,
            tags: vec![("t".into(), "1".into())],
            part_sums: vec![],
            upload: None,
            acl: None,
            retention: Some(crate::lock::Retention { mode: crate::lock::Mode::Governance, until_ms: 5 }),
            legal_hold: true,
            sse: None,
        };
        let o = Object {
            key: "k".into(),
            size: 10,
            etag: "e".into(),
            modified_ms: 1,
            info,
            layout: Layout::default(),
            version: Some("v".into()),
        };
        let enabled = Some(ChecksumMode::from_static(ChecksumMode::ENABLED));
        for (s, part) in [
            (Served { start: 0, end: 10, partial: false, version: None, key: None }, None),
            (Served { start: 5, end: 10, partial: true, version: None, key: None }, Some(2)),
        ] {
            let head = format!("{:?}", head_output(&o, &s, part, &enabled));
            let mut get = get_output(head_output(&o, &s, part, &enabled), StreamingBlob::from(s3s::Body::empty()));
            get.body = None;
            assert_eq!(format!("{get:?}").replace("GetObjectOutput", "HeadObjectOutput"), head);
            assert!(head.contains(if s.partial { "content_range" } else { "checksum_crc32" }), "{head}");
        }
    }
}
