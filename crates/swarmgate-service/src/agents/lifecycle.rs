//! An agent session's life after its spawn: what it has spent, who may
//! see it, heartbeats, release (by request, or by the sweep once idle,
//! expired or orphaned) and the allocation given back exactly once.

use serde_json::json;
use swarmgate_core::limits::MAX_LIMIT;
use swarmgate_core::AgentSession;
use swarmgate_state::{Adjust, Meter, Revocable};

use super::{Agents, SessionView};
use crate::audit::Subject;
use crate::error::{Error, Result};
use crate::page::{at_id, Page, PageRequest};
use crate::principal::{Credential, Principal, RequestMeta};
use crate::quota::{agents_key, allocation_key, DAY_MS};

impl Agents {
    /// Tokens the session has spent (its allocation counter).
    pub(super) async fn tokens_used(&self, session: &AgentSession) -> Result<u64> {
        let meter = Meter::Budget {
            key: allocation_key(&session.id),
            limit: MAX_LIMIT,
            cost: 0,
            until_ms: 0,
            resets: false,
        };
        let readings = self
            .quota
            .state()
            .quota_read(&[meter], self.clock.now_ms())
            .await?;
        let counted = readings.first().map_or(0, |r| r.used);
        // The usage records survive what the shared state may lose (an
        // in-process state at a restart, a Redis without persistence).
        let recorded = self
            .store
            .usage_total_of_key(&format!("agent:{}", session.agent_id))
            .await?;
        Ok(counted.max(recorded.max(0) as u64))
    }

    async fn view(&self, session: AgentSession) -> Result<SessionView> {
        let (tokens_used, live) = match session.tokens_used {
            Some(used) => (used.max(0) as u64, false),
            None => (
                self.tokens_used(&session).await?,
                self.quota
                    .state()
                    .quota_held(
                        &agents_key(&session.parent_id),
                        &session.id,
                        self.clock.now_ms(),
                    )
                    .await?,
            ),
        };
        Ok(SessionView {
            session,
            tokens_used,
            live,
        })
    }

    /// A session the caller may see: its own (an agent: only itself), or
    /// any with `agents.manage`.
    async fn visible(&self, principal: &Principal, id: &str) -> Result<AgentSession> {
        let session = self.store.get_agent_session(id).await?;
        let own = match &principal.credential {
            Credential::Agent { session_id, .. } => *session_id == session.id,
            _ => session.parent_id == principal.user_id,
        };
        if !own && !self.authz.holds(principal, "agents.manage").await {
            return Err(Error::NotFound);
        }
        Ok(session)
    }

    pub async fn get(&self, principal: &Principal, id: &str) -> Result<SessionView> {
        self.view(self.visible(principal, id).await?).await
    }

    /// Own sessions, or everyone's with `all` (needs `agents.manage`; by
    /// default everyone's for those who hold it), newest first.
    pub async fn list(
        &self,
        principal: &Principal,
        all: Option<bool>,
        include_released: bool,
        page: &PageRequest,
    ) -> Result<Page<SessionView>> {
        let all = match all {
            Some(true) => {
                self.authz.require(principal, "agents.manage").await?;
                true
            }
            Some(false) => false,
            None => self.authz.holds(principal, "agents.manage").await,
        };
        if !all && matches!(principal.credential, Credential::Agent { .. }) {
            // An agent sees itself (GET /agents/sessions/ID), not its siblings.
            return Err(Error::Forbidden(
                "an agent may not list its parent's sessions".into(),
            ));
        }
        let parent = (!all).then_some(principal.user_id.as_str());
        let size = page.size(50);
        let rows = self
            .store
            .list_agent_sessions(parent, include_released, page.after_at_id()?, size + 1)
            .await?;
        let sessions = Page::of(rows, size, |s| at_id(s.created_at, &s.id));
        let mut items = Vec::with_capacity(sessions.items.len());
        for s in sessions.items {
            items.push(self.view(s).await?);
        }
        Ok(Page {
            items,
            next: sessions.next,
        })
    }

    /// Keeps a session alive for another idle period.
    pub async fn heartbeat(&self, principal: &Principal, id: &str) -> Result<SessionView> {
        let session = self.visible(principal, id).await?;
        let now = self.clock.now_ms();
        let idle = i64::try_from(self.quota.settings().agent_idle.as_millis()).unwrap_or(i64::MAX);
        let alive = session.released_at.is_none()
            && self
                .quota
                .state()
                .quota_touch(
                    &agents_key(&session.parent_id),
                    &session.id,
                    (now + idle).min(session.expires_at * 1000),
                    now,
                )
                .await?;
        if !alive {
            return Err(Error::Gone(
                "the agent session was released or expired".into(),
            ));
        }
        self.view(session).await
    }

    /// Releases a session on request: its token stops, the unused part of
    /// its allocation goes back to the parent.
    pub async fn release(
        &self,
        principal: &Principal,
        id: &str,
        meta: &RequestMeta,
    ) -> Result<SessionView> {
        let session = self.visible(principal, id).await?;
        if session.released_at.is_some() {
            return self.view(session).await;
        }
        self.end(session, "released", meta).await
    }

