//! Keeping the shared state in step with the database, which is the source
//! of truth for what is revoked.

use std::sync::Arc;

use swarmgate_state::Revocable;

use super::{Identity, FULL_RESYNC, REVOCATION_POLL};
use crate::clock::{now_ms, now_secs};
use crate::error::Result;

impl Identity {
    /// Access tokens outlive nothing but their `exp`; a session revoked less
    /// than one token lifetime ago must stay revoked across a restart of an
    /// in-process state, so the shared state is seeded from the database.
    pub(super) async fn restore_revocations(&self) -> Result<()> {
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
        let sessions = self.store.sessions_revoked_since(since).await?;
        for (sid, revoked_at) in &sessions {
            self.state
                .revoke_session(sid, revoked_at * 1000 + lifetime, now)
                .await?;
        }
        let keys = self.store.api_keys_revoked_since(since).await?;
        for (key_id, expires_at) in &keys {
            self.state
                .revoke(Revocable::ApiKey, key_id, expires_at * 1000, now)
                .await?;
        }
        let users = self.store.users_changed_since(since).await?;
        for user_id in &users {
            self.users.forget(user_id);
            self.state.bump_user(user_id).await?;
        }
        Ok(sessions.len() + keys.len() + users.len())
    }

    /// Runs forever: every `REVOCATION_POLL` publishes what was revoked
    /// since the last round (with overlap), and every `FULL_RESYNC` all
    /// revocations still relevant.
    pub async fn revocation_poller(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REVOCATION_POLL);
        let mut last_full = std::time::Instant::now();
        let mut last_denials = std::time::Instant::now();
        let mut since = now_secs();
        let mut round: u64 = 0;
        loop {
            tick.tick().await;
            round += 1;
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
            if round.is_multiple_of(5) {
                self.flush_last_used().await;
            }
            if last_denials.elapsed().as_secs() >= super::denials::WINDOW_SECS {
                last_denials = std::time::Instant::now();
                self.flush_denials().await;
            }
        }
    }

    /// Writes what is batched in memory; called at shutdown.
    pub async fn flush(&self) {
        self.flush_last_used().await;
        self.flush_denials().await;
    }

    pub(super) async fn publish_revocation(&self, session_id: &str) {
        let now = now_ms();
        if let Err(e) = self
            .state
            .revoke_session(session_id, now + self.token_lifetime_ms(), now)
            .await
        {
            tracing::warn!(error = %e, "revocation not published yet; the poller will retry");
        }
    }
}
