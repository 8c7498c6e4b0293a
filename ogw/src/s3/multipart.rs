//! Multipart uploads: create, upload part, upload part copy (sharing the source's whole
//! slices), complete (the parts' order, ETags, sizes and checksums checked, their
//! checksums combined), abort, list parts, list uploads.

use std::collections::HashMap;

use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::conditions::write_condition;
use super::dto::{checksum_algorithm, class_name, etag, initiator, owner, ts, Checksums, ContentHeaders, Given};
use super::errors::{bad_digest, internal};
use super::ingest::Hashing;
use super::objects::{copy_source, validate_key};
use super::Gateway;
use crate::acl::Perm;
use crate::catalog::{Layout, Object, ObjectInfo, Part as PartRec};
use crate::checksum::{self, Checksum, Kind};
use crate::data::PutError;
use crate::db::now_ms;
use crate::limits::{LIST_ENTRIES_MAX, PARTS_MAX, PART_BYTES_MIN, PUT_BYTES_MAX};

pub(super) async fn create_multipart_upload(
    gw: &Gateway,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let b = gw.bucket_for(&req, &req.input.bucket, Perm::Write).await?;
    let i = &req.input;
    validate_key(&i.key)?;
    let mut info = ContentHeaders::from(i).info()?;
    // Every part is encrypted with the upload's data key (sealed in its record), each
    // with its own IV.
    info.sse = gw.encryption_of(&b, i.into()).await?.map(|(s, _)| s);
    info.tags = super::tagging::from_header(i.tagging.as_deref())?;
    info.acl = super::objects::object_acl(gw, i.acl.as_ref(), super::objects::Grants::from(i)).await?;
    // (The bucket's default retention is applied when the object is made, on completion.)
    gw.lock_new(&b, &mut info, i.into(), false).await?;
    gw.classify(&mut info, i.storage_class.as_ref(), &b)?;
    // The upload records the algorithm (its value empty) and kind every part is checked with.
    if let Some(algo) = checksum::named(i.checksum_algorithm.as_ref().map(|a| a.as_str()))? {
        info.checksum = Some(Checksum { algo, value: String::new() });
        info.checksum_type = Some(Kind::of_upload(algo, i.checksum_type.as_ref().map(|t| t.as_str()))?);
    }
    let id = gw.catalog.create_upload_in(&b, &i.key, &info).await?;
    let mut out = CreateMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        upload_id: Some(id),
        checksum_algorithm: i.checksum_algorithm.clone(),
        checksum_type: info.checksum_type.map(|k| ChecksumType::from_static(k.name())),
        ..Default::default()
    };
    super::sse::sse_headers!(out, &info.sse);
    Ok(S3Response::new(out))
}

pub(super) async fn upload_part(
    gw: &Gateway,
    mut req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    // Held until the row is committed: GC leaves what this write names alone.
    let _pinned = gw.data.pin();
    let blob = req.input.body.take();
    gw.bucket_for(&req, &req.input.bucket, Perm::Write).await?;
    let i = &req.input;
    check_part_number(i.part_number)?;
    let up = gw.catalog.upload(&i.bucket, &i.key, &i.upload_id).await?;
    let key = gw.data_key(&up.info, super::sse::KeyGiven::from(i).key()?.as_ref())?;
    let iv = crate::sse::new_iv();
    // The upload's algorithm, if it named one, is computed for every part.
    let algo = up.info.checksum.as_ref().map(|c| c.algo);
    // Parts are never kept inline: an object is completed from their slices.
    let st = gw.store_body(&req, gw.policy_of(&up.info), 0, blob, algo, key.map(|k| (k, iv.as_str()))).await?;
    let Layout::Slices(slices) = st.layout else { return Err(internal("a part's bytes were kept inline")) };
    let mut p = part(i.part_number, st.size, st.md5, st.checksum, slices);
    p.info.sse = up.info.sse.clone().map(|s| crate::sse::Sse { ivs: vec![iv], ..s });
    gw.catalog.put_part(&i.upload_id, &p).await?;
    let mut out = UploadPartOutput { e_tag: Some(etag(&p.etag)), ..Default::default() };
    if let Some(c) = &p.info.checksum {
        Checksums::from(&mut out).set(c);
    }
    super::sse::sse_headers!(out, &p.info.sse);
    Ok(S3Response::new(out))
}

