//! Agent sessions (seed 003): short-lived identities a user spawns for an
//! agent process, each with a token allocation carved out of the user's
//! own day budget and rates at most the user's. The agent's JWT names its
//! parent (`act`); at every request it may do only what both it and its
//! parent may do then, and it stops at once when the session is released,
//! goes idle, or the parent is disabled.
//!
//! What is live is in the shared state: the parent's `agents:USER` slot
//! set (its size is `max_agents`, each hold is the session's idle
//! deadline) and the session's allocation counter. The database keeps the
//! record: who spawned what, and when and why it ended.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use swarmgate_core::limits::{AgentBudget, MAX_LIMIT};
use swarmgate_core::permission::GrantSet;
use swarmgate_core::{AgentSession, Carve, LimitSet};
use swarmgate_state::{Adjust, Admission, Meter, Revocable};
use swarmgate_store::Store;
use swarmgate_tokens::{AccessClaims, Act, AgentClaims, AGENT_SUBJECT_PREFIX};

use super::{agents_key, allocation_key, day_end, day_key, Denial, Quota, RateHeaders, DAY_MS};
use crate::clock::{now_ms, now_secs};
use crate::error::{Error, Result};
use crate::identity::admin::{page, MAX_PAGE};
use crate::identity::audit::Subject;
use crate::identity::{Credential, Identity, Principal, RequestMeta};
use crate::monitoring::percent;

/// What `POST /agents/sessions` asks for.
#[derive(Debug, Clone, Default)]
pub struct SpawnRequest {
    pub name: String,
    pub model: Option<String>,
    pub budget: AgentBudget,
    pub ttl_seconds: Option<u64>,
    pub permissions: Option<Vec<String>>,
}

/// A spawned session, with its token (shown once) and environment.
pub struct Spawned {
    pub session: AgentSession,
    pub token: String,
    pub env: BTreeMap<&'static str, String>,
}

/// A session with what it has spent so far.
pub struct SessionView {
    pub session: AgentSession,
    pub tokens_used: u64,
    pub live: bool,
}

/// Whose quota `swarmgate quota info` shows.
#[derive(Debug, Clone)]
pub enum InfoSubject {
    /// A user by name, email or id.
    User(String),
    /// An API key by id.
    Key(String),
    /// An agent session by id.
    Agent(String),
}

/// At and above this share of its allocation a session is "near
/// exhaustion" in `/quota/health`.
const NEAR_EXHAUSTION: f64 = 0.9;

pub struct Agents {
    identity: Arc<Identity>,
    quota: Arc<Quota>,
    store: Store,
    /// When this process started (unix ms): with in-process state, what
    /// was live before it is gone.
    started_ms: i64,
}

fn validate_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(swarmgate_core::ValidationError::new(
            "name",
            "must be 1 to 64 characters, none of them control characters",
        )
        .into());
    }
    Ok(())
}

impl Agents {
    pub fn new(identity: Arc<Identity>, quota: Arc<Quota>) -> Self {
        let store = identity.store().clone();
        Self {
            identity,
            quota,
            store,
            started_ms: now_ms(),
        }
    }

    /// The permissions the agent is given: those asked for (each within
    /// the caller's), or everything the caller's credential holds.
    fn permissions_for(principal: &Principal, asked: Option<Vec<String>>) -> Result<Vec<String>> {
        let Some(asked) = asked else {
            return Ok(match &principal.credential {
                Credential::ApiKey { grants, .. } => {
                    grants.grants().iter().map(ToString::to_string).collect()
                }
                _ => principal.role.permissions.clone(),
            });
        };
        if asked.is_empty() || asked.len() > 100 {
            return Err(swarmgate_core::ValidationError::new(
                "permissions",
                "give 1 to 100 grants",
            )
            .into());
        }
        let grants = GrantSet::parse(&asked)
            .map_err(|e| swarmgate_core::ValidationError::new("permissions", e.to_string()))?;
        let wanted = swarmgate_core::roles::Role {
            name: "agent".into(),
            permissions: asked.clone(),
            grants,
        };
        if !principal.covers_role(&wanted) {
            return Err(Error::Forbidden(
                "an agent cannot be given permissions its parent does not hold".into(),
            ));
        }
        Ok(asked)
    }

