//! Admission: checking and charging every limit that applies to a call,
//! all or none, waiting for capacity where a limit set says
//! `on_limit = "queue"`, and saying precisely which limit refused.

use std::time::Duration;

use swarmgate_core::OnLimit;
use swarmgate_state::{Admission, Meter, StateError};

use super::{Call, Kind, Quota, Scope, Ticket};
use crate::error::{Error, Result};
use crate::principal::Principal;

/// OpenAI's rate-limit headers: the tightest request and token limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub requests: Option<(u64, u64)>,
    pub tokens: Option<(u64, u64)>,
}

impl RateHeaders {
    pub(super) fn from_readings(
        kinds: &[(usize, Kind)],
        meters: &[Meter],
        remaining: &[u64],
    ) -> Self {
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

impl Quota {
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
        // A queued call waits at most queue_max_wait: by the clock, and by
        // the sleeps themselves, whichever says more (a clock moved by hand
        // in a test, or stepped back, must not let it wait for ever).
        let queued_at = self.clock.now_ms();
        let mut waited = Duration::ZERO;
        loop {
            let now = self.clock.now_ms();
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
                    let kinds = kinds.into_iter().map(|(_, k)| k).collect();
                    return Ok(Ticket::new(self, meters, kinds, call, headers));
                }
                Admission::Denied {
                    index,
                    retry_after_ms,
                } => (index, retry_after_ms),
            };
            let Some(&(scope_index, kind)) = kinds.get(index) else {
                return Err(Error::Internal(format!("quota refused by meter {index}")));
            };
            let Some(scope) = scopes.get(scope_index) else {
                return Err(Error::Internal(format!(
                    "quota refused by set {scope_index}"
                )));
            };
            if let (Some(wait), OnLimit::Queue) = (retry_after_ms, scope.limits.on_limit) {
                let by_clock = Duration::from_millis((now - queued_at).max(0).unsigned_abs());
                let left = self
                    .settings
                    .queue_max_wait
                    .saturating_sub(waited.max(by_clock));
                // A wait known to be longer than the longest allowed is not
                // worth starting; a slot's is unknown (any response may end).
                let hopeless =
                    kind != Kind::Concurrent && u128::from(wait.unsigned_abs()) > left.as_millis();
                if !left.is_zero() && !hopeless {
                    // A slot frees when some response ends, which no clock
                    // predicts: look again soon.
                    let wait = if kind == Kind::Concurrent {
                        wait.min(50)
                    } else {
                        wait
                    };
                    let wait = Duration::from_millis(wait.max(10).unsigned_abs()).min(left);
                    tokio::time::sleep(wait).await;
                    waited += wait;
                    continue;
                }
            }
            metrics::counter!("swarmgate_quota_rejected_total", "limit" => kind.name())
                .increment(1);
            let refused = Refused {
                scope,
                kind,
                index,
                retry_after_ms,
            };
            return Err(self.refusal(refused, &meters, &kinds, call, now).await);
        }
    }

    /// The 429 for a call `refused` by one of `meters`: which limit, what
    /// is left of each now, and what would help.
    async fn refusal(
        &self,
        refused: Refused<'_>,
        meters: &[Meter],
        kinds: &[(usize, Kind)],
        call: Call,
        now: i64,
    ) -> Error {
        let Refused {
            scope,
            kind,
            index,
            retry_after_ms,
        } = refused;
        let readings = self.state.quota_read(meters, now).await.unwrap_or_default();
        // What is really left now (a call may be refused for a worst case
        // larger than what is left, which is then not zero).
        let remaining: Vec<u64> = readings.iter().map(|r| r.remaining).collect();
        let headers = RateHeaders::from_readings(kinds, meters, &remaining);
        let left = readings.get(index).map(|r| r.remaining);
        let meter = meters.get(index);
        let cost = match (meter, call) {
            (Some(Meter::Rate { cost, .. } | Meter::Budget { cost, .. }), Call::Llm { .. }) => {
                Some(*cost)
            }
            _ => None,
        };
        Error::QuotaExceeded(Box::new(Denial {
            scope: scope.name.clone(),
            limit: kind.name(),
            value: meter.map_or(0, Meter::limit),
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
        }))
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
}

/// Which meter refused a call, under which set.
struct Refused<'a> {
    scope: &'a Scope,
    kind: Kind,
    index: usize,
    retry_after_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use swarmgate_core::permission::GrantSet;
    use swarmgate_core::roles::Role;
    use swarmgate_core::LimitSet;
    use swarmgate_state::SharedState;

    use super::*;
    use crate::clock::SystemClock;
    use crate::principal::Credential;
    use crate::settings::QuotaSettings;

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
        SharedState::redis(
            "redis://127.0.0.1:1",
            "sgtest",
            std::time::Duration::from_millis(300),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn an_unreachable_quota_state_fails_closed_by_default() {
        let quota = Quota::new(
            unreachable().await,
            settings(false),
            vec![],
            SystemClock::shared(),
        );
        match quota.admit(&limited_user(), Call::Request).await {
            Err(Error::Unavailable { component, .. }) => assert_eq!(component, "redis"),
            Err(other) => panic!("expected 503, got {other:?}"),
            Ok(_) => panic!("admitted without the quota state"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_quota_state_admits_unmetered_when_configured_open() {
        let quota = Quota::new(
            unreachable().await,
            settings(true),
            vec![],
            SystemClock::shared(),
        );
        let ticket = quota.admit(&limited_user(), Call::Request).await.unwrap();
        assert!(!ticket.is_metered());
    }
}
