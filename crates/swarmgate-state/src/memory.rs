//! In-process state for a single instance. Maps are pruned of expired
//! entries as they grow, so a flood of distinct keys cannot exhaust memory
//! for longer than the longest window.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{CredentialStatus, LockoutPolicy, LoginGate, Rate, RateDecision, Revocable};

pub(crate) const PRUNE_EVERY: usize = 4096;

/// `Retry-After` for an attempt refused because the threshold is taken by
/// evaluations still in flight (no lock is set yet).
pub(crate) const IN_FLIGHT_RETRY_MS: i64 = 1000;

#[derive(Default)]
struct Expiring<V> {
    entries: HashMap<String, (V, i64)>,
    inserts_since_prune: usize,
}

impl<V> Expiring<V> {
    fn get(&self, key: &str, now_ms: i64) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|(_, until)| *until > now_ms)
            .map(|(v, _)| v)
    }

    fn insert(&mut self, key: &str, value: V, until_ms: i64, now_ms: i64) {
        self.inserts_since_prune += 1;
        if self.inserts_since_prune >= PRUNE_EVERY {
            self.entries.retain(|_, (_, until)| *until > now_ms);
            self.inserts_since_prune = 0;
        }
        self.entries.insert(key.to_string(), (value, until_ms));
    }

    fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[derive(Default)]
struct Lockout {
    attempts: Expiring<u32>,
    locks: Expiring<()>,
}

