//! The single mapping of the services' and the gateway's errors to
//! status, headers and the JSON body `{"error": {"code", "message"}}`.
//! Internal details are logged here and never sent to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use swarmgate_gateway::{ForwardError, GatewayError};
use swarmgate_service::Error;

/// What a handler fails with: a service's error or the gateway's,
/// answered in swarmgate's shape.
#[derive(Debug)]
pub enum ApiError {
    Service(Error),
    Gateway(GatewayError),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::Service(e)
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Service(e) => Self::Service(e),
            other => Self::Gateway(other),
        }
    }
}

impl From<swarmgate_core::ValidationError> for ApiError {
    fn from(e: swarmgate_core::ValidationError) -> Self {
        Self::Service(e.into())
    }
}

impl ApiError {
    /// The HTTP status of a service error.
    fn status(e: &Error) -> StatusCode {
        match e {
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
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `code` of a service error's body.
    fn code(e: &Error) -> &'static str {
        match e {
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
            Error::Internal(_) => "internal_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Service(e) => service_error(e),
            ApiError::Gateway(e) => gateway_error(e),
        }
    }
}

/// `{"error": {"code", "message", ...}}`, every error's body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// snake_case, stable: what programs match on.
    pub code: &'static str,
    /// For people; may change.
    pub message: String,
    /// The field of the request a validation error or conflict is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `rate_limit_error` for a quota refusal, as OpenAI's SDKs expect.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The limit set and the limit that refused a call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'static str>,
}

impl ErrorDetail {
    pub fn new(code: &'static str, message: String) -> Self {
        Self {
            code,
            message,
            field: None,
            kind: None,
            scope: None,
            limit: None,
        }
    }
}

fn service_error(e: Error) -> Response {
    let status = ApiError::status(&e);
    let message = match &e {
        Error::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            "internal error; see the server log".to_string()
        }
        Error::Unavailable { component, detail } => {
            tracing::warn!(component, error = %detail, "dependency unavailable");
            format!("{component} is unavailable")
        }
        other => other.to_string(),
    };
    let mut detail = ErrorDetail::new(ApiError::code(&e), message);
    match &e {
        Error::Validation(v) => detail.field = Some(v.field.to_string()),
        Error::Conflict { field } => detail.field = Some((*field).to_string()),
        Error::QuotaExceeded(denial) => {
            // OpenAI's SDKs read `type`; operators read scope and limit.
            detail.kind = Some("rate_limit_error");
            detail.scope = Some(denial.scope.clone());
            detail.limit = Some(denial.limit);
        }
        _ => {}
    }
    let mut response = (status, Json(ErrorBody { error: detail })).into_response();
    let headers = response.headers_mut();
    match &e {
        Error::Locked { retry_after_secs } | Error::RateLimited { retry_after_secs } => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        Error::QuotaExceeded(denial) => {
            if let Some(ms) = denial.retry_after_ms {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(swarmgate_service::error::retry_after_secs(ms)),
                );
            }
            swarmgate_gateway::enforce::apply_rate_headers(headers, &denial.headers);
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

fn gateway_error(e: GatewayError) -> Response {
    let (status, code, message) = match e {
        GatewayError::Service(e) => return service_error(e),
        GatewayError::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not served on this route".to_string(),
        ),
        e @ GatewayError::ProviderAuth(_) => (
            StatusCode::BAD_GATEWAY,
            "provider_auth_failed",
            e.to_string(),
        ),
        GatewayError::Forward(ForwardError::NoUpstream(name)) => {
            return service_error(Error::Unavailable {
                component: "upstream",
                detail: format!("every upstream of {name} is ejected"),
            });
        }
        GatewayError::Forward(e @ ForwardError::Timeout(_)) => (
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            e.to_string(),
        ),
        GatewayError::Forward(ForwardError::TooLarge(_)) => {
            return service_error(Error::PayloadTooLarge);
        }
        GatewayError::Forward(ForwardError::Connect(detail) | ForwardError::Upstream(detail)) => {
            tracing::warn!(error = %detail, "upstream failed");
            (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the upstream failed (connection refused, reset, or not HTTP)".to_string(),
            )
        }
    };
    let body = ErrorBody {
        error: ErrorDetail::new(code, message),
    };
    (status, Json(body)).into_response()
}
