//! API keys: creation (never more than the creator holds), listing,
//! revocation.

use serde_json::json;
use swarmgate_core::permission::Grant;
use swarmgate_core::{ApiKey, User, ValidationError};
use swarmgate_state::Revocable;
use swarmgate_tokens::new_opaque;

use super::audit::Subject;
use super::{Identity, Principal, RequestMeta};
use crate::clock::{now_ms, now_secs};
use crate::error::{Error, Result};

/// What a caller asks for.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub permissions: Vec<String>,
    pub expires_in_days: Option<u32>,
    pub models: Option<Vec<String>>,
    /// Limits of the key; none may be looser than its owner's.
    pub limits: Option<swarmgate_core::LimitSet>,
}

/// A created key: the record and the secret, shown once.
pub struct CreatedApiKey {
    pub key: ApiKey,
    pub secret: String,
}

/// Who acts: a caller of the API, or the operator at the command line.
#[derive(Clone, Copy)]
pub enum Actor<'a> {
    Caller(&'a Principal),
    Operator,
}

impl Actor<'_> {
    /// Fails with 403 unless the actor may do `permission` (the operator at
    /// the command line always may).
    pub(super) fn require(&self, permission: &str) -> Result<()> {
        match self {
            Actor::Caller(p) => p.require(permission),
            Actor::Operator => Ok(()),
        }
    }

    fn may_manage_users(&self) -> bool {
        match self {
            Actor::Caller(p) => p.allows("users.manage", None),
            Actor::Operator => true,
        }
    }

    pub(super) fn user_id(&self) -> Option<&str> {
        match self {
            Actor::Caller(p) => Some(&p.user_id),
            Actor::Operator => None,
        }
    }
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() || value.chars().count() > max || value.chars().any(char::is_control)
    {
        return Err(ValidationError::new(
            field,
            format!("must be 1 to {max} characters without control characters"),
        )
        .into());
    }
    Ok(())
}

impl Identity {
    /// Creates a key for the calling user. Only a login session may create
    /// keys (a key can never mint keys), and the key's grants must all be
    /// covered by the caller's own.
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        request: NewApiKey,
        meta: &RequestMeta,
    ) -> Result<CreatedApiKey> {
        if principal.session_id().is_err() {
            return Err(Error::Forbidden("an API key cannot create API keys".into()));
        }
        let owner = self.store.get_user(&principal.user_id).await?;
        self.create_api_key_for(&owner, request, meta).await
    }

    /// Creates a key for `owner` (the CLI names the user directly).
    pub async fn create_api_key_for(
        &self,
        owner: &User,
        request: NewApiKey,
        meta: &RequestMeta,
    ) -> Result<CreatedApiKey> {
        check_text("name", &request.name, 100)?;
        if request.permissions.is_empty() || request.permissions.len() > 100 {
            return Err(ValidationError::new("permissions", "give 1 to 100 grants").into());
        }
        let role = self.role_of(owner);
        for text in &request.permissions {
            let grant = Grant::parse(text).map_err(|e| ValidationError::new("permissions", e.0))?;
            if !role.grants.covers(&grant) {
                return Err(Error::Forbidden(format!(
                    "permission {text} is not covered by your own grants"
                )));
            }
        }
        if let Some(models) = &request.models {
            if models.len() > 100 {
                return Err(ValidationError::new("models", "at most 100 models").into());
            }
            for model in models {
                check_text("models", model, 200)?;
            }
        }
        if let Some(limits) = &request.limits {
            limits.validate("limits")?;
            let role_limits = self.settings.quota.role_limits.get(&owner.role);
            let owner_limits = match (role_limits, &owner.limits) {
                (Some(a), Some(b)) => Some(a.tightest(b)),
                (a, b) => a.or(b.as_ref()).copied(),
            };
            if let Some(bound) = owner_limits {
                if let Some((name, value)) = limits.exceeds(&bound) {
                    return Err(ValidationError::new(
                        format!("limits.{name}"),
                        format!("may not exceed the owner's limit of {value}"),
                    )
                    .into());
                }
            }
        }
        let days = request
            .expires_in_days
            .unwrap_or(self.settings.api_key_default_days);
        if !(1..=self.settings.api_key_max_days).contains(&days) {
            return Err(ValidationError::new(
                "expires_in_days",
                format!("must be between 1 and {}", self.settings.api_key_max_days),
            )
            .into());
        }
        let secret = new_opaque(&self.settings.api_key_prefix);
        let now = now_secs();
        let key = ApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: owner.id.clone(),
            name: request.name,
            prefix: secret.token.chars().take(12).collect(),
            key_hash: secret.hash.clone(),
            permissions: request.permissions,
            models: request.models,
            limits: request.limits.filter(|l| !l.is_empty()),
            created_at: now,
            expires_at: now + i64::from(days) * 86_400,
            last_used_at: None,
            revoked_at: None,
        };
        self.store.create_api_key(&key).await?;
        self.audit
            .record(
                "api_key_created",
                "success",
                Subject::of(owner),
                meta,
                json!({ "key_id": key.id, "prefix": key.prefix, "permissions": key.permissions }),
            )
            .await;
        Ok(CreatedApiKey {
            key,
            secret: secret.token,
        })
    }

    /// Keys of `user_id`, newest first, with batched `last_used_at` applied.
    pub async fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.flush_last_used().await;
        Ok(self.store.list_api_keys(user_id).await?)
    }

    /// Revokes a key of the caller's (or any key, for `users.manage`).
    /// Someone else's key is "not found", so ids reveal nothing.
    pub async fn revoke_api_key(
        &self,
        actor: Actor<'_>,
        key_id: &str,
        meta: &RequestMeta,
    ) -> Result<()> {
        let key = self.store.api_key(key_id).await?.ok_or(Error::NotFound)?;
        let own = actor.user_id() == Some(key.user_id.as_str());
        if !own {
            if !actor.may_manage_users() {
                return Err(Error::NotFound);
            }
            let owner = self.store.get_user(&key.user_id).await?;
            self.require_covers(actor, &self.role_of(&owner))?;
        }
        if self.store.revoke_api_key(key_id, now_secs()).await? {
            self.publish_key_revocation(&key.id, key.expires_at).await;
            self.audit
                .record(
                    "api_key_revoked",
                    "success",
                    Subject {
                        user_id: Some(&key.user_id),
                        username: None,
                    },
                    meta,
                    json!({ "key_id": key.id, "by": actor.user_id() }),
                )
                .await;
        }
        Ok(())
    }

    /// Tells every instance a key is revoked (best effort: the database is
    /// the truth and the poller republishes it).
    pub(super) async fn publish_key_revocation(&self, key_id: &str, expires_at: i64) {
        let now = now_ms();
        if let Err(e) = self
            .state
            .revoke(Revocable::ApiKey, key_id, expires_at * 1000, now)
            .await
        {
            tracing::warn!(error = %e, "key revocation not published yet; the poller will retry");
        }
    }

    /// Writes the batched `last_used_at` values.
    pub async fn flush_last_used(&self) {
        let used = self.last_used.drain();
        if let Err(e) = self.store.touch_api_keys(&used).await {
            tracing::warn!(error = %e, keys = used.len(), "could not record last_used_at; will retry");
            self.last_used.restore(used);
        }
    }
}
