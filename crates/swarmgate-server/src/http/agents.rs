//! `/agents/sessions`: spawning, listing, keeping alive and releasing
//! agent sessions.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use swarmgate_core::limits::AgentBudget;
use swarmgate_service::agents::{SessionView, SpawnRequest};
use swarmgate_service::{Principal, RequestMeta};
use utoipa::{IntoParams, ToSchema};

use crate::http::error::{ApiResult as Result, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::openapi::AgentBudgetSchema;
use crate::http::page::{ListBody, PageQuery};
use crate::http::time::rfc3339;
use crate::http::AppState;

#[derive(Deserialize, ToSchema)]
#[schema(as = SpawnRequest)]
#[serde(deny_unknown_fields)]
pub struct SpawnBody {
    name: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    #[schema(value_type = AgentBudgetSchema)]
    budget: AgentBudget,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
}

/// A session as every endpoint shows it.
#[derive(Serialize, ToSchema)]
pub struct SessionBody {
    session_id: String,
    agent_id: String,
    parent_id: String,
    name: String,
    model: Option<String>,
    #[schema(value_type = AgentBudgetSchema)]
    allocation: AgentBudget,
    permissions: Vec<String>,
    created_at: String,
    expires_at: String,
    live: bool,
    released_at: Option<String>,
    release_reason: Option<String>,
    usage: Tokens,
    remaining: RemainingTokens,
}

#[derive(Serialize, ToSchema)]
pub struct Tokens {
    tokens: u64,
}

#[derive(Serialize, ToSchema)]
pub struct RemainingTokens {
    tokens: Option<u64>,
}

impl From<SessionView> for SessionBody {
    fn from(v: SessionView) -> Self {
        let s = v.session;
        let remaining = s.budget.tokens.map(|t| t.saturating_sub(v.tokens_used));
        Self {
            session_id: s.id,
            agent_id: s.agent_id,
            parent_id: s.parent_id,
            name: s.name,
            model: s.model,
            allocation: s.budget,
            permissions: s.permissions,
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            live: v.live,
            released_at: s.released_at.map(rfc3339),
            release_reason: s.release_reason,
            usage: Tokens {
                tokens: v.tokens_used,
            },
            remaining: RemainingTokens { tokens: remaining },
        }
    }
}

/// A spawned session: its token, shown only here, and its environment.
#[derive(Serialize, ToSchema)]
pub struct SpawnedBody {
    session_id: String,
    agent_id: String,
    token: String,
    expires_at: String,
    #[schema(value_type = AgentBudgetSchema)]
    allocation: AgentBudget,
    permissions: Vec<String>,
    env: BTreeMap<&'static str, String>,
}

#[utoipa::path(post, path = "/agents/sessions", tag = "agents",
    request_body = SpawnBody,
    responses(
        (status = 201, description = "the session and its token (shown only here)", body = SpawnedBody),
        (status = 429, description = "the allocation does not fit, or max_agents is reached", body = ErrorBody),
    ))]
pub async fn spawn(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(body): ApiJson<SpawnBody>,
) -> Result<(StatusCode, Json<SpawnedBody>)> {
    if let Some(name) = &body.model {
        let Some(model) = state.gateway.models().get(name) else {
            return Err(swarmgate_core::ValidationError::new(
                "model",
                format!("there is no model {name:?}"),
            )
            .into());
        };
        state
            .gateway
            .may_invoke(&principal, &model.name, model.permission())
            .await
            .require()?;
    }
    let request = SpawnRequest {
        name: body.name,
        model: body.model,
        budget: body.budget,
        ttl_seconds: body.ttl_seconds,
        permissions: body.permissions,
    };
    let spawned = state
        .services
        .agents
        .spawn(&principal, request, &meta)
        .await?;
    let s = spawned.session;
    Ok((
        StatusCode::CREATED,
        Json(SpawnedBody {
            session_id: s.id,
            agent_id: s.agent_id,
            token: spawned.token,
            expires_at: rfc3339(s.expires_at),
            allocation: s.budget,
            permissions: s.permissions,
            env: spawned.env,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Everyone's sessions; the default for holders of `agents.manage`.
    #[serde(default)]
    all: Option<bool>,
    #[serde(default)]
    include_released: bool,
}

#[utoipa::path(get, path = "/agents/sessions", tag = "agents", params(ListQuery, PageQuery),
    responses((status = 200, description = "sessions", body = ListBody<SessionBody>)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<ListBody<SessionBody>>> {
    let page = page.request()?;
    let views = state
        .services
        .agents
        .list(&principal, query.all, query.include_released, &page)
        .await?;
    Ok(Json(ListBody::of(views, SessionBody::from)))
}

#[utoipa::path(get, path = "/agents/sessions/{id}", tag = "agents", params(("id" = String, Path, description = "the session's or the agent's id")),
    responses(
        (status = 200, description = "the session", body = SessionBody),
        (status = 404, description = "no such session of yours", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<SessionBody>> {
    let view = state.services.agents.get(&principal, &id).await?;
    Ok(Json(view.into()))
}

#[utoipa::path(post, path = "/agents/sessions/{id}/heartbeat", tag = "agents", params(("id" = String, Path, description = "the session's or the agent's id")),
    responses(
        (status = 200, description = "kept alive", body = SessionBody),
        (status = 404, description = "no such session of yours", body = ErrorBody),
        (status = 410, description = "already released", body = ErrorBody),
    ))]
pub async fn heartbeat(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<SessionBody>> {
    let view = state.services.agents.heartbeat(&principal, &id).await?;
    Ok(Json(view.into()))
}

#[utoipa::path(delete, path = "/agents/sessions/{id}", tag = "agents", params(("id" = String, Path, description = "the session's or the agent's id")),
    responses(
        (status = 200, description = "released: its token stops at once", body = SessionBody),
        (status = 404, description = "no such session of yours", body = ErrorBody),
    ))]
pub async fn release(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Json<SessionBody>> {
    let view = state
        .services
        .agents
        .release(&principal, &id, &meta)
        .await?;
    Ok(Json(view.into()))
}
