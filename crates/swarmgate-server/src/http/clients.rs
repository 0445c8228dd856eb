//! `/admin/clients`: registering, listing and deleting OAuth2 clients
//! (`clients.manage`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use swarmgate_core::OAuthClient;
use swarmgate_service::authz::Actor;
use swarmgate_service::clients::NewClient;
use swarmgate_service::{Principal, RequestMeta};

use crate::http::error::ApiResult as Result;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::page::{ListBody, PageQuery};
use crate::http::time::rfc3339;
use crate::http::IdentityState;

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

/// A client as every endpoint and the CLI show it; its secret only once,
/// when it is created.
#[derive(Debug, Serialize)]
pub struct ClientBody {
    client_id: String,
    name: String,
    owner: String,
    grant_types: Vec<String>,
    scopes: Vec<String>,
    token_endpoint_auth_method: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl From<&OAuthClient> for ClientBody {
    fn from(c: &OAuthClient) -> Self {
        Self {
            client_id: c.id.clone(),
            name: c.name.clone(),
            owner: c.owner_id.clone(),
            grant_types: c.grant_types.clone(),
            scopes: c.scopes.clone(),
            token_endpoint_auth_method: c.auth_method.clone(),
            created_at: rfc3339(c.created_at),
            jwks_uri: c.jwks_uri.clone(),
            jwks: c
                .jwks
                .as_deref()
                .and_then(|j| serde_json::from_str::<Value>(j).ok()),
            client_secret: None,
        }
    }
}

pub async fn create(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<ClientBody>)> {
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
    let mut body = ClientBody::from(&created.client);
    body.client_secret = created.secret;
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(
    State(identity): State<IdentityState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ListBody<ClientBody>>> {
    let clients = identity
        .list_clients(Actor::Caller(&principal), &query.request()?)
        .await?;
    Ok(Json(ListBody::of(clients, |c| ClientBody::from(&c))))
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
