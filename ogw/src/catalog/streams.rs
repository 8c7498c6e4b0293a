//! The LogStreams this gateway owns, recorded under its name so that a restart reopens
//! them (with a new epoch, fencing a previous incarnation).

use proto::meta::StreamId;

use super::{Catalog, Result};
use crate::db::now_ms;

impl Catalog {
    pub async fn add_stream(&self, id: StreamId, owner: &str) -> Result<()> {
        sqlx::query(self.db.q("INSERT INTO streams (id, owner, created) VALUES (?, ?, ?)"))
            .bind(id.0 as i64)
            .bind(owner)
            .bind(now_ms())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn streams_of(&self, owner: &str) -> Result<Vec<StreamId>> {
        let ids: Vec<i64> = sqlx::query_scalar(self.db.q("SELECT id FROM streams WHERE owner = ? ORDER BY id"))
            .bind(owner)
            .fetch_all(&self.db.pool)
            .await?;
        Ok(ids.into_iter().map(|i| StreamId(i as u64)).collect())
    }
}