#[derive(Default)]
pub struct MemoryState {
    /// Revoked ids, one map per kind of credential, so a check looks up the
    /// id as it is (no composite key built per request).
    revoked: Mutex<[Expiring<()>; 3]>,
    claims: Mutex<Expiring<()>>,
    user_versions: Mutex<std::collections::HashMap<String, i64>>,
    gcra: Mutex<Expiring<i64>>,
    /// Attempts and locks under one lock, so that checking the lock and
    /// counting an attempt are one atomic step (as in the Redis script).
    lockout: Mutex<Lockout>,
    quota: Mutex<crate::quota::MemoryQuota>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave a map half
    // updated (each critical section is a single insert or lookup), so a
    // poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryState {
    pub(crate) fn quota(&self) -> std::sync::MutexGuard<'_, crate::quota::MemoryQuota> {
        lock(&self.quota)
    }

    pub fn revoke(&self, kind: Revocable, id: &str, until_ms: i64, now_ms: i64) {
        if let Some(revoked) = lock(&self.revoked).get_mut(kind.index()) {
            revoked.insert(id, (), until_ms, now_ms);
        }
    }

    pub fn claim_once(&self, key: &str, until_ms: i64, now_ms: i64) -> bool {
        let mut claims = lock(&self.claims);
        if claims.get(key, now_ms).is_some() {
            return false;
        }
        claims.insert(key, (), until_ms, now_ms);
        true
    }

    pub fn bump_user(&self, user_id: &str) {
        *lock(&self.user_versions)
            .entry(user_id.to_string())
            .or_insert(0) += 1;
    }

    pub fn credential_status(
        &self,
        kind: Revocable,
        id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> CredentialStatus {
        let revoked = lock(&self.revoked)
            .get(kind.index())
            .is_some_and(|revoked| revoked.get(id, now_ms).is_some());
        let user_version = if user_id.is_empty() {
            0
        } else {
            lock(&self.user_versions).get(user_id).copied().unwrap_or(0)
        };
        CredentialStatus {
            revoked,
            user_version,
        }
    }

    pub fn rate_limit(&self, key: &str, rate: Rate, now_ms: i64) -> RateDecision {
        let (interval, tolerance) = rate.gcra();
        let mut cells = lock(&self.gcra);
        let tat = cells
            .get(key, now_ms)
            .copied()
            .unwrap_or(now_ms)
            .max(now_ms);
        if tat - now_ms > tolerance {
            return RateDecision::Limited {
                retry_after_ms: tat - now_ms - tolerance,
            };
        }
        let new_tat = tat + interval;
        cells.insert(key, new_tat, new_tat, now_ms);
        RateDecision::Allowed
    }

    pub fn login_attempt(&self, key: &str, policy: LockoutPolicy, now_ms: i64) -> LoginGate {
        let mut state = lock(&self.lockout);
        if let Some((_, until)) = state.locks.entries.get(key).filter(|(_, u)| *u > now_ms) {
            return LoginGate::Locked {
                retry_after_ms: until - now_ms,
            };
        }
        let window_ms = policy.window.as_millis() as i64;
        let (count, until) = match state.attempts.entries.get(key) {
            Some((n, until)) if *until > now_ms => (*n + 1, *until),
            _ => (1, now_ms + window_ms),
        };
        state.attempts.insert(key, count, until, now_ms);
        if count > policy.threshold {
            // The threshold is reached by evaluations still in flight; the
            // lock (if they fail) is set in a moment, so ask for a short wait.
            LoginGate::Locked {
                retry_after_ms: IN_FLIGHT_RETRY_MS,
            }
        } else {
            LoginGate::Proceed
        }
    }

    pub fn login_failed(&self, key: &str, policy: LockoutPolicy, now_ms: i64) -> bool {
        let mut state = lock(&self.lockout);
        let count = state.attempts.get(key, now_ms).copied().unwrap_or(0);
        if count < policy.threshold {
            return false;
        }
        state.attempts.remove(key);
        if state.locks.get(key, now_ms).is_some() {
            return false;
        }
        let until = now_ms + policy.lock_for.as_millis() as i64;
        state.locks.insert(key, (), until, now_ms);
        true
    }

    pub fn login_succeeded(&self, key: &str) {
        lock(&self.lockout).attempts.remove(key);
    }

    pub fn unlock(&self, key: &str) {
        let mut state = lock(&self.lockout);
        state.attempts.remove(key);
        state.locks.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_claim_holds_until_it_expires() {
        let m = MemoryState::default();
        assert!(m.claim_once("k", 1_000, 0));
        assert!(!m.claim_once("k", 1_000, 999));
        assert!(m.claim_once("k", 2_000, 1_000));
    }

    #[test]
    fn gcra_allows_the_burst_then_spaces_requests() {
        let m = MemoryState::default();
        let rate = Rate::per_minute(5);
        for _ in 0..5 {
            assert_eq!(m.rate_limit("ip", rate, 1_000), RateDecision::Allowed);
        }
        assert_eq!(
            m.rate_limit("ip", rate, 1_000),
            RateDecision::Limited {
                retry_after_ms: 12_000
            }
        );
        // One emission interval later exactly one more fits.
        assert_eq!(m.rate_limit("ip", rate, 13_000), RateDecision::Allowed);
        assert!(matches!(
            m.rate_limit("ip", rate, 13_000),
            RateDecision::Limited { .. }
        ));
        // Other keys are independent.
        assert_eq!(m.rate_limit("other", rate, 13_000), RateDecision::Allowed);
    }

    #[test]
    fn lockout_engages_once_and_expires() {
        let m = MemoryState::default();
        let p = LockoutPolicy {
            threshold: 3,
            window: Duration::from_secs(900),
            lock_for: Duration::from_secs(600),
        };
        let mut engaged = 0;
        for _ in 0..3 {
            assert_eq!(m.login_attempt("u", p, 0), LoginGate::Proceed);
            engaged += usize::from(m.login_failed("u", p, 0));
        }
        assert_eq!(engaged, 1);
        assert_eq!(
            m.login_attempt("u", p, 1_000),
            LoginGate::Locked {
                retry_after_ms: 599_000
            }
        );
        assert_eq!(m.login_attempt("u", p, 600_001), LoginGate::Proceed);
    }

    #[test]
    fn success_resets_the_count() {
        let m = MemoryState::default();
        let p = LockoutPolicy {
            threshold: 2,
            window: Duration::from_secs(900),
            lock_for: Duration::from_secs(600),
        };
        m.login_attempt("u", p, 0);
        m.login_failed("u", p, 0);
        m.login_attempt("u", p, 0);
        m.login_succeeded("u");
        assert_eq!(m.login_attempt("u", p, 0), LoginGate::Proceed);
        assert!(!m.login_failed("u", p, 0));
    }

    #[test]
    fn revocations_expire() {
        let m = MemoryState::default();
        m.revoke(Revocable::Session, "s", 10_000, 0);
        let revoked =
            |id: &str, at: i64| m.credential_status(Revocable::Session, id, "", at).revoked;
        assert!(revoked("s", 9_999));
        assert!(!revoked("s", 10_000));
        assert!(!revoked("t", 0));
        assert!(!m.credential_status(Revocable::ApiKey, "s", "", 0).revoked);
        m.bump_user("u");
        m.bump_user("u");
        assert_eq!(
            m.credential_status(Revocable::ApiKey, "k", "u", 0)
                .user_version,
            2
        );
    }
}
