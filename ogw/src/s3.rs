//! The S3 operations, on `s3s` (which parses requests, verifies SigV4 in headers,
//! presigned URLs and aws-chunked bodies, and writes the S3 XML and errors).
//! Every operation first resolves the caller's tenant; a bucket of another tenant
//! answers `AccessDenied`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use md5::{Digest, Md5};
use parking_lot::Mutex;
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use crate::checksum::{self, Algo};
use crate::class::Classes;
/// A redundancy policy (`s3s::dto` has a `Policy` of its own: bucket policy JSON).
type Redundancy = proto::meta::Policy;
use crate::data::{Data, PutError};
use crate::db::now_ms;
use crate::meta::{Meta, MetaError, Object, ObjectInfo, Part as PartRec, WriteCondition};

/// Largest object a single PUT takes, and largest part.
pub const PUT_BYTES_MAX: u64 = 5 << 30;
/// Smallest part but the last.
pub const PART_BYTES_MIN: u64 = 5 << 20;
pub const PARTS_MAX: i32 = 10_000;
/// How long a looked-up access key is trusted before it is looked up again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

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
            $i.storage_class.clone(),
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
        $gw.meta.owned_bucket(&$tenant, bucket).await.map_err(meta_err)?;
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
            storage_class: o.info.storage_class.clone().filter(|c| c != "STANDARD").map(StorageClass::from),
            parts_count: $part_number.map(|_| o.info.parts.len().max(1) as i32),
            ..Default::default()
        };
        if r.partial {
            out.content_range = Some(format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), o.size));
        }
        let want = $checksum_mode.as_ref().is_some_and(|m: &ChecksumMode| m.as_str() == ChecksumMode::ENABLED);
        if let (true, false, Some((a, v))) = (want, r.partial, &o.info.checksum) {
            set_checksum!(out, a, v.clone());
            out.checksum_type = o.info.checksum_type.clone().map(ChecksumType::from);
        }
        let mut resp = S3Response::new(out);
        if r.partial {
            resp.status = Some(http::StatusCode::PARTIAL_CONTENT);
        }
        resp
    }};
}

/// The bytes `[start, end)` of an object a GET or HEAD serves.
struct Served {
    start: u64,
    end: u64,
    partial: bool,
}

pub struct Gateway {
    pub meta: Meta,
    pub data: Arc<Data>,
    /// Default policy of new buckets (e.g. `replica:3`).
    pub policy: String,
    /// Storage classes and their policies.
    pub classes: Classes,
    keys: KeyCache,
}

/// Access key -> (tenant, when it was looked up).
type KeyCache = Arc<Mutex<HashMap<String, (String, Instant)>>>;

