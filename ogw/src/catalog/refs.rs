//! Which rows name bytes of which extent, kept in the transaction that writes or drops
//! the rows: `extent_refs` (one row per naming row and extent, with the bytes it names)
//! and `extents` (per extent, the bytes named in all: `live`, and GC's `doomed`).
//!
//! **Invariant (no lost bytes)**: an extent is doomed only by a transaction that finds
//! its `live` at 0 (`catalog/gc.rs`, `doom`), and a row naming an extent is written
//! only by a transaction that finds the extent not doomed (`add_refs`). Both write the
//! extent's `extents` row first, so the database orders them (a row lock on PostgreSQL
//! and MySQL, the one writer on SQLite): either the doom comes first and the write is
//! refused with `Doomed`, or the write comes first and the doom finds `live > 0`. GC
//! deletes only doomed extents, so no row ever names a deleted extent.
//!
//! `live` counts a byte once per row that names it (a copy names its source's slices
//! again); it is 0 exactly when no row names the extent.

use std::collections::BTreeMap;

use client::Slice;
use proto::ExtentId;
use sqlx::Row;

use super::{decode_named, decode_slices, CatalogError, Result};
use crate::db::{Backend, Db, Tx};

/// The owner name of an object row with id `rid`.
pub(super) fn object_owner(rid: &str) -> String {
    format!("o:{rid}")
}

/// The owner name of part `num` of upload `upload`.
pub(super) fn part_owner(upload: &str, num: u32) -> String {
    format!("p:{upload}:{num}")
}

/// A new object row id: 16 random bytes, hex.
pub(super) fn new_rid() -> String {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    hex::encode(id)
}

/// Bytes named per extent, in ascending extent order, the order `add_refs` and
/// `drop_refs` each lock `extents` rows in. (A transaction that drops some and adds
/// others can still wait in a cycle with another; the database breaks it and the
/// transaction is retried, `Catalog::retry`.)
fn per_extent(slices: &[Slice]) -> BTreeMap<ExtentId, i64> {
    let mut m = BTreeMap::new();
    for s in slices {
        *m.entry(s.extent).or_insert(0) += s.len as i64;
    }
    m
}

/// Locks the `extents` rows of every extent in `a` and `b` that has one, in ascending
/// order, before a transaction drops references to some and adds others: without it
/// two such transactions could each hold a row the other wants next.
pub(super) async fn lock_extents(db: &Db, tx: &mut Tx, a: &[Slice], b: &[Slice]) -> Result<()> {
    if db.backend == Backend::Sqlite {
        return Ok(()); // one writer at a time
    }
    let ids: std::collections::BTreeSet<i64> = a.iter().chain(b).map(|s| s.extent.0 as i64).collect();
    for id in ids {
        sqlx::query(db.q("SELECT id FROM extents WHERE id = ? FOR UPDATE")).bind(id).fetch_optional(&mut **tx).await?;
    }
    Ok(())
}

