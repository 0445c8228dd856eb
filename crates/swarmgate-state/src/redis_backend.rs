//! Redis back end. Each decision is a single Lua script, so it is atomic
//! across every instance that shares the Redis.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use swarmgate_core::breaker::Breaker;

use crate::{
    CredentialStatus, LockoutPolicy, LoginGate, Rate, RateDecision, Revocable, StateError,
};

static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
if tat - now > tolerance then
  return tat - now - tolerance
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return -1
"#,
    )
});

static LOGIN_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then return ttl end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
if n > tonumber(ARGV[1]) then return tonumber(ARGV[4]) end
return 0
"#,
    )
});

static LOGIN_FAILED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
if n < tonumber(ARGV[1]) then return 0 end
local engaged = redis.call('SET', KEYS[1], '1', 'PX', ARGV[2], 'NX')
redis.call('DEL', KEYS[2])
if engaged then return 1 end
return 0
"#,
    )
});

#[derive(Clone)]
pub struct RedisState {
    client: redis::Client,
    /// Replaced, not repaired, when Redis comes back: a manager whose
    /// connection failed retries with backoff of its own, which kept
    /// service down for over a second after Redis was back.
    conn: Arc<ArcSwapOption<ConnectionManager>>,
    namespace: String,
    /// The longest any one call (connecting included) may wait.
    timeout: Duration,
    breaker: Arc<Breaker>,
}

/// How often a probe asks a Redis that failed whether it is back: service
/// resumes within this (plus one round trip) of its return.
const PROBE_EVERY: Duration = Duration::from_millis(200);

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}

