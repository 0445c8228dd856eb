//! Turning a presented credential into a [`Principal`].
//!
//! An Ed25519 verification costs tens of microseconds and an API-key look-up
//! a database round trip, so verified credentials are cached, keyed by the
//! SHA-256 of the credential, each entry ending with the credential's own
//! expiry. What can change before then is checked on every request in one
//! shared-state round trip: whether the session or key was revoked, and
//! whether the user changed (role, disabled, deleted) since we cached them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;
use sha2::{Digest, Sha256};
use swarmgate_core::permission::GrantSet;
use swarmgate_core::roles::Role;
use swarmgate_core::{ApiKey, User};
use swarmgate_state::Revocable;
use swarmgate_tokens::TokenError;

use super::{Credential, Identity, Principal};
use crate::clock::{now_ms, now_secs};
use crate::error::{Error, Result};

const CACHE_CAPACITY: u64 = 100_000;
/// Longest a cached user lives regardless of versions; a full resync bumps
/// every user changed within this long, so even a Redis that lost its
/// versions cannot make a stale copy look current.
pub(super) const USER_CACHE_TTL: Duration = Duration::from_secs(600);
/// How long "no such key" is remembered. Safe: a new key's secret is fresh
/// random, so it was never presented (and cached as unknown) before.
const UNKNOWN_KEY_TTL_MS: i64 = 60_000;

/// A credential as it arrived.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// `Authorization: Bearer …`: a JWT, or an API key by its prefix.
    Bearer(&'a str),
    /// `X-API-Key: …`
    ApiKey(&'a str),
}

/// Whether authenticating a credential is its holder using it (which keeps
/// an agent session alive) or someone else inspecting it.
#[derive(Clone, Copy)]
enum Activity {
    Use,
    Inspect,
}

pub(super) struct JwtEntry {
    /// The `sub`: a user id, `client:ID` or `node:ID`.
    subject: String,
    kind: JwtKind,
    exp_ms: i64,
}

enum JwtKind {
    Session {
        session_id: String,
    },
    Client {
        client_id: String,
        jti: String,
        /// The token's `scope`, compiled.
        scope: Arc<Role>,
    },
    Node {
        node_id: String,
        jti: String,
        iat: i64,
    },
    /// `sub` is `agent:ID`, `act.sub` the parent user, `sid` the session.
    Agent {
        agent_id: String,
        session_id: String,
        parent_id: String,
        grants: Arc<GrantSet>,
        claims: Arc<swarmgate_tokens::AgentClaims>,
    },
}

impl JwtKind {
    /// Sorts verified claims by subject; a token that names a client or
    /// node but lacks its claims is malformed.
    fn of(claims: &swarmgate_tokens::AccessClaims) -> Result<Self> {
        use swarmgate_tokens::{AGENT_SUBJECT_PREFIX, CLIENT_SUBJECT_PREFIX, NODE_SUBJECT_PREFIX};
        let bad = || Error::InvalidToken(TokenError::Malformed);
        if let Some(id) = claims.sub.strip_prefix(AGENT_SUBJECT_PREFIX) {
            let parent = claims.act.as_ref().map(|a| a.sub.as_str()).unwrap_or("");
            if parent.is_empty() || claims.sid.is_empty() {
                return Err(bad());
            }
            // Without its `agent` claim an agent would have no limits.
            let Some(agent) = &claims.agent else {
                return Err(bad());
            };
            let permissions: Vec<&str> = claims
                .scope
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            return Ok(JwtKind::Agent {
                agent_id: id.to_string(),
                session_id: claims.sid.clone(),
                parent_id: parent.to_string(),
                grants: Arc::new(GrantSet::parse(&permissions).map_err(|_| bad())?),
                claims: Arc::new(agent.clone()),
            });
        }
        if let Some(id) = claims.sub.strip_prefix(CLIENT_SUBJECT_PREFIX) {
            if claims.client_id.as_deref() != Some(id) {
                return Err(bad());
            }
            let permissions: Vec<String> = claims
                .scope
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let grants = GrantSet::parse(&permissions).map_err(|_| bad())?;
            return Ok(JwtKind::Client {
                client_id: id.to_string(),
                jti: claims.jti.clone(),
                scope: Arc::new(Role {
                    name: "client".into(),
                    permissions,
                    grants,
                }),
            });
        }
        if let Some(id) = claims.sub.strip_prefix(NODE_SUBJECT_PREFIX) {
            if claims.node_id.as_deref() != Some(id) {
                return Err(bad());
            }
            return Ok(JwtKind::Node {
                node_id: id.to_string(),
                jti: claims.jti.clone(),
                iat: claims.iat,
            });
        }
        if claims.sid.is_empty() {
            return Err(Error::InvalidToken(TokenError::MissingClaim("sid".into())));
        }
        Ok(JwtKind::Session {
            session_id: claims.sid.clone(),
        })
    }
}

pub(super) struct KeyEntry {
    key: ApiKey,
    grants: Arc<GrantSet>,
    models: Option<Arc<[String]>>,
}

#[derive(Clone)]
pub(super) enum Cached {
    Jwt(Arc<JwtEntry>),
    Key {
        entry: Option<Arc<KeyEntry>>,
        until_ms: i64,
    },
}

impl Cached {
    fn until_ms(&self) -> i64 {
        match self {
            Cached::Jwt(j) => j.exp_ms,
            Cached::Key { until_ms, .. } => *until_ms,
        }
    }
}

struct UntilExpiry;

impl Expiry<[u8; 32], Cached> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], value: &Cached, _: Instant) -> Option<Duration> {
        Some(Duration::from_millis(
            (value.until_ms() - now_ms()).max(0) as u64
        ))
    }
}

