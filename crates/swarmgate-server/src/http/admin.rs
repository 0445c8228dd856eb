//! `/admin/*` handlers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use swarmgate_core::{AuditEvent, User};
use swarmgate_service::authz::Actor;
use swarmgate_service::identity::UserPatch;
use swarmgate_service::{Error, Principal, RequestMeta};
use swarmgate_store::AuditFilter;
use utoipa::{IntoParams, ToSchema};

use crate::http::error::{ApiResult as Result, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::openapi::LimitSetSchema;
use crate::http::page::{ListBody, PageQuery};
use crate::http::time::{parse_rfc3339, rfc3339};
use crate::http::IdentityState;

#[derive(Serialize, ToSchema)]
pub struct AdminUserBody {
    id: String,
    username: String,
    email: String,
    full_name: Option<String>,
    role: String,
    disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<LimitSetSchema>)]
    limits: Option<swarmgate_core::LimitSet>,
    created_at: String,
    updated_at: String,
}

impl From<User> for AdminUserBody {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            full_name: u.full_name,
            role: u.role,
            disabled: u.disabled,
            limits: u.limits,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Part of a username or email.
    q: Option<String>,
}

#[utoipa::path(get, path = "/admin/users", tag = "admin", params(ListQuery, PageQuery),
    responses((status = 200, description = "users", body = ListBody<AdminUserBody>)))]
pub async fn list_users(
    State(identity): State<IdentityState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<ListBody<AdminUserBody>>> {
    let page = page.request()?;
    let users = identity
        .admin_list_users(
            Actor::Caller(&principal),
            query.q.as_deref().filter(|q| !q.is_empty()),
            &page,
        )
        .await?;
    Ok(Json(ListBody::of(users, AdminUserBody::from)))
}

#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin", params(("id" = String, Path, description = "the user's id")),
    responses(
        (status = 200, description = "the user", body = AdminUserBody),
        (status = 404, description = "no such user", body = ErrorBody),
    ))]
pub async fn get_user(
    State(identity): State<IdentityState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<AdminUserBody>> {
    let user = identity
        .admin_get_user(Actor::Caller(&principal), &id)
        .await?;
    Ok(Json(user.into()))
}

/// `null` clears the field; absent leaves it alone.
fn present<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema)]
#[schema(as = UserPatch)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    #[serde(default)]
    role: Option<String>,
    /// Disabling revokes every session and key of the user at once.
    #[serde(default)]
    disabled: Option<bool>,
    /// `null` clears it; absent leaves it alone.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    full_name: Option<Option<String>>,
}

#[utoipa::path(patch, path = "/admin/users/{id}", tag = "admin", params(("id" = String, Path, description = "the user's id")),
    request_body = PatchBody,
    responses(
        (status = 200, description = "the changed user", body = AdminUserBody),
        (status = 403, description = "your own account's role or disabled flag", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
    ))]
pub async fn update_user(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Json<AdminUserBody>> {
    let patch = UserPatch {
        role: body.role,
        disabled: body.disabled,
        full_name: body.full_name,
    };
    let user = identity
        .admin_update_user(Actor::Caller(&principal), &id, patch, &meta)
        .await?;
    Ok(Json(user.into()))
}

/// `PUT /admin/users/{id}/limits`: the body is the whole limit set.
#[utoipa::path(put, path = "/admin/users/{id}/limits", tag = "admin", params(("id" = String, Path, description = "the user's id")),
    request_body = LimitSetSchema,
    responses(
        (status = 200, description = "the user with its limits (`{}` removes them)", body = AdminUserBody),
        (status = 404, description = "no such user", body = ErrorBody),
    ))]
pub async fn set_limits(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
    ApiJson(limits): ApiJson<swarmgate_core::LimitSet>,
) -> Result<Json<AdminUserBody>> {
    let user = identity
        .admin_set_user_limits(Actor::Caller(&principal), &id, limits, &meta)
        .await?;
    Ok(Json(user.into()))
}

#[utoipa::path(post, path = "/admin/users/{id}/unlock", tag = "admin", params(("id" = String, Path, description = "the user's id")),
    responses(
        (status = 204, description = "the lockout is cleared"),
        (status = 404, description = "no such user", body = ErrorBody),
    ))]
pub async fn unlock_user(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    identity
        .admin_unlock_user(Actor::Caller(&principal), &id, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/admin/users/{id}", tag = "admin", params(("id" = String, Path, description = "the user's id")),
    responses(
        (status = 204, description = "deleted, with its sessions and keys"),
        (status = 403, description = "your own account", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
    ))]
pub async fn delete_user(
    State(identity): State<IdentityState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    identity
        .admin_delete_user(Actor::Caller(&principal), &id, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    event: Option<String>,
    user_id: Option<String>,
    /// Unix seconds or RFC 3339.
    since: Option<String>,
}

fn parse_since(text: &str) -> std::result::Result<i64, Error> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    parse_rfc3339("since", text)
        .map_err(|_| Error::BadRequest("since: give unix seconds or an RFC 3339 time".into()))
}

/// One event of the audit trail.
#[derive(Serialize, ToSchema)]
pub struct AuditBody {
    id: i64,
    at: String,
    event: String,
    user_id: Option<String>,
    username: Option<String>,
    ip: Option<String>,
    outcome: String,
    request_id: Option<String>,
    detail: Value,
}

impl From<(i64, AuditEvent)> for AuditBody {
    fn from((id, e): (i64, AuditEvent)) -> Self {
        Self {
            id,
            at: rfc3339(e.at),
            event: e.event,
            user_id: e.user_id,
            username: e.username,
            ip: e.client_ip,
            outcome: e.outcome,
            request_id: e.request_id,
            detail: e.detail,
        }
    }
}

#[utoipa::path(get, path = "/admin/audit", tag = "admin", params(AuditQuery, PageQuery),
    responses((status = 200, description = "audit events", body = ListBody<AuditBody>)))]
pub async fn audit(
    State(identity): State<IdentityState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<ListBody<AuditBody>>> {
    let page = page.request()?;
    let filter = AuditFilter {
        event: query.event.filter(|e| !e.is_empty()),
        user_id: query.user_id.filter(|u| !u.is_empty()),
        since: query.since.as_deref().map(parse_since).transpose()?,
        before_id: None,
    };
    let rows = identity
        .admin_audit(Actor::Caller(&principal), filter, &page)
        .await?;
    Ok(Json(ListBody::of(rows, AuditBody::from)))
}
