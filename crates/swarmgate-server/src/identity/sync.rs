//! Keeping the shared state in step with the database, which is the source
//! of truth for what is revoked.

use std::sync::Arc;

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

    /// Tells every instance (through the shared state) that a session is
    /// revoked. The database already says so and is the source of truth: if
    /// the shared state is down, authentication fails closed anyway, and the
    /// revocation poller publishes this as soon as it is back.
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
