//! The lifecycle worker: one pass over every bucket with rules (`crate::lifecycle`),
//! run by GC each pass while it holds the GC lease (so one process acts at a time).
//! It expires current versions (a delete: a delete marker in a versioned bucket),
//! deletes noncurrent versions for good, removes delete markers left alone, and aborts
//! old multipart uploads. The rules and the versions are in SQL, so a restarted worker
//! simply looks again.
//!
//! **Invariant (no race with clients)**: the worker reads a listing, then acts on one
//! version at a time in its own transaction, and only if the version is still what it
//! judged: the current object with the same ETag and modification time
//! (`delete_object_if`), a version that is still noncurrent (`delete_version_if`), a
//! marker that is still its key's only version (`remove_lone_marker`). A version
//! written, deleted or made current by a client after the listing is never the one
//! acted on. Object Lock is checked in the deleting transaction, with no bypass: a
//! retained or held version stays.

use sqlx::Row;

use super::{Bucket, Catalog, CatalogError, Entry, Result, VersionCursor};
use crate::lifecycle::{Lifecycle, Rule};
use crate::lock::may_delete;

/// Versions read per listing query of the worker.
const BATCH: usize = 500;

pub use gc::Lifecycled as LifecycleReport;

/// What the scan knows of the key it is in.
struct KeyState {
    key: String,
    /// When the entry listed just before (newer) was made: when the next one became
    /// noncurrent.
    newer_ms: i64,
    /// Noncurrent versions seen and kept.
    kept: usize,
    /// The latest version is a delete marker (its id), and how many versions the key
    /// has left.
    marker: Option<Option<String>>,
    left: usize,
}

impl Catalog {
    /// One lifecycle pass at `now_ms`, with days of `day_ms`.
    pub async fn lifecycle_pass(&self, now_ms: i64, day_ms: i64) -> Result<LifecycleReport> {
        let mut r = LifecycleReport::default();
        let rows = sqlx::query(self.db.q("SELECT bucket, doc FROM bucket_config WHERE kind = ? ORDER BY bucket"))
            .bind("lifecycle")
            .fetch_all(&self.db.pool)
            .await?;
        for row in rows {
            let name: String = row.try_get("bucket")?;
            let doc: String = row.try_get("doc")?;
            let l: Lifecycle = serde_json::from_str(&doc)
                .map_err(|e| CatalogError::Other(format!("bucket {name}: stored lifecycle rules do not parse: {e}")))?;
            let Some(b) = self.bucket(&name).await? else { continue };
            self.abort_uploads(&b, &l, now_ms, day_ms, &mut r).await?;
            for prefix in scan_prefixes(&l) {
                self.expire_under(&b, &l, &prefix, now_ms, day_ms, &mut r).await?;
            }
        }
        Ok(r)
    }

