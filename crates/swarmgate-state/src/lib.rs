//! State that every swarmgate instance must see alike: revoked sessions,
//! rate-limit cells, login-lockout counters and quota meters.
//!
//! Without `REDIS_URL` it lives in this process (one instance only); with
//! it, in Redis, where every check-and-update is one atomic script so that
//! N instances behave as one. Time is a parameter (`now_ms`), never read
//! here, so the rules are testable without sleeping.
//!
//! An unreachable Redis is an error ([`StateError::Unavailable`]), never a
//! silent "allow": callers fail closed.

mod memory;
pub mod quota;
mod redis_backend;
mod redis_quota;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

pub use memory::MemoryState;
pub use quota::{Adjust, Admission, Meter, Reading};
pub use redis_backend::RedisState;

#[derive(Debug, Clone, Error)]
pub enum StateError {
    #[error("redis is unreachable: {0}")]
    Unavailable(String),
    #[error("invalid REDIS_URL: {0}")]
    Config(String),
}

/// Credentials that can be revoked before they expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Revocable {
    Session,
    ApiKey,
    /// One access token, by `jti` (client and node tokens, RFC 7009).
    Token,
}

impl Revocable {
    pub(crate) fn index(self) -> usize {
        match self {
            Revocable::Session => 0,
            Revocable::ApiKey => 1,
            Revocable::Token => 2,
        }
    }

    pub(crate) fn tag(self) -> &'static str {
        match self {
            Revocable::Session => "sid",
            Revocable::ApiKey => "key",
            Revocable::Token => "jti",
        }
    }
}

/// See [`SharedState::credential_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialStatus {
    pub revoked: bool,
    /// Bumped by every administrative change of the user; 0 when never.
    pub user_version: i64,
}

/// A rate: `limit` events per `period`, with a burst of `limit` (that many
/// may come at once; the next waits for the emission interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

impl Rate {
    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(60),
        }
    }

    pub fn per_hour(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(3600),
        }
    }

    /// GCRA parameters in milliseconds: emission interval and tolerance.
    pub(crate) fn gcra(&self) -> (i64, i64) {
        let limit = i64::from(self.limit.max(1));
        let interval = (self.period.as_millis() as i64 / limit).max(1);
        (interval, interval * (limit - 1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    Limited { retry_after_ms: i64 },
}

/// Lockout rule: `threshold` failures within `window` lock for `lock_for`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub threshold: u32,
    pub window: Duration,
    pub lock_for: Duration,
}

/// Whether a login attempt may evaluate the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    Proceed,
    Locked { retry_after_ms: i64 },
}

/// The shared-state handle the server holds.
#[derive(Clone)]
pub enum SharedState {
    Memory(Arc<MemoryState>),
    Redis(RedisState),
}

impl SharedState {
    pub fn memory() -> Self {
        SharedState::Memory(Arc::new(MemoryState::default()))
    }

