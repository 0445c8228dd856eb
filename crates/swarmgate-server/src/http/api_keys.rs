//! `/auth/api-keys` handlers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use swarmgate_core::ApiKey;

use crate::clock::rfc3339;
use crate::error::Result;
use crate::http::extract::ApiJson;
use crate::http::IdentityState;
use crate::identity::{Actor, NewApiKey, Principal, RequestMeta};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    permissions: Vec<String>,
    #[serde(default)]
    expires_in_days: Option<u32>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    limits: Option<swarmgate_core::LimitSet>,
}

#[derive(Serialize)]
pub struct KeyBody {
    id: String,
    name: String,
    prefix: String,
    permissions: Vec<String>,
    models: Option<Vec<String>>,
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

pub async fn create(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<impl IntoResponse> {
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
        Json(json!({
            "id": k.id,
            "name": k.name,
            "key": created.secret,
            "prefix": k.prefix,
            "permissions": k.permissions,
            "models": k.models,
            "limits": k.limits,
            "created_at": rfc3339(k.created_at),
            "expires_at": rfc3339(k.expires_at),
        })),
    ))
}

pub async fn list(
    State(identity): State<IdentityState>,
    principal: Principal,
) -> Result<Json<serde_json::Value>> {
    let keys = identity.list_api_keys(&principal.user_id).await?;
    let items: Vec<KeyBody> = keys.into_iter().map(KeyBody::from).collect();
    Ok(Json(json!({ "items": items, "next_cursor": null })))
}

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