/// Looks up secrets for s3s's signature checks; remembers each key's tenant for the
/// operation that follows.
pub struct Auth {
    meta: Meta,
    keys: KeyCache,
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.meta.key(access_key).await {
            Ok(Some((tenant, secret))) => {
                self.keys.lock().insert(access_key.to_string(), (tenant, Instant::now()));
                Ok(SecretKey::from(secret))
            }
            Ok(None) => Err(s3_error!(InvalidAccessKeyId)),
            Err(e) => Err(internal(e)),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!("internal error: {e}");
    S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
}

fn meta_err(e: MetaError) -> S3Error {
    match e {
        MetaError::NoSuchBucket => s3_error!(NoSuchBucket),
        MetaError::NotOwner => s3_error!(AccessDenied, "the bucket belongs to another account"),
        MetaError::BucketExists { owned_by_you: true } => s3_error!(BucketAlreadyOwnedByYou),
        MetaError::BucketExists { owned_by_you: false } => s3_error!(BucketAlreadyExists),
        MetaError::BucketNotEmpty => s3_error!(BucketNotEmpty),
        MetaError::NoSuchUpload => s3_error!(NoSuchUpload),
        MetaError::PreconditionFailed => s3_error!(PreconditionFailed),
        MetaError::Invalid(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
        e => internal(e),
    }
}

fn put_err(e: PutError) -> S3Error {
    match e {
        PutError::TooLarge => s3_error!(EntityTooLarge),
        // s3s's body errors are private types; their messages name the cause.
        PutError::Body(m) if m.contains("Sha256Mismatch") => {
            let mut e = S3Error::with_message(
                S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                "the body does not match the x-amz-content-sha256 it was signed with",
            );
            e.set_status_code(http::StatusCode::BAD_REQUEST);
            e
        }
        PutError::Body(m) if m.contains("SignatureMismatch") => {
            S3Error::with_message(S3ErrorCode::SignatureDoesNotMatch, "a chunk signature does not match")
        }
        PutError::Body(m) if m.contains("FormatError") || m.contains("TooLarge") || m.contains("TooMany") => {
            S3Error::with_message(S3ErrorCode::InvalidRequest, format!("malformed aws-chunked body: {m}"))
        }
        PutError::Body(m) => S3Error::with_message(S3ErrorCode::IncompleteBody, m),
        // The cluster has fewer datanodes than the class's policy is wide.
        PutError::Stream(client::StreamError::Meta(e @ proto::meta::MetaError::NotEnoughNodes { .. })) => {
            S3Error::with_message(S3ErrorCode::InvalidStorageClass, format!("this cluster cannot store the class: {e}"))
        }
        PutError::Stream(e) => {
            tracing::error!("writing object data: {e}");
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, format!("cannot store the data now: {e}"))
        }
    }
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

fn ms_of(t: &Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Content headers and user metadata of a PUT, Copy (REPLACE) or CreateMultipartUpload.
#[allow(clippy::too_many_arguments)]
fn info_from(
    content_type: Option<ContentType>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
    storage_class: Option<StorageClass>,
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
    let meta_bytes: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if meta_bytes > 2048 {
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
        storage_class: storage_class.map(|s| s.as_str().to_string()),
        ..Default::default()
    })
}

fn parse_expires(s: &Option<String>) -> Option<Timestamp> {
    s.as_ref().and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok())
}

/// Whether a read of an object with `etag` modified at `modified_ms` goes on, per the
/// request's conditions (RFC 7232 order, as S3 applies it).
fn read_conditions(
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

fn not_modified() -> S3Error {
    let mut e = s3_error!(NotModified);
    e.set_status_code(http::StatusCode::NOT_MODIFIED);
    e
}

fn write_condition(if_match: Option<IfMatch>, if_none_match: Option<IfNoneMatch>) -> S3Result<WriteCondition> {
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

/// A body's checksums, the requested flexible one and Content-MD5 checked once it
/// has all passed through.
struct Hashing {
    md5: Md5,
    algo: Option<(Algo, checksum::Hasher)>,
}

impl Hashing {
    fn new(algo: Option<Algo>) -> Hashing {
        Hashing { md5: Md5::new(), algo: algo.map(|a| (a, a.hasher())) }
    }
    fn update(&mut self, b: &[u8]) {
        self.md5.update(b);
        if let Some((_, h)) = &mut self.algo {
            h.update(b);
        }
    }
}

/// What a PUT or UploadPart stored: size, slices, MD5 (hex), and the flexible checksum.
struct Stored {
    size: u64,
    slices: Vec<client::Slice>,
    md5: [u8; 16],
    checksum: Option<(String, String)>,
}

impl Gateway {
    /// The gateway and the authenticator that shares its key cache.
    pub fn new(meta: Meta, data: Arc<Data>, classes: Classes) -> (Gateway, Auth) {
        let keys = KeyCache::default();
        let policy = classes.standard.to_string();
        (Gateway { meta: meta.clone(), data, policy, classes, keys: keys.clone() }, Auth { meta, keys })
    }

    /// The caller's tenant (the key was looked up by the signature check just before).
    async fn tenant<T>(&self, req: &S3Request<T>) -> S3Result<String> {
        let Some(c) = &req.credentials else { return Err(s3_error!(AccessDenied, "anonymous access is not allowed")) };
        if let Some((t, at)) = self.keys.lock().get(&c.access_key) {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(t.clone());
            }
        }
        match self.meta.key(&c.access_key).await.map_err(internal)? {
            Some((t, _)) => {
                self.keys.lock().insert(c.access_key.clone(), (t.clone(), Instant::now()));
                Ok(t)
            }
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }

    async fn bucket_of<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<String> {
        Ok(self.owned(req, bucket).await?.tenant)
    }

    /// The bucket, if the caller's tenant owns it.
    async fn owned<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<crate::meta::Bucket> {
        let tenant = self.tenant(req).await?;
        self.meta.owned_bucket(&tenant, bucket).await.map_err(meta_err)
    }

    /// The policy an object's bytes were written with.
    fn policy_of(&self, info: &ObjectInfo) -> Redundancy {
        info.policy.as_deref().and_then(|p| p.parse().ok()).unwrap_or(self.classes.standard)
    }

    /// Sets a new object's storage class and policy: the class asked for, else the
    /// bucket's default.
    fn classify(&self, info: &mut ObjectInfo, bucket: &crate::meta::Bucket) -> S3Result<Redundancy> {
        let (class, policy) = self.classes.resolve(info.storage_class.as_deref(), &bucket.policy)?;
        info.storage_class = Some(class);
        info.policy = Some(policy.to_string());
        Ok(policy)
    }

    async fn object(&self, bucket: &str, key: &str) -> S3Result<Object> {
        self.meta.object(bucket, key).await.map_err(meta_err)?.ok_or_else(|| s3_error!(NoSuchKey))
    }

    /// Streams a body into the LogStreams, checking Content-MD5 and the flexible
    /// checksum (from a header or the aws-chunked trailer).
    #[allow(clippy::too_many_arguments)]
    async fn store_body<T>(
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
        let algo = checksum::requested(algorithm.as_ref().map(|a| a.as_str()), given, trailer.as_deref())?;
        let mut h = Hashing::new(algo);
        let (slices, size) = match body {
            Some(b) => self.data.put(policy, b, limit, |x| h.update(x)).await.map_err(put_err)?,
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
                let got = hasher.finish_base64();
                let expected = given.get(a).or_else(|| {
                    req.trailing_headers.as_ref().and_then(|t| {
                        t.read(|hs| hs.get(a.header()).and_then(|v| v.to_str().ok()).map(str::to_string)).flatten()
                    })
                });
                if let Some(e) = expected {
                    if e != got {
                        return Err(S3Error::with_message(
                            S3ErrorCode::BadDigest,
                            format!("the {} you specified did not match the calculated checksum", a.name()),
                        ));
                    }
                }
                Some((a.name().to_string(), got))
            }
        };
        Ok(Stored { size, slices, md5, checksum })
    }

    /// The keys and common prefixes of one page of a listing, seeking past each common
    /// prefix instead of reading the keys under it. Returns the entries and, when
    /// there are more, the cursor to continue from (exclusive).
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: &[u8],
        max: usize,
    ) -> S3Result<(Vec<Object>, Vec<String>, Option<Vec<u8>>)> {
        let upper = successor(prefix.as_bytes());
        let mut objects = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut from: Vec<u8> = if after < prefix.as_bytes() { prefix.as_bytes().to_vec() } else { after.to_vec() };
        let mut inclusive = after < prefix.as_bytes();
        let mut last: Vec<u8> = Vec::new();
        let delim = delimiter.filter(|d| !d.is_empty());
        // The common prefix `key` falls under, if any.
        let common = |key: &[u8]| -> Option<Vec<u8>> {
            let d = delim?.as_bytes();
            let rest = key.get(prefix.len()..)?;
            rest.windows(d.len()).position(|w| w == d).map(|i| key[..prefix.len() + i + d.len()].to_vec())
        };
        // A cursor that is itself a common prefix (the last entry of the previous page,
        // as NextMarker or in a continuation token) continues after all of its keys.
        if after.starts_with(prefix.as_bytes()) && common(after).is_some_and(|cp| cp == after) {
            match successor(after) {
                Some(n) => {
                    from = n;
                    inclusive = true;
                }
                None => return Ok((objects, prefixes, None)),
            }
        }
        let mut l = self.meta.lister().await.map_err(meta_err)?;
        // Rows per query of whole objects: with a delimiter, batches start small (a batch
        // that runs into a common prefix is cut there) and grow while they yield keys.
        let mut batch = if delim.is_some() { 8 } else { 1000 };
        loop {
            if objects.len() + prefixes.len() >= max {
                // One more entry exists? Then the listing is truncated at `last`.
                let more = l.next_key(bucket, &from, inclusive, upper.as_deref()).await.map_err(meta_err)?;
                return Ok((objects, prefixes, more.map(|_| last)));
            }
            if delim.is_some() {
                // Seek: read the next key alone; a key under a common prefix stands for the
                // whole prefix, and the listing continues after all of its keys.
                let Some(k) = l.next_key(bucket, &from, inclusive, upper.as_deref()).await.map_err(meta_err)? else {
                    return Ok((objects, prefixes, None));
                };
                if let Some(cp) = common(&k) {
                    let next = successor(&cp);
                    last = cp.clone();
                    prefixes.push(String::from_utf8(cp).map_err(internal)?);
                    match next {
                        Some(n) => {
                            from = n;
                            inclusive = true;
                            batch = 8;
                            continue;
                        }
                        None => return Ok((objects, prefixes, None)),
                    }
                }
            }
            let want = (max - objects.len() - prefixes.len()).min(batch);
            let rows = l.range(bucket, &from, inclusive, upper.as_deref(), want).await.map_err(meta_err)?;
            let full = rows.len() == want;
            if rows.is_empty() {
                return Ok((objects, prefixes, None));
            }
            let mut cut = false;
            for o in rows {
                if common(o.key.as_bytes()).is_some() {
                    // Left for the seek above to handle.
                    cut = true;
                    break;
                }
                last = o.key.as_bytes().to_vec();
                from = last.clone();
                inclusive = false;
                objects.push(o);
                if objects.len() + prefixes.len() >= max {
                    break;
                }
            }
            if !cut && !full && objects.len() + prefixes.len() < max {
                return Ok((objects, prefixes, None));
            }
            if !cut {
                batch = (batch * 4).min(1000);
            }
        }
    }

    fn owner(tenant: &str) -> Owner {
        Owner { display_name: Some(tenant.to_string()), id: Some(tenant.to_string()) }
    }
}

/// The smallest byte string greater than every string starting with `p` (None: no
/// upper bound).
fn successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// Percent-encodes a key for `encoding-type=url` (everything but unreserved and `/`).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn list_object(o: &Object, owner: Option<Owner>) -> s3s::dto::Object {
    s3s::dto::Object {
        key: Some(o.key.clone()),
        e_tag: Some(etag(&o.etag)),
        last_modified: Some(ts(o.modified_ms)),
        size: Some(o.size as i64),
        storage_class: Some(ObjectStorageClass::from(
            o.info.storage_class.clone().unwrap_or_else(|| "STANDARD".into()),
        )),
        owner,
        checksum_algorithm: o.info.checksum.as_ref().map(|(a, _)| vec![ChecksumAlgorithm::from(a.clone())]),
        checksum_type: o.info.checksum_type.clone().map(ChecksumType::from),
        ..Default::default()
    }
}

