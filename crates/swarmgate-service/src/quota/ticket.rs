//! What an admitted call holds until its response ends: concurrency slots
//! and token reservations, settled to the real usage (or given back).

use swarmgate_state::{Adjust, Meter, SharedState};

use super::{Call, Kind, Quota, RateHeaders};
use crate::clock::SharedClock;

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
    clock: SharedClock,
    meters: Vec<Meter>,
    kinds: Vec<Kind>,
    reserved: u64,
}

impl Ticket {
    pub(super) fn unmetered() -> Self {
        Self {
            inner: None,
            headers: RateHeaders::default(),
        }
    }

    pub(super) fn new(
        quota: &Quota,
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
                state: quota.state.clone(),
                clock: quota.clock.clone(),
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
        let refund = i64::try_from(self.reserved).unwrap_or(i64::MAX)
            - i64::try_from(used).unwrap_or(i64::MAX);
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
        let (state, clock) = (self.state, self.clock);
        if state.quota_settle_local(&adjustments, clock.now_ms()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = state.quota_settle(&adjustments, clock.now_ms()).await {
                tracing::warn!(error = %e, "quota settlement failed; slots lapse at their lease");
            }
        });
    }
}
