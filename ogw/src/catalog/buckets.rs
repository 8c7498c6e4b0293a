//! Buckets: each belongs to one tenant and has a default redundancy policy for
//! objects PUT without a storage class.

use proto::meta::Policy;
use sqlx::Row;

use super::{Bucket, Catalog, CatalogError, Result, Versioning};
use crate::db::{now_ms, Backend, Tx};

impl Catalog {
    pub async fn create_bucket(&self, tenant: &str, name: &str, policy: Policy) -> Result<()> {
        let r = sqlx::query(self.db.q("INSERT INTO buckets (name, tenant, created, policy) VALUES (?, ?, ?, ?)"))
            .bind(name)
            .bind(tenant)
            .bind(now_ms())
            .bind(policy.to_string())
            .execute(&self.db.pool)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                let b = self.bucket(name).await?;
                Err(CatalogError::BucketExists { owned_by_you: b.is_some_and(|b| b.tenant == tenant) })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The bucket as read within the last `CACHE_TTL` (none cached: read now), for a
    /// write whose transaction checks the incarnation again (`lock_bucket` with the
    /// row as `expect`): a stale row then refuses the write, it never misplaces it.
    /// This gateway's DeleteBucket and versioning changes forget the row (another
    /// gateway's, and the admin command's policy change, show within `CACHE_TTL`). A
    /// bucket absent is not remembered.
    pub async fn bucket_cached(&self, name: &str) -> Result<Option<Bucket>> {
        if let Some(b) = self.buckets.fresh(name) {
            return Ok(Some(b));
        }
        let b = self.bucket(name).await?;
        if let Some(b) = &b {
            self.buckets.put(name, b.clone());
        }
        Ok(b)
    }

    /// Forgets the cached row of bucket `name` (this gateway changed it).
    pub(super) fn forget_bucket(&self, name: &str) {
        self.buckets.forget(name);
    }

    pub async fn bucket(&self, name: &str) -> Result<Option<Bucket>> {
        let row =
            sqlx::query(self.db.q("SELECT name, tenant, created, policy, versioning FROM buckets WHERE name = ?"))
                .bind(name)
                .fetch_optional(&self.db.pool)
                .await?;
        row.as_ref().map(bucket_from_row).transpose()
    }

    /// Sets the policy of a bucket's objects PUT without a storage class (admin).
    pub async fn set_bucket_policy(&self, name: &str, policy: Policy) -> Result<()> {
        // (MySQL counts changed rows, not matched ones: ask first.)
        if self.bucket(name).await?.is_none() {
            return Err(CatalogError::NoSuchBucket);
        }
        sqlx::query(self.db.q("UPDATE buckets SET policy = ? WHERE name = ?"))
            .bind(policy.to_string())
            .bind(name)
            .execute(&self.db.pool)
            .await?;
        self.forget_bucket(name);
        Ok(())
    }

    /// The bucket if `tenant` owns it: `NoSuchBucket` when it does not exist,
    /// `NotOwner` when another tenant owns it.
    pub async fn owned_bucket(&self, tenant: &str, name: &str) -> Result<Bucket> {
        match self.bucket(name).await? {
            None => Err(CatalogError::NoSuchBucket),
            Some(b) if b.tenant != tenant => Err(CatalogError::NotOwner),
            Some(b) => Ok(b),
        }
    }

    pub async fn buckets(&self, tenant: &str) -> Result<Vec<Bucket>> {
        let rows = sqlx::query(
            self.db.q("SELECT name, tenant, created, policy, versioning FROM buckets WHERE tenant = ? ORDER BY name"),
        )
        .bind(tenant)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(bucket_from_row).collect()
    }

    /// Every bucket with its tenant, the number and bytes of its current objects, and
    /// the bytes of its noncurrent versions (delete markers hold none), by tenant and
    /// name, `USAGE_BUCKETS_MAX` at most. Reads every row: the console caches it.
    pub async fn bucket_usage(&self) -> Result<Vec<BucketUsage>> {
        use std::collections::BTreeMap;
        let mut usage: BTreeMap<String, BucketUsage> = BTreeMap::new();
        let sql = format!("SELECT name, tenant FROM buckets ORDER BY name LIMIT {USAGE_BUCKETS_MAX}");
        for r in sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.db.pool).await? {
            let name: String = r.try_get("name")?;
            let tenant = r.try_get("tenant")?;
            usage.insert(name.clone(), BucketUsage { tenant, bucket: name, ..Default::default() });
        }
        // SUM of a BIGINT is NUMERIC on PostgreSQL and DECIMAL on MySQL: made BIGINT.
        let total = match self.db.backend {
            Backend::Sqlite => "SUM(size)",
            Backend::Postgres => "CAST(SUM(size) AS BIGINT)",
            Backend::MySql => "CAST(SUM(size) AS SIGNED)",
        };
        let current = format!("SELECT bucket, COUNT(*) AS n, {total} AS bytes FROM objects GROUP BY bucket");
        for r in sqlx::query(sqlx::AssertSqlSafe(current)).fetch_all(&self.db.pool).await? {
            if let Some(u) = usage.get_mut(&r.try_get::<String, _>("bucket")?) {
                u.objects = r.try_get::<i64, _>("n")? as u64;
                u.bytes = r.try_get::<i64, _>("bytes")?.max(0) as u64;
            }
        }
        let older =
            format!("SELECT bucket, COUNT(*) AS n, {total} AS bytes FROM versions WHERE marker = 0 GROUP BY bucket");
        for r in sqlx::query(sqlx::AssertSqlSafe(older)).fetch_all(&self.db.pool).await? {
            if let Some(u) = usage.get_mut(&r.try_get::<String, _>("bucket")?) {
                u.noncurrent_versions = r.try_get::<i64, _>("n")? as u64;
                u.noncurrent_bytes = r.try_get::<i64, _>("bytes")?.max(0) as u64;
            }
        }
        let mut v: Vec<BucketUsage> = usage.into_values().collect();
        v.sort_by(|a, b| (&a.tenant, &a.bucket).cmp(&(&b.tenant, &b.bucket)));
        Ok(v)
    }

