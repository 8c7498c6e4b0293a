//! Listing objects (v1 and v2): prefixes, delimiters, markers, continuation tokens and
//! `encoding-type=url`, over a page engine that seeks past common prefixes instead of
//! reading the keys under them.

use base64::Engine;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::dto::{etag, ts};
use super::errors::internal;
use super::Gateway;
use crate::catalog::Object;
use crate::limits::{LIST_BATCH_GROWTH, LIST_BATCH_MIN, LIST_ENTRIES_MAX};

impl Gateway {
    /// The keys and common prefixes of one page of a listing, seeking past each common
    /// prefix instead of reading the keys under it. Returns the entries and, when
    /// there are more, the cursor to continue from (exclusive).
    pub(super) async fn list_page(
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
        let mut l = self.catalog.lister().await?;
        // Rows per query of whole objects: with a delimiter, batches start small (a batch
        // that runs into a common prefix is cut there) and grow while they yield keys.
        let batch_max = LIST_ENTRIES_MAX as usize;
        let mut batch = if delim.is_some() { LIST_BATCH_MIN } else { batch_max };
        loop {
            if objects.len() + prefixes.len() >= max {
                // One more entry exists? Then the listing is truncated at `last`.
                let more = l.next_key(bucket, &from, inclusive, upper.as_deref()).await?;
                return Ok((objects, prefixes, more.map(|_| last)));
            }
            if delim.is_some() {
                // Seek: read the next key alone; a key under a common prefix stands for the
                // whole prefix, and the listing continues after all of its keys.
                let Some(k) = l.next_key(bucket, &from, inclusive, upper.as_deref()).await? else {
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
                            batch = LIST_BATCH_MIN;
                            continue;
                        }
                        None => return Ok((objects, prefixes, None)),
                    }
                }
            }
            let want = (max - objects.len() - prefixes.len()).min(batch);
            let rows = l.range(bucket, &from, inclusive, upper.as_deref(), want).await?;
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
                batch = (batch * LIST_BATCH_GROWTH).min(batch_max);
            }
        }
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
        storage_class: Some(ObjectStorageClass::from_static(
            o.info.storage_class.unwrap_or(crate::class::StorageClass::Standard).name(),
        )),
        owner,
        checksum_algorithm: o.info.checksum.as_ref().map(|c| vec![ChecksumAlgorithm::from_static(c.algo.name())]),
        checksum_type: o.info.checksum_type.map(|k| ChecksumType::from_static(k.name())),
        ..Default::default()
    }
}

pub(super) async fn list_objects_v2(
    gw: &Gateway,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let tenant = gw.bucket_of(&req, &req.input.bucket).await?;
    let i = &req.input;
    let max = i.max_keys.unwrap_or(LIST_ENTRIES_MAX);
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
        gw.list_page(&i.bucket, &prefix, i.delimiter.as_deref(), &after, max.min(LIST_ENTRIES_MAX) as usize).await?;
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

pub(super) async fn list_objects(
    gw: &Gateway,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let tenant = gw.bucket_of(&req, &req.input.bucket).await?;
    let i = &req.input;
    let max = i.max_keys.unwrap_or(LIST_ENTRIES_MAX);
    if max < 0 {
        return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
    }
    let prefix = i.prefix.clone().unwrap_or_default();
    let after = i.marker.clone().unwrap_or_default().into_bytes();
    let (objects, prefixes, next) =
        gw.list_page(&i.bucket, &prefix, i.delimiter.as_deref(), &after, max.min(LIST_ENTRIES_MAX) as usize).await?;
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
