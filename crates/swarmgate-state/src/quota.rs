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

use std::collections::HashMap;

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

/// GCRA in microseconds, so a limit of many tokens a minute still has an
/// emission interval of at least one unit.
pub(crate) fn gcra_interval_us(limit: u64, period_ms: i64) -> i64 {
    ((period_ms.max(1) * 1000) / limit.max(1) as i64).max(1)
}

#[derive(Default)]
pub(crate) struct MemoryQuota {
    /// Theoretical arrival time (µs) per rate key.
    rates: HashMap<String, i64>,
    /// (used, until_ms) per budget key.
    budgets: HashMap<String, (u64, i64)>,
    /// member → until_ms per slots key.
    slots: HashMap<String, HashMap<String, i64>>,
    ops_since_prune: usize,
}

impl MemoryQuota {
    fn prune(&mut self, now_ms: i64) {
        self.ops_since_prune += 1;
        if self.ops_since_prune < 4096 {
            return;
        }
        self.ops_since_prune = 0;
        let now_us = now_ms * 1000;
        self.rates.retain(|_, tat| *tat > now_us);
        self.budgets.retain(|_, (_, until)| *until > now_ms);
        self.slots.retain(|_, members| {
            members.retain(|_, until| *until > now_ms);
            !members.is_empty()
        });
    }

    fn budget_used(&self, key: &str, now_ms: i64) -> u64 {
        match self.budgets.get(key) {
            Some((used, until)) if *until > now_ms => *used,
            _ => 0,
        }
    }

    fn live_slots(&mut self, key: &str, now_ms: i64) -> &mut HashMap<String, i64> {
        let members = self.slots.entry(key.to_string()).or_default();
        members.retain(|_, until| *until > now_ms);
        members
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
                let interval = gcra_interval_us(*limit, *period_ms);
                let capacity = interval * *limit as i64;
                let tat = self.rates.get(key).copied().unwrap_or(now_us).max(now_us);
                let new_tat = tat + interval * *cost as i64;
                let ahead = new_tat - now_us;
                if interval * *cost as i64 > capacity {
                    Err(None)
                } else if ahead > capacity {
                    Err(Some((ahead - capacity + 999) / 1000))
                } else {
                    Ok(((capacity - ahead) / interval) as u64)
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
                if used + cost > *limit {
                    Err((*resets && *cost <= *limit).then(|| (until_ms - now_ms).max(1)))
                } else {
                    Ok(limit - used - cost)
                }
            }
            Meter::Slots {
                key, limit, member, ..
            } => {
                let members = self.live_slots(key, now_ms);
                let held = members.len() as u64 - u64::from(members.contains_key(member));
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
                let interval = gcra_interval_us(*limit, *period_ms);
                let tat = self.rates.get(key).copied().unwrap_or(now_us).max(now_us);
                self.rates
                    .insert(key.clone(), tat + interval * *cost as i64);
            }
            Meter::Budget {
                key,
                cost,
                until_ms,
                ..
            } => {
                let used = self.budget_used(key, now_ms);
                self.budgets.insert(key.clone(), (used + cost, *until_ms));
            }
            Meter::Slots {
                key,
                member,
                until_ms,
                ..
            } => {
                self.live_slots(key, now_ms)
                    .insert(member.clone(), *until_ms);
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

    pub(crate) fn settle(&mut self, adjustments: &[Adjust], now_ms: i64) {
        for adjust in adjustments {
            match adjust {
                Adjust::Rate {
                    key,
                    limit,
                    period_ms,
                    refund,
                } => {
                    let now_us = now_ms * 1000;
                    let interval = gcra_interval_us(*limit, *period_ms);
                    if let Some(tat) = self.rates.get_mut(key) {
                        *tat = (*tat - refund * interval).max(now_us);
                    } else if *refund < 0 {
                        self.rates.insert(key.clone(), now_us - refund * interval);
                    }
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
            }
        }
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
                        let interval = gcra_interval_us(*limit, *period_ms);
                        let capacity = interval * *limit as i64;
                        let tat = self.rates.get(key).copied().unwrap_or(now_us).max(now_us);
                        ((capacity - (tat - now_us)).max(0) / interval) as u64
                    }
                    Meter::Budget { key, limit, .. } => {
                        limit.saturating_sub(self.budget_used(key, now_ms))
                    }
                    Meter::Slots { key, limit, .. } => {
                        limit.saturating_sub(self.live_slots(key, now_ms).len() as u64)
                    }
                };
                Reading {
                    used: limit.saturating_sub(remaining),
                    remaining,
                }
            })
            .collect()
    }

    pub(crate) fn held(&mut self, key: &str, member: &str, now_ms: i64) -> bool {
        self.live_slots(key, now_ms).contains_key(member)
    }

    /// Keeps `member` of `key` alive until `until_ms` if it still is now.
    pub(crate) fn touch(&mut self, key: &str, member: &str, until_ms: i64, now_ms: i64) -> bool {
        match self.live_slots(key, now_ms).get_mut(member) {
            Some(until) => {
                *until = until_ms;
                true
            }
            None => false,
        }
    }
}
