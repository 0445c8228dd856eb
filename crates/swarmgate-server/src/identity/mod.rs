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
        };
        identity.restore_revocations().await?;
        Ok(identity)
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
        let lifetime = self.token_lifetime_ms() / 1000;
        let now = now_secs();
        for (sid, revoked_at) in self.store.sessions_revoked_since(now - lifetime).await? {
            self.state
                .revoke_session(&sid, (revoked_at + lifetime) * 1000, now * 1000)
                .await?;
        }
        Ok(())
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
        let password_hash = hash_blocking(account.password, self.settings.hash_params).await?;
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
        self.rate_limit(&format!("register:{ip}"), self.settings.register_rate)
            .await?;
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
        self.rate_limit(&format!("login:{ip}"), self.settings.login_rate)
            .await?;

        let user = if login.is_empty() || login.len() > 254 {
            None
        } else {
            self.store.find_user_by_login(login).await?
        };
        let lock_key = match &user {
            Some(u) => format!("user:{}", u.id),
            None => format!("name:{}", login.to_lowercase()),
        };
        let subject_id = user.as_ref().map(|u| u.id.clone());
        let subject_name = user
            .as_ref()
            .map_or(login.to_string(), |u| u.username.clone());
        let subject = || Subject {
            user_id: subject_id.as_deref(),
            username: Some(subject_name.as_str()),
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
        let valid = verify_blocking(password, vec![hash]).await? && user.is_some();
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
                self.publish_revocation(&session_id).await?;
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

    async fn publish_revocation(&self, session_id: &str) -> Result<()> {
        let now = now_ms();
        self.state
            .revoke_session(session_id, now + self.token_lifetime_ms(), now)
            .await?;
        Ok(())
    }

    /// Ends the caller's session: its access and refresh tokens stop working.
    pub async fn logout(&self, principal: &Principal, meta: &RequestMeta) -> Result<()> {
        self.store
            .revoke_session(&principal.session_id, "logout", now_secs())
            .await?;
        self.publish_revocation(&principal.session_id).await?;
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
        if !verify_blocking(current, vec![user.password_hash.clone()]).await? {
            self.audit
                .record(
                    "password_change_failed",
                    "denied",
                    subject(),
                    meta,
                    json!({ "reason": "wrong_current_password" }),
                )
                .await;
            return Err(Error::Forbidden("current password is wrong".into()));
        }
        password::check_policy("new_password", &new)?;
        let history = self
            .store
            .recent_password_hashes(&user.id, PASSWORD_HISTORY)
            .await?;
        if verify_blocking(new.clone(), history).await? {
            return Err(ValidationError::new(
                "new_password",
                format!("must differ from your last {PASSWORD_HISTORY} passwords"),
            )
            .into());
        }
        let hash = hash_blocking(new, self.settings.hash_params).await?;
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
            self.publish_revocation(sid).await?;
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
