//! Extractors that turn request parts into domain inputs, with every
//! rejection expressed as our error type (never axum's plain-text bodies).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use swarmgate_core::ValidationError;
use swarmgate_service::{Error, Presented, Principal, RequestMeta};

use crate::http::error::ApiError;
use crate::http::middleware::RequestContext;
use crate::http::AppState;

/// JSON body whose failures map to 400 (not JSON), 413 (too large) or 422
/// (wrong shape, naming the field).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection).into()),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let (field, message) = data_error_field(&e.body_text());
            Error::Validation(ValidationError::new(field, message))
        }
        JsonRejection::JsonSyntaxError(_) => {
            Error::BadRequest("request body is not valid JSON".into())
        }
        JsonRejection::MissingJsonContentType(_) => {
            Error::BadRequest("expected a JSON body with Content-Type: application/json".into())
        }
        JsonRejection::BytesRejection(e)
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            Error::PayloadTooLarge
        }
        other => Error::BadRequest(other.body_text()),
    }
}

/// Finds the field a serde error is about. axum's text is
/// "Failed to deserialize …: PATH: MESSAGE" for a wrong type and
/// "…: missing field `NAME` at …" for an absent one.
fn data_error_field(text: &str) -> (String, String) {
    let detail = text.split_once("target type: ").map_or(text, |(_, d)| d);
    let named = |prefix: &str| {
        detail
            .split_once(prefix)
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_string())
    };
    if let Some(name) = named("missing field `").or_else(|| named("unknown field `")) {
        return (name, detail.to_string());
    }
    if let Some((path, message)) = detail.split_once(": ") {
        let is_path = !path.is_empty()
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']'));
        if is_path {
            return (path.to_string(), message.to_string());
        }
    }
    ("body".to_string(), detail.to_string())
}

impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let ctx = parts.extensions.get::<RequestContext>();
        Ok(RequestMeta {
            request_id: ctx.map(|c| c.request_id().to_string()),
            client_ip: ctx.and_then(RequestContext::client_ip),
        })
    }
}

/// The credential of a request: `X-API-Key`, or `Authorization: Bearer`.
pub fn presented(parts: &Parts) -> Result<Presented<'_>, Error> {
    if let Some(value) = parts.headers.get("x-api-key") {
        let key = value.to_str().map_err(|_| Error::InvalidApiKey)?.trim();
        if key.is_empty() {
            return Err(Error::MissingCredentials);
        }
        return Ok(Presented::ApiKey(key));
    }
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(Error::MissingCredentials)?
        .to_str()
        .map_err(|_| Error::MissingCredentials)?;
    let (scheme, token) = value.split_once(' ').ok_or(Error::MissingCredentials)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::MissingCredentials);
    }
    Ok(Presented::Bearer(token.trim()))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let credential = presented(parts)?;
        Ok(state.services.identity.authenticate(credential).await?)
    }
}

/// Query string whose failures are 400 with our error body.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|e| Error::BadRequest(e.body_text()).into())
    }
}
