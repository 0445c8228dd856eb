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

pub mod agents;

use std::sync::Arc;
use std::time::Instant;

use swarmgate_core::{LimitSet, OnLimit};
use swarmgate_state::{Adjust, Admission, Meter, Reading, SharedState, StateError};

use crate::clock::now_ms;
use crate::config::QuotaSettings;
use crate::error::{Error, Result};
use crate::identity::{Credential, Principal};

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

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
    counter: String,
    pub limits: LimitSet,
    /// An agent's token allocation (agent scope only).
    pub tokens: Option<u64>,
    /// A provider profile's set, shared by all its traffic: no agent
    /// allocation was carved from it, so it always applies.
    shared: bool,
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

/// OpenAI's rate-limit headers: the tightest request and token limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub requests: Option<(u64, u64)>,
    pub tokens: Option<(u64, u64)>,
}

impl RateHeaders {
    fn from_readings(kinds: &[(usize, Kind)], meters: &[Meter], remaining: &[u64]) -> Self {
        let mut out = RateHeaders::default();
        for (((_, kind), meter), left) in kinds.iter().zip(meters).zip(remaining) {
            if meter.limit() >= swarmgate_core::limits::MAX_LIMIT {
                // An agent's usage counter without an allocation: no limit.
                continue;
            }
            let slot = match kind {
                Kind::Rpm => &mut out.requests,
                k if k.is_tokens() => &mut out.tokens,
                _ => continue,
            };
            if slot.is_none_or(|(_, r)| *left < r) {
                *slot = Some((meter.limit(), *left));
            }
        }
        out
    }

    pub fn apply(&self, headers: &mut axum::http::HeaderMap) {
        let pairs = [
            (
                self.requests,
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
            ),
            (
                self.tokens,
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
            ),
        ];
        for (value, limit_name, remaining_name) in pairs {
            if let Some((limit, remaining)) = value {
                headers.insert(limit_name, limit.into());
                headers.insert(remaining_name, remaining.into());
            }
        }
    }
}

/// Why a request was refused (a 429).
#[derive(Debug, Clone)]
pub struct Denial {
    pub scope: String,
    pub limit: &'static str,
    pub value: u64,
    /// `None` when waiting cannot help.
    pub retry_after_ms: Option<i64>,
    pub headers: RateHeaders,
    pub detail: String,
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

pub struct Quota {
    state: SharedState,
    settings: Arc<QuotaSettings>,
    /// Limit sets of provider profiles, shared by all their traffic.
    profiles: Vec<Scope>,
}

impl Quota {
    /// `profiles`: (name, limits) of each provider profile.
    pub fn new(
        state: SharedState,
        settings: Arc<QuotaSettings>,
        profiles: Vec<(String, LimitSet)>,
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
            profiles,
        }
    }

    pub fn settings(&self) -> &QuotaSettings {
        &self.settings
    }

    pub(crate) fn state(&self) -> &SharedState {
        &self.state
    }

    /// Every limit set that applies to `principal`, most general first.
    /// This and [`meters`](Self::meters) run for every limited request, so
    /// their keys are joined with `concat`: `format!` cost several times
    /// as much.
    pub fn scopes(&self, principal: &Principal) -> Vec<Scope> {
        let mut scopes = Vec::new();
        let user_based = matches!(
            principal.credential,
            Credential::Session { .. } | Credential::ApiKey { .. } | Credential::Agent { .. }
        );
        if !user_based {
            return scopes;
        }
        let user = &principal.user_id;
        if let Some(set) = self.settings.role_limits.get(&principal.role.name) {
            scopes.push(Scope {
                name: ["role:", &principal.role.name].concat(),
                counter: ["role:", &principal.role.name, ":", user].concat(),
                limits: *set,
                tokens: None,
                shared: false,
            });
        }
        if let Some(set) = principal.user_limits.filter(|l| !l.is_empty()) {
            scopes.push(Scope::counted_as_named(["user:", user].concat(), set));
        }
        // A key's limits bind it, and every agent it spawned.
        let key = match &principal.credential {
            Credential::ApiKey { key_id, limits, .. } => limits.map(|set| (key_id.as_str(), set)),
            Credential::Agent { claims, .. } => claims.key_id.as_deref().zip(claims.key_limits),
            _ => None,
        };
        if let Some((key_id, set)) = key.filter(|(_, set)| !set.is_empty()) {
            scopes.push(Scope::counted_as_named(["key:", key_id].concat(), set));
        }
        if let Credential::Agent {
            session_id,
            agent_id,
            claims,
            ..
        } = &principal.credential
        {
            scopes.push(Scope {
                name: format!("agent:{agent_id}"),
                counter: format!("agent:{session_id}"),
                limits: claims.budget.limits(),
                tokens: claims.budget.tokens,
                shared: false,
            });
        }
        scopes
    }

