//! OAuth2 clients, access tokens revoked one by one, and the swarm's nodes.

use sqlx::any::AnyRow;
use sqlx::Row;
use swarmgate_core::{Node, OAuthClient};

use crate::{json_text, Store, StoreError};

const CLIENT_COLUMNS: &str = "id, name, owner_id, grant_types, scopes, auth_method, secret_hash, jwks, jwks_uri, created_at, updated_at, deleted_at";
const NODE_COLUMNS: &str =
    "node_id, address, labels, registered_at, last_seen_at, last_report_at, metrics";

fn corrupt(table: &'static str) -> impl Fn(serde_json::Error) -> StoreError {
    move |e| StoreError::Database(format!("{table} row: {e}"))
}

fn client_from_row(row: &AnyRow) -> Result<OAuthClient, StoreError> {
    let grant_types: String = row.try_get("grant_types")?;
    let scopes: String = row.try_get("scopes")?;
    Ok(OAuthClient {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        owner_id: row.try_get("owner_id")?,
        grant_types: serde_json::from_str(&grant_types).map_err(corrupt("oauth_clients"))?,
        scopes: serde_json::from_str(&scopes).map_err(corrupt("oauth_clients"))?,
        auth_method: row.try_get("auth_method")?,
        secret_hash: row.try_get("secret_hash")?,
        jwks: row.try_get("jwks")?,
        jwks_uri: row.try_get("jwks_uri")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        deleted_at: row.try_get("deleted_at")?,
    })
}

