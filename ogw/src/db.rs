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
    /// without SQLite's sleeping busy handler) instead of inside SQLite. The turn also
    /// holds the transaction that concurrent object writes share (`Db::join`).
    writer: Arc<tokio::sync::Mutex<Group>>,
    /// Writers waiting for the turn: a group stays open for them.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    counters: GroupCounters,
}

/// Group commits so far (SQLite): COMMITs that succeeded, and the writes they held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommits {
    pub commits: u64,
    pub writes: u64,
}

/// `GroupCommits` as metrics (shared by the `Db`'s clones and its `Group`).
#[derive(Clone, Default)]
struct GroupCounters {
    commits: prometheus_client::metrics::counter::Counter,
    writes: prometheus_client::metrics::counter::Counter,
}

/// Held for the life of a write transaction (SQLite only).
pub type WriterTurn = Option<tokio::sync::OwnedMutexGuard<Group>>;

/// SQLite group commit: writes that arrive while one is running share one transaction
/// and one COMMIT (one WAL fsync) instead of one each, as the datanode shares its
/// flushes among appends.
///
/// Each member runs its statements holding the writer turn, inside its own SAVEPOINT
/// of the open transaction; a member whose statements fail is rolled back to its
/// savepoint alone. The group's first member needs none: its statements are the whole
/// transaction so far, and undoing them is a ROLLBACK (a write alone makes two fewer
/// round trips to SQLite's thread). A member that succeeded commits the group at once when no writer
/// is waiting for the turn; otherwise it passes the turn on and queues again, and when
/// its turn comes back either its group is still open (it commits it) or a later
/// member or a plain transaction (`Db::begin`, which commits an open group first) has
/// ended it, and it reads the outcome.
///
/// **Invariant**: no member returns success before the COMMIT that holds its
/// statements has returned, and a COMMIT's failure is every member's failure; the
/// statements of a member that did not finish (its caller was cancelled holding the
/// turn) are rolled back to its savepoint before anyone else writes.
#[derive(Default)]
pub struct Group {
    tx: Option<Tx>,
    /// The open group's number (numbers grow).
    id: u64,
    /// Members of the open group that finished their statements.
    members: u32,
    /// What undoes the statements of a member that did not finish.
    dangling: Option<Undo>,
    next_savepoint: u64,
    /// Ended groups with members yet to read the outcome: members left, and the
    /// COMMIT's error if it failed.
    ended: HashMap<u64, (u32, Option<String>)>,
    done: GroupCounters,
}

/// How a member's statements are undone.
#[derive(Clone, Copy)]
enum Undo {
    /// ROLLBACK TO its savepoint.
    Savepoint(u64),
    /// ROLLBACK: it is its group's first member.
    Transaction,
}

/// A write's place in the open group (SQLite), from `Db::join` to `Member::finish`.
pub struct Member {
    /// None once finished.
    turn: Option<tokio::sync::OwnedMutexGuard<Group>>,
    undo: Undo,
    db: Db,
}

impl Drop for Member {
    /// Dropped unfinished (its caller cancelled): the next holder of the turn rolls its
    /// savepoint back; a task takes the turn now so that an open group does not keep
    /// SQLite's write lock until the next write.
    fn drop(&mut self) {
        if let Some(turn) = self.turn.take() {
            drop(turn);
            let db = self.db.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let mut turn = db.turn().await;
                    if db.queued.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                        Group::end(&mut turn).await;
                    }
                });
            }
        }
    }
}

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

/// MySQL only: text columns hold any UTF-8 (`utf8mb4`; a server whose default is
/// `latin1` or `utf8mb3` refused a tag or header with a character beyond the BMP).
const SCHEMA_V6_MYSQL: &[&str] = &[
    "ALTER TABLE objects MODIFY info {TEXT} NOT NULL",
    "ALTER TABLE uploads MODIFY info {TEXT} NOT NULL",
    "ALTER TABLE parts MODIFY info {TEXT} NOT NULL",
    "ALTER TABLE versions MODIFY info {TEXT} NOT NULL",
    "ALTER TABLE gc MODIFY status {TEXT} NOT NULL",
    "ALTER TABLE bucket_config MODIFY doc {TEXT} NOT NULL",
];

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i64 = 6;

/// MySQL's key column: binary (ordered by bytes, as S3 lists keys), as wide as the
/// longest key (`KEY_BYTES_MAX`, checked by a test).
const MYSQL_KEY: &str = "VARBINARY(1024)";

