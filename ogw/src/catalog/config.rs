//! A bucket's sub-resource configurations (tagging, CORS, ...): one document per bucket
//! and kind, in the gateway's own JSON shape (checked when set, so a stored document
//! always parses). Set only into the bucket as the request found it (the row locked,
//! the incarnation checked), and dropped with the bucket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Bucket, Catalog, Result};

/// How long a cached document (or bucket row, `Catalog::bucket_cached`) is used before
/// being read again (another gateway's change takes effect within it).
const CACHE_TTL: Duration = Duration::from_secs(1);
/// Buckets cached at most (the cache is cleared when it grows past).
const CACHE_BUCKETS_MAX: usize = 10_000;

/// Per bucket, a value as read within the last `CACHE_TTL`, at most `CACHE_BUCKETS_MAX`
/// of them (cleared when it grows past).
pub(super) struct BucketMap<V>(Mutex<HashMap<String, (Instant, V)>>);

impl<V: Clone> BucketMap<V> {
    /// `bucket`'s value, if read within `CACHE_TTL`.
    pub(super) fn fresh(&self, bucket: &str) -> Option<V> {
        self.0.lock().get(bucket).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, v)| v.clone())
    }

    /// Remembers `v` as `bucket`'s value, read now.
    pub(super) fn put(&self, bucket: &str, v: V) {
        let mut m = self.0.lock();
        if m.len() >= CACHE_BUCKETS_MAX {
            m.clear();
        }
        m.insert(bucket.to_owned(), (Instant::now(), v));
    }

    pub(super) fn forget(&self, bucket: &str) {
        self.0.lock().remove(bucket);
    }
}

impl<V> Default for BucketMap<V> {
    fn default() -> Self {
        BucketMap(Mutex::default())
    }
}

/// One kind of bucket document, parsed, read through a short cache that the gateway's
/// own changes clear (`forget`). A failed read is not cached, and is the caller's to
/// decide on (refusing, for what guards access).
pub struct ConfigCache<T> {
    kind: ConfigKind,
    /// Parses a stored document of a bucket (checked when set, so `None` is unexpected).
    parse: fn(&str, &str) -> Option<T>,
    /// What each bucket's document was (None: none set).
    map: BucketMap<Option<Arc<T>>>,
}

impl<T> ConfigCache<T> {
    pub fn new(kind: ConfigKind, parse: fn(&str, &str) -> Option<T>) -> ConfigCache<T> {
        ConfigCache { kind, parse, map: BucketMap::default() }
    }

    /// The document of `bucket` (`None`: none, or no such bucket).
    pub async fn get(&self, catalog: &Catalog, bucket: &str) -> Result<Option<Arc<T>>> {
        if let Some(d) = self.map.fresh(bucket) {
            return Ok(d);
        }
        let doc = catalog.bucket_config(bucket, self.kind).await?;
        let parsed = doc.and_then(|d| (self.parse)(&d, bucket)).map(Arc::new);
        self.map.put(bucket, parsed.clone());
        Ok(parsed)
    }

    /// Forgets `bucket`'s document (it was changed here).
    pub fn forget(&self, bucket: &str) {
        self.map.forget(bucket);
    }
}

/// The kinds of document a bucket can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Tagging,
    Cors,
    Acl,
    Policy,
    /// The LocationConstraint a bucket was created with (a plain string).
    Location,
    /// Object Lock (`crate::lock::LockConfig`): present for good once enabled.
    ObjectLock,
    /// Lifecycle rules (`crate::lifecycle::Lifecycle`).
    Lifecycle,
    /// Default server-side encryption (`s3/sse.rs`).
    Encryption,
}

impl ConfigKind {
    fn name(self) -> &'static str {
        match self {
            ConfigKind::Tagging => "tagging",
            ConfigKind::Cors => "cors",
            ConfigKind::Acl => "acl",
            ConfigKind::Policy => "policy",
            ConfigKind::Location => "location",
            ConfigKind::ObjectLock => "object-lock",
            ConfigKind::Lifecycle => "lifecycle",
            ConfigKind::Encryption => "encryption",
        }
    }
}

impl Catalog {
    /// The bucket's document of `kind`, if set.
    pub async fn bucket_config(&self, bucket: &str, kind: ConfigKind) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(self.db.q("SELECT doc FROM bucket_config WHERE bucket = ? AND kind = ?"))
            .bind(bucket)
            .bind(kind.name())
            .fetch_optional(&self.db.pool)
            .await?)
    }

    /// Sets (`Some`) or removes (`None`) the document of `kind` of the bucket `b` as the
    /// request found it: `NoSuchBucket` if it was deleted (or made again) meanwhile.
    pub async fn set_bucket_config(&self, b: &Bucket, kind: ConfigKind, doc: Option<&str>) -> Result<()> {
        Catalog::retry(false, || async {
            let (_turn, mut tx) = self.db.begin().await?;
            self.lock_bucket(&mut tx, &b.name, Some(b)).await?;
            sqlx::query(self.db.q("DELETE FROM bucket_config WHERE bucket = ? AND kind = ?"))
                .bind(&b.name)
                .bind(kind.name())
                .execute(&mut *tx)
                .await?;
            if let Some(doc) = doc {
                sqlx::query(self.db.q("INSERT INTO bucket_config (bucket, kind, doc) VALUES (?, ?, ?)"))
                    .bind(&b.name)
                    .bind(kind.name())
                    .bind(doc)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}
