//! The gateway's catalog: tenants, access keys, buckets, objects and multipart uploads in
//! SQL (`db`). Every change that replaces or drops object bytes runs in one transaction
//! that also drops the rows' extent references (`refs`: what GC trusts). The `garbage`
//! table of schema version 1 is no longer written (it grew by a row per overwrite,
//! forever, and GC never trusted it).
//! The records, the error and what the families share are here; one file per family:
//! `tenants` (and their keys), `buckets`, `objects` (and the listing reader),
//! `uploads` (multipart), `streams` (the gateway's own LogStreams), `config` (a
//! bucket's sub-resource documents: tagging, CORS, ...); `refs` keeps which
//! rows name which extents (in the same transactions), `gc` is what the GC service asks.

mod buckets;
mod config;
mod gc;
mod lifecycle;
mod objects;
mod refs;
mod streams;
mod tenants;
mod transitions;
mod uploads;
mod versions;

use std::collections::BTreeMap;
use std::sync::Arc;

use client::Slice;
use proto::meta::Policy;
use proto::ExtentId;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::checksum::{Checksum, Kind};
use crate::class::StorageClass;
use crate::db::{retryable, Db};
use crate::limits::{TX_ATTEMPTS, TX_ATTEMPTS_UNCONDITIONAL, TX_BACKOFF_MAX_MS, TX_BACKOFF_MS};
use crate::secrets::MasterKey;
pub use buckets::{BucketUsage, USAGE_BUCKETS_MAX};
pub use config::{ConfigCache, ConfigKind};
pub use gc::GcCatalog;
pub use lifecycle::LifecycleReport;
pub use objects::{Listed, Lister};
pub use refs::{audit_refs, audit_refs_with, index_refs};
pub use versions::{successor, valid_version_id, VersionCursor, VersionPage};

/// What an object (or a part, or an upload) carries besides its bytes; stored as JSON
/// in the `info` column. Every field is left out when empty, and every typed value is
/// written by its S3 name, as it was when they were strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// HTTP date, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    /// Flexible checksum, `["CRC32", "base64"]`; for multipart objects with the `-N`
    /// suffix when COMPOSITE. An upload records the algorithm its parts are checked
    /// with here, with an empty value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    /// How `checksum` covers the object (S3's `x-amz-checksum-type`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<Kind>,
    /// Part sizes of a multipart object, in order (for `partNumber` GETs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<u64>,
    /// Each part's checksum value (the algorithm is `checksum`'s), in order, for a
    /// multipart object completed with checksums (GetObjectAttributes lists them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub part_sums: Vec<String>,
    /// The multipart upload that made this object: a CompleteMultipartUpload sent again
    /// (a client retrying after a lost answer) is answered as the first was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
    /// The redundancy policy the bytes were written with (`replica:3`, `ec:4+2`); None
    /// for objects written before storage classes mapped to policies (the standard one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// Object tags (key, value), in the order given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// Grants beyond the owner's (`crate::acl`); none: private.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl: Option<crate::acl::Acl>,
    /// Object Lock retention (`crate::lock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::lock::Retention>,
    /// Object Lock legal hold.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub legal_hold: bool,
    /// Server-side encryption of the bytes (`crate::sse`); none: stored in clear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse: Option<crate::sse::Sse>,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    pub modified_ms: i64,
    pub info: ObjectInfo,
    /// Where its bytes are. A listing's rows do not read it (empty slices): read an
    /// object's bytes only from a row read whole.
    pub layout: Layout,
    /// The version id; None: the null version (every object of a bucket never
    /// versioned, and those written while versioning was suspended).
    pub version: Option<String>,
}

/// A delete marker: the latest version of a key deleted in a versioned bucket (the key
/// then has no current object), or an older one.
#[derive(Debug, Clone)]
pub struct Marker {
    pub key: String,
    /// None: the null version.
    pub version: Option<String>,
    pub modified_ms: i64,
}

/// One version of a key, as asked for by id or listed.
// Most entries are objects; boxing them would cost an allocation each for the rare marker.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Entry {
    Object(Object),
    Marker(Marker),
}

/// What a DELETE did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The version removed, or the delete marker added (None: the null version, or a
    /// bucket never versioned).
    pub version: Option<String>,
    /// Whether that version is a delete marker.
    pub marker: bool,
    /// Whether anything was there to delete, or a marker was added.
    pub found: bool,
}

#[derive(Debug, Clone)]
pub struct Bucket {
    pub name: String,
    pub tenant: String,
    pub created_ms: i64,
    /// Redundancy policy of objects PUT without a storage class.
    pub policy: Policy,
    pub versioning: Versioning,
}

/// A bucket's versioning state. Once enabled, a bucket is never unversioned again: it
/// can only be suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Versioning {
    /// Never enabled: a write replaces the object, a delete removes it.
    #[default]
    Off,
    /// Every write makes a new version; a delete adds a delete marker.
    Enabled,
    /// Writes make the null version, replacing the previous null version only.
    Suspended,
}