    /// The meters of `call` for `scopes`, each tagged with its scope index
    /// and kind.
    fn meters(
        &self,
        principal: &Principal,
        scopes: &[Scope],
        call: Call,
        member: &str,
        now: i64,
    ) -> (Vec<Meter>, Vec<(usize, Kind)>) {
        let mut meters = Vec::new();
        let mut kinds = Vec::new();
        // An agent with an allocation spends it, not its parent's day
        // budget, which it was carved from at spawn; from the next day on,
        // that day's budget applies as well (no banking across days).
        let allocated = match &principal.credential {
            Credential::Agent { claims, .. } => {
                claims.budget.tokens.is_some() && now < claims.carved_until
            }
            _ => false,
        };
        let lease = self.settings.slot_lease.as_millis() as i64;
        for (i, scope) in scopes.iter().enumerate() {
            let l = &scope.limits;
            if let Some(limit) = l.rpm {
                meters.push(Meter::Rate {
                    key: [&scope.counter, ":rpm"].concat(),
                    limit,
                    period_ms: MINUTE_MS,
                    cost: 1,
                });
                kinds.push((i, Kind::Rpm));
            }
            if let Call::Llm { reserve } = call {
                if let Some(limit) = l.tpm {
                    meters.push(Meter::Rate {
                        key: [&scope.counter, ":tpm"].concat(),
                        limit,
                        period_ms: MINUTE_MS,
                        cost: reserve,
                    });
                    kinds.push((i, Kind::Tpm));
                }
                if let Some(limit) = l.tokens_per_day.filter(|_| !allocated || scope.shared) {
                    let (key, until_ms) = day_key(&scope.counter, now);
                    meters.push(Meter::Budget {
                        key,
                        limit,
                        cost: reserve,
                        until_ms,
                        resets: true,
                    });
                    kinds.push((i, Kind::Day));
                }
                // Always metered for an agent, so its usage so far is known
                // even without an allocation.
                if let (
                    true,
                    Credential::Agent {
                        session_id,
                        expires_at,
                        ..
                    },
                ) = (scope.name.starts_with("agent:"), &principal.credential)
                {
                    let limit = scope.tokens.unwrap_or(swarmgate_core::limits::MAX_LIMIT);
                    meters.push(Meter::Budget {
                        key: allocation_key(session_id),
                        limit,
                        cost: reserve,
                        // Kept past the session's end, so a late release
                        // still reads what was spent.
                        until_ms: *expires_at + DAY_MS,
                        resets: false,
                    });
                    kinds.push((i, Kind::Allocation));
                }
            }
            if let Some(limit) = l.max_concurrent {
                meters.push(Meter::Slots {
                    key: [&scope.counter, ":conc"].concat(),
                    limit,
                    member: member.to_string(),
                    until_ms: now + lease,
                });
                kinds.push((i, Kind::Concurrent));
            }
        }
        (meters, kinds)
    }

    /// Checks and charges every limit that applies, all or none; waits for
    /// capacity when the refusing set says `on_limit = "queue"`.
    pub async fn admit(&self, principal: &Principal, call: Call) -> Result<Ticket> {
        self.admit_scopes(principal, call, self.scopes(principal))
            .await
    }

    /// [`admit`](Self::admit) for a call through the provider profile
    /// `profile`, whose limits apply to all its traffic together.
    pub async fn admit_through(
        &self,
        principal: &Principal,
        call: Call,
        profile: &str,
    ) -> Result<Ticket> {
        let mut scopes = self.scopes(principal);
        scopes.extend(
            self.profiles
                .iter()
                .filter(|p| p.name.strip_prefix("profile:") == Some(profile))
                .cloned(),
        );
        self.admit_scopes(principal, call, scopes).await
    }

