//! `/auth/*` handlers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use swarmgate_core::User;

use crate::clock::rfc3339;
use crate::error::Result;
use crate::http::extract::ApiJson;
use crate::http::IdentityState;
use crate::identity::{Credential, Principal, RequestMeta, TokenPair};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    username: String,
    email: String,
    password: String,
    #[serde(default)]
    full_name: Option<String>,
}

#[derive(Serialize)]
pub struct UserBody {
    id: String,
    username: String,
    email: String,
    full_name: Option<String>,
    role: String,
    created_at: String,
}

impl From<User> for UserBody {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            full_name: u.full_name,
            role: u.role,
            created_at: rfc3339(u.created_at),
        }
    }
}

pub async fn register(
    State(identity): State<IdentityState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<impl IntoResponse> {
    let user = identity
        .register(
            body.username,
            body.email,
            body.password,
            body.full_name,
            &meta,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(UserBody::from(user))))
}

#[derive(Deserialize)]
pub struct LoginBody {
    username: String,
    password: String,
}

#[derive(Serialize)]
pub struct TokenBody {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: i64,
    user_id: String,
    username: String,
    role: String,
}

impl From<TokenPair> for TokenBody {
    fn from(p: TokenPair) -> Self {
        Self {
            access_token: p.access_token,
            refresh_token: p.refresh_token,
            token_type: "bearer",
            expires_in: p.expires_in,
            user_id: p.user_id,
            username: p.username,
            role: p.role,
        }
    }
}

pub async fn login(
    State(identity): State<IdentityState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<TokenBody>> {
    let pair = identity.login(&body.username, body.password, &meta).await?;
    Ok(Json(pair.into()))
}

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

pub async fn refresh(
    State(identity): State<IdentityState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<TokenBody>> {
    let pair = identity.refresh(&body.refresh_token, &meta).await?;
    Ok(Json(pair.into()))
}

pub async fn logout(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
) -> Result<StatusCode> {
    identity.logout(&principal, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub struct MeBody {
    #[serde(flatten)]
    user: UserBody,
    permissions: Vec<String>,
    auth_method: &'static str,
    /// For an API key: its own grants (what it may do is these and
    /// `permissions` both).
    #[serde(skip_serializing_if = "Option::is_none")]
    key_permissions: Option<Vec<String>>,
}

pub async fn me(State(identity): State<IdentityState>, principal: Principal) -> Result<Response> {
    if !principal.is_user() {
        return Ok(Json(machine_me(&principal)).into_response());
    }
    let user = identity.me(&principal).await?;
    let permissions = principal.role.permissions.clone();
    let key_permissions = match &principal.credential {
        Credential::ApiKey { grants, .. } => {
            Some(grants.grants().iter().map(|g| g.to_string()).collect())
        }
        _ => None,
    };
    Ok(Json(MeBody {
        user: user.into(),
        permissions,
        auth_method: principal.auth_method().as_str(),
        key_permissions,
    })
    .into_response())
}

/// `/auth/me` of a client or node: who it is and what it may do.
fn machine_me(principal: &Principal) -> serde_json::Value {
    let mut body = serde_json::json!({
        "id": principal.user_id,
        "username": principal.username,
        "role": principal.role.name,
        "permissions": principal.role.permissions,
        "auth_method": principal.auth_method().as_str(),
    });
    match &principal.credential {
        Credential::Client { client_id, .. } => body["client_id"] = client_id.as_str().into(),
        Credential::Node { node_id, .. } => body["node_id"] = node_id.as_str().into(),
        Credential::Agent {
            agent_id,
            session_id,
            grants,
            ..
        } => {
            // The agent acts for its parent (`id`); it may do what both its
            // own grants and the parent's role allow.
            body["agent_id"] = agent_id.as_str().into();
            body["session_id"] = session_id.as_str().into();
            body["agent_permissions"] = grants
                .grants()
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .into();
        }
        _ => {}
    }
    body
}

#[derive(Deserialize)]
pub struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

pub async fn change_password(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(body): ApiJson<ChangePasswordBody>,
) -> Result<StatusCode> {
    identity
        .change_password(&principal, body.current_password, body.new_password, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    permission: String,
    #[serde(default)]
    resource: Option<String>,
}

pub async fn verify_permission(
    State(identity): State<IdentityState>,
    principal: Principal,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Json<serde_json::Value>> {
    let allowed =
        identity.check_permission(&principal, &body.permission, body.resource.as_deref())?;
    Ok(Json(serde_json::json!({
        "allowed": allowed,
        "permission": body.permission,
        "resource": body.resource,
        "subject": principal.user_id,
        "role": principal.role.name,
        "auth_method": principal.auth_method().as_str(),
    })))
}

pub async fn roles(
    State(identity): State<IdentityState>,
    _principal: Principal,
) -> Json<serde_json::Value> {
    let roles: Vec<serde_json::Value> = identity
        .settings()
        .roles
        .sorted()
        .into_iter()
        .map(|r| serde_json::json!({ "name": r.name, "permissions": r.permissions }))
        .collect();
    Json(serde_json::json!({ "roles": roles }))
}
