//! The identity service: registration, login, refresh-token rotation,
//! logout, password change, and turning a bearer token into a [`Principal`].
//!
//! No HTTP here: the handlers in `crate::http` parse a request, call one of
//! these functions and map the result. This module decides; the store keeps;
//! the shared state coordinates instances.

pub mod audit;
pub mod keys;

use std::sync::Arc;

use serde_json::json;
use swarmgate_core::password::{self, HashParams};
use swarmgate_core::{roles, validate, NewUser, User, ValidationError};
use swarmgate_state::{LoginGate, RateDecision, SharedState};
use swarmgate_store::{RefreshOutcome, Session, Store};
use swarmgate_tokens::{hash_opaque, new_opaque, AccessClaims, TokenError, LEEWAY_SECS};

use crate::clock::{now_ms, now_secs};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub role: String,
    pub session_id: String,
    pub auth_method: AuthMethod,
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

pub struct Identity {
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
        identity.restore_revocations().await?;
        Ok(identity)
    }

    async fn hash(&self, password: String) -> Result<String> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        hash_blocking(password, self.settings.hash_params).await
    }

    async fn verify(&self, password: String, hashes: Vec<String>) -> Result<bool> {
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

    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// Access tokens outlive nothing but their `exp`; a session revoked less
    /// than one token lifetime ago must stay revoked across a restart of an
    /// in-process state, so the shared state is seeded from the database.
    async fn restore_revocations(&self) -> Result<()> {
        let since = now_secs() - self.token_lifetime_ms() / 1000;
        self.republish_revocations(since).await?;
        Ok(())
    }

    /// Publishes to the shared state every session revoked in the database
    /// at or after `since` (unix seconds); returns how many. The database is
    /// the source of truth: this heals a publish that failed, a Redis that
    /// restarted empty, and revocations written by the CLI.
    pub async fn republish_revocations(&self, since: i64) -> Result<usize> {
        let lifetime = self.token_lifetime_ms();
        let now = now_ms();
        let revoked = self.store.sessions_revoked_since(since).await?;
        for (sid, revoked_at) in &revoked {
            self.state
                .revoke_session(sid, revoked_at * 1000 + lifetime, now)
                .await?;
        }
        Ok(revoked.len())
    }

    /// Runs forever: every `REVOCATION_POLL` publishes what was revoked
    /// since the last round (with overlap), and every `FULL_RESYNC` all
    /// revocations still relevant.
    pub async fn revocation_poller(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REVOCATION_POLL);
        let mut last_full = std::time::Instant::now();
        let mut since = now_secs();
        loop {
            tick.tick().await;
            let started = now_secs();
            let full = last_full.elapsed() >= FULL_RESYNC;
            let from = if full {
                started - self.token_lifetime_ms() / 1000
            } else {
                since - 2
            };
            match self.republish_revocations(from).await {
                Ok(_) => {
                    since = started;
                    if full {
                        last_full = std::time::Instant::now();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "revocation sync failed; retrying"),
            }
        }
    }

    /// How long after revocation a session's access tokens could still be
    /// presented: their lifetime plus the verifier's leeway.
    fn token_lifetime_ms(&self) -> i64 {
        (self.settings.access_ttl_secs + LEEWAY_SECS as i64) * 1000
    }

    /// Creates `admin` when there is no user at all. Returns the generated
    /// password when none was configured, for the caller to show once.
    pub async fn bootstrap_admin(&self) -> Result<Option<String>> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let (password, generated) = match &self.settings.admin_password {
            Some(p) => (p.0.clone(), false),
            None => (generate_password(), true),
        };
        let account = NewAccount {
            username: "admin".into(),
            email: "admin@swarmgate.local".into(),
            password: password.clone(),
            full_name: Some("Administrator".into()),
            role: roles::ADMIN.into(),
        };
        match self.create_user(account, &RequestMeta::default()).await {
            Ok(_) => Ok(generated.then_some(password)),
            // Another instance bootstrapped at the same moment.
            Err(Error::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Validates and stores a new account of any role (registration, the
    /// admin CLI and bootstrap all come through here).
    pub async fn create_user(&self, account: NewAccount, meta: &RequestMeta) -> Result<User> {
        validate::username(&account.username)?;
        validate::email(&account.email)?;
        if let Some(name) = &account.full_name {
            validate::full_name(name)?;
        }
        if roles::built_in_grants(&account.role).is_none() {
            return Err(
                ValidationError::new("role", format!("unknown role {:?}", account.role)).into(),
            );
        }
        password::check_policy("password", &account.password)?;
        let password_hash = self.hash(account.password).await?;
        let user = self
            .store
            .create_user(&NewUser {
                id: uuid::Uuid::new_v4().to_string(),
                username: account.username,
                email: account.email,
                full_name: account.full_name,
                role: account.role,
                password_hash,
                created_at: now_secs(),
            })
            .await?;
        self.audit
            .record(
                "user_registered",
                "success",
                Subject {
                    user_id: Some(&user.id),
                    username: Some(&user.username),
                },
                meta,
                json!({ "role": user.role }),
            )
            .await;
        Ok(user)
    }

    /// Self-service registration: rate-limited per client IP, role `user`.
    pub async fn register(
        &self,
        username: String,
        email: String,
        password: String,
        full_name: Option<String>,
        meta: &RequestMeta,
    ) -> Result<User> {
        let ip = meta.client_ip.as_deref().unwrap_or("unknown");
        if let Err(e) = self
            .rate_limit(&format!("register:{ip}"), self.settings.register_rate)
            .await
        {
            self.audit_rate_limited("register", meta).await;
            return Err(e);
        }
        self.create_user(
            NewAccount {
                username,
                email,
                password,
                full_name,
                role: roles::USER.into(),
            },
            meta,
        )
        .await
    }

    /// Audits a refusal by a rate limit at most once a minute per client and
    /// endpoint, so a flood of refused requests cannot flood the audit table.
    async fn audit_rate_limited(&self, endpoint: &str, meta: &RequestMeta) {
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

    async fn rate_limit(&self, key: &str, rate: swarmgate_state::Rate) -> Result<()> {
        match self.state.rate_limit(key, rate, now_ms()).await? {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after_ms } => Err(Error::RateLimited {
                retry_after_secs: retry_after_secs(retry_after_ms),
            }),
        }
    }

    /// Password login by username or email.
    ///
    /// Order matters: the IP rate limit, then a lockout slot is reserved
    /// *before* the password is evaluated (so racing requests cannot get more
    /// than the threshold evaluated), then the hash is checked (against a
    /// dummy for unknown users), and only then is a disabled account told
    /// apart, so that status reveals nothing to someone without the password.
    pub async fn login(
        &self,
        login: &str,
        password: String,
        meta: &RequestMeta,
    ) -> Result<TokenPair> {
        let ip = meta.client_ip.as_deref().unwrap_or("unknown");
        if let Err(e) = self
            .rate_limit(&format!("login:{ip}"), self.settings.login_rate)
            .await
        {
            self.audit_rate_limited("login", meta).await;
            return Err(e);
        }

        // Text no account can have (too long, control characters) never
        // reaches the database, and is never written to the audit trail
        // (it may be a password typed into the wrong box).
        let plausible = validate::username(login).is_ok() || validate::email(login).is_ok();
        let user = if login.is_empty() || login.len() > 254 || login.chars().any(char::is_control) {
            None
        } else {
            self.store.find_user_by_login(login).await?
        };
        // Lockout is per login name as typed (case-insensitive), for real and
        // unknown names alike, so a lock reveals nothing about which names
        // or emails belong to an account.
        let lock_key = format!("login:{}", login.to_lowercase());
        let subject_id = user.as_ref().map(|u| u.id.clone());
        let subject_name = match &user {
            Some(u) => Some(u.username.clone()),
            None => plausible.then(|| login.to_string()),
        };
        let subject = || Subject {
            user_id: subject_id.as_deref(),
            username: subject_name.as_deref(),
        };
        let policy = self.settings.lockout;
        if let LoginGate::Locked { retry_after_ms } = self
            .state
            .login_attempt(&lock_key, policy, now_ms())
            .await?
        {
            self.audit
                .record(
                    "login_failed",
                    "denied",
                    subject(),
                    meta,
                    json!({ "reason": "locked" }),
                )
                .await;
            return Err(Error::Locked {
                retry_after_secs: retry_after_secs(retry_after_ms),
            });
        }

        let hash = user
            .as_ref()
            .map_or(self.dummy_hash.clone(), |u| u.password_hash.clone());
        let valid = self.verify(password, vec![hash]).await? && user.is_some();
        let Some(user) = user.filter(|_| valid) else {
            let reason = if subject_id.is_some() {
                "wrong_password"
            } else {
                "unknown_user"
            };
            let engaged = self.state.login_failed(&lock_key, policy, now_ms()).await?;
            self.audit
                .record(
                    "login_failed",
                    "denied",
                    subject(),
                    meta,
                    json!({ "reason": reason }),
                )
                .await;
            if engaged {
                self.audit
                    .record(
                        "account_locked",
                        "locked",
                        subject(),
                        meta,
                        json!({ "minutes": policy.lock_for.as_secs() / 60 }),
                    )
                    .await;
            }
            return Err(Error::InvalidCredentials);
        };
        self.state.login_succeeded(&lock_key).await?;
        let subject = Subject {
            user_id: Some(&user.id),
            username: Some(&user.username),
        };
        if user.disabled {
            self.audit
                .record(
                    "login_failed",
                    "denied",
                    subject,
                    meta,
                    json!({ "reason": "disabled" }),
                )
                .await;
            return Err(Error::AccountDisabled);
        }

        let now = now_secs();
        let session = Session {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now + self.settings.refresh_ttl_secs,
            revoked_at: None,
        };
        let refresh = new_opaque(REFRESH_TOKEN_PREFIX);
        self.store
            .create_session(
                &session,
                &refresh.hash,
                now + self.settings.refresh_ttl_secs,
            )
            .await?;
        let pair = self.token_pair(&user, &session.id, refresh.token)?;
        self.audit
            .record(
                "login_succeeded",
                "success",
                subject,
                meta,
                json!({ "session_id": session.id }),
            )
            .await;
        Ok(pair)
    }

    fn token_pair(
        &self,
        user: &User,
        session_id: &str,
        refresh_token: String,
    ) -> Result<TokenPair> {
        let now = now_secs();
        let claims = AccessClaims {
            iss: self.settings.public_url.clone(),
            aud: self.settings.audience.clone(),
            sub: user.id.clone(),
            exp: now + self.settings.access_ttl_secs,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session_id.to_string(),
            role: user.role.clone(),
            username: user.username.clone(),
        };
        Ok(TokenPair {
            access_token: self.keys.current().issue(&claims)?,
            refresh_token,
            expires_in: self.settings.access_ttl_secs,
            user_id: user.id.clone(),
            username: user.username.clone(),
            role: user.role.clone(),
        })
    }

    /// Rotates a refresh token. A token presented a second time revokes its
    /// whole session (someone else holds a copy).
    pub async fn refresh(&self, refresh_token: &str, meta: &RequestMeta) -> Result<TokenPair> {
        if !refresh_token.starts_with(REFRESH_TOKEN_PREFIX) || refresh_token.len() > 128 {
            return Err(Error::InvalidRefreshToken);
        }
        let now = now_secs();
        let next = new_opaque(REFRESH_TOKEN_PREFIX);
        let outcome = self
            .store
            .rotate_refresh_token(
                &hash_opaque(refresh_token),
                &next.hash,
                now,
                now + self.settings.refresh_ttl_secs,
            )
            .await?;
        match outcome {
            RefreshOutcome::Rotated {
                session_id,
                user_id,
            } => {
                let user = self.store.get_user(&user_id).await?;
                if user.disabled {
                    return Err(Error::AccountDisabled);
                }
                self.token_pair(&user, &session_id, next.token)
            }
            RefreshOutcome::Reused {
                session_id,
                user_id,
            } => {
                self.publish_revocation(&session_id).await;
                self.audit
                    .record(
                        "refresh_token_reuse",
                        "session_revoked",
                        Subject {
                            user_id: Some(&user_id),
                            username: None,
                        },
                        meta,
                        json!({ "session_id": session_id }),
                    )
                    .await;
                Err(Error::RefreshTokenReused)
            }
            RefreshOutcome::Invalid => Err(Error::InvalidRefreshToken),
        }
    }

    /// Tells every instance (through the shared state) that a session is
    /// revoked. The database already says so and is the source of truth: if
    /// the shared state is down, authentication fails closed anyway, and the
    /// revocation poller publishes this as soon as it is back.
    async fn publish_revocation(&self, session_id: &str) {
        let now = now_ms();
        if let Err(e) = self
            .state
            .revoke_session(session_id, now + self.token_lifetime_ms(), now)
            .await
        {
            tracing::warn!(error = %e, "revocation not published yet; the poller will retry");
        }
    }

    /// Ends the caller's session: its access and refresh tokens stop working.
    pub async fn logout(&self, principal: &Principal, meta: &RequestMeta) -> Result<()> {
        self.store
            .revoke_session(&principal.session_id, "logout", now_secs())
            .await?;
        self.publish_revocation(&principal.session_id).await;
        self.audit
            .record(
                "logout",
                "success",
                Subject {
                    user_id: Some(&principal.user_id),
                    username: Some(&principal.username),
                },
                meta,
                json!({ "session_id": principal.session_id }),
            )
            .await;
        Ok(())
    }

    pub async fn me(&self, principal: &Principal) -> Result<User> {
        match self.store.get_user(&principal.user_id).await {
            Err(swarmgate_store::StoreError::NotFound) => Err(Error::SessionRevoked),
            other => Ok(other?),
        }
    }

    /// Changes the caller's password and revokes every other session.
    ///
    /// Wrong current passwords count towards a lockout of their own (per
    /// user), so a stolen access token cannot be used to guess the password.
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: String,
        new: String,
        meta: &RequestMeta,
    ) -> Result<()> {
        let user = self.me(principal).await?;
        let subject = || Subject {
            user_id: Some(&user.id),
            username: Some(&user.username),
        };
        let refused = |reason: &'static str| {
            self.audit.record(
                "password_change_failed",
                "denied",
                subject(),
                meta,
                json!({ "reason": reason }),
            )
        };
        let lock_key = format!("password-change:{}", user.id);
        let policy = self.settings.lockout;
        if let LoginGate::Locked { retry_after_ms } = self
            .state
            .login_attempt(&lock_key, policy, now_ms())
            .await?
        {
            refused("locked").await;
            return Err(Error::Locked {
                retry_after_secs: retry_after_secs(retry_after_ms),
            });
        }
        if !self
            .verify(current, vec![user.password_hash.clone()])
            .await?
        {
            self.state.login_failed(&lock_key, policy, now_ms()).await?;
            refused("wrong_current_password").await;
            return Err(Error::Forbidden("current password is wrong".into()));
        }
        self.state.login_succeeded(&lock_key).await?;
        if let Err(e) = password::check_policy("new_password", &new) {
            refused("policy").await;
            return Err(e.into());
        }
        let history = self
            .store
            .recent_password_hashes(&user.id, PASSWORD_HISTORY)
            .await?;
        if self.verify(new.clone(), history).await? {
            refused("reused").await;
            return Err(ValidationError::new(
                "new_password",
                format!("must differ from your last {PASSWORD_HISTORY} passwords"),
            )
            .into());
        }
        let hash = self.hash(new).await?;
        let now = now_secs();
        self.store.set_password(&user.id, &hash, now).await?;
        let revoked = self
            .store
            .revoke_user_sessions(
                &user.id,
                Some(&principal.session_id),
                "password_changed",
                now,
            )
            .await?;
        for sid in &revoked {
            self.publish_revocation(sid).await;
        }
        self.audit
            .record(
                "password_changed",
                "success",
                subject(),
                meta,
                json!({ "sessions_revoked": revoked.len() }),
            )
            .await;
        Ok(())
    }

    /// Verifies an access token and that its session is still alive.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Principal> {
        let claims = match self.keys.current().verify(token) {
            Err(TokenError::UnknownKey) if self.keys.reload_for_unknown_kid().await => {
                self.keys.current().verify(token)?
            }
            other => other?,
        };
        if self.state.is_session_revoked(&claims.sid, now_ms()).await? {
            return Err(Error::SessionRevoked);
        }
        Ok(Principal {
            user_id: claims.sub,
            username: claims.username,
            role: claims.role,
            session_id: claims.sid,
            auth_method: AuthMethod::Jwt,
        })
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

    pub fn state_kind(&self) -> &'static str {
        self.state.kind()
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
