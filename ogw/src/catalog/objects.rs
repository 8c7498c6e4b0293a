//! Objects: read one, write one in place of the current (under its write condition),
//! delete one, and the range reads a listing is made of (`Lister`, on one connection).

use sqlx::Row;

use super::buckets::bucket_state;
use super::refs::{add_refs, drop_refs, lock_extents, new_rid, object_owner};
use super::versions::stored_version;
use super::{
    decode_named, encode_layout, info_json, key_from_row, layout_in_row, parse_info, Bucket, Catalog, CatalogError,
    Deleted, Layout, Object, ObjectInfo, Result, Versioning, WriteCondition,
};
use crate::checksum::{Algo, Checksum, Kind};
use crate::class::StorageClass;
use crate::db::{Backend, Db, Tx};

impl Catalog {
    pub async fn object(&self, bucket: &str, key: &str) -> Result<Option<Object>> {
        let row = sqlx::query(
            self.db
                .q("SELECT okey, size, etag, modified, info, slices, vid FROM objects WHERE bucket = ? AND okey = ?"),
        )
        .bind(bucket)
        .bind(key.as_bytes())
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(object_from_row).transpose()
    }

    /// The current object's ETag, encoded layout, row id and version, locked for the rest of
    /// `tx` (`FOR UPDATE`; SQLite's write lock already covers the whole transaction).
    pub(super) async fn current(&self, tx: &mut Tx, bucket: &str, key: &str) -> Result<Option<Current>> {
        let sql = match self.db.backend {
            Backend::Sqlite => {
                "SELECT etag, slices, rid, vid, info, modified, size FROM objects WHERE bucket = ? AND okey = ?"
            }
            _ => "SELECT etag, slices, rid, vid, info, modified, size FROM objects WHERE bucket = ? AND okey = ? FOR UPDATE",
        };
        let row = sqlx::query(self.db.q(sql)).bind(bucket).bind(key.as_bytes()).fetch_optional(&mut **tx).await?;
        row.as_ref().map(current_from_row).transpose()
    }

    /// What a write of `key` in `tx` starts from: the bucket's versioning, as
    /// `lock_bucket` returns it (and with its checks), and the current object, as
    /// `current` reads it. On SQLite, whose one writer makes both locks moot, one
    /// statement reads both.
    async fn bucket_and_current(
        &self,
        tx: &mut Tx,
        bucket: &str,
        expect: Option<&Bucket>,
        key: &str,
    ) -> Result<(Versioning, Option<Current>)> {
        if self.db.backend != Backend::Sqlite {
            let versioning = self.lock_bucket(tx, bucket, expect).await?;
            if versioning != Versioning::Off {
                self.lock_key(tx, bucket, key).await?;
            }
            return Ok((versioning, self.current(tx, bucket, key).await?));
        }
        let sql = "SELECT b.tenant, b.created, b.versioning, \
                   o.etag, o.slices, o.rid, o.vid, o.info, o.modified, o.size \
                   FROM buckets b LEFT JOIN objects o ON o.bucket = b.name AND o.okey = ? WHERE b.name = ?";
        let row = sqlx::query(sql).bind(key.as_bytes()).bind(bucket).fetch_optional(&mut **tx).await?;
        let Some(row) = row else { return Err(CatalogError::NoSuchBucket) };
        let versioning = bucket_state(&row, expect)?;
        // `etag` is never NULL in a row: NULL here is no row joined.
        let cur = match row.try_get::<Option<String>, _>("etag")? {
            Some(_) => Some(current_from_row(&row)?),
            None => None,
        };
        Ok((versioning, cur))
    }

    /// Whether an object is at `key` (a plain read: rows committed since `tx` began count).
    pub(super) async fn exists(&self, tx: &mut Tx, bucket: &str, key: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(self.db.q("SELECT COUNT(*) FROM objects WHERE bucket = ? AND okey = ?"))
            .bind(bucket)
            .bind(key.as_bytes())
            .fetch_one(&mut **tx)
            .await?;
        Ok(n > 0)
    }

    /// Drops the object row at `key`, if any, with its extent references; whether there
    /// was one.
    pub(super) async fn drop_current(&self, tx: &mut Tx, bucket: &str, key: &str) -> Result<bool> {
        let Some(cur) = self.current(tx, bucket, key).await? else { return Ok(false) };
        self.drop_row(tx, bucket, key, &cur).await?;
        Ok(true)
    }

