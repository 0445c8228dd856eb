//! User administration: listing, changing role or status, unlocking,
//! deleting, and the audit query. Every entry point takes an [`Actor`]: an
//! API caller (who needs `users.manage`, or `audit.read` for the audit) or
//! the operator at the command line.
//!
//! Privilege escalation is refused: a caller may only assign a role, or
//! touch a user whose role, is covered by the caller's own grants.

use serde_json::json;
use swarmgate_core::{AuditEvent, User, ValidationError};
use swarmgate_store::{AuditFilter, UserUpdate};

use super::sync::Changed;
use super::Identity;
use crate::audit::Subject;
use crate::authz::{Action, Actor, Resource};
use crate::error::{Error, Result};
use crate::page::{not_ours, Page, PageRequest};
use crate::principal::RequestMeta;

/// A change asked of `PATCH /admin/users/{id}`.
#[derive(Debug, Default, Clone)]
pub struct UserPatch {
    pub role: Option<String>,
    pub disabled: Option<bool>,
    pub full_name: Option<Option<String>>,
}

const MANAGE: Action<'static> = Action::Permission("users.manage");

impl Identity {
    /// The preamble of every change to a user: the actor holds
    /// `users.manage` (asked before the user is looked up, so an id reveals
    /// nothing), and its grants cover the user's role.
    async fn managed_user(&self, actor: Actor<'_>, id: &str) -> Result<User> {
        self.authz.require(actor, "users.manage").await?;
        self.within_reach(actor, id).await
    }

    /// The user `id`, when the actor's grants cover its role.
    async fn within_reach(&self, actor: Actor<'_>, id: &str) -> Result<User> {
        let user = self.store.get_user(id).await?;
        let role = self.role_of(&user);
        self.authz
            .authorize(actor, MANAGE, Resource::Role(&role))
            .await
            .require()?;
        Ok(user)
    }