pub(super) async fn upload_part_copy(
    gw: &Gateway,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    // Held until the row is committed: GC leaves what this write names alone.
    let _pinned = gw.data.pin();
    // The source is checked against the caller's own rights, never the destination's.
    let tenant = gw.tenant(&req).await?;
    gw.bucket_for(&req, &req.input.bucket, Perm::Write).await?;
    let i = &req.input;
    check_part_number(i.part_number)?;
    let up = gw.catalog.upload(&i.bucket, &i.key, &i.upload_id).await?;
    let (_, _, src, src_version) = copy_source(gw, &tenant, i.into()).await?;
    let src_key = gw.data_key(&src.info, super::sse::SourceKey::from(i).key()?.as_ref())?;
    let key = gw.data_key(&up.info, super::sse::KeyGiven::from(i).key()?.as_ref())?;
    let (start, end) = match &i.copy_source_range {
        None => (0, src.size),
        Some(r) => copy_range(r, src.size)?,
    };
    if end - start > PUT_BYTES_MAX {
        return Err(s3_error!(EntityTooLarge));
    }
    // The part's MD5 (its ETag) and checksum need its bytes: read them (cheap next to
    // writing them three times); the slices themselves are shared where whole.
    let plain = |body: crate::data::ByteStream| -> S3Result<super::objects::ByteStreamOf> {
        Ok(match src_key {
            Some(k) => Box::pin(super::sse::decrypting(body, super::sse::cipher(k, &src.info, src.size, start)?)),
            None => Box::pin(body),
        })
    };
    let mut h = Hashing::new(up.info.checksum.as_ref().map(|c| c.algo), Some(end - start));
    let mut body = h.hashed(plain(gw.data.get(&src.layout, start, end))?);
    while let Some(chunk) = body.next().await {
        chunk.map_err(internal)?;
    }
    drop(body);
    let policy = gw.policy_of(&up.info);
    let iv = crate::sse::new_iv();
    let slices = if gw.policy_of(&src.info) == policy && src_key.is_none() && key.is_none() {
        gw.data.share_range(policy, &src.layout, start, end).await.map_err(PutError::from)?
    } else {
        // Another policy or encryption: the bytes are written anew, the part's way.
        let body = plain(gw.data.get(&src.layout, start, end))?;
        match key {
            None => gw.data.put(policy, body, PUT_BYTES_MAX, Some(end - start)).await?.0,
            Some(k) => {
                let c = crate::sse::Cipher::new(k, std::slice::from_ref(&iv), &[u64::MAX], 0).map_err(internal)?;
                gw.data.put(policy, super::sse::decrypting(body, c), PUT_BYTES_MAX, Some(end - start)).await?.0
            }
        }
    };
    let (md5, checksum) = h.finish().await?;
    let mut p = part(i.part_number, end - start, md5, checksum, slices);
    p.info.sse = up.info.sse.clone().map(|s| crate::sse::Sse { ivs: vec![iv], ..s });
    gw.catalog.put_part(&i.upload_id, &p).await?;
    let mut r =
        CopyPartResult { e_tag: Some(etag(&p.etag)), last_modified: Some(ts(p.modified_ms)), ..Default::default() };
    if let Some(c) = &p.info.checksum {
        Checksums::from(&mut r).set(c);
    }
    let mut out =
        UploadPartCopyOutput { copy_part_result: Some(r), copy_source_version_id: src_version, ..Default::default() };
    super::sse::sse_headers!(out, &p.info.sse);
    Ok(S3Response::new(out))
}

fn check_part_number(n: i32) -> S3Result<()> {
    if !(1..=PARTS_MAX).contains(&n) {
        return Err(s3_error!(InvalidArgument, "part numbers are 1 to {PARTS_MAX}"));
    }
    Ok(())
}