    /// Drops the object row at `key`, `cur` as read (and locked) in `tx`, with its
    /// extent references.
    pub(super) async fn drop_row(&self, tx: &mut Tx, bucket: &str, key: &str, cur: &Current) -> Result<()> {
        // A row without an id was written by a gateway older than schema version 2
        // (`index_refs` gave ids to all rows there were then): it recorded no references.
        if let Some(rid) = &cur.rid {
            drop_refs(&self.db, tx, &object_owner(rid), &decode_named(&cur.slices)?).await?;
        }
        sqlx::query(self.db.q("DELETE FROM objects WHERE bucket = ? AND okey = ?"))
            .bind(bucket)
            .bind(key.as_bytes())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Writes `o` in `tx` as the current object at its key, if `cond` allows, and
    /// returns its version id. What it replaces depends on the bucket's versioning:
    /// unversioned, the current object (its slices are then named by nothing); enabled,
    /// nothing (the current version becomes noncurrent); suspended, the null version.
    pub(super) async fn replace_object(
        &self,
        tx: &mut Tx,
        bucket: &str,
        expect: Option<&Bucket>,
        o: &Object,
        cond: &WriteCondition,
    ) -> Result<Option<String>> {
        let (versioning, cur) = self.bucket_and_current(tx, bucket, expect, &o.key).await?;
        match cond.check(cur.as_ref().map(|c| c.etag.as_str())) {
            // A locking read that waited on a row another writer replaced finds no row
            // (PostgreSQL, READ COMMITTED): a fresh read tells a replaced object (its
            // ETag is not the one wanted) from an absent one.
            Err(CatalogError::NoSuchKey) if self.exists(tx, bucket, &o.key).await? => {
                return Err(CatalogError::PreconditionFailed)
            }
            r => r?,
        }
        if let Some(want) = &cond.append_to {
            let found = cur.as_ref().map(|c| (c.etag.clone(), c.modified, c.size));
            if found != *want {
                return Err(CatalogError::WrongOffset);
            }
        }
        let was = match &cur {
            Some(c) => decode_named(&c.slices)?,
            None => Vec::new(),
        };
        lock_extents(&self.db, tx, &was, o.layout.named()).await?;
        let version = self.make_room(tx, versioning, bucket, &o.key, cur.as_ref()).await?;
        let rid = new_rid();
        add_refs(&self.db, tx, &object_owner(&rid), o.layout.named()).await?;
        sqlx::query(self.db.q("INSERT INTO objects (bucket, okey, size, etag, modified, info, slices, rid, vid) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"))
        .bind(bucket)
        .bind(o.key.as_bytes())
        .bind(o.size as i64)
        .bind(&o.etag)
        .bind(o.modified_ms)
        .bind(info_json(&o.info))
        .bind(encode_layout(&o.layout))
        .bind(&rid)
        .bind(&version)
        .execute(&mut **tx)
        .await?;
        Ok(version)
    }

    /// Writes `o` under `bucket`, replacing what was there if `cond` allows; the
    /// replaced object's slices are then named by nothing. Atomic: of concurrent conditional
    /// writes to one key, exactly one meets the condition. Returns the new version's id.
    pub async fn put_object(&self, bucket: &str, o: &Object, cond: &WriteCondition) -> Result<Option<String>> {
        self.put(bucket, None, o, cond).await
    }

    /// As [`Catalog::put_object`], into the bucket `b` as the request found it: if it was
    /// deleted meanwhile (and perhaps made again, by anyone), `NoSuchBucket`.
    pub async fn put_object_in(&self, b: &Bucket, o: &Object, cond: &WriteCondition) -> Result<Option<String>> {
        self.put(&b.name, Some(b), o, cond).await
    }

    async fn put(
        &self,
        bucket: &str,
        expect: Option<&Bucket>,
        o: &Object,
        cond: &WriteCondition,
    ) -> Result<Option<String>> {
        let r = Catalog::retry(cond.is_conditional(), || async {
            if self.db.backend == Backend::Sqlite {
                // One COMMIT for the object writes that arrive together (`db::Group`).
                let mut m = self.db.join().await?;
                let r = self.replace_object(m.tx(), bucket, expect, o, cond).await;
                return m.finish(r).await;
            }
            let (_turn, mut tx) = self.db.begin().await?;
            let version = self.replace_object(&mut tx, bucket, expect, o, cond).await?;
            tx.commit().await?;
            Ok(version)
        })
        .await;
        if matches!(r, Err(CatalogError::NoSuchBucket)) {
            // `expect` may have come from `bucket_cached`: the next write reads afresh.
            self.forget_bucket(bucket);
        }
        r
    }

    /// Deletes a key, as the bucket's versioning says: unversioned, the current object
    /// goes (its slices are then named by nothing; nothing happens when it is absent);
    /// otherwise a delete marker becomes the latest version (suspended: the null one).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<Deleted> {
        self.delete_object_if(bucket, key, None).await
    }

