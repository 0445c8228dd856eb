//! API keys: looked up by the SHA-256 of the presented secret (a unique
//! index, never a scan).

use sqlx::any::AnyRow;
use sqlx::Row;
use swarmgate_core::ApiKey;

use crate::{json_text, json_text_opt, Store, StoreError};

const KEY_COLUMNS: &str = "id, user_id, name, prefix, key_hash, permissions, models, limits, created_at, expires_at, last_used_at, revoked_at";

fn key_from_row(row: &AnyRow) -> Result<ApiKey, StoreError> {
    let permissions: String = row.try_get("permissions")?;
    let models: Option<String> = row.try_get("models")?;
    let corrupt = |e: serde_json::Error| StoreError::Database(format!("api_keys row: {e}"));
    Ok(ApiKey {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        key_hash: row.try_get("key_hash")?,
        permissions: serde_json::from_str(&permissions).map_err(corrupt)?,
        models: models
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(corrupt)?,
        limits: crate::json_column(
            row.try_get::<Option<String>, _>("limits")?.as_deref(),
            "api_keys.limits",
        )?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Store {
    pub async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let permissions = json_text(&key.permissions)?;
        let models = json_text_opt(key.models.as_ref())?;
        let limits = json_text_opt(key.limits.as_ref())?;
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, permissions, models, limits, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&key.id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(permissions)
        .bind(models)
        .bind(limits)
        .bind(key.created_at)
        .bind(key.expires_at)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind(key_hash)
        .fetch_optional(&mut *self.db().await?)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.db().await?)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// A user's keys, newest first.
    /// A user's keys, newest first: `limit` of them after the key created
    /// at `after.0` with id `after.1`.
    pub async fn list_api_keys(
        &self,
        user_id: &str,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let (after_at, after_id) = after.unwrap_or((i64::MAX, ""));
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys
             WHERE user_id = $1
               AND ($3 = '' OR created_at < $2 OR (created_at = $2 AND id > $3))
             ORDER BY created_at DESC, id
             LIMIT $4"
        ))
        .bind(user_id)
        .bind(after_at)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes one key; returns false when it was already revoked or absent.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *self.db().await?)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes every live key of a user; returns their ids.
    pub async fn revoke_user_api_keys(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL RETURNING id",
        )
        .bind(now)
        .bind(user_id)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }

    /// `(id, expires_at)` of keys revoked at or after `since`.
    pub async fn api_keys_revoked_since(
        &self,
        since: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT id, expires_at FROM api_keys WHERE revoked_at >= $1")
            .bind(since)
            .fetch_all(&mut *self.db().await?)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("expires_at")?)))
            .collect()
    }

    /// `(id, expires_at)` of every revoked key that has not expired yet:
    /// what the shared state must know after it lost its data.
    pub async fn live_revoked_api_keys(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, expires_at FROM api_keys WHERE revoked_at IS NOT NULL AND expires_at > $1",
        )
        .bind(now)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("expires_at")?)))
            .collect()
    }

    /// Writes batched `last_used_at` values (never moving one backwards).
    pub async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for (id, at) in used {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
