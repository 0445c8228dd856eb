//! Token usage of LLM calls: written in batches, summed on demand.

use sqlx::Row;

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub at: i64,
    pub user_id: String,
    pub key_id: Option<String>,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub estimated: bool,
    pub streamed: bool,
}

/// How `usage_summary` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Model,
    Key,
    User,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub group: Option<String>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

impl Store {
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for r in records {
            sqlx::query(
                "INSERT INTO usage_events (at, user_id, key_id, model, prompt_tokens, completion_tokens, total_tokens, estimated, streamed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(r.at)
            .bind(&r.user_id)
            .bind(&r.key_id)
            .bind(&r.model)
            .bind(r.prompt_tokens)
            .bind(r.completion_tokens)
            .bind(r.total_tokens)
            .bind(i64::from(r.estimated))
            .bind(i64::from(r.streamed))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sums per group over `[since, until)`, for one user or (None) all.
    /// Usage summed by `group`, in the order of the group (a missing key
    /// or model sorts as ""): `limit` groups after `after`.
    pub async fn usage_summary(
        &self,
        user_id: Option<&str>,
        since: i64,
        until: i64,
        group: UsageGroup,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let column = match group {
            UsageGroup::Model => "model",
            UsageGroup::Key => "key_id",
            UsageGroup::User => "user_id",
        };
        let rows = sqlx::query(&format!(
            // PostgreSQL sums BIGINT as NUMERIC; cast back for both engines.
            "SELECT {column} AS grp, COUNT(*) AS requests,
                    CAST(SUM(prompt_tokens) AS BIGINT) AS prompt,
                    CAST(SUM(completion_tokens) AS BIGINT) AS completion,
                    CAST(SUM(total_tokens) AS BIGINT) AS total
             FROM usage_events
             WHERE ($1 = '' OR user_id = $1) AND at >= $2 AND at < $3
               AND ($4 = 0 OR COALESCE({column}, '') > $5)
             GROUP BY {column}
             ORDER BY COALESCE({column}, '')
             LIMIT $6"
        ))
        .bind(user_id.unwrap_or(""))
        .bind(since)
        .bind(until)
        .bind(i64::from(after.is_some()))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    group: r.try_get("grp")?,
                    requests: r.try_get("requests")?,
                    prompt_tokens: r.try_get("prompt")?,
                    completion_tokens: r.try_get("completion")?,
                    total_tokens: r.try_get("total")?,
                })
            })
            .collect()
    }

    /// Tokens recorded under one key id (an API key, or `agent:ID`).
    pub async fn usage_total_of_key(&self, key_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(total_tokens), 0) AS BIGINT) AS n FROM usage_events WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_one(&mut *self.db().await?)
        .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }
}
