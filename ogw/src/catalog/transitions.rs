//! Transition rules: objects of a bucket (under a prefix) move to another redundancy
//! policy once old enough, rewritten by GC (`gc::Gc`'s transition step) with the
//! compare-and-swap compaction uses. `ogw bucket-transition` sets them ("erasure-code
//! objects older than N days"); lifecycle Transition rules will be stored here too.

use std::time::Duration;

use gc::{Due, Transition};
use sqlx::Row;

use super::{decode_named, parse_info, Catalog, CatalogError, Result};
use crate::class::StorageClass;
use crate::db::Backend;

impl Catalog {
    /// Sets (or replaces) the rule of `rule.bucket` and `rule.prefix`.
    pub async fn set_transition(&self, rule: &Transition) -> Result<()> {
        if StorageClass::from_name(&rule.class).is_none() {
            return Err(CatalogError::Invalid(format!("unknown storage class {:?}", rule.class)));
        }
        let after = i64::try_from(rule.after.as_millis())
            .map_err(|_| CatalogError::Invalid(format!("transition age {:?} is too long", rule.after)))?;
        let db = &self.db;
        let (_turn, mut tx) = db.begin().await?;
        // The bucket row locked: a DeleteBucket (which drops its rules) waits or wins.
        let find = match db.backend {
            Backend::Sqlite => "SELECT name FROM buckets WHERE name = ?",
            _ => "SELECT name FROM buckets WHERE name = ? FOR UPDATE",
        };
        if sqlx::query(db.q(find)).bind(&rule.bucket).fetch_optional(&mut *tx).await?.is_none() {
            return Err(CatalogError::NoSuchBucket);
        }
        sqlx::query(db.q("DELETE FROM transitions WHERE bucket = ? AND prefix = ?"))
            .bind(&rule.bucket)
            .bind(rule.prefix.as_bytes())
            .execute(&mut *tx)
            .await?;
        sqlx::query(db.q("INSERT INTO transitions (bucket, prefix, after_ms, policy, class) VALUES (?, ?, ?, ?, ?)"))
            .bind(&rule.bucket)
            .bind(rule.prefix.as_bytes())
            .bind(after)
            .bind(rule.policy.to_string())
            .bind(&rule.class)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes the rule of `bucket` and `prefix`; whether there was one.
    pub async fn remove_transition(&self, bucket: &str, prefix: &str) -> Result<bool> {
        let r = sqlx::query(self.db.q("DELETE FROM transitions WHERE bucket = ? AND prefix = ?"))
            .bind(bucket)
            .bind(prefix.as_bytes())
            .execute(&self.db.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The rules of `bucket`, or of every bucket.
    pub async fn transitions(&self, bucket: Option<&str>) -> Result<Vec<Transition>> {
        let rows = match bucket {
            Some(b) => {
                sqlx::query(
                    self.db.q("SELECT bucket, prefix, after_ms, policy, class FROM transitions WHERE bucket = ? \
                     ORDER BY bucket, prefix"),
                )
                .bind(b)
                .fetch_all(&self.db.pool)
                .await?
            }
            None => {
                sqlx::query(
                    self.db
                        .q("SELECT bucket, prefix, after_ms, policy, class FROM transitions ORDER BY bucket, prefix"),
                )
                .fetch_all(&self.db.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                let prefix: Vec<u8> = r.try_get("prefix")?;
                Ok(Transition {
                    bucket: r.try_get("bucket")?,
                    prefix: String::from_utf8(prefix)
                        .map_err(|_| CatalogError::Other("stored transition prefix is not UTF-8".into()))?,
                    after: Duration::from_millis(r.try_get::<i64, _>("after_ms")?.max(0) as u64),
                    policy: r.try_get::<String, _>("policy")?.parse().map_err(CatalogError::Other)?,
                    class: r.try_get("class")?,
                })
            })
            .collect()
    }

    /// See `gc::Catalog::due`.
    pub async fn due(
        &self,
        rule: &Transition,
        after: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> Result<(Vec<Due>, Option<String>)> {
        let q = match after {
            Some(k) => sqlx::query(
                self.db.q("SELECT okey, rid, size, modified, info, slices FROM objects WHERE bucket = ? AND okey > ? \
                 ORDER BY okey LIMIT ?"),
            )
            .bind(&rule.bucket)
            .bind(k.as_bytes().to_vec()),
            None => sqlx::query(
                self.db
                    .q("SELECT okey, rid, size, modified, info, slices FROM objects WHERE bucket = ? AND okey >= ? \
                 ORDER BY okey LIMIT ?"),
            )
            .bind(&rule.bucket)
            .bind(rule.prefix.as_bytes().to_vec()),
        };
        let rows = q.bind(limit as i64).fetch_all(&self.db.pool).await?;
        let full = rows.len() == limit;
        let mut due = Vec::new();
        let mut last = None;
        for r in &rows {
            let key = super::key_from_row(r)?;
            if !key.starts_with(&rule.prefix) {
                // Past the prefix: the scan is over.
                return Ok((due, None));
            }
            let rid: Option<String> = r.try_get("rid")?;
            let info = parse_info(&r.try_get::<String, _>("info")?)?;
            // Rows without a row id predate GC, which does not run while any is left.
            // An object whose bytes are kept in its row is due with no slices: its
            // transition only labels it (`GcCatalog::transit`), its bytes stay there.
            if let Some(rid) = rid {
                if r.try_get::<i64, _>("modified")? < before_ms && info.policy != Some(rule.policy) {
                    due.push(Due {
                        owner: super::refs::object_owner(&rid),
                        key: key.clone(),
                        size: r.try_get::<i64, _>("size")? as u64,
                        slices: decode_named(&r.try_get::<Vec<u8>, _>("slices")?)?,
                    });
                }
            }
            last = Some(key);
        }
        Ok((due, if full { last } else { None }))
    }
}