    async fn admit_scopes(
        &self,
        principal: &Principal,
        call: Call,
        scopes: Vec<Scope>,
    ) -> Result<Ticket> {
        if scopes.is_empty() {
            return Ok(Ticket::unmetered());
        }
        // A slot holder's name, needed only where a slot is taken.
        let member = if scopes.iter().any(|s| s.limits.max_concurrent.is_some()) {
            crate::ids::next_string()
        } else {
            String::new()
        };
        let deadline = Instant::now() + self.settings.queue_max_wait;
        loop {
            let now = now_ms();
            let (meters, kinds) = self.meters(principal, &scopes, call, &member, now);
            if meters.is_empty() {
                return Ok(Ticket::unmetered());
            }
            let admission = match self.state.quota_admit(&meters, now).await {
                Ok(admission) => admission,
                Err(e) => return self.backend_failed(e).map(|()| Ticket::unmetered()),
            };
            let (index, retry_after_ms) = match admission {
                Admission::Admitted { remaining } => {
                    let headers = RateHeaders::from_readings(&kinds, &meters, &remaining);
                    return Ok(Ticket::new(
                        self.state.clone(),
                        meters,
                        kinds.into_iter().map(|(_, k)| k).collect(),
                        call,
                        headers,
                    ));
                }
                Admission::Denied {
                    index,
                    retry_after_ms,
                } => (index, retry_after_ms),
            };
            let (scope_index, kind) = kinds[index];
            let scope = &scopes[scope_index];
            if let (Some(wait), OnLimit::Queue) = (retry_after_ms, scope.limits.on_limit) {
                let left = deadline.saturating_duration_since(Instant::now());
                // A wait known to be longer than the longest allowed is not
                // worth starting; a slot's is unknown (any response may end).
                let hopeless = kind != Kind::Concurrent && wait as u128 > left.as_millis();
                if !left.is_zero() && !hopeless {
                    // A slot frees when some response ends, which no clock
                    // predicts: look again soon.
                    let wait = if kind == Kind::Concurrent {
                        wait.min(50)
                    } else {
                        wait
                    };
                    let wait = std::time::Duration::from_millis(wait.max(10) as u64);
                    tokio::time::sleep(wait.min(left)).await;
                    continue;
                }
            }
            metrics::counter!("swarmgate_quota_rejected_total", "limit" => kind.name())
                .increment(1);
            let readings = self
                .state
                .quota_read(&meters, now)
                .await
                .unwrap_or_default();
            // What is really left now (a call may be refused for a worst
            // case larger than what is left, which is then not zero).
            let remaining: Vec<u64> = readings.iter().map(|r| r.remaining).collect();
            let headers = RateHeaders::from_readings(&kinds, &meters, &remaining);
            let left = readings.get(index).map(|r| r.remaining);
            let cost = match (&meters[index], call) {
                (Meter::Rate { cost, .. } | Meter::Budget { cost, .. }, Call::Llm { .. }) => {
                    Some(*cost)
                }
                _ => None,
            };
            return Err(Error::QuotaExceeded(Box::new(Denial {
                scope: scope.name.clone(),
                limit: kind.name(),
                value: meters[index].limit(),
                retry_after_ms,
                headers,
                detail: match (retry_after_ms, cost, left) {
                    (Some(_), Some(cost), Some(left)) => format!(
                        "; this call reserves up to {cost} tokens and {left} are left now"
                    ),
                    (Some(_), _, _) => String::new(),
                    (None, Some(cost), _) if kind != Kind::Allocation => format!(
                        "; this call reserves {cost} tokens, more than the limit allows at all (lower max_tokens)"
                    ),
                    (None, Some(cost), Some(left)) => format!(
                        "; this call reserves up to {cost} tokens and the allocation has {left} left (lower max_tokens)"
                    ),
                    (None, _, _) => "; the allocation is spent".into(),
                },
            })));
        }
    }

    /// A quota backend that cannot be reached: 503, or (configured open)
    /// let the request through unmetered and say so in the log.
    fn backend_failed(&self, e: StateError) -> Result<()> {
        metrics::counter!("swarmgate_quota_backend_errors_total").increment(1);
        if self.settings.fail_open {
            tracing::warn!(error = %e, "quota state unreachable; request admitted unmetered (limits.on_backend_error = \"open\")");
            Ok(())
        } else {
            Err(e.into())
        }
    }

    /// Every limit set that applies to `principal`, with what it has used
    /// and has left (for `GET /quota`).
    pub async fn status(&self, principal: &Principal) -> Result<Vec<ScopeStatus>> {
        let mut scopes = self.scopes(principal);
        scopes.extend(self.profiles.iter().cloned());
        self.standing(principal, &scopes).await
    }

