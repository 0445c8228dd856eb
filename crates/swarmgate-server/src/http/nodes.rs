//! Node endpoints (seed 004): node tokens, registration, heartbeats,
//! metric reports and the operator's view of every node.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use swarmgate_service::nodes::{NodeView, Registration};
use swarmgate_service::{Principal, RequestMeta};
use utoipa::ToSchema;

use crate::http::error::{ApiResult as Result, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::page::{ListBody, PageQuery};
use crate::http::time::rfc3339;
use crate::http::AppState;

#[derive(Deserialize, ToSchema)]
#[schema(as = NodeTokenRequest)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    node_id: String,
    #[serde(default)]
    ttl_minutes: Option<u64>,
}

/// A minted node token.
#[derive(Serialize, ToSchema)]
pub struct NodeTokenBody {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    node_id: String,
}

/// A node as operators see it.
#[derive(Serialize, ToSchema)]
pub struct NodeBody {
    node_id: String,
    address: Option<String>,
    /// What the node registered (`null` when it gave none).
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
#[utoipa::path(post, path = "/auth/nodes/token", tag = "nodes",
    request_body = TokenBody,
    responses((status = 200, description = "a node token (role node)", body = NodeTokenBody)))]
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
#[utoipa::path(post, path = "/auth/nodes/{node_id}/revoke", tag = "nodes",
    params(("node_id" = String, Path, description = "the node", pattern = r"^[A-Za-z0-9._:-]{1,128}$")),
    responses(
        (status = 204, description = "every token minted for the node so far stops working"),
        (status = 422, description = "not a node id", body = ErrorBody),
    ))]
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

#[derive(Deserialize, ToSchema)]
#[schema(as = NodeRegistration)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    node_id: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    labels: Value,
}

#[utoipa::path(post, path = "/nodes/register", tag = "nodes",
    request_body = RegisterBody,
    responses((status = 201, description = "the node", body = NodeBody)))]
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

#[derive(Deserialize, ToSchema)]
#[schema(as = NodeHeartbeat)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    node_id: String,
}

#[utoipa::path(post, path = "/nodes/heartbeat", tag = "nodes",
    request_body = HeartbeatBody,
    responses((status = 204, description = "seen")))]
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

#[derive(Deserialize, ToSchema)]
#[schema(as = NodeReport)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    node_id: String,
    metrics: Value,
}

/// `POST /api/metrics/report`: at most 64 KiB (the API's body limit).
#[utoipa::path(post, path = "/api/metrics/report", tag = "nodes",
    request_body = ReportBody,
    responses((status = 204, description = "stored")))]
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
#[utoipa::path(get, path = "/api/metrics/nodes", tag = "nodes", params(PageQuery),
    responses((status = 200, description = "every node, by id", body = ListBody<NodeBody>)))]
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
