//! Keeping the shared state in step with the database, which is the source
//! of truth for what is revoked.

use std::sync::Arc;

use swarmgate_state::Revocable;

use super::{Identity, FULL_RESYNC_MS, REVOCATION_POLL};
use crate::clients::{client_subject, node_subject};
use crate::error::Result;

/// Something each instance caches and the shared state versions: a user, a
/// client, or a node's token cutoff.
#[derive(Clone, Copy)]
pub(crate) enum Changed<'a> {
    User(&'a str),
    Client(&'a str),
    Node(&'a str),
}

impl Identity {
    /// Drops this instance's copy of `what` and bumps its version in the
    /// shared state, so every instance reads it again on its next use.
    pub(crate) async fn publish_change(&self, what: Changed<'_>) -> Result<()> {
        let subject = match what {
            Changed::User(id) => {
                self.users.forget(id);
                id.to_string()
            }
            Changed::Client(id) => {
                self.clients.forget(id);
                client_subject(id)
            }
            Changed::Node(id) => {
                self.clients.forget_node(id);
                node_subject(id)
            }
        };
        self.state.bump_user(&subject).await?;
        Ok(())
    }

    /// [`publish_change`](Self::publish_change) after a change already in
    /// the database: if the shared state is unreachable, the poller
    /// publishes it later.
    pub(crate) async fn publish_change_soon(&self, what: Changed<'_>) {
        if let Err(e) = self.publish_change(what).await {
            tracing::warn!(error = %e, "change not published yet; the poller will retry");
        }
    }

    /// Rebuilds everything the shared state must know from the database
    /// (at start-up, every `FULL_RESYNC`, and at once when a Redis lost its
    /// data), then marks the state complete: every session revoked within
    /// one token lifetime, every revoked key not yet expired, and every user
    /// changed within the user cache's lifetime.
    pub(super) async fn restore_revocations(&self) -> Result<()> {
        let now = self.clock.now_secs();
        self.republish(now - self.token_lifetime_ms() / 1000, true)
            .await?;
        self.state.mark_complete().await?;
        Ok(())
    }

    /// Publishes to the shared state what the database says changed at or
    /// after `since` (unix seconds); with `full`, also every revoked key
    /// still unexpired and every user changed within the user cache's
    /// lifetime. The database is the source of truth: this heals a publish
    /// that failed, a Redis that restarted empty, and changes made by the
    /// CLI. Returns how many items it published.
    pub async fn republish(&self, since: i64, full: bool) -> Result<usize> {
        let lifetime = self.token_lifetime_ms();
        let now = self.clock.now_ms();
        let sessions = self.store.sessions_revoked_since(since).await?;
        for (sid, revoked_at) in &sessions {
            self.state
                .revoke_session(sid, revoked_at * 1000 + lifetime, now)
                .await?;
        }
        let keys = if full {
            self.store.live_revoked_api_keys(now / 1000).await?
        } else {
            self.store.api_keys_revoked_since(since).await?
        };
        for (key_id, expires_at) in &keys {
            self.state
                .revoke(Revocable::ApiKey, key_id, expires_at * 1000, now)
                .await?;
        }
        let users_since = if full {
            now / 1000 - super::USER_CACHE_TTL.as_secs() as i64 - 60
        } else {
            since
        };
        let users = self.store.users_changed_since(users_since).await?;
        for user_id in &users {
            self.publish_change(Changed::User(user_id)).await?;
        }
        let clients = self.store.clients_changed_since(users_since).await?;
        for id in &clients {
            self.publish_change(Changed::Client(id)).await?;
        }
        let nodes = self.store.node_cutoffs_since(users_since).await?;
        for id in &nodes {
            self.publish_change(Changed::Node(id)).await?;
        }
        let tokens = self.republish_tokens(since, full).await?;
        for user_id in self.store.users_unlocked_since(since).await? {
            if let Ok(user) = self.store.get_user(&user_id).await {
                self.clear_lockout(&user).await?;
            }
        }
        Ok(sessions.len() + keys.len() + users.len() + clients.len() + tokens + nodes.len())
    }

    /// Runs forever: every `REVOCATION_POLL` publishes what changed since
    /// the last round (with overlap), every `FULL_RESYNC_MS` (or at once when
    /// the shared state lost its data) everything still relevant; flushes
    /// batched `last_used_at` every fifth round and denial counts every
    /// minute.
    pub async fn revocation_poller(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REVOCATION_POLL);
        let mut last_full = self.clock.now_ms();
        let mut last_denials = last_full;
        let mut since = self.clock.now_secs();
        let mut round: u64 = 0;
        loop {
            tick.tick().await;
            round += 1;
            let started = self.clock.now_secs();
            let lost = match self.state.lost_state().await {
                Ok(lost) => lost,
                Err(e) => {
                    tracing::warn!(error = %e, "shared state unreachable; retrying");
                    continue;
                }
            };
            let full_due = crate::clock::due(self.clock.now_ms(), last_full, FULL_RESYNC_MS);
            let result = if lost || full_due {
                if lost {
                    tracing::warn!("shared state lost its data; rebuilding it from the database");
                }
                self.restore_revocations().await.map(|_| {
                    last_full = self.clock.now_ms();
                })
            } else {
                self.republish(since - 2, false).await.map(|_| ())
            };
            match result {
                Ok(()) => since = started,
                Err(e) => tracing::warn!(error = %e, "revocation sync failed; retrying"),
            }
            if round.is_multiple_of(5) {
                self.flush_last_used().await;
            }
            if crate::clock::due(self.clock.now_ms(), last_denials, crate::authz::WINDOW_MS) {
                last_denials = self.clock.now_ms();
                self.authz.flush().await;
            }
        }
    }

    /// Writes what is batched in memory; called at shutdown.
    pub async fn flush(&self) {
        self.flush_last_used().await;
        self.authz.flush().await;
    }

    pub(crate) async fn publish_revocation(&self, session_id: &str) {
        let now = self.clock.now_ms();
        if let Err(e) = self
            .state
            .revoke_session(session_id, now + self.token_lifetime_ms(), now)
            .await
        {
            tracing::warn!(error = %e, "revocation not published yet; the poller will retry");
        }
    }
}
