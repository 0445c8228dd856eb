//! Machine identities: OAuth2 clients (registration, client
//! authentication by secret or private key JWT, the `client_credentials`
//! grant), node tokens, and token introspection (RFC 7662) and revocation
//! (RFC 7009).
//!
//! A client token's `scope` is fixed at issue; what it may do at a request
//! is that scope and the client's scopes *now*, so narrowing or deleting a
//! client takes effect at once (its version in the shared state is bumped,
//! as a user's is).

mod authenticate;
mod credentials;
mod introspect;
mod nodes;
mod registry;

pub use introspect::{ActiveToken, Introspection};

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use serde_json::Value;
use sha2::{Digest, Sha256};
use swarmgate_core::permission::GrantSet;
use swarmgate_core::{OAuthClient, ValidationError};
use swarmgate_tokens::{ClientKeys, CLIENT_SUBJECT_PREFIX, NODE_SUBJECT_PREFIX};

use crate::error::{Error, Result};

pub const SECRET_BASIC: &str = "client_secret_basic";
pub const SECRET_POST: &str = "client_secret_post";
pub const PRIVATE_KEY_JWT: &str = "private_key_jwt";
pub const AUTH_METHODS: [&str; 3] = [SECRET_BASIC, SECRET_POST, PRIVATE_KEY_JWT];
pub const GRANT_TYPES: [&str; 3] = ["client_credentials", "password", "refresh_token"];
/// Lifetime of a `client_credentials` token: machines ask again cheaply,
/// so a leaked token is useful for an hour at most.
pub const CLIENT_TOKEN_TTL_SECS: i64 = 3600;
const SECRET_PREFIX: &str = "sgc_";
const MAX_NODE_TTL_MINUTES: u64 = 7 * 24 * 60;
/// A fetched `jwks_uri` is used this long before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(300);
const JWKS_MAX_BYTES: usize = 64 * 1024;

/// What an operator registers.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
}

/// A registered client and, for the secret methods, its secret, shown once.
pub struct CreatedClient {
    pub client: OAuthClient,
    pub secret: Option<String>,
}

/// How a request to the token, introspection or revocation endpoint
/// authenticated its client.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    None,
    Secret {
        client_id: String,
        secret: String,
        method: &'static str,
    },
    Jwt {
        /// The `client_id` form field, when sent; must match the assertion.
        client_id: Option<String>,
        assertion: String,
    },
}

/// An issued client or node token.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: Option<String>,
}

/// A client as requests see it: the record and its compiled scopes.
pub(crate) struct LiveClient {
    pub(crate) client: OAuthClient,
    pub(crate) grants: Arc<GrantSet>,
}

/// A client as read at a version; `None` remembers a deleted client.
type Versioned = Arc<(i64, Option<Arc<LiveClient>>)>;

/// What the identity service keeps of clients and nodes between requests.
pub(crate) struct ClientCache {
    /// By client id.
    inner: Cache<String, Versioned>,
    /// Client key sets: fetched from `jwks_uri`s (by URI) or registered
    /// inline (by `inline:CLIENT_ID`).
    jwks: Cache<String, Arc<ClientKeys>>,
    /// `(version, cutoff)` by node id: tokens of the node issued at or
    /// before the cutoff are refused.
    node_cutoffs: Cache<String, (i64, Option<i64>)>,
    /// `jwks_uri`s whose last fetch failed, for a few seconds.
    jwks_failed: Cache<String, ()>,
}

impl ClientCache {
    pub(crate) fn new() -> Self {
        Self {
            inner: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(crate::identity::USER_CACHE_TTL)
                .build(),
            jwks: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(JWKS_TTL)
                .build(),
            node_cutoffs: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(crate::identity::USER_CACHE_TTL)
                .build(),
            jwks_failed: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(10))
                .build(),
        }
    }

    pub(crate) fn forget(&self, client_id: &str) {
        self.inner.invalidate(client_id);
    }

    pub(crate) fn forget_node(&self, node_id: &str) {
        self.node_cutoffs.invalidate(node_id);
    }
}

pub(crate) fn client_subject(id: &str) -> String {
    format!("{CLIENT_SUBJECT_PREFIX}{id}")
}

pub(crate) fn node_subject(id: &str) -> String {
    format!("{NODE_SUBJECT_PREFIX}{id}")
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    ValidationError::new(field, message.into()).into()
}

/// A node id: what a node calls itself, also a path-safe label.
pub fn validate_node_id(node_id: &str) -> Result<()> {
    let ok = (1..=128).contains(&node_id.len())
        && node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "node_id",
            "must be 1 to 128 characters: letters, digits, - _ . :",
        ))
    }
}
