//! The quota coordinator: which limit sets apply to a caller (its role's,
//! its user's, its key's, its agent session's), turning them into meters
//! of the shared state, and the [`Ticket`] that holds what a request
//! reserved until it is settled.
//!
//! Counting is per caller: a role's limits are the default of each of its
//! users, counted for that user alone (`role:NAME` in responses).
//!
//! Every request through the gateway (proxied routes and `/v1`) is checked
//! against `rpm` and `max_concurrent`; LLM calls also reserve their worst
//! case against `tpm`, `tokens_per_day` and an agent's allocation, and are
//! settled to their real usage when the response ends.

mod admit;
mod scopes;
mod status;
mod ticket;

pub use admit::{Denial, RateHeaders};
pub use status::ScopeStatus;
pub use ticket::Ticket;

use std::sync::Arc;

use swarmgate_core::LimitSet;
use swarmgate_state::SharedState;

use crate::clock::SharedClock;
use crate::settings::QuotaSettings;

const MINUTE_MS: i64 = 60_000;
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The shared-state key holding the live agent sessions of a user (a slot
/// set: its size is checked against `max_agents`, each member's hold is
/// the session's idle deadline).
pub fn agents_key(user_id: &str) -> String {
    format!("agents:{user_id}")
}

/// The key of an agent session's token allocation.
pub(crate) fn allocation_key(session_id: &str) -> String {
    format!("agent:{session_id}:alloc")
}

/// The end (unix ms) of the UTC day `now` is in.
pub(crate) fn day_end(now: i64) -> i64 {
    (now.div_euclid(DAY_MS) + 1) * DAY_MS
}

/// The key of a day budget and the end of its day.
pub(crate) fn day_key(counter: &str, now: i64) -> (String, i64) {
    let day = now.div_euclid(DAY_MS);
    (format!("{counter}:day:{day}"), day_end(now))
}

/// One limit set that applies to a caller.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `role:NAME`, `user:ID`, `key:ID` or `agent:ID`.
    pub name: String,
    /// Prefix of this caller's counters under this set.
    pub(crate) counter: String,
    pub limits: LimitSet,
    /// An agent's token allocation (agent scope only).
    pub tokens: Option<u64>,
    /// A provider profile's set, shared by all its traffic: no agent
    /// allocation was carved from it, so it always applies.
    shared: bool,
}

impl Scope {
    /// A set of one caller whose counters are kept under its own name.
    fn counted_as_named(name: String, limits: LimitSet) -> Self {
        Self {
            counter: name.clone(),
            name,
            limits,
            tokens: None,
            shared: false,
        }
    }
}

/// What a request is about to spend.
#[derive(Debug, Clone, Copy)]
pub enum Call {
    /// A proxied request: rates and concurrency only.
    Request,
    /// An LLM call reserving its worst case in tokens.
    Llm { reserve: u64 },
}

/// What a meter stands for, to name it in a refusal and in headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rpm,
    Tpm,
    Day,
    Concurrent,
    Allocation,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rpm => "rpm",
            Kind::Tpm => "tpm",
            Kind::Day => "tokens_per_day",
            Kind::Concurrent => "max_concurrent",
            Kind::Allocation => "tokens",
        }
    }

    fn is_tokens(self) -> bool {
        matches!(self, Kind::Tpm | Kind::Day | Kind::Allocation)
    }
}

pub struct Quota {
    state: SharedState,
    settings: Arc<QuotaSettings>,
    clock: SharedClock,
    /// Limit sets of provider profiles, shared by all their traffic.
    profiles: Vec<Scope>,
}

impl Quota {
    /// `profiles`: (name, limits) of each provider profile.
    pub fn new(
        state: SharedState,
        settings: Arc<QuotaSettings>,
        profiles: Vec<(String, LimitSet)>,
        clock: SharedClock,
    ) -> Self {
        let profiles = profiles
            .into_iter()
            .filter(|(_, limits)| !limits.is_empty())
            .map(|(name, limits)| Scope {
                name: format!("profile:{name}"),
                counter: format!("profile:{name}"),
                limits,
                tokens: None,
                shared: true,
            })
            .collect();
        Self {
            state,
            settings,
            clock,
            profiles,
        }
    }

    pub fn settings(&self) -> &QuotaSettings {
        &self.settings
    }

    pub(crate) fn state(&self) -> &SharedState {
        &self.state
    }
}