pub(super) struct CredentialCache {
    inner: Cache<[u8; 32], Cached>,
}

impl CredentialCache {
    pub(super) fn new() -> Self {
        Self {
            inner: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .expire_after(UntilExpiry)
                .build(),
        }
    }
}

/// The current copy of a user, tagged with the version of the shared state
/// it was read at; `None` remembers that the user does not exist.
pub(super) struct CachedUser {
    version: i64,
    user: Option<Arc<User>>,
}

/// Keyed by user ids swarmgate issued (from a verified credential), never
/// by what a caller sends, so hashed with Fx rather than SipHash: it is
/// looked up on every request.
pub(super) struct UserCache {
    inner: Cache<String, Arc<CachedUser>, rustc_hash::FxBuildHasher>,
}

impl UserCache {
    pub(super) fn new() -> Self {
        Self {
            inner: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(USER_CACHE_TTL)
                .build_with_hasher(rustc_hash::FxBuildHasher),
        }
    }

    pub(super) fn forget(&self, user_id: &str) {
        self.inner.invalidate(user_id);
    }
}

/// `last_used_at` of API keys, collected in memory and written in batches.
#[derive(Default)]
pub(super) struct LastUsed {
    pending: Mutex<HashMap<String, i64>>,
}

impl LastUsed {
    fn record(&self, key_id: &str, at: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = pending.get_mut(key_id) {
            *previous = at;
        } else {
            pending.insert(key_id.to_string(), at);
        }
    }

    /// Puts back values whose write failed (newer ones already recorded win).
    pub(super) fn restore(&self, used: Vec<(String, i64)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (id, at) in used {
            let slot = pending.entry(id).or_insert(at);
            *slot = (*slot).max(at);
        }
    }

    pub(super) fn drain(&self) -> Vec<(String, i64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.drain().collect()
    }
}

