//! API keys: creation (never more than the creator holds), listing,
//! revocation.

use serde_json::json;
use swarmgate_core::permission::GrantSet;
use swarmgate_core::{ApiKey, LimitSet, ValidationError};
use swarmgate_state::Revocable;
use swarmgate_tokens::new_opaque;

use super::Identity;
use crate::audit::Subject;
use crate::authz::{Action, Actor, Delegate, Resource};
use crate::error::{Error, Result};
use crate::page::{at_id, Page, PageRequest};
use crate::principal::{Principal, RequestMeta};

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
        self.authz
            .authorize(principal, Action::Delegate(Delegate::ApiKey), Resource::Any)
            .await
            .require()?;
        self.create_api_key_for(principal, request, meta).await
    }

    /// Creates a key for `owner` (a login session of theirs, or, from the
    /// CLI, the user as if logged in): never more than the owner holds.
    pub async fn create_api_key_for(
        &self,
        owner: &Principal,
        request: NewApiKey,
        meta: &RequestMeta,
    ) -> Result<CreatedApiKey> {
        check_text("name", &request.name, 100)?;
        if request.permissions.is_empty() || request.permissions.len() > 100 {
            return Err(ValidationError::new("permissions", "give 1 to 100 grants").into());
        }
        // Each grant in turn, as given: a malformed one is a 422, one
        // beyond the owner a 403, whichever comes first.
        for text in &request.permissions {
            let grant = GrantSet::parse(&[text.as_str()])
                .map_err(|e| ValidationError::new("permissions", e.0))?;
            self.authz
                .authorize(
                    owner,
                    Action::Delegate(Delegate::ApiKey),
                    Resource::Grants(&grant),
                )
                .await
                .require()?;
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
            self.within_owner_limits(owner, limits)?;
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
        let now = self.clock.now_secs();
        let key = ApiKey {
            id: swarmgate_core::random::uuid_string(),
            user_id: owner.user_id.clone(),
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
                Subject::principal(owner),
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
    pub async fn list_api_keys(&self, user_id: &str, page: &PageRequest) -> Result<Page<ApiKey>> {
        self.flush_last_used().await;
        let size = page.size(100);
        let rows = self
            .store
            .list_api_keys(user_id, page.after_at_id()?, size + 1)
            .await?;
        Ok(Page::of(rows, size, |k| at_id(k.created_at, &k.id)))
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
            if !self.authz.holds(actor, "users.manage").await {
                return Err(Error::NotFound);
            }
            let owner = self.store.get_user(&key.user_id).await?;
            let role = self.role_of(&owner);
            self.authz
                .authorize(
                    actor,
                    Action::Permission("users.manage"),
                    Resource::Role(&role),
                )
                .await
                .require()?;
        }
        if self
            .store
            .revoke_api_key(key_id, self.clock.now_secs())
            .await?
        {
            self.publish_key_revocation(&key.id, key.expires_at).await;
            self.audit
                .record(
                    "api_key_revoked",
                    "success",
                    Subject::id(&key.user_id),
                    meta,
                    json!({ "key_id": key.id, "by": actor.user_id() }),
                )
                .await;
        }
        Ok(())
    }

    /// Tells every instance a key is revoked (best effort: the database is
    /// the truth and the poller republishes it).
    pub(crate) async fn publish_key_revocation(&self, key_id: &str, expires_at: i64) {
        let now = self.clock.now_ms();
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

impl Identity {
    /// A key's limits: valid, and none looser than its owner's (their
    /// role's and their own, the tighter of each).
    fn within_owner_limits(&self, owner: &Principal, limits: &LimitSet) -> Result<()> {
        limits.validate("limits")?;
        let role_limits = self.settings.quota.role_limits.get(&owner.role.name);
        let owner_limits = match (role_limits, &owner.user_limits) {
            (Some(a), Some(b)) => Some(a.tightest(b)),
            (a, b) => a.or(b.as_ref()).copied(),
        };
        let Some(bound) = owner_limits else {
            return Ok(());
        };
        match limits.exceeds(&bound) {
            Some((name, value)) => Err(ValidationError::new(
                format!("limits.{name}"),
                format!("may not exceed the owner's limit of {value}"),
            )
            .into()),
            None => Ok(()),
        }
    }
}