    /// [`status`](Self::status) of the caller's own sets, without the
    /// provider profiles'.
    pub async fn own_status(&self, principal: &Principal) -> Result<Vec<ScopeStatus>> {
        self.standing(principal, &self.scopes(principal)).await
    }

    /// The provider profiles' limit sets and their standing.
    pub async fn profiles_status(&self, principal: &Principal) -> Result<Vec<ScopeStatus>> {
        self.standing(principal, &self.profiles).await
    }

    async fn standing(&self, principal: &Principal, scopes: &[Scope]) -> Result<Vec<ScopeStatus>> {
        let now = now_ms();
        let mut out = Vec::with_capacity(scopes.len());
        for scope in scopes {
            let l = &scope.limits;
            let mut meters = Vec::new();
            let mut names = Vec::new();
            let mut push = |name: &'static str, meter: Meter| {
                names.push(name);
                meters.push(meter);
            };
            if let Some(limit) = l.rpm {
                push("rpm", rate(&scope.counter, "rpm", limit));
            }
            if let Some(limit) = l.tpm {
                push("tpm", rate(&scope.counter, "tpm", limit));
            }
            if let Some(limit) = l.tokens_per_day {
                let (key, until_ms) = day_key(&scope.counter, now);
                push("tokens_per_day", budget(key, limit, until_ms));
            }
            if let Some(limit) = l.max_concurrent {
                push(
                    "max_concurrent",
                    slots(format!("{}:conc", scope.counter), limit),
                );
            }
            if let Some(limit) = l.max_agents {
                push("max_agents", slots(agents_key(&principal.user_id), limit));
            }
            if let (Some(limit), Credential::Agent { session_id, .. }) =
                (scope.tokens, &principal.credential)
            {
                push(
                    "tokens",
                    budget(allocation_key(session_id), limit, now + DAY_MS),
                );
            }
            let readings = self.state.quota_read(&meters, now).await?;
            out.push(ScopeStatus {
                scope: scope.name.clone(),
                limits: names
                    .into_iter()
                    .zip(meters.iter().map(Meter::limit))
                    .zip(readings)
                    .map(|((name, limit), reading)| (name, limit, reading))
                    .collect(),
            });
        }
        Ok(out)
    }
}

fn rate(counter: &str, what: &str, limit: u64) -> Meter {
    Meter::Rate {
        key: format!("{counter}:{what}"),
        limit,
        period_ms: MINUTE_MS,
        cost: 0,
    }
}

fn budget(key: String, limit: u64, until_ms: i64) -> Meter {
    Meter::Budget {
        key,
        limit,
        cost: 0,
        until_ms,
        resets: true,
    }
}

fn slots(key: String, limit: u64) -> Meter {
    Meter::Slots {
        key,
        limit,
        member: String::new(),
        until_ms: 0,
    }
}

/// One limit set's standing.
#[derive(Debug, Clone)]
pub struct ScopeStatus {
    pub scope: String,
    /// (limit name, limit, reading)
    pub limits: Vec<(&'static str, u64, Reading)>,
}

impl ScopeStatus {
    /// `{scope, NAME: {limit, used, remaining}}`, as `GET /quota` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        self.json_with(|limit, r| {
            serde_json::json!({ "limit": limit, "used": r.used, "remaining": r.remaining })
        })
    }

    /// `{scope, NAME: {limit, used, percent}}`, for operators.
    pub fn usage_json(&self) -> serde_json::Value {
        self.json_with(|limit, r| {
            serde_json::json!({ "limit": limit, "used": r.used, "percent": crate::monitoring::percent(r.used, limit) })
        })
    }

    fn json_with(&self, each: impl Fn(u64, &Reading) -> serde_json::Value) -> serde_json::Value {
        let mut item = serde_json::Map::new();
        item.insert("scope".into(), self.scope.clone().into());
        for (name, limit, reading) in &self.limits {
            item.insert((*name).into(), each(*limit, reading));
        }
        serde_json::Value::Object(item)
    }
}

/// What an admitted request holds: concurrency slots and token
/// reservations. Settle it with the tokens used; if it is dropped
/// unsettled (the call failed before any answer, or the client went away
/// before the head), slots are released and reservations given back.
pub struct Ticket {
    inner: Option<Held>,
    pub headers: RateHeaders,
}

struct Held {
    state: SharedState,
    meters: Vec<Meter>,
    kinds: Vec<Kind>,
    reserved: u64,
}

