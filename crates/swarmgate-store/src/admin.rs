//! User administration and the audit query: paging is by keyset (the last
//! row's sort key), never by OFFSET, so pages stay cheap and stable.

use sqlx::Row;
use sqlx::{Any, Transaction};
use swarmgate_core::{AuditEvent, User};

use crate::identity::{audit_from_row, user_from_row, USER_COLUMNS};
use crate::{Store, StoreError};

/// What `update_user` changes; `None` leaves a field alone.
#[derive(Debug, Default, Clone)]
pub struct UserUpdate {
    pub role: Option<String>,
    pub disabled: Option<bool>,
    /// `Some(None)` clears the name.
    pub full_name: Option<Option<String>>,
    /// `Some(None)` removes the user's own limits.
    pub limits: Option<Option<swarmgate_core::LimitSet>>,
}

/// Filters of the audit query.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub event: Option<String>,
    pub user_id: Option<String>,
    pub since: Option<i64>,
    /// Only rows with an id below this (the cursor).
    pub before_id: Option<i64>,
}

/// `%` and `_` in a search term are literal characters.
fn like_pattern(term: &str) -> String {
    let mut escaped = String::with_capacity(term.len() + 2);
    escaped.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    escaped
}

/// Appends to the feed every instance polls to drop its cached copy.
async fn record_user_event(
    tx: &mut Transaction<'_, Any>,
    user_id: &str,
    change: &str,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO user_events (user_id, change, at) VALUES ($1, $2, $3)")
        .bind(user_id)
        .bind(change)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Users ordered by lower-case username, after `after` (exclusive),
    /// optionally matching `q` in the username or email.
    pub async fn list_users(
        &self,
        q: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users
             WHERE ($1 = '' OR username_lower LIKE $2 ESCAPE '\\' OR email_lower LIKE $2 ESCAPE '\\')
               AND username_lower > $3
             ORDER BY username_lower
             LIMIT $4"
        ))
        .bind(q.unwrap_or(""))
        .bind(like_pattern(q.unwrap_or("")))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter()
            .map(|r| user_from_row(r).map_err(StoreError::from))
            .collect()
    }

    /// Applies an update and records a user event (so every instance drops
    /// what it cached about this user). Returns the updated user.
    pub async fn update_user(
        &self,
        id: &str,
        update: &UserUpdate,
        now: i64,
    ) -> Result<User, StoreError> {
        Ok(self.update_user_revoking(id, update, None, now).await?.0)
    }

    /// [`update_user`](Self::update_user), and when `revoke` gives a
    /// reason, the user's sessions and API keys revoked in the same
    /// transaction: a disabled user is never saved with live credentials
    /// (a crash between two transactions left exactly that).
    pub async fn update_user_revoking(
        &self,
        id: &str,
        update: &UserUpdate,
        revoke: Option<&str>,
        now: i64,
    ) -> Result<(User, Revoked), StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET
                role = COALESCE($1, role),
                disabled = COALESCE($2, disabled),
                full_name = CASE WHEN $3 = 1 THEN $4 ELSE full_name END,
                limits = CASE WHEN $7 = 1 THEN $8 ELSE limits END,
                updated_at = $5
             WHERE id = $6",
        )
        .bind(update.role.as_deref())
        .bind(update.disabled.map(i64::from))
        .bind(i64::from(update.full_name.is_some()))
        .bind(update.full_name.clone().flatten())
        .bind(now)
        .bind(id)
        .bind(i64::from(update.limits.is_some()))
        .bind(crate::json_text_opt(update.limits.flatten().as_ref())?)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        record_user_event(&mut tx, id, "updated", now).await?;
        let mut revoked = Revoked::default();
        if let Some(reason) = revoke {
            revoked.sessions = ids(sqlx::query(
                "UPDATE sessions SET revoked_at = $1, revoke_reason = $2
                 WHERE user_id = $3 AND revoked_at IS NULL AND expires_at > $1
                 RETURNING id",
            )
            .bind(now)
            .bind(reason)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?)?;
            revoked.keys = ids(sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL RETURNING id",
            )
            .bind(now)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?)?;
        }
        tx.commit().await?;
        Ok((self.get_user(id).await?, revoked))
    }

    /// Deletes a user (sessions and keys go with it) and records the event.
    pub async fn delete_user(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        record_user_event(&mut tx, id, "deleted", now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ids of users changed by an administrator at or after `since`.
    pub async fn users_changed_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT user_id FROM user_events WHERE at >= $1")
            .bind(since)
            .fetch_all(&mut *self.db().await?)
            .await?;
        rows.iter()
            .map(|r| r.try_get("user_id").map_err(StoreError::from))
            .collect()
    }

    /// Ids of users whose lockout an administrator cleared at or after
    /// `since`.
    pub async fn users_unlocked_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT user_id FROM user_events WHERE at >= $1 AND change = 'unlocked'",
        )
        .bind(since)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter()
            .map(|r| r.try_get("user_id").map_err(StoreError::from))
            .collect()
    }

    /// Records a change of a user outside an update (an unlock).
    pub async fn record_user_change(
        &self,
        user_id: &str,
        change: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        record_user_event(&mut tx, user_id, change, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit rows, newest first, with their ids (the cursor).
    pub async fn query_audit(
        &self,
        filter: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, event, user_id, username, client_ip, request_id, outcome, detail FROM audit_events
             WHERE ($1 = '' OR event = $1)
               AND ($2 = '' OR user_id = $2)
               AND at >= $3
               AND id < $4
             ORDER BY id DESC
             LIMIT $5",
        )
        .bind(filter.event.as_deref().unwrap_or(""))
        .bind(filter.user_id.as_deref().unwrap_or(""))
        .bind(filter.since.unwrap_or(i64::MIN))
        .bind(filter.before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, audit_from_row(r)?)))
            .collect()
    }
}

/// The ids of what an update revoked, for the shared state to hear of.
#[derive(Debug, Default)]
pub struct Revoked {
    pub sessions: Vec<String>,
    pub keys: Vec<String>,
}

fn ids(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<String>, StoreError> {
    use sqlx::Row;
    rows.iter()
        .map(|r| r.try_get("id").map_err(StoreError::from))
        .collect()
}
