//! The SQL store behind the gateway, through sqlx's `Any` driver: SQLite embedded by
//! default, PostgreSQL or MySQL/MariaDB/TiDB for clusters, chosen by the URL.
//!
//! Queries are written once with `?` placeholders; PostgreSQL gets them rewritten to
//! `$1, $2, ...` (no query text here contains a literal `?`). Object keys are stored as
//! bytes (BLOB / BYTEA / VARBINARY), so every backend orders them the way S3 lists
//! them: by their UTF-8 bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;

use parking_lot::Mutex;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Transaction};

use crate::limits::{SQLITE_CONNECTIONS_MAX, SQL_ACQUIRE_TIMEOUT, SQL_CONNECTIONS_MAX};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// SQLite has one writer at a time; writers of this process queue here (in order,
    /// without SQLite's sleeping busy handler) instead of inside SQLite.
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// Held for the life of a write transaction (SQLite only).
pub type WriterTurn = Option<tokio::sync::OwnedMutexGuard<()>>;

pub type Tx = Transaction<'static, Any>;

/// Schema version 1. `{BLOB}`, `{KEY}` (a bucket key), `{ID}` (short text key),
/// `{TEXT}` and `{SERIAL}` are replaced per backend.
const SCHEMA_V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS tenants (name {ID} PRIMARY KEY, created BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS access_keys (access_key {ID} PRIMARY KEY, tenant {ID} NOT NULL, \
     secret {BLOB} NOT NULL, created BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS buckets (name {ID} PRIMARY KEY, tenant {ID} NOT NULL, \
     created BIGINT NOT NULL, policy {ID} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS objects (bucket {ID} NOT NULL, okey {KEY} NOT NULL, size BIGINT NOT NULL, \
     etag {ID} NOT NULL, modified BIGINT NOT NULL, info {TEXT} NOT NULL, slices {BLOB} NOT NULL, \
     PRIMARY KEY (bucket, okey))",
    "CREATE TABLE IF NOT EXISTS uploads (id {ID} PRIMARY KEY, bucket {ID} NOT NULL, okey {KEY} NOT NULL, \
     created BIGINT NOT NULL, info {TEXT} NOT NULL)",
    "CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, okey)",
    "CREATE TABLE IF NOT EXISTS parts (upload {ID} NOT NULL, num BIGINT NOT NULL, size BIGINT NOT NULL, \
     etag {ID} NOT NULL, modified BIGINT NOT NULL, info {TEXT} NOT NULL, slices {BLOB} NOT NULL, \
     PRIMARY KEY (upload, num))",
    "CREATE TABLE IF NOT EXISTS garbage (id {SERIAL}, slices {BLOB} NOT NULL, reason {ID} NOT NULL, \
     created BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS streams (id BIGINT PRIMARY KEY, owner {ID} NOT NULL, created BIGINT NOT NULL)",
];

/// Schema version 2: what GC needs (`catalog/refs.rs`, `catalog/gc.rs`).
/// - `objects.rid`: a row's own id, naming it in `extent_refs` (`o:RID`; a part is
///   `p:UPLOAD:NUM`).
/// - `extents`: per extent, the bytes rows name in it (`live`), and when GC doomed it
///   (`doomed`, ms) and deleted it (`deleted`). The row is what a writer and GC both
///   lock: a doom and a new reference to one extent never both commit.
/// - `extent_refs`: which row names how many bytes of which extent.
/// - `writers`: per gateway name, the lowest extent id its writes in flight may name.
/// - `gc`: the GC lease and the status of the last pass (one row).
const SCHEMA_V2: &[&str] = &[
    "ALTER TABLE objects ADD COLUMN rid {ID}",
    "CREATE INDEX IF NOT EXISTS objects_by_rid ON objects (rid)",
    "CREATE TABLE IF NOT EXISTS extents (id BIGINT PRIMARY KEY, live BIGINT NOT NULL, doomed BIGINT, \
     deleted BIGINT)",
    "CREATE TABLE IF NOT EXISTS extent_refs (extent BIGINT NOT NULL, owner {ID} NOT NULL, bytes BIGINT NOT NULL, \
     PRIMARY KEY (extent, owner))",
    "CREATE TABLE IF NOT EXISTS writers (name {ID} PRIMARY KEY, low_water BIGINT NOT NULL, updated BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS gc (id BIGINT PRIMARY KEY, holder {ID} NOT NULL, until_ms BIGINT NOT NULL, \
     status {TEXT} NOT NULL)",
];

/// Schema version 3: transition rules (`catalog/transitions.rs`): objects of `bucket`
/// under `prefix` move to `policy` (reporting `class`) once `after_ms` old.
const SCHEMA_V3: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS transitions (bucket {ID} NOT NULL, prefix {KEY} NOT NULL, after_ms BIGINT NOT NULL, \
     policy {ID} NOT NULL, class {ID} NOT NULL, PRIMARY KEY (bucket, prefix))",
];

/// Schema version 4: a bucket's sub-resource configurations (`catalog/config.rs`), one
/// document per bucket and kind (tagging, CORS, ...).
const SCHEMA_V4: &[&str] = &["CREATE TABLE IF NOT EXISTS bucket_config (bucket {ID} NOT NULL, kind {ID} NOT NULL, \
     doc {TEXT} NOT NULL, PRIMARY KEY (bucket, kind))"];

/// Schema version 5: versioning (`catalog/versions.rs`).
/// - `buckets.versioning`: NULL (never enabled), `Enabled` or `Suspended`.
/// - `objects.vid`: the current version's id; NULL is the null version.
/// - `versions`: every version of a key but the current one, and its delete markers,
///   by `seq` (higher is newer; the current version, in `objects`, is newer than all).
///   A row keeps the `rid` it had as the current version, so moving it here changes no
///   extent references: noncurrent versions keep their bytes live.
/// - `key_locks`: one row per key of a versioned bucket, never deleted while the bucket
///   lives: what transactions that add, remove or move a key's versions lock first, so
///   that they run one at a time per key (PostgreSQL and MySQL; SQLite has one writer).
const SCHEMA_V5: &[&str] = &[
    "ALTER TABLE buckets ADD COLUMN versioning {ID}",
    "ALTER TABLE objects ADD COLUMN vid {ID}",
    "CREATE TABLE IF NOT EXISTS versions (bucket {ID} NOT NULL, okey {KEY} NOT NULL, seq BIGINT NOT NULL, \
     vid {ID} NOT NULL, marker BIGINT NOT NULL, size BIGINT NOT NULL, etag {ID} NOT NULL, modified BIGINT NOT NULL, \
     info {TEXT} NOT NULL, slices {BLOB} NOT NULL, rid {ID}, PRIMARY KEY (bucket, okey, seq))",
    "CREATE INDEX IF NOT EXISTS versions_by_rid ON versions (rid)",
    "CREATE TABLE IF NOT EXISTS key_locks (bucket {ID} NOT NULL, okey {KEY} NOT NULL, PRIMARY KEY (bucket, okey))",
];

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i64 = 5;

/// MySQL's key column: binary (ordered by bytes, as S3 lists keys), as wide as the
/// longest key (`KEY_BYTES_MAX`, checked by a test).
const MYSQL_KEY: &str = "VARBINARY(1024)";

impl Db {
    /// Connects and brings the schema up to date. `url`: `sqlite://PATH`,
    /// `postgres://...` or `mysql://...`.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Backend::MySql
        } else {
            anyhow::bail!("unsupported database URL {url:?}: use sqlite://PATH, postgres://... or mysql://...");
        };
        let url = match backend {
            // Create the file if missing.
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.replacen("mariadb:", "mysql:", 1),
        };
        let mut opts = AnyPoolOptions::new().acquire_timeout(SQL_ACQUIRE_TIMEOUT);
        if backend == Backend::Sqlite {
            opts = opts.max_connections(SQLITE_CONNECTIONS_MAX).after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    // WAL: readers do not block the writer; FULL: a commit is durable
                    // when it returns.
                    conn.execute("PRAGMA journal_mode=WAL").await?;
                    conn.execute("PRAGMA synchronous=FULL").await?;
                    conn.execute("PRAGMA busy_timeout=10000").await?;
                    Ok(())
                })
            });
        } else if backend == Backend::MySql {
            opts = opts.max_connections(SQL_CONNECTIONS_MAX).after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    // READ COMMITTED, as PostgreSQL's default: InnoDB's REPEATABLE READ
                    // takes gap locks on every `FOR UPDATE` of a key that is not there,
                    // and writers of distinct new keys then deadlock on each other's
                    // gaps. Nothing here relies on gap locks: a key is claimed by its
                    // unique index, an object or extent by its row lock.
                    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
                    Ok(())
                })
            });
        } else {
            opts = opts.max_connections(SQL_CONNECTIONS_MAX);
        }
        let pool = opts.connect(&url).await.map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
        if backend == Backend::Sqlite {
            // The catalog holds sealed secret keys and every object's metadata: the file
            // is the gateway's alone (SQLite gives its WAL and index files the same mode).
            let path = url.trim_start_matches("sqlite://").split('?').next().unwrap_or_default();
            for file in [path.to_string(), format!("{path}-wal"), format!("{path}-shm")] {
                if !path.is_empty() && std::path::Path::new(&file).exists() {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| anyhow::anyhow!("making {file} private: {e}"))?;
                }
            }
        }
        let db = Db { pool, backend, writer: Arc::default() };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::query(self.q("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)"))
            .execute(&self.pool)
            .await?;
        let v: Option<i64> =
            sqlx::query_scalar(self.q("SELECT MAX(version) FROM schema_version")).fetch_one(&self.pool).await?;
        let v = v.unwrap_or(0);
        if v > SCHEMA_VERSION {
            anyhow::bail!("the database has schema version {v}; this ogw knows up to {SCHEMA_VERSION}: upgrade ogw");
        }
        if v < 1 {
            self.run_schema(SCHEMA_V1).await?;
            sqlx::query(self.q("INSERT INTO schema_version (version) VALUES (1)")).execute(&self.pool).await?;
        }
        if v < 2 {
            self.run_schema(SCHEMA_V2).await?;
            // Records version 2 itself, in the transaction that indexes.
            crate::catalog::index_refs(self).await?;
        }
        if v < 3 {
            self.run_schema(SCHEMA_V3).await?;
            // Two processes upgrading at once both insert it: harmless (MAX is read).
            sqlx::query(self.q("INSERT INTO schema_version (version) VALUES (3)")).execute(&self.pool).await?;
        }
        if v < 4 {
            self.run_schema(SCHEMA_V4).await?;
            sqlx::query(self.q("INSERT INTO schema_version (version) VALUES (4)")).execute(&self.pool).await?;
        }
        if v < 5 {
            self.run_schema(SCHEMA_V5).await?;
            sqlx::query(self.q("INSERT INTO schema_version (version) VALUES (5)")).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn run_schema(&self, stmts: &[&str]) -> anyhow::Result<()> {
        let (blob, key, id, text, serial) = match self.backend {
            Backend::Sqlite => ("BLOB", "BLOB", "TEXT", "TEXT", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            Backend::Postgres => ("BYTEA", "BYTEA", "TEXT", "TEXT", "BIGSERIAL PRIMARY KEY"),
            Backend::MySql => ("LONGBLOB", MYSQL_KEY, "VARCHAR(255)", "LONGTEXT", "BIGINT AUTO_INCREMENT PRIMARY KEY"),
        };
        for stmt in stmts {
            let mut s = stmt
                .replace("{BLOB}", blob)
                .replace("{KEY}", key)
                .replace("{ID}", id)
                .replace("{TEXT}", text)
                .replace("{SERIAL}", serial);
            if self.backend == Backend::MySql {
                // MySQL has no CREATE INDEX IF NOT EXISTS; the tables are new here anyway.
                s = s.replace("CREATE INDEX IF NOT EXISTS", "CREATE INDEX");
            }
            match sqlx::query(sqlx::AssertSqlSafe(s.clone())).execute(&self.pool).await {
                Ok(_) => {}
                // A migration cut short and run again: the column is there already
                // (MySQL commits DDL one statement at a time).
                Err(sqlx::Error::Database(d))
                    if s.starts_with("ALTER TABLE")
                        && ["duplicate", "already exists"].iter().any(|m| d.message().to_lowercase().contains(m)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The query text for this backend (placeholders rewritten for PostgreSQL, once).
    pub fn q(&self, sql: &'static str) -> &'static str {
        if self.backend != Backend::Postgres {
            return sql;
        }
        static CACHE: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
        let mut cache = CACHE.get_or_init(Default::default).lock();
        cache.entry(sql).or_insert_with(|| {
            let mut out = String::with_capacity(sql.len() + 16);
            let mut n = 0;
            for c in sql.chars() {
                if c == '?' {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push(c);
                }
            }
            Box::leak(out.into_boxed_str())
        })
    }

    /// A write transaction, and (SQLite) this process's writer turn, to be kept until
    /// the transaction ends. SQLite also takes its write lock up front (`BEGIN
    /// IMMEDIATE`), so a transaction that reads and then writes never fails to upgrade
    /// (other processes on the same file still wait in SQLite's busy handler).
    pub async fn begin(&self) -> sqlx::Result<(WriterTurn, Tx)> {
        match self.backend {
            Backend::Sqlite => {
                let turn = self.writer.clone().lock_owned().await;
                Ok((Some(turn), self.pool.begin_with("BEGIN IMMEDIATE").await?))
            }
            _ => Ok((None, self.pool.begin().await?)),
        }
    }
}

/// True for an error that a retry of the whole transaction may cure: a unique-key race,
/// a deadlock or a serialization failure.
pub fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation()
                || matches!(d.code().as_deref(), Some("40001" | "40P01" | "1213" | "1205" | "5" | "517"))
        }
        _ => false,
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_key_column_holds_the_longest_key() {
        assert_eq!(MYSQL_KEY, format!("VARBINARY({})", crate::limits::KEY_BYTES_MAX));
    }
}
