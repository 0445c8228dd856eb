//! Users, password history, sessions with rotating refresh tokens, audit.

use sqlx::any::AnyRow;
use sqlx::Row;
use swarmgate_core::{AuditEvent, NewUser, User};

use crate::error::is_unique_violation;
use crate::{Store, StoreError};

/// A login session: the family of one refresh-token chain. Access tokens
/// carry its id as `sid`, so revoking it kills both kinds of token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was current; it is now spent and `new_hash` replaces it.
    Rotated { session_id: String, user_id: String },
    /// The token had already been rotated: someone replayed it. The whole
    /// session has been revoked.
    Reused { session_id: String, user_id: String },
    /// Unknown, expired, or its session is revoked or expired.
    Invalid,
}

pub(crate) const USER_COLUMNS: &str =
    "id, username, email, full_name, role, password_hash, disabled, limits, created_at, updated_at";

pub(crate) fn user_from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    let limits: Option<String> = row.try_get("limits")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        full_name: row.try_get("full_name")?,
        role: row.try_get("role")?,
        password_hash: row.try_get("password_hash")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        limits: crate::json_column(limits.as_deref(), "users.limits")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&mut *self.db().await?)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Inserts a user and the first entry of its password history. Username
    /// and email are unique case-insensitively; a clash is `Conflict` naming
    /// the field.
    pub async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, username_lower, email, email_lower, full_name, role, password_hash, disabled, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9)",
        )
        .bind(&new.id)
        .bind(&new.username)
        .bind(new.username.to_lowercase())
        .bind(&new.email)
        .bind(new.email.to_lowercase())
        .bind(&new.full_name)
        .bind(&new.role)
        .bind(&new.password_hash)
        .bind(new.created_at)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            drop(tx);
            return Err(if is_unique_violation(&e) {
                self.conflicting_field(&new.username).await
            } else {
                e.into()
            });
        }
        sqlx::query(
            "INSERT INTO password_history (user_id, password_hash, created_at, seq)
             VALUES ($1, $2, $3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM password_history WHERE user_id = $1))",
        )
        .bind(&new.id)
        .bind(&new.password_hash)
        .bind(new.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_user(&new.id).await
    }

    async fn conflicting_field(&self, username: &str) -> StoreError {
        let mut conn = match self.db().await {
            Ok(conn) => conn,
            Err(e) => return e,
        };
        let taken = sqlx::query("SELECT 1 FROM users WHERE username_lower = $1")
            .bind(username.to_lowercase())
            .fetch_optional(&mut *conn)
            .await;
        match taken {
            Ok(Some(_)) => StoreError::Conflict { field: "username" },
            Ok(None) => StoreError::Conflict { field: "email" },
            Err(e) => e.into(),
        }
    }

    pub async fn get_user(&self, id: &str) -> Result<User, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.db().await?)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(user_from_row(&row)?)
    }

    /// Finds a user by username or email, case-insensitively.
    pub async fn find_user_by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
        let lower = login.to_lowercase();
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username_lower = $1 OR email_lower = $1 ORDER BY (username_lower = $1) DESC LIMIT 1"
        ))
        .bind(lower)
        .fetch_optional(&mut *self.db().await?)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// The newest `limit` password hashes of a user, newest first (the
    /// current one included).
    pub async fn recent_password_hashes(
        &self,
        user_id: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT password_hash FROM password_history WHERE user_id = $1 ORDER BY seq DESC, created_at DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter()
            .map(|r| r.try_get("password_hash").map_err(StoreError::from))
            .collect()
    }

    /// Replaces the password hash and records it in the history.
    pub async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(password_hash)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO password_history (user_id, password_hash, created_at, seq)
             VALUES ($1, $2, $3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM password_history WHERE user_id = $1))",
        )
        .bind(user_id)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_user_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
            .bind(i64::from(disabled))
            .bind(now)
            .bind(user_id)
            .execute(&mut *self.db().await?)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Opens a session with its first refresh token (stored as a hash).
    pub async fn create_session(
        &self,
        session: &Session,
        refresh_hash: &str,
        refresh_expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&session.id)
        .bind(&session.user_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(refresh_hash)
        .bind(&session.id)
        .bind(session.created_at)
        .bind(refresh_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_session(&self, id: &str) -> Result<Session, StoreError> {
        let row = sqlx::query(
            "SELECT id, user_id, created_at, expires_at, revoked_at FROM sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *self.db().await?)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(Session {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }

    /// Spends a refresh token and issues its successor in one transaction.
    /// The conditional UPDATE is the arbiter: of two concurrent presentations
    /// of one token exactly one rotates; the other is treated as reuse.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET rotated_at = $1 WHERE token_hash = $2 AND rotated_at IS NULL AND expires_at > $1 RETURNING session_id",
        )
        .bind(now)
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(spent) = spent else {
            drop(tx);
            return self.classify_failed_refresh(old_hash, now).await;
        };
        let session_id: String = spent.try_get("session_id")?;
        let session = sqlx::query(
            "SELECT user_id FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(&session_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(session) = session else {
            tx.commit().await?;
            return Ok(RefreshOutcome::Invalid);
        };
        let user_id: String = session.try_get("user_id")?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(new_hash)
        .bind(&session_id)
        .bind(now)
        .bind(new_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated {
            session_id,
            user_id,
        })
    }

    async fn classify_failed_refresh(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let row = sqlx::query(
            "SELECT r.session_id, r.rotated_at, s.user_id FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&mut *self.db().await?)
        .await?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Invalid);
        };
        let rotated_at: Option<i64> = row.try_get("rotated_at")?;
        if rotated_at.is_none() {
            return Ok(RefreshOutcome::Invalid);
        }
        let session_id: String = row.try_get("session_id")?;
        let user_id: String = row.try_get("user_id")?;
        self.revoke_session(&session_id, "refresh_token_reuse", now)
            .await?;
        Ok(RefreshOutcome::Reused {
            session_id,
            user_id,
        })
    }

    /// Marks a session revoked (idempotent: the first reason and time stay).
    pub async fn revoke_session(&self, id: &str, reason: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    /// Revokes every live session of a user except `keep` and returns the
    /// ids it revoked, so the caller can publish them to the shared state.
    pub async fn revoke_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
        reason: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2
             WHERE user_id = $3 AND revoked_at IS NULL AND expires_at > $1 AND id <> $4
             RETURNING id",
        )
        .bind(now)
        .bind(reason)
        .bind(user_id)
        .bind(keep.unwrap_or(""))
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }

    /// Sessions revoked at or after `since`, to seed the shared revocation
    /// state after a restart (access tokens of those sessions may still be
    /// unexpired).
    pub async fn sessions_revoked_since(
        &self,
        since: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1")
            .bind(since)
            .fetch_all(&mut *self.db().await?)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("revoked_at")?)))
            .collect()
    }

    pub async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (at, event, user_id, username, client_ip, request_id, outcome, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(event.at)
        .bind(&event.event)
        .bind(&event.user_id)
        .bind(&event.username)
        .bind(&event.client_ip)
        .bind(&event.request_id)
        .bind(&event.outcome)
        .bind(event.detail.to_string())
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    /// The newest `limit` audit events, newest first.
    pub async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, event, user_id, username, client_ip, request_id, outcome, detail FROM audit_events ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }
}

/// An audit row (the `detail` column holds JSON text).
pub(crate) fn audit_from_row(r: &AnyRow) -> Result<AuditEvent, StoreError> {
    let detail: String = r.try_get("detail")?;
    Ok(AuditEvent {
        at: r.try_get("at")?,
        event: r.try_get("event")?,
        user_id: r.try_get("user_id")?,
        username: r.try_get("username")?,
        client_ip: r.try_get("client_ip")?,
        request_id: r.try_get("request_id")?,
        outcome: r.try_get("outcome")?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    })
}