/// A part's record; its ETag is the hex MD5 of its bytes.
fn part(num: i32, size: u64, md5: [u8; 16], checksum: Option<Checksum>, slices: Vec<client::Slice>) -> PartRec {
    let info = ObjectInfo { checksum, ..Default::default() };
    PartRec { num: num as u32, size, etag: hex::encode(md5), modified_ms: now_ms(), info, slices }
}

/// `bytes=FIRST-LAST` of `x-amz-copy-source-range`, inside an object of `size` bytes.
fn copy_range(r: &str, size: u64) -> S3Result<(u64, u64)> {
    let bad = || s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=FIRST-LAST within the source");
    let (a, b) = r.strip_prefix("bytes=").and_then(|x| x.split_once('-')).ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= size {
        return Err(s3_error!(InvalidRange, "x-amz-copy-source-range is outside the source object"));
    }
    Ok((a, b + 1))
}

pub(super) async fn complete_multipart_upload(
    gw: &Gateway,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let b = gw.bucket_for(&req, &req.input.bucket, Perm::Write).await?;
    let i = &req.input;
    let up = match gw.catalog.upload(&i.bucket, &i.key, &i.upload_id).await {
        Ok(up) => up,
        Err(crate::catalog::CatalogError::NoSuchUpload) => return completed_already(gw, i).await,
        Err(e) => return Err(e.into()),
    };
    let cond = write_condition(&i.if_match, &i.if_none_match)?;
    let wanted = i.multipart_upload.as_ref().and_then(|m| m.parts.clone()).unwrap_or_default();
    if wanted.is_empty() {
        return Err(s3_error!(MalformedXML, "the part list is empty"));
    }
    let stored: HashMap<u32, PartRec> =
        gw.catalog.parts(&i.upload_id, 0, PARTS_MAX as usize + 1).await?.into_iter().map(|p| (p.num, p)).collect();
    // An SSE-C upload is completed by whoever has its key (as AWS).
    gw.data_key(&up.info, super::sse::KeyGiven::from(i).key()?.as_ref())?;
    let a = assemble(&wanted, &stored)?;
    let size: u64 = a.sizes.iter().sum();
    if i.mpu_object_size.is_some_and(|s| s as u64 != size) {
        return Err(s3_error!(InvalidRequest, "x-amz-mp-object-size does not match the parts' total"));
    }
    let etag_ = format!("{}-{}", hex::encode(Md5::digest(&a.md5s)), wanted.len());
    let mut info = up.info.clone();
    info.parts = a.sizes;
    info.checksum = match (&up.info.checksum, a.part_sums.len() == wanted.len()) {
        (Some(c), true) => {
            let kind = info.checksum_type.unwrap_or(Kind::Composite);
            Some(Checksum { algo: c.algo, value: checksum::combine(c.algo, kind, &a.part_sums).map_err(internal)? })
        }
        _ => None,
    };
    if info.checksum.is_none() {
        info.checksum_type = None;
    } else {
        info.part_sums = a.part_sums.iter().map(|(v, _)| v.clone()).collect();
    }
    info.upload = Some(i.upload_id.clone());
    if let Some(s) = &mut info.sse {
        if a.ivs.len() != wanted.len() {
            return Err(internal("a part of an encrypted upload has no IV"));
        }
        s.ivs = a.ivs.clone();
    }
    if info.retention.is_none() {
        if let Some(c) = gw.lock_config(&b).await? {
            info.retention = c.default_retention(now_ms());
        }
    }
    // A whole-object checksum the client computed must match the one made of the parts.
    if let Some(c) = &info.checksum {
        if let Some(g) = Given::from(i).get(c.algo) {
            let base = |x: &str| x.split('-').next().unwrap_or_default().to_string();
            if base(g) != base(&c.value) {
                return Err(bad_digest(c.algo));
            }
        }
    }
    let layout = Layout::Slices(a.slices);
    let mut o = Object { key: i.key.clone(), size, etag: etag_, modified_ms: now_ms(), info, layout, version: None };
    o.version = gw.catalog.complete_upload(&i.bucket, &i.upload_id, &o, &cond).await?;
    Ok(complete_response(i, &o))
}

