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

mod lifecycle;
mod report;
mod spawn;

pub use report::{LimitSetUsage, NearExhaustion, QuotaHealth};

use std::collections::BTreeMap;
use std::sync::Arc;

use swarmgate_core::limits::AgentBudget;
use swarmgate_core::AgentSession;
use swarmgate_store::Store;

use crate::authz::Authz;
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::quota::{Denial, Quota, RateHeaders};

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

pub struct Agents {
    identity: Arc<Identity>,
    quota: Arc<Quota>,
    authz: Arc<Authz>,
    store: Store,
    clock: SharedClock,
    /// When this process started (unix ms): with in-process state, what
    /// was live before it is gone.
    started_ms: i64,
}

impl Agents {
    pub fn new(identity: Arc<Identity>, quota: Arc<Quota>) -> Self {
        let store = identity.store().clone();
        let clock = identity.clock().clone();
        Self {
            authz: identity.authz.clone(),
            identity,
            quota,
            store,
            started_ms: clock.now_ms(),
            clock,
        }
    }
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