    /// Spawns a session: checks and carves its budget atomically, records
    /// it, and mints its token.
    pub async fn spawn(
        &self,
        principal: &Principal,
        request: SpawnRequest,
        meta: &RequestMeta,
    ) -> Result<Spawned> {
        principal.require("agents.spawn")?;
        if !matches!(
            principal.credential,
            Credential::Session { .. } | Credential::ApiKey { .. }
        ) {
            return Err(Error::Forbidden(
                "only a user (by session or API key) may spawn agents".into(),
            ));
        }
        validate_name(&request.name)?;
        request.budget.validate()?;
        let permissions = Self::permissions_for(principal, request.permissions)?;
        let settings = self.quota.settings();
        let ttl = match request.ttl_seconds {
            None => settings.agent_default_ttl.as_secs(),
            Some(t) if t >= 1 && t <= settings.agent_max_ttl.as_secs() => t,
            Some(_) => {
                return Err(swarmgate_core::ValidationError::new(
                    "ttl_seconds",
                    format!("must be between 1 and {}", settings.agent_max_ttl.as_secs()),
                )
                .into())
            }
        };
        let scopes = self.quota.scopes(principal);
        // Rates of the agent may not exceed its parent's.
        for scope in &scopes {
            if let Some((name, value)) = request.budget.limits().exceeds(&LimitSet {
                max_agents: None,
                tokens_per_day: None,
                ..scope.limits
            }) {
                // No wait makes it fit: a request to correct, not a limit hit.
                return Err(swarmgate_core::ValidationError::new(
                    format!("budget.{name}"),
                    format!(
                        "may not exceed the parent's limit of {value} ({})",
                        scope.name
                    ),
                )
                .into());
            }
        }

        let now = now_ms();
        let session_id = uuid::Uuid::new_v4().to_string();
        let agent_id = uuid::Uuid::new_v4().simple().to_string();
        let mut expires_ms = now + ttl as i64 * 1000;
        if let Credential::ApiKey { expires_at, .. } = &principal.credential {
            // An agent does not outlive the key that spawned it, even by
            // the verifier's clock leeway.
            let leeway = swarmgate_tokens::LEEWAY_SECS as i64;
            expires_ms = expires_ms.min((expires_at - leeway) * 1000);
            if expires_ms <= now {
                return Err(Error::Forbidden(
                    "this API key expires too soon to spawn an agent".into(),
                ));
            }
        }
        let idle = settings.agent_idle.as_millis() as i64;
        let max_agents = scopes
            .iter()
            .filter_map(|s| s.limits.max_agents.map(|m| (s.name.as_str(), m)))
            .min_by_key(|(_, m)| *m);
        let mut meters = vec![Meter::Slots {
            key: agents_key(&principal.user_id),
            limit: max_agents.map_or(MAX_LIMIT, |(_, m)| m),
            member: session_id.clone(),
            until_ms: (now + idle).min(expires_ms),
        }];
        let mut carved = Vec::new();
        let mut carved_from = Vec::new();
        let day_end = day_end(now);
        if let Some(tokens) = request.budget.tokens {
            for scope in &scopes {
                if let Some(limit) = scope.limits.tokens_per_day {
                    let (key, until_ms) = day_key(&scope.counter, now);
                    meters.push(Meter::Budget {
                        key: key.clone(),
                        limit,
                        cost: tokens,
                        until_ms,
                        resets: true,
                    });
                    carved.push(Carve {
                        key,
                        tokens,
                        until_ms,
                    });
                    carved_from.push((scope.name.clone(), limit));
                }
            }
        }
        match self.quota.state().quota_admit(&meters, now).await? {
            Admission::Admitted { .. } => {}
            Admission::Denied {
                index: 0,
                retry_after_ms,
            } => {
                // A slot frees when a session ends or idles out.
                let (scope, limit) = max_agents.unwrap_or(("", 0));
                return Err(refused(
                    scope,
                    "max_agents",
                    limit,
                    retry_after_ms,
                    format!("{limit} agent sessions are already live"),
                ));
            }
            Admission::Denied { index, .. } => {
                let (scope, limit) = &carved_from[index - 1];
                return Err(refused(
                    scope,
                    "tokens_per_day",
                    *limit,
                    Some(day_end - now),
                    format!(
                        "an allocation of {} tokens does not fit in what is left of today's budget",
                        request.budget.tokens.unwrap_or(0)
                    ),
                ));
            }
        }
        let session = AgentSession {
            id: session_id.clone(),
            agent_id: agent_id.clone(),
            parent_id: principal.user_id.clone(),
            key_id: match &principal.credential {
                Credential::ApiKey { key_id, .. } => Some(key_id.clone()),
                _ => None,
            },
            name: request.name,
            model: request.model,
            budget: request.budget,
            permissions,
            carved,
            created_at: now / 1000,
            expires_at: expires_ms / 1000,
            released_at: None,
            release_reason: None,
            tokens_used: None,
        };
        if let Err(e) = self.store.create_agent_session(&session).await {
            if let Err(back) = self.give_back(&session, 0).await {
                tracing::warn!(error = %back, session = %session.id, "allocation of a session never recorded not given back");
            }
            return Err(e.into());
        }
        let (key_id, key_limits, key_models) = match &principal.credential {
            Credential::ApiKey {
                key_id,
                limits,
                models,
                ..
            } => (Some(key_id.clone()), *limits, models.as_deref()),
            _ => (None, None, None),
        };
        let claims = AgentClaims {
            budget: session.budget,
            key_id,
            key_limits,
            // The session's model (already checked against the key's list),
            // else the key's list, else no list.
            models: match (&session.model, key_models) {
                (Some(model), _) => Some(vec![model.clone()]),
                (None, Some(list)) => Some(list.to_vec()),
                (None, None) => None,
            },
            carved_until: if session.carved.is_empty() {
                0
            } else {
                day_end
            },
        };
        let token = self.mint(principal, &session, claims)?;
        let env = self.env(principal, &session, &scopes, &token);
        self.identity
            .audit()
            .record(
                "agent_spawned",
                "success",
                Subject {
                    user_id: Some(&principal.user_id),
                    username: Some(&principal.username),
                },
                meta,
                json!({ "session_id": session.id, "agent_id": session.agent_id, "name": session.name, "budget": session.budget, "expires_at": session.expires_at }),
            )
            .await;
        Ok(Spawned {
            session,
            token,
            env,
        })
    }