impl Versioning {
    fn from_db(v: Option<String>) -> Result<Versioning> {
        match v.as_deref() {
            None => Ok(Versioning::Off),
            Some("Enabled") => Ok(Versioning::Enabled),
            Some("Suspended") => Ok(Versioning::Suspended),
            Some(x) => Err(CatalogError::Other(format!("stored versioning state {x:?} is not valid"))),
        }
    }

    /// The S3 status (`Enabled`, `Suspended`), none when never enabled.
    pub fn status(self) -> Option<&'static str> {
        match self {
            Versioning::Off => None,
            Versioning::Enabled => Some("Enabled"),
            Versioning::Suspended => Some("Suspended"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upload {
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub created_ms: i64,
    pub info: ObjectInfo,
}

#[derive(Debug, Clone)]
pub struct Part {
    pub num: u32,
    pub size: u64,
    pub etag: String,
    pub modified_ms: i64,
    pub info: ObjectInfo,
    pub slices: Vec<Slice>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("bucket belongs to another tenant")]
    NotOwner,
    #[error("bucket already exists")]
    BucketExists { owned_by_you: bool },
    #[error("bucket not empty")]
    BucketNotEmpty,
    #[error("no such upload")]
    NoSuchUpload,
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("no such key")]
    NoSuchKey,
    /// An append's offset is not the object's size (another append came first).
    #[error("the write offset is not the object's size")]
    WrongOffset,
    /// GC doomed an extent the write names (the bytes were unnamed long enough to be
    /// reclaimed); the row was not written. Retrying the request writes the bytes anew.
    #[error("extent {0} is being reclaimed")]
    Doomed(ExtentId),
    #[error("{0}")]
    Invalid(String),
    /// Object Lock keeps the version (`crate::lock::Refused`).
    #[error("{0}")]
    Locked(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// Where an object's bytes are: slices of extents, or, for a small object, the bytes
/// themselves, kept in its row (`Layout::Inline`).
///
/// Both are stored in the row's `slices` column. A slice list is 24 bytes a slice, so
/// its length is a multiple of 24; kept bytes follow a header of one byte
/// (`INLINE_TAG`) or two (`INLINE_TAG_PADDED`, 0) chosen so that the whole never is.
/// A gateway older than inline objects reads such a column as a corrupt slice list and
/// refuses the request ("not a multiple of 24"): it never serves, copies or drops an
/// inline object as one without bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    Slices(Vec<Slice>),
    /// The bytes (stored as written: encrypted when the object is).
    Inline(bytes::Bytes),
}

impl Default for Layout {
    fn default() -> Layout {
        Layout::Slices(Vec::new())
    }
}

impl Layout {
    /// The extent slices this layout names (none for bytes kept in the row): what the
    /// row's extent references count. Never the way to an object's bytes: that is
    /// `Data::get`, which reads either kind.
    pub fn named(&self) -> &[Slice] {
        match self {
            Layout::Slices(s) => s,
            Layout::Inline(_) => &[],
        }
    }
}

const INLINE_TAG: u8 = 0x49;
const INLINE_TAG_PADDED: u8 = 0x50;

/// A layout as the `slices` column stores it (see `Layout`).
pub fn encode_layout(l: &Layout) -> Vec<u8> {
    match l {
        Layout::Slices(s) => encode_slices(s),
        Layout::Inline(b) => {
            let mut out = Vec::with_capacity(b.len() + 2);
            if (b.len() + 1).is_multiple_of(24) {
                out.extend_from_slice(&[INLINE_TAG_PADDED, 0]);
            } else {
                out.push(INLINE_TAG);
            }
            out.extend_from_slice(b);
            out
        }
    }
}

/// The length of the header before kept bytes (`b`'s length is not a multiple of 24).
fn kept_header(b: &[u8]) -> Result<usize> {
    match b[0] {
        INLINE_TAG => Ok(1),
        INLINE_TAG_PADDED => Ok(2),
        t => Err(CatalogError::Other(format!(
            "stored layout of {} bytes is neither slices nor kept bytes (tag {t:#x})",
            b.len()
        ))),
    }
}

/// A layout from the `slices` column (`encode_layout`).
pub fn decode_layout(b: Vec<u8>) -> Result<Layout> {
    if !is_kept(&b) {
        return Ok(Layout::Slices(decode_slices(&b)?));
    }
    let header = kept_header(&b)?;
    Ok(Layout::Inline(bytes::Bytes::from(b).slice(header..)))
}

/// The layout of an object of `size` bytes from the `slices` column: kept bytes of
/// another length are a corrupt row, refused here so that every range of the object
/// is in them.
fn sized_layout(b: Vec<u8>, size: u64) -> Result<Layout> {
    let l = decode_layout(b)?;
    match &l {
        Layout::Inline(b) if b.len() as u64 != size => {
            Err(CatalogError::Other(format!("the row of an object of {size} bytes keeps {} bytes", b.len())))
        }
        _ => Ok(l),
    }
}

/// The layout of an object row of `size` bytes, if the row was read with its `slices`
/// column; a listing's rows are not (their layout is empty slices: never read bytes
/// through it).
fn layout_in_row(r: &sqlx::any::AnyRow, size: u64) -> Result<Layout> {
    match r.try_column("slices") {
        Ok(_) => sized_layout(r.try_get::<Vec<u8>, _>("slices")?, size),
        Err(_) => Ok(Layout::default()),
    }
}

/// Whether a stored layout is bytes kept in the row (`Layout::Inline`).
pub fn is_kept(b: &[u8]) -> bool {
    !b.len().is_multiple_of(24)
}

/// The extent slices a stored layout names (`Layout::named`): none for kept bytes.
pub fn decode_named(b: &[u8]) -> Result<Vec<Slice>> {
    if !is_kept(b) {
        return decode_slices(b);
    }
    kept_header(b).map(|_| Vec::new())
}

/// 24 bytes a slice: extent, offset, len, crc (little-endian).
pub fn encode_slices(s: &[Slice]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 24);
    for x in s {
        out.extend_from_slice(&x.extent.0.to_le_bytes());
        out.extend_from_slice(&x.offset.to_le_bytes());
        out.extend_from_slice(&x.len.to_le_bytes());
        out.extend_from_slice(&x.crc.to_le_bytes());
    }
    out
}

pub fn decode_slices(b: &[u8]) -> Result<Vec<Slice>> {
    if !b.len().is_multiple_of(24) {
        return Err(CatalogError::Other(format!("slice list of {} bytes is not a multiple of 24", b.len())));
    }
    Ok(b.chunks_exact(24)
        .map(|c| Slice {
            extent: ExtentId(u64::from_le_bytes(c[0..8].try_into().expect("8"))),
            offset: u64::from_le_bytes(c[8..16].try_into().expect("8")),
            len: u32::from_le_bytes(c[16..20].try_into().expect("4")),
            crc: u32::from_le_bytes(c[20..24].try_into().expect("4")),
        })
        .collect())
}

/// A unique-key violation as `Invalid(msg)` (the name is taken); other errors as they are.
fn taken(e: sqlx::Error, msg: String) -> CatalogError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => CatalogError::Invalid(msg),
        _ => e.into(),
    }
}

