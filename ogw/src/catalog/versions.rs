//! Versioning: a bucket's state, the versions of a key, delete markers, and the
//! listing of versions.
//!
//! A key's versions live in two tables: the current object (if the latest version is
//! not a delete marker) in `objects`, so GET, HEAD and the object listing read one
//! row as before; every other version and every delete marker in `versions`, ordered
//! by `seq` (higher is newer). **Invariant**: a key has a row in `objects` exactly
//! when its latest version is an object; every transaction that adds or removes a
//! version keeps it (`make_room`, `promote`). A version moving between the tables
//! keeps its `rid`, so its extent references stay as they were: noncurrent versions
//! keep their bytes live until the version itself is deleted, which drops them in
//! the same transaction (`refs`).
//!
//! The null version is stored with a NULL `vid` in `objects` and as `null` in
//! `versions`; there is at most one per key.

use sqlx::Row;

use super::objects::Current;
use super::refs::{drop_refs, object_owner};
use super::{
    decode_named, key_from_row, layout_in_row, parse_info, Bucket, Catalog, CatalogError, Deleted, Entry, Lister,
    Marker, Object, ObjectInfo, Result, Versioning,
};
use crate::db::{now_ms, Backend, Tx};

/// Characters of a version id, and its length.
const VERSION_ID_CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const VERSION_ID_LEN: usize = 32;

/// A new version id: 32 random characters of `[0-9A-Za-z]`.
pub(super) fn new_version_id() -> String {
    use rand::Rng;
    let mut r = rand::rngs::OsRng;
    (0..VERSION_ID_LEN).map(|_| VERSION_ID_CHARS[r.gen_range(0..VERSION_ID_CHARS.len())] as char).collect()
}

