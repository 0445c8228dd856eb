//! The identity service: registration, login, refresh-token rotation,
//! logout, password change, and turning a bearer token into a [`Principal`].
//!
//! No HTTP here: the handlers in `crate::http` parse a request, call one of
//! these functions and map the result. This module decides; the store keeps;
//! the shared state coordinates instances.

pub mod admin;
mod api_keys;
pub mod audit;
mod authn;
pub mod clients;
mod denials;
pub mod keys;
mod session;
mod sync;

pub use admin::UserPatch;
pub use api_keys::{Actor, CreatedApiKey, NewApiKey};
pub use authn::Presented;
pub use clients::{ClientAuth, CreatedClient, NewClient};

use std::sync::Arc;

use serde_json::json;
use swarmgate_core::password::{self, HashParams};
use swarmgate_core::permission::GrantSet;
use swarmgate_core::roles::Role;
use swarmgate_state::{RateDecision, SharedState};
use swarmgate_store::Store;
use swarmgate_tokens::LEEWAY_SECS;

use crate::clock::now_ms;
use crate::config::Settings;
use crate::error::{retry_after_secs, Error, Result};
use audit::{Audit, Subject};
use keys::KeyCache;

/// Prefix of refresh tokens, so a leaked one is recognisable in a scan.
pub const REFRESH_TOKEN_PREFIX: &str = "sgr_";
/// How often revocations in the database are re-published to the shared
/// state (they are published at once when made; this is the safety net).
pub const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_secs(2);
const FULL_RESYNC: std::time::Duration = std::time::Duration::from_secs(300);
/// How many previous passwords a new one must differ from.
pub const PASSWORD_HISTORY: i64 = 5;

/// Facts about the request that go into the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    /// When the request arrived (for the gateway's overhead metric).
    pub started: Option<std::time::Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
    /// An OAuth2 client's token (`client_credentials`).
    Client,
    /// An agent session's token.
    Agent,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Client => "client",
            AuthMethod::Agent => "agent",
        }
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    Session {
        session_id: String,
    },
    ApiKey {
        key_id: String,
        /// The key's own grants; what it may do is these intersected with
        /// its owner's current role.
        grants: Arc<GrantSet>,
        models: Option<Arc<[String]>>,
        limits: Option<swarmgate_core::LimitSet>,
        /// Unix seconds.
        expires_at: i64,
    },
    /// An OAuth2 client's access token. The principal's role holds the
    /// token's `scope`; `grants` are the client's scopes now, so narrowing
    /// or deleting the client takes effect on the next request.
    Client {
        client_id: String,
        jti: String,
        grants: Arc<GrantSet>,
    },
    /// A node token (role `node`), minted by an operator for one node.
    Node {
        node_id: String,
        jti: String,
    },
    /// An agent session's token. The principal is its parent user (with
    /// the parent's current role); `grants` are what the agent was given,
    /// so it may do only what both allow.
    Agent {
        session_id: String,
        agent_id: String,
        grants: Arc<GrantSet>,
        /// Unix ms.
        expires_at: i64,
        claims: Arc<swarmgate_tokens::AgentClaims>,
    },
}

/// A verified caller, with its user's *current* role (not the one in a
/// token), so a demotion takes effect on the next request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub role: Arc<Role>,
    pub credential: Credential,
    /// The user's own limits (on top of the role's).
    pub user_limits: Option<swarmgate_core::LimitSet>,
}

impl Principal {
    pub fn auth_method(&self) -> AuthMethod {
        match self.credential {
            Credential::Session { .. } | Credential::Node { .. } => AuthMethod::Jwt,
            Credential::ApiKey { .. } => AuthMethod::ApiKey,
            Credential::Client { .. } => AuthMethod::Client,
            Credential::Agent { .. } => AuthMethod::Agent,
        }
    }

