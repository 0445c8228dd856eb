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

/// What both discovery documents say about the OAuth2 endpoints.
fn oauth_endpoints(identity: &IdentityState) -> Value {
    let base = &identity.settings().public_url;
    let auth_methods = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/auth/token"),
        "introspection_endpoint": format!("{base}/auth/introspect"),
        "revocation_endpoint": format!("{base}/auth/revoke"),
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        // "none": the password and refresh_token grants need no client.
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
        // No authorization endpoint: no browser flows are offered.
        "response_types_supported": [],
    })
}

/// RFC 8414 metadata: exactly the endpoints, grants and client
/// authentication methods served.
pub async fn authorization_server_metadata(State(identity): State<IdentityState>) -> Json<Value> {
    Json(oauth_endpoints(&identity))
}

pub async fn openid_configuration(State(identity): State<IdentityState>) -> Json<Value> {
    let alg = identity.settings().algorithm.as_str();
    let mut body = oauth_endpoints(&identity);
    body["response_types_supported"] = json!(["token"]);
    body["subject_types_supported"] = json!(["public"]);
    body["id_token_signing_alg_values_supported"] = json!([alg]);
    body["access_token_signing_alg_values_supported"] = json!([alg]);
    body["claims_supported"] = json!([
        "iss",
        "aud",
        "sub",
        "exp",
        "iat",
        "nbf",
        "jti",
        "sid",
        "role",
        "username",
        "client_id",
        "scope",
        "node_id"
    ]);
    Json(body)
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