fn digest(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

impl Identity {
    /// Verifies any credential: a JWT access token or an API key.
    pub async fn authenticate(&self, presented: Presented<'_>) -> Result<Principal> {
        self.authenticate_as(presented, Activity::Use).await
    }

    /// [`authenticate`](Self::authenticate) for someone else looking at the
    /// credential (introspection): an agent session is not kept alive by it.
    pub(super) async fn inspect(&self, presented: Presented<'_>) -> Result<Principal> {
        self.authenticate_as(presented, Activity::Inspect).await
    }

    async fn authenticate_as(
        &self,
        presented: Presented<'_>,
        activity: Activity,
    ) -> Result<Principal> {
        let (method, result) = match presented {
            Presented::ApiKey(key) => ("api_key", self.authenticate_key(key).await),
            Presented::Bearer(token) if token.starts_with(&self.settings.api_key_prefix) => {
                ("api_key", self.authenticate_key(token).await)
            }
            Presented::Bearer(token) => ("jwt", self.authenticate_jwt(token, activity).await),
        };
        let outcome = match &result {
            Ok(_) => "success",
            Err(Error::Unavailable { .. }) => "unavailable",
            Err(_) => "failure",
        };
        crate::metrics::record_auth(method, outcome);
        result
    }

    async fn authenticate_jwt(&self, token: &str, activity: Activity) -> Result<Principal> {
        let cache_key = digest(token);
        let entry = match self.creds.inner.get(&cache_key) {
            Some(Cached::Jwt(entry)) if entry.exp_ms > now_ms() => entry,
            _ => {
                let claims = self.verify_access_token(token).await?;
                let entry = Arc::new(JwtEntry {
                    kind: JwtKind::of(&claims)?,
                    subject: claims.sub,
                    // The verifier allows this much skew; so does the cache.
                    exp_ms: (claims.exp + swarmgate_tokens::LEEWAY_SECS as i64) * 1000,
                });
                self.creds
                    .inner
                    .insert(cache_key, Cached::Jwt(entry.clone()));
                entry
            }
        };
        let (kind, id, versioned) = match &entry.kind {
            JwtKind::Session { session_id } => (Revocable::Session, session_id, &entry.subject),
            JwtKind::Client { jti, .. } | JwtKind::Node { jti, .. } => {
                (Revocable::Token, jti, &entry.subject)
            }
            JwtKind::Agent {
                session_id,
                parent_id,
                ..
            } => (Revocable::Session, session_id, parent_id),
        };
        let status = self
            .state
            .credential_status(kind, id, versioned, now_ms())
            .await?;
        if status.revoked {
            self.creds.inner.invalidate(&cache_key);
            return Err(Error::SessionRevoked);
        }
        match &entry.kind {
            JwtKind::Session { session_id } => {
                let user = self
                    .current_user(&entry.subject, status.user_version)
                    .await?;
                let Some(user) = user.filter(|u| !u.disabled) else {
                    return Err(Error::SessionRevoked);
                };
                Ok(self.principal_of(
                    &user,
                    Credential::Session {
                        session_id: session_id.clone(),
                    },
                ))
            }
            JwtKind::Agent {
                agent_id,
                session_id,
                parent_id,
                grants,
                claims,
            } => {
                if let Some(key_id) = &claims.key_id {
                    // Spawned with a key: revoking the key stops the agent.
                    let key = self
                        .state
                        .credential_status(Revocable::ApiKey, key_id, parent_id, now_ms())
                        .await?;
                    if key.revoked {
                        return Err(Error::SessionRevoked);
                    }
                }
                let user = self.current_user(parent_id, status.user_version).await?;
                let Some(user) = user.filter(|u| !u.disabled) else {
                    return Err(Error::SessionRevoked);
                };
                // Every request (like a heartbeat) keeps the session alive;
                // a released or idle one stops here on every instance.
                let now = now_ms();
                let idle = self.settings.quota.agent_idle.as_millis() as i64;
                let key = crate::quota::agents_key(parent_id);
                let alive = match activity {
                    Activity::Use => {
                        let until = (now + idle).min(entry.exp_ms);
                        self.state.quota_touch(&key, session_id, until, now).await?
                    }
                    Activity::Inspect => self.state.quota_held(&key, session_id, now).await?,
                };
                if !alive {
                    return Err(Error::SessionRevoked);
                }
                Ok(self.principal_of(
                    &user,
                    Credential::Agent {
                        session_id: session_id.clone(),
                        agent_id: agent_id.clone(),
                        grants: grants.clone(),
                        expires_at: entry.exp_ms,
                        claims: claims.clone(),
                    },
                ))
            }
            JwtKind::Client {
                client_id,
                jti,
                scope,
            } => {
                let client = self
                    .current_client(client_id, status.user_version)
                    .await?
                    .ok_or(Error::SessionRevoked)?;
                Ok(Principal {
                    user_id: entry.subject.clone(),
                    username: client.client.name.clone(),
                    role: scope.clone(),
                    credential: Credential::Client {
                        client_id: client_id.clone(),
                        jti: jti.clone(),
                        grants: client.grants.clone(),
                    },
                    user_limits: None,
                })
            }
            JwtKind::Node { node_id, jti, iat } => {
                let cutoff = self.node_token_cutoff(node_id, status.user_version).await?;
                if cutoff.is_some_and(|cutoff| *iat <= cutoff) {
                    return Err(Error::SessionRevoked);
                }
                Ok(Principal {
                    user_id: entry.subject.clone(),
                    username: node_id.clone(),
                    role: self.role_named(swarmgate_core::roles::NODE_ROLE),
                    credential: Credential::Node {
                        node_id: node_id.clone(),
                        jti: jti.clone(),
                    },
                    user_limits: None,
                })
            }
        }
    }

    /// Verifies an access token's signature and claims, reloading the keys
    /// once for a key id not seen yet (another instance rotated).
    pub(super) async fn verify_access_token(
        &self,
        token: &str,
    ) -> Result<swarmgate_tokens::AccessClaims> {
        Ok(match self.keys.current().verify(token) {
            Err(TokenError::UnknownKey) if self.keys.reload_for_unknown_kid().await => {
                self.keys.current().verify(token)?
            }
            other => other?,
        })
    }

    async fn authenticate_key(&self, key: &str) -> Result<Principal> {
        let rejected = || Error::InvalidApiKey;
        if !key.starts_with(&self.settings.api_key_prefix) || key.len() > 256 {
            return Err(rejected());
        }
        let cache_key = digest(key);
        let now = now_ms();
        let entry = match self.creds.inner.get(&cache_key) {
            Some(Cached::Key { entry, until_ms }) if until_ms > now => entry,
            _ => {
                let found = self.store.api_key_by_hash(&hex::encode(cache_key)).await?;
                let entry = found.map(|key| {
                    let grants = Arc::new(GrantSet::parse(&key.permissions).unwrap_or_default());
                    let models = key.models.clone().map(Arc::from);
                    Arc::new(KeyEntry {
                        key,
                        grants,
                        models,
                    })
                });
                let until_ms = match &entry {
                    Some(e) => e.key.expires_at * 1000,
                    None => now + UNKNOWN_KEY_TTL_MS,
                };
                self.creds.inner.insert(
                    cache_key,
                    Cached::Key {
                        entry: entry.clone(),
                        until_ms,
                    },
                );
                entry
            }
        };
        let Some(entry) = entry else {
            return Err(rejected());
        };
        if entry.key.revoked_at.is_some() || entry.key.expires_at * 1000 <= now {
            return Err(rejected());
        }
        let status = self
            .state
            .credential_status(Revocable::ApiKey, &entry.key.id, &entry.key.user_id, now)
            .await?;
        if status.revoked {
            self.creds.inner.invalidate(&cache_key);
            return Err(rejected());
        }
        let user = self
            .current_user(&entry.key.user_id, status.user_version)
            .await?;
        let Some(user) = user.filter(|u| !u.disabled) else {
            return Err(rejected());
        };
        self.last_used.record(&entry.key.id, now_secs());
        Ok(self.principal_of(
            &user,
            Credential::ApiKey {
                key_id: entry.key.id.clone(),
                grants: entry.grants.clone(),
                models: entry.models.clone(),
                limits: entry.key.limits,
                expires_at: entry.key.expires_at,
            },
        ))
    }

    /// The user as of `version`, from the cache when it is that fresh.
    async fn current_user(&self, user_id: &str, version: i64) -> Result<Option<Arc<User>>> {
        if let Some(cached) = self.users.inner.get(user_id) {
            if cached.version == version {
                return Ok(cached.user.clone());
            }
        }
        let user = match self.store.get_user(user_id).await {
            Ok(user) => Some(Arc::new(user)),
            Err(swarmgate_store::StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        self.users.inner.insert(
            user_id.to_string(),
            Arc::new(CachedUser {
                version,
                user: user.clone(),
            }),
        );
        Ok(user)
    }

    /// A user acting through `credential`, with the user's current role
    /// and own limits.
    pub fn principal_of(&self, user: &User, credential: Credential) -> Principal {
        Principal {
            role: self.role_of(user),
            user_id: user.id.clone(),
            username: user.username.clone(),
            credential,
            user_limits: user.limits,
        }
    }

    /// The compiled role of a user; a role that is no longer configured
    /// grants nothing.
    pub(super) fn role_of(&self, user: &User) -> Arc<Role> {
        self.role_named(&user.role)
    }

    pub fn role_named(&self, name: &str) -> Arc<Role> {
        self.settings.roles.get(name).cloned().unwrap_or_else(|| {
            Arc::new(Role {
                name: name.to_string(),
                permissions: Vec::new(),
                grants: GrantSet::default(),
            })
        })
    }
}

impl Identity {
    /// A 60-second assertion of who `principal` is, for the route named
    /// `audience`, signed with the current key (`X-Swarm-Assertion`).
    ///
    /// Signing costs tens of microseconds, more than the rest of a proxied
    /// request, so an assertion is reused for the same caller, credential,
    /// role and route while it has more than half its life left.
    pub fn issue_assertion(
        &self,
        principal: &Principal,
        audience: &str,
    ) -> Result<axum::http::HeaderValue> {
        let credential = match &principal.credential {
            Credential::Session { session_id } => session_id.as_str(),
            Credential::ApiKey { key_id, .. } => key_id.as_str(),
            Credential::Client { jti, .. } | Credential::Node { jti, .. } => jti.as_str(),
            Credential::Agent { session_id, .. } => session_id.as_str(),
        };
        // Joined, not `format!`ted: that was a measurable share of a
        // proxied call.
        let cache_key = [
            principal.user_id.as_str(),
            credential,
            principal.role.name.as_str(),
            audience,
        ]
        .join("\u{0}");
        if let Some(token) = self.assertions.get(&cache_key) {
            return Ok(token);
        }
        let token = self.sign_assertion(principal, audience)?;
        let value = axum::http::HeaderValue::try_from(token)
            .map_err(|e| Error::Internal(format!("assertion is not a header value: {e}")))?;
        self.assertions.insert(cache_key, value.clone());
        Ok(value)
    }

    fn sign_assertion(&self, principal: &Principal, audience: &str) -> Result<String> {
        let now = now_secs();
        let claims = swarmgate_tokens::AssertionClaims {
            iss: self.settings.public_url.clone(),
            aud: audience.to_string(),
            sub: principal.user_id.clone(),
            exp: now + swarmgate_tokens::ASSERTION_TTL_SECS,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            role: principal.role.name.clone(),
            auth_method: principal.auth_method().as_str().to_string(),
        };
        Ok(self.keys.current().issue_assertion(&claims)?)
    }

    /// Counts (and audits, in aggregate) a denial decided elsewhere.
    pub fn note_denial(&self, principal: &Principal, permission: &str) {
        self.record_denial(&principal.user_id, permission);
    }

    /// The permission check of `POST /auth/verify-permission`. Malformed
    /// input is a 422; a denial is counted and audited in aggregate.
    pub fn check_permission(
        &self,
        principal: &Principal,
        permission: &str,
        resource: Option<&str>,
    ) -> Result<bool> {
        swarmgate_core::permission::validate_permission(permission)
            .map_err(|e| swarmgate_core::ValidationError::new("permission", e.0))?;
        if let Some(resource) = resource {
            if resource.is_empty()
                || resource.len() > 1024
                || resource.chars().any(char::is_control)
            {
                return Err(swarmgate_core::ValidationError::new(
                    "resource",
                    "must be 1 to 1024 characters without control characters",
                )
                .into());
            }
        }
        let allowed = principal.allows(permission, resource);
        if !allowed {
            self.record_denial(&principal.user_id, permission);
        }
        Ok(allowed)
    }
}