    /// Locks the bucket row for the rest of `tx`, shared (writers of its objects and
    /// uploads take it so; `delete_bucket` takes it exclusively, so that no write lands
    /// in a bucket being deleted), and checks that the bucket is there: the incarnation
    /// `expect` (same owner, same creation time) when given, so that a write never
    /// lands in a bucket made again under the same name.
    ///
    /// Returns the bucket's versioning state as of the lock: `set_versioning` changes it
    /// under an exclusive lock, so it holds for the rest of `tx`.
    pub(super) async fn lock_bucket(&self, tx: &mut Tx, name: &str, expect: Option<&Bucket>) -> Result<Versioning> {
        let sql = match self.db.backend {
            // SQLite's write lock covers the whole transaction.
            Backend::Sqlite => "SELECT tenant, created, versioning FROM buckets WHERE name = ?",
            Backend::Postgres => "SELECT tenant, created, versioning FROM buckets WHERE name = ? FOR SHARE",
            Backend::MySql => "SELECT tenant, created, versioning FROM buckets WHERE name = ? LOCK IN SHARE MODE",
        };
        let row = sqlx::query(self.db.q(sql)).bind(name).fetch_optional(&mut **tx).await?;
        let Some(row) = row else { return Err(CatalogError::NoSuchBucket) };
        bucket_state(&row, expect)
    }

    /// Deletes a bucket without objects, aborting its multipart uploads in progress.
    pub async fn delete_bucket(&self, tenant: &str, name: &str) -> Result<()> {
        let (_turn, mut tx) = self.db.begin().await?;
        let sql = match self.db.backend {
            Backend::Sqlite => "SELECT tenant FROM buckets WHERE name = ?",
            _ => "SELECT tenant FROM buckets WHERE name = ? FOR UPDATE",
        };
        let row = sqlx::query(self.db.q(sql)).bind(name).fetch_optional(&mut *tx).await?;
        match row {
            None => return Err(CatalogError::NoSuchBucket),
            Some(r) if r.try_get::<String, _>("tenant")? != tenant => return Err(CatalogError::NotOwner),
            Some(_) => {}
        }
        let objects: i64 = sqlx::query_scalar(self.db.q("SELECT COUNT(*) FROM objects WHERE bucket = ?"))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let versions: i64 = sqlx::query_scalar(self.db.q("SELECT COUNT(*) FROM versions WHERE bucket = ?"))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if objects > 0 || versions > 0 {
            return Err(CatalogError::BucketNotEmpty);
        }
        // Uploads in progress do not keep a bucket (as in AWS): they are aborted with it,
        // their parts' bytes then named by nothing.
        let uploads: Vec<String> = sqlx::query_scalar(self.db.q("SELECT id FROM uploads WHERE bucket = ?"))
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
        for id in &uploads {
            sqlx::query(self.db.q("DELETE FROM uploads WHERE id = ?")).bind(id).execute(&mut *tx).await?;
            self.drop_parts(&mut tx, id).await?;
        }
        sqlx::query(self.db.q("DELETE FROM buckets WHERE name = ?")).bind(name).execute(&mut *tx).await?;
        // A bucket made later under this name (by anyone) starts without them.
        sqlx::query(self.db.q("DELETE FROM transitions WHERE bucket = ?")).bind(name).execute(&mut *tx).await?;
        sqlx::query(self.db.q("DELETE FROM bucket_config WHERE bucket = ?")).bind(name).execute(&mut *tx).await?;
        sqlx::query(self.db.q("DELETE FROM key_locks WHERE bucket = ?")).bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        self.forget_bucket(name);
        Ok(())
    }
}

/// A locked bucket row's versioning (columns `tenant`, `created`, `versioning`), if it
/// is the incarnation `expect` (when given; else `NoSuchBucket`).
pub(super) fn bucket_state(row: &sqlx::any::AnyRow, expect: Option<&Bucket>) -> Result<Versioning> {
    if let Some(b) = expect {
        let (tenant, created): (String, i64) = (row.try_get("tenant")?, row.try_get("created")?);
        if tenant != b.tenant || created != b.created_ms {
            return Err(CatalogError::NoSuchBucket);
        }
    }
    Versioning::from_db(row.try_get("versioning")?)
}

fn bucket_from_row(r: &sqlx::any::AnyRow) -> Result<Bucket> {
    Ok(Bucket {
        name: r.try_get("name")?,
        tenant: r.try_get("tenant")?,
        created_ms: r.try_get("created")?,
        policy: r.try_get::<String, _>("policy")?.parse().map_err(CatalogError::Other)?,
        versioning: Versioning::from_db(r.try_get("versioning")?)?,
    })
}

/// Buckets `bucket_usage` reports at most.
pub const USAGE_BUCKETS_MAX: usize = 10_000;

/// A bucket's share of the catalog (`Catalog::bucket_usage`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BucketUsage {
    pub tenant: String,
    pub bucket: String,
    pub objects: u64,
    pub bytes: u64,
    pub noncurrent_versions: u64,
    pub noncurrent_bytes: u64,
}
