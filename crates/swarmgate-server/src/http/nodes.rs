//! Node endpoints (seed 004): node tokens, registration, heartbeats,
//! metric reports and the operator's view of every node.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use swarmgate_service::nodes::{NodeView, Registration};
use swarmgate_service::{Principal, RequestMeta};

use crate::http::error::ApiResult as Result;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::page::{ListBody, PageQuery};
use crate::http::time::rfc3339;
use crate::http::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    node_id: String,
    #[serde(default)]
    ttl_minutes: Option<u64>,
}

/// A minted node token.
#[derive(Serialize)]
pub struct NodeTokenBody {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    node_id: String,
}

/// A node as operators see it.
#[derive(Serialize)]
pub struct NodeBody {
    node_id: String,
    address: Option<String>,
    labels: Value,
    registered_at: Option<String>,
    last_seen_at: String,
    last_report_at: Option<String>,
    age_seconds: i64,
    stale: bool,
    metrics: Option<Value>,
}

impl From<NodeView> for NodeBody {
    fn from(v: NodeView) -> Self {
        let n = v.node;
        Self {
            node_id: n.node_id,
            address: n.address,
            labels: n.labels,
            registered_at: n.registered_at.map(rfc3339),
            last_seen_at: rfc3339(n.last_seen_at),
            last_report_at: n.last_report_at.map(rfc3339),
            age_seconds: v.age_seconds,
            stale: v.stale,
            metrics: n.metrics,
        }
    }
}

/// `POST /auth/nodes/token` (`nodes.manage`).
pub async fn token(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Json<NodeTokenBody>> {
    let issued = state
        .services
        .identity
        .node_token(&principal, &body.node_id, body.ttl_minutes, &meta)
        .await?;
    Ok(Json(NodeTokenBody {
        access_token: issued.access_token,
        token_type: "bearer",
        expires_in: issued.expires_in,
        node_id: body.node_id,
    }))
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
        .services
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
) -> Result<(StatusCode, Json<NodeBody>)> {
    let registration = Registration {
        node_id: body.node_id,
        address: body.address,
        labels: body.labels,
    };
    let node = state
        .services
        .nodes
        .register(&principal, registration)
        .await?;
    Ok((StatusCode::CREATED, Json(node.into())))
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
    state
        .services
        .nodes
        .heartbeat(&principal, &body.node_id)
        .await?;
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
        .services
        .nodes
        .report(&principal, &body.node_id, body.metrics)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/metrics/nodes` (`nodes.manage`).
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ListBody<NodeBody>>> {
    let nodes = state
        .services
        .nodes
        .list(&principal, &query.request()?)
        .await?;
    Ok(Json(ListBody::of(nodes, NodeBody::from)))
}