    /// As [`Catalog::delete_object`], only if the current object is still `expect`
    /// (its ETag and modification time; else nothing happens and `found` is false): what
    /// lifecycle expiration deletes is the object it judged, never one written since.
    pub async fn delete_object_if(&self, bucket: &str, key: &str, expect: Option<(&str, i64)>) -> Result<Deleted> {
        Catalog::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            let versioning = self.lock_bucket(&mut tx, bucket, None).await?;
            if let Some((etag, modified)) = expect {
                if versioning != Versioning::Off {
                    self.lock_key(&mut tx, bucket, key).await?;
                }
                let cur = self.current(&mut tx, bucket, key).await?;
                if cur.is_none_or(|c| c.etag != etag || c.modified != modified) {
                    return Ok(Deleted::default());
                }
            }
            let d = if versioning == Versioning::Off {
                let found = self.drop_current(&mut tx, bucket, key).await?;
                Deleted { version: None, marker: false, found }
            } else {
                self.lock_key(&mut tx, bucket, key).await?;
                let cur = self.current(&mut tx, bucket, key).await?;
                let version = self.make_room(&mut tx, versioning, bucket, key, cur.as_ref()).await?;
                self.add_marker(&mut tx, bucket, key, version.as_deref()).await?;
                Deleted { version, marker: true, found: true }
            };
            tx.commit().await?;
            Ok(d)
        })
        .await
    }

    /// Changes the object at `key` of the bucket `b` (as the request found it) with
    /// `change`, leaving its bytes, ETag and modification time as they are: the current
    /// one, or the version `version`. `false` when there is no such object (or the
    /// version is a delete marker); `change`'s error leaves it as it was.
    pub async fn update_object_info(
        &self,
        b: &Bucket,
        key: &str,
        version: Option<&str>,
        change: impl Fn(&mut ObjectInfo) -> Result<()>,
    ) -> Result<bool> {
        Catalog::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            if self.lock_bucket(&mut tx, &b.name, Some(b)).await? != Versioning::Off {
                self.lock_key(&mut tx, &b.name, key).await?;
            }
            let cur = self.current(&mut tx, &b.name, key).await?;
            let (mut info, current) = match cur {
                Some(c) if version.is_none_or(|v| c.version.as_deref() == stored_version(v)) => (c.info, true),
                _ => match version {
                    Some(v) => match self.noncurrent(&mut tx, &b.name, key, v).await? {
                        Some(n) if !n.marker => (n.info, false),
                        _ => return Ok(false),
                    },
                    None => return Ok(false),
                },
            };
            change(&mut info)?;
            let q = if current {
                sqlx::query(self.db.q("UPDATE objects SET info = ? WHERE bucket = ? AND okey = ?"))
                    .bind(info_json(&info))
                    .bind(&b.name)
                    .bind(key.as_bytes())
            } else {
                sqlx::query(self.db.q("UPDATE versions SET info = ? WHERE bucket = ? AND okey = ? AND vid = ?"))
                    .bind(info_json(&info))
                    .bind(&b.name)
                    .bind(key.as_bytes())
                    .bind(version.unwrap_or_default())
            };
            q.execute(&mut *tx).await?;
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
pub(super) struct Current {
    pub etag: String,
    /// The `slices` column as stored (`decode_layout`).
    pub slices: Vec<u8>,
    pub rid: Option<String>,
    /// None: the null version.
    pub version: Option<String>,
    pub info: ObjectInfo,
    pub modified: i64,
    pub size: u64,
}

/// The object row a write replaces, from its columns (`etag`, `slices`, `rid`, `vid`,
/// `info`, `modified`, `size`).
fn current_from_row(r: &sqlx::any::AnyRow) -> Result<Current> {
    Ok(Current {
        etag: r.try_get("etag")?,
        slices: r.try_get("slices")?,
        rid: r.try_get("rid")?,
        version: r.try_get("vid")?,
        info: parse_info(&r.try_get::<String, _>("info")?)?,
        modified: r.try_get("modified")?,
        size: r.try_get::<i64, _>("size")? as u64,
    })
}

/// An object from its row; its layout only if the row has it (a listing's rows do
/// not: `Lister::range`).
fn object_from_row(r: &sqlx::any::AnyRow) -> Result<Object> {
    let size = r.try_get::<i64, _>("size")? as u64;
    let layout = layout_in_row(r, size)?;
    Ok(Object {
        key: key_from_row(r)?,
        size,
        etag: r.try_get("etag")?,
        modified_ms: r.try_get("modified")?,
        info: parse_info(&r.try_get::<String, _>("info")?)?,
        layout,
        version: r.try_get("vid")?,
    })
}

/// A page as SQLite's `json_group_array` gives it (`Lister`): an array of rows that
/// start with `hex(okey)`, sorted here by key (an aggregate's order is not promised).
fn parse_page<'a, R: serde::Deserialize<'a>, T>(
    page: &'a str,
    each: impl Fn(R) -> Result<T>,
    key: impl Fn(&T) -> &str,
) -> Result<Vec<T>> {
    let rows: Vec<R> = serde_json::from_str(page)
        .map_err(|e| CatalogError::Other(format!("a listing page from SQLite is not valid: {e}")))?;
    let mut out = rows.into_iter().map(each).collect::<Result<Vec<T>>>()?;
    out.sort_by(|a, b| key(a).as_bytes().cmp(key(b).as_bytes()));
    Ok(out)
}

/// A key as a page has it, `hex(okey)`.
fn key_of_hex(hex_key: &str) -> Result<String> {
    hex::decode(hex_key)
        .ok()
        .and_then(|k| String::from_utf8(k).ok())
        .ok_or_else(|| CatalogError::Other("stored key is not UTF-8".into()))
}

/// What a listing of current objects (ListObjects) prints of one: no layout, and of
/// its metadata only the storage class and checksum. A page of these reads three
/// fields of each row's `info` instead of parsing it whole (BENCHMARKS.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    pub modified_ms: i64,
    pub storage_class: Option<StorageClass>,
    pub checksum: Option<Algo>,
    pub checksum_type: Option<Kind>,
}

