//! Tenants, access keys, buckets, objects, multipart uploads and garbage in SQL.
//! Every change that replaces or drops object bytes runs in one transaction that also
//! records the dropped slices in `garbage` (what GC will reclaim).

use std::collections::BTreeMap;

use client::Slice;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::db::{now_ms, retryable, Backend, Db, Tx};
use crate::secrets::MasterKey;

/// What an object (or a part) carries besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// HTTP date, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    /// Flexible checksum: algorithm (CRC32, CRC32C, CRC64NVME, SHA1, SHA256) and its
    /// base64 value; for multipart objects with the `-N` suffix when COMPOSITE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
    /// Part sizes of a multipart object, in order (for `partNumber` GETs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The redundancy policy the bytes were written with (`replica:3`, `ec:4+2`); None
    /// for objects written before storage classes mapped to policies (the standard one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    pub modified_ms: i64,
    pub info: ObjectInfo,
    pub slices: Vec<Slice>,
}

#[derive(Debug, Clone)]
pub struct Bucket {
    pub name: String,
    pub tenant: String,
    pub created_ms: i64,
    /// Redundancy policy of objects PUT without a storage class (`replica:3`, `ec:4+2`).
    pub policy: String,
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
pub enum MetaError {
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
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, MetaError>;

/// 24 bytes a slice: extent, offset, len, crc (little-endian).
pub fn encode_slices(s: &[Slice]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 24);
    for x in s {
        out.extend_from_slice(&x.extent.to_le_bytes());
        out.extend_from_slice(&x.offset.to_le_bytes());
        out.extend_from_slice(&x.len.to_le_bytes());
        out.extend_from_slice(&x.crc.to_le_bytes());
    }
    out
}

pub fn decode_slices(b: &[u8]) -> Result<Vec<Slice>> {
    if !b.len().is_multiple_of(24) {
        return Err(MetaError::Other(format!("slice list of {} bytes is not a multiple of 24", b.len())));
    }
    Ok(b.chunks_exact(24)
        .map(|c| Slice {
            extent: u64::from_le_bytes(c[0..8].try_into().expect("8")),
            offset: u64::from_le_bytes(c[8..16].try_into().expect("8")),
            len: u32::from_le_bytes(c[16..20].try_into().expect("4")),
            crc: u32::from_le_bytes(c[20..24].try_into().expect("4")),
        })
        .collect())
}

/// A unique-key violation as `Invalid(msg)` (the name is taken); other errors as they are.
fn taken(e: sqlx::Error, msg: String) -> MetaError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => MetaError::Invalid(msg),
        _ => e.into(),
    }
}

fn info_json(i: &ObjectInfo) -> String {
    serde_json::to_string(i).expect("plain data")
}

fn parse_info(s: &str) -> Result<ObjectInfo> {
    serde_json::from_str(s).map_err(|e| MetaError::Other(format!("stored object info is not valid: {e}")))
}

fn object_from_row(r: &sqlx::any::AnyRow) -> Result<Object> {
    let key: Vec<u8> = r.try_get("okey")?;
    Ok(Object {
        key: String::from_utf8(key).map_err(|_| MetaError::Other("stored key is not UTF-8".into()))?,
        size: r.try_get::<i64, _>("size")? as u64,
        etag: r.try_get("etag")?,
        modified_ms: r.try_get("modified")?,
        info: parse_info(&r.try_get::<String, _>("info")?)?,
        slices: decode_slices(&r.try_get::<Vec<u8>, _>("slices")?)?,
    })
}

/// A condition on the current object that a write must meet, checked in the write's
/// transaction (so of concurrent conditional writes exactly one wins).
#[derive(Debug, Clone, Default)]
pub struct WriteCondition {
    /// `If-None-Match: *`: the key must not exist.
    pub if_none_match_any: bool,
    /// `If-Match: etag`: the key must exist with this ETag (`*`: must exist).
    pub if_match: Option<String>,
}

impl WriteCondition {
    pub fn is_conditional(&self) -> bool {
        self.if_none_match_any || self.if_match.is_some()
    }

    fn check(&self, current: Option<&str>) -> Result<()> {
        if self.if_none_match_any && current.is_some() {
            return Err(MetaError::PreconditionFailed);
        }
        if let Some(want) = &self.if_match {
            match current {
                Some(etag) if want == "*" || want == etag => {}
                _ => return Err(MetaError::PreconditionFailed),
            }
        }
        Ok(())
    }
}