impl Ticket {
    fn unmetered() -> Self {
        Self {
            inner: None,
            headers: RateHeaders::default(),
        }
    }

    fn new(
        state: SharedState,
        meters: Vec<Meter>,
        kinds: Vec<Kind>,
        call: Call,
        headers: RateHeaders,
    ) -> Self {
        let reserved = match call {
            Call::Request => 0,
            Call::Llm { reserve } => reserve,
        };
        Self {
            inner: Some(Held {
                state,
                meters,
                kinds,
                reserved,
            }),
            headers,
        }
    }

    /// Whether anything is held (a caller with no limits holds nothing).
    pub fn is_metered(&self) -> bool {
        self.inner.is_some()
    }

    /// Releases the slots and settles token reservations to `used` (`None`:
    /// nothing was produced, everything goes back).
    pub fn settle(mut self, used: Option<u64>) {
        if let Some(held) = self.inner.take() {
            held.settle(used);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(held) = self.inner.take() {
            held.settle(None);
        }
    }
}

impl Held {
    fn adjustments(&self, used: Option<u64>) -> Vec<Adjust> {
        let used = used.unwrap_or(0).min(swarmgate_core::limits::MAX_LIMIT);
        let refund = self.reserved as i64 - used as i64;
        self.meters
            .iter()
            .zip(&self.kinds)
            .filter_map(|(meter, kind)| match meter {
                Meter::Rate {
                    key,
                    limit,
                    period_ms,
                    ..
                } if kind.is_tokens() && refund != 0 => Some(Adjust::Rate {
                    key: key.clone(),
                    limit: *limit,
                    period_ms: *period_ms,
                    refund,
                }),
                Meter::Budget { key, until_ms, .. } if refund != 0 => Some(Adjust::Budget {
                    key: key.clone(),
                    refund,
                    until_ms: *until_ms,
                }),
                Meter::Slots { key, member, .. } => Some(Adjust::Release {
                    key: key.clone(),
                    member: member.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Settles in the background: this runs where a response body ends or
    /// is dropped, which cannot wait. A settlement that fails (Redis down)
    /// is logged; slots then lapse at their lease.
    fn settle(self, used: Option<u64>) {
        let adjustments = self.adjustments(used);
        if adjustments.is_empty() {
            return;
        }
        let state = self.state;
        if state.quota_settle_local(&adjustments, now_ms()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = state.quota_settle(&adjustments, now_ms()).await {
                tracing::warn!(error = %e, "quota settlement failed; slots lapse at their lease");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use swarmgate_core::permission::GrantSet;
    use swarmgate_core::roles::Role;

    use super::*;

    fn settings(fail_open: bool) -> Arc<QuotaSettings> {
        Arc::new(QuotaSettings {
            role_limits: Default::default(),
            default_max_tokens: 100,
            queue_max_wait: Duration::ZERO,
            slot_lease: Duration::from_secs(60),
            fail_open,
            agent_idle: Duration::from_secs(60),
            agent_default_ttl: Duration::from_secs(60),
            agent_max_ttl: Duration::from_secs(60),
        })
    }

    fn limited_user() -> Principal {
        Principal {
            user_id: "u1".into(),
            username: "u1".into(),
            role: Arc::new(Role {
                name: "user".into(),
                permissions: vec![],
                grants: GrantSet::parse::<&str>(&[]).unwrap(),
            }),
            credential: Credential::Session {
                session_id: "s1".into(),
            },
            user_limits: Some(LimitSet {
                rpm: Some(10),
                ..Default::default()
            }),
        }
    }

    /// Nothing listens on port 1: the quota state is unreachable.
    async fn unreachable() -> SharedState {
        SharedState::redis("redis://127.0.0.1:1", "sgtest")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_unreachable_quota_state_fails_closed_by_default() {
        let quota = Quota::new(unreachable().await, settings(false), vec![]);
        match quota.admit(&limited_user(), Call::Request).await {
            Err(Error::Unavailable { component, .. }) => assert_eq!(component, "redis"),
            Err(other) => panic!("expected 503, got {other:?}"),
            Ok(_) => panic!("admitted without the quota state"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_quota_state_admits_unmetered_when_configured_open() {
        let quota = Quota::new(unreachable().await, settings(true), vec![]);
        let ticket = quota.admit(&limited_user(), Call::Request).await.unwrap();
        assert!(!ticket.is_metered());
    }
}
