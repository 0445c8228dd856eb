//! Quota meters: request and token rates (GCRA), budgets (counters with a
//! window or a fixed allocation) and slots (requests in flight, live agent
//! sessions). A request is checked against all of its meters in one atomic
//! step: either every meter admits it and all are charged, or none is
//! touched and the first that refused is named. Reservations are settled
//! later with [`Adjust`]s (tokens given back, slots released).
//!
//! The in-process version below and the Redis script in
//! `redis_backend.rs` implement the same rules; the tests in
//! `tests/quota.rs` run against both.

// Fx, not SipHash: every key here is made by swarmgate from ids it issued
// (users, keys, agent sessions, slot holders) or names from the
// configuration (roles, profiles), never from what a caller sends, so no
// caller can choose keys that collide; and each limited request hashes
// several of them. A key taken from a request (an address, a username)
// must not be added here without going back to SipHash.
use rustc_hash::FxHashMap as HashMap;

/// One limit a request is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meter {
    /// GCRA: `limit` units (requests, tokens) per `period_ms`, the whole
    /// `limit` usable at once and then refilled evenly; charged `cost`.
    Rate {
        key: String,
        limit: u64,
        period_ms: i64,
        cost: u64,
    },
    /// A counter that may reach `limit`; forgotten at `until_ms` (the end
    /// of its day, or of an agent's session). `resets` says whether waiting
    /// helps (a day budget) or not (an allocation).
    Budget {
        key: String,
        limit: u64,
        cost: u64,
        until_ms: i64,
        resets: bool,
    },
    /// At most `limit` members held at once; `member` holds one until
    /// `until_ms` unless released before (so a crashed holder cannot leak
    /// one forever).
    Slots {
        key: String,
        limit: u64,
        member: String,
        until_ms: i64,
    },
}

impl Meter {
    pub fn key(&self) -> &str {
        match self {
            Meter::Rate { key, .. } | Meter::Budget { key, .. } | Meter::Slots { key, .. } => key,
        }
    }

    pub fn limit(&self) -> u64 {
        match self {
            Meter::Rate { limit, .. }
            | Meter::Budget { limit, .. }
            | Meter::Slots { limit, .. } => *limit,
        }
    }
}

/// A settlement after the request: the unused part of a reservation given
/// back (a negative `refund` charges more), or a slot released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adjust {
    Rate {
        key: String,
        limit: u64,
        period_ms: i64,
        refund: i64,
    },
    Budget {
        key: String,
        refund: i64,
        until_ms: i64,
    },
    Release {
        key: String,
        member: String,
    },
    /// Makes the whole settlement happen at most once: if `key` was set by
    /// an earlier settlement (until `until_ms`), none of this one applies.
    /// For a give-back that a retry must not repeat.
    Once {
        key: String,
        until_ms: i64,
    },
}

/// The outcome of [`Meter`] checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Every meter admitted and was charged; what each has left, in order.
    Admitted { remaining: Vec<u64> },
    /// `index` refused; nothing was charged. `retry_after_ms` is `None`
    /// when waiting cannot help (the cost is larger than the limit, or an
    /// allocation is spent).
    Denied {
        index: usize,
        retry_after_ms: Option<i64>,
    },
}

/// What a meter has used and has left now (for `/quota`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub used: u64,
    pub remaining: u64,
}

/// When a refused slot is worth asking for again.
pub(crate) const SLOT_RETRY_MS: i64 = 1000;

/// GCRA in microseconds: a rate of `limit` units per `period_ms` holds at
/// most one period of "theoretical arrival time" ahead of now. What one
/// charge of `cost` units moves it is worked out exactly (rounded up), so
/// a large limit is not run faster by rounding.
pub(crate) fn gcra_capacity_us(period_ms: i64) -> i64 {
    period_ms.max(1) * 1000
}

/// Microseconds `cost` units take at `limit` per `period_ms`, rounded up;
/// saturates far beyond any capacity (a cost that can never fit).
pub(crate) fn gcra_increment_us(limit: u64, period_ms: i64, cost: u64) -> i64 {
    let period = gcra_capacity_us(period_ms) as u128;
    let inc = (u128::from(cost) * period).div_ceil(u128::from(limit.max(1)));
    inc.min(i64::MAX as u128 / 4) as i64
}

