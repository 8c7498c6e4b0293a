//! Tenants and their access keys (the secret sealed by the master key).

use sqlx::Row;

use super::{taken, Catalog, CatalogError, Result};
use crate::db::now_ms;

impl Catalog {
    pub async fn create_tenant(&self, name: &str) -> Result<()> {
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(CatalogError::Invalid("a tenant name is 1-128 of A-Z a-z 0-9 - _ .".into()));
        }
        sqlx::query(self.db.q("INSERT INTO tenants (name, created) VALUES (?, ?)"))
            .bind(name)
            .bind(now_ms())
            .execute(&self.db.pool)
            .await
            .map_err(|e| taken(e, format!("tenant {name} already exists")))?;
        Ok(())
    }

    pub async fn tenants(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(self.db.q("SELECT name FROM tenants ORDER BY name")).fetch_all(&self.db.pool).await?)
    }

    pub async fn tenant_exists(&self, name: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(self.db.q("SELECT COUNT(*) FROM tenants WHERE name = ?"))
            .bind(name)
            .fetch_one(&self.db.pool)
            .await?;
        Ok(n > 0)
    }

    /// Adds an access key for `tenant`; the secret is stored sealed by the master key.
    pub async fn add_key(&self, tenant: &str, access_key: &str, secret: &str) -> Result<()> {
        if !self.tenant_exists(tenant).await? {
            return Err(CatalogError::Invalid(format!("no tenant {tenant}")));
        }
        if access_key.len() < 3 || access_key.len() > 128 || !access_key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(CatalogError::Invalid("an access key is 3-128 of A-Z a-z 0-9".into()));
        }
        if secret.len() < 8 || secret.len() > 128 || !secret.is_ascii() {
            return Err(CatalogError::Invalid("a secret key is 8-128 ASCII characters".into()));
        }
        sqlx::query(self.db.q("INSERT INTO access_keys (access_key, tenant, secret, created) VALUES (?, ?, ?, ?)"))
            .bind(access_key)
            .bind(tenant)
            .bind(self.key.seal(secret.as_bytes()))
            .bind(now_ms())
            .execute(&self.db.pool)
            .await
            .map_err(|e| taken(e, format!("access key {access_key} already exists")))?;
        Ok(())
    }

    /// The tenant and secret of an access key.
    pub async fn key(&self, access_key: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query(self.db.q("SELECT tenant, secret FROM access_keys WHERE access_key = ?"))
            .bind(access_key)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let sealed: Vec<u8> = r.try_get("secret")?;
        let secret = self.key.open(&sealed).map_err(|e| CatalogError::Other(e.to_string()))?;
        let secret = String::from_utf8(secret).map_err(|_| CatalogError::Other("stored secret is not UTF-8".into()))?;
        Ok(Some((r.try_get("tenant")?, secret)))
    }

    pub async fn delete_key(&self, access_key: &str) -> Result<bool> {
        let r = sqlx::query(self.db.q("DELETE FROM access_keys WHERE access_key = ?"))
            .bind(access_key)
            .execute(&self.db.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}
