//! The JSON monitoring view: serves the collector's last snapshot and never
//! measures anything on the request path.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::identity::Principal;
use crate::monitoring::{self, Snapshot};

/// Liveness only: cheap enough for a load balancer to poll, unlike
/// `/health`, which pings the database.
pub async fn health() -> Json<Value> {
    Json(json!({
        "status": "ok",
        "uptime_seconds": monitoring::uptime_seconds(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub async fn system(principal: Principal) -> Result<Response> {
    let snapshot = readable_snapshot(&principal)?;
    Ok(Json(&snapshot.system).into_response())
}

pub async fn application(principal: Principal) -> Result<Response> {
    let snapshot = readable_snapshot(&principal)?;
    Ok(Json(&snapshot.application).into_response())
}

pub async fn all(principal: Principal) -> Result<Response> {
    let snapshot = readable_snapshot(&principal)?;
    Ok(Json(&*snapshot).into_response())
}

/// Admins and analysts read metrics; nodes, which only hold
/// `metrics.report`, may read them too.
fn readable_snapshot(principal: &Principal) -> Result<Arc<Snapshot>> {
    if !(principal.allows("metrics.read", None) || principal.allows("metrics.report", None)) {
        return Err(Error::Forbidden("missing permission metrics.read".into()));
    }
    monitoring::latest().ok_or_else(|| Error::Unavailable {
        component: "metrics collector",
        detail: "no snapshot collected yet".into(),
    })
}