/// The fields of a row's `info` that a `Listed` keeps (the others are skipped unread).
#[derive(serde::Deserialize)]
struct ListedInfo {
    storage_class: Option<StorageClass>,
    checksum: Option<Checksum>,
    checksum_type: Option<Kind>,
}

fn listed_from_row(r: &sqlx::any::AnyRow) -> Result<Listed> {
    let info: ListedInfo = serde_json::from_str(&r.try_get::<String, _>("info")?)
        .map_err(|e| CatalogError::Other(format!("stored object info is not valid: {e}")))?;
    Ok(Listed {
        key: key_from_row(r)?,
        size: r.try_get::<i64, _>("size")? as u64,
        etag: r.try_get("etag")?,
        modified_ms: r.try_get("modified")?,
        storage_class: info.storage_class,
        checksum: info.checksum.map(|c| c.algo),
        checksum_type: info.checksum_type,
    })
}

/// The four queries of a range of keys around one select: keys after or from a key,
/// below a bound or not, in key order, at most a limit. Indexed by `range_index`.
macro_rules! range_sql {
    ($select:literal $(, $close:literal)?) => {
        [
            concat!($select, " FROM objects WHERE bucket = ? AND okey > ? ORDER BY okey LIMIT ?" $(, $close)?),
            concat!($select, " FROM objects WHERE bucket = ? AND okey >= ? ORDER BY okey LIMIT ?" $(, $close)?),
            concat!($select, " FROM objects WHERE bucket = ? AND okey > ? AND okey < ? ORDER BY okey LIMIT ?" $(, $close)?),
            concat!($select, " FROM objects WHERE bucket = ? AND okey >= ? AND okey < ? ORDER BY okey LIMIT ?" $(, $close)?),
        ]
    };
}

fn range_index(inclusive: bool, bounded: bool) -> usize {
    usize::from(inclusive) + 2 * usize::from(bounded)
}

