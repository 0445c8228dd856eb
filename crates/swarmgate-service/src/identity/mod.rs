//! The identity service: registration, login, refresh-token rotation,
//! logout, password change, API keys, user administration, and turning a
//! presented credential into a [`Principal`].
//!
//! This module decides; the store keeps; the shared state coordinates
//! instances; the decision point (`crate::authz`) says who may.

pub mod admin;
mod api_keys;
mod authn;
mod caches;
pub mod keys;
mod password_change;
mod session;
mod sync;

pub use admin::UserPatch;
pub use api_keys::{CreatedApiKey, NewApiKey};
pub(crate) use caches::USER_CACHE_TTL;
pub(crate) use sync::Changed;

use std::sync::Arc;

use serde_json::json;
use swarmgate_core::password::{self, HashParams};
use swarmgate_state::{RateDecision, SharedState};
use swarmgate_store::Store;
use swarmgate_tokens::LEEWAY_SECS;

use crate::audit::{Audit, Subject};
use crate::authz::Authz;
use crate::clients::ClientCache;
use crate::clock::SharedClock;
use crate::error::{retry_after_secs, Error, Result};
use crate::fetch::Fetch;
use crate::principal::RequestMeta;
use crate::settings::Settings;
use keys::KeyCache;

/// Prefix of refresh tokens, so a leaked one is recognisable in a scan.
pub const REFRESH_TOKEN_PREFIX: &str = "sgr_";
/// How often revocations in the database are re-published to the shared
/// state (they are published at once when made; this is the safety net).
pub const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_secs(2);
const FULL_RESYNC_MS: i64 = 300_000;
/// How many previous passwords a new one must differ from.
pub const PASSWORD_HISTORY: i64 = 5;

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

/// What the identity service is built from.
pub struct Parts {
    pub store: Store,
    pub state: SharedState,
    pub settings: Arc<Settings>,
    pub clock: SharedClock,
    pub authz: Arc<Authz>,
    /// Fetches client key sets from their `jwks_uri`.
    pub fetch: Arc<dyn Fetch>,
}

pub struct Identity {
    pub(crate) creds: caches::CredentialCache,
    pub(crate) clients: ClientCache,
    pub(crate) users: caches::UserCache,
    pub(crate) last_used: caches::LastUsed,
    pub(crate) store: Store,
    pub(crate) state: SharedState,
    pub(crate) keys: KeyCache,
    pub(crate) audit: Audit,
    pub(crate) authz: Arc<Authz>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) clock: SharedClock,
    pub(crate) fetch: Arc<dyn Fetch>,
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
    pub async fn new(parts: Parts) -> Result<Self> {
        let Parts {
            store,
            state,
            settings,
            clock,
            authz,
            fetch,
        } = parts;
        let keys = KeyCache::load(store.clone(), &settings, clock.clone()).await?;
        let dummy_hash = hash_blocking(
            "not a real password: timing equaliser".into(),
            settings.hash_params,
        )
        .await?;
        let identity = Self {
            creds: caches::CredentialCache::new(clock.clone()),
            clients: ClientCache::new(),
            users: caches::UserCache::new(),
            last_used: caches::LastUsed::default(),
            audit: Audit::new(store.clone(), clock.clone()),
            authz,
            store,
            state,
            keys,
            settings,
            clock,
            fetch,
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

    pub(crate) async fn hash(&self, password: String) -> Result<String> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        hash_blocking(password, self.settings.hash_params).await
    }

    pub(crate) async fn verify(&self, password: String, hashes: Vec<String>) -> Result<bool> {
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

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// How long after revocation a session's access tokens could still be
    /// presented: their lifetime plus the verifier's leeway.
    pub(crate) fn token_lifetime_ms(&self) -> i64 {
        (self.settings.access_ttl_secs + LEEWAY_SECS as i64) * 1000
    }

    /// The rate limit in front of an unauthenticated endpoint (`register`,
    /// `login`), per client address. A refusal is audited at most once a
    /// minute per client and endpoint, so a flood of refused requests
    /// cannot flood the audit table.
    pub(crate) async fn limit_per_client(
        &self,
        endpoint: &str,
        rate: swarmgate_state::Rate,
        meta: &RequestMeta,
    ) -> Result<()> {
        let ip = meta.client_ip.as_deref().unwrap_or("unknown");
        let Err(refused) = self.rate_limit(&format!("{endpoint}:{ip}"), rate).await else {
            return Ok(());
        };
        let key = format!("audit-limited:{endpoint}:{ip}");
        let now = self.clock.now_ms();
        let first = self
            .state
            .rate_limit(&key, swarmgate_state::Rate::per_minute(1), now)
            .await;
        if let Ok(RateDecision::Allowed) = first {
            self.audit
                .record(
                    &format!("{endpoint}_failed"),
                    "denied",
                    Subject::default(),
                    meta,
                    json!({ "reason": "rate_limited", "sampled": "at most one row per client per minute" }),
                )
                .await;
        }
        Err(refused)
    }

    async fn rate_limit(&self, key: &str, rate: swarmgate_state::Rate) -> Result<()> {
        match self
            .state
            .rate_limit(key, rate, self.clock.now_ms())
            .await?
        {
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
    let bytes: [u8; 18] = swarmgate_core::random::bytes();
    format!(
        "{}aZ7!",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}