    /// The grants that narrow the role, if the credential has its own.
    fn credential_grants(&self) -> Option<&GrantSet> {
        match &self.credential {
            Credential::ApiKey { grants, .. }
            | Credential::Client { grants, .. }
            | Credential::Agent { grants, .. } => Some(grants),
            Credential::Session { .. } | Credential::Node { .. } => None,
        }
    }

    /// The node this caller speaks for: a node token's node, or an OAuth2
    /// client's id (a node may authenticate as a client with private key
    /// JWT, so no long-lived secret lives on it).
    pub fn node_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::Node { node_id, .. } => Some(node_id),
            Credential::Client { client_id, .. } => Some(client_id),
            Credential::Session { .. } | Credential::ApiKey { .. } | Credential::Agent { .. } => {
                None
            }
        }
    }

    /// Whether the caller is a user (a session or an API key), not a
    /// machine identity.
    pub fn is_user(&self) -> bool {
        matches!(
            self.credential,
            Credential::Session { .. } | Credential::ApiKey { .. }
        )
    }

    /// The whole decision: the role allows it, and so does the key if the
    /// caller came with one.
    pub fn allows(&self, permission: &str, resource: Option<&str>) -> bool {
        self.role.grants.allows(permission, resource, &self.user_id)
            && self
                .credential_grants()
                .is_none_or(|grants| grants.allows(permission, resource, &self.user_id))
    }

    /// Whether everything `target` grants is also granted to this caller,
    /// through its role and, for a key, through the key too (so a key
    /// holding only `users.manage` cannot hand out more than itself).
    pub fn covers_role(&self, target: &Role) -> bool {
        target.grants.grants().iter().all(|g| {
            self.role.grants.covers(g) && self.credential_grants().is_none_or(|c| c.covers(g))
        })
    }

    /// Fails with 403 unless the caller may do `permission`.
    pub fn require(&self, permission: &str) -> Result<()> {
        if self.allows(permission, None) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("missing permission {permission}")))
        }
    }

    /// The session of a password login; API keys have none.
    pub fn session_id(&self) -> Result<&str> {
        match &self.credential {
            Credential::Session { session_id } => Ok(session_id),
            Credential::ApiKey { .. } => Err(Error::Forbidden(
                "this needs a login session; API keys cannot do it".into(),
            )),
            Credential::Client { .. } | Credential::Node { .. } | Credential::Agent { .. } => {
                Err(Error::Forbidden(
                    "this needs a user's login session; clients, nodes and agents cannot do it"
                        .into(),
                ))
            }
        }
    }
}

/// What login and refresh return.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub user_id: String,
    pub username: String,
    pub role: String,
}

/// Input of [`Identity::create_user`].
pub struct NewAccount {
    pub username: String,
    pub email: String,
    pub password: String,
    pub full_name: Option<String>,
    pub role: String,
}

#[derive(Debug)]
pub struct Health {
    pub database: std::result::Result<(), String>,
    pub redis: Option<std::result::Result<(), String>>,
}

impl Health {
    pub fn healthy(&self) -> bool {
        self.database.is_ok() && self.redis.as_ref().is_none_or(|r| r.is_ok())
    }
}

pub struct Identity {
    /// Signed gateway assertions, reused for half their 60 s life. Keyed by
    /// ids swarmgate issued and configured names (user, credential, role,
    /// route), never by what a caller sends, so hashed with Fx rather than
    /// SipHash: it is looked up on every proxied request.
    assertions: moka::sync::Cache<String, axum::http::HeaderValue, rustc_hash::FxBuildHasher>,
    creds: authn::CredentialCache,
    clients: clients::ClientCache,
    users: authn::UserCache,
    last_used: authn::LastUsed,
    denials: denials::Denials,
    store: Store,
    state: SharedState,
    keys: KeyCache,
    audit: Audit,
    settings: Arc<Settings>,
    /// Verified against when the user does not exist, so that an unknown
    /// user costs exactly as much time as a wrong password.
    dummy_hash: String,
    /// Each argon2 evaluation holds 19 MiB or more; this bounds how many
    /// run at once, so a flood queues instead of exhausting memory.
    hashing: Arc<tokio::sync::Semaphore>,
}