/// Records in `tx` that `owner` names `slices`. Refused with `Doomed` when GC has doomed
/// one of their extents: the caller's transaction must then not commit its row.
pub(super) async fn add_refs(db: &Db, tx: &mut Tx, owner: &str, slices: &[Slice]) -> Result<()> {
    for (extent, bytes) in per_extent(slices) {
        let id = extent.0 as i64;
        let doomed: Option<i64> = match db.backend {
            // The row as the upsert left it: written (and on PostgreSQL locked) by it,
            // so a doom committed while the upsert waited for the row is seen.
            Backend::Sqlite | Backend::Postgres => {
                let upsert = "INSERT INTO extents (id, live) VALUES (?, ?) \
                              ON CONFLICT (id) DO UPDATE SET live = extents.live + excluded.live RETURNING doomed";
                sqlx::query_scalar(db.q(upsert)).bind(id).bind(bytes).fetch_one(&mut **tx).await?
            }
            Backend::MySql => {
                let upsert =
                    "INSERT INTO extents (id, live) VALUES (?, ?) ON DUPLICATE KEY UPDATE live = live + VALUES(live)";
                sqlx::query(upsert).bind(id).bind(bytes).execute(&mut **tx).await?;
                // A locking read: MySQL's plain SELECT would read the transaction's
                // snapshot, which may predate a doom committed while the upsert waited
                // for the row.
                sqlx::query_scalar("SELECT doomed FROM extents WHERE id = ? FOR UPDATE")
                    .bind(id)
                    .fetch_one(&mut **tx)
                    .await?
            }
        };
        if doomed.is_some() {
            return Err(CatalogError::Doomed(extent));
        }
        sqlx::query(db.q("INSERT INTO extent_refs (extent, owner, bytes) VALUES (?, ?, ?)"))
            .bind(id)
            .bind(owner)
            .bind(bytes)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Records in `tx` that `owner` no longer names `slices` (its row is being deleted or
/// replaced). Only references that are there are taken off `live`, so a drop that lost
/// a race with another drop of the same row subtracts nothing twice.
pub(super) async fn drop_refs(db: &Db, tx: &mut Tx, owner: &str, slices: &[Slice]) -> Result<()> {
    for (extent, bytes) in per_extent(slices) {
        let id = extent.0 as i64;
        let gone = sqlx::query(db.q("DELETE FROM extent_refs WHERE extent = ? AND owner = ?"))
            .bind(id)
            .bind(owner)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if gone == 0 {
            tracing::warn!("{owner} named extent {extent} without a reference; leaving its live bytes as they are");
            continue;
        }
        sqlx::query(db.q("UPDATE extents SET live = live - ? WHERE id = ?"))
            .bind(bytes)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Schema version 2 on a version 1 database: gives every object row an id, records what
/// every object and part names, and records version 2, in one transaction that first
/// locks the version rows, so two processes upgrading at once index once.
pub async fn index_refs(db: &Db) -> Result<()> {
    let (_turn, mut tx) = db.begin().await?;
    let lock = match db.backend {
        Backend::Sqlite => "SELECT version FROM schema_version",
        _ => "SELECT version FROM schema_version FOR UPDATE",
    };
    let versions: Vec<i64> = sqlx::query_scalar(db.q(lock)).fetch_all(&mut *tx).await?;
    if versions.iter().any(|&v| v >= 2) {
        return Ok(());
    }
    let objects =
        sqlx::query(db.q("SELECT bucket, okey, slices FROM objects WHERE rid IS NULL")).fetch_all(&mut *tx).await?;
    for r in &objects {
        let bucket: String = r.try_get("bucket")?;
        let key: Vec<u8> = r.try_get("okey")?;
        let slices = decode_slices(&r.try_get::<Vec<u8>, _>("slices")?)?;
        let rid = new_rid();
        sqlx::query(db.q("UPDATE objects SET rid = ? WHERE bucket = ? AND okey = ? AND rid IS NULL"))
            .bind(&rid)
            .bind(&bucket)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        add_refs(db, &mut tx, &object_owner(&rid), &slices).await?;
    }
    let parts = sqlx::query(db.q("SELECT upload, num, slices FROM parts")).fetch_all(&mut *tx).await?;
    for r in &parts {
        let upload: String = r.try_get("upload")?;
        let num: i64 = r.try_get("num")?;
        let slices = decode_slices(&r.try_get::<Vec<u8>, _>("slices")?)?;
        add_refs(db, &mut tx, &part_owner(&upload, num as u32), &slices).await?;
    }
    sqlx::query(db.q("INSERT INTO schema_version (version) VALUES (2)")).execute(&mut *tx).await?;
    tx.commit().await?;
    if !objects.is_empty() || !parts.is_empty() {
        tracing::info!("indexed the extents named by {} objects and {} parts", objects.len(), parts.len());
    }
    Ok(())
}

/// What the references say, recomputed from the rows themselves, against what
/// `extents` holds: the extents whose `live` differs, as (extent, recorded, from rows).
/// Empty when the bookkeeping is right (tests and `gc audit` check it).
pub async fn audit_refs(db: &Db) -> Result<Vec<(ExtentId, i64, i64)>> {
    audit_refs_with(db, &mut |_, _| {}).await
}

/// As [`audit_refs`], telling `progress` (rows read, rows in all) as it reads the rows:
/// they are streamed, a row at a time, not loaded at once.
pub async fn audit_refs_with(db: &Db, progress: &mut dyn FnMut(u64, u64)) -> Result<Vec<(ExtentId, i64, i64)>> {
    use futures::TryStreamExt;
    const TABLES: [&str; 3] = ["objects", "parts", "versions"];
    let mut total = 0u64;
    for t in TABLES {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}"))).fetch_one(&db.pool).await?;
        total += n as u64;
    }
    let mut from_rows: BTreeMap<ExtentId, i64> = BTreeMap::new();
    let mut read = 0u64;
    for t in TABLES {
        let sql = format!("SELECT slices FROM {t}");
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&db.pool);
        while let Some(r) = rows.try_next().await? {
            for (e, b) in per_extent(&decode_named(&r.try_get::<Vec<u8>, _>("slices")?)?) {
                *from_rows.entry(e).or_insert(0) += b;
            }
            read += 1;
            // Rows written since the count was taken: the total grows with them.
            total = total.max(read);
            if read.is_multiple_of(1024) && read < total {
                progress(read, total);
            }
        }
    }
    progress(read, total);
    let mut recorded: BTreeMap<ExtentId, i64> = BTreeMap::new();
    for r in sqlx::query(db.q("SELECT id, live FROM extents")).fetch_all(&db.pool).await? {
        recorded.insert(ExtentId(r.try_get::<i64, _>("id")? as u64), r.try_get("live")?);
    }
    let mut wrong = Vec::new();
    let ids: std::collections::BTreeSet<ExtentId> = from_rows.keys().chain(recorded.keys()).copied().collect();
    for e in ids {
        let (rec, rows) = (recorded.get(&e).copied().unwrap_or(0), from_rows.get(&e).copied().unwrap_or(0));
        if rec != rows {
            wrong.push((e, rec, rows));
        }
    }
    Ok(wrong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_summed_per_extent_in_extent_order() {
        let s = |e: u64, len: u32| Slice { extent: ExtentId(e), offset: 0, len, crc: 0 };
        let m = per_extent(&[s(9, 10), s(2, 5), s(9, 1), s(4, 7)]);
        assert_eq!(m.into_iter().collect::<Vec<_>>(), vec![(ExtentId(2), 5), (ExtentId(4), 7), (ExtentId(9), 11)]);
    }
}
