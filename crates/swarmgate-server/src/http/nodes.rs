//! Node endpoints (seed 004): node tokens, registration, heartbeats,
//! metric reports and the operator's view of every node.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::Result;
use crate::http::extract::ApiJson;
use crate::http::AppState;
use crate::identity::{Principal, RequestMeta};
use crate::nodes::Registration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    node_id: String,
    #[serde(default)]
    ttl_minutes: Option<u64>,
}

/// `POST /auth/nodes/token` (`nodes.manage`).
pub async fn token(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Json<Value>> {
    let issued = state
        .identity
        .node_token(&principal, &body.node_id, body.ttl_minutes, &meta)
        .await?;
    Ok(Json(json!({
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
        "node_id": body.node_id,
    })))
}

/// `POST /auth/nodes/{node_id}/revoke` (`nodes.manage`): every token
/// minted for the node so far stops working.
pub async fn revoke_tokens(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(node_id): Path<String>,
) -> Result<StatusCode> {
    state
        .identity
        .revoke_node_tokens(&principal, &node_id, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    node_id: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    labels: Value,
}

pub async fn register(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let registration = Registration {
        node_id: body.node_id,
        address: body.address,
        labels: body.labels,
    };
    let node = state.nodes.register(&principal, registration).await?;
    Ok((StatusCode::CREATED, Json(node)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    node_id: String,
}

pub async fn heartbeat(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<StatusCode> {
    state.nodes.heartbeat(&principal, &body.node_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    node_id: String,
    metrics: Value,
}

/// `POST /api/metrics/report`: at most 64 KiB (the API's body limit).
pub async fn report(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<ReportBody>,
) -> Result<StatusCode> {
    state
        .nodes
        .report(&principal, &body.node_id, body.metrics)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/metrics/nodes` (`nodes.manage`).
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>> {
    let items = state.nodes.list(&principal).await?;
    Ok(Json(json!({ "items": items })))
}
