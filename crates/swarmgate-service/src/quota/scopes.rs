//! Which limit sets apply to a caller, and the meters of the shared state
//! a call is checked against under each of them.

use swarmgate_state::Meter;

use super::{allocation_key, day_key, Call, Kind, Quota, Scope, DAY_MS, MINUTE_MS};
use crate::principal::{Credential, Principal};

impl Quota {
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
    pub(super) fn meters(
        &self,
        principal: &Principal,
        scopes: &[Scope],
        call: Call,
        member: &str,
        now: i64,
    ) -> (Vec<Meter>, Vec<(usize, Kind)>) {
        let mut meters = Meters::default();
        // An agent with an allocation spends it, not its parent's day
        // budget, which it was carved from at spawn; from the next day on,
        // that day's budget applies as well (no banking across days).
        let allocated = match &principal.credential {
            Credential::Agent { claims, .. } => {
                claims.budget.tokens.is_some() && now < claims.carved_until
            }
            _ => false,
        };
        let lease = i64::try_from(self.settings.slot_lease.as_millis()).unwrap_or(i64::MAX);
        for (i, scope) in scopes.iter().enumerate() {
            let l = &scope.limits;
            if let Some(limit) = l.rpm {
                let key = [&scope.counter, ":rpm"].concat();
                meters.push(i, Kind::Rpm, rate(key, limit, 1));
            }
            if let Call::Llm { reserve } = call {
                token_meters(&mut meters, i, principal, scope, reserve, allocated, now);
            }
            if let Some(limit) = l.max_concurrent {
                let slot = Meter::Slots {
                    key: [&scope.counter, ":conc"].concat(),
                    limit,
                    member: member.to_string(),
                    until_ms: now + lease,
                };
                meters.push(i, Kind::Concurrent, slot);
            }
        }
        (meters.meters, meters.kinds)
    }
}

/// Meters, each with its scope index and kind.
#[derive(Default)]
struct Meters {
    meters: Vec<Meter>,
    kinds: Vec<(usize, Kind)>,
}

impl Meters {
    fn push(&mut self, scope: usize, kind: Kind, meter: Meter) {
        self.meters.push(meter);
        self.kinds.push((scope, kind));
    }
}

pub(super) fn rate(key: String, limit: u64, cost: u64) -> Meter {
    Meter::Rate {
        key,
        limit,
        period_ms: MINUTE_MS,
        cost,
    }
}

/// The token meters of an LLM call reserving `reserve` under `scope`.
fn token_meters(
    meters: &mut Meters,
    i: usize,
    principal: &Principal,
    scope: &Scope,
    reserve: u64,
    allocated: bool,
    now: i64,
) {
    let l = &scope.limits;
    if let Some(limit) = l.tpm {
        let key = [&scope.counter, ":tpm"].concat();
        meters.push(i, Kind::Tpm, rate(key, limit, reserve));
    }
    if let Some(limit) = l.tokens_per_day.filter(|_| !allocated || scope.shared) {
        let (key, until_ms) = day_key(&scope.counter, now);
        let budget = Meter::Budget {
            key,
            limit,
            cost: reserve,
            until_ms,
            resets: true,
        };
        meters.push(i, Kind::Day, budget);
    }
    // Always metered for an agent, so its usage so far is known even
    // without an allocation.
    if let (
        true,
        Credential::Agent {
            session_id,
            expires_at,
            ..
        },
    ) = (scope.name.starts_with("agent:"), &principal.credential)
    {
        let allocation = Meter::Budget {
            key: allocation_key(session_id),
            limit: scope.tokens.unwrap_or(swarmgate_core::limits::MAX_LIMIT),
            cost: reserve,
            // Kept past the session's end, so a late release still reads
            // what was spent.
            until_ms: *expires_at + DAY_MS,
            resets: false,
        };
        meters.push(i, Kind::Allocation, allocation);
    }
}