async fn hash_blocking(password: String, params: HashParams) -> Result<String> {
    tokio::task::spawn_blocking(move || password::hash(&password, params))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Internal(e.to_string()))
}

async fn verify_blocking(password: String, hashes: Vec<String>) -> Result<bool> {
    tokio::task::spawn_blocking(move || hashes.iter().any(|h| password::verify(&password, h)))
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}

impl Identity {
    pub async fn new(store: Store, state: SharedState, settings: Arc<Settings>) -> Result<Self> {
        let keys = KeyCache::load(store.clone(), &settings).await?;
        let dummy_hash = hash_blocking(
            "not a real password: timing equaliser".into(),
            settings.hash_params,
        )
        .await?;
        let identity = Self {
            assertions: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(
                    swarmgate_tokens::ASSERTION_TTL_SECS as u64 / 2,
                ))
                .build_with_hasher(rustc_hash::FxBuildHasher),
            creds: authn::CredentialCache::new(),
            clients: clients::ClientCache::new(),
            users: authn::UserCache::new(),
            last_used: authn::LastUsed::default(),
            denials: denials::Denials::default(),
            audit: Audit::new(store.clone()),
            store,
            state,
            keys,
            settings,
            dummy_hash,
            hashing: Arc::new(tokio::sync::Semaphore::new(
                2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        };
        match identity.restore_revocations().await {
            Ok(()) => {}
            // Redis down at start: requests fail closed, and the poller
            // rebuilds the state as soon as it is reachable.
            Err(Error::Unavailable {
                component: "redis",
                detail,
            }) => {
                tracing::warn!(error = %detail, "could not seed revocations into redis yet");
            }
            Err(e) => return Err(e),
        }
        Ok(identity)
    }

    pub(super) async fn hash(&self, password: String) -> Result<String> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        hash_blocking(password, self.settings.hash_params).await
    }

    pub(super) async fn verify(&self, password: String, hashes: Vec<String>) -> Result<bool> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        verify_blocking(password, hashes).await
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// How long after revocation a session's access tokens could still be
    /// presented: their lifetime plus the verifier's leeway.
    pub(super) fn token_lifetime_ms(&self) -> i64 {
        (self.settings.access_ttl_secs + LEEWAY_SECS as i64) * 1000
    }

    /// Audits a refusal by a rate limit at most once a minute per client and
    /// endpoint, so a flood of refused requests cannot flood the audit table.
    pub(super) async fn audit_rate_limited(&self, endpoint: &str, meta: &RequestMeta) {
        let ip = meta.client_ip.as_deref().unwrap_or("unknown");
        let key = format!("audit-limited:{endpoint}:{ip}");
        if let Ok(RateDecision::Allowed) = self
            .state
            .rate_limit(&key, swarmgate_state::Rate::per_minute(1), now_ms())
            .await
        {
            let event = format!("{endpoint}_failed");
            self.audit
                .record(
                    &event,
                    "denied",
                    Subject::default(),
                    meta,
                    json!({ "reason": "rate_limited", "sampled": "at most one row per client per minute" }),
                )
                .await;
        }
    }

    pub(super) async fn rate_limit(&self, key: &str, rate: swarmgate_state::Rate) -> Result<()> {
        match self.state.rate_limit(key, rate, now_ms()).await? {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after_ms } => Err(Error::RateLimited {
                retry_after_secs: retry_after_secs(retry_after_ms),
            }),
        }
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.keys.current().keys().jwks().clone()
    }

    pub async fn health(&self) -> Health {
        let database = self.store.ping().await.map_err(|e| e.to_string());
        let redis = match &self.state {
            SharedState::Memory(_) => None,
            SharedState::Redis(_) => Some(self.state.ping().await.map_err(|e| e.to_string())),
        };
        Health { database, redis }
    }
}

/// A random password that satisfies the policy: 144 random bits plus one
/// character of each required class.
pub fn generate_password() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{}aZ7!",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}