    fn mint(
        &self,
        principal: &Principal,
        session: &AgentSession,
        agent: AgentClaims,
    ) -> Result<String> {
        let settings = self.identity.settings();
        let now = now_secs();
        let claims = AccessClaims {
            iss: settings.public_url.clone(),
            aud: settings.audience.clone(),
            sub: format!("{AGENT_SUBJECT_PREFIX}{}", session.agent_id),
            exp: session.expires_at,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session.id.clone(),
            role: principal.role.name.clone(),
            username: session.name.clone(),
            scope: Some(session.permissions.join(" ")),
            act: Some(Act {
                sub: principal.user_id.clone(),
            }),
            agent: Some(agent),
            ..Default::default()
        };
        Ok(self.identity.keys().current().issue(&claims)?)
    }

    /// The environment an orchestrator puts into the agent's process.
    fn env(
        &self,
        principal: &Principal,
        session: &AgentSession,
        scopes: &[super::Scope],
        token: &str,
    ) -> BTreeMap<&'static str, String> {
        let mut env = BTreeMap::new();
        env.insert("OPENAI_API_KEY", token.to_string());
        env.insert(
            "OPENAI_BASE_URL",
            format!("{}/v1", self.identity.settings().public_url),
        );
        env.insert("SWARM_AGENT_ID", session.agent_id.clone());
        env.insert("SWARM_SESSION_ID", session.id.clone());
        env.insert("SWARM_PARENT_ID", principal.user_id.clone());
        let rpm = scopes
            .iter()
            .filter_map(|s| s.limits.rpm)
            .chain(session.budget.rpm)
            .min();
        if let Some(rpm) = rpm {
            env.insert("SWARM_MAX_REQUESTS_PER_MINUTE", rpm.to_string());
        }
        if let Some(tokens) = session.budget.tokens {
            env.insert("SWARM_MAX_TOKENS_ALLOCATED", tokens.to_string());
        }
        env
    }

    /// Tokens the session has spent (its allocation counter).
    async fn tokens_used(&self, session: &AgentSession) -> Result<u64> {
        let meter = Meter::Budget {
            key: allocation_key(&session.id),
            limit: MAX_LIMIT,
            cost: 0,
            until_ms: 0,
            resets: false,
        };
        let readings = self.quota.state().quota_read(&[meter], now_ms()).await?;
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
                    .quota_held(&agents_key(&session.parent_id), &session.id, now_ms())
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
        if !own && !principal.allows("agents.manage", None) {
            return Err(Error::NotFound);
        }
        Ok(session)
    }

    pub async fn get(&self, principal: &Principal, id: &str) -> Result<SessionView> {
        self.view(self.visible(principal, id).await?).await
    }

    /// Own sessions, or everyone's with `all` (needs `agents.manage`).
    /// One page (at most `limit`) and whether more follow.
    pub async fn list(
        &self,
        principal: &Principal,
        all: bool,
        include_released: bool,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<(Vec<SessionView>, bool)> {
        if all {
            principal.require("agents.manage")?;
        } else if matches!(principal.credential, Credential::Agent { .. }) {
            // An agent sees itself (GET /agents/sessions/ID), not its siblings.
            return Err(Error::Forbidden(
                "an agent may not list its parent's sessions".into(),
            ));
        }
        let parent = (!all).then_some(principal.user_id.as_str());
        let limit = limit.clamp(1, MAX_PAGE);
        let (sessions, more) = page(
            self.store
                .list_agent_sessions(parent, include_released, before, limit + 1)
                .await?,
            limit,
        );
        let mut out = Vec::with_capacity(sessions.len());
        for s in sessions {
            out.push(self.view(s).await?);
        }
        Ok((out, more))
    }

    /// Keeps a session alive for another idle period.
    pub async fn heartbeat(&self, principal: &Principal, id: &str) -> Result<SessionView> {
        let session = self.visible(principal, id).await?;
        let now = now_ms();
        let idle = self.quota.settings().agent_idle.as_millis() as i64;
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
        let now = now_ms();
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
                Subject {
                    user_id: Some(&session.parent_id),
                    username: None,
                },
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
    async fn give_back(&self, session: &AgentSession, used: u64) -> Result<()> {
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
            .quota_settle(&adjustments, now_ms())
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
        let now = now_ms();
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

    /// The limit sets of a user, key or agent session and their standing,
    /// as `GET /quota` would show that caller; the first value names it.
    pub async fn info(&self, subject: InfoSubject) -> Result<(String, Vec<super::ScopeStatus>)> {
        let (who, principal) = self.principal_for(subject).await?;
        Ok((who, self.quota.status(&principal).await?))
    }

    /// The principal a user, key or agent session would be at a request,
    /// and a line naming it.
    async fn principal_for(&self, subject: InfoSubject) -> Result<(String, Principal)> {
        Ok(match subject {
            InfoSubject::User(name) => {
                let user = match self.store.get_user(&name).await {
                    Ok(user) => user,
                    Err(swarmgate_store::StoreError::NotFound) => {
                        self.identity.user_by_name(&name).await?
                    }
                    Err(e) => return Err(e.into()),
                };
                let credential = Credential::Session {
                    session_id: String::new(),
                };
                (
                    format!("user {} ({})", user.username, user.id),
                    self.identity.principal_of(&user, credential),
                )
            }
            InfoSubject::Key(id) => {
                let key = self.store.api_key(&id).await?.ok_or(Error::NotFound)?;
                let user = self.store.get_user(&key.user_id).await?;
                let credential = Credential::ApiKey {
                    key_id: key.id.clone(),
                    grants: Arc::new(GrantSet::default()),
                    models: None,
                    limits: key.limits,
                    expires_at: key.expires_at,
                };
                (
                    format!("key {} of {}", key.id, user.username),
                    self.identity.principal_of(&user, credential),
                )
            }
            InfoSubject::Agent(id) => {
                let session = self.store.get_agent_session(&id).await?;
                let user = self.store.get_user(&session.parent_id).await?;
                let credential = Credential::Agent {
                    session_id: session.id.clone(),
                    agent_id: session.agent_id.clone(),
                    grants: Arc::new(GrantSet::default()),
                    expires_at: session.expires_at * 1000,
                    claims: Arc::new(AgentClaims {
                        budget: session.budget,
                        carved_until: session.carved.first().map_or(0, |c| c.until_ms),
                        ..Default::default()
                    }),
                };
                (
                    format!(
                        "agent {} ({}) of {}",
                        session.name, session.agent_id, user.username
                    ),
                    self.identity.principal_of(&user, credential),
                )
            }
        })
    }

    /// For operators: live sessions, and how much of its allocation each
    /// has used.
    pub async fn health(&self, principal: &Principal) -> Result<serde_json::Value> {
        principal.require("agents.manage")?;
        let live = self.store.live_agent_sessions().await?;
        let mut sets = Vec::new();
        let mut near = Vec::new();
        for session in &live {
            let used = self.tokens_used(session).await?;
            if let Some(tokens) = session.budget.tokens {
                sets.push(json!({
                    "scope": format!("agent:{}", session.agent_id),
                    "tokens": { "limit": tokens, "used": used, "percent": percent(used, tokens) },
                }));
                if used as f64 >= NEAR_EXHAUSTION * tokens as f64 {
                    near.push(json!({ "session_id": session.id, "agent_id": session.agent_id, "tokens_used": used, "tokens": tokens }));
                }
            }
        }
        // The sets of the users those agents act for (their role's and
        // their own), then the shared ones of provider profiles.
        // A role's set is counted per user, so each item names whose it is.
        let mut parents: Vec<&str> = live.iter().map(|s| s.parent_id.as_str()).collect();
        parents.sort_unstable();
        parents.dedup();
        for parent in parents {
            let (_, user) = match self.principal_for(InfoSubject::User(parent.into())).await {
                Ok(found) => found,
                Err(Error::NotFound) => continue,
                Err(e) => return Err(e),
            };
            for set in self.quota.own_status(&user).await? {
                let mut item = set.usage_json();
                item["user_id"] = json!(parent);
                sets.push(item);
            }
        }
        for set in self.quota.profiles_status(principal).await? {
            sets.push(set.usage_json());
        }
        Ok(json!({
            "active_agents": live.len(),
            "limit_sets": sets,
            "near_exhaustion": near,
        }))
    }
}

/// A 429 for a spawn that does not fit now: its allocation in what is left
/// of the day, or one more session beside the live ones.
fn refused(
    scope: &str,
    limit: &'static str,
    value: u64,
    retry_after_ms: Option<i64>,
    detail: String,
) -> Error {
    Error::QuotaExceeded(Box::new(Denial {
        scope: scope.to_string(),
        limit,
        value,
        retry_after_ms,
        headers: RateHeaders::default(),
        detail: format!("; {detail}"),
    }))
}