    async fn abort_uploads(
        &self,
        b: &Bucket,
        l: &Lifecycle,
        now_ms: i64,
        day_ms: i64,
        r: &mut LifecycleReport,
    ) -> Result<()> {
        if !l.rules.iter().any(|x| x.enabled && x.abort_days.is_some()) {
            return Ok(());
        }
        let rows = sqlx::query(self.db.q("SELECT id, okey, created FROM uploads WHERE bucket = ?"))
            .bind(&b.name)
            .fetch_all(&self.db.pool)
            .await?;
        for row in rows {
            let key = super::key_from_row(&row)?;
            let created: i64 = row.try_get("created")?;
            if l.rules
                .iter()
                .any(|x| x.enabled && key.starts_with(x.key_prefix()) && x.abort_due(created, now_ms, day_ms))
            {
                let id: String = row.try_get("id")?;
                match self.abort_upload(&id).await {
                    Ok(()) => r.uploads_aborted += 1,
                    Err(CatalogError::NoSuchUpload) => {} // completed or aborted meanwhile
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Applies the rules to every version under `prefix`, key by key, newest first.
    async fn expire_under(
        &self,
        b: &Bucket,
        l: &Lifecycle,
        prefix: &str,
        now_ms: i64,
        day_ms: i64,
        r: &mut LifecycleReport,
    ) -> Result<()> {
        let mut cursor = VersionCursor::At(prefix.as_bytes().to_vec());
        let mut state: Option<KeyState> = None;
        loop {
            let page = self.version_page(&b.name, prefix, None, cursor.clone(), BATCH, BATCH).await?;
            for (e, latest) in &page.entries {
                let key = match e {
                    Entry::Object(o) => &o.key,
                    Entry::Marker(m) => &m.key,
                };
                if state.as_ref().is_none_or(|s| &s.key != key) {
                    if let Some(s) = state.take() {
                        self.settle(b, l, s, r).await?;
                    }
                    state = Some(KeyState { key: key.clone(), newer_ms: 0, kept: 0, marker: None, left: 0 });
                }
                let s = state.as_mut().expect("set above");
                s.left += 1;
                let modified = match e {
                    Entry::Object(o) => o.modified_ms,
                    Entry::Marker(m) => m.modified_ms,
                };
                if *latest {
                    match e {
                        Entry::Object(o) => {
                            let due = l
                                .rules
                                .iter()
                                .filter(|x| x.applies(&o.key, &o.info.tags, o.size))
                                .any(|x| x.expires_at(o.modified_ms, day_ms).is_some_and(|at| at <= now_ms));
                            if due
                                && self.delete_object_if(&b.name, &o.key, Some((&o.etag, o.modified_ms))).await?.found
                            {
                                r.expired += 1;
                            }
                        }
                        Entry::Marker(m) => s.marker = Some(m.version.clone()),
                    }
                } else {
                    let (tags, size, version, is_marker) = match e {
                        Entry::Object(o) => (o.info.tags.as_slice(), o.size, o.version.clone(), false),
                        Entry::Marker(m) => (&[][..], 0, m.version.clone(), true),
                    };
                    let applies =
                        |x: &&Rule| if is_marker { x.applies_to_marker(key) } else { x.applies(key, tags, size) };
                    let due = l
                        .rules
                        .iter()
                        .filter(applies)
                        .any(|x| x.noncurrent_expired(s.newer_ms, s.kept, now_ms, day_ms));
                    let mut gone = false;
                    if due {
                        let v = version.as_deref().unwrap_or("null");
                        let allow = |info: &super::ObjectInfo| {
                            may_delete(info.retention.as_ref(), info.legal_hold, false, crate::db::now_ms())
                                .map_err(|e| CatalogError::Locked(e.to_string()))
                        };
                        match self.delete_version_if(b, key, v, &allow, true).await {
                            Ok(d) if d.found => {
                                r.noncurrent_deleted += 1;
                                gone = true;
                            }
                            Ok(_) => {}
                            Err(CatalogError::Locked(_)) => r.locked += 1,
                            Err(e) => return Err(e),
                        }
                    }
                    if gone {
                        s.left -= 1;
                    } else {
                        s.kept += 1;
                    }
                }
                s.newer_ms = modified;
            }
            // (The position itself: the version `next` names may be one just deleted.)
            let Some(next) = page.resume else { break };
            cursor = next;
        }
        if let Some(s) = state.take() {
            self.settle(b, l, s, r).await?;
        }
        Ok(())
    }

    /// At the end of a key: a delete marker left as its only version goes, when a rule
    /// says to remove such markers.
    async fn settle(&self, b: &Bucket, l: &Lifecycle, s: KeyState, r: &mut LifecycleReport) -> Result<()> {
        let Some(version) = s.marker else { return Ok(()) };
        let wanted = l.rules.iter().any(|x| {
            x.applies_to_marker(&s.key)
                && x.expiration.as_ref().is_some_and(|e| e.expired_object_delete_marker == Some(true))
        });
        if wanted && s.left == 1 && self.remove_lone_marker(b, &s.key, version.as_deref().unwrap_or("null")).await? {
            r.markers_removed += 1;
        }
        Ok(())
    }
}

/// The prefixes to scan for `l`'s version rules: each enabled rule's, less those under
/// another one (scanned with it).
fn scan_prefixes(l: &Lifecycle) -> Vec<String> {
    let mut p: Vec<String> = l
        .rules
        .iter()
        .filter(|x| x.enabled && (x.expiration.is_some() || x.noncurrent.is_some()))
        .map(|x| x.key_prefix().to_owned())
        .collect();
    p.sort();
    p.dedup();
    let mut out: Vec<String> = Vec::new();
    for x in p {
        if !out.iter().any(|o| x.starts_with(o.as_str())) {
            out.push(x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Expiration;

    #[test]
    fn prefixes_under_another_are_scanned_with_it() {
        let rule = |p: &str, enabled: bool| Rule {
            id: p.into(),
            enabled,
            prefix: Some(p.into()),
            expiration: Some(Expiration { days: Some(1), ..Default::default() }),
            ..Default::default()
        };
        let l = Lifecycle { rules: vec![rule("a/b", true), rule("a/", true), rule("c", true), rule("d", false)] };
        assert_eq!(scan_prefixes(&l), vec!["a/".to_string(), "c".to_string()]);
    }
}