    /// Ends a session once (whichever request or instance gets there
    /// first): marks it, gives back the unused allocation, stops its token.
    async fn end(
        &self,
        mut session: AgentSession,
        reason: &str,
        meta: &RequestMeta,
    ) -> Result<SessionView> {
        // The token stops first, on every instance (both steps can be
        // repeated): if anything after fails, the session is still not
        // marked released, so the sweep comes back to it.
        let now = self.clock.now_ms();
        let until = (session.expires_at + swarmgate_tokens::LEEWAY_SECS as i64) * 1000;
        let state = self.quota.state();
        state
            .revoke(Revocable::Session, &session.id, until, now)
            .await?;
        state
            .quota_settle(
                &[Adjust::Release {
                    key: agents_key(&session.parent_id),
                    member: session.id.clone(),
                }],
                now,
            )
            .await?;
        // Nothing more is admitted now, so this is what it spent (calls
        // still streaming settle into its own counter, not the parent's).
        let used = self.tokens_used(&session).await?;
        // The rest goes back exactly once, whoever ends it and however
        // often this is retried; only then is the end recorded, so a
        // failure here leaves the session for the sweep to finish.
        self.give_back(&session, used).await?;
        if !self
            .store
            .release_agent_session(&session.id, reason, used as i64, now / 1000)
            .await?
        {
            return self
                .view(self.store.get_agent_session(&session.id).await?)
                .await;
        }
        self.identity
            .audit()
            .record(
                "agent_released",
                "success",
                Subject::id(&session.parent_id),
                meta,
                json!({ "session_id": session.id, "reason": reason, "tokens_used": used }),
            )
            .await;
        session.released_at = Some(now / 1000);
        session.release_reason = Some(reason.to_string());
        session.tokens_used = Some(used as i64);
        Ok(SessionView {
            session,
            tokens_used: used,
            live: false,
        })
    }

    /// Frees the session's agent slot and returns the unused allocation to
    /// each day budget it was carved from, once per session (a repeat does
    /// nothing).
    pub(super) async fn give_back(&self, session: &AgentSession, used: u64) -> Result<()> {
        let mut adjustments = vec![
            Adjust::Once {
                key: format!("agent:{}:ended", session.id),
                // Past every carve's day: no later retry can refund again.
                until_ms: session
                    .carved
                    .iter()
                    .map(|c| c.until_ms)
                    .chain([session.expires_at * 1000])
                    .max()
                    .unwrap_or(0)
                    + DAY_MS,
            },
            Adjust::Release {
                key: agents_key(&session.parent_id),
                member: session.id.clone(),
            },
        ];
        for carve in &session.carved {
            let unused = carve.tokens.saturating_sub(used);
            if unused > 0 {
                adjustments.push(Adjust::Budget {
                    key: carve.key.clone(),
                    refund: unused as i64,
                    until_ms: carve.until_ms,
                });
            }
        }
        self.quota
            .state()
            .quota_settle(&adjustments, self.clock.now_ms())
            .await?;
        Ok(())
    }

    /// Why a live session is over, if it is: past its lifetime, its key
    /// revoked, its parent disabled or deleted, its state lost with the
    /// previous process, or idle.
    async fn ended_why(&self, session: &AgentSession, now: i64) -> Result<Option<&'static str>> {
        if session.expires_at * 1000 <= now {
            return Ok(Some("expired"));
        }
        let state = self.quota.state();
        if let Some(key_id) = &session.key_id {
            let key = state
                .credential_status(Revocable::ApiKey, key_id, &session.parent_id, now)
                .await?;
            if key.revoked {
                return Ok(Some("key_revoked"));
            }
        }
        match self.store.get_user(&session.parent_id).await {
            Ok(user) if user.disabled => return Ok(Some("parent_disabled")),
            Ok(_) => {}
            Err(swarmgate_store::StoreError::NotFound) => return Ok(Some("parent_deleted")),
            Err(e) => return Err(e.into()),
        }
        if state
            .quota_held(&agents_key(&session.parent_id), &session.id, now)
            .await?
        {
            return Ok(None);
        }
        let lost = state.kind() == "memory" && (session.created_at + 1) * 1000 <= self.started_ms;
        Ok(Some(if lost { "restarted" } else { "idle" }))
    }

    /// How many sessions are not released yet.
    pub async fn live_sessions(&self) -> Result<usize> {
        Ok(self.store.live_agent_sessions().await?.len())
    }

    /// Releases every session idle for `[agents] idle_minutes` or past its
    /// lifetime; returns how many.
    pub async fn sweep(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        let mut released = 0;
        for session in self.store.live_agent_sessions().await? {
            let reason = match self.ended_why(&session, now).await {
                Ok(Some(reason)) => reason,
                Ok(None) => continue,
                Err(e) => {
                    // Unreachable state: tried again on the next sweep (the
                    // agent's own requests fail closed meanwhile).
                    tracing::warn!(error = %e, session = %session.id, "agent session not checked");
                    continue;
                }
            };
            // One session that cannot be ended now must not keep the
            // others from it; it is tried again on the next sweep.
            let id = session.id.clone();
            match self.end(session, reason, &RequestMeta::default()).await {
                Ok(_) => released += 1,
                Err(e) => {
                    tracing::warn!(error = %e, session = %id, "agent session not released yet")
                }
            }
        }
        Ok(released)
    }
}