/// A CompleteMultipartUpload of an upload that is gone: if it made the object now at
/// its key (the client retries after losing the first answer), the first answer again
/// (as AWS does); else `NoSuchUpload`.
async fn completed_already(
    gw: &Gateway,
    i: &CompleteMultipartUploadInput,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let o = match gw.catalog.object(&i.bucket, &i.key).await? {
        Some(o) if o.info.upload.as_deref() == Some(i.upload_id.as_str()) => o,
        _ => return Err(s3_error!(NoSuchUpload)),
    };
    Ok(complete_response(i, &o))
}

/// The answer of a CompleteMultipartUpload that made `o`; s3s's output has no fields
/// for the SSE-C headers, set here.
fn complete_response(i: &CompleteMultipartUploadInput, o: &Object) -> S3Response<CompleteMultipartUploadOutput> {
    let mut resp = S3Response::new(complete_output(i, o));
    if let Some(s) = o.info.sse.as_ref().filter(|s| s.mode == crate::sse::Mode::Customer) {
        resp.headers
            .insert("x-amz-server-side-encryption-customer-algorithm", http::HeaderValue::from_static("AES256"));
        if let Some(v) = s.key_md5.as_deref().and_then(|m| http::HeaderValue::from_str(m).ok()) {
            resp.headers.insert("x-amz-server-side-encryption-customer-key-md5", v);
        }
    }
    resp
}

fn complete_output(i: &CompleteMultipartUploadInput, o: &Object) -> CompleteMultipartUploadOutput {
    let mut out = CompleteMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        e_tag: Some(etag(&o.etag)),
        location: Some(format!("/{}/{}", i.bucket, i.key)),
        version_id: o.version.clone(),
        ..Default::default()
    };
    if let Some(c) = &o.info.checksum {
        Checksums::from(&mut out).set(c);
        out.checksum_type = o.info.checksum_type.map(|k| ChecksumType::from_static(k.name()));
    }
    super::sse::sse_headers!(@server out, &o.info.sse);
    out
}

/// What the parts named by a CompleteMultipartUpload make.
#[derive(Default)]
struct Assembled {
    slices: Vec<client::Slice>,
    /// The parts' MD5s, concatenated (the object's ETag is their MD5).
    md5s: Vec<u8>,
    sizes: Vec<u64>,
    /// Each part's checksum and size, when every part has one.
    part_sums: Vec<(String, u64)>,
    /// Each encrypted part's IV.
    ivs: Vec<String>,
}

/// The parts `wanted`, checked against those `stored`: in increasing order, uploaded,
/// with the ETag and checksum given, all but the last at least `PART_BYTES_MIN`.
fn assemble(wanted: &[CompletedPart], stored: &HashMap<u32, PartRec>) -> S3Result<Assembled> {
    let mut a = Assembled::default();
    let mut prev = 0i32;
    for (idx, w) in wanted.iter().enumerate() {
        let n = w.part_number.ok_or_else(|| s3_error!(InvalidPart, "a part has no number"))?;
        if n <= prev {
            return Err(s3_error!(InvalidPartOrder));
        }
        prev = n;
        let p = stored.get(&(n as u32)).ok_or_else(|| s3_error!(InvalidPart, "part {n} was not uploaded"))?;
        let want_etag = w.e_tag.as_ref().map(|e| e.value().to_string()).unwrap_or_default();
        if want_etag != p.etag {
            return Err(s3_error!(InvalidPart, "part {n}'s ETag does not match"));
        }
        if idx + 1 < wanted.len() && p.size < PART_BYTES_MIN {
            return Err(s3_error!(EntityTooSmall, "part {n} is smaller than 5 MiB and not the last"));
        }
        if let Some(c) = &p.info.checksum {
            if Given::from(w).get(c.algo).is_some_and(|g| g != c.value) {
                return Err(s3_error!(InvalidPart, "part {n}'s checksum does not match"));
            }
            a.part_sums.push((c.value.clone(), p.size));
        }
        if let Some(iv) = p.info.sse.as_ref().and_then(|s| s.ivs.first()) {
            a.ivs.push(iv.clone());
        }
        a.md5s.extend(hex::decode(&p.etag).map_err(internal)?);
        a.slices.extend(p.slices.iter().copied());
        a.sizes.push(p.size);
    }
    Ok(a)
}

