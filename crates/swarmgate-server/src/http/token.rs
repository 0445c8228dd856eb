//! `POST /auth/token`: the OAuth2 token endpoint (RFC 6749) for the
//! `password` and `refresh_token` grants, form-encoded in, RFC 6749 error
//! bodies out. The same lockout and rate limits apply as on `/auth/login`,
//! because both call the same `Identity::login`.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;

use crate::error::Error;
use crate::http::IdentityState;
use crate::identity::{RequestMeta, TokenPair};

#[derive(Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    #[allow(dead_code)]
    scope: Option<String>,
}

/// An RFC 6749 section 5.2 error.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        let description = e.to_string();
        match e {
            Error::InvalidCredentials
            | Error::InvalidRefreshToken
            | Error::RefreshTokenReused
            | Error::AccountDisabled => {
                OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
            }
            Error::Locked { retry_after_secs } => OAuthError {
                retry_after: Some(retry_after_secs),
                ..OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
            },
            Error::RateLimited { retry_after_secs } => OAuthError {
                retry_after: Some(retry_after_secs),
                ..OAuthError::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", description)
            },
            Error::Unavailable { component, .. } => OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!("{component} is unavailable"),
            ),
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error at the token endpoint");
                OAuthError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error; see the server log",
                )
            }
            _ => OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn token_response(pair: TokenPair) -> Response {
    let body = json!({
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
    });
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn required(value: Option<String>, name: &str) -> Result<String, OAuthError> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("missing parameter {name}"),
        )
    })
}

pub async fn token(
    State(identity): State<IdentityState>,
    meta: RequestMeta,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    match grant(identity, meta, form).await {
        Ok(pair) => token_response(pair),
        Err(e) => e.into_response(),
    }
}

async fn grant(
    identity: IdentityState,
    meta: RequestMeta,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<TokenPair, OAuthError> {
    let Form(form) = form.map_err(|e| {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "expected an application/x-www-form-urlencoded body: {}",
                e.body_text()
            ),
        )
    })?;
    match required(form.grant_type, "grant_type")?.as_str() {
        "password" => {
            let username = required(form.username, "username")?;
            let password = required(form.password, "password")?;
            Ok(identity.login(&username, password, &meta).await?)
        }
        "refresh_token" => {
            let refresh = required(form.refresh_token, "refresh_token")?;
            Ok(identity.refresh(&refresh, &meta).await?)
        }
        other => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported here"),
        )),
    }
}