/// MySQL's text column: any UTF-8, whatever the server's default character set.
const MYSQL_TEXT: &str = "LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin";

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
            // No ping before each use: a connection to a local file does not go stale,
            // and each ping is a round trip to the connection's thread (sqlx still
            // pings each one as it goes back to the pool, off the request's path).
            opts = opts.max_connections(SQLITE_CONNECTIONS_MAX).test_before_acquire(false).after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    // WAL: readers do not block the writer; FULL: a commit is durable
                    // when it returns.
                    conn.execute("PRAGMA journal_mode=WAL").await?;
                    conn.execute("PRAGMA synchronous=FULL").await?;
                    conn.execute("PRAGMA busy_timeout=10000").await?;
                    // Pages of the database file are read from a shared map of it (up
                    // to 1 GiB, then read as before), not copied by a read call into
                    // each connection's own small cache: a full listing re-read every
                    // page that way, a tenth of its time (BENCHMARKS.md). Writes still
                    // go through the WAL; the map is read-only.
                    conn.execute("PRAGMA mmap_size=1073741824").await?;
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
        let counters = GroupCounters::default();
        let writer = Arc::new(tokio::sync::Mutex::new(Group { done: counters.clone(), ..Group::default() }));
        let db = Db { pool, backend, writer, queued: Arc::default(), counters };
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
        if v < 6 {
            if self.backend == Backend::MySql {
                self.run_schema(SCHEMA_V6_MYSQL).await?;
            }
            sqlx::query(self.q("INSERT INTO schema_version (version) VALUES (6)")).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn run_schema(&self, stmts: &[&str]) -> anyhow::Result<()> {
        let (blob, key, id, text, serial) = match self.backend {
            Backend::Sqlite => ("BLOB", "BLOB", "TEXT", "TEXT", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            Backend::Postgres => ("BYTEA", "BYTEA", "TEXT", "TEXT", "BIGSERIAL PRIMARY KEY"),
            Backend::MySql => ("LONGBLOB", MYSQL_KEY, "VARCHAR(255)", MYSQL_TEXT, "BIGINT AUTO_INCREMENT PRIMARY KEY"),
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
                let mut turn = self.turn().await;
                Group::end(&mut turn).await;
                Ok((Some(turn), self.pool.begin_with("BEGIN IMMEDIATE").await?))
            }
            _ => Ok((None, self.pool.begin().await?)),
        }
    }

    /// Group commits so far (SQLite).
    pub fn group_commits(&self) -> GroupCommits {
        GroupCommits { commits: self.counters.commits.get(), writes: self.counters.writes.get() }
    }

    /// Registers the group commit counters (`strata_sql_group_commits_total` and
    /// `strata_sql_group_commit_writes_total`; they stay 0 on PostgreSQL and MySQL).
    pub fn register_metrics(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "strata_sql_group_commits",
            "SQLite COMMITs of grouped object writes that succeeded",
            self.counters.commits.clone(),
        );
        r.register(
            "strata_sql_group_commit_writes",
            "Object writes those COMMITs held (over the commits: writes per fsync)",
            self.counters.writes.clone(),
        );
    }

    /// The writer turn, with what a cancelled member left rolled back.
    async fn turn(&self) -> tokio::sync::OwnedMutexGuard<Group> {
        use std::sync::atomic::Ordering::SeqCst;
        self.queued.fetch_add(1, SeqCst);
        let mut turn = self.writer.clone().lock_owned().await;
        self.queued.fetch_sub(1, SeqCst);
        if let Some(undo) = turn.dangling.take() {
            if let Err(e) = turn.undo(undo).await {
                // The transaction is unusable: the whole group fails.
                turn.tx = None;
                turn.close(Some(format!("rolling back a cancelled write: {e}")));
            }
        }
        turn
    }

    /// Writers waiting for the writer turn (SQLite).
    pub fn writers_waiting(&self) -> usize {
        self.queued.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Joins the open group (SQLite only), opening one when none is: run the write's
    /// statements on `Member::tx`, then hand their result to `Member::finish`.
    pub async fn join(&self) -> sqlx::Result<Member> {
        debug_assert_eq!(self.backend, Backend::Sqlite);
        let mut turn = self.turn().await;
        let undo = if turn.tx.is_none() {
            turn.tx = Some(self.pool.begin_with("BEGIN IMMEDIATE").await?);
            turn.id += 1;
            turn.members = 0;
            Undo::Transaction
        } else {
            turn.next_savepoint += 1;
            let n = turn.next_savepoint;
            if let Err(e) = Group::exec(turn.tx.as_mut().expect("open"), format!("SAVEPOINT s{n}")).await {
                Group::end(&mut turn).await;
                return Err(e);
            }
            Undo::Savepoint(n)
        };
        turn.dangling = Some(undo);
        Ok(Member { turn: Some(turn), undo, db: self.clone() })
    }
}