/// The first key of a range (an index seek).
const KEY_SQL: [&str; 4] = range_sql!("SELECT okey");
/// Whole objects but their layouts, a row each.
const OBJECTS_SQL: [&str; 4] = range_sql!("SELECT okey, size, etag, modified, info, vid");
/// Whole objects but their layouts, as one JSON array that SQLite builds: sqlx hands
/// each row from its SQLite thread to the caller's with a channel message and a
/// wake-up, and a page of 1,000 rows spent most of its time there (BENCHMARKS.md).
const OBJECTS_PAGE_SQL: [&str; 4] = range_sql!(
    "SELECT json_group_array(json_array(hex(okey), size, etag, modified, json(info), vid)) FROM (SELECT okey, size, etag, modified, info, vid",
    ")"
);
/// `Listed` rows, a row each.
const LISTED_SQL: [&str; 4] = range_sql!("SELECT okey, size, etag, modified, info");
/// `Listed` rows as one JSON array, the three fields taken out of `info` by SQLite.
const LISTED_PAGE_SQL: [&str; 4] = range_sql!(
    "SELECT json_group_array(json_array(hex(okey), size, etag, modified, info ->> '$.storage_class', info ->> '$.checksum[0]', info ->> '$.checksum_type')) FROM (SELECT okey, size, etag, modified, info",
    ")"
);

/// Range queries of one listing, on one connection.
pub struct Lister {
    pub(super) conn: sqlx::pool::PoolConnection<sqlx::Any>,
    db: Db,
}

impl Lister {
    /// Objects with keys in `[from, to)` (`from` inclusive or not), in key order, with
    /// their metadata but not their layouts (`Object::layout` is empty slices).
    pub async fn range(
        &mut self,
        bucket: &str,
        from: &[u8],
        inclusive: bool,
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Object>> {
        let i = range_index(inclusive, to.is_some());
        if self.db.backend == Backend::Sqlite {
            type Row = (String, i64, String, i64, ObjectInfo, Option<String>);
            let page = self.page(OBJECTS_PAGE_SQL[i], bucket, from, to, limit).await?;
            return parse_page(
                &page,
                |(hex_key, size, etag, modified_ms, info, version): Row| {
                    let key = key_of_hex(&hex_key)?;
                    Ok(Object { key, size: size as u64, etag, modified_ms, info, layout: Layout::default(), version })
                },
                |o| &o.key,
            );
        }
        let rows = self.rows(OBJECTS_SQL[i], bucket, from, to, limit).await?;
        rows.iter().map(object_from_row).collect()
    }

    /// What a listing prints of the objects with keys in `[from, to)`, in key order.
    pub async fn listed(
        &mut self,
        bucket: &str,
        from: &[u8],
        inclusive: bool,
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        let i = range_index(inclusive, to.is_some());
        if self.db.backend == Backend::Sqlite {
            type Row<'a> = (&'a str, i64, String, i64, Option<StorageClass>, Option<Algo>, Option<Kind>);
            let page = self.page(LISTED_PAGE_SQL[i], bucket, from, to, limit).await?;
            return parse_page(
                &page,
                |(hex_key, size, etag, modified_ms, storage_class, checksum, checksum_type): Row| {
                    let key = key_of_hex(hex_key)?;
                    Ok(Listed { key, size: size as u64, etag, modified_ms, storage_class, checksum, checksum_type })
                },
                |o| &o.key,
            );
        }
        let rows = self.rows(LISTED_SQL[i], bucket, from, to, limit).await?;
        rows.iter().map(listed_from_row).collect()
    }

    /// A range query's rows (`range_sql!`).
    async fn rows(
        &mut self,
        sql: &'static str,
        bucket: &str,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<sqlx::any::AnyRow>> {
        let mut q = sqlx::query(self.db.q(sql)).bind(bucket).bind(from);
        if let Some(to) = to {
            q = q.bind(to);
        }
        Ok(q.bind(limit as i64).fetch_all(&mut *self.conn).await?)
    }

    /// A range query that SQLite answers as one JSON array (`*_PAGE_SQL`).
    async fn page(
        &mut self,
        sql: &'static str,
        bucket: &str,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<String> {
        let mut q = sqlx::query_scalar::<_, String>(sql).bind(bucket).bind(from);
        if let Some(to) = to {
            q = q.bind(to);
        }
        Ok(q.bind(limit as i64).fetch_one(&mut *self.conn).await?)
    }

    /// The first key in `[from, to)`, reading the key only (an index seek).
    pub async fn next_key(
        &mut self,
        bucket: &str,
        from: &[u8],
        inclusive: bool,
        to: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>> {
        let sql = self.db.q(KEY_SQL[range_index(inclusive, to.is_some())]);
        let mut q = sqlx::query_scalar(sql).bind(bucket).bind(from);
        if let Some(to) = to {
            q = q.bind(to);
        }
        Ok(q.bind(1i64).fetch_optional(&mut *self.conn).await?)
    }
}
