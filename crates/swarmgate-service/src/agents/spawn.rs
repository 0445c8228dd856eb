//! Spawning an agent session: within the parent's grants and rates, its
//! allocation carved out of the parent's day budgets in the same atomic
//! step that takes its agent slot, recorded, and given a token.

use std::collections::BTreeMap;

use serde_json::json;
use swarmgate_core::limits::{AgentBudget, MAX_LIMIT};
use swarmgate_core::permission::GrantSet;
use swarmgate_core::{AgentSession, Carve, LimitSet};
use swarmgate_state::{Admission, Meter};
use swarmgate_tokens::{AccessClaims, Act, AgentClaims, AGENT_SUBJECT_PREFIX};

use super::{refused, validate_name, Agents, SpawnRequest, Spawned};
use crate::audit::Subject;
use crate::authz::{Action, Delegate, Resource};
use crate::error::{Error, Result};
use crate::principal::{Credential, Principal, RequestMeta};
use crate::quota::{agents_key, day_end, day_key, Scope};

/// What a spawn carves out of the parent's day budgets, and the meters
/// that take it together with the agent slot.
struct Carving {
    meters: Vec<Meter>,
    carved: Vec<Carve>,
    /// (scope, limit) of each carve, in the order of `meters[1..]`.
    from: Vec<(String, u64)>,
    /// (scope, limit) of the tightest `max_agents`, if any.
    slot: (String, u64),
}