/// Up to this many attempts of a transaction that lost a race.
const TX_ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct Meta {
    pub db: Db,
    pub key: MasterKey,
}

impl Meta {
    // ---- tenants and keys

    pub async fn create_tenant(&self, name: &str) -> Result<()> {
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(MetaError::Invalid("a tenant name is 1-128 of A-Z a-z 0-9 - _ .".into()));
        }
        sqlx::query(self.db.q("INSERT INTO tenants (name, created) VALUES (?, ?)"))
            .bind(name)
            .bind(now_ms())
            .execute(&self.db.pool)
            .await
            .map_err(|e| taken(e, format!("tenant {name} already exists")))?;
        Ok(())
    }

    pub async fn tenants(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(self.db.q("SELECT name FROM tenants ORDER BY name")).fetch_all(&self.db.pool).await?)
    }

    pub async fn tenant_exists(&self, name: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(self.db.q("SELECT COUNT(*) FROM tenants WHERE name = ?"))
            .bind(name)
            .fetch_one(&self.db.pool)
            .await?;
        Ok(n > 0)
    }

    /// Adds an access key for `tenant`; the secret is stored sealed by the master key.
    pub async fn add_key(&self, tenant: &str, access_key: &str, secret: &str) -> Result<()> {
        if !self.tenant_exists(tenant).await? {
            return Err(MetaError::Invalid(format!("no tenant {tenant}")));
        }
        if access_key.len() < 3 || access_key.len() > 128 || !access_key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(MetaError::Invalid("an access key is 3-128 of A-Z a-z 0-9".into()));
        }
        if secret.len() < 8 || secret.len() > 128 || !secret.is_ascii() {
            return Err(MetaError::Invalid("a secret key is 8-128 ASCII characters".into()));
        }
        sqlx::query(self.db.q("INSERT INTO access_keys (access_key, tenant, secret, created) VALUES (?, ?, ?, ?)"))
            .bind(access_key)
            .bind(tenant)
            .bind(self.key.seal(secret.as_bytes()))
            .bind(now_ms())
            .execute(&self.db.pool)
            .await
            .map_err(|e| taken(e, format!("access key {access_key} already exists")))?;
        Ok(())
    }

    /// The tenant and secret of an access key.
    pub async fn key(&self, access_key: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query(self.db.q("SELECT tenant, secret FROM access_keys WHERE access_key = ?"))
            .bind(access_key)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let sealed: Vec<u8> = r.try_get("secret")?;
        let secret = self.key.open(&sealed).map_err(|e| MetaError::Other(e.to_string()))?;
        let secret = String::from_utf8(secret).map_err(|_| MetaError::Other("stored secret is not UTF-8".into()))?;
        Ok(Some((r.try_get("tenant")?, secret)))
    }

    pub async fn delete_key(&self, access_key: &str) -> Result<bool> {
        let r = sqlx::query(self.db.q("DELETE FROM access_keys WHERE access_key = ?"))
            .bind(access_key)
            .execute(&self.db.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- buckets

    pub async fn create_bucket(&self, tenant: &str, name: &str, policy: &str) -> Result<()> {
        let r = sqlx::query(self.db.q("INSERT INTO buckets (name, tenant, created, policy) VALUES (?, ?, ?, ?)"))
            .bind(name)
            .bind(tenant)
            .bind(now_ms())
            .bind(policy)
            .execute(&self.db.pool)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                let b = self.bucket(name).await?;
                Err(MetaError::BucketExists { owned_by_you: b.is_some_and(|b| b.tenant == tenant) })
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn bucket(&self, name: &str) -> Result<Option<Bucket>> {
        let row = sqlx::query(self.db.q("SELECT name, tenant, created, policy FROM buckets WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(Bucket {
                name: r.try_get("name")?,
                tenant: r.try_get("tenant")?,
                created_ms: r.try_get("created")?,
                policy: r.try_get("policy")?,
            }),
            None => None,
        })
    }

    /// The bucket if `tenant` owns it: `NoSuchBucket` when it does not exist,
    /// `NotOwner` when another tenant owns it.
    /// Sets the policy of a bucket's objects PUT without a storage class (admin).
    pub async fn set_bucket_policy(&self, name: &str, policy: &str) -> Result<()> {
        // (MySQL counts changed rows, not matched ones: ask first.)
        if self.bucket(name).await?.is_none() {
            return Err(MetaError::NoSuchBucket);
        }
        sqlx::query(self.db.q("UPDATE buckets SET policy = ? WHERE name = ?"))
            .bind(policy)
            .bind(name)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn owned_bucket(&self, tenant: &str, name: &str) -> Result<Bucket> {
        match self.bucket(name).await? {
            None => Err(MetaError::NoSuchBucket),
            Some(b) if b.tenant != tenant => Err(MetaError::NotOwner),
            Some(b) => Ok(b),
        }
    }

    pub async fn buckets(&self, tenant: &str) -> Result<Vec<Bucket>> {
        let rows =
            sqlx::query(self.db.q("SELECT name, tenant, created, policy FROM buckets WHERE tenant = ? ORDER BY name"))
                .bind(tenant)
                .fetch_all(&self.db.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(Bucket {
                    name: r.try_get("name")?,
                    tenant: r.try_get("tenant")?,
                    created_ms: r.try_get("created")?,
                    policy: r.try_get("policy")?,
                })
            })
            .collect()
    }

    /// Deletes an empty bucket (no objects and no multipart uploads in progress).
    pub async fn delete_bucket(&self, tenant: &str, name: &str) -> Result<()> {
        let (_turn, mut tx) = self.db.begin().await?;
        let row = sqlx::query(self.db.q("SELECT tenant FROM buckets WHERE name = ?"))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        match row {
            None => return Err(MetaError::NoSuchBucket),
            Some(r) if r.try_get::<String, _>("tenant")? != tenant => return Err(MetaError::NotOwner),
            Some(_) => {}
        }
        let objects: i64 = sqlx::query_scalar(self.db.q("SELECT COUNT(*) FROM objects WHERE bucket = ?"))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let uploads: i64 = sqlx::query_scalar(self.db.q("SELECT COUNT(*) FROM uploads WHERE bucket = ?"))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if objects + uploads > 0 {
            return Err(MetaError::BucketNotEmpty);
        }
        sqlx::query(self.db.q("DELETE FROM buckets WHERE name = ?")).bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- objects

    pub async fn object(&self, bucket: &str, key: &str) -> Result<Option<Object>> {
        let row = sqlx::query(
            self.db.q("SELECT okey, size, etag, modified, info, slices FROM objects WHERE bucket = ? AND okey = ?"),
        )
        .bind(bucket)
        .bind(key.as_bytes())
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(object_from_row).transpose()
    }

    async fn garbage(&self, tx: &mut Tx, slices: &[u8], reason: &'static str) -> Result<()> {
        if slices.is_empty() {
            return Ok(());
        }
        sqlx::query(self.db.q("INSERT INTO garbage (slices, reason, created) VALUES (?, ?, ?)"))
            .bind(slices)
            .bind(reason)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The current object's ETag and encoded slices, locked for the rest of `tx`
    /// (`FOR UPDATE`; SQLite's write lock already covers the whole transaction).
    async fn current(&self, tx: &mut Tx, bucket: &str, key: &str) -> Result<Option<(String, Vec<u8>)>> {
        let sql = match self.db.backend {
            Backend::Sqlite => "SELECT etag, slices FROM objects WHERE bucket = ? AND okey = ?",
            _ => "SELECT etag, slices FROM objects WHERE bucket = ? AND okey = ? FOR UPDATE",
        };
        let row = sqlx::query(self.db.q(sql)).bind(bucket).bind(key.as_bytes()).fetch_optional(&mut **tx).await?;
        Ok(match row {
            Some(r) => Some((r.try_get("etag")?, r.try_get("slices")?)),
            None => None,
        })
    }

    /// Drops the object row at `key`, if any, recording its slices as garbage; whether
    /// there was one.
    async fn drop_current(&self, tx: &mut Tx, bucket: &str, key: &str, reason: &'static str) -> Result<bool> {
        let Some((_, old)) = self.current(tx, bucket, key).await? else { return Ok(false) };
        self.garbage(tx, &old, reason).await?;
        sqlx::query(self.db.q("DELETE FROM objects WHERE bucket = ? AND okey = ?"))
            .bind(bucket)
            .bind(key.as_bytes())
            .execute(&mut **tx)
            .await?;
        Ok(true)
    }

    /// Writes `o` in `tx` in place of the current object at its key, if `cond` allows;
    /// the replaced object's slices become garbage.
    async fn replace_object(&self, tx: &mut Tx, bucket: &str, o: &Object, cond: &WriteCondition) -> Result<()> {
        let cur = self.current(tx, bucket, &o.key).await?;
        cond.check(cur.as_ref().map(|(etag, _)| etag.as_str()))?;
        if cur.is_some() {
            self.drop_current(tx, bucket, &o.key, "overwrite").await?;
        }
        sqlx::query(
            self.db.q(
                "INSERT INTO objects (bucket, okey, size, etag, modified, info, slices) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ),
        )
        .bind(bucket)
        .bind(o.key.as_bytes())
        .bind(o.size as i64)
        .bind(&o.etag)
        .bind(o.modified_ms)
        .bind(info_json(&o.info))
        .bind(encode_slices(&o.slices))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Runs a transaction again while it loses a race (unique key, deadlock,
    /// serialization), up to `TX_ATTEMPTS` times. A race still lost then by a
    /// conditional write means another conditional writer won: `PreconditionFailed`.
    async fn retry<T, F, Fut>(conditional: bool, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut n = 0;
        loop {
            n += 1;
            match attempt().await {
                Err(MetaError::Db(e)) if retryable(&e) && n < TX_ATTEMPTS => continue,
                Err(MetaError::Db(e)) if retryable(&e) && conditional => return Err(MetaError::PreconditionFailed),
                r => return r,
            }
        }
    }

    /// Writes `o` under `bucket`, replacing what was there if `cond` allows; the
    /// replaced object's slices become garbage. Atomic: of concurrent conditional
    /// writes to one key, exactly one meets the condition.
    pub async fn put_object(&self, bucket: &str, o: &Object, cond: &WriteCondition) -> Result<()> {
        Meta::retry(cond.is_conditional(), || async {
            let (_turn, mut tx) = self.db.begin().await?;
            self.replace_object(&mut tx, bucket, o, cond).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Deletes a key (nothing happens when it is absent); its slices become garbage.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool> {
        Meta::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            let dropped = self.drop_current(&mut tx, bucket, key, "delete").await?;
            tx.commit().await?;
            Ok(dropped)
        })
        .await
    }

    /// Objects with keys in `[from, to)` (`from` inclusive or not), in key order.
    pub async fn objects_range(
        &self,
        bucket: &str,
        from: &[u8],
        inclusive: bool,
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Object>> {
        self.lister().await?.range(bucket, from, inclusive, to, limit).await
    }

    /// One connection for the many small queries of a listing page.
    pub async fn lister(&self) -> Result<Lister> {
        Ok(Lister { conn: self.db.pool.acquire().await?, db: self.db.clone() })
    }
    // ---- multipart

    pub async fn create_upload(&self, bucket: &str, key: &str, info: &ObjectInfo) -> Result<String> {
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        let id = hex::encode(id);
        sqlx::query(self.db.q("INSERT INTO uploads (id, bucket, okey, created, info) VALUES (?, ?, ?, ?, ?)"))
            .bind(&id)
            .bind(bucket)
            .bind(key.as_bytes())
            .bind(now_ms())
            .bind(info_json(info))
            .execute(&self.db.pool)
            .await?;
        Ok(id)
    }

    pub async fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<Upload> {
        let row = sqlx::query(self.db.q("SELECT id, bucket, okey, created, info FROM uploads WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or(MetaError::NoSuchUpload)?;
        let u = upload_from_row(&row)?;
        if u.bucket != bucket || u.key != key {
            return Err(MetaError::NoSuchUpload);
        }
        Ok(u)
    }

    pub async fn uploads(&self, bucket: &str, prefix: &str, after: (&str, &str), limit: usize) -> Result<Vec<Upload>> {
        // Few uploads are in progress at a time; filter the bucket's in memory.
        let rows = sqlx::query(
            self.db.q("SELECT id, bucket, okey, created, info FROM uploads WHERE bucket = ? ORDER BY okey, id"),
        )
        .bind(bucket)
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let u = upload_from_row(r)?;
            if !u.key.starts_with(prefix) || (u.key.as_str(), u.id.as_str()) <= after {
                continue;
            }
            out.push(u);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn require_upload(&self, tx: &mut Tx, upload: &str) -> Result<()> {
        let n: i64 = sqlx::query_scalar(self.db.q("SELECT COUNT(*) FROM uploads WHERE id = ?"))
            .bind(upload)
            .fetch_one(&mut **tx)
            .await?;
        if n == 0 {
            return Err(MetaError::NoSuchUpload);
        }
        Ok(())
    }

    /// Stores a part, replacing an earlier upload of the same number (whose slices
    /// become garbage).
    pub async fn put_part(&self, upload: &str, p: &Part) -> Result<()> {
        Meta::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            self.require_upload(&mut tx, upload).await?;
            let old = sqlx::query(self.db.q("SELECT slices FROM parts WHERE upload = ? AND num = ?"))
                .bind(upload)
                .bind(p.num as i64)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(r) = old {
                let s: Vec<u8> = r.try_get("slices")?;
                self.garbage(&mut tx, &s, "part-overwrite").await?;
                sqlx::query(self.db.q("DELETE FROM parts WHERE upload = ? AND num = ?"))
                    .bind(upload)
                    .bind(p.num as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                self.db.q(
                    "INSERT INTO parts (upload, num, size, etag, modified, info, slices) VALUES (?, ?, ?, ?, ?, ?, ?)",
                ),
            )
            .bind(upload)
            .bind(p.num as i64)
            .bind(p.size as i64)
            .bind(&p.etag)
            .bind(p.modified_ms)
            .bind(info_json(&p.info))
            .bind(encode_slices(&p.slices))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub async fn parts(&self, upload: &str, after: u32, limit: usize) -> Result<Vec<Part>> {
        let rows = sqlx::query(self.db.q(
            "SELECT num, size, etag, modified, info, slices FROM parts WHERE upload = ? AND num > ? ORDER BY num LIMIT ?",
        ))
        .bind(upload)
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(part_from_row).collect()
    }

    /// Completes an upload: the object is written from `parts` (already validated by
    /// the caller against `parts()`), the upload and all its part records go, and the
    /// slices of parts not used become garbage. One transaction.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        upload: &str,
        o: &Object,
        used: &[u32],
        cond: &WriteCondition,
    ) -> Result<()> {
        Meta::retry(cond.is_conditional(), || async {
            let (_turn, mut tx) = self.db.begin().await?;
            self.require_upload(&mut tx, upload).await?;
            self.replace_object(&mut tx, bucket, o, cond).await?;
            self.drop_parts(&mut tx, upload, used, "unused-part").await?;
            sqlx::query(self.db.q("DELETE FROM uploads WHERE id = ?")).bind(upload).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Deletes an upload's part records; the slices of parts not in `keep` become
    /// garbage.
    async fn drop_parts(&self, tx: &mut Tx, upload: &str, keep: &[u32], reason: &'static str) -> Result<()> {
        let rows = sqlx::query(self.db.q("SELECT num, slices FROM parts WHERE upload = ?"))
            .bind(upload)
            .fetch_all(&mut **tx)
            .await?;
        for r in rows {
            let num: i64 = r.try_get("num")?;
            if !keep.contains(&(num as u32)) {
                let s: Vec<u8> = r.try_get("slices")?;
                self.garbage(tx, &s, reason).await?;
            }
        }
        sqlx::query(self.db.q("DELETE FROM parts WHERE upload = ?")).bind(upload).execute(&mut **tx).await?;
        Ok(())
    }

    /// Drops an upload; its parts' slices become garbage.
    pub async fn abort_upload(&self, upload: &str) -> Result<()> {
        let (_turn, mut tx) = self.db.begin().await?;
        let n = sqlx::query(self.db.q("DELETE FROM uploads WHERE id = ?")).bind(upload).execute(&mut *tx).await?;
        if n.rows_affected() == 0 {
            return Err(MetaError::NoSuchUpload);
        }
        self.drop_parts(&mut tx, upload, &[], "abort").await?;
        tx.commit().await?;
        Ok(())
    }

    /// Bytes recorded as garbage (for tests and the GC issue).
    pub async fn garbage_slices(&self) -> Result<Vec<Slice>> {
        let rows = sqlx::query(self.db.q("SELECT slices FROM garbage ORDER BY id")).fetch_all(&self.db.pool).await?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(decode_slices(&r.try_get::<Vec<u8>, _>("slices")?)?);
        }
        Ok(out)
    }

    // ---- the gateway's own streams

    pub async fn add_stream(&self, id: u64, owner: &str) -> Result<()> {
        sqlx::query(self.db.q("INSERT INTO streams (id, owner, created) VALUES (?, ?, ?)"))
            .bind(id as i64)
            .bind(owner)
            .bind(now_ms())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn streams_of(&self, owner: &str) -> Result<Vec<u64>> {
        let ids: Vec<i64> = sqlx::query_scalar(self.db.q("SELECT id FROM streams WHERE owner = ? ORDER BY id"))
            .bind(owner)
            .fetch_all(&self.db.pool)
            .await?;
        Ok(ids.into_iter().map(|i| i as u64).collect())
    }
}

fn upload_from_row(r: &sqlx::any::AnyRow) -> Result<Upload> {
    let key: Vec<u8> = r.try_get("okey")?;
    Ok(Upload {
        id: r.try_get("id")?,
        bucket: r.try_get("bucket")?,
        key: String::from_utf8(key).map_err(|_| MetaError::Other("stored key is not UTF-8".into()))?,
        created_ms: r.try_get("created")?,
        info: parse_info(&r.try_get::<String, _>("info")?)?,
    })
}

fn part_from_row(r: &sqlx::any::AnyRow) -> Result<Part> {
    Ok(Part {
        num: r.try_get::<i64, _>("num")? as u32,
        size: r.try_get::<i64, _>("size")? as u64,
        etag: r.try_get("etag")?,
        modified_ms: r.try_get("modified")?,
        info: parse_info(&r.try_get::<String, _>("info")?)?,
        slices: decode_slices(&r.try_get::<Vec<u8>, _>("slices")?)?,
    })
}

/// Range queries of one listing, on one connection.
pub struct Lister {
    conn: sqlx::pool::PoolConnection<sqlx::Any>,
    db: Db,
}

impl Lister {
    fn range_sql(inclusive: bool, bounded: bool, cols: &'static str) -> &'static str {
        match (cols, inclusive, bounded) {
            ("okey", true, true) => "SELECT okey FROM objects WHERE bucket = ? AND okey >= ? AND okey < ? ORDER BY okey LIMIT ?",
            ("okey", false, true) => "SELECT okey FROM objects WHERE bucket = ? AND okey > ? AND okey < ? ORDER BY okey LIMIT ?",
            ("okey", true, false) => "SELECT okey FROM objects WHERE bucket = ? AND okey >= ? ORDER BY okey LIMIT ?",
            ("okey", false, false) => "SELECT okey FROM objects WHERE bucket = ? AND okey > ? ORDER BY okey LIMIT ?",
            (_, true, true) => "SELECT okey, size, etag, modified, info, slices FROM objects WHERE bucket = ? AND okey >= ? AND okey < ? ORDER BY okey LIMIT ?",
            (_, false, true) => "SELECT okey, size, etag, modified, info, slices FROM objects WHERE bucket = ? AND okey > ? AND okey < ? ORDER BY okey LIMIT ?",
            (_, true, false) => "SELECT okey, size, etag, modified, info, slices FROM objects WHERE bucket = ? AND okey >= ? ORDER BY okey LIMIT ?",
            (_, false, false) => "SELECT okey, size, etag, modified, info, slices FROM objects WHERE bucket = ? AND okey > ? ORDER BY okey LIMIT ?",
        }
    }

    /// Objects with keys in `[from, to)` (`from` inclusive or not), in key order.
    pub async fn range(
        &mut self,
        bucket: &str,
        from: &[u8],
        inclusive: bool,
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Object>> {
        let sql = self.db.q(Lister::range_sql(inclusive, to.is_some(), "all"));
        let mut q = sqlx::query(sql).bind(bucket).bind(from);
        if let Some(to) = to {
            q = q.bind(to);
        }
        let rows = q.bind(limit as i64).fetch_all(&mut *self.conn).await?;
        rows.iter().map(object_from_row).collect()
    }

    /// The first key in `[from, to)`, reading the key only (an index seek).
    pub async fn next_key(
        &mut self,
        bucket: &str,
        from: &[u8],
        inclusive: bool,
        to: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>> {
        let sql = self.db.q(Lister::range_sql(inclusive, to.is_some(), "okey"));
        let mut q = sqlx::query_scalar(sql).bind(bucket).bind(from);
        if let Some(to) = to {
            q = q.bind(to);
        }
        Ok(q.bind(1i64).fetch_optional(&mut *self.conn).await?)
    }
}
