//! What operators read about quotas: one caller's standing (`swarmgate
//! quota info`) and the health of every live agent's allocation and of
//! the limit sets behind them (`GET /quota/health`).

use std::sync::Arc;

use swarmgate_core::permission::GrantSet;
use swarmgate_tokens::AgentClaims;

use super::{Agents, InfoSubject};
use crate::error::{Error, Result};
use crate::principal::{Credential, Principal};
use crate::quota::ScopeStatus;

/// At and above this share of its allocation a session is "near
/// exhaustion" in `/quota/health`.
const NEAR_EXHAUSTION: f64 = 0.9;

/// `GET /quota/health`: the live agents and the limit sets they draw on.
#[derive(Debug, Clone)]
pub struct QuotaHealth {
    pub active_agents: usize,
    /// Each live agent's allocation, then its parents' sets (with the
    /// parent's id: a role's set is counted per user), then the provider
    /// profiles'.
    pub limit_sets: Vec<LimitSetUsage>,
    pub near_exhaustion: Vec<NearExhaustion>,
}

/// One limit set: for each of its limits, the limit and what is used.
#[derive(Debug, Clone)]
pub struct LimitSetUsage {
    pub scope: String,
    pub user_id: Option<String>,
    /// (limit name, limit, used)
    pub limits: Vec<(&'static str, u64, u64)>,
}

impl LimitSetUsage {
    fn of(status: ScopeStatus, user_id: Option<&str>) -> Self {
        Self {
            scope: status.scope,
            user_id: user_id.map(str::to_string),
            limits: status
                .limits
                .into_iter()
                .map(|(name, limit, reading)| (name, limit, reading.used))
                .collect(),
        }
    }
}

/// A session that has used 90% of its allocation or more.
#[derive(Debug, Clone)]
pub struct NearExhaustion {
    pub session_id: String,
    pub agent_id: String,
    pub tokens_used: u64,
    pub tokens: u64,
}

impl Agents {
    /// The limit sets of a user, key or agent session and their standing,
    /// as `GET /quota` would show that caller; the first value names it.
    pub async fn info(&self, subject: InfoSubject) -> Result<(String, Vec<ScopeStatus>)> {
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
    pub async fn health(&self, principal: &Principal) -> Result<QuotaHealth> {
        self.authz.require(principal, "agents.manage").await?;
        let live = self.store.live_agent_sessions().await?;
        let mut sets = Vec::new();
        let mut near = Vec::new();
        for session in &live {
            let used = self.tokens_used(session).await?;
            if let Some(tokens) = session.budget.tokens {
                sets.push(LimitSetUsage {
                    scope: format!("agent:{}", session.agent_id),
                    user_id: None,
                    limits: vec![("tokens", tokens, used)],
                });
                if used as f64 >= NEAR_EXHAUSTION * tokens as f64 {
                    near.push(NearExhaustion {
                        session_id: session.id.clone(),
                        agent_id: session.agent_id.clone(),
                        tokens_used: used,
                        tokens,
                    });
                }
            }
        }
        // The sets of the users those agents act for (their role's and
        // their own), then the shared ones of provider profiles.
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
                sets.push(LimitSetUsage::of(set, Some(parent)));
            }
        }
        for set in self.quota.profiles_status(principal).await? {
            sets.push(LimitSetUsage::of(set, None));
        }
        Ok(QuotaHealth {
            active_agents: live.len(),
            limit_sets: sets,
            near_exhaustion: near,
        })
    }
}