impl Agents {
    /// Spawns a session: checks and carves its budget atomically, records
    /// it, and mints its token.
    pub async fn spawn(
        &self,
        principal: &Principal,
        request: SpawnRequest,
        meta: &RequestMeta,
    ) -> Result<Spawned> {
        let spawn = Action::Permission("agents.spawn");
        self.authz
            .authorize(principal, spawn, Resource::Any)
            .await
            .require()?;
        let delegate = Action::Delegate(Delegate::Agent);
        self.authz
            .authorize(principal, delegate, Resource::Any)
            .await
            .require()?;
        validate_name(&request.name)?;
        request.budget.validate()?;
        let permissions = self.permissions_for(principal, request.permissions).await?;
        let ttl = self.ttl(request.ttl_seconds)?;
        let scopes = self.quota.scopes(principal);
        within_parent_rates(&request.budget, &scopes)?;

        let now = self.clock.now_ms();
        let session_id = swarmgate_core::random::uuid_string();
        let expires_ms = expiry(principal, now, ttl)?;
        let carving = self.admit(
            principal,
            &scopes,
            &session_id,
            &request.budget,
            now,
            expires_ms,
        );
        let carved = self.take(carving, &request.budget, now).await?;
        let session = AgentSession {
            id: session_id,
            agent_id: swarmgate_core::random::uuid_simple(),
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
            created_at: now.div_euclid(1000),
            expires_at: expires_ms.div_euclid(1000),
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
        let token = self.mint(principal, &session, agent_claims(principal, &session, now))?;
        let env = self.env(principal, &session, &scopes, &token);
        self.identity
            .audit()
            .record(
                "agent_spawned",
                "success",
                Subject::principal(principal),
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

    /// The permissions the agent is given: those asked for (each within
    /// the caller's), or everything the caller's credential holds.
    async fn permissions_for(
        &self,
        principal: &Principal,
        asked: Option<Vec<String>>,
    ) -> Result<Vec<String>> {
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
        self.authz
            .authorize(
                principal,
                Action::Delegate(Delegate::Agent),
                Resource::Grants(&grants),
            )
            .await
            .require()?;
        Ok(asked)
    }

    /// The session's lifetime in seconds: asked for, or the default.
    fn ttl(&self, asked: Option<u64>) -> Result<u64> {
        let settings = self.quota.settings();
        let max = settings.agent_max_ttl.as_secs();
        match asked {
            None => Ok(settings.agent_default_ttl.as_secs()),
            Some(t) if (1..=max).contains(&t) => Ok(t),
            Some(_) => Err(swarmgate_core::ValidationError::new(
                "ttl_seconds",
                format!("must be between 1 and {max}"),
            )
            .into()),
        }
    }

    /// The meters a spawn must pass all at once: one more agent slot
    /// (within `max_agents`), and the allocation out of each day budget.
    fn admit(
        &self,
        principal: &Principal,
        scopes: &[Scope],
        session_id: &str,
        budget: &AgentBudget,
        now: i64,
        expires_ms: i64,
    ) -> Carving {
        let idle = i64::try_from(self.quota.settings().agent_idle.as_millis()).unwrap_or(i64::MAX);
        let max_agents = max_agents(scopes);
        let mut carving = Carving {
            meters: vec![Meter::Slots {
                key: agents_key(&principal.user_id),
                limit: max_agents.map_or(MAX_LIMIT, |(_, m)| m),
                member: session_id.to_string(),
                until_ms: now.saturating_add(idle).min(expires_ms),
            }],
            carved: Vec::new(),
            from: Vec::new(),
            slot: max_agents
                .map(|(scope, limit)| (scope.to_string(), limit))
                .unwrap_or_default(),
        };
        let Some(tokens) = budget.tokens else {
            return carving;
        };
        for scope in scopes {
            if let Some(limit) = scope.limits.tokens_per_day {
                let (key, until_ms) = day_key(&scope.counter, now);
                carving.meters.push(Meter::Budget {
                    key: key.clone(),
                    limit,
                    cost: tokens,
                    until_ms,
                    resets: true,
                });
                carving.carved.push(Carve {
                    key,
                    tokens,
                    until_ms,
                });
                carving.from.push((scope.name.clone(), limit));
            }
        }
        carving
    }

    /// Takes the slot and the allocation, all or none; a 429 naming the
    /// limit when they do not fit.
    async fn take(&self, carving: Carving, budget: &AgentBudget, now: i64) -> Result<Vec<Carve>> {
        match self.quota.state().quota_admit(&carving.meters, now).await? {
            Admission::Admitted { .. } => Ok(carving.carved),
            Admission::Denied {
                index: 0,
                retry_after_ms,
            } => {
                // A slot frees when a session ends or idles out.
                let (scope, limit) = carving.slot;
                Err(refused(
                    &scope,
                    "max_agents",
                    limit,
                    retry_after_ms,
                    format!("{limit} agent sessions are already live"),
                ))
            }
            Admission::Denied { index, .. } => {
                let (scope, limit) = carving.from.get(index - 1).cloned().unwrap_or_default();
                Err(refused(
                    &scope,
                    "tokens_per_day",
                    limit,
                    Some(day_end(now) - now),
                    format!(
                        "an allocation of {} tokens does not fit in what is left of today's budget",
                        budget.tokens.unwrap_or(0)
                    ),
                ))
            }
        }
    }

    fn mint(
        &self,
        principal: &Principal,
        session: &AgentSession,
        agent: AgentClaims,
    ) -> Result<String> {
        let settings = self.identity.settings();
        let now = self.clock.now_secs();
        let claims = AccessClaims {
            iss: settings.public_url.clone(),
            aud: settings.audience.clone(),
            sub: format!("{AGENT_SUBJECT_PREFIX}{}", session.agent_id),
            exp: session.expires_at,
            iat: now,
            nbf: now,
            jti: swarmgate_core::random::uuid_string(),
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
        scopes: &[Scope],
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
}

/// Rates of the agent may not exceed its parent's: no wait makes them fit,
/// so this is a request to correct (422), not a limit hit.
fn within_parent_rates(budget: &AgentBudget, scopes: &[Scope]) -> Result<()> {
    for scope in scopes {
        let bound = LimitSet {
            max_agents: None,
            tokens_per_day: None,
            ..scope.limits
        };
        if let Some((name, value)) = budget.limits().exceeds(&bound) {
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
    Ok(())
}

/// When the session ends (unix ms): its lifetime, but never after the key
/// that spawned it, even by the verifier's clock leeway.
fn expiry(principal: &Principal, now: i64, ttl_secs: u64) -> Result<i64> {
    let ttl_ms = i64::try_from(ttl_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let mut expires_ms = now.saturating_add(ttl_ms);
    if let Credential::ApiKey { expires_at, .. } = &principal.credential {
        let leeway = swarmgate_tokens::LEEWAY_SECS as i64;
        expires_ms = expires_ms.min((expires_at - leeway) * 1000);
        if expires_ms <= now {
            return Err(Error::Forbidden(
                "this API key expires too soon to spawn an agent".into(),
            ));
        }
    }
    Ok(expires_ms)
}

/// The tightest `max_agents` of the parent's sets, and whose it is.
fn max_agents(scopes: &[Scope]) -> Option<(&str, u64)> {
    scopes
        .iter()
        .filter_map(|s| s.limits.max_agents.map(|m| (s.name.as_str(), m)))
        .min_by_key(|(_, m)| *m)
}

/// What the agent's token carries besides its own budget: the key it was
/// spawned with (and that key's limits) and the models it may call.
fn agent_claims(principal: &Principal, session: &AgentSession, now: i64) -> AgentClaims {
    let (key_id, key_limits, key_models) = match &principal.credential {
        Credential::ApiKey {
            key_id,
            limits,
            models,
            ..
        } => (Some(key_id.clone()), *limits, models.as_deref()),
        _ => (None, None, None),
    };
    AgentClaims {
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
            day_end(now)
        },
    }
}