    /// Connects to Redis; `namespace` prefixes every key (instances that
    /// must share state must share it); no call waits longer than
    /// `timeout`, and while Redis is down calls fail at once.
    pub async fn redis(
        url: &str,
        namespace: &str,
        timeout: std::time::Duration,
    ) -> Result<Self, StateError> {
        Ok(SharedState::Redis(
            RedisState::connect(url, namespace, timeout).await?,
        ))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SharedState::Memory(_) => "memory",
            SharedState::Redis(_) => "redis",
        }
    }

    pub async fn ping(&self) -> Result<(), StateError> {
        match self {
            SharedState::Memory(_) => Ok(()),
            SharedState::Redis(r) => r.ping().await,
        }
    }

    /// Records that credential `id` of `kind` (a session, an API key) is
    /// revoked until `until_ms` (the latest moment it could still verify).
    pub async fn revoke(
        &self,
        kind: Revocable,
        id: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<(), StateError> {
        match self {
            SharedState::Memory(m) => {
                m.revoke(kind, id, until_ms, now_ms);
                Ok(())
            }
            SharedState::Redis(r) => r.revoke(kind, id, until_ms, now_ms).await,
        }
    }

    pub async fn revoke_session(
        &self,
        sid: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<(), StateError> {
        self.revoke(Revocable::Session, sid, until_ms, now_ms).await
    }

    pub async fn is_session_revoked(&self, sid: &str, now_ms: i64) -> Result<bool, StateError> {
        Ok(self
            .credential_status(Revocable::Session, sid, "", now_ms)
            .await?
            .revoked)
    }

    /// Whether the shared state has lost what it held (a Redis restarted
    /// empty, or flushed): the epoch marker written after every full
    /// resynchronisation is gone. Always false in-process.
    pub async fn lost_state(&self) -> Result<bool, StateError> {
        match self {
            SharedState::Memory(_) => Ok(false),
            SharedState::Redis(r) => r.epoch_missing().await,
        }
    }

    /// Writes the epoch marker: the state is complete again.
    pub async fn mark_complete(&self) -> Result<(), StateError> {
        match self {
            SharedState::Memory(_) => Ok(()),
            SharedState::Redis(r) => r.set_epoch().await,
        }
    }

    /// Claims `key` until `until_ms`: true the first time, false while an
    /// earlier claim holds (a replayed assertion `jti`). One `SET NX` on
    /// Redis, so every instance sees the same first use.
    pub async fn claim_once(
        &self,
        key: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        match self {
            SharedState::Memory(m) => Ok(m.claim_once(key, until_ms, now_ms)),
            SharedState::Redis(r) => r.claim_once(key, until_ms, now_ms).await,
        }
    }

    /// Marks a user as changed (role, disabled, deleted): every instance's
    /// cached copy is stale from now on.
    pub async fn bump_user(&self, user_id: &str) -> Result<(), StateError> {
        match self {
            SharedState::Memory(m) => {
                m.bump_user(user_id);
                Ok(())
            }
            SharedState::Redis(r) => r.bump_user(user_id).await,
        }
    }

    /// Everything a request needs from the shared state, in one round trip:
    /// whether its credential is revoked and the version of its user. If the
    /// state was lost (see [`lost_state`](Self::lost_state)) this fails
    /// closed until it has been rebuilt from the database.
    pub async fn credential_status(
        &self,
        kind: Revocable,
        id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<CredentialStatus, StateError> {
        match self {
            SharedState::Memory(m) => Ok(m.credential_status(kind, id, user_id, now_ms)),
            SharedState::Redis(r) => r.credential_status(kind, id, user_id).await,
        }
    }

    /// One GCRA step for `key`: allow and account, or say how long to wait.
    pub async fn rate_limit(
        &self,
        key: &str,
        rate: Rate,
        now_ms: i64,
    ) -> Result<RateDecision, StateError> {
        match self {
            SharedState::Memory(m) => Ok(m.rate_limit(key, rate, now_ms)),
            SharedState::Redis(r) => r.rate_limit(key, rate, now_ms).await,
        }
    }

    /// Reserves one attempt before the password is evaluated, so that no
    /// more than `threshold` evaluations can be in flight or failed within
    /// a window, however many requests race.
    pub async fn login_attempt(
        &self,
        key: &str,
        policy: LockoutPolicy,
        now_ms: i64,
    ) -> Result<LoginGate, StateError> {
        match self {
            SharedState::Memory(m) => Ok(m.login_attempt(key, policy, now_ms)),
            SharedState::Redis(r) => r.login_attempt(key, policy, now_ms).await,
        }
    }

    /// Records a failed evaluation; returns true when this failure engaged
    /// the lock (exactly once per lockout).
    pub async fn login_failed(
        &self,
        key: &str,
        policy: LockoutPolicy,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        match self {
            SharedState::Memory(m) => Ok(m.login_failed(key, policy, now_ms)),
            SharedState::Redis(r) => r.login_failed(key, policy, now_ms).await,
        }
    }

    /// Clears a lockout and its failure count (an administrator's unlock).
    pub async fn unlock(&self, key: &str) -> Result<(), StateError> {
        match self {
            SharedState::Memory(m) => {
                m.unlock(key);
                Ok(())
            }
            SharedState::Redis(r) => r.unlock(key).await,
        }
    }

    /// A correct password clears the failure count.
    pub async fn login_succeeded(&self, key: &str) -> Result<(), StateError> {
        match self {
            SharedState::Memory(m) => {
                m.login_succeeded(key);
                Ok(())
            }
            SharedState::Redis(r) => r.login_succeeded(key).await,
        }
    }

    /// Checks every meter and charges all of them, or none (see
    /// [`quota`]).
    pub async fn quota_admit(
        &self,
        meters: &[Meter],
        now_ms: i64,
    ) -> Result<Admission, StateError> {
        match self {
            SharedState::Memory(m) => Ok(m.quota().admit(meters, now_ms)),
            SharedState::Redis(r) => r.quota_admit(meters, now_ms).await,
        }
    }

    /// Gives back unused reservations and releases slots; false when an
    /// [`Adjust::Once`] among them was applied before (and nothing is now).
    pub async fn quota_settle(
        &self,
        adjustments: &[Adjust],
        now_ms: i64,
    ) -> Result<bool, StateError> {
        match self {
            SharedState::Memory(m) => Ok(m.quota().settle(adjustments, now_ms)),
            SharedState::Redis(r) => r.quota_settle(adjustments, now_ms).await,
        }
    }

    /// What each meter has used and left, charging nothing.
    pub async fn quota_read(
        &self,
        meters: &[Meter],
        now_ms: i64,
    ) -> Result<Vec<Reading>, StateError> {
        match self {
            SharedState::Memory(m) => Ok(m.quota().read(meters, now_ms)),
            SharedState::Redis(r) => r.quota_read(meters, now_ms).await,
        }
    }

    /// Extends `member`'s hold on a slot of `key` to `until_ms` if it is
    /// still held now; false when it was released or lapsed.
    pub async fn quota_touch(
        &self,
        key: &str,
        member: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        match self {
            SharedState::Memory(m) => Ok(m.quota().touch(key, member, until_ms, now_ms)),
            SharedState::Redis(r) => r.quota_touch(key, member, until_ms, now_ms).await,
        }
    }

    /// Whether `member` holds a slot of `key` now.
    pub async fn quota_held(
        &self,
        key: &str,
        member: &str,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        match self {
            SharedState::Memory(m) => Ok(m.quota().held(key, member, now_ms)),
            SharedState::Redis(r) => r.quota_held(key, member, now_ms).await,
        }
    }

    /// Settles at once when the state is in-process (no I/O); false when
    /// it is remote and must be settled with [`quota_settle`](Self::quota_settle).
    pub fn quota_settle_local(&self, adjustments: &[Adjust], now_ms: i64) -> bool {
        match self {
            SharedState::Memory(m) => {
                m.quota().settle(adjustments, now_ms);
                true
            }
            SharedState::Redis(_) => false,
        }
    }
}
