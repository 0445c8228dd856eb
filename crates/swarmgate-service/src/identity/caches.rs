//! What the identity service keeps in memory between requests: verified
//! credentials, the current copy of each user, and batched `last_used_at`
//! of API keys. All are safe to lose: each is read again from the database
//! or the shared state when missing or stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;
use swarmgate_core::permission::GrantSet;
use swarmgate_core::{ApiKey, User};

use super::authn::JwtEntry;
use crate::clock::SharedClock;

const CACHE_CAPACITY: u64 = 100_000;
/// Longest a cached user lives regardless of versions; a full resync bumps
/// every user changed within this long, so even a Redis that lost its
/// versions cannot make a stale copy look current.
pub(crate) const USER_CACHE_TTL: Duration = Duration::from_secs(600);

pub(super) struct KeyEntry {
    pub(super) key: ApiKey,
    pub(super) grants: Arc<GrantSet>,
    pub(super) models: Option<Arc<[String]>>,
}

#[derive(Clone)]
pub(super) enum Cached {
    Jwt(Arc<JwtEntry>),
    Key {
        entry: Option<Arc<KeyEntry>>,
        until_ms: i64,
    },
}

impl Cached {
    fn until_ms(&self) -> i64 {
        match self {
            Cached::Jwt(j) => j.exp_ms,
            Cached::Key { until_ms, .. } => *until_ms,
        }
    }
}

/// Each entry ends with the credential's own expiry.
struct UntilExpiry(SharedClock);

impl Expiry<[u8; 32], Cached> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], value: &Cached, _: Instant) -> Option<Duration> {
        let left = (value.until_ms() - self.0.now_ms()).max(0);
        Some(Duration::from_millis(left.unsigned_abs()))
    }
}

/// Verified credentials, keyed by the SHA-256 of the credential.
pub(crate) struct CredentialCache {
    pub(super) inner: Cache<[u8; 32], Cached>,
}

impl CredentialCache {
    pub(super) fn new(clock: SharedClock) -> Self {
        Self {
            inner: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .expire_after(UntilExpiry(clock))
                .build(),
        }
    }
}

/// The current copy of a user, tagged with the version of the shared state
/// it was read at; `None` remembers that the user does not exist.
pub(super) struct CachedUser {
    pub(super) version: i64,
    pub(super) user: Option<Arc<User>>,
}

/// Keyed by user ids swarmgate issued (from a verified credential), never
/// by what a caller sends, so hashed with Fx rather than SipHash: it is
/// looked up on every request.
pub(crate) struct UserCache {
    pub(super) inner: Cache<String, Arc<CachedUser>, rustc_hash::FxBuildHasher>,
}

impl UserCache {
    pub(super) fn new() -> Self {
        Self {
            inner: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(USER_CACHE_TTL)
                .build_with_hasher(rustc_hash::FxBuildHasher),
        }
    }

    pub(super) fn forget(&self, user_id: &str) {
        self.inner.invalidate(user_id);
    }
}

/// `last_used_at` of API keys, collected in memory and written in batches.
#[derive(Default)]
pub(crate) struct LastUsed {
    pending: Mutex<HashMap<String, i64>>,
}

impl LastUsed {
    pub(super) fn record(&self, key_id: &str, at: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = pending.get_mut(key_id) {
            *previous = at;
        } else {
            pending.insert(key_id.to_string(), at);
        }
    }

    /// Puts back values whose write failed (newer ones already recorded win).
    pub(super) fn restore(&self, used: Vec<(String, i64)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (id, at) in used {
            let slot = pending.entry(id).or_insert(at);
            *slot = (*slot).max(at);
        }
    }

    pub(super) fn drain(&self) -> Vec<(String, i64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.drain().collect()
    }
}
