//! Agent sessions: what was spawned, by whom, with what slice of budget,
//! and when and why it ended. What is live right now is in the shared
//! state; this is the record.

use sqlx::any::AnyRow;
use sqlx::Row;
use swarmgate_core::AgentSession;

use crate::{json_column, json_text, Store, StoreError};

const COLUMNS: &str = "id, agent_id, parent_id, key_id, name, model, budget, permissions, carved, created_at, expires_at, released_at, release_reason, tokens_used";

fn session_from_row(row: &AnyRow) -> Result<AgentSession, StoreError> {
    let text = |column: &str| -> Result<String, StoreError> { Ok(row.try_get(column)?) };
    Ok(AgentSession {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        parent_id: row.try_get("parent_id")?,
        key_id: row.try_get("key_id")?,
        name: row.try_get("name")?,
        model: row.try_get("model")?,
        budget: json_column(Some(&text("budget")?), "agent_sessions.budget")?.unwrap_or_default(),
        permissions: json_column(Some(&text("permissions")?), "agent_sessions.permissions")?
            .unwrap_or_default(),
        carved: json_column(Some(&text("carved")?), "agent_sessions.carved")?.unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        released_at: row.try_get("released_at")?,
        release_reason: row.try_get("release_reason")?,
        tokens_used: row.try_get("tokens_used")?,
    })
}

impl Store {
    pub async fn create_agent_session(&self, s: &AgentSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_sessions (id, agent_id, parent_id, key_id, name, model, budget, permissions, carved, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&s.id)
        .bind(&s.agent_id)
        .bind(&s.parent_id)
        .bind(s.key_id.as_deref())
        .bind(&s.name)
        .bind(s.model.as_deref())
        .bind(json_text(&s.budget)?)
        .bind(json_text(&s.permissions)?)
        .bind(json_text(&s.carved)?)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    /// A session by its id or its agent's id.
    pub async fn get_agent_session(&self, id: &str) -> Result<AgentSession, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM agent_sessions WHERE id = $1 OR agent_id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *self.db().await?)
        .await?
        .ok_or(StoreError::NotFound)?;
        session_from_row(&row)
    }

    /// Sessions newest first, of one parent or of everyone, before the
    /// cursor `(created_at, id)`; released ones included when `all`.
    pub async fn list_agent_sessions(
        &self,
        parent_id: Option<&str>,
        include_released: bool,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<AgentSession>, StoreError> {
        let (before_at, before_id) = before.unwrap_or((i64::MAX, ""));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM agent_sessions
             WHERE ($1 = '' OR parent_id = $1)
               AND ($2 = 1 OR released_at IS NULL)
               AND (created_at < $3 OR (created_at = $3 AND id < $4) OR $4 = '')
             ORDER BY created_at DESC, id DESC
             LIMIT $5"
        ))
        .bind(parent_id.unwrap_or(""))
        .bind(i64::from(include_released))
        .bind(before_at)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Every session not released yet (for the idle sweep).
    pub async fn live_agent_sessions(&self) -> Result<Vec<AgentSession>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM agent_sessions WHERE released_at IS NULL ORDER BY created_at"
        ))
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Marks a session released; false if it already was (another instance
    /// or request got there first, and did the giving back).
    pub async fn release_agent_session(
        &self,
        id: &str,
        reason: &str,
        tokens_used: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_sessions SET released_at = $1, release_reason = $2, tokens_used = $3
             WHERE id = $4 AND released_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(tokens_used)
        .bind(id)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
