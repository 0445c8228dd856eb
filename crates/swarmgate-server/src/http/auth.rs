//! `/auth/*` handlers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use swarmgate_core::User;
use utoipa::ToSchema;

use swarmgate_service::authz::{validate_question, Action, Resource};
use swarmgate_service::identity::TokenPair;
use swarmgate_service::{Credential, Principal, RequestMeta};

use crate::http::error::{ApiResult as Result, ErrorBody};
use crate::http::extract::ApiJson;
use crate::http::time::rfc3339;
use crate::http::{AppState, IdentityState};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    #[schema(pattern = r"^[A-Za-z0-9_.-]{3,64}$")]
    username: String,
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s]{1,64}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
    )]
    email: String,
    /// 8 to 128 characters with an upper- and a lower-case letter, a digit
    /// and a special character; not a common password.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    full_name: Option<String>,
}

#[derive(Serialize, ToSchema)]
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

#[utoipa::path(post, path = "/auth/register", tag = "auth", security(()),
    request_body = RegisterBody,
    responses(
        (status = 201, description = "registered", body = UserBody),
        (status = 409, description = "username or email taken", body = ErrorBody),
        (status = 429, description = "too many registrations from this address", body = ErrorBody),
    ))]
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

#[derive(Deserialize, ToSchema)]
pub struct LoginBody {
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
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

#[utoipa::path(post, path = "/auth/login", tag = "auth", security(()),
    request_body = LoginBody,
    responses(
        (status = 200, description = "a token pair", body = TokenBody),
        (status = 401, description = "wrong credentials", body = ErrorBody),
        (status = 403, description = "the account is disabled", body = ErrorBody),
        (status = 423, description = "locked after failed logins", body = ErrorBody),
        (status = 429, description = "too many logins from this address", body = ErrorBody),
    ))]
pub async fn login(
    State(identity): State<IdentityState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<TokenBody>> {
    let pair = identity.login(&body.username, body.password, &meta).await?;
    Ok(Json(pair.into()))
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    refresh_token: String,
}

#[utoipa::path(post, path = "/auth/refresh", tag = "auth", security(()),
    request_body = RefreshBody,
    responses(
        (status = 200, description = "a new pair; the old refresh token stops working", body = TokenBody),
        (status = 401, description = "invalid, expired or reused refresh token", body = ErrorBody),
        (status = 403, description = "the account is disabled", body = ErrorBody),
    ))]
pub async fn refresh(
    State(identity): State<IdentityState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<TokenBody>> {
    let pair = identity.refresh(&body.refresh_token, &meta).await?;
    Ok(Json(pair.into()))
}

#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses((status = 204, description = "the session's tokens stop working")))]
pub async fn logout(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
) -> Result<StatusCode> {
    identity.logout(&principal, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `/auth/me` of a user, or of a client, node or agent.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum MeAnswer {
    User(MeBody),
    Machine(MachineMeBody),
}

#[derive(Serialize, ToSchema)]
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

#[utoipa::path(get, path = "/auth/me", tag = "auth",
    responses((status = 200, description = "the caller", body = MeAnswer)))]
pub async fn me(
    State(identity): State<IdentityState>,
    principal: Principal,
) -> Result<Json<MeAnswer>> {
    if !principal.is_user() {
        return Ok(Json(MeAnswer::Machine(machine_me(&principal))));
    }
    let user = identity.me(&principal).await?;
    let permissions = principal.role.permissions.clone();
    let key_permissions = match &principal.credential {
        Credential::ApiKey { grants, .. } => {
            Some(grants.grants().iter().map(|g| g.to_string()).collect())
        }
        _ => None,
    };
    Ok(Json(MeAnswer::User(MeBody {
        user: user.into(),
        permissions,
        auth_method: principal.auth_method().as_str(),
        key_permissions,
    })))
}

/// `/auth/me` of a client, node or agent: who it is and what it may do.
/// `deny_unknown_fields` does nothing when serialising; it closes the
/// schema, so that a user's body (which has every field this one requires)
/// matches only the user's branch of [`MeAnswer`].
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineMeBody {
    id: String,
    username: String,
    role: String,
    permissions: Vec<String>,
    auth_method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    /// An agent acts for its parent (`id`); it may do what both its own
    /// grants and the parent's role allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_permissions: Option<Vec<String>>,
}

fn machine_me(principal: &Principal) -> MachineMeBody {
    let mut body = MachineMeBody {
        id: principal.user_id.clone(),
        username: principal.username.clone(),
        role: principal.role.name.clone(),
        permissions: principal.role.permissions.clone(),
        auth_method: principal.auth_method().as_str(),
        client_id: None,
        node_id: None,
        agent_id: None,
        session_id: None,
        agent_permissions: None,
    };
    match &principal.credential {
        Credential::Client { client_id, .. } => body.client_id = Some(client_id.clone()),
        Credential::Node { node_id, .. } => body.node_id = Some(node_id.clone()),
        Credential::Agent {
            agent_id,
            session_id,
            grants,
            ..
        } => {
            body.agent_id = Some(agent_id.clone());
            body.session_id = Some(session_id.clone());
            body.agent_permissions = Some(grants.grants().iter().map(|g| g.to_string()).collect());
        }
        _ => {}
    }
    body
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

#[utoipa::path(post, path = "/auth/change-password", tag = "auth",
    request_body = ChangePasswordBody,
    responses(
        (status = 204, description = "changed; the other sessions are revoked"),
        (status = 403, description = "the current password is wrong", body = ErrorBody),
        (status = 423, description = "locked: wrong current passwords count as failed logins", body = ErrorBody),
    ))]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    #[schema(max_length = 256, pattern = r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")]
    permission: String,
    #[serde(default)]
    resource: Option<String>,
}

#[utoipa::path(post, path = "/auth/verify-permission", tag = "auth",
    request_body = VerifyBody,
    responses((status = 200, description = "whether the caller holds the permission", body = VerifyAnswer)))]
pub async fn verify_permission(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Json<VerifyAnswer>> {
    validate_question(&body.permission, body.resource.as_deref())?;
    let resource = match body.resource.as_deref() {
        Some(r) => Resource::Named(r),
        None => Resource::Any,
    };
    let decision = state
        .services
        .authz
        .authorize(&principal, Action::Permission(&body.permission), resource)
        .await;
    Ok(Json(VerifyAnswer {
        allowed: decision.allowed(),
        permission: body.permission,
        resource: body.resource,
        auth_method: principal.auth_method().as_str(),
        role: principal.role.name.clone(),
        subject: principal.user_id,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct VerifyAnswer {
    allowed: bool,
    permission: String,
    resource: Option<String>,
    subject: String,
    role: String,
    auth_method: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct RoleBody {
    name: String,
    permissions: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RolesBody {
    roles: Vec<RoleBody>,
}

#[utoipa::path(get, path = "/auth/roles", tag = "auth",
    responses((status = 200, description = "every role and its permissions", body = RolesBody)))]
pub async fn roles(
    State(identity): State<IdentityState>,
    _principal: Principal,
) -> Json<RolesBody> {
    let roles = identity
        .settings()
        .roles
        .sorted()
        .into_iter()
        .map(|r| RoleBody {
            name: r.name.clone(),
            permissions: r.permissions.clone(),
        })
        .collect();
    Json(RolesBody { roles })
}
