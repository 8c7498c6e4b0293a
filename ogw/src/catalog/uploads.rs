//! Multipart uploads: create, find, list, store a part (replacing an earlier one of the
//! same number), complete into an object, abort. The slices of parts that are replaced,
//! left out of the completed object or aborted lose their references in the same transaction.

use sqlx::Row;

use super::refs::{add_refs, drop_refs, lock_extents, part_owner};
use super::{
    decode_slices, encode_slices, info_json, key_from_row, parse_info, Bucket, Catalog, CatalogError, Object,
    ObjectInfo, Part, Result, Upload, WriteCondition,
};
use crate::db::{now_ms, Backend, Tx};

impl Catalog {
    pub async fn create_upload(&self, bucket: &str, key: &str, info: &ObjectInfo) -> Result<String> {
        self.new_upload(bucket, None, key, info).await
    }

    /// As [`Catalog::create_upload`], in the bucket `b` as the request found it.
    pub async fn create_upload_in(&self, b: &Bucket, key: &str, info: &ObjectInfo) -> Result<String> {
        self.new_upload(&b.name, Some(b), key, info).await
    }

    async fn new_upload(&self, bucket: &str, expect: Option<&Bucket>, key: &str, info: &ObjectInfo) -> Result<String> {
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        let id = hex::encode(id);
        let (_turn, mut tx) = self.db.begin().await?;
        self.lock_bucket(&mut tx, bucket, expect).await?;
        sqlx::query(self.db.q("INSERT INTO uploads (id, bucket, okey, created, info) VALUES (?, ?, ?, ?, ?)"))
            .bind(&id)
            .bind(bucket)
            .bind(key.as_bytes())
            .bind(now_ms())
            .bind(info_json(info))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<Upload> {
        let row = sqlx::query(self.db.q("SELECT id, bucket, okey, created, info FROM uploads WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or(CatalogError::NoSuchUpload)?;
        let u = upload_from_row(&row)?;
        if u.bucket != bucket || u.key != key {
            return Err(CatalogError::NoSuchUpload);
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

    /// Checks that `upload` exists and locks its row for the rest of `tx`: shared for a
    /// part's write, exclusive for completing (so no part is written into an upload
    /// being completed or aborted, where its references would be left behind). SQLite's
    /// writer lock covers the whole transaction.
    async fn require_upload(&self, tx: &mut Tx, upload: &str, exclusive: bool) -> Result<()> {
        let sql = match (self.db.backend, exclusive) {
            (Backend::Sqlite, _) => "SELECT id FROM uploads WHERE id = ?",
            (_, true) => "SELECT id FROM uploads WHERE id = ? FOR UPDATE",
            (Backend::MySql, false) => "SELECT id FROM uploads WHERE id = ? LOCK IN SHARE MODE",
            (_, false) => "SELECT id FROM uploads WHERE id = ? FOR SHARE",
        };
        let found: Option<String> = sqlx::query_scalar(self.db.q(sql)).bind(upload).fetch_optional(&mut **tx).await?;
        found.map(|_| ()).ok_or(CatalogError::NoSuchUpload)
    }

    /// A locking read where the backend has one (SQLite's writer lock covers all).
    fn locking(&self, sqlite: &'static str, locked: &'static str) -> &'static str {
        self.db.q(if self.db.backend == Backend::Sqlite { sqlite } else { locked })
    }

    /// Stores a part, replacing an earlier upload of the same number (whose slices
    /// are named by nothing).
    pub async fn put_part(&self, upload: &str, p: &Part) -> Result<()> {
        Catalog::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            self.require_upload(&mut tx, upload, false).await?;
            let old = sqlx::query(self.locking(
                "SELECT slices FROM parts WHERE upload = ? AND num = ?",
                "SELECT slices FROM parts WHERE upload = ? AND num = ? FOR UPDATE",
            ))
            .bind(upload)
            .bind(p.num as i64)
            .fetch_optional(&mut *tx)
            .await?;
            let owner = part_owner(upload, p.num);
            let was = match &old {
                Some(r) => decode_slices(&r.try_get::<Vec<u8>, _>("slices")?)?,
                None => Vec::new(),
            };
            lock_extents(&self.db, &mut tx, &was, &p.slices).await?;
            if old.is_some() {
                drop_refs(&self.db, &mut tx, &owner, &was).await?;
                sqlx::query(self.db.q("DELETE FROM parts WHERE upload = ? AND num = ?"))
                    .bind(upload)
                    .bind(p.num as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            add_refs(&self.db, &mut tx, &owner, &p.slices).await?;
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
    /// the caller against `parts()`), the upload and all its part records go (the
    /// slices of parts left out are then named by nothing). One transaction.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        upload: &str,
        o: &Object,
        cond: &WriteCondition,
    ) -> Result<Option<String>> {
        Catalog::retry(cond.is_conditional(), || async {
            let (_turn, mut tx) = self.db.begin().await?;
            self.require_upload(&mut tx, upload, true).await?;
            let version = self.replace_object(&mut tx, bucket, None, o, cond).await?;
            self.drop_parts(&mut tx, upload).await?;
            sqlx::query(self.db.q("DELETE FROM uploads WHERE id = ?")).bind(upload).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(version)
        })
        .await
    }

    /// Deletes an upload's part records and their extent references (the completed
    /// object names the slices of the parts it kept itself, added first).
    pub(super) async fn drop_parts(&self, tx: &mut Tx, upload: &str) -> Result<()> {
        // Locked: GC may be switching a part to compacted slices right now.
        let rows = sqlx::query(self.locking(
            "SELECT num, slices FROM parts WHERE upload = ?",
            "SELECT num, slices FROM parts WHERE upload = ? FOR UPDATE",
        ))
        .bind(upload)
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let num: i64 = r.try_get("num")?;
            let s: Vec<u8> = r.try_get("slices")?;
            drop_refs(&self.db, tx, &part_owner(upload, num as u32), &decode_slices(&s)?).await?;
        }
        sqlx::query(self.db.q("DELETE FROM parts WHERE upload = ?")).bind(upload).execute(&mut **tx).await?;
        Ok(())
    }

    /// Drops an upload; its parts' slices are then named by nothing.
    pub async fn abort_upload(&self, upload: &str) -> Result<()> {
        let (_turn, mut tx) = self.db.begin().await?;
        let n = sqlx::query(self.db.q("DELETE FROM uploads WHERE id = ?")).bind(upload).execute(&mut *tx).await?;
        if n.rows_affected() == 0 {
            return Err(CatalogError::NoSuchUpload);
        }
        self.drop_parts(&mut tx, upload).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn upload_from_row(r: &sqlx::any::AnyRow) -> Result<Upload> {
    Ok(Upload {
        id: r.try_get("id")?,
        bucket: r.try_get("bucket")?,
        key: key_from_row(r)?,
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