fn info_json(i: &ObjectInfo) -> String {
    serde_json::to_string(i).expect("plain data")
}

fn parse_info(s: &str) -> Result<ObjectInfo> {
    serde_json::from_str(s).map_err(|e| CatalogError::Other(format!("stored object info is not valid: {e}")))
}

/// An object's key as stored (bytes, so every backend orders keys as S3 lists them).
fn key_from_row(r: &sqlx::any::AnyRow) -> Result<String> {
    let key: Vec<u8> = r.try_get("okey")?;
    String::from_utf8(key).map_err(|_| CatalogError::Other("stored key is not UTF-8".into()))
}

/// A condition on the current object that a write must meet, checked in the write's
/// transaction (so of concurrent conditional writes exactly one wins).
#[derive(Debug, Clone, Default)]
pub struct WriteCondition {
    /// `If-None-Match: *`: the key must not exist.
    pub if_none_match_any: bool,
    /// `If-Match: etag`: the key must exist with this ETag (`*`: must exist).
    pub if_match: Option<String>,
    /// `If-None-Match: etag`: the key must not hold an object with this ETag.
    pub if_none_match: Option<String>,
    /// An append: the key must hold exactly this object (ETag, modification time and
    /// size; none: no object, for an append at offset 0), whose slices the new one
    /// starts with. Else `WrongOffset`.
    pub append_to: Option<Option<(String, i64, u64)>>,
}

impl WriteCondition {
    pub fn is_conditional(&self) -> bool {
        self.if_none_match_any || self.if_match.is_some() || self.if_none_match.is_some() || self.append_to.is_some()
    }

    fn check(&self, current: Option<&str>) -> Result<()> {
        if self.if_none_match_any && current.is_some() {
            return Err(CatalogError::PreconditionFailed);
        }
        if self.if_none_match.is_some() && self.if_none_match.as_deref() == current {
            return Err(CatalogError::PreconditionFailed);
        }
        if let Some(want) = &self.if_match {
            match current {
                Some(etag) if want == "*" || want == etag => {}
                // As AWS: If-Match on a key without an object is a 404.
                None => return Err(CatalogError::NoSuchKey),
                Some(_) => return Err(CatalogError::PreconditionFailed),
            }
        }
        Ok(())
    }
}

