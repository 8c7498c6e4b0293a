//! What the GC service asks of the catalog (`gc::Catalog`), and the writers' low-water
//! marks the gateways publish for it. Dooming is where GC meets the writers: see the
//! invariant in `refs.rs`.

use std::collections::HashMap;
use std::time::Duration;

use client::Slice;
use gc::{Due, GcError, Named, Status, Transition};
use proto::meta::{Policy, StreamId};
use proto::ExtentId;
use sqlx::Row;

use super::refs::{add_refs, drop_refs, lock_extents};
use super::{decode_named, encode_slices, info_json, is_kept, parse_info, Catalog, CatalogError, Result};
use crate::class::StorageClass;
use crate::db::{now_ms, Backend};

/// The one row of the `gc` table.
const GC_ROW: i64 = 1;

impl Catalog {
    /// Publishes `name`'s low-water mark: every write the gateway has in flight names
    /// only extents at or above `low`.
    pub async fn set_low_water(&self, name: &str, low: ExtentId) -> Result<()> {
        let sql = match self.db.backend {
            Backend::MySql => {
                "INSERT INTO writers (name, low_water, updated) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE low_water = VALUES(low_water), updated = VALUES(updated)"
            }
            _ => {
                "INSERT INTO writers (name, low_water, updated) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET low_water = excluded.low_water, updated = excluded.updated"
            }
        };
        let (_turn, mut tx) = self.db.begin().await?;
        sqlx::query(self.db.q(sql)).bind(name).bind(low.0 as i64).bind(now_ms()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The extents GC doomed and has not deleted yet.
    pub async fn doomed_extents(&self) -> Result<Vec<(ExtentId, i64)>> {
        let rows =
            sqlx::query(self.db.q("SELECT id, doomed FROM extents WHERE doomed IS NOT NULL AND deleted IS NULL"))
                .fetch_all(&self.db.pool)
                .await?;
        rows.iter().map(|r| Ok((ExtentId(r.try_get::<i64, _>("id")? as u64), r.try_get::<i64, _>("doomed")?))).collect()
    }

    /// The status GC saved after its last pass.
    pub async fn gc_status(&self) -> Result<Option<Status>> {
        let s: Option<String> = sqlx::query_scalar(self.db.q("SELECT status FROM gc WHERE id = ?"))
            .bind(GC_ROW)
            .fetch_optional(&self.db.pool)
            .await?;
        match s {
            Some(s) if !s.is_empty() => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| CatalogError::Other(format!("stored GC status is not valid: {e}"))),
            _ => Ok(None),
        }
    }
}

/// The catalog as GC sees it.
#[derive(Clone)]
pub struct GcCatalog(pub Catalog);

fn err(e: CatalogError) -> GcError {
    GcError::Catalog(e.to_string())
}

fn db_err(e: sqlx::Error) -> GcError {
    GcError::Catalog(e.to_string())
}

impl GcCatalog {
    async fn lease(&self, holder: &str, ttl: Duration) -> Result<bool> {
        let db = &self.0.db;
        // Rows a gateway older than schema version 2 wrote name extents without
        // references: collecting now could delete their bytes.
        let unindexed: i64 =
            sqlx::query_scalar(db.q("SELECT COUNT(*) FROM objects WHERE rid IS NULL")).fetch_one(&db.pool).await?;
        if unindexed > 0 {
            return Err(CatalogError::Other(format!(
                "{unindexed} objects were written by a gateway older than this GC (no row id): \
                 stop every old gateway; GC collects nothing until they are gone"
            )));
        }
        let now = now_ms();
        let until = now + ttl.as_millis() as i64;
        let (_turn, mut tx) = db.begin().await?;
        let taken =
            sqlx::query(db.q("UPDATE gc SET holder = ?, until_ms = ? WHERE id = ? AND (holder = ? OR until_ms < ?)"))
                .bind(holder)
                .bind(until)
                .bind(GC_ROW)
                .bind(holder)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        let taken = taken || {
            let exists: i64 = sqlx::query_scalar(db.q("SELECT COUNT(*) FROM gc WHERE id = ?"))
                .bind(GC_ROW)
                .fetch_one(&mut *tx)
                .await?;
            exists == 0 && {
                sqlx::query(db.q("INSERT INTO gc (id, holder, until_ms, status) VALUES (?, ?, ?, '')"))
                    .bind(GC_ROW)
                    .bind(holder)
                    .bind(until)
                    .execute(&mut *tx)
                    .await?;
                true
            }
        };
        tx.commit().await?;
        Ok(taken)
    }