impl Group {
    /// Runs `sql`, statements separated by `; `, one at a time.
    async fn exec(tx: &mut Tx, sql: String) -> sqlx::Result<()> {
        use sqlx::Executor;
        for stmt in sql.split("; ") {
            tx.execute(sqlx::AssertSqlSafe(stmt.to_string())).await?;
        }
        Ok(())
    }

    /// Undoes one member's statements: to its savepoint, or the whole transaction for
    /// the group's first member (no other member's statements are in it).
    async fn undo(&mut self, undo: Undo) -> sqlx::Result<()> {
        match undo {
            Undo::Savepoint(n) => match self.tx.as_mut() {
                Some(tx) => Group::exec(tx, format!("ROLLBACK TO s{n}; RELEASE s{n}")).await,
                None => Ok(()),
            },
            Undo::Transaction => {
                debug_assert_eq!(self.members, 0, "the first member's statements are the whole transaction");
                match self.tx.take() {
                    Some(tx) => tx.rollback().await,
                    None => Ok(()),
                }
            }
        }
    }

    /// Ends the open group with `failed` as its outcome, for its members to read.
    fn close(&mut self, failed: Option<String>) {
        if self.members > 0 {
            self.ended.insert(self.id, (self.members, failed));
        }
        self.members = 0;
    }

    /// Commits the open group, if any.
    async fn end(turn: &mut Group) {
        if let Some(tx) = turn.tx.take() {
            let failed = tx.commit().await.err().map(|e| e.to_string());
            if failed.is_none() && turn.members > 0 {
                turn.done.commits.inc();
                turn.done.writes.inc_by(turn.members as u64);
            }
            turn.close(failed);
        }
    }

    /// The outcome of ended group `id` for one of its members.
    fn outcome(&mut self, id: u64) -> sqlx::Result<()> {
        let Some((left, failed)) = self.ended.get_mut(&id) else {
            return Err(sqlx::Error::Protocol(format!("group commit {id}: no outcome recorded")));
        };
        *left -= 1;
        let r = match failed {
            None => Ok(()),
            Some(e) => Err(sqlx::Error::Io(std::io::Error::other(format!("group commit failed: {e}")))),
        };
        if *left == 0 {
            self.ended.remove(&id);
        }
        r
    }
}

/// Members a group takes at most before it commits with writers still waiting.
const GROUP_MEMBERS_MAX: u32 = 256;

impl Member {
    /// The group's transaction, inside this write's savepoint.
    pub fn tx(&mut self) -> &mut Tx {
        self.turn.as_mut().and_then(|t| t.tx.as_mut()).expect("a member's group is open")
    }

    /// Ends this write: its statements' result `r` stands only once the group's COMMIT
    /// has returned. A failed write is rolled back to its savepoint alone. The group's
    /// part runs in a task of its own: a caller cancelled now cannot cut a COMMIT short
    /// or leave its group's outcome unread.
    pub async fn finish<T, E: From<sqlx::Error>>(mut self, r: Result<T, E>) -> Result<T, E> {
        let turn = self.turn.take().expect("finished once");
        let (db, undo, ok) = (self.db.clone(), self.undo, r.is_ok());
        match tokio::spawn(Member::settle(turn, db, undo, ok)).await {
            Ok(Ok(())) => r,
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(sqlx::Error::Protocol(format!("group commit: {e}")).into()),
        }
    }

    /// Releases (`ok`) or rolls back the savepoint, then commits the group or leaves it
    /// open for the writers waiting and comes back for its outcome.
    async fn settle(mut turn: tokio::sync::OwnedMutexGuard<Group>, db: Db, undo: Undo, ok: bool) -> sqlx::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let ended = match (undo, ok) {
            (Undo::Savepoint(n), true) => Group::exec(turn.tx.as_mut().expect("open"), format!("RELEASE s{n}")).await,
            (Undo::Transaction, true) => Ok(()),
            (_, false) => turn.undo(undo).await,
        };
        if let Err(e) = ended {
            // The transaction is unusable (SQLite may have rolled it back itself).
            turn.dangling = None;
            turn.tx = None;
            turn.close(Some(format!("ending a write's savepoint: {e}")));
            return Err(e);
        }
        turn.dangling = None;
        if !ok {
            // Nobody to leave the group open for: end it (it keeps SQLite's lock).
            if db.queued.load(SeqCst) == 0 {
                Group::end(&mut turn).await;
            }
            return Ok(());
        }
        turn.members += 1;
        let id = turn.id;
        if db.queued.load(SeqCst) > 0 && turn.members < GROUP_MEMBERS_MAX {
            // Others wait for the turn: let them join first.
            drop(turn);
            turn = db.turn().await;
        }
        if turn.id == id && turn.tx.is_some() {
            Group::end(&mut turn).await;
        }
        turn.outcome(id)
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
