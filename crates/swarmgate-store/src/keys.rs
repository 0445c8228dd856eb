//! Token signing keys. Every instance signs with the newest active key, so
//! they live in the shared database rather than on one machine's disk.

use sqlx::Row;

use swarmgate_core::SigningKeyRow;

use crate::{Store, StoreError};

impl Store {
    /// All keys of an algorithm: the current (unretired) one first, then
    /// the rest newest first. Creation times are seconds, so a rotation in
    /// the same second as the previous key must not make the order a tie.
    pub async fn signing_keys(&self, algorithm: &str) -> Result<Vec<SigningKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, private_key, public_key, created_at, retired_at FROM signing_keys WHERE algorithm = $1 ORDER BY CASE WHEN retired_at IS NULL THEN 0 ELSE 1 END, created_at DESC, kid DESC",
        )
        .bind(algorithm)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRow {
                    kid: r.try_get("kid")?,
                    algorithm: r.try_get("algorithm")?,
                    private_key: r.try_get("private_key")?,
                    public_key: r.try_get("public_key")?,
                    created_at: r.try_get("created_at")?,
                    retired_at: r.try_get("retired_at")?,
                })
            })
            .collect()
    }

    /// Adds a key and retires every other active key of its algorithm.
    pub async fn add_signing_key(&self, key: &SigningKeyRow) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE signing_keys SET retired_at = $1 WHERE algorithm = $2 AND retired_at IS NULL",
        )
        .bind(key.created_at)
        .bind(&key.algorithm)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds a key only when the algorithm has no key yet; returns whether it
    /// was inserted. Two instances starting at once on an empty database
    /// therefore end up with one key, not two competing ones.
    pub async fn add_first_signing_key(&self, key: &SigningKeyRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at)
             SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE algorithm = $2)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(key.created_at)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