    async fn doom_one(&self, extent: ExtentId, now: i64) -> Result<bool> {
        let db = &self.0.db;
        let id = extent.0 as i64;
        let insert = match db.backend {
            Backend::MySql => "INSERT IGNORE INTO extents (id, live) VALUES (?, 0)",
            _ => "INSERT INTO extents (id, live) VALUES (?, 0) ON CONFLICT (id) DO NOTHING",
        };
        let (_turn, mut tx) = db.begin().await?;
        // A row for an extent no row ever named (the bytes of a failed PUT), so that
        // the doom below has a row to lock and mark.
        sqlx::query(db.q(insert)).bind(id).execute(&mut *tx).await?;
        // `live` is the rule; no reference left is a second check of the same fact.
        sqlx::query(db.q("UPDATE extents SET doomed = ? WHERE id = ? AND live = 0 AND doomed IS NULL \
             AND NOT EXISTS (SELECT 1 FROM extent_refs WHERE extent = ?)"))
        .bind(now)
        .bind(id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let doomed: Option<i64> =
            sqlx::query_scalar(db.q("SELECT doomed FROM extents WHERE id = ?")).bind(id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(doomed.is_some())
    }
}

/// Where an owner's slices are: an object row by its id, or a part.
enum Owner<'a> {
    Object(&'a str),
    Part(&'a str, i64),
}

fn row_of(owner: &str) -> Result<Owner<'_>> {
    let bad = || CatalogError::Other(format!("malformed reference owner {owner:?}"));
    if let Some(rid) = owner.strip_prefix("o:") {
        return Ok(Owner::Object(rid));
    }
    let (upload, num) = owner.strip_prefix("p:").and_then(|p| p.rsplit_once(':')).ok_or_else(bad)?;
    Ok(Owner::Part(upload, num.parse().map_err(|_| bad())?))
}

impl GcCatalog {
    /// The encoded slices of `owner`'s row, if it exists (locked in `tx` but on SQLite,
    /// whose writer lock covers the transaction), and whether it is a noncurrent
    /// version (an object row moves between `objects` and `versions` with its id).
    async fn slices_of(&self, tx: &mut crate::db::Tx, owner: &str, lock: bool) -> Result<Option<(Vec<u8>, bool)>> {
        let lock = lock && self.0.db.backend != Backend::Sqlite;
        if let Owner::Object(rid) = row_of(owner)? {
            let s: Option<Vec<u8>> = sqlx::query_scalar(self.0.db.q(if lock {
                "SELECT slices FROM objects WHERE rid = ? FOR UPDATE"
            } else {
                "SELECT slices FROM objects WHERE rid = ?"
            }))
            .bind(rid)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(s) = s {
                return Ok(Some((s, false)));
            }
            // Not current: a noncurrent version, or gone. (A row moved here after the
            // read above committed its move before this read: the mover held the row.)
            let s: Option<Vec<u8>> = sqlx::query_scalar(self.0.db.q(if lock {
                "SELECT slices FROM versions WHERE rid = ? FOR UPDATE"
            } else {
                "SELECT slices FROM versions WHERE rid = ?"
            }))
            .bind(rid)
            .fetch_optional(&mut **tx)
            .await?;
            return Ok(s.map(|s| (s, true)));
        }
        let q = match (row_of(owner)?, lock) {
            (Owner::Object(_), _) => unreachable!("read above"),
            (Owner::Part(up, num), false) => {
                sqlx::query_scalar(self.0.db.q("SELECT slices FROM parts WHERE upload = ? AND num = ?"))
                    .bind(up)
                    .bind(num)
            }
            (Owner::Part(up, num), true) => {
                sqlx::query_scalar(self.0.db.q("SELECT slices FROM parts WHERE upload = ? AND num = ? FOR UPDATE"))
                    .bind(up)
                    .bind(num)
            }
        };
        Ok(q.fetch_optional(&mut **tx).await?.map(|s| (s, false)))
    }

    async fn rows_naming(&self, extent: ExtentId) -> Result<Vec<Named>> {
        let owners: Vec<String> = sqlx::query_scalar(self.0.db.q("SELECT owner FROM extent_refs WHERE extent = ?"))
            .bind(extent.0 as i64)
            .fetch_all(&self.0.db.pool)
            .await?;
        let mut out = Vec::new();
        for owner in owners {
            let (_turn, mut tx) = self.0.db.begin().await?;
            // A plain read: `switch` checks the slices again under the row's lock.
            let s = self.slices_of(&mut tx, &owner, false).await?;
            tx.commit().await?;
            // Gone since: nothing to switch.
            if let Some((s, _)) = s {
                out.push(Named { owner, slices: decode_named(&s)? });
            }
        }
        Ok(out)
    }

    /// One attempt of `switch`; with `to`, the object row also records that policy
    /// and storage class (a transition).
    async fn switch_once(
        &self,
        owner: &str,
        old: &[Slice],
        new: &[Slice],
        to: Option<(Policy, StorageClass)>,
    ) -> Result<bool> {
        let db = &self.0.db;
        let (_turn, mut tx) = db.begin().await?;
        let Some((current, noncurrent)) = self.slices_of(&mut tx, owner, true).await? else { return Ok(false) };
        // Bytes kept in the row name no extents: a transition only labels the row with
        // its new policy and class (they stay in the row), and nothing else switches it.
        let stored = if is_kept(&current) {
            if !(old.is_empty() && new.is_empty() && to.is_some()) {
                return Ok(false);
            }
            current
        } else if current != encode_slices(old) {
            return Ok(false);
        } else {
            encode_slices(new)
        };
        lock_extents(db, &mut tx, old, new).await?;
        drop_refs(db, &mut tx, owner, old).await?;
        add_refs(db, &mut tx, owner, new).await?;
        let q = match (row_of(owner)?, to) {
            (Owner::Object(rid), Some((policy, class))) => {
                // The row is locked (by `slices_of`, or SQLite's writer lock).
                let info: String = sqlx::query_scalar(db.q(if noncurrent {
                    "SELECT info FROM versions WHERE rid = ?"
                } else {
                    "SELECT info FROM objects WHERE rid = ?"
                }))
                .bind(rid)
                .fetch_one(&mut *tx)
                .await?;
                let mut info = parse_info(&info)?;
                info.policy = Some(policy);
                info.storage_class = Some(class);
                sqlx::query(db.q(if noncurrent {
                    "UPDATE versions SET slices = ?, info = ? WHERE rid = ?"
                } else {
                    "UPDATE objects SET slices = ?, info = ? WHERE rid = ?"
                }))
                .bind(stored)
                .bind(info_json(&info))
                .bind(rid)
            }
            (Owner::Part(..), Some(_)) => {
                return Err(CatalogError::Other(format!("{owner}: only objects have transitions")));
            }
            (Owner::Object(rid), None) => sqlx::query(db.q(if noncurrent {
                "UPDATE versions SET slices = ? WHERE rid = ?"
            } else {
                "UPDATE objects SET slices = ? WHERE rid = ?"
            }))
            .bind(stored)
            .bind(rid),
            (Owner::Part(up, num), None) => {
                sqlx::query(db.q("UPDATE parts SET slices = ? WHERE upload = ? AND num = ?"))
                    .bind(stored)
                    .bind(up)
                    .bind(num)
            }
        };
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl gc::Catalog for GcCatalog {
    async fn try_lease(&self, holder: &str, ttl: Duration) -> std::result::Result<bool, GcError> {
        match self.lease(holder, ttl).await {
            // Two GCs taking a lease no one held at once: one inserts, the other loses.
            Err(CatalogError::Db(e)) if crate::db::retryable(&e) => Ok(false),
            r => r.map_err(err),
        }
    }

    async fn writers(&self) -> std::result::Result<HashMap<String, ExtentId>, GcError> {
        let rows = sqlx::query(self.0.db.q("SELECT name, low_water FROM writers"))
            .fetch_all(&self.0.db.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, ExtentId(r.try_get::<i64, _>("low_water")? as u64))))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(db_err)
    }

    async fn streams(&self) -> std::result::Result<Vec<(StreamId, String)>, GcError> {
        let rows = sqlx::query(self.0.db.q("SELECT id, owner FROM streams"))
            .fetch_all(&self.0.db.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok((StreamId(r.try_get::<i64, _>("id")? as u64), r.try_get("owner")?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(db_err)
    }

    async fn live(&self) -> std::result::Result<HashMap<ExtentId, u64>, GcError> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as(self.0.db.q("SELECT id, live FROM extents WHERE live > 0 AND doomed IS NULL"))
                .fetch_all(&self.0.db.pool)
                .await
                .map_err(db_err)?;
        Ok(rows.into_iter().map(|(i, l)| (ExtentId(i as u64), l as u64)).collect())
    }

    async fn naming(&self, extent: ExtentId) -> std::result::Result<Vec<Named>, GcError> {
        self.rows_naming(extent).await.map_err(err)
    }

    async fn switch(&self, owner: &str, old: &[Slice], new: &[Slice]) -> std::result::Result<bool, GcError> {
        Catalog::retry(false, || self.switch_once(owner, old, new, None)).await.map_err(err)
    }

    async fn transitions(&self) -> std::result::Result<Vec<Transition>, GcError> {
        self.0.transitions(None).await.map_err(err)
    }

    async fn due(
        &self,
        rule: &Transition,
        after: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> std::result::Result<(Vec<Due>, Option<String>), GcError> {
        self.0.due(rule, after, before_ms, limit).await.map_err(err)
    }

    async fn transit(
        &self,
        owner: &str,
        old: &[Slice],
        new: &[Slice],
        rule: &Transition,
    ) -> std::result::Result<bool, GcError> {
        let class = StorageClass::from_name(&rule.class)
            .ok_or_else(|| GcError::Catalog(format!("unknown storage class {:?}", rule.class)))?;
        Catalog::retry(false, || self.switch_once(owner, old, new, Some((rule.policy, class)))).await.map_err(err)
    }

    async fn set_low_water(&self, writer: &str, low: ExtentId) -> std::result::Result<(), GcError> {
        self.0.set_low_water(writer, low).await.map_err(err)
    }

    async fn add_stream(&self, id: StreamId, owner: &str) -> std::result::Result<(), GcError> {
        self.0.add_stream(id, owner).await.map_err(err)
    }

    async fn doom(&self, extent: ExtentId, now_ms: i64) -> std::result::Result<bool, GcError> {
        match self.doom_one(extent, now_ms).await {
            // Lost a race with a writer naming it: named, so not doomed.
            Err(CatalogError::Db(e)) if crate::db::retryable(&e) => Ok(false),
            r => r.map_err(err),
        }
    }

    async fn doomed(&self) -> std::result::Result<Vec<(ExtentId, i64)>, GcError> {
        self.0.doomed_extents().await.map_err(err)
    }

    async fn mark_deleted(&self, extents: &[ExtentId], now_ms: i64) -> std::result::Result<(), GcError> {
        let db = &self.0.db;
        let (_turn, mut tx) = db.begin().await.map_err(db_err)?;
        for e in extents {
            sqlx::query(db.q("UPDATE extents SET deleted = ? WHERE id = ? AND deleted IS NULL"))
                .bind(now_ms)
                .bind(e.0 as i64)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn stale_uploads(&self, before_ms: i64) -> std::result::Result<Vec<String>, GcError> {
        sqlx::query_scalar(self.0.db.q("SELECT id FROM uploads WHERE created < ?"))
            .bind(before_ms)
            .fetch_all(&self.0.db.pool)
            .await
            .map_err(db_err)
    }

    async fn abort_upload(&self, id: &str) -> std::result::Result<bool, GcError> {
        match self.0.abort_upload(id).await {
            Ok(()) => Ok(true),
            Err(CatalogError::NoSuchUpload) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    async fn lifecycle(&self, now_ms: i64, day_ms: i64) -> std::result::Result<gc::Lifecycled, GcError> {
        self.0.lifecycle_pass(now_ms, day_ms).await.map_err(err)
    }

    async fn load_status(&self) -> std::result::Result<Option<Status>, GcError> {
        self.0.gc_status().await.map_err(err)
    }

    async fn save_status(&self, s: &Status) -> std::result::Result<(), GcError> {
        let body = serde_json::to_string(s).expect("plain data");
        sqlx::query(self.0.db.q("UPDATE gc SET status = ? WHERE id = ?"))
            .bind(body)
            .bind(GC_ROW)
            .execute(&self.0.db.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
