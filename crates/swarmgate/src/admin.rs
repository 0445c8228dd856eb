//! `swarmgate admin user …` and `swarmgate admin key …`: the operator's
//! mirror of the admin API, against the configured database. Readable
//! tables or sentences by default, JSON with `--json`.

use std::future::Future;
use std::sync::Arc;

use anyhow::anyhow;
use serde_json::{json, Value};
use swarmgate_core::{ApiKey, User};
use swarmgate_server::http::page::{ListBody, PageQuery};
use swarmgate_server::http::time::rfc3339;
use swarmgate_server::http::ClientBody;
use swarmgate_service::authz::Actor;
use swarmgate_service::clients::NewClient;
use swarmgate_service::identity::{Identity, NewApiKey, UserPatch};
use swarmgate_service::page::{Page, PageRequest, MAX_PAGE};
use swarmgate_service::{Credential, RequestMeta};

use crate::{ClientCommand, KeyCommand, UserCommand};

pub fn user_json(u: &User) -> Value {
    json!({
        "id": u.id, "username": u.username, "email": u.email, "full_name": u.full_name,
        "role": u.role, "disabled": u.disabled, "created_at": rfc3339(u.created_at),
    })
}

fn key_json(k: &ApiKey) -> Value {
    json!({
        "id": k.id, "name": k.name, "prefix": k.prefix, "permissions": k.permissions,
        "models": k.models, "created_at": rfc3339(k.created_at), "expires_at": rfc3339(k.expires_at),
        "last_used_at": k.last_used_at.map(rfc3339), "revoked": k.revoked_at.is_some(),
    })
}

fn client_json(c: &swarmgate_core::OAuthClient) -> Value {
    serde_json::to_value(ClientBody::from(c)).unwrap_or_default()
}

/// Prints JSON, or the sentence for people.
fn report(json: bool, body: Value, sentence: String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        println!("{sentence}");
    }
    Ok(())
}

/// Prints a listing: `{"items": [...]}` plus the fields of `extra` with
/// `--json`, else a table with `header` and one `row` per item.
fn listing<T>(
    json: bool,
    items: &[T],
    extra: Value,
    as_json: impl Fn(&T) -> Value,
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        let mut body = json!({ "items": items.iter().map(as_json).collect::<Vec<_>>() });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        table(header, items.iter().map(row).collect());
    }
    Ok(())
}

/// Prints rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

async fn find(identity: &Identity, user: &str) -> anyhow::Result<User> {
    match identity.user_by_name(user).await {
        Ok(u) => Ok(u),
        Err(_) => identity
            .admin_get_user(Actor::Operator, user)
            .await
            .map_err(|_| anyhow!("no user named {user:?}")),
    }
}

fn cli_err(e: swarmgate_server::Error) -> anyhow::Error {
    anyhow!("{e}")
}

/// Sets `field` of a JSON object.
fn with(mut body: Value, field: &str, value: Value) -> Value {
    if let Some(object) = body.as_object_mut() {
        object.insert(field.to_string(), value);
    }
    body
}

/// Every page of a list, one after the other.
async fn every_page<T, F, Fut>(mut page: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = swarmgate_service::Result<Page<T>>>,
{
    let mut all = Vec::new();
    let mut request = PageRequest::first(MAX_PAGE);
    loop {
        let next = page(request).await.map_err(cli_err)?;
        all.extend(next.items);
        match next.next {
            Some(after) => {
                request = PageRequest {
                    after: Some(after),
                    limit: Some(MAX_PAGE),
                }
            }
            None => return Ok(all),
        }
    }
}

async fn apply(identity: &Identity, user: &str, patch: UserPatch) -> anyhow::Result<User> {
    let u = find(identity, user).await?;
    identity
        .admin_update_user(Actor::Operator, &u.id, patch, &RequestMeta::default())
        .await
        .map_err(cli_err)
}

pub async fn user(identity: Arc<Identity>, command: UserCommand, json: bool) -> anyhow::Result<()> {
    let meta = RequestMeta::default();
    match command {
        UserCommand::List { q, limit, cursor } => {
            list_users(&identity, q, limit, cursor, json).await
        }
        UserCommand::SetRole { user, role } => {
            let patch = UserPatch {
                role: Some(role),
                ..UserPatch::default()
            };
            let u = apply(&identity, &user, patch).await?;
            report(
                json,
                user_json(&u),
                format!("{} now has role {}", u.username, u.role),
            )
        }
        UserCommand::Disable { user } => {
            let patch = UserPatch {
                disabled: Some(true),
                ..UserPatch::default()
            };
            let u = apply(&identity, &user, patch).await?;
            report(
                json,
                user_json(&u),
                format!(
                    "{} disabled; every session and key of theirs is revoked",
                    u.username
                ),
            )
        }
        UserCommand::Enable { user } => {
            let patch = UserPatch {
                disabled: Some(false),
                ..UserPatch::default()
            };
            let u = apply(&identity, &user, patch).await?;
            report(
                json,
                user_json(&u),
                format!(
                    "{} enabled (earlier sessions and keys stay revoked)",
                    u.username
                ),
            )
        }
        UserCommand::Unlock { user } => {
            let u = find(&identity, &user).await?;
            identity
                .admin_unlock_user(Actor::Operator, &u.id, &meta)
                .await
                .map_err(cli_err)?;
            report(
                json,
                json!({ "unlocked": u.id }),
                format!("{} unlocked", u.username),
            )
        }
        UserCommand::Delete { user } => {
            let u = find(&identity, &user).await?;
            identity
                .admin_delete_user(Actor::Operator, &u.id, &meta)
                .await
                .map_err(cli_err)?;
            report(
                json,
                json!({ "deleted": u.id }),
                format!("{} deleted", u.username),
            )
        }
    }
}

pub async fn key(identity: Arc<Identity>, command: KeyCommand, json: bool) -> anyhow::Result<()> {
    let meta = RequestMeta::default();
    match command {
        KeyCommand::Create {
            user,
            name,
            permissions,
            models,
            expires_in_days,
        } => {
            let owner = find(&identity, &user).await?;
            let request = NewApiKey {
                name,
                permissions,
                expires_in_days,
                models: (!models.is_empty()).then_some(models),
                limits: None,
            };
            // The key is the owner's as if they had made it in a session:
            // never more than their role grants.
            let session = Credential::Session {
                session_id: String::new(),
            };
            let principal = identity.principal_of(&owner, session);
            let created = identity
                .create_api_key_for(&principal, request, &meta)
                .await
                .map_err(cli_err)?;
            let body = with(key_json(&created.key), "key", json!(created.secret));
            report(
                json,
                body,
                format!(
                    "key {} for {} (shown only now):\n{}",
                    created.key.id, owner.username, created.secret
                ),
            )
        }
        KeyCommand::List { user } => {
            let owner = find(&identity, &user).await?;
            let (identity, owner_id) = (&identity, owner.id.as_str());
            let keys =
                every_page(|page| async move { identity.list_api_keys(owner_id, &page).await })
                    .await?;
            listing(
                json,
                &keys,
                json!({}),
                key_json,
                &["id", "name", "prefix", "permissions", "expires", "status"],
                |k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.prefix.clone(),
                        k.permissions.join(","),
                        rfc3339(k.expires_at),
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                        .to_string(),
                    ]
                },
            )
        }
        KeyCommand::Revoke { id } => {
            identity
                .revoke_api_key(Actor::Operator, &id, &meta)
                .await
                .map_err(cli_err)?;
            report(json, json!({ "revoked": id }), format!("key {id} revoked"))
        }
    }
}