/// Microseconds a refund of `refund` units (negative: a further charge)
/// moves the arrival time back; a refund is rounded down, a charge up.
pub(crate) fn gcra_refund_us(limit: u64, period_ms: i64, refund: i64) -> i64 {
    let magnitude = refund.unsigned_abs();
    if refund >= 0 {
        let period = gcra_capacity_us(period_ms) as u128;
        ((u128::from(magnitude) * period) / u128::from(limit.max(1))).min(i64::MAX as u128 / 4)
            as i64
    } else {
        -gcra_increment_us(limit, period_ms, magnitude)
    }
}

/// Units left when the arrival time is `ahead` µs past now.
pub(crate) fn gcra_remaining(limit: u64, period_ms: i64, ahead: i64) -> u64 {
    let capacity = gcra_capacity_us(period_ms);
    let free = (capacity - ahead.max(0)).max(0) as u128;
    (free * u128::from(limit) / capacity as u128) as u64
}

#[derive(Default)]
pub(crate) struct MemoryQuota {
    /// Theoretical arrival time (µs) per rate key.
    rates: HashMap<String, i64>,
    /// (used, until_ms) per budget key.
    budgets: HashMap<String, (u64, i64)>,
    /// member → until_ms per slots key.
    slots: HashMap<String, HashMap<String, i64>>,
    /// Settlements already made once (`Adjust::Once`), until when.
    once: HashMap<String, i64>,
    ops_since_prune: usize,
}

impl MemoryQuota {
    fn prune(&mut self, now_ms: i64) {
        self.ops_since_prune += 1;
        if self.ops_since_prune < crate::memory::PRUNE_EVERY {
            return;
        }
        self.ops_since_prune = 0;
        let now_us = now_ms * 1000;
        self.rates.retain(|_, tat| *tat > now_us);
        self.budgets.retain(|_, (_, until)| *until > now_ms);
        self.once.retain(|_, until| *until > now_ms);
        self.slots.retain(|_, members| {
            members.retain(|_, until| *until > now_ms);
            !members.is_empty()
        });
    }

    /// A rate's theoretical arrival time, never earlier than now.
    fn tat(&self, key: &str, now_us: i64) -> i64 {
        self.rates.get(key).copied().unwrap_or(now_us).max(now_us)
    }

    fn budget_used(&self, key: &str, now_ms: i64) -> u64 {
        match self.budgets.get(key) {
            Some((used, until)) if *until > now_ms => *used,
            _ => 0,
        }
    }

    /// The live holds of `key` (a lapsed hold is not live), without
    /// creating an entry for a key nobody holds.
    fn holds(&self, key: &str, now_ms: i64) -> impl Iterator<Item = (&String, &i64)> {
        self.slots
            .get(key)
            .into_iter()
            .flatten()
            .filter(move |(_, until)| **until > now_ms)
    }

    /// `Ok(remaining after charging)` or `Err(retry_after_ms)`.
    fn check(&mut self, meter: &Meter, now_ms: i64) -> Result<u64, Option<i64>> {
        match meter {
            Meter::Rate {
                key,
                limit,
                period_ms,
                cost,
            } => {
                let now_us = now_ms * 1000;
                let capacity = gcra_capacity_us(*period_ms);
                let inc = gcra_increment_us(*limit, *period_ms, *cost);
                let tat = self.tat(key, now_us);
                if inc > capacity {
                    return Err(None);
                }
                let ahead = tat + inc - now_us;
                if ahead > capacity {
                    // No wait is longer than the request's own increment;
                    // one would only come from an arrival time set by an
                    // instance whose `now` was later than this one's (two
                    // replicas racing on one Redis), so it is not real.
                    Err(Some(((ahead - capacity).min(inc) + 999) / 1000))
                } else {
                    Ok(gcra_remaining(*limit, *period_ms, ahead))
                }
            }
            Meter::Budget {
                key,
                limit,
                cost,
                until_ms,
                resets,
            } => {
                let used = self.budget_used(key, now_ms);
                if used.saturating_add(*cost) > *limit {
                    Err((*resets && *cost <= *limit).then(|| (until_ms - now_ms).max(1)))
                } else {
                    Ok(limit - used - cost)
                }
            }
            Meter::Slots {
                key, limit, member, ..
            } => {
                let held = self
                    .holds(key, now_ms)
                    .filter(|(m, _)| *m != member)
                    .count() as u64;
                if held + 1 > *limit {
                    Err(Some(SLOT_RETRY_MS))
                } else {
                    Ok(limit - held - 1)
                }
            }
        }
    }

