//! Objects: read one, write one in place of the current (under its write condition),
//! delete one, and the range reads a listing is made of (`Lister`, on one connection).

use sqlx::Row;

use super::refs::{add_refs, drop_refs, lock_extents, new_rid, object_owner};
use super::{
    decode_slices, encode_slices, info_json, key_from_row, parse_info, Bucket, Catalog, CatalogError, Object,
    ObjectInfo, Result, WriteCondition,
};
use crate::db::{Backend, Db, Tx};

impl Catalog {
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

    /// The current object's ETag, encoded slices and row id, locked for the rest of
    /// `tx` (`FOR UPDATE`; SQLite's write lock already covers the whole transaction).
    async fn current(&self, tx: &mut Tx, bucket: &str, key: &str) -> Result<Option<Current>> {
        let sql = match self.db.backend {
            Backend::Sqlite => "SELECT etag, slices, rid FROM objects WHERE bucket = ? AND okey = ?",
            _ => "SELECT etag, slices, rid FROM objects WHERE bucket = ? AND okey = ? FOR UPDATE",
        };
        let row = sqlx::query(self.db.q(sql)).bind(bucket).bind(key.as_bytes()).fetch_optional(&mut **tx).await?;
        Ok(match row {
            Some(r) => Some(Current { etag: r.try_get("etag")?, slices: r.try_get("slices")?, rid: r.try_get("rid")? }),
            None => None,
        })
    }

    /// Whether an object is at `key` (a plain read: rows committed since `tx` began count).
    async fn exists(&self, tx: &mut Tx, bucket: &str, key: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(self.db.q("SELECT COUNT(*) FROM objects WHERE bucket = ? AND okey = ?"))
            .bind(bucket)
            .bind(key.as_bytes())
            .fetch_one(&mut **tx)
            .await?;
        Ok(n > 0)
    }

    /// Drops the object row at `key`, if any, with its extent references; whether there
    /// was one.
    async fn drop_current(&self, tx: &mut Tx, bucket: &str, key: &str) -> Result<bool> {
        let Some(cur) = self.current(tx, bucket, key).await? else { return Ok(false) };
        let old = cur.slices;
        // A row without an id was written by a gateway older than schema version 2
        // (`index_refs` gave ids to all rows there were then): it recorded no references.
        if let Some(rid) = cur.rid {
            drop_refs(&self.db, tx, &object_owner(&rid), &decode_slices(&old)?).await?;
        }
        sqlx::query(self.db.q("DELETE FROM objects WHERE bucket = ? AND okey = ?"))
            .bind(bucket)
            .bind(key.as_bytes())
            .execute(&mut **tx)
            .await?;
        Ok(true)
    }

    /// Writes `o` in `tx` in place of the current object at its key, if `cond` allows;
    /// the replaced object's slices are then named by nothing.
    pub(super) async fn replace_object(
        &self,
        tx: &mut Tx,
        bucket: &str,
        expect: Option<&Bucket>,
        o: &Object,
        cond: &WriteCondition,
    ) -> Result<()> {
        self.lock_bucket(tx, bucket, expect).await?;
        let cur = self.current(tx, bucket, &o.key).await?;
        match cond.check(cur.as_ref().map(|c| c.etag.as_str())) {
            // A locking read that waited on a row another writer replaced finds no row
            // (PostgreSQL, READ COMMITTED): a fresh read tells a replaced object (its
            // ETag is not the one wanted) from an absent one.
            Err(CatalogError::NoSuchKey) if self.exists(tx, bucket, &o.key).await? => {
                return Err(CatalogError::PreconditionFailed)
            }
            r => r?,
        }
        let was = match &cur {
            Some(c) => decode_slices(&c.slices)?,
            None => Vec::new(),
        };
        lock_extents(&self.db, tx, &was, &o.slices).await?;
        if cur.is_some() {
            self.drop_current(tx, bucket, &o.key).await?;
        }
        let rid = new_rid();
        add_refs(&self.db, tx, &object_owner(&rid), &o.slices).await?;
        sqlx::query(self.db.q(
            "INSERT INTO objects (bucket, okey, size, etag, modified, info, slices, rid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(bucket)
        .bind(o.key.as_bytes())
        .bind(o.size as i64)
        .bind(&o.etag)
        .bind(o.modified_ms)
        .bind(info_json(&o.info))
        .bind(encode_slices(&o.slices))
        .bind(&rid)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Writes `o` under `bucket`, replacing what was there if `cond` allows; the
    /// replaced object's slices are then named by nothing. Atomic: of concurrent conditional
    /// writes to one key, exactly one meets the condition.
    pub async fn put_object(&self, bucket: &str, o: &Object, cond: &WriteCondition) -> Result<()> {
        self.put(bucket, None, o, cond).await
    }

    /// As [`Catalog::put_object`], into the bucket `b` as the request found it: if it was
    /// deleted meanwhile (and perhaps made again, by anyone), `NoSuchBucket`.
    pub async fn put_object_in(&self, b: &Bucket, o: &Object, cond: &WriteCondition) -> Result<()> {
        self.put(&b.name, Some(b), o, cond).await
    }

    async fn put(&self, bucket: &str, expect: Option<&Bucket>, o: &Object, cond: &WriteCondition) -> Result<()> {
        Catalog::retry(cond.is_conditional(), || async {
            let (_turn, mut tx) = self.db.begin().await?;
            self.replace_object(&mut tx, bucket, expect, o, cond).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Deletes a key (nothing happens when it is absent); its slices are then named by
    /// nothing.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool> {
        Catalog::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            let dropped = self.drop_current(&mut tx, bucket, key).await?;
            tx.commit().await?;
            Ok(dropped)
        })
        .await
    }

    /// Changes the object at `key` of the bucket `b` (as the request found it) with
    /// `change`, leaving its bytes, ETag and modification time as they are; `false` when
    /// there is no such object.
    pub async fn update_object_info(&self, b: &Bucket, key: &str, change: impl Fn(&mut ObjectInfo)) -> Result<bool> {
        Catalog::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            self.lock_bucket(&mut tx, &b.name, Some(b)).await?;
            let sql = match self.db.backend {
                Backend::Sqlite => "SELECT info FROM objects WHERE bucket = ? AND okey = ?",
                _ => "SELECT info FROM objects WHERE bucket = ? AND okey = ? FOR UPDATE",
            };
            let Some(row) =
                sqlx::query(self.db.q(sql)).bind(&b.name).bind(key.as_bytes()).fetch_optional(&mut *tx).await?
            else {
                return Ok(false);
            };
            let mut info = parse_info(&row.try_get::<String, _>("info")?)?;
            change(&mut info);
            sqlx::query(self.db.q("UPDATE objects SET info = ? WHERE bucket = ? AND okey = ?"))
                .bind(info_json(&info))
                .bind(&b.name)
                .bind(key.as_bytes())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// One connection for the many small queries of a listing page.
    pub async fn lister(&self) -> Result<Lister> {
        Ok(Lister { conn: self.db.pool.acquire().await?, db: self.db.clone() })
    }
}

/// The object row a write replaces or drops.
struct Current {
    etag: String,
    slices: Vec<u8>,
    rid: Option<String>,
}

fn object_from_row(r: &sqlx::any::AnyRow) -> Result<Object> {
    Ok(Object {
        key: key_from_row(r)?,
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