pub async fn client(
    identity: Arc<Identity>,
    command: ClientCommand,
    json: bool,
) -> anyhow::Result<()> {
    let meta = RequestMeta::default();
    match command {
        ClientCommand::Create {
            name,
            scopes,
            grant_types,
            auth_method,
            jwks_file,
            jwks_uri,
        } => {
            let jwks = match jwks_file {
                None => None,
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
                    Some(
                        serde_json::from_str::<Value>(&text)
                            .map_err(|e| anyhow!("{}: not JSON: {e}", path.display()))?,
                    )
                }
            };
            let new = NewClient {
                name,
                grant_types,
                scopes,
                token_endpoint_auth_method: auth_method,
                jwks,
                jwks_uri,
            };
            let created = identity
                .create_client(Actor::Operator, new, &meta)
                .await
                .map_err(cli_err)?;
            let mut body = ClientBody::from(&created.client);
            let mut sentence = format!("client {} ({})", created.client.id, created.client.name);
            if let Some(secret) = &created.secret {
                sentence.push_str(&format!(", secret (shown only now):\n{secret}"));
            }
            body.client_secret = created.secret;
            report(json, serde_json::to_value(body)?, sentence)
        }
        ClientCommand::List => {
            let identity = &identity;
            let clients =
                every_page(
                    |page| async move { identity.list_clients(Actor::Operator, &page).await },
                )
                .await?;
            listing(
                json,
                &clients,
                json!({}),
                client_json,
                &["client_id", "name", "auth_method", "grant_types", "scopes"],
                |c| {
                    vec![
                        c.id.clone(),
                        c.name.clone(),
                        c.auth_method.clone(),
                        c.grant_types.join(","),
                        c.scopes.join(","),
                    ]
                },
            )
        }
        ClientCommand::Delete { id } => {
            identity
                .delete_client(Actor::Operator, &id, &meta)
                .await
                .map_err(cli_err)?;
            report(
                json,
                json!({ "client_id": id, "deleted": true }),
                format!("client {id} deleted; its tokens no longer work"),
            )
        }
    }
}

/// `admin user list`: a page of users, and the cursor of the next.
async fn list_users(
    identity: &Identity,
    q: Option<String>,
    limit: i64,
    cursor: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let page = PageQuery {
        limit: Some(limit),
        cursor,
    }
    .request()
    .map_err(|_| anyhow!("--cursor: not a cursor this command printed"))?;
    let users = identity
        .admin_list_users(Actor::Operator, q.as_deref(), &page)
        .await
        .map_err(cli_err)?;
    let body = ListBody::of(users, |u| u);
    let next = body.next_cursor.clone();
    listing(
        json,
        &body.items,
        json!({ "next_cursor": next }),
        user_json,
        &["username", "email", "role", "status", "id"],
        |u| {
            vec![
                u.username.clone(),
                u.email.clone(),
                u.role.clone(),
                if u.disabled { "disabled" } else { "active" }.to_string(),
                u.id.clone(),
            ]
        },
    )?;
    if let (false, Some(next)) = (json, next) {
        println!("(more: --cursor {next})");
    }
    Ok(())
}
