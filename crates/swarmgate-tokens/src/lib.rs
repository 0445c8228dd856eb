//! Access tokens (JWT, RFC 9068 profile), their signing keys and JWKS, and
//! opaque refresh tokens.
//!
//! The verifier trusts nothing in a token's header: the algorithm is the one
//! configured, the key is found by `kid` among our own keys only, and headers
//! that try to bring their own key (`jwk`, `jku`, `x5u`, `x5c`) are refused.

mod client_assertion;
mod keys;
mod opaque;

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use client_assertion::{
    peek_claims, verify_client_assertion, ClientAssertion, ClientAssertionError, ClientKeys,
    PeekedClaims, ASSERTION_TYPE_JWT_BEARER, MAX_ASSERTION_LIFETIME_SECS,
};
pub use keys::{generate_ed25519, Algorithm, KeyRing, KeyRingError};
pub use opaque::{hash_opaque, new_opaque, OpaqueToken};

/// `typ` of every access token swarmgate issues (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// `typ` of the assertion the gateway sends upstream (`X-Swarm-Assertion`);
/// different from `at+jwt`, so an assertion can never pass as an access
/// token here.
pub const ASSERTION_TYP: &str = "swarm-assertion+jwt";
/// Lifetime of an assertion.
pub const ASSERTION_TTL_SECS: i64 = 60;

/// Claims of a gateway assertion: who the caller is, for one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    /// The route's name.
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub role: String,
    pub auth_method: String,
}

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// Claims of an access token. `sub` says whose it is: a user id (with
/// `sid`, `username`), `client:ID` (with `client_id`, `scope`) or `node:ID`
/// (with `node_id`). User ids are UUIDs, so the prefixes cannot collide.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sid: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Space-separated permissions (RFC 8693 `scope`), for client tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// RFC 8693 `act`: the user an agent acts for (agent tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Act>,
    /// What binds an agent besides its parent (agent tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentClaims>,
}

/// The `agent` claim: an agent session's own limits, and what it inherits
/// from the credential that spawned it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentClaims {
    pub budget: swarmgate_core::limits::AgentBudget,
    /// The API key it was spawned with: revoking the key stops the agent,
    /// and the key's limits bind it too. Keys never change otherwise, so
    /// their limits are carried here rather than looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_limits: Option<swarmgate_core::LimitSet>,
    /// The models it may call (the session's model, the key's list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// End (unix ms) of the day its allocation was carved from; after it,
    /// the parent's day budget applies to the agent again.
    #[serde(default)]
    pub carved_until: i64,
}

/// The actor claim of RFC 8693 section 4.1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    pub sub: String,
}

/// Subject prefix of OAuth2 client tokens.
pub const CLIENT_SUBJECT_PREFIX: &str = "client:";
/// Subject prefix of node tokens.
pub const NODE_SUBJECT_PREFIX: &str = "node:";
/// Subject prefix of agent-session tokens.
pub const AGENT_SUBJECT_PREFIX: &str = "agent:";

/// Why a token was refused. Every variant is a 401 to the caller; the text
/// says which rule failed without echoing the token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("token is larger than 8 KiB")]
    TooLarge,
    #[error("token is malformed")]
    Malformed,
    #[error("token type must be at+jwt")]
    WrongType,
    #[error("token header may not carry its own key (jwk, jku, x5u, x5c)")]
    EmbeddedKey,
    #[error("token algorithm is not the configured one")]
    WrongAlgorithm,
    #[error("token key id is unknown")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is wrong")]
    WrongIssuer,
    #[error("token audience is wrong")]
    WrongAudience,
    #[error("token is missing claim {0}")]
    MissingClaim(String),
}

/// Issues and verifies access tokens for one issuer and audience.
pub struct AccessTokens {
    keys: KeyRing,
    issuer: String,
    audience: String,
}

impl AccessTokens {
    pub fn new(keys: KeyRing, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Swaps in a reloaded key ring (after `keys rotate` on any instance).
    pub fn with_keys(&self, keys: KeyRing) -> Self {
        Self::new(keys, self.issuer.clone(), self.audience.clone())
    }

    pub fn issue(&self, claims: &AccessClaims) -> Result<String, KeyRingError> {
        let signer = self.keys.signer()?;
        let mut header = Header::new(self.keys.algorithm().jwt());
        header.typ = Some(ACCESS_TOKEN_TYP.to_string());
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.key)
            .map_err(|e| KeyRingError::Signing(e.to_string()))
    }

    /// Signs an assertion for an upstream (audience = the route's name).
    pub fn issue_assertion(&self, claims: &AssertionClaims) -> Result<String, KeyRingError> {
        let signer = self.keys.signer()?;
        let mut header = Header::new(self.keys.algorithm().jwt());
        header.typ = Some(ASSERTION_TYP.to_string());
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.key)
            .map_err(|e| KeyRingError::Signing(e.to_string()))
    }

    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.jwk.is_some()
            || header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            return Err(TokenError::EmbeddedKey);
        }
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(TokenError::WrongType);
        }
        let algorithm = self.keys.algorithm().jwt();
        if header.alg != algorithm {
            return Err(TokenError::WrongAlgorithm);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let key = self.keys.verifier(kid).ok_or(TokenError::UnknownKey)?;

        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.required_spec_claims = ["exp", "nbf", "iss", "aud", "sub"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>();
        jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.into_kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c),
                _ => TokenError::Malformed,
            })
    }
}