pub(super) async fn abort_multipart_upload(
    gw: &Gateway,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    gw.bucket_for(&req, &req.input.bucket, Perm::Write).await?;
    let i = &req.input;
    gw.catalog.upload(&i.bucket, &i.key, &i.upload_id).await?;
    gw.catalog.abort_upload(&i.upload_id).await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(gw: &Gateway, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
    let tenant = gw.bucket_for(&req, &req.input.bucket, Perm::Write).await?.tenant;
    let i = &req.input;
    let up = gw.catalog.upload(&i.bucket, &i.key, &i.upload_id).await?;
    let max = i.max_parts.unwrap_or(LIST_ENTRIES_MAX).clamp(0, LIST_ENTRIES_MAX) as usize;
    let after = i.part_number_marker.unwrap_or(0).max(0) as u32;
    let mut parts = gw.catalog.parts(&i.upload_id, after, max + 1).await?;
    let truncated = parts.len() > max;
    parts.truncate(max);
    let next = parts.last().map(|p| p.num as i32);
    let entry = |p: &PartRec| {
        let mut x = Part {
            e_tag: Some(etag(&p.etag)),
            last_modified: Some(ts(p.modified_ms)),
            part_number: Some(p.num as i32),
            size: Some(p.size as i64),
            ..Default::default()
        };
        if let Some(c) = &p.info.checksum {
            Checksums::from(&mut x).set(c);
        }
        x
    };
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        upload_id: Some(i.upload_id.clone()),
        max_parts: Some(max as i32),
        part_number_marker: i.part_number_marker,
        next_part_number_marker: next,
        is_truncated: Some(truncated),
        owner: Some(owner(&tenant)),
        initiator: Some(initiator(&tenant)),
        storage_class: Some(StorageClass::from_static(class_name(up.info.storage_class))),
        checksum_algorithm: up.info.checksum.as_ref().map(|c| checksum_algorithm(c.algo)),
        checksum_type: up.info.checksum_type.map(|k| ChecksumType::from_static(k.name())),
        parts: Some(parts.iter().map(entry).collect()),
        ..Default::default()
    }))
}

pub(super) async fn list_multipart_uploads(
    gw: &Gateway,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let tenant = gw.bucket_for(&req, &req.input.bucket, Perm::Read).await?.tenant;
    let i = &req.input;
    let max = i.max_uploads.unwrap_or(LIST_ENTRIES_MAX).clamp(0, LIST_ENTRIES_MAX) as usize;
    let prefix = i.prefix.clone().unwrap_or_default();
    let km = i.key_marker.clone().unwrap_or_default();
    let um = i.upload_id_marker.clone().unwrap_or_default();
    // Without an upload-id marker, the key marker excludes every upload of that key.
    let after_id = if i.upload_id_marker.is_some() { um.as_str() } else { "\u{10ffff}" };
    let after = if km.is_empty() { ("", "") } else { (km.as_str(), after_id) };
    let mut ups = gw.catalog.uploads(&i.bucket, &prefix, after, max + 1).await?;
    let truncated = ups.len() > max;
    ups.truncate(max);
    let last = ups.last().map(|u| (u.key.clone(), u.id.clone()));
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(i.bucket.clone()),
        prefix: Some(prefix),
        key_marker: i.key_marker.clone(),
        upload_id_marker: i.upload_id_marker.clone(),
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: truncated.then(|| last.clone().map(|l| l.0)).flatten(),
        next_upload_id_marker: truncated.then(|| last.map(|l| l.1)).flatten(),
        uploads: Some(
            ups.into_iter()
                .map(|u| MultipartUpload {
                    key: Some(u.key),
                    upload_id: Some(u.id),
                    initiated: Some(ts(u.created_ms)),
                    owner: Some(owner(&tenant)),
                    initiator: Some(initiator(&tenant)),
                    storage_class: Some(StorageClass::from_static(class_name(u.info.storage_class))),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}
