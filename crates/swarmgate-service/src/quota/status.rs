//! Each limit set's standing: what it allows, what was used, what is left
//! (for `GET /quota`, `/quota/health` and `swarmgate quota info`).

use swarmgate_state::{Meter, Reading};

use super::scopes::rate;
use super::{agents_key, allocation_key, day_key, Quota, Scope, DAY_MS};
use crate::error::Result;
use crate::principal::{Credential, Principal};

/// One limit set's standing.
#[derive(Debug, Clone)]
pub struct ScopeStatus {
    pub scope: String,
    /// (limit name, limit, reading)
    pub limits: Vec<(&'static str, u64, Reading)>,
}

impl Quota {
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
        let now = self.clock.now_ms();
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
                push("rpm", rate([&scope.counter, ":rpm"].concat(), limit, 0));
            }
            if let Some(limit) = l.tpm {
                push("tpm", rate([&scope.counter, ":tpm"].concat(), limit, 0));
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
