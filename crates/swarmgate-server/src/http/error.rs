//! The single mapping from [`Error`] to status, headers and the JSON body
//! `{"error": {"code", "message"}}`. Internal details are logged here and
//! never sent to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::Error;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::OAuth { .. } => StatusCode::BAD_REQUEST,
            Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::MissingCredentials
            | Error::InvalidCredentials
            | Error::InvalidToken(_)
            | Error::SessionRevoked
            | Error::InvalidApiKey
            | Error::InvalidRefreshToken
            | Error::InvalidClient(_)
            | Error::RefreshTokenReused => StatusCode::UNAUTHORIZED,
            Error::AccountDisabled | Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Locked { .. } => StatusCode::LOCKED,
            Error::RateLimited { .. } | Error::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Gone(_) => StatusCode::GONE,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::BadGateway(_) | Error::ProviderAuth(_) => StatusCode::BAD_GATEWAY,
            Error::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::OAuth { error, .. } => error,
            Error::Validation(_) => "validation_failed",
            Error::Conflict { .. } => "conflict",
            Error::MissingCredentials => "missing_credentials",
            Error::InvalidCredentials => "invalid_credentials",
            Error::InvalidToken(_) => "invalid_token",
            Error::SessionRevoked => "session_revoked",
            Error::InvalidApiKey => "invalid_api_key",
            Error::InvalidRefreshToken => "invalid_refresh_token",
            Error::InvalidClient(_) => "invalid_client",
            Error::RefreshTokenReused => "refresh_token_reused",
            Error::AccountDisabled => "account_disabled",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound => "not_found",
            Error::PayloadTooLarge => "payload_too_large",
            Error::Locked { .. } => "account_locked",
            Error::RateLimited { .. } => "rate_limited",
            Error::QuotaExceeded(_) => "quota_exceeded",
            Error::Gone(_) => "gone",
            Error::Unavailable { .. } => "service_unavailable",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::BadGateway(_) => "bad_gateway",
            Error::ProviderAuth(_) => "provider_auth_failed",
            Error::GatewayTimeout(_) => "gateway_timeout",
            Error::Internal(_) => "internal_error",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; see the server log".to_string()
            }
            Error::BadGateway(detail) => {
                tracing::warn!(error = %detail, "upstream failed");
                "the upstream failed (connection refused, reset, or not HTTP)".to_string()
            }
            Error::Unavailable { component, detail } => {
                tracing::warn!(component, error = %detail, "dependency unavailable");
                format!("{component} is unavailable")
            }
            other => other.to_string(),
        };
        let mut body = json!({ "error": { "code": self.code(), "message": message } });
        if let Error::Validation(v) = &self {
            body["error"]["field"] = json!(v.field);
        }
        if let Error::Conflict { field } = &self {
            body["error"]["field"] = json!(field);
        }
        if let Error::QuotaExceeded(denial) = &self {
            // OpenAI's SDKs read `type`; operators read scope and limit.
            body["error"]["type"] = json!("rate_limit_error");
            body["error"]["scope"] = json!(denial.scope);
            body["error"]["limit"] = json!(denial.limit);
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Error::Locked { retry_after_secs } | Error::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Error::QuotaExceeded(denial) => {
                if let Some(ms) = denial.retry_after_ms {
                    headers.insert(
                        header::RETRY_AFTER,
                        HeaderValue::from(crate::error::retry_after_secs(ms)),
                    );
                }
                denial.headers.apply(headers);
            }
            Error::InvalidToken(_) | Error::SessionRevoked | Error::InvalidApiKey => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            _ if status == StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