    pub async fn admin_list_users(
        &self,
        actor: Actor<'_>,
        q: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<User>> {
        self.authz.require(actor, "users.manage").await?;
        let size = page.size(50);
        let rows = self
            .store
            .list_users(q, page.after.as_deref(), size + 1)
            .await?;
        Ok(Page::of(rows, size, |u| u.username.to_lowercase()))
    }

    pub async fn admin_get_user(&self, actor: Actor<'_>, id: &str) -> Result<User> {
        self.authz.require(actor, "users.manage").await?;
        Ok(self.store.get_user(id).await?)
    }

    /// Finds a user by name (for the CLI).
    pub async fn user_by_name(&self, name: &str) -> Result<User> {
        self.store
            .find_user_by_login(name)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Changes role, status or name. Disabling revokes every session and
    /// key of the user at once; enabling again does not bring them back.
    pub async fn admin_update_user(
        &self,
        actor: Actor<'_>,
        id: &str,
        patch: UserPatch,
        meta: &RequestMeta,
    ) -> Result<User> {
        let before = self.managed_user(actor, id).await?;
        if let Some(role) = &patch.role {
            let Some(target) = self.settings.roles.get(role) else {
                return Err(ValidationError::new("role", format!("unknown role {role:?}")).into());
            };
            self.authz
                .authorize(actor, MANAGE, Resource::Role(target))
                .await
                .require()?;
        }
        if let Some(Some(name)) = &patch.full_name {
            swarmgate_core::validate::full_name(name)?;
        }
        if patch.disabled == Some(true) && actor.user_id() == Some(id) {
            return Err(Error::Forbidden(
                "you cannot disable your own account".into(),
            ));
        }
        // As with disabling: the only admin demoting itself would leave
        // nobody to manage users through the API.
        if patch.role.as_ref().is_some_and(|r| *r != before.role) && actor.user_id() == Some(id) {
            return Err(Error::Forbidden("you cannot change your own role".into()));
        }
        let now = self.clock.now_secs();
        let update = UserUpdate {
            role: patch.role.clone(),
            disabled: patch.disabled,
            full_name: patch.full_name.clone(),
            limits: None,
        };
        // Every disable revokes, a repeated one too: whatever is still live
        // (made while a disable was in flight) goes.
        let revoke = (patch.disabled == Some(true)).then_some("user_disabled");
        let (user, gone) = self
            .store
            .update_user_revoking(id, &update, revoke, now)
            .await?;
        let revoked = self.publish_revoked(&gone.sessions, &gone.keys, now).await;
        self.publish_change_soon(Changed::User(id)).await;
        self.admin_event(
            "user_updated",
            &user,
            actor,
            meta,
            json!({ "role": patch.role,
                    "disabled": patch.disabled,
                    "sessions_revoked": revoked.0,
                    "keys_revoked": revoked.1 }),
        )
        .await;
        Ok(user)
    }

    /// Sets a user's own limits (`{}` removes them). Every instance sees
    /// them on the user's next request.
    pub async fn admin_set_user_limits(
        &self,
        actor: Actor<'_>,
        id: &str,
        limits: swarmgate_core::LimitSet,
        meta: &RequestMeta,
    ) -> Result<User> {
        self.authz.require(actor, "users.manage").await?;
        limits.validate("limits")?;
        self.within_reach(actor, id).await?;
        let update = UserUpdate {
            limits: Some((!limits.is_empty()).then_some(limits)),
            ..Default::default()
        };
        let user = self
            .store
            .update_user(id, &update, self.clock.now_secs())
            .await?;
        self.publish_change_soon(Changed::User(id)).await;
        self.admin_event(
            "user_limits_set",
            &user,
            actor,
            meta,
            json!({ "limits": user.limits }),
        )
        .await;
        Ok(user)
    }

    /// Audits an administrative change of `user`, naming who made it.
    async fn admin_event(
        &self,
        event: &str,
        user: &User,
        actor: Actor<'_>,
        meta: &RequestMeta,
        mut detail: serde_json::Value,
    ) {
        if let Some(detail) = detail.as_object_mut() {
            detail.insert("by".into(), json!(actor.user_id()));
        }
        self.audit
            .record(event, "success", Subject::of(user), meta, detail)
            .await;
    }

    /// Revokes every session and API key of a user; returns the counts.
    async fn revoke_everything_of(
        &self,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<(usize, usize)> {
        let sessions = self
            .store
            .revoke_user_sessions(user_id, None, reason, now)
            .await?;
        let keys = self.store.revoke_user_api_keys(user_id, now).await?;
        Ok(self.publish_revoked(&sessions, &keys, now).await)
    }

    /// Tells the shared state of sessions and keys revoked in the store;
    /// returns how many of each.
    async fn publish_revoked(
        &self,
        sessions: &[String],
        keys: &[String],
        now: i64,
    ) -> (usize, usize) {
        for sid in sessions {
            self.publish_revocation(sid).await;
        }
        let far = now + 10 * 365 * 86_400;
        for key in keys {
            self.publish_key_revocation(key, far).await;
        }
        (sessions.len(), keys.len())
    }

    /// Clears a lockout of the user's name, email and password change.
    pub async fn admin_unlock_user(
        &self,
        actor: Actor<'_>,
        id: &str,
        meta: &RequestMeta,
    ) -> Result<()> {
        let user = self.managed_user(actor, id).await?;
        // Recorded in the database too, so instances without a shared Redis
        // (and so the CLI) clear the lockout through the poller.
        self.store
            .record_user_change(id, "unlocked", self.clock.now_secs())
            .await?;
        self.clear_lockout(&user).await?;
        self.admin_event("user_unlocked", &user, actor, meta, json!({}))
            .await;
        Ok(())
    }

    /// Clears the lockout counters of a user's name, email and password
    /// change on the shared state this instance uses.
    pub(crate) async fn clear_lockout(&self, user: &User) -> Result<()> {
        for key in [
            format!("login:{}", user.username.to_lowercase()),
            format!("login:{}", user.email.to_lowercase()),
            format!("password-change:{}", user.id),
        ] {
            self.state.unlock(&key).await?;
        }
        Ok(())
    }

    /// Deletes a user and everything of theirs.
    pub async fn admin_delete_user(
        &self,
        actor: Actor<'_>,
        id: &str,
        meta: &RequestMeta,
    ) -> Result<()> {
        let user = self.managed_user(actor, id).await?;
        if actor.user_id() == Some(id) {
            return Err(Error::Forbidden(
                "you cannot delete your own account".into(),
            ));
        }
        let now = self.clock.now_secs();
        self.revoke_everything_of(id, "user_deleted", now).await?;
        self.store.delete_user(id, now).await?;
        self.publish_change_soon(Changed::User(id)).await;
        self.admin_event("user_deleted", &user, actor, meta, json!({}))
            .await;
        Ok(())
    }

    /// Audit events, newest first; a page continues below the id of the
    /// last event of the one before.
    pub async fn admin_audit(
        &self,
        actor: Actor<'_>,
        mut filter: AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<(i64, AuditEvent)>> {
        self.authz.require(actor, "audit.read").await?;
        filter.before_id = page
            .after
            .as_deref()
            .map(|id| id.parse::<i64>().map_err(|_| not_ours()))
            .transpose()?;
        let size = page.size(100);
        let rows = self.store.query_audit(&filter, size + 1).await?;
        Ok(Page::of(rows, size, |(id, _)| id.to_string()))
    }
}
