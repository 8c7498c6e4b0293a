//! What the GC service asks of the catalog (`gc::Catalog`), and the writers' low-water
//! marks the gateways publish for it. Dooming is where GC meets the writers: see the
//! invariant in `refs.rs`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use gc::{GcError, Status};
use proto::meta::StreamId;
use proto::ExtentId;
use sqlx::Row;

use super::{Catalog, CatalogError, Result};
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
        sqlx::query(db.q("UPDATE extents SET doomed = ? WHERE id = ? AND live = 0 AND doomed IS NULL"))
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let doomed: Option<i64> =
            sqlx::query_scalar(db.q("SELECT doomed FROM extents WHERE id = ?")).bind(id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(doomed.is_some())
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

    async fn named(&self) -> std::result::Result<HashSet<ExtentId>, GcError> {
        let ids: Vec<i64> = sqlx::query_scalar(self.0.db.q("SELECT id FROM extents WHERE live > 0"))
            .fetch_all(&self.0.db.pool)
            .await
            .map_err(db_err)?;
        Ok(ids.into_iter().map(|i| ExtentId(i as u64)).collect())
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
