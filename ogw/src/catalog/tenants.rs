//! Tenants and their access keys (the secret sealed by the master key).

use sqlx::Row;

use super::{taken, Catalog, CatalogError, Result};
use crate::db::now_ms;
use crate::limits::{ACCESS_KEY_BYTES, SECRET_KEY_BYTES, TENANT_NAME_BYTES};

impl Catalog {
    pub async fn create_tenant(&self, name: &str) -> Result<()> {
        let (min, max) = (TENANT_NAME_BYTES.start(), TENANT_NAME_BYTES.end());
        if !TENANT_NAME_BYTES.contains(&name.len())
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(CatalogError::Invalid(format!("a tenant name is {min}-{max} of A-Z a-z 0-9 - _ .")));
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
        if !ACCESS_KEY_BYTES.contains(&access_key.len()) || !access_key.chars().all(|c| c.is_ascii_alphanumeric()) {
            let (min, max) = (ACCESS_KEY_BYTES.start(), ACCESS_KEY_BYTES.end());
            return Err(CatalogError::Invalid(format!("an access key is {min}-{max} of A-Z a-z 0-9")));
        }
        if !SECRET_KEY_BYTES.contains(&secret.len()) || !secret.is_ascii() {
            let (min, max) = (SECRET_KEY_BYTES.start(), SECRET_KEY_BYTES.end());
            return Err(CatalogError::Invalid(format!("a secret key is {min}-{max} ASCII characters")));
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
