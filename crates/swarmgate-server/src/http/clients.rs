//! `/admin/clients`: registering, listing and deleting OAuth2 clients
//! (`clients.manage`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use swarmgate_core::OAuthClient;

use crate::clock::rfc3339;
use crate::error::Result;
use crate::http::extract::ApiJson;
use crate::http::IdentityState;
use crate::identity::{Actor, NewClient, Principal, RequestMeta};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    grant_types: Vec<String>,
    scopes: Vec<String>,
    token_endpoint_auth_method: String,
    #[serde(default)]
    jwks: Option<Value>,
    #[serde(default)]
    jwks_uri: Option<String>,
}

/// A client as every endpoint and the CLI show it (never its secret).
pub fn client_json(c: &OAuthClient) -> Value {
    let mut body = json!({
        "client_id": c.id,
        "name": c.name,
        "owner": c.owner_id,
        "grant_types": c.grant_types,
        "scopes": c.scopes,
        "token_endpoint_auth_method": c.auth_method,
        "created_at": rfc3339(c.created_at),
    });
    if let Some(uri) = &c.jwks_uri {
        body["jwks_uri"] = json!(uri);
    }
    if let Some(jwks) = c
        .jwks
        .as_deref()
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
    {
        body["jwks"] = jwks;
    }
    body
}

pub async fn create(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let new = NewClient {
        name: body.name,
        grant_types: body.grant_types,
        scopes: body.scopes,
        token_endpoint_auth_method: body.token_endpoint_auth_method,
        jwks: body.jwks,
        jwks_uri: body.jwks_uri,
    };
    let created = identity
        .create_client(Actor::Caller(&principal), new, &meta)
        .await?;
    let mut body = client_json(&created.client);
    if let Some(secret) = created.secret {
        body["client_secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(
    State(identity): State<IdentityState>,
    principal: Principal,
) -> Result<Json<Value>> {
    let clients = identity.list_clients(Actor::Caller(&principal)).await?;
    let items: Vec<Value> = clients.iter().map(client_json).collect();
    Ok(Json(json!({ "items": items })))
}

pub async fn delete(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    identity
        .delete_client(Actor::Caller(&principal), &id, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