/// Whether `v` can name a version: `null`, or an id this gateway makes.
pub fn valid_version_id(v: &str) -> bool {
    v == "null" || (v.len() == VERSION_ID_LEN && v.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A version id as the `objects.vid` column holds it (`null`: NULL).
pub(super) fn stored_version(v: &str) -> Option<&str> {
    (v != "null").then_some(v)
}

/// A noncurrent version or delete marker, as its transaction read it (locked).
pub(super) struct Noncurrent {
    pub seq: i64,
    pub marker: bool,
    pub rid: Option<String>,
    pub slices: Vec<u8>,
    pub info: ObjectInfo,
}

/// Where a listing of versions continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionCursor {
    /// At `key`, nothing of it listed yet.
    At(Vec<u8>),
    /// After `key`'s current object.
    AfterCurrent(Vec<u8>),
    /// After `key`'s noncurrent version `seq`.
    AfterSeq(Vec<u8>, i64),
    /// After every version of `key`.
    After(Vec<u8>),
}

impl VersionCursor {
    fn key(&self) -> &[u8] {
        match self {
            VersionCursor::At(k) | VersionCursor::AfterCurrent(k) | VersionCursor::AfterSeq(k, _) => k,
            VersionCursor::After(k) => k,
        }
    }
}

/// One page of versions: entries in key order, each key's newest first, with whether
/// it is the latest; the common prefixes; and, when truncated, the markers of the
/// next page (key, and version id unless the page ended on a common prefix).
#[derive(Debug, Default)]
pub struct VersionPage {
    pub entries: Vec<(Entry, bool)>,
    pub prefixes: Vec<String>,
    pub next: Option<(String, Option<String>)>,
    /// Where the next page starts, when truncated (`next` names the same place, as long
    /// as the version it names is not deleted meanwhile).
    pub resume: Option<VersionCursor>,
}

impl Catalog {
    /// Sets `b`'s versioning to `Enabled` or `Suspended` (never back to `Off`).
    pub async fn set_versioning(&self, b: &Bucket, to: Versioning) -> Result<()> {
        let Some(status) = to.status() else {
            return Err(CatalogError::Invalid("a bucket's versioning can be enabled or suspended only".into()));
        };
        Catalog::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            let sql = match self.db.backend {
                Backend::Sqlite => "SELECT tenant, created FROM buckets WHERE name = ?",
                _ => "SELECT tenant, created FROM buckets WHERE name = ? FOR UPDATE",
            };
            let row = sqlx::query(self.db.q(sql)).bind(&b.name).fetch_optional(&mut *tx).await?;
            let same = row.is_some_and(|r| {
                r.try_get::<String, _>("tenant").ok().as_deref() == Some(b.tenant.as_str())
                    && r.try_get::<i64, _>("created").ok() == Some(b.created_ms)
            });
            if !same {
                return Err(CatalogError::NoSuchBucket);
            }
            sqlx::query(self.db.q("UPDATE buckets SET versioning = ? WHERE name = ?"))
                .bind(status)
                .bind(&b.name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await?;
        self.forget_bucket(&b.name);
        Ok(())
    }

    /// Locks the versions of `key` for the rest of `tx`. Every transaction that adds,
    /// removes or moves a version of a key in a versioned bucket takes it first, so they
    /// run one at a time per key and each reads what the one before committed. (Without
    /// it, a PostgreSQL transaction whose locking read waited on a row another one
    /// deleted, and then inserted again, finds no row: it would miss a version.)
    pub(super) async fn lock_key(&self, tx: &mut Tx, bucket: &str, key: &str) -> Result<()> {
        let claim = match self.db.backend {
            Backend::Sqlite => return Ok(()), // one writer at a time
            Backend::Postgres => "INSERT INTO key_locks (bucket, okey) VALUES (?, ?) ON CONFLICT DO NOTHING",
            Backend::MySql => "INSERT IGNORE INTO key_locks (bucket, okey) VALUES (?, ?)",
        };
        sqlx::query(self.db.q(claim)).bind(bucket).bind(key.as_bytes()).execute(&mut **tx).await?;
        sqlx::query(self.db.q("SELECT okey FROM key_locks WHERE bucket = ? AND okey = ? FOR UPDATE"))
            .bind(bucket)
            .bind(key.as_bytes())
            .fetch_one(&mut **tx)
            .await?;
        Ok(())
    }

    /// Makes room in `tx` for a new latest version of `key` (an object or a delete
    /// marker), `cur` being the current object (locked), and returns the new version's
    /// id: unversioned, the current object is dropped; enabled, it becomes noncurrent
    /// and the new version gets a new id; suspended, it becomes noncurrent unless it is
    /// the null version, and the null version (wherever it is) is dropped, as the new
    /// version is the null one.
    pub(super) async fn make_room(
        &self,
        tx: &mut Tx,
        versioning: Versioning,
        bucket: &str,
        key: &str,
        cur: Option<&Current>,
    ) -> Result<Option<String>> {
        match versioning {
            Versioning::Off => {
                if let Some(c) = cur {
                    self.drop_row(tx, bucket, key, c).await?;
                }
                Ok(None)
            }
            Versioning::Enabled => {
                if let Some(c) = cur {
                    self.archive(tx, bucket, key, c).await?;
                }
                Ok(Some(new_version_id()))
            }
            Versioning::Suspended => {
                match cur {
                    Some(c) if c.version.is_some() => self.archive(tx, bucket, key, c).await?,
                    Some(c) => self.drop_row(tx, bucket, key, c).await?,
                    None => {}
                }
                if let Some(n) = self.noncurrent(tx, bucket, key, "null").await? {
                    self.drop_noncurrent(tx, bucket, key, &n).await?;
                }
                Ok(None)
            }
        }
    }

    /// The next `seq` of `key`'s noncurrent versions (newer than all there are).
    async fn next_seq(&self, tx: &mut Tx, bucket: &str, key: &str) -> Result<i64> {
        let max: Option<i64> =
            sqlx::query_scalar(self.db.q("SELECT MAX(seq) FROM versions WHERE bucket = ? AND okey = ?"))
                .bind(bucket)
                .bind(key.as_bytes())
                .fetch_one(&mut **tx)
                .await?;
        Ok(max.map_or(0, |m| m + 1))
    }

    /// Moves the current object `c` of `key` into `versions`, as its newest noncurrent
    /// version (same row id: its extent references do not change).
    async fn archive(&self, tx: &mut Tx, bucket: &str, key: &str, c: &Current) -> Result<()> {
        let seq = self.next_seq(tx, bucket, key).await?;
        // A locking read: the row as it is now. A plain one reads MySQL's snapshot,
        // which may predate a GC `switch` that committed before this transaction
        // locked the row: the version would keep the slices the switch moved away
        // from, and GC would free bytes it names.
        let sql = match self.db.backend {
            Backend::Sqlite => {
                "SELECT size, etag, modified, info, slices, rid FROM objects WHERE bucket = ? AND okey = ?"
            }
            _ => "SELECT size, etag, modified, info, slices, rid FROM objects WHERE bucket = ? AND okey = ? FOR UPDATE",
        };
        let row = sqlx::query(self.db.q(sql)).bind(bucket).bind(key.as_bytes()).fetch_one(&mut **tx).await?;
        sqlx::query(
            self.db
                .q("INSERT INTO versions (bucket, okey, seq, vid, marker, size, etag, modified, info, slices, rid) \
             VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)"),
        )
        .bind(bucket)
        .bind(key.as_bytes())
        .bind(seq)
        .bind(c.version.as_deref().unwrap_or("null"))
        .bind(row.try_get::<i64, _>("size")?)
        .bind(row.try_get::<String, _>("etag")?)
        .bind(row.try_get::<i64, _>("modified")?)
        .bind(row.try_get::<String, _>("info")?)
        .bind(row.try_get::<Vec<u8>, _>("slices")?)
        .bind(row.try_get::<Option<String>, _>("rid")?)
        .execute(&mut **tx)
        .await?;
        sqlx::query(self.db.q("DELETE FROM objects WHERE bucket = ? AND okey = ?"))
            .bind(bucket)
            .bind(key.as_bytes())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Adds a delete marker as `key`'s latest version (there is no current object).
    pub(super) async fn add_marker(&self, tx: &mut Tx, bucket: &str, key: &str, version: Option<&str>) -> Result<()> {
        let seq = self.next_seq(tx, bucket, key).await?;
        sqlx::query(
            self.db
                .q("INSERT INTO versions (bucket, okey, seq, vid, marker, size, etag, modified, info, slices, rid) \
             VALUES (?, ?, ?, ?, 1, 0, '', ?, '{}', ?, NULL)"),
        )
        .bind(bucket)
        .bind(key.as_bytes())
        .bind(seq)
        .bind(version.unwrap_or("null"))
        .bind(now_ms())
        .bind(Vec::<u8>::new())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The noncurrent version `version` of `key`, locked for the rest of `tx`.
    pub(super) async fn noncurrent(
        &self,
        tx: &mut Tx,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<Option<Noncurrent>> {
        let sql = match self.db.backend {
            Backend::Sqlite => "SELECT seq, marker, rid, slices, info FROM versions WHERE bucket = ? AND okey = ? AND vid = ?",
            _ => "SELECT seq, marker, rid, slices, info FROM versions WHERE bucket = ? AND okey = ? AND vid = ? FOR UPDATE",
        };
        let row = sqlx::query(self.db.q(sql))
            .bind(bucket)
            .bind(key.as_bytes())
            .bind(version)
            .fetch_optional(&mut **tx)
            .await?;
        row.map(|r| {
            Ok(Noncurrent {
                seq: r.try_get("seq")?,
                marker: r.try_get::<i64, _>("marker")? != 0,
                rid: r.try_get("rid")?,
                slices: r.try_get("slices")?,
                info: parse_info(&r.try_get::<String, _>("info")?)?,
            })
        })
        .transpose()
    }

    /// Deletes a noncurrent version (or marker) with its extent references.
    async fn drop_noncurrent(&self, tx: &mut Tx, bucket: &str, key: &str, n: &Noncurrent) -> Result<()> {
        if let Some(rid) = &n.rid {
            drop_refs(&self.db, tx, &object_owner(rid), &decode_named(&n.slices)?).await?;
        }
        sqlx::query(self.db.q("DELETE FROM versions WHERE bucket = ? AND okey = ? AND seq = ?"))
            .bind(bucket)
            .bind(key.as_bytes())
            .bind(n.seq)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Keeps the invariant after a version of `key` went: with no current object, a
    /// newest noncurrent version that is an object becomes the current one.
    async fn promote(&self, tx: &mut Tx, bucket: &str, key: &str) -> Result<()> {
        if self.exists(tx, bucket, key).await? {
            return Ok(());
        }
        // Locked, as it is now: a GC `switch` of this version that commits between a
        // plain read and the move would be undone by the move (the current object
        // naming the old slices while the references name the new ones).
        let sql = match self.db.backend {
            Backend::Sqlite => {
                "SELECT seq, vid, marker, size, etag, modified, info, slices, rid FROM versions \
                 WHERE bucket = ? AND okey = ? ORDER BY seq DESC LIMIT 1"
            }
            _ => {
                "SELECT seq, vid, marker, size, etag, modified, info, slices, rid FROM versions \
                 WHERE bucket = ? AND okey = ? ORDER BY seq DESC LIMIT 1 FOR UPDATE"
            }
        };
        let row = sqlx::query(self.db.q(sql)).bind(bucket).bind(key.as_bytes()).fetch_optional(&mut **tx).await?;
        let Some(r) = row else { return Ok(()) };
        if r.try_get::<i64, _>("marker")? != 0 {
            return Ok(());
        }
        let vid: String = r.try_get("vid")?;
        sqlx::query(self.db.q("INSERT INTO objects (bucket, okey, size, etag, modified, info, slices, rid, vid) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"))
        .bind(bucket)
        .bind(key.as_bytes())
        .bind(r.try_get::<i64, _>("size")?)
        .bind(r.try_get::<String, _>("etag")?)
        .bind(r.try_get::<i64, _>("modified")?)
        .bind(r.try_get::<String, _>("info")?)
        .bind(r.try_get::<Vec<u8>, _>("slices")?)
        .bind(r.try_get::<Option<String>, _>("rid")?)
        .bind(stored_version(&vid))
        .execute(&mut **tx)
        .await?;
        sqlx::query(self.db.q("DELETE FROM versions WHERE bucket = ? AND okey = ? AND seq = ?"))
            .bind(bucket)
            .bind(key.as_bytes())
            .bind(r.try_get::<i64, _>("seq")?)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Deletes the version `version` of `key` for good (an object version's slices are
    /// then named by nothing), if `allow` lets it go (it sees an object version's
    /// info; delete markers always go). When it was the current object, the newest
    /// version left becomes the latest. Deleting a version that is not there does
    /// nothing (`found` is false).
    pub async fn delete_version(
        &self,
        b: &Bucket,
        key: &str,
        version: &str,
        allow: &(dyn Fn(&ObjectInfo) -> Result<()> + Sync),
    ) -> Result<Deleted> {
        self.delete_version_if(b, key, version, allow, false).await
    }

    /// As [`Catalog::delete_version`]; with `noncurrent_only`, only if the version is
    /// not the current object (else nothing happens): lifecycle's noncurrent expiration
    /// never deletes a version a client's delete made current again meanwhile.
    pub async fn delete_version_if(
        &self,
        b: &Bucket,
        key: &str,
        version: &str,
        allow: &(dyn Fn(&ObjectInfo) -> Result<()> + Sync),
        noncurrent_only: bool,
    ) -> Result<Deleted> {
        Catalog::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            self.lock_bucket(&mut tx, &b.name, Some(b)).await?;
            self.lock_key(&mut tx, &b.name, key).await?;
            let want = stored_version(version);
            let mut d = Deleted { version: want.map(str::to_owned), marker: false, found: true };
            match self.current(&mut tx, &b.name, key).await? {
                Some(c) if c.version.as_deref() == want && noncurrent_only => d.found = false,
                Some(c) if c.version.as_deref() == want => {
                    allow(&c.info)?;
                    self.drop_current(&mut tx, &b.name, key).await?;
                }
                _ => match self.noncurrent(&mut tx, &b.name, key, version).await? {
                    Some(n) => {
                        if !n.marker {
                            allow(&n.info)?;
                        }
                        d.marker = n.marker;
                        self.drop_noncurrent(&mut tx, &b.name, key, &n).await?;
                    }
                    None => d.found = false,
                },
            }
            if d.found {
                self.promote(&mut tx, &b.name, key).await?;
            }
            tx.commit().await?;
            Ok(d)
        })
        .await
    }

    /// Deletes the delete marker `version` of `key` if it is the key's only version left
    /// (lifecycle's ExpiredObjectDeleteMarker); whether it did.
    pub async fn remove_lone_marker(&self, b: &Bucket, key: &str, version: &str) -> Result<bool> {
        Catalog::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            self.lock_bucket(&mut tx, &b.name, Some(b)).await?;
            self.lock_key(&mut tx, &b.name, key).await?;
            let n: i64 = sqlx::query_scalar(self.db.q("SELECT COUNT(*) FROM versions WHERE bucket = ? AND okey = ?"))
                .bind(&b.name)
                .bind(key.as_bytes())
                .fetch_one(&mut *tx)
                .await?;
            if n != 1 || self.exists(&mut tx, &b.name, key).await? {
                return Ok(false);
            }
            let Some(m) = self.noncurrent(&mut tx, &b.name, key, version).await?.filter(|m| m.marker) else {
                return Ok(false);
            };
            self.drop_noncurrent(&mut tx, &b.name, key, &m).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// The version `version` of `key` (`null`: the null version).
    pub async fn version(&self, bucket: &str, key: &str, version: &str) -> Result<Option<Entry>> {
        if let Some(o) = self.object(bucket, key).await? {
            if o.version.as_deref() == stored_version(version) {
                return Ok(Some(Entry::Object(o)));
            }
        }
        let row =
            sqlx::query(self.db.q("SELECT okey, seq, vid, marker, size, etag, modified, info, slices FROM versions \
             WHERE bucket = ? AND okey = ? AND vid = ?"))
            .bind(bucket)
            .bind(key.as_bytes())
            .bind(version)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(entry_from_row).transpose()
    }

    /// The delete marker that is `key`'s latest version, if it is one (a key without
    /// a current object).
    pub async fn latest_marker(&self, bucket: &str, key: &str) -> Result<Option<Marker>> {
        let row = sqlx::query(self.db.q("SELECT okey, seq, vid, marker, size, etag, modified, info FROM versions \
             WHERE bucket = ? AND okey = ? ORDER BY seq DESC LIMIT 1"))
        .bind(bucket)
        .bind(key.as_bytes())
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(match row.as_ref().map(entry_from_row).transpose()? {
            Some(Entry::Marker(m)) if self.object(bucket, key).await?.is_none() => Some(m),
            _ => None,
        })
    }

    /// Where a listing of versions given `key_marker` and `version_marker` continues:
    /// after that version of that key (after the whole key when no version is named or
    /// it is not there).
    pub async fn version_cursor(
        &self,
        bucket: &str,
        key_marker: &str,
        version_marker: Option<&str>,
    ) -> Result<VersionCursor> {
        let key = key_marker.as_bytes().to_vec();
        let Some(v) = version_marker.filter(|v| !v.is_empty()) else {
            return Ok(if key.is_empty() { VersionCursor::At(key) } else { VersionCursor::After(key) });
        };
        if let Some(o) = self.object(bucket, key_marker).await? {
            if o.version.as_deref() == stored_version(v) {
                return Ok(VersionCursor::AfterCurrent(key));
            }
        }
        let seq: Option<i64> =
            sqlx::query_scalar(self.db.q("SELECT seq FROM versions WHERE bucket = ? AND okey = ? AND vid = ?"))
                .bind(bucket)
                .bind(key_marker.as_bytes())
                .bind(v)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(match seq {
            Some(s) => VersionCursor::AfterSeq(key, s),
            None => VersionCursor::After(key),
        })
    }

    /// One page of versions of the keys under `prefix` from `cursor`, at most `max`
    /// entries and common prefixes. Both tables are read in batches from the cursor
    /// and merged (each key's current object first, then its noncurrent versions,
    /// newest first); a key under a common prefix stands for the prefix, and the
    /// listing seeks past all of the prefix's keys.
    pub async fn version_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        mut cursor: VersionCursor,
        max: usize,
        batch_min: usize,
    ) -> Result<VersionPage> {
        let mut page = VersionPage::default();
        let upper = successor(prefix.as_bytes());
        let delim = delimiter.filter(|d| !d.is_empty());
        let common = |key: &[u8]| -> Option<Vec<u8>> {
            let d = delim?.as_bytes();
            let rest = key.get(prefix.len()..)?;
            rest.windows(d.len()).position(|w| w == d).map(|i| key[..prefix.len() + i + d.len()].to_vec())
        };
        if cursor.key() < prefix.as_bytes() {
            cursor = VersionCursor::At(prefix.as_bytes().to_vec());
        }
        // A marker that is itself a common prefix continues after all of its keys.
        if let VersionCursor::After(k) = &cursor {
            if k.starts_with(prefix.as_bytes()) && common(k).is_some_and(|cp| &cp == k) {
                match successor(k) {
                    Some(n) => cursor = VersionCursor::At(n),
                    None => return Ok(page),
                }
            }
        }
        // The key of the entry listed last: a key's first noncurrent version listed is
        // its latest unless its current object came before it.
        let mut prev: Option<Vec<u8>> = match &cursor {
            VersionCursor::AfterCurrent(k) | VersionCursor::AfterSeq(k, _) => Some(k.clone()),
            _ => None,
        };
        let mut last: Option<(String, Option<String>)> = None;
        let mut l = self.lister().await?;
        let mut batch = if delim.is_some() { batch_min } else { max + 1 };
        loop {
            let n = page.entries.len() + page.prefixes.len();
            if n >= max {
                let (o, v) = self.versions_from(&mut l, bucket, &cursor, upper.as_deref(), 1).await?;
                let more = !o.is_empty() || !v.is_empty();
                page.next = if more { last } else { None };
                page.resume = more.then_some(cursor);
                return Ok(page);
            }
            let want = batch.min(max - n + 1).max(1);
            let (objs, vers) = self.versions_from(&mut l, bucket, &cursor, upper.as_deref(), want).await?;
            // Entries past the last of a full batch may be missing from this merge.
            let bound_o = (objs.len() == want).then(|| (objs.last().expect("full").key.as_bytes().to_vec(), i64::MAX));
            let bound_v = (vers.len() == want).then(|| {
                let (k, s, _) = vers.last().expect("full");
                (k.clone(), rank_of(*s))
            });
            if objs.is_empty() && vers.is_empty() {
                return Ok(page);
            }
            let mut merged: Vec<(Vec<u8>, i64, Entry)> = objs
                .into_iter()
                .map(|o| (o.key.as_bytes().to_vec(), CURRENT, Entry::Object(o)))
                .chain(vers.into_iter().map(|(k, s, e)| (k, rank_of(s), e)))
                .collect();
            merged.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            let within = |k: &[u8], r: i64| {
                let ok_o = bound_o.as_ref().is_none_or(|(bk, _)| k <= bk.as_slice());
                let ok_v = bound_v.as_ref().is_none_or(|(bk, br)| (k, r) <= (bk.as_slice(), *br));
                ok_o && ok_v
            };
            let mut cut = false;
            for (k, r, e) in merged {
                if !within(&k, r) || page.entries.len() + page.prefixes.len() >= max {
                    break;
                }
                if let Some(cp) = common(&k) {
                    let s = String::from_utf8(cp.clone())
                        .map_err(|_| CatalogError::Other("stored key is not UTF-8".into()))?;
                    last = Some((s.clone(), None));
                    page.prefixes.push(s);
                    match successor(&cp) {
                        Some(n) => cursor = VersionCursor::At(n),
                        None => return Ok(page),
                    }
                    prev = None;
                    cut = true;
                    break;
                }
                let latest = if r == CURRENT {
                    cursor = VersionCursor::AfterCurrent(k.clone());
                    true
                } else {
                    cursor = VersionCursor::AfterSeq(k.clone(), i64::MAX - r);
                    prev.as_deref() != Some(k.as_slice())
                };
                let version = match &e {
                    Entry::Object(o) => o.version.clone(),
                    Entry::Marker(m) => m.version.clone(),
                };
                last = Some((String::from_utf8_lossy(&k).into_owned(), Some(version.unwrap_or_else(|| "null".into()))));
                prev = Some(k);
                page.entries.push((e, latest));
            }
            let n = page.entries.len() + page.prefixes.len();
            if !cut && bound_o.is_none() && bound_v.is_none() && n < max {
                return Ok(page); // both tables read to the end
            }
            if cut {
                batch = batch_min;
            } else {
                batch = (batch * 2).min(max + 1);
            }
        }
    }

    /// Up to `limit` current objects and up to `limit` noncurrent versions after
    /// `cursor` and below `upper`, each in listing order (noncurrent versions as
    /// (key, seq, entry)).
    async fn versions_from(
        &self,
        l: &mut Lister,
        bucket: &str,
        cursor: &VersionCursor,
        upper: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Object>, Vec<(Vec<u8>, i64, Entry)>)> {
        let (key, objects_inclusive, seq_below) = match cursor {
            VersionCursor::At(k) => (k, true, Some(i64::MAX)),
            VersionCursor::AfterCurrent(k) => (k, false, Some(i64::MAX)),
            VersionCursor::AfterSeq(k, s) => (k, false, Some(*s)),
            VersionCursor::After(k) => (k, false, None),
        };
        let objs = l.range(bucket, key, objects_inclusive, upper, limit).await?;
        let seq_below = seq_below.unwrap_or(i64::MIN);
        let rows = match upper {
            Some(u) => sqlx::query(self.db.q(
                "SELECT okey, seq, vid, marker, size, etag, modified, info FROM versions \
                 WHERE bucket = ? AND (okey > ? OR (okey = ? AND seq < ?)) AND okey < ? ORDER BY okey, seq DESC LIMIT ?",
            ))
            .bind(bucket)
            .bind(key.as_slice())
            .bind(key.as_slice())
            .bind(seq_below)
            .bind(u)
            .bind(limit as i64),
            None => sqlx::query(self.db.q(
                "SELECT okey, seq, vid, marker, size, etag, modified, info FROM versions \
                 WHERE bucket = ? AND (okey > ? OR (okey = ? AND seq < ?)) ORDER BY okey, seq DESC LIMIT ?",
            ))
            .bind(bucket)
            .bind(key.as_slice())
            .bind(key.as_slice())
            .bind(seq_below)
            .bind(limit as i64),
        }
        .fetch_all(&mut *l.conn)
        .await?;
        let vers = rows
            .iter()
            .map(|r| Ok((key_from_row(r)?.into_bytes(), r.try_get::<i64, _>("seq")?, entry_from_row(r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((objs, vers))
    }
}

/// The listing rank of a key's current object: first.
const CURRENT: i64 = i64::MIN;

/// The listing rank of a noncurrent version within its key: after the current
/// object, newest first.
fn rank_of(seq: i64) -> i64 {
    i64::MAX - seq
}

fn entry_from_row(r: &sqlx::any::AnyRow) -> Result<Entry> {
    let key = key_from_row(r)?;
    let vid: String = r.try_get("vid")?;
    let version = stored_version(&vid).map(str::to_owned);
    let modified_ms = r.try_get("modified")?;
    if r.try_get::<i64, _>("marker")? != 0 {
        return Ok(Entry::Marker(Marker { key, version, modified_ms }));
    }
    let size = r.try_get::<i64, _>("size")? as u64;
    Ok(Entry::Object(Object {
        key,
        size,
        etag: r.try_get("etag")?,
        modified_ms,
        info: parse_info(&r.try_get::<String, _>("info")?)?,
        layout: layout_in_row(r, size)?,
        version,
    }))
}

/// The smallest byte string greater than every string starting with `p` (None: no
/// upper bound).
pub fn successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}