    fn charge(&mut self, meter: &Meter, now_ms: i64) {
        match meter {
            Meter::Rate {
                key,
                limit,
                period_ms,
                cost,
            } => {
                let now_us = now_ms * 1000;
                let inc = gcra_increment_us(*limit, *period_ms, *cost);
                let tat = self.tat(key, now_us);
                self.rates.insert(key.clone(), tat + inc);
            }
            Meter::Budget {
                key,
                cost,
                until_ms,
                ..
            } => {
                let used = self.budget_used(key, now_ms);
                self.budgets
                    .insert(key.clone(), (used.saturating_add(*cost), *until_ms));
            }
            Meter::Slots {
                key,
                member,
                until_ms,
                ..
            } => {
                // Lapsed holds go as a new one comes.
                let members = self.slots.entry(key.clone()).or_default();
                members.retain(|_, until| *until > now_ms);
                members.insert(member.clone(), *until_ms);
            }
        }
    }

    pub(crate) fn admit(&mut self, meters: &[Meter], now_ms: i64) -> Admission {
        self.prune(now_ms);
        let mut remaining = Vec::with_capacity(meters.len());
        for (index, meter) in meters.iter().enumerate() {
            match self.check(meter, now_ms) {
                Ok(left) => remaining.push(left),
                Err(retry_after_ms) => {
                    return Admission::Denied {
                        index,
                        retry_after_ms,
                    }
                }
            }
        }
        for meter in meters {
            self.charge(meter, now_ms);
        }
        Admission::Admitted { remaining }
    }

    /// Applies `adjustments`; false when an `Adjust::Once` among them had
    /// already been applied (and then nothing is).
    pub(crate) fn settle(&mut self, adjustments: &[Adjust], now_ms: i64) -> bool {
        let done_before = adjustments.iter().any(|a| {
            matches!(a, Adjust::Once { key, .. }
                if self.once.get(key).is_some_and(|until| *until > now_ms))
        });
        if done_before {
            return false;
        }
        for adjust in adjustments {
            match adjust {
                Adjust::Rate {
                    key,
                    limit,
                    period_ms,
                    refund,
                } => {
                    // From now at the earliest: an arrival time already in
                    // the past owes nothing, so a further charge starts now.
                    let now_us = now_ms * 1000;
                    let tat = self.tat(key, now_us);
                    let moved = (tat - gcra_refund_us(*limit, *period_ms, *refund)).max(now_us);
                    self.rates.insert(key.clone(), moved);
                }
                Adjust::Budget {
                    key,
                    refund,
                    until_ms,
                } => {
                    let used = self.budget_used(key, now_ms) as i64;
                    if used > 0 || *refund < 0 {
                        let until = match self.budgets.get(key) {
                            Some((_, until)) if *until > now_ms => *until,
                            _ => *until_ms,
                        };
                        self.budgets
                            .insert(key.clone(), ((used - refund).max(0) as u64, until));
                    }
                }
                Adjust::Release { key, member } => {
                    if let Some(members) = self.slots.get_mut(key) {
                        members.remove(member);
                    }
                }
                Adjust::Once { key, until_ms } => {
                    self.once.insert(key.clone(), *until_ms);
                }
            }
        }
        true
    }

    pub(crate) fn read(&mut self, meters: &[Meter], now_ms: i64) -> Vec<Reading> {
        meters
            .iter()
            .map(|meter| {
                let limit = meter.limit();
                let remaining = match meter {
                    Meter::Rate {
                        key,
                        limit,
                        period_ms,
                        ..
                    } => {
                        let now_us = now_ms * 1000;
                        let tat = self.tat(key, now_us);
                        gcra_remaining(*limit, *period_ms, tat - now_us)
                    }
                    Meter::Budget { key, limit, .. } => {
                        limit.saturating_sub(self.budget_used(key, now_ms))
                    }
                    Meter::Slots { key, limit, .. } => {
                        limit.saturating_sub(self.holds(key, now_ms).count() as u64)
                    }
                };
                Reading {
                    used: limit.saturating_sub(remaining),
                    remaining,
                }
            })
            .collect()
    }

    pub(crate) fn held(&self, key: &str, member: &str, now_ms: i64) -> bool {
        self.holds(key, now_ms).any(|(m, _)| m == member)
    }

    /// Keeps `member` of `key` alive until `until_ms` if it still is now.
    pub(crate) fn touch(&mut self, key: &str, member: &str, until_ms: i64, now_ms: i64) -> bool {
        match self.slots.get_mut(key).and_then(|m| m.get_mut(member)) {
            Some(until) if *until > now_ms => {
                *until = until_ms;
                true
            }
            _ => false,
        }
    }
}
