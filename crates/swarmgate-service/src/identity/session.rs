//! Password sessions: accounts, login, refresh-token rotation, logout and
//! password change.

use serde_json::json;
use swarmgate_core::password;
use swarmgate_core::{roles, validate, NewUser, User, ValidationError};
use swarmgate_state::LoginGate;
use swarmgate_store::{RefreshOutcome, Session};
use swarmgate_tokens::{hash_opaque, new_opaque, AccessClaims};

use super::audit::Subject;
use super::{
    generate_password, Identity, NewAccount, Principal, RequestMeta, TokenPair, PASSWORD_HISTORY,
    REFRESH_TOKEN_PREFIX,
};
use crate::clock::{now_ms, now_secs};
use crate::error::{retry_after_secs, Error, Result};

impl Identity {
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
        // The configured role table (built-in roles plus [roles.NAME]) is
        // the one authority on which roles exist.
        if !self.settings.roles.contains(&account.role) {
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
                Subject::of(&user),
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
        let subject = Subject::of(&user);
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

    pub(super) fn token_pair(
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
            ..Default::default()
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

    /// Ends the caller's session: its access and refresh tokens stop working.
    pub async fn logout(&self, principal: &Principal, meta: &RequestMeta) -> Result<()> {
        let session_id = principal.session_id()?;
        self.store
            .revoke_session(session_id, "logout", now_secs())
            .await?;
        self.publish_revocation(session_id).await;
        self.audit
            .record(
                "logout",
                "success",
                Subject {
                    user_id: Some(&principal.user_id),
                    username: Some(&principal.username),
                },
                meta,
                json!({ "session_id": session_id }),
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
        let session_id = principal.session_id()?;
        let user = self.me(principal).await?;
        let subject = || Subject::of(&user);
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
            .revoke_user_sessions(&user.id, Some(session_id), "password_changed", now)
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
}