fn validate_bucket_name(name: &str) -> S3Result<()> {
    let ok = (3..=63).contains(&name.len())
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

fn validate_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > 1024 {
        return Err(s3_error!(KeyTooLongError, "keys are 1 to 1024 bytes"));
    }
    Ok(())
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let tenant = self.tenant(&req).await?;
        let buckets = self.meta.buckets(&tenant).await.map_err(meta_err)?;
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let list = buckets
            .into_iter()
            .filter(|b| b.name.starts_with(&prefix))
            .map(|b| Bucket { name: Some(b.name), creation_date: Some(ts(b.created_ms)), bucket_region: None })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(list),
            owner: Some(Gateway::owner(&tenant)),
            ..Default::default()
        }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let tenant = self.tenant(&req).await?;
        validate_bucket_name(&req.input.bucket)?;
        self.meta.create_bucket(&tenant, &req.input.bucket, &self.policy).await.map_err(meta_err)?;
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{}", req.input.bucket)) }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket_of(&req, &req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket_of(&req, &req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let tenant = self.tenant(&req).await?;
        self.meta.delete_bucket(&tenant, &req.input.bucket).await.map_err(meta_err)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let b = self.owned(&req, &req.input.bucket).await?;
        validate_key(&req.input.key)?;
        let i = &req.input;
        let cond = write_condition(i.if_match.clone(), i.if_none_match.clone())?;
        let mut info = info_of!(i)?;
        let policy = self.classify(&mut info, &b)?;
        let given = given!(i);
        let (algorithm, md5h, len) = (i.checksum_algorithm.clone(), i.content_md5.clone(), i.content_length);
        let (bucket, key) = (i.bucket.clone(), i.key.clone());
        let mut req = req;
        let body = req.input.body.take();
        let st = self.store_body(&req, policy, body, PUT_BYTES_MAX, &md5h, &algorithm, &given, len).await?;
        info.checksum = st.checksum.clone();
        if info.checksum.is_some() {
            info.checksum_type = Some("FULL_OBJECT".into());
        }
        let o =
            Object { key, size: st.size, etag: hex::encode(st.md5), modified_ms: now_ms(), info, slices: st.slices };
        self.meta.put_object(&bucket, &o, &cond).await.map_err(meta_err)?;
        let mut out = PutObjectOutput { e_tag: Some(etag(&o.etag)), ..Default::default() };
        if let Some((a, v)) = &o.info.checksum {
            set_checksum!(out, a, v.clone());
            out.checksum_type = Some(ChecksumType::from_static(ChecksumType::FULL_OBJECT));
        }
        Ok(S3Response::new(out))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        let o = self.object(&i.bucket, &i.key).await?;
        read_conditions(
            &o.etag,
            o.modified_ms,
            &i.if_match,
            &i.if_none_match,
            &i.if_modified_since,
            &i.if_unmodified_since,
        )?;
        let r = served(&o, &i.range, i.part_number)?;
        let body = self.data.get_started(&o.slices, r.start, r.end).await.map_err(|e| {
            tracing::error!("GET {}/{}: {e}", i.bucket, i.key);
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, format!("the object's data cannot be read now: {e}"))
        })?;
        let mut resp = object_output!(GetObjectOutput, o, r, i.part_number, i.checksum_mode);
        resp.output.body = Some(StreamingBlob::wrap(body));
        Ok(resp)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        let o = self.object(&i.bucket, &i.key).await?;
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

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        if let Some(c) = &i.if_match {
            let cur = self.meta.object(&i.bucket, &i.key).await.map_err(meta_err)?;
            let ok = match (c, &cur) {
                (_, None) => false,
                (ETagCondition::Any, Some(_)) => true,
                (ETagCondition::ETag(e), Some(o)) => e.value() == o.etag,
            };
            if !ok {
                return Err(s3_error!(PreconditionFailed));
            }
        }
        self.meta.delete_object(&i.bucket, &i.key).await.map_err(meta_err)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per request"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in &i.delete.objects {
            match self.meta.delete_object(&i.bucket, &o.key).await {
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

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let b = self.owned(&req, &req.input.bucket).await?;
        let tenant = b.tenant.clone();
        let i = &req.input;
        validate_key(&i.key)?;
        let (sb, sk, src) = copy_source!(self, tenant, i);
        let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if sb == i.bucket && sk == i.key && !replace && i.storage_class.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let mut info = if replace { info_of!(i)? } else { src.info.clone() };
        info.checksum = src.info.checksum.clone();
        info.checksum_type = src.info.checksum_type.clone();
        info.parts = src.info.parts.clone();
        // The copy's class is the one asked for, else the bucket's default (as S3 does).
        info.storage_class = i.storage_class.as_ref().map(|c| c.as_str().to_string());
        let policy = self.classify(&mut info, &b)?;
        let slices = if self.policy_of(&src.info) == policy {
            // The bytes are shared: the new object names the same slices.
            src.slices
        } else {
            // Another policy: the bytes are written anew, coded the copy's way.
            let body = self.data.get(&src.slices, 0, src.size);
            self.data.put(policy, body, src.size, |_| {}).await.map_err(put_err)?.0
        };
        let o =
            Object { key: i.key.clone(), size: src.size, etag: src.etag.clone(), modified_ms: now_ms(), info, slices };
        self.meta.put_object(&i.bucket, &o, &WriteCondition::default()).await.map_err(meta_err)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&o.etag)),
                last_modified: Some(ts(o.modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let tenant = self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        let max = i.max_keys.unwrap_or(1000);
        if max < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
        }
        let prefix = i.prefix.clone().unwrap_or_default();
        let after: Vec<u8> = match &i.continuation_token {
            Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .map_err(|_| s3_error!(InvalidArgument, "the continuation token is not valid"))?,
            None => i.start_after.clone().unwrap_or_default().into_bytes(),
        };
        let (objects, prefixes, next) =
            self.list_page(&i.bucket, &prefix, i.delimiter.as_deref(), &after, max.min(1000) as usize).await?;
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let owner = i.fetch_owner.unwrap_or(false).then(|| Gateway::owner(&tenant));
        let key_count = (objects.len() + prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket.clone()),
            prefix: Some(enc(prefix)),
            delimiter: i.delimiter.clone().map(enc),
            max_keys: Some(max),
            key_count: Some(key_count),
            continuation_token: i.continuation_token.clone(),
            start_after: i.start_after.clone().map(enc),
            is_truncated: Some(next.is_some()),
            next_continuation_token: next.map(|k| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k)),
            contents: Some(
                objects
                    .iter()
                    .map(|o| {
                        let mut x = list_object(o, owner.clone());
                        x.key = x.key.map(enc);
                        x
                    })
                    .collect(),
            ),
            common_prefixes: Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
            encoding_type: i.encoding_type.clone(),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let tenant = self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        let max = i.max_keys.unwrap_or(1000);
        if max < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
        }
        let prefix = i.prefix.clone().unwrap_or_default();
        let after = i.marker.clone().unwrap_or_default().into_bytes();
        let (objects, prefixes, next) =
            self.list_page(&i.bucket, &prefix, i.delimiter.as_deref(), &after, max.min(1000) as usize).await?;
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let owner = Some(Gateway::owner(&tenant));
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket.clone()),
            prefix: Some(enc(prefix)),
            delimiter: i.delimiter.clone().map(enc),
            marker: Some(enc(i.marker.clone().unwrap_or_default())),
            max_keys: Some(max),
            is_truncated: Some(next.is_some()),
            next_marker: next.map(|k| enc(String::from_utf8_lossy(&k).into_owned())),
            contents: Some(
                objects
                    .iter()
                    .map(|o| {
                        let mut x = list_object(o, owner.clone());
                        x.key = x.key.map(enc);
                        x
                    })
                    .collect(),
            ),
            common_prefixes: Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
            encoding_type: i.encoding_type.clone(),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let b = self.owned(&req, &req.input.bucket).await?;
        let i = &req.input;
        validate_key(&i.key)?;
        let mut info = info_of!(i)?;
        self.classify(&mut info, &b)?;
        if let Some(a) = &i.checksum_algorithm {
            let algo = checksum::requested(Some(a.as_str()), &checksum::Given::default(), None)?;
            info.checksum = algo.map(|a| (a.name().to_string(), String::new()));
            info.checksum_type =
                Some(i.checksum_type.as_ref().map(|t| t.as_str().to_string()).unwrap_or_else(|| match algo {
                    Some(Algo::Crc64Nvme) => "FULL_OBJECT".into(),
                    _ => "COMPOSITE".into(),
                }));
            if info.checksum_type.as_deref() == Some("FULL_OBJECT") && matches!(algo, Some(Algo::Sha1 | Algo::Sha256)) {
                return Err(s3_error!(InvalidRequest, "FULL_OBJECT checksums need a CRC algorithm"));
            }
        }
        let id = self.meta.create_upload(&i.bucket, &i.key, &info).await.map_err(meta_err)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            upload_id: Some(id),
            checksum_algorithm: i.checksum_algorithm.clone(),
            checksum_type: info.checksum_type.map(ChecksumType::from),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        if !(1..=PARTS_MAX).contains(&i.part_number) {
            return Err(s3_error!(InvalidArgument, "part numbers are 1 to 10000"));
        }
        let up = self.meta.upload(&i.bucket, &i.key, &i.upload_id).await.map_err(meta_err)?;
        let given = given!(i);
        // The upload's algorithm, if it named one, is computed for every part.
        let algorithm = i
            .checksum_algorithm
            .clone()
            .or_else(|| up.info.checksum.as_ref().map(|(a, _)| ChecksumAlgorithm::from(a.clone())));
        let (md5h, len, num, upload_id) = (i.content_md5.clone(), i.content_length, i.part_number, i.upload_id.clone());
        let mut req = req;
        let body = req.input.body.take();
        let policy = self.policy_of(&up.info);
        let st = self.store_body(&req, policy, body, PUT_BYTES_MAX, &md5h, &algorithm, &given, len).await?;
        let p = PartRec {
            num: num as u32,
            size: st.size,
            etag: hex::encode(st.md5),
            modified_ms: now_ms(),
            info: ObjectInfo { checksum: st.checksum.clone(), ..Default::default() },
            slices: st.slices,
        };
        self.meta.put_part(&upload_id, &p).await.map_err(meta_err)?;
        let mut out = UploadPartOutput { e_tag: Some(etag(&p.etag)), ..Default::default() };
        if let Some((a, v)) = &p.info.checksum {
            set_checksum!(out, a, v.clone());
        }
        Ok(S3Response::new(out))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let tenant = self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        if !(1..=PARTS_MAX).contains(&i.part_number) {
            return Err(s3_error!(InvalidArgument, "part numbers are 1 to 10000"));
        }
        let up = self.meta.upload(&i.bucket, &i.key, &i.upload_id).await.map_err(meta_err)?;
        let (_, _, src) = copy_source!(self, tenant, i);
        let (start, end) = match &i.copy_source_range {
            None => (0, src.size),
            Some(r) => copy_range(r, src.size)?,
        };
        if end - start > PUT_BYTES_MAX {
            return Err(s3_error!(EntityTooLarge));
        }
        // The part's MD5 (its ETag) and checksum need its bytes: read them (cheap next to
        // writing them three times); the slices themselves are shared where whole.
        let algo = up.info.checksum.as_ref().and_then(|(a, _)| Algo::from_name(a));
        let mut h = Hashing::new(algo);
        let mut body = self.data.get(&src.slices, start, end);
        while let Some(chunk) = futures::StreamExt::next(&mut body).await {
            h.update(&chunk.map_err(internal)?);
        }
        let policy = self.policy_of(&up.info);
        let slices = if self.policy_of(&src.info) == policy {
            self.data.share_range(policy, &src.slices, start, end).await.map_err(|e| put_err(PutError::Stream(e)))?
        } else {
            // Another policy: the bytes are written anew, coded the part's way.
            let body = self.data.get(&src.slices, start, end);
            self.data.put(policy, body, PUT_BYTES_MAX, |_| {}).await.map_err(put_err)?.0
        };
        let md5: [u8; 16] = h.md5.finalize().into();
        let p = PartRec {
            num: i.part_number as u32,
            size: end - start,
            etag: hex::encode(md5),
            modified_ms: now_ms(),
            info: ObjectInfo {
                checksum: h.algo.map(|(a, x)| (a.name().to_string(), x.finish_base64())),
                ..Default::default()
            },
            slices,
        };
        self.meta.put_part(&i.upload_id, &p).await.map_err(meta_err)?;
        let mut r =
            CopyPartResult { e_tag: Some(etag(&p.etag)), last_modified: Some(ts(p.modified_ms)), ..Default::default() };
        if let Some((a, v)) = &p.info.checksum {
            set_checksum!(r, a, v.clone());
        }
        Ok(S3Response::new(UploadPartCopyOutput { copy_part_result: Some(r), ..Default::default() }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        let up = self.meta.upload(&i.bucket, &i.key, &i.upload_id).await.map_err(meta_err)?;
        let cond = write_condition(i.if_match.clone(), i.if_none_match.clone())?;
        let wanted = i.multipart_upload.as_ref().and_then(|m| m.parts.clone()).unwrap_or_default();
        if wanted.is_empty() {
            return Err(s3_error!(MalformedXML, "the part list is empty"));
        }
        let stored: HashMap<u32, PartRec> =
            self.meta.parts(&i.upload_id, 0, 10_001).await.map_err(meta_err)?.into_iter().map(|p| (p.num, p)).collect();
        let mut prev = 0i32;
        let mut slices = Vec::new();
        let mut md5s = Vec::new();
        let mut sizes = Vec::new();
        let mut used = Vec::new();
        let mut part_sums = Vec::new();
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
            if let Some((a, v)) = &p.info.checksum {
                if let Some(given) = checksum::completed_part(w, a) {
                    if given != *v {
                        return Err(s3_error!(InvalidPart, "part {n}'s checksum does not match"));
                    }
                }
                part_sums.push((v.clone(), p.size));
            }
            md5s.extend(hex::decode(&p.etag).map_err(internal)?);
            slices.extend(p.slices.iter().copied());
            sizes.push(p.size);
            used.push(n as u32);
        }
        let size: u64 = sizes.iter().sum();
        if i.mpu_object_size.is_some_and(|s| s as u64 != size) {
            return Err(s3_error!(InvalidRequest, "x-amz-mp-object-size does not match the parts' total"));
        }
        let etag_ = format!("{}-{}", hex::encode(Md5::digest(&md5s)), wanted.len());
        let mut info = up.info.clone();
        info.parts = sizes;
        info.checksum = match (&up.info.checksum, part_sums.len() == wanted.len()) {
            (Some((a, _)), true) => {
                let algo = Algo::from_name(a).ok_or_else(|| internal(format!("stored algorithm {a}")))?;
                Some((a.clone(), checksum::combine(algo, info.checksum_type.as_deref(), &part_sums).map_err(internal)?))
            }
            _ => None,
        };
        if info.checksum.is_none() {
            info.checksum_type = None;
        }
        // A whole-object checksum the client computed must match the one made of the parts.
        let given = given!(i);
        if let Some((a, v)) = &info.checksum {
            if let Some(g) = Algo::from_name(a).and_then(|al| given.get(al)) {
                let base = |x: &str| x.split('-').next().unwrap_or_default().to_string();
                if base(&g) != base(v) {
                    return Err(S3Error::with_message(
                        S3ErrorCode::BadDigest,
                        format!("the {a} you specified did not match the calculated checksum"),
                    ));
                }
            }
        }
        let o = Object { key: i.key.clone(), size, etag: etag_, modified_ms: now_ms(), info, slices };
        self.meta.complete_upload(&i.bucket, &i.upload_id, &o, &used, &cond).await.map_err(meta_err)?;
        let mut out = CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(etag(&o.etag)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            ..Default::default()
        };
        if let Some((a, v)) = &o.info.checksum {
            set_checksum!(out, a, v.clone());
            out.checksum_type = o.info.checksum_type.clone().map(ChecksumType::from);
        }
        Ok(S3Response::new(out))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        self.meta.upload(&i.bucket, &i.key, &i.upload_id).await.map_err(meta_err)?;
        self.meta.abort_upload(&i.upload_id).await.map_err(meta_err)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let tenant = self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        let up = self.meta.upload(&i.bucket, &i.key, &i.upload_id).await.map_err(meta_err)?;
        let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = i.part_number_marker.unwrap_or(0).max(0) as u32;
        let mut parts = self.meta.parts(&i.upload_id, after, max + 1).await.map_err(meta_err)?;
        let truncated = parts.len() > max;
        parts.truncate(max);
        let next = parts.last().map(|p| p.num as i32);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            upload_id: Some(i.upload_id.clone()),
            max_parts: Some(max as i32),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(truncated),
            owner: Some(Gateway::owner(&tenant)),
            initiator: Some(Initiator { display_name: Some(tenant.clone()), id: Some(tenant.clone()) }),
            storage_class: Some(StorageClass::from(up.info.storage_class.clone().unwrap_or_else(|| "STANDARD".into()))),
            checksum_algorithm: up.info.checksum.as_ref().map(|(a, _)| ChecksumAlgorithm::from(a.clone())),
            checksum_type: up.info.checksum_type.clone().map(ChecksumType::from),
            parts: Some(
                parts
                    .iter()
                    .map(|p| {
                        let mut x = Part {
                            e_tag: Some(etag(&p.etag)),
                            last_modified: Some(ts(p.modified_ms)),
                            part_number: Some(p.num as i32),
                            size: Some(p.size as i64),
                            ..Default::default()
                        };
                        if let Some((a, v)) = &p.info.checksum {
                            set_checksum!(x, a, v.clone());
                        }
                        x
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let tenant = self.bucket_of(&req, &req.input.bucket).await?;
        let i = &req.input;
        let max = i.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let prefix = i.prefix.clone().unwrap_or_default();
        let km = i.key_marker.clone().unwrap_or_default();
        let um = i.upload_id_marker.clone().unwrap_or_default();
        // Without an upload-id marker, the key marker excludes every upload of that key.
        let after_id = if i.upload_id_marker.is_some() { um.as_str() } else { "\u{10ffff}" };
        let after = if km.is_empty() { ("", "") } else { (km.as_str(), after_id) };
        let mut ups = self.meta.uploads(&i.bucket, &prefix, after, max + 1).await.map_err(meta_err)?;
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
                        owner: Some(Gateway::owner(&tenant)),
                        initiator: Some(Initiator { display_name: Some(tenant.clone()), id: Some(tenant.clone()) }),
                        storage_class: Some(StorageClass::from(
                            u.info.storage_class.unwrap_or_else(|| "STANDARD".into()),
                        )),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
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

/// What a GET or HEAD with `range` or `part_number` serves of `o`.
fn served(o: &Object, range: &Option<Range>, part_number: Option<i32>) -> S3Result<Served> {
    let (start, end, partial) = match (range, part_number) {
        (Some(_), Some(_)) => return Err(s3_error!(InvalidRequest, "Range and partNumber cannot both be given")),
        (Some(r), None) => {
            let rg = r.check(o.size).map_err(|_| {
                let mut e = s3_error!(InvalidRange);
                e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
                e
            })?;
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

fn invalid_part_number() -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::Custom("InvalidPartNumber".into()),
        "The requested partnumber is not satisfiable",
    );
    e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
    e
}
