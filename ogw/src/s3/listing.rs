//! Listing objects, v1 and v2, both answered from one page: prefix, delimiter, the
//! cursor to start after (v1's marker, v2's start-after or continuation token),
//! `encoding-type=url`. The page engine seeks past common prefixes instead of reading
//! the keys under them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN;
use base64::Engine;
use s3s::dto::{self, *};
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::dto::{checksum_algorithm, class_name, owner, ts};
use super::errors::internal;
use super::Gateway;
use crate::acl::Perm;
use crate::catalog::{successor, Listed};
use crate::limits::{LIST_BATCH_GROWTH, LIST_BATCH_MIN, LIST_ENTRIES_MAX};

pub(super) async fn list_objects_v2(
    gw: &Gateway,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let tenant = gw.bucket_for(&req, &req.input.bucket, Perm::Read).await?.tenant;
    let i = &req.input;
    let after: Vec<u8> = match &i.continuation_token {
        Some(t) => TOKEN.decode(t).map_err(|_| s3_error!(InvalidArgument, "the continuation token is not valid"))?,
        None => i.start_after.clone().unwrap_or_default().into_bytes(),
    };
    let owner = i.fetch_owner.unwrap_or(false).then(|| owner(&tenant));
    let query =
        Query { bucket: &i.bucket, prefix: &i.prefix, delimiter: &i.delimiter, encoding_type: &i.encoding_type };
    let (mut out, next, enc) = page(gw, query, i.max_keys, &after, owner).await?;
    out.key_count = Some((out.contents.iter().flatten().count() + out.common_prefixes.iter().flatten().count()) as i32);
    out.continuation_token = i.continuation_token.clone();
    out.start_after = i.start_after.clone().map(|s| enc.apply(s));
    out.next_continuation_token = next.map(|k| TOKEN.encode(k));
    Ok(S3Response::new(out))
}

pub(super) async fn list_objects(
    gw: &Gateway,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let tenant = gw.bucket_for(&req, &req.input.bucket, Perm::Read).await?.tenant;
    let i = &req.input;
    let marker = i.marker.clone().unwrap_or_default();
    let query =
        Query { bucket: &i.bucket, prefix: &i.prefix, delimiter: &i.delimiter, encoding_type: &i.encoding_type };
    let (v2, next, enc) = page(gw, query, i.max_keys, marker.as_bytes(), Some(owner(&tenant))).await?;
    Ok(S3Response::new(ListObjectsOutput {
        name: v2.name,
        // v1 answers its Prefix as given, even with encoding-type=url (as AWS: SDKs
        // decode v1's Marker and Delimiter, and v2's Prefix, but not v1's Prefix).
        prefix: i.prefix.clone().or(Some(String::new())),
        delimiter: v2.delimiter,
        marker: Some(enc.apply(marker)),
        max_keys: v2.max_keys,
        is_truncated: v2.is_truncated,
        next_marker: next.map(|k| enc.apply(String::from_utf8_lossy(&k).into_owned())),
        contents: v2.contents,
        common_prefixes: v2.common_prefixes,
        encoding_type: v2.encoding_type,
        ..Default::default()
    }))
}

/// What both versions ask, besides the cursor.
struct Query<'a> {
    bucket: &'a str,
    prefix: &'a Option<String>,
    delimiter: &'a Option<String>,
    encoding_type: &'a Option<EncodingType>,
}

/// `encoding-type=url`: keys, prefixes, delimiter and markers percent-encoded.
#[derive(Clone, Copy)]
struct Encoding {
    url: bool,
}

impl Encoding {
    fn apply(self, s: String) -> String {
        if self.url {
            url_encode(&s)
        } else {
            s
        }
    }
}

/// One page after `after`, as a v2 answer (v1 takes the same fields), with the cursor
/// of the next page when there is one and the encoding the answer's keys are in.
async fn page(
    gw: &Gateway,
    q: Query<'_>,
    max_keys: Option<i32>,
    after: &[u8],
    owner: Option<Owner>,
) -> S3Result<(ListObjectsV2Output, Option<Vec<u8>>, Encoding)> {
    let max = max_keys.unwrap_or(LIST_ENTRIES_MAX);
    if max < 0 {
        return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
    }
    let prefix = q.prefix.clone().unwrap_or_default();
    // max-keys=0 asks for no entries: an empty page that is not truncated (as AWS).
    let (objects, prefixes, next) = match max {
        0 => (Vec::new(), Vec::new(), None),
        _ => gw.list_page(q.bucket, &prefix, q.delimiter.as_deref(), after, max.min(LIST_ENTRIES_MAX) as usize).await?,
    };
    let enc = Encoding { url: q.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL) };
    let out = ListObjectsV2Output {
        name: Some(q.bucket.to_string()),
        prefix: Some(enc.apply(prefix)),
        // An empty delimiter is no delimiter, and is not echoed (as AWS).
        delimiter: q.delimiter.clone().filter(|d| !d.is_empty()).map(|d| enc.apply(d)),
        max_keys: Some(max),
        is_truncated: Some(next.is_some()),
        contents: Some(objects.into_iter().map(|o| list_entry(o, owner.clone(), enc)).collect()),
        common_prefixes: Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc.apply(p)) }).collect()),
        encoding_type: q.encoding_type.clone(),
        ..Default::default()
    };
    Ok((out, next, enc))
}

fn list_entry(o: Listed, owner: Option<Owner>, enc: Encoding) -> dto::Object {
    dto::Object {
        key: Some(enc.apply(o.key)),
        e_tag: Some(ETag::Strong(o.etag)),
        last_modified: Some(ts(o.modified_ms)),
        size: Some(o.size as i64),
        storage_class: Some(ObjectStorageClass::from_static(class_name(o.storage_class))),
        owner,
        checksum_algorithm: o.checksum.map(|a| vec![checksum_algorithm(a)]),
        checksum_type: o.checksum_type.map(|k| ChecksumType::from_static(k.name())),
        ..Default::default()
    }
}

impl Gateway {
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
    ) -> S3Result<(Vec<Listed>, Vec<String>, Option<Vec<u8>>)> {
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
            let rows = l.listed(bucket, &from, inclusive, upper.as_deref(), want).await?;
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

/// Percent-encodes a key for `encoding-type=url` (everything but unreserved and `/`).
pub(super) fn url_encode(s: &str) -> String {
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