/// Failures that say Redis itself is unreachable or not answering, as
/// opposed to one command's error.
fn is_outage(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

impl RedisState {
    /// Parses the URL and tries to connect once. An unreachable Redis is
    /// not fatal here: the server starts, every protected request fails
    /// closed with 503 and `/health` says why, and a probe reconnects in
    /// the background. No call waits longer than `timeout`.
    pub async fn connect(
        url: &str,
        namespace: &str,
        timeout: Duration,
    ) -> Result<Self, StateError> {
        let client = redis::Client::open(url).map_err(|e| StateError::Config(e.to_string()))?;
        let state = Self {
            client,
            conn: Arc::new(ArcSwapOption::empty()),
            namespace: namespace.to_string(),
            timeout,
            breaker: Arc::new(Breaker::default()),
        };
        if let Err(e) = state.conn().await {
            tracing::warn!(error = %e, "redis is unreachable at start-up; requests fail closed until it is back");
        }
        Ok(state)
    }

    /// The connection, or at once the failure that opened the breaker.
    pub(crate) async fn conn(&self) -> Result<ConnectionManager, StateError> {
        if let Err(last) = self.breaker.check() {
            return Err(StateError::Unavailable(last));
        }
        self.connected().await
    }

    async fn connected(&self) -> Result<ConnectionManager, StateError> {
        if let Some(manager) = self.conn.load_full() {
            return Ok((*manager).clone());
        }
        // Boxed: connecting is a 6.6 KB future, and unboxed it would be
        // part of every quota call's future, and of every request's, even
        // with in-process state, which are moved (copied) as they nest.
        let manager = self.bounded(Box::pin(self.new_manager())).await?;
        self.conn.store(Some(Arc::new(manager.clone())));
        Ok(manager)
    }

    fn new_manager(
        &self,
    ) -> impl std::future::Future<Output = redis::RedisResult<ConnectionManager>> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(PROBE_EVERY.as_millis() as u64);
        ConnectionManager::new_with_config(self.client.clone(), config)
    }

    /// Runs one call to Redis within the timeout. An outage opens the
    /// breaker and starts the probe that closes it again.
    pub(crate) async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        let error = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if !is_outage(&e) => return Err(unavailable(e)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        if self.breaker.open(error.clone()) {
            self.probe();
        }
        Err(StateError::Unavailable(error))
    }

    /// Asks Redis every [`PROBE_EVERY`] whether it is back, and closes the
    /// breaker when it answers.
    fn probe(&self) {
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let answered = tokio::time::timeout(state.timeout, async {
                    let mut manager = state.new_manager().await?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut manager)
                        .await?;
                    Ok::<_, redis::RedisError>(manager)
                })
                .await;
                if let Ok(Ok(manager)) = answered {
                    tracing::info!("redis answers again");
                    state.conn.store(Some(Arc::new(manager)));
                    state.breaker.closed();
                    return;
                }
            }
        });
    }

    pub(crate) fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.namespace)
    }

    pub async fn ping(&self) -> Result<(), StateError> {
        let mut conn = self.conn().await?;
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
    }

    pub async fn revoke(
        &self,
        kind: Revocable,
        id: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let ttl = until_ms - now_ms;
        if ttl <= 0 {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        conn.pset_ex::<_, _, ()>(
            self.key("rev", &format!("{}:{id}", kind.tag())),
            1,
            ttl as u64,
        )
        .within(self)
        .await
    }

    pub async fn claim_once(
        &self,
        key: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        let ttl = (until_ms - now_ms).max(1);
        // A Redis that lost its data lost the claims too: refuse until the
        // state is rebuilt rather than accept a replay.
        if self.epoch_missing().await? {
            return Err(StateError::Unavailable(
                "redis lost its state; rebuilding it from the database".into(),
            ));
        }
        let mut conn = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key("once", key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .query_async(&mut conn)
            .within(self)
            .await?;
        Ok(set.is_some())
    }

    pub async fn epoch_missing(&self) -> Result<bool, StateError> {
        let mut conn = self.conn().await?;
        let exists: bool = conn
            .exists(self.key("epoch", "current"))
            .within(self)
            .await?;
        Ok(!exists)
    }

    pub async fn set_epoch(&self) -> Result<(), StateError> {
        let mut conn = self.conn().await?;
        conn.set::<_, _, ()>(self.key("epoch", "current"), "complete")
            .within(self)
            .await
    }

    pub async fn bump_user(&self, user_id: &str) -> Result<(), StateError> {
        let mut conn = self.conn().await?;
        conn.incr::<_, _, ()>(self.key("uver", user_id), 1)
            .within(self)
            .await
    }

    pub async fn credential_status(
        &self,
        kind: Revocable,
        id: &str,
        user_id: &str,
    ) -> Result<CredentialStatus, StateError> {
        let mut conn = self.conn().await?;
        let (revoked, version, epoch): (Option<i64>, Option<i64>, Option<String>) =
            redis::cmd("MGET")
                .arg(self.key("rev", &format!("{}:{id}", kind.tag())))
                .arg(self.key("uver", user_id))
                .arg(self.key("epoch", "current"))
                .query_async(&mut conn)
                .within(self)
                .await?;
        if epoch.is_none() {
            // Redis came back empty: revocations it held are gone until they
            // are rebuilt from the database. Trust nothing meanwhile.
            return Err(StateError::Unavailable(
                "redis lost its state; rebuilding revocations from the database".into(),
            ));
        }
        Ok(CredentialStatus {
            revoked: revoked.is_some(),
            user_version: version.unwrap_or(0),
        })
    }

    pub async fn rate_limit(
        &self,
        key: &str,
        rate: Rate,
        now_ms: i64,
    ) -> Result<RateDecision, StateError> {
        let (interval, tolerance) = rate.gcra();
        let mut conn = self.conn().await?;
        let wait: i64 = GCRA
            .key(self.key("gcra", key))
            .arg(now_ms)
            .arg(interval)
            .arg(tolerance)
            .invoke_async(&mut conn)
            .within(self)
            .await?;
        Ok(if wait < 0 {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after_ms: wait,
            }
        })
    }

    pub async fn login_attempt(
        &self,
        key: &str,
        policy: LockoutPolicy,
        _now_ms: i64,
    ) -> Result<LoginGate, StateError> {
        let mut conn = self.conn().await?;
        let wait: i64 = LOGIN_ATTEMPT
            .key(self.key("lock", key))
            .key(self.key("fail", key))
            .arg(policy.threshold)
            .arg(policy.window.as_millis() as u64)
            .arg(policy.lock_for.as_millis() as u64)
            .arg(crate::memory::IN_FLIGHT_RETRY_MS)
            .invoke_async(&mut conn)
            .within(self)
            .await?;
        Ok(if wait > 0 {
            LoginGate::Locked {
                retry_after_ms: wait,
            }
        } else {
            LoginGate::Proceed
        })
    }

    pub async fn login_failed(
        &self,
        key: &str,
        policy: LockoutPolicy,
        _now_ms: i64,
    ) -> Result<bool, StateError> {
        let mut conn = self.conn().await?;
        let engaged: i64 = LOGIN_FAILED
            .key(self.key("lock", key))
            .key(self.key("fail", key))
            .arg(policy.threshold)
            .arg(policy.lock_for.as_millis() as u64)
            .invoke_async(&mut conn)
            .within(self)
            .await?;
        Ok(engaged == 1)
    }

    pub async fn unlock(&self, key: &str) -> Result<(), StateError> {
        let mut conn = self.conn().await?;
        conn.del::<_, ()>(&[self.key("lock", key), self.key("fail", key)])
            .within(self)
            .await
    }

    pub async fn login_succeeded(&self, key: &str) -> Result<(), StateError> {
        let mut conn = self.conn().await?;
        conn.del::<_, ()>(self.key("fail", key)).within(self).await
    }
}

/// `call.within(state)`: [`RedisState::bounded`] written where the call is.
pub(crate) trait Within<T>:
    std::future::Future<Output = redis::RedisResult<T>> + Sized
{
    async fn within(self, state: &RedisState) -> Result<T, StateError> {
        state.bounded(self).await
    }
}

impl<T, F: std::future::Future<Output = redis::RedisResult<T>>> Within<T> for F {}
