//! The OpenAI-compatible API at `/v1`: the model list filtered to what the
//! caller may use, and chat/text completions and embeddings routed by the
//! body's `model`. OpenAI SDKs work unchanged with this base URL and an API
//! key as their key.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use swarmgate_gateway::call_body::{BodyError, CallBody};
use swarmgate_gateway::forward::Incoming;
use utoipa::ToSchema;

use swarmgate_gateway::{Dialect, LlmCall};
use swarmgate_service::{Error, Principal};

use crate::http::error::{ApiResult as Result, ErrorBody};
use crate::http::openapi::{ModelCall, UpstreamAnswer};
use crate::http::{AppState, RequestContext};

/// An error in OpenAI's shape, for the cases its SDKs look at closely.
#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    error: OpenAiError,
}

#[derive(Serialize, ToSchema)]
pub struct OpenAiError {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: &'static str,
    code: &'static str,
}

fn openai_error(
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: &'static str,
) -> Response {
    let error = OpenAiError {
        message,
        kind,
        param: "model",
        code,
    };
    (status, Json(OpenAiErrorBody { error })).into_response()
}

/// OpenAI's model list.
#[derive(Serialize, ToSchema)]
pub struct ModelList {
    object: &'static str,
    data: Vec<ModelEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelEntry {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[utoipa::path(get, path = "/v1/models", tag = "llm",
    responses((status = 200, description = "the models the caller may use", body = ModelList)))]
pub async fn list_models(State(state): State<AppState>, principal: Principal) -> Json<ModelList> {
    let data = state
        .gateway
        .visible_models(&principal)
        .await
        .into_iter()
        .map(|m| ModelEntry {
            id: m.name.clone(),
            object: "model",
            created: 0,
            owned_by: "swarmgate",
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

/// An LLM call's body, which the gateway must read (for its model and
/// worst case), up to `[gateway] max_body_bytes`.
pub(super) async fn read_body(state: &AppState, body: axum::body::Body) -> Result<Bytes> {
    let max = state.gateway.max_body_bytes();
    Ok(Limited::new(body, max as usize)
        .collect()
        .await
        .map_err(|_| Error::PayloadTooLarge)?
        .to_bytes())
}

/// The request for the upstream, without its body: what is sent is the
/// body read (`LlmCall::body`).
pub(super) fn incoming_of(
    parts: axum::http::request::Parts,
) -> (Incoming, Option<std::time::Instant>) {
    let (peer, started) = RequestContext::peer_and_start(&parts.extensions);
    let incoming = Incoming {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: swarmgate_gateway::Body::empty(),
        peer,
    };
    (incoming, started)
}

fn no_model() -> crate::http::error::ApiError {
    swarmgate_core::ValidationError::new("model", "the body must name a model").into()
}

/// Served at `/v1/chat/completions`, `/v1/completions` and
/// `/v1/embeddings` (the document repeats this operation for each).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "llm",
    request_body = ModelCall,
    responses(
        (status = 200, description = "the upstream's answer: JSON, or server-sent events when streamed", content(
            (UpstreamAnswer = "application/json"), (UpstreamAnswer = "text/event-stream"))),
        (status = 403, description = "model_not_allowed", body = OpenAiErrorBody),
        (status = 404, description = "model_not_found", body = OpenAiErrorBody),
        (status = 429, description = "quota_exceeded or rate limited", body = ErrorBody),
        (status = 502, description = "the upstream failed", body = ErrorBody),
        (status = 504, description = "the upstream timed out", body = ErrorBody),
        (status = "default", description = "any other status is the upstream's own",
            content((UpstreamAnswer = "*/*"))),
    ))]
pub async fn call(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(&state, body).await?;
    let body = match CallBody::parse(bytes) {
        Ok(body) => body,
        Err(BodyError::NotAnObject) => return Err(no_model()),
        Err(e) => return Err(Error::BadRequest(e.to_string()).into()),
    };
    let Some(name) = body.model.as_deref() else {
        return Err(no_model());
    };
    let Some(model) = state.gateway.models().get(name) else {
        return Ok(openai_error(
            StatusCode::NOT_FOUND,
            format!("The model `{name}` does not exist"),
            "invalid_request_error",
            "model_not_found",
        ));
    };
    let decision = state
        .gateway
        .may_invoke(&principal, &model.name, model.permission())
        .await;
    if !decision.allowed() {
        return Ok(openai_error(
            StatusCode::FORBIDDEN,
            format!("You may not use the model `{name}`"),
            "permission_error",
            "model_not_allowed",
        ));
    }
    let (incoming, started) = incoming_of(parts);
    let call = LlmCall {
        model,
        dialect: Dialect::OpenAi,
        incoming,
        body,
        started,
    };
    let response = state.gateway.call_model(&principal, call).await?;
    Ok(response.map(axum::body::Body::new))
}
