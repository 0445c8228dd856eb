//! `/auth/api-keys` handlers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use swarmgate_core::ApiKey;
use swarmgate_service::authz::Actor;
use swarmgate_service::identity::NewApiKey;
use swarmgate_service::{Principal, RequestMeta};
use utoipa::ToSchema;

use crate::http::error::{ApiResult as Result, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::openapi::LimitSetSchema;
use crate::http::page::{ListBody, PageQuery};
use crate::http::time::rfc3339;
use crate::http::IdentityState;

#[derive(Deserialize, ToSchema)]
#[schema(as = NewApiKey)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    permissions: Vec<String>,
    #[serde(default)]
    expires_in_days: Option<u32>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<LimitSetSchema>)]
    limits: Option<swarmgate_core::LimitSet>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyBody {
    id: String,
    name: String,
    prefix: String,
    permissions: Vec<String>,
    models: Option<Vec<String>>,
    #[schema(value_type = Option<LimitSetSchema>)]
    limits: Option<swarmgate_core::LimitSet>,
    created_at: String,
    expires_at: String,
    last_used_at: Option<String>,
    revoked: bool,
}

impl From<ApiKey> for KeyBody {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            permissions: k.permissions,
            models: k.models,
            limits: k.limits,
            created_at: rfc3339(k.created_at),
            expires_at: rfc3339(k.expires_at),
            last_used_at: k.last_used_at.map(rfc3339),
            revoked: k.revoked_at.is_some(),
        }
    }
}

/// A created key: the record and, only here, the key itself.
#[derive(Serialize, ToSchema)]
pub struct CreatedBody {
    id: String,
    name: String,
    key: String,
    prefix: String,
    permissions: Vec<String>,
    models: Option<Vec<String>>,
    #[schema(value_type = Option<LimitSetSchema>)]
    limits: Option<swarmgate_core::LimitSet>,
    created_at: String,
    expires_at: String,
}

#[utoipa::path(post, path = "/auth/api-keys", tag = "api-keys",
    request_body = CreateBody,
    responses(
        (status = 201, description = "the key, shown only here", body = CreatedBody),
        (status = 403, description = "a permission beyond your own grants, or called with a key", body = ErrorBody),
    ))]
pub async fn create(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<CreatedBody>)> {
    let request = NewApiKey {
        name: body.name,
        permissions: body.permissions,
        expires_in_days: body.expires_in_days,
        models: body.models,
        limits: body.limits,
    };
    let created = identity.create_api_key(&principal, request, &meta).await?;
    let k = created.key;
    Ok((
        StatusCode::CREATED,
        Json(CreatedBody {
            id: k.id,
            name: k.name,
            key: created.secret,
            prefix: k.prefix,
            permissions: k.permissions,
            models: k.models,
            limits: k.limits,
            created_at: rfc3339(k.created_at),
            expires_at: rfc3339(k.expires_at),
        }),
    ))
}

#[utoipa::path(get, path = "/auth/api-keys", tag = "api-keys", params(PageQuery),
    responses((status = 200, description = "your keys, newest first", body = ListBody<KeyBody>)))]
pub async fn list(
    State(identity): State<IdentityState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ListBody<KeyBody>>> {
    let keys = identity
        .list_api_keys(&principal.user_id, &query.request()?)
        .await?;
    Ok(Json(ListBody::of(keys, KeyBody::from)))
}

#[utoipa::path(delete, path = "/auth/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "the key's id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 404, description = "no such key of yours", body = ErrorBody),
    ))]
pub async fn revoke(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    identity
        .revoke_api_key(Actor::Caller(&principal), &id, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
