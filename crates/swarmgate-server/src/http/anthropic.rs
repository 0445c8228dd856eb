//! Anthropic's Messages API at `/v1/messages`, through the `[anthropic]`
//! profile: the caller authenticates with a swarmgate credential (the
//! Anthropic SDK sends it as `x-api-key`), the gateway sends its own
//! provider key. Errors of this endpoint come in Anthropic's shape so its
//! SDK reports them as it would its own.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use swarmgate_gateway::call_body::{BodyError, CallBody};
use swarmgate_gateway::{Dialect, LlmCall};
use swarmgate_service::Principal;

use super::openai::{incoming_of, read_body};
use crate::http::error::{ApiResult as Result, ErrorBody};
use crate::http::openapi::{ModelCall, UpstreamAnswer};
use crate::http::AppState;

/// Longer names are refused before they reach the permission check, the
/// denial log or a reply.
const MAX_MODEL_NAME: usize = 256;

/// An error in Anthropic's shape: `{"type": "error", "error": {type, message}}`.
#[derive(Serialize, ToSchema)]
pub struct AnthropicErrorBody {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicError,
}

#[derive(Serialize, ToSchema)]
pub struct AnthropicError {
    #[serde(rename = "type")]
    kind: &'static str,
    message: String,
}

fn anthropic_error(status: StatusCode, kind: &'static str, message: String) -> Response {
    let body = AnthropicErrorBody {
        kind: "error",
        error: AnthropicError { kind, message },
    };
    (status, Json(body)).into_response()
}

/// `POST /v1/messages`: a metered LLM call.
#[utoipa::path(post, path = "/v1/messages", tag = "llm",
    request_body = ModelCall,
    responses(
        (status = 200, description = "Anthropic's answer: JSON, or server-sent events when streamed", content(
            (UpstreamAnswer = "application/json"), (UpstreamAnswer = "text/event-stream"))),
        (status = 400, description = "not JSON, or no valid model name", body = AnthropicErrorBody),
        (status = 403, description = "the caller may not use the model", body = AnthropicErrorBody),
        (status = 404, description = "no Anthropic profile is configured", body = AnthropicErrorBody),
        (status = 429, description = "quota_exceeded or rate limited", body = ErrorBody),
        (status = 502, description = "the upstream failed", body = ErrorBody),
        (status = 504, description = "the upstream timed out", body = ErrorBody),
        (status = "default", description = "any other status is the upstream's own",
            content((UpstreamAnswer = "*/*"))),
    ))]
pub async fn messages(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response> {
    handle(state, principal, request, Endpoint::Messages).await
}

/// `POST /v1/messages/count_tokens`: free at Anthropic, so counted against
/// request limits only.
#[utoipa::path(post, path = "/v1/messages/count_tokens", tag = "llm",
    request_body = ModelCall,
    responses(
        (status = 200, description = "Anthropic's count", content(
            (UpstreamAnswer = "application/json"), (UpstreamAnswer = "text/event-stream"))),
        (status = 400, description = "not JSON, or no valid model name", body = AnthropicErrorBody),
        (status = 403, description = "the caller may not use the model", body = AnthropicErrorBody),
        (status = 404, description = "no Anthropic profile is configured", body = AnthropicErrorBody),
        (status = 429, description = "quota_exceeded or rate limited", body = ErrorBody),
        (status = 502, description = "the upstream failed", body = ErrorBody),
        (status = 504, description = "the upstream timed out", body = ErrorBody),
        (status = "default", description = "any other status is the upstream's own",
            content((UpstreamAnswer = "*/*"))),
    ))]
pub async fn count_tokens(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response> {
    handle(state, principal, request, Endpoint::CountTokens).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Messages,
    CountTokens,
}

/// Both endpoints name a model, which the caller must be allowed to use.
async fn handle(
    state: AppState,
    principal: Principal,
    request: Request,
    endpoint: Endpoint,
) -> Result<Response> {
    let Some(profile) = state.gateway.anthropic() else {
        return Ok(anthropic_error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "no Anthropic profile is configured on this gateway (ANTHROPIC_API_KEY)".into(),
        ));
    };
    let (parts, body) = request.into_parts();
    let bytes = read_body(&state, body).await?;
    let no_model = || {
        anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: the body must name a model".into(),
        )
    };
    let body = match CallBody::parse(bytes) {
        Ok(body) => body,
        Err(BodyError::NotAnObject) => return Ok(no_model()),
        Err(BodyError::NotJson) => {
            return Ok(anthropic_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "the body is not valid JSON".into(),
            ))
        }
        Err(e) => {
            return Ok(anthropic_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                e.to_string(),
            ))
        }
    };
    let Some(name) = body.model.as_deref().filter(|m| !m.is_empty()) else {
        return Ok(no_model());
    };
    let permission = swarmgate_gateway::models::model_permission(name);
    if name.len() > MAX_MODEL_NAME
        || swarmgate_core::permission::validate_permission(&permission).is_err()
    {
        return Ok(anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("model: not a model name (at most {MAX_MODEL_NAME} bytes, letters or digits)"),
        ));
    }
    if !state
        .gateway
        .may_invoke(&principal, name, &permission)
        .await
        .allowed()
    {
        return Ok(anthropic_error(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!("you may not use the model {name}"),
        ));
    }
    let (mut incoming, started) = incoming_of(parts);
    if endpoint == Endpoint::CountTokens {
        incoming.body = swarmgate_gateway::Body::from(body.bytes().clone());
        let response = state
            .gateway
            .call_provider_plain(&principal, profile, incoming, started)
            .await?;
        return Ok(response.map(axum::body::Body::new));
    }
    let call = LlmCall {
        model: &profile.upstream,
        dialect: Dialect::Anthropic,
        incoming,
        body,
        started,
    };
    let response = state.gateway.call_model(&principal, call).await?;
    Ok(response.map(axum::body::Body::new))
}
