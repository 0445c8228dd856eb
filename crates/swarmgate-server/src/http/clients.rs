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
use utoipa::ToSchema;

use crate::http::error::{ApiResult as Result, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::page::{ListBody, PageQuery};
use crate::http::time::rfc3339;
use crate::http::IdentityState;

#[derive(Deserialize, ToSchema)]
#[schema(as = NewClient)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    grant_types: Vec<String>,
    scopes: Vec<String>,
    /// client_secret_basic, client_secret_post or private_key_jwt.
    token_endpoint_auth_method: String,
    /// A JWK set, for private_key_jwt.
    #[serde(default)]
    jwks: Option<Value>,
    #[serde(default)]
    jwks_uri: Option<String>,
}

/// A client as every endpoint and the CLI show it; its secret only once,
/// when it is created.
#[derive(Debug, Serialize, ToSchema)]
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

#[utoipa::path(post, path = "/admin/clients", tag = "clients",
    request_body = CreateBody,
    responses((status = 201, description = "the client; its secret only here", body = ClientBody)))]
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

#[utoipa::path(get, path = "/admin/clients", tag = "clients", params(PageQuery),
    responses((status = 200, description = "clients, oldest first", body = ListBody<ClientBody>)))]
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

#[utoipa::path(delete, path = "/admin/clients/{id}", tag = "clients",
    params(("id" = String, Path, description = "the client_id")),
    responses(
        (status = 204, description = "deleted: its tokens stop at once"),
        (status = 404, description = "no such client", body = ErrorBody),
    ))]
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
