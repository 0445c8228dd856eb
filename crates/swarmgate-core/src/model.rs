//! Records the identity service keeps. Times are unix seconds (UTC).

use serde::Serialize;

/// A role name. Validity of the name is checked against the role table of the
/// running configuration, not here.
pub type Role = String;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    pub full_name: Option<String>,
    pub role: Role,
    /// PHC string (argon2id). Never serialised, never logged.
    pub password_hash: String,
    pub disabled: bool,
    /// Limits of this user, on top of its role's.
    pub limits: Option<crate::LimitSet>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What `Store::create_user` needs; the store assigns nothing but checks
/// uniqueness (case-insensitive username and email).
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub username: String,
    pub email: String,
    pub full_name: Option<String>,
    pub role: Role,
    pub password_hash: String,
    pub created_at: i64,
}

/// One append-only audit row. `detail` is a JSON object with event-specific
/// fields; it must never carry a password, token, key or hash.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub at: i64,
    pub event: String,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
    pub outcome: String,
    pub detail: serde_json::Value,
}

/// A token signing key as kept in the database, shared by every instance.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    /// Base64 PKCS#8 document of the private key.
    pub private_key: String,
    /// Base64url raw public key (the JWK `x`).
    pub public_key: String,
    pub created_at: i64,
    /// When a newer key took over; the public half stays published until
    /// every token it signed has expired.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRow {
    // The private key must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// An API key as stored: never the secret itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The first 12 characters of the key, so a person can recognise it.
    pub prefix: String,
    pub key_hash: String,
    /// Grants, as written (validated at creation).
    pub permissions: Vec<String>,
    /// LLM models the key may call; `None` means no restriction beyond
    /// permissions.
    pub models: Option<Vec<String>>,
    /// Limits of this key, on top of its owner's (never looser).
    pub limits: Option<crate::LimitSet>,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// An OAuth2 client (RFC 6749 section 2): a machine identity that obtains
/// tokens with the `client_credentials` grant. Never holds its secret, only
/// the SHA-256 of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub id: String,
    pub name: String,
    /// The user who registered it.
    pub owner_id: String,
    pub grant_types: Vec<String>,
    /// The permissions a token of this client may carry at most.
    pub scopes: Vec<String>,
    /// `client_secret_basic`, `client_secret_post` or `private_key_jwt`.
    pub auth_method: String,
    pub secret_hash: Option<String>,
    /// A registered JWK Set (JSON text), for `private_key_jwt`.
    pub jwks: Option<String>,
    pub jwks_uri: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

/// A worker node of the swarm, as registered and last heard from.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub node_id: String,
    pub address: Option<String>,
    pub labels: serde_json::Value,
    pub registered_at: Option<i64>,
    pub last_seen_at: i64,
    pub last_report_at: Option<i64>,
    pub metrics: Option<serde_json::Value>,
}

/// A short-lived agent identity spawned by a user (issue 5, seed 003).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSession {
    pub id: String,
    pub agent_id: String,
    /// The user it acts for.
    pub parent_id: String,
    /// The API key it was spawned with, if any (revoking it ends the
    /// session).
    pub key_id: Option<String>,
    pub name: String,
    pub model: Option<String>,
    pub budget: crate::limits::AgentBudget,
    pub permissions: Vec<String>,
    /// Where its token allocation was taken from, to give back the unused
    /// part on release.
    pub carved: Vec<Carve>,
    pub created_at: i64,
    pub expires_at: i64,
    pub released_at: Option<i64>,
    pub release_reason: Option<String>,
    pub tokens_used: Option<i64>,
}

/// Tokens taken from one of the parent's day budgets (a shared-state key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Carve {
    pub key: String,
    pub tokens: u64,
    pub until_ms: i64,
}
