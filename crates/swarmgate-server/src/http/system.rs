//! Health, discovery documents and the fallbacks.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::http::IdentityState;

pub async fn health(State(identity): State<IdentityState>) -> (StatusCode, Json<Value>) {
    let h = identity.health().await;
    let database = match &h.database {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error: {e}"),
    };
    let redis = match &h.redis {
        None => "not configured".to_string(),
        Some(Ok(())) => "ok".to_string(),
        Some(Err(e)) => format!("error: {e}"),
    };
    let healthy = h.database.is_ok() && !matches!(h.redis, Some(Err(_)));
    let mut body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "version": env!("CARGO_PKG_VERSION"),
        "database": database,
        "redis": redis,
    });
    if !healthy {
        let failing: Vec<&str> = [
            h.database.is_err().then_some("database"),
            matches!(h.redis, Some(Err(_))).then_some("redis"),
        ]
        .into_iter()
        .flatten()
        .collect();
        body["failing"] = json!(failing);
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

pub async fn jwks(State(identity): State<IdentityState>) -> Json<Value> {
    Json(identity.jwks())
}

pub async fn openid_configuration(State(identity): State<IdentityState>) -> Json<Value> {
    let settings = identity.settings();
    let base = &settings.public_url;
    let alg = settings.algorithm.as_str();
    Json(json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/auth/token"),
        "grant_types_supported": ["password", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
        "access_token_signing_alg_values_supported": [alg],
        "claims_supported": ["iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid", "role", "username"],
    }))
}

pub async fn method_not_allowed() -> (StatusCode, Json<Value>) {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(
            json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this path"}}),
        ),
    )
}

/// Prometheus text exposition; needs `metrics.read` here (an unauthenticated
/// copy can be served on `[metrics] listen`).
pub async fn metrics(
    State(state): State<crate::http::AppState>,
    principal: crate::identity::Principal,
) -> crate::error::Result<impl axum::response::IntoResponse> {
    principal.require("metrics.read")?;
    Ok(metrics_response(&state.gateway))
}

pub fn metrics_response(gateway: &crate::gateway::Gateway) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(gateway),
    )
}
