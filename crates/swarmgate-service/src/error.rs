//! The one error type of the service crate. The server maps it to HTTP in
//! one place (`swarmgate-server/src/http/error.rs`); services never choose
//! a status code.

use swarmgate_core::ValidationError;
use swarmgate_state::StateError;
use swarmgate_store::StoreError;
use swarmgate_tokens::{KeyRingError, TokenError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Validation(ValidationError),
    #[error("{field} is already taken")]
    Conflict { field: &'static str },
    #[error("authentication required")]
    MissingCredentials,
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("{0}")]
    InvalidToken(TokenError),
    #[error("session has been revoked")]
    SessionRevoked,
    #[error("API key is invalid, expired or revoked")]
    InvalidApiKey,
    #[error("refresh token is invalid or expired")]
    InvalidRefreshToken,
    /// An OAuth2 request refused with an RFC 6749 error code (a 400).
    #[error("{error}: {description}")]
    OAuth {
        error: &'static str,
        description: String,
    },
    /// Client authentication failed (RFC 6749 `invalid_client`).
    #[error("client authentication failed: {0}")]
    InvalidClient(String),
    #[error("refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    #[error("account is disabled")]
    AccountDisabled,
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("too many failed logins; account is locked")]
    Locked { retry_after_secs: u64 },
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// A quota limit refused the request (which one, in the body).
    #[error("{} limit of {} reached for {}{}", .0.limit, .0.value, .0.scope, .0.detail)]
    QuotaExceeded(Box<crate::quota::Denial>),
    /// The thing existed but is over (a released agent session).
    #[error("{0}")]
    Gone(String),
    #[error("{component} is unavailable: {detail}")]
    Unavailable {
        component: &'static str,
        detail: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::Validation(e)
    }
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        Error::InvalidToken(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { field } => Error::Conflict { field },
            StoreError::NotFound => Error::NotFound,
            StoreError::Unavailable(detail) => Error::Unavailable {
                component: "database",
                detail,
            },
            StoreError::InvalidInput(_) => Error::BadRequest(
                "the request contains characters that cannot be stored (such as NUL)".into(),
            ),
            StoreError::Config(detail) | StoreError::Database(detail) => Error::Internal(detail),
        }
    }
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Unavailable(detail) => Error::Unavailable {
                component: "redis",
                detail,
            },
            StateError::Config(detail) => Error::Internal(detail),
        }
    }
}

impl From<KeyRingError> for Error {
    fn from(e: KeyRingError) -> Self {
        Error::Internal(e.to_string())
    }
}

/// Seconds for a `Retry-After` header: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(ms: i64) -> u64 {
    ms.max(1).unsigned_abs().div_ceil(1000)
}
