//! Password sessions: accounts, login, refresh-token rotation and logout.

use serde_json::json;
use swarmgate_core::password;
use swarmgate_core::{roles, validate, NewUser, User, ValidationError};
use swarmgate_state::LoginGate;
use swarmgate_store::{RefreshOutcome, Session};
use swarmgate_tokens::{hash_opaque, new_opaque, AccessClaims};

use super::{generate_password, Identity, NewAccount, TokenPair, REFRESH_TOKEN_PREFIX};
use crate::audit::Subject;
use crate::error::{retry_after_secs, Error, Result};
use crate::principal::{Principal, RequestMeta};

/// Whom a login names: the account, if there is one, and the name the
/// audit trail gives it.
struct LoginSubject {
    user: Option<User>,
    name: Option<String>,
    lock_key: String,
}

impl LoginSubject {
    fn subject(&self) -> Subject<'_> {
        Subject {
            user_id: self.user.as_ref().map(|u| u.id.as_str()),
            username: self.name.as_deref(),
        }
    }
}

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
                id: swarmgate_core::random::uuid_string(),
                username: account.username,
                email: account.email,
                full_name: account.full_name,
                role: account.role,
                password_hash,
                created_at: self.clock.now_secs(),
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
        self.limit_per_client("register", self.settings.register_rate, meta)
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
        self.limit_per_client("login", self.settings.login_rate, meta)
            .await?;
        let who = self.login_subject(login).await?;
        let policy = self.settings.lockout;
        if let LoginGate::Locked { retry_after_ms } = self
            .state
            .login_attempt(&who.lock_key, policy, self.clock.now_ms())
            .await?
        {
            self.login_failed(who.subject(), meta, "locked").await;
            return Err(Error::Locked {
                retry_after_secs: retry_after_secs(retry_after_ms),
            });
        }
        let hash = who
            .user
            .as_ref()
            .map_or(self.dummy_hash.clone(), |u| u.password_hash.clone());
        let valid = self.verify(password, vec![hash]).await? && who.user.is_some();
        let Some(user) = who.user.as_ref().filter(|_| valid) else {
            return Err(self.wrong_password(&who, meta).await?);
        };
        self.state.login_succeeded(&who.lock_key).await?;
        if user.disabled {
            self.login_failed(Subject::of(user), meta, "disabled").await;
            return Err(Error::AccountDisabled);
        }
        self.start_session(user, meta).await
    }

    /// Whom a login names, looked up only when it could be an account.
    async fn login_subject(&self, login: &str) -> Result<LoginSubject> {
        // Text no account can have (too long, control characters) never
        // reaches the database, and is never written to the audit trail
        // (it may be a password typed into the wrong box).
        let plausible = validate::username(login).is_ok() || validate::email(login).is_ok();
        let user = if login.is_empty() || login.len() > 254 || login.chars().any(char::is_control) {
            None
        } else {
            self.store.find_user_by_login(login).await?
        };
        let name = match &user {
            Some(u) => Some(u.username.clone()),
            None => plausible.then(|| login.to_string()),
        };
        Ok(LoginSubject {
            // Lockout is per login name as typed (case-insensitive), for
            // real and unknown names alike, so a lock reveals nothing about
            // which names or emails belong to an account.
            lock_key: format!("login:{}", login.to_lowercase()),
            name,
            user,
        })
    }

    /// Counts a wrong password (or unknown name) towards the lockout and
    /// audits it; the error to answer with.
    async fn wrong_password(&self, who: &LoginSubject, meta: &RequestMeta) -> Result<Error> {
        let reason = if who.user.is_some() {
            "wrong_password"
        } else {
            "unknown_user"
        };
        let policy = self.settings.lockout;
        let engaged = self
            .state
            .login_failed(&who.lock_key, policy, self.clock.now_ms())
            .await?;
        self.login_failed(who.subject(), meta, reason).await;
        if engaged {
            self.audit
                .record(
                    "account_locked",
                    "locked",
                    who.subject(),
                    meta,
                    json!({ "minutes": policy.lock_for.as_secs() / 60 }),
                )
                .await;
        }
        Ok(Error::InvalidCredentials)
    }

    async fn login_failed(&self, subject: Subject<'_>, meta: &RequestMeta, reason: &str) {
        self.audit
            .record(
                "login_failed",
                "denied",
                subject,
                meta,
                json!({ "reason": reason }),
            )
            .await;
    }

    /// A new session for `user`, its refresh token stored as a hash.
    async fn start_session(&self, user: &User, meta: &RequestMeta) -> Result<TokenPair> {
        let now = self.clock.now_secs();
        let session = Session {
            id: swarmgate_core::random::uuid_string(),
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
        let pair = self.token_pair(user, &session.id, refresh.token)?;
        self.audit
            .record(
                "login_succeeded",
                "success",
                Subject::of(user),
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
        let now = self.clock.now_secs();
        let claims = AccessClaims {
            iss: self.settings.public_url.clone(),
            aud: self.settings.audience.clone(),
            sub: user.id.clone(),
            exp: now + self.settings.access_ttl_secs,
            iat: now,
            nbf: now,
            jti: swarmgate_core::random::uuid_string(),
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
        let now = self.clock.now_secs();
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
            .revoke_session(session_id, "logout", self.clock.now_secs())
            .await?;
        self.publish_revocation(session_id).await;
        self.audit
            .record(
                "logout",
                "success",
                Subject::principal(principal),
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
}