/// The catalog in one SQL database; secrets sealed with `key`.
#[derive(Clone)]
pub struct Catalog {
    pub db: Db,
    pub key: MasterKey,
    /// Bucket rows as recently read (`Catalog::bucket_cached`), shared by the clones.
    buckets: Arc<config::BucketMap<Bucket>>,
}

impl Catalog {
    pub fn new(db: Db, key: MasterKey) -> Catalog {
        Catalog { db, key, buckets: Arc::default() }
    }

    /// Runs a transaction again while it loses a race (unique key, deadlock,
    /// serialization), up to `TX_ATTEMPTS` times when `conditional`, else
    /// `TX_ATTEMPTS_UNCONDITIONAL`. A race still lost then by a conditional write
    /// means another conditional writer won: `PreconditionFailed`.
    async fn retry<T, F, Fut>(conditional: bool, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let attempts = if conditional { TX_ATTEMPTS } else { TX_ATTEMPTS_UNCONDITIONAL };
        let mut n = 0;
        loop {
            n += 1;
            match attempt().await {
                Err(CatalogError::Db(e)) if retryable(&e) && n < attempts => {
                    // A random pause that grows: writers that keep meeting each other
                    // (the same part uploaded at once) fall out of step.
                    let most = (TX_BACKOFF_MS << (n - 1).min(16)).min(TX_BACKOFF_MAX_MS);
                    let ms = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=most);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    continue;
                }
                Err(CatalogError::Db(e)) if retryable(&e) && conditional => {
                    return Err(CatalogError::PreconditionFailed)
                }
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept bytes of every length read back as written, and never look like a slice
    /// list: a gateway from before inline objects (`decode_slices`) refuses them.
    #[test]
    fn kept_bytes_read_back_and_older_gateways_refuse_them() {
        for n in (1..=200).chain([4095, 4096, 4097, 24 * 171 - 1, 24 * 171]) {
            let body = bytes::Bytes::from((0..n).map(|i| (i * 7 + n) as u8).collect::<Vec<u8>>());
            let stored = encode_layout(&Layout::Inline(body.clone()));
            assert!(is_kept(&stored), "{n} bytes kept look like slices");
            assert!(decode_slices(&stored).is_err(), "{n} bytes kept read as slices");
            assert_eq!(decode_layout(stored.clone()).unwrap(), Layout::Inline(body.clone()), "{n} bytes");
            assert_eq!(decode_named(&stored).unwrap(), vec![], "{n} bytes kept name extents");
            assert_eq!(sized_layout(stored.clone(), n as u64).unwrap(), Layout::Inline(body));
            assert!(sized_layout(stored, n as u64 + 1).is_err(), "{n} bytes kept for a longer object");
        }
        let slices: Vec<Slice> =
            (1..4).map(|i| Slice { extent: ExtentId(i), offset: i * 10, len: 5, crc: i as u32 }).collect();
        let stored = encode_layout(&Layout::Slices(slices.clone()));
        assert!(!is_kept(&stored));
        assert_eq!(decode_layout(stored.clone()).unwrap(), Layout::Slices(slices.clone()));
        assert_eq!(decode_named(&stored).unwrap(), slices);
        assert_eq!(decode_layout(Vec::new()).unwrap(), Layout::Slices(vec![]));
        // Neither a slice list nor kept bytes: refused, not guessed.
        assert!(decode_layout(vec![0x01; 25]).is_err());
    }

    #[test]
    fn object_info_reads_back_as_it_was_stored() {
        // As written before checksums, kinds, classes and policies were typed.
        let stored = [
            r#"{"content_type":"text/plain","user":{"a":"b"},"checksum":["CRC64NVME","AAAAAAAAAAA="],"checksum_type":"FULL_OBJECT","parts":[5242880,3],"storage_class":"STANDARD_IA","policy":"ec:4+2"}"#,
            r#"{"checksum":["SHA256","x-3"],"checksum_type":"COMPOSITE","storage_class":"REDUCED_REDUNDANCY"}"#,
            r#"{"checksum":["CRC32",""],"checksum_type":"COMPOSITE","storage_class":"GLACIER_IR","policy":"replica:3"}"#,
            r#"{}"#,
        ];
        for s in stored {
            let info = parse_info(s).unwrap();
            assert_eq!(info_json(&info), s);
        }
        let info = parse_info(stored[0]).unwrap();
        assert_eq!(
            info.checksum,
            Some(Checksum { algo: crate::checksum::Algo::Crc64Nvme, value: "AAAAAAAAAAA=".into() })
        );
        assert_eq!(info.checksum_type, Some(Kind::FullObject));
        assert_eq!(info.storage_class, Some(StorageClass::StandardIa));
        assert_eq!(info.policy, Some(Policy::Ec { k: 4, m: 2 }));
    }
}
