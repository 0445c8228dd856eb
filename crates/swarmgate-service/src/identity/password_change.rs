//! Changing a password: the current one checked (with a lockout of its
//! own), the new one against the policy and the last few, every other
//! session revoked.

use serde_json::json;
use swarmgate_core::{password, ValidationError};
use swarmgate_state::LoginGate;

use super::{Identity, PASSWORD_HISTORY};
use crate::audit::Subject;
use crate::error::{retry_after_secs, Error, Result};
use crate::principal::{Principal, RequestMeta};

impl Identity {
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
            .login_attempt(&lock_key, policy, self.clock.now_ms())
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
            self.state
                .login_failed(&lock_key, policy, self.clock.now_ms())
                .await?;
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
        let now = self.clock.now_secs();
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
