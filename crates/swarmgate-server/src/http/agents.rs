//! `/agents/sessions`: spawning, listing, keeping alive and releasing
//! agent sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use swarmgate_core::limits::AgentBudget;

use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::AppState;
use crate::identity::{Principal, RequestMeta};
use crate::quota::agents::{SessionView, SpawnRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnBody {
    name: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    budget: AgentBudget,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
}

fn view_json(v: &SessionView) -> Value {
    let s = &v.session;
    let remaining = s.budget.tokens.map(|t| t.saturating_sub(v.tokens_used));
    json!({
        "session_id": s.id,
        "agent_id": s.agent_id,
        "parent_id": s.parent_id,
        "name": s.name,
        "model": s.model,
        "allocation": s.budget,
        "permissions": s.permissions,
        "created_at": rfc3339(s.created_at),
        "expires_at": rfc3339(s.expires_at),
        "live": v.live,
        "released_at": s.released_at.map(rfc3339),
        "release_reason": s.release_reason,
        "usage": { "tokens": v.tokens_used },
        "remaining": { "tokens": remaining },
    })
}

pub async fn spawn(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(body): ApiJson<SpawnBody>,
) -> Result<(StatusCode, Json<Value>)> {
    if let Some(name) = &body.model {
        match state.gateway.models().get(name) {
            None => {
                return Err(swarmgate_core::ValidationError::new(
                    "model",
                    format!("there is no model {name:?}"),
                )
                .into())
            }
            Some(model) if !state.gateway.may_use(&principal, model) => {
                return Err(Error::Forbidden(format!(
                    "you may not use the model {name}"
                )))
            }
            Some(_) => {}
        }
    }
    let request = SpawnRequest {
        name: body.name,
        model: body.model,
        budget: body.budget,
        ttl_seconds: body.ttl_seconds,
        permissions: body.permissions,
    };
    let spawned = state.agents.spawn(&principal, request, &meta).await?;
    let s = &spawned.session;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "session_id": s.id,
            "agent_id": s.agent_id,
            "token": spawned.token,
            "expires_at": rfc3339(s.expires_at),
            "allocation": s.budget,
            "permissions": s.permissions,
            "env": spawned.env,
        })),
    ))
}

#[derive(Deserialize)]
pub struct ListQuery {
    /// Everyone's sessions; the default for holders of `agents.manage`.
    #[serde(default)]
    all: Option<bool>,
    #[serde(default)]
    include_released: bool,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The cursor is `CREATED_AT.ID` of the last session of the page.
fn parse_cursor(cursor: &str) -> Result<(i64, &str)> {
    cursor
        .split_once('.')
        .and_then(|(at, id)| Some((at.parse().ok()?, id)))
        .filter(|(_, id)| !id.is_empty())
        .ok_or_else(|| Error::BadRequest("cursor is not one this server issued".into()))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>> {
    let before = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(parse_cursor)
        .transpose()?;
    let (views, more) = state
        .agents
        .list(
            &principal,
            query
                .all
                .unwrap_or_else(|| principal.allows("agents.manage", None)),
            query.include_released,
            before,
            query.limit.unwrap_or(50),
        )
        .await?;
    let next = more
        .then(|| {
            views
                .last()
                .map(|v| format!("{}.{}", v.session.created_at, v.session.id))
        })
        .flatten();
    let items: Vec<Value> = views.iter().map(view_json).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next })))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(view_json(&state.agents.get(&principal, &id).await?)))
}

pub async fn heartbeat(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(view_json(
        &state.agents.heartbeat(&principal, &id).await?,
    )))
}

pub async fn release(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(view_json(
        &state.agents.release(&principal, &id, &meta).await?,
    )))
}
