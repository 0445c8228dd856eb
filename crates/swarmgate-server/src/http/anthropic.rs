//! Anthropic's Messages API at `/v1/messages`, through the `[anthropic]`
//! profile: the caller authenticates with a swarmgate credential (the
//! Anthropic SDK sends it as `x-api-key`), the gateway sends its own
//! provider key. Errors of this endpoint come in Anthropic's shape so its
//! SDK reports them as it would its own.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use swarmgate_gateway::forward::Incoming;

use crate::error::{Error, Result};
use crate::gateway::{Dialect, LlmCall};
use crate::http::{AppState, RequestContext};
use crate::identity::Principal;

fn anthropic_error(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        Json(json!({ "type": "error", "error": { "type": kind, "message": message } })),
    )
        .into_response()
}

pub async fn messages(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response> {
    let Some(profile) = state.gateway.anthropic() else {
        return Ok(anthropic_error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "no Anthropic profile is configured on this gateway (ANTHROPIC_API_KEY)".into(),
        ));
    };
    let (parts, body) = request.into_parts();
    let max = state.gateway.max_body_bytes();
    let bytes: Bytes = Limited::new(body, max as usize)
        .collect()
        .await
        .map_err(|_| Error::PayloadTooLarge)?
        .to_bytes();
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the body is not valid JSON".into(),
        ));
    };
    let Some(name) = body["model"].as_str().filter(|m| !m.is_empty()) else {
        return Ok(anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: the body must name a model".into(),
        ));
    };
    let permission = format!(
        "models.{}.invoke",
        swarmgate_gateway::models::permission_name(name)
    );
    if !state.gateway.may_use_named(&principal, name, &permission) {
        state.identity.note_denial(&principal, &permission);
        return Ok(anthropic_error(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!("you may not use the model {name}"),
        ));
    }
    let (peer, started) = RequestContext::peer_and_start(&parts.extensions);
    let incoming = Incoming {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: axum::body::Body::empty(),
        peer,
    };
    let call = LlmCall {
        model: &profile.upstream,
        dialect: Dialect::Anthropic,
        incoming,
        body,
        started,
    };
    state
        .gateway
        .call_model(&state.identity, &principal, call)
        .await
}
