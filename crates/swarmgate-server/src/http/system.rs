//! Health, discovery documents and the fallbacks.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use swarmgate_service::Principal;
use utoipa::ToSchema;

use crate::http::error::{ApiResult, ErrorBody, ErrorDetail};
use crate::http::{AppState, IdentityState};

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    status: &'static str,
    version: &'static str,
    database: String,
    redis: String,
    /// The failing parts, when there are any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failing: Vec<&'static str>,
}

#[utoipa::path(get, path = "/health", tag = "system", security(()),
    responses(
        (status = 200, description = "every part answers", body = HealthBody),
        (status = 503, description = "a part is failing (see failing)", body = HealthBody),
    ))]
pub async fn health(State(identity): State<IdentityState>) -> (StatusCode, Json<HealthBody>) {
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
    let failing: Vec<&'static str> = [
        h.database.is_err().then_some("database"),
        matches!(h.redis, Some(Err(_))).then_some("redis"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let healthy = failing.is_empty();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = HealthBody {
        status: if healthy { "ok" } else { "unavailable" },
        version: env!("CARGO_PKG_VERSION"),
        database,
        redis,
        failing,
    };
    (status, Json(body))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery", security(()),
    responses((status = 200, description = "the public signing keys", body = Value)))]
pub async fn jwks(State(identity): State<IdentityState>) -> Json<Value> {
    Json(identity.jwks())
}

const CLIENT_AUTH: [&str; 3] = [
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
];
/// "none": the password and refresh_token grants need no client.
const CLIENT_AUTH_OR_NONE: [&str; 4] = [
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
];
const ASSERTION_ALGS: [&str; 3] = ["ES256", "EdDSA", "RS256"];

/// RFC 8414 authorization server metadata, and the OpenID configuration
/// built on it: exactly the endpoints, grants and client authentication
/// methods served.
#[derive(Serialize, ToSchema)]
pub struct DiscoveryBody {
    issuer: String,
    jwks_uri: String,
    token_endpoint: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    grant_types_supported: [&'static str; 3],
    token_endpoint_auth_methods_supported: [&'static str; 4],
    token_endpoint_auth_signing_alg_values_supported: [&'static str; 3],
    introspection_endpoint_auth_methods_supported: [&'static str; 3],
    introspection_endpoint_auth_signing_alg_values_supported: [&'static str; 3],
    revocation_endpoint_auth_methods_supported: [&'static str; 4],
    revocation_endpoint_auth_signing_alg_values_supported: [&'static str; 3],
    /// No authorization endpoint: no browser flows are offered.
    response_types_supported: Vec<&'static str>,
}

/// The OpenID configuration: the RFC 8414 metadata and what OpenID adds.
#[derive(Serialize, ToSchema)]
pub struct OpenIdConfigurationBody {
    #[serde(flatten)]
    discovery: DiscoveryBody,
    subject_types_supported: [&'static str; 1],
    id_token_signing_alg_values_supported: [&'static str; 1],
    access_token_signing_alg_values_supported: [&'static str; 1],
    claims_supported: [&'static str; 13],
}

fn discovery(identity: &IdentityState) -> DiscoveryBody {
    let base = &identity.settings().public_url;
    DiscoveryBody {
        issuer: base.clone(),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        token_endpoint: format!("{base}/auth/token"),
        introspection_endpoint: format!("{base}/auth/introspect"),
        revocation_endpoint: format!("{base}/auth/revoke"),
        grant_types_supported: ["password", "refresh_token", "client_credentials"],
        token_endpoint_auth_methods_supported: CLIENT_AUTH_OR_NONE,
        token_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGS,
        introspection_endpoint_auth_methods_supported: CLIENT_AUTH,
        introspection_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGS,
        revocation_endpoint_auth_methods_supported: CLIENT_AUTH_OR_NONE,
        revocation_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGS,
        response_types_supported: Vec::new(),
    }
}

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery", security(()),
    responses((status = 200, description = "RFC 8414 metadata", body = DiscoveryBody)))]
pub async fn authorization_server_metadata(
    State(identity): State<IdentityState>,
) -> Json<DiscoveryBody> {
    Json(discovery(&identity))
}

#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery", security(()),
    responses((status = 200, description = "OpenID provider metadata", body = OpenIdConfigurationBody)))]
pub async fn openid_configuration(
    State(identity): State<IdentityState>,
) -> Json<OpenIdConfigurationBody> {
    let alg = identity.settings().algorithm.as_str();
    let mut discovery = discovery(&identity);
    discovery.response_types_supported = vec!["token"];
    Json(OpenIdConfigurationBody {
        discovery,
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: [alg],
        access_token_signing_alg_values_supported: [alg],
        claims_supported: [
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
            "node_id",
        ],
    })
}

pub async fn method_not_allowed() -> (StatusCode, Json<ErrorBody>) {
    let error = ErrorDetail::new(
        "method_not_allowed",
        "method not allowed on this path".into(),
    );
    (StatusCode::METHOD_NOT_ALLOWED, Json(ErrorBody { error }))
}

/// Prometheus text exposition; needs `metrics.read` here (an unauthenticated
/// copy can be served on `[metrics] listen`).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<impl axum::response::IntoResponse> {
    state
        .services
        .authz
        .require(&principal, "metrics.read")
        .await?;
    Ok(metrics_response(&state.gateway))
}

pub fn metrics_response(gateway: &swarmgate_gateway::Gateway) -> impl axum::response::IntoResponse {
    let now = gateway.clock().now_ms();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(gateway, now),
    )
}
