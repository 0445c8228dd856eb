//! `/quota`: the limits that apply to the caller, and the operators' view.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::Result;
use crate::http::AppState;
use crate::identity::Principal;

pub async fn status(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>> {
    let scopes = state.gateway.quota.status(&principal).await?;
    let limits: Vec<Value> = scopes.iter().map(|s| s.to_json()).collect();
    Ok(Json(json!({ "limits": limits })))
}

pub async fn health(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>> {
    Ok(Json(state.agents.health(&principal).await?))
}