fn node_from_row(row: &AnyRow) -> Result<Node, StoreError> {
    let labels: String = row.try_get("labels")?;
    let metrics: Option<String> = row.try_get("metrics")?;
    Ok(Node {
        node_id: row.try_get("node_id")?,
        address: row.try_get("address")?,
        labels: serde_json::from_str(&labels).map_err(corrupt("nodes"))?,
        registered_at: row.try_get("registered_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        last_report_at: row.try_get("last_report_at")?,
        metrics: metrics
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(corrupt("nodes"))?,
    })
}

impl Store {
    pub async fn create_client(&self, client: &OAuthClient) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_clients (id, name, owner_id, grant_types, scopes, auth_method, secret_hash, jwks, jwks_uri, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&client.id)
        .bind(&client.name)
        .bind(&client.owner_id)
        .bind(json_text(&client.grant_types)?)
        .bind(json_text(&client.scopes)?)
        .bind(&client.auth_method)
        .bind(&client.secret_hash)
        .bind(&client.jwks)
        .bind(&client.jwks_uri)
        .bind(client.created_at)
        .bind(client.updated_at)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    /// A client that has not been deleted.
    pub async fn client(&self, id: &str) -> Result<Option<OAuthClient>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&mut *self.db().await?)
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Every client not deleted, oldest first.
    /// Live clients, oldest first: `limit` of them after the client
    /// created at `after.0` with id `after.1`.
    pub async fn list_clients(
        &self,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<OAuthClient>, StoreError> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, ""));
        let rows = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients
             WHERE deleted_at IS NULL
               AND ($2 = '' OR created_at > $1 OR (created_at = $1 AND id > $2))
             ORDER BY created_at, id
             LIMIT $3"
        ))
        .bind(after_at)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// Marks a client deleted; `NotFound` when there is none (or it already was).
    pub async fn delete_client(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE oauth_clients SET deleted_at = $2, updated_at = $2 WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *self.db().await?)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Ids of clients changed (or deleted) at or after `since`.
    pub async fn clients_changed_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM oauth_clients WHERE updated_at >= $1")
            .bind(since)
            .fetch_all(&mut *self.db().await?)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Records the revocation of one access token (idempotent).
    pub async fn revoke_token(
        &self,
        jti: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, revoked_at, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    /// `(jti, expires_at)` of tokens revoked at or after `since`, or with
    /// `live_at`, of every revoked token not yet expired then.
    pub async fn revoked_tokens(
        &self,
        since: i64,
        live_at: Option<i64>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let query = match live_at {
            Some(now) => {
                sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
                    .bind(now)
            }
            None => {
                sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE revoked_at >= $1")
                    .bind(since)
            }
        };
        let rows = query.fetch_all(&mut *self.db().await?).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("jti")?, r.try_get("expires_at")?)))
            .collect()
    }

    /// A refresh token that could still be used: `(session_id, user_id,
    /// created_at, expires_at)`; `None` when unknown, spent, expired or its
    /// session revoked. For introspection (RFC 7662) and revocation (RFC 7009).
    pub async fn live_refresh_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<(String, String, i64, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT r.session_id, s.user_id, r.created_at, r.expires_at FROM refresh_tokens r
             JOIN sessions s ON s.id = r.session_id
             WHERE r.token_hash = $1 AND r.rotated_at IS NULL AND r.expires_at > $2
               AND s.revoked_at IS NULL AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *self.db().await?)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get("session_id")?,
                r.try_get("user_id")?,
                r.try_get("created_at")?,
                r.try_get("expires_at")?,
            ))
        })
        .transpose()
    }

    /// Refuses from now on every token of `node_id` issued at or before `now`.
    pub async fn revoke_node_tokens(&self, node_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            // Never backwards: a second revocation within the same second
            // (or from a slower clock) must still cover tokens minted since
            // the first, which are dated one second after it.
            "INSERT INTO node_token_cutoffs (node_id, revoked_at) VALUES ($1, $2)
             ON CONFLICT (node_id) DO UPDATE SET revoked_at = CASE
                 WHEN excluded.revoked_at > node_token_cutoffs.revoked_at THEN excluded.revoked_at
                 ELSE node_token_cutoffs.revoked_at + 1 END",
        )
        .bind(node_id)
        .bind(now)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    /// When `node_id`'s tokens were last revoked, if ever.
    pub async fn node_token_cutoff(&self, node_id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT revoked_at FROM node_token_cutoffs WHERE node_id = $1")
            .bind(node_id)
            .fetch_optional(&mut *self.db().await?)
            .await?;
        row.map(|r| Ok(r.try_get("revoked_at")?)).transpose()
    }

    /// Nodes whose tokens were revoked at or after `since`.
    pub async fn node_cutoffs_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT node_id FROM node_token_cutoffs WHERE revoked_at >= $1")
            .bind(since)
            .fetch_all(&mut *self.db().await?)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("node_id")?)).collect()
    }

    /// Records (or updates) a node's registration.
    pub async fn register_node(
        &self,
        node_id: &str,
        address: Option<&str>,
        labels: &serde_json::Value,
        now: i64,
    ) -> Result<Node, StoreError> {
        sqlx::query(
            "INSERT INTO nodes (node_id, address, labels, registered_at, last_seen_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, labels = excluded.labels,
                 registered_at = excluded.registered_at, last_seen_at = excluded.last_seen_at",
        )
        .bind(node_id)
        .bind(address)
        .bind(json_text(labels)?)
        .bind(now)
        .execute(&mut *self.db().await?)
        .await?;
        self.node(node_id).await?.ok_or(StoreError::NotFound)
    }

    /// Stores a node's latest metrics; a node not registered yet is created.
    pub async fn record_node_report(
        &self,
        node_id: &str,
        metrics: &serde_json::Value,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (node_id, labels, last_seen_at, last_report_at, metrics) VALUES ($1, '{}', $2, $2, $3)
             ON CONFLICT (node_id) DO UPDATE SET last_seen_at = excluded.last_seen_at,
                 last_report_at = excluded.last_report_at, metrics = excluded.metrics",
        )
        .bind(node_id)
        .bind(now)
        .bind(json_text(metrics)?)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    /// Notes that a node is alive; a node not registered yet is created.
    pub async fn node_heartbeat(&self, node_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (node_id, labels, last_seen_at) VALUES ($1, '{}', $2)
             ON CONFLICT (node_id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        )
        .bind(node_id)
        .bind(now)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    pub async fn node(&self, node_id: &str) -> Result<Option<Node>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = $1"
        ))
        .bind(node_id)
        .fetch_optional(&mut *self.db().await?)
        .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    /// Nodes by id: `limit` of them after `after`.
    pub async fn list_nodes(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Node>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE node_id > $1 ORDER BY node_id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter().map(node_from_row).collect()
    }
}
