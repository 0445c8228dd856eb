//! Turning a presented credential into a [`Principal`].
//!
//! An Ed25519 verification costs tens of microseconds and an API-key look-up
//! a database round trip, so verified credentials are cached, keyed by the
//! SHA-256 of the credential, each entry ending with the credential's own
//! expiry. What can change before then is checked on every request in one
//! shared-state round trip: whether the session or key was revoked, and
//! whether the user changed (role, disabled, deleted) since we cached them.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use swarmgate_core::permission::GrantSet;
use swarmgate_core::roles::Role;
use swarmgate_core::User;
use swarmgate_state::{CredentialStatus, Revocable};
use swarmgate_tokens::TokenError;

use super::caches::{Cached, CachedUser, KeyEntry};
use super::Identity;
use crate::error::{Error, Result};
use crate::principal::{Credential, Presented, Principal};

/// How long "no such key" is remembered. Safe: a new key's secret is fresh
/// random, so it was never presented (and cached as unknown) before.
const UNKNOWN_KEY_TTL_MS: i64 = 60_000;

/// Whether authenticating a credential is its holder using it (which keeps
/// an agent session alive) or someone else inspecting it.
#[derive(Clone, Copy)]
pub(crate) enum Activity {
    Use,
    Inspect,
}

pub(crate) struct JwtEntry {
    /// The `sub`: a user id, `client:ID` or `node:ID`.
    subject: String,
    kind: JwtKind,
    pub(super) exp_ms: i64,
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

fn malformed() -> Error {
    Error::InvalidToken(TokenError::Malformed)
}

/// The permissions of a token's space-separated `scope`.
fn scope_of(claims: &swarmgate_tokens::AccessClaims) -> Vec<String> {
    claims
        .scope
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

impl JwtKind {
    /// Sorts verified claims by subject; a token that names a client or
    /// node but lacks its claims is malformed.
    fn of(claims: &swarmgate_tokens::AccessClaims) -> Result<Self> {
        use swarmgate_tokens::{AGENT_SUBJECT_PREFIX, CLIENT_SUBJECT_PREFIX, NODE_SUBJECT_PREFIX};
        if let Some(id) = claims.sub.strip_prefix(AGENT_SUBJECT_PREFIX) {
            let parent = claims.act.as_ref().map(|a| a.sub.as_str()).unwrap_or("");
            if parent.is_empty() || claims.sid.is_empty() {
                return Err(malformed());
            }
            // Without its `agent` claim an agent would have no limits.
            let Some(agent) = &claims.agent else {
                return Err(malformed());
            };
            return Ok(JwtKind::Agent {
                agent_id: id.to_string(),
                session_id: claims.sid.clone(),
                parent_id: parent.to_string(),
                grants: Arc::new(GrantSet::parse(&scope_of(claims)).map_err(|_| malformed())?),
                claims: Arc::new(agent.clone()),
            });
        }
        if let Some(id) = claims.sub.strip_prefix(CLIENT_SUBJECT_PREFIX) {
            if claims.client_id.as_deref() != Some(id) {
                return Err(malformed());
            }
            let permissions = scope_of(claims);
            let grants = GrantSet::parse(&permissions).map_err(|_| malformed())?;
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
                return Err(malformed());
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

impl JwtEntry {
    /// What to ask the shared state about: the revocable thing and whose
    /// version tells whether the cached user (or client, or node) is stale.
    fn revocation(&self) -> (Revocable, &str, &str) {
        match &self.kind {
            JwtKind::Session { session_id } => (Revocable::Session, session_id, &self.subject),
            JwtKind::Client { jti, .. } | JwtKind::Node { jti, .. } => {
                (Revocable::Token, jti, &self.subject)
            }
            JwtKind::Agent {
                session_id,
                parent_id,
                ..
            } => (Revocable::Session, session_id, parent_id),
        }
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
    pub(crate) async fn inspect(&self, presented: Presented<'_>) -> Result<Principal> {
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
        crate::telemetry::record_auth(method, outcome);
        result
    }

    async fn authenticate_jwt(&self, token: &str, activity: Activity) -> Result<Principal> {
        let cache_key = digest(token);
        let entry = self.verified_jwt(token, cache_key).await?;
        let (kind, id, versioned) = entry.revocation();
        let status = self
            .state
            .credential_status(kind, id, versioned, self.clock.now_ms())
            .await?;
        if status.revoked {
            self.creds.inner.invalidate(&cache_key);
            return Err(Error::SessionRevoked);
        }
        match &entry.kind {
            JwtKind::Session { session_id } => {
                let user = self.live_user(&entry.subject, status).await?;
                let credential = Credential::Session {
                    session_id: session_id.clone(),
                };
                Ok(self.principal_of(&user, credential))
            }
            JwtKind::Agent { .. } => self.agent_principal(&entry, status, activity).await,
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

    /// The token's verified claims, from the cache or verified now.
    async fn verified_jwt(&self, token: &str, cache_key: [u8; 32]) -> Result<Arc<JwtEntry>> {
        if let Some(Cached::Jwt(entry)) = self.creds.inner.get(&cache_key) {
            if entry.exp_ms > self.clock.now_ms() {
                return Ok(entry);
            }
        }
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
        Ok(entry)
    }

    /// An agent acting for its parent. Every request (like a heartbeat)
    /// keeps its session alive; a released or idle one stops here on every
    /// instance, as does one whose key or parent is gone.
    async fn agent_principal(
        &self,
        entry: &JwtEntry,
        status: CredentialStatus,
        activity: Activity,
    ) -> Result<Principal> {
        let JwtKind::Agent {
            agent_id,
            session_id,
            parent_id,
            grants,
            claims,
        } = &entry.kind
        else {
            return Err(malformed());
        };
        if let Some(key_id) = &claims.key_id {
            // Spawned with a key: revoking the key stops the agent.
            let key = self
                .state
                .credential_status(Revocable::ApiKey, key_id, parent_id, self.clock.now_ms())
                .await?;
            if key.revoked {
                return Err(Error::SessionRevoked);
            }
        }
        let user = self.live_user(parent_id, status).await?;
        let now = self.clock.now_ms();
        let idle = i64::try_from(self.settings.quota.agent_idle.as_millis()).unwrap_or(i64::MAX);
        let key = crate::quota::agents_key(parent_id);
        let alive = match activity {
            Activity::Use => {
                let until = now.saturating_add(idle).min(entry.exp_ms);
                self.state.quota_touch(&key, session_id, until, now).await?
            }
            Activity::Inspect => self.state.quota_held(&key, session_id, now).await?,
        };
        if !alive {
            return Err(Error::SessionRevoked);
        }
        let credential = Credential::Agent {
            session_id: session_id.clone(),
            agent_id: agent_id.clone(),
            grants: grants.clone(),
            expires_at: entry.exp_ms,
            claims: claims.clone(),
        };
        Ok(self.principal_of(&user, credential))
    }

    /// The user a session or agent acts for, unless deleted or disabled.
    async fn live_user(&self, user_id: &str, status: CredentialStatus) -> Result<Arc<User>> {
        let user = self.current_user(user_id, status.user_version).await?;
        user.filter(|u| !u.disabled).ok_or(Error::SessionRevoked)
    }

    /// Verifies an access token's signature and claims, reloading the keys
    /// once for a key id not seen yet (another instance rotated).
    pub(crate) async fn verify_access_token(
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
        let now = self.clock.now_ms();
        let Some(entry) = self.key_entry(cache_key, now).await? else {
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
        self.last_used.record(&entry.key.id, now.div_euclid(1000));
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

    /// The key behind a secret's digest, from the cache or the database;
    /// `None` (remembered for a while) when there is no such key.
    async fn key_entry(&self, cache_key: [u8; 32], now: i64) -> Result<Option<Arc<KeyEntry>>> {
        if let Some(Cached::Key { entry, until_ms }) = self.creds.inner.get(&cache_key) {
            if until_ms > now {
                return Ok(entry);
            }
        }
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
        Ok(entry)
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
    pub(crate) fn role_of(&self, user: &User) -> Arc<Role> {
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

    /// A 60-second assertion of who `principal` is, for the route or model
    /// named `audience` (`X-Swarm-Assertion`), signed with the current key.
    /// Signing costs tens of microseconds, so the gateway reuses one for
    /// the same caller, credential, role and audience while it has more
    /// than half its life left.
    pub fn sign_assertion(&self, principal: &Principal, audience: &str) -> Result<String> {
        let now = self.clock.now_secs();
        let claims = swarmgate_tokens::AssertionClaims {
            iss: self.settings.public_url.clone(),
            aud: audience.to_string(),
            sub: principal.user_id.clone(),
            exp: now + swarmgate_tokens::ASSERTION_TTL_SECS,
            iat: now,
            jti: swarmgate_core::random::uuid_string(),
            role: principal.role.name.clone(),
            auth_method: principal.auth_method().as_str().to_string(),
        };
        Ok(self.keys.current().issue_assertion(&claims)?)
    }
}
