//! A bucket's sub-resource configurations (tagging, CORS, ...): one document per bucket
//! and kind, in the gateway's own JSON shape (checked when set, so a stored document
//! always parses). Set only into the bucket as the request found it (the row locked,
//! the incarnation checked), and dropped with the bucket.

use super::{Bucket, Catalog, Result};

/// The kinds of document a bucket can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Tagging,
    Cors,
    Acl,
    Policy,
    /// The LocationConstraint a bucket was created with (a plain string).
    Location,
}

impl ConfigKind {
    fn name(self) -> &'static str {
        match self {
            ConfigKind::Tagging => "tagging",
            ConfigKind::Cors => "cors",
            ConfigKind::Acl => "acl",
            ConfigKind::Policy => "policy",
            ConfigKind::Location => "location",
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
