//! Redis back end. Each decision is a single Lua script, so it is atomic
//! across every instance that shares the Redis.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::OnceCell;

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
    conn: Arc<OnceCell<ConnectionManager>>,
    namespace: String,
}

pub(crate) fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}

impl RedisState {
    /// Parses the URL and tries to connect once. An unreachable Redis is
    /// not fatal here: the server starts, every protected request fails
    /// closed with 503 and `/health` says why, and the connection is retried
    /// on the next use.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, StateError> {
        let client = redis::Client::open(url).map_err(|e| StateError::Config(e.to_string()))?;
        let state = Self {
            client,
            conn: Arc::new(OnceCell::new()),
            namespace: namespace.to_string(),
        };
        if let Err(e) = state.conn().await {
            tracing::warn!(error = %e, "redis is unreachable at start-up; requests fail closed until it is back");
        }
        Ok(state)
    }

    pub(crate) async fn conn(&self) -> Result<ConnectionManager, StateError> {
        // Bounded waits: a hung Redis must turn into a prompt 503, not a
        // request that hangs with it.
        let manager = self
            .conn
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(1))
                    .set_response_timeout(Duration::from_secs(1))
                    .set_number_of_retries(1)
                    .set_max_delay(500);
                ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await
            .map_err(unavailable)?;
        Ok(manager.clone())
    }

    pub(crate) fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.namespace)
    }

    pub async fn ping(&self) -> Result<(), StateError> {
        let mut conn = self.conn().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
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
        .await
        .map_err(unavailable)
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
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    pub async fn epoch_missing(&self) -> Result<bool, StateError> {
        let mut conn = self.conn().await?;
        let exists: bool = conn
            .exists(self.key("epoch", "current"))
            .await
            .map_err(unavailable)?;
        Ok(!exists)
    }

    pub async fn set_epoch(&self) -> Result<(), StateError> {
        let mut conn = self.conn().await?;
        conn.set::<_, _, ()>(self.key("epoch", "current"), "complete")
            .await
            .map_err(unavailable)
    }

    pub async fn bump_user(&self, user_id: &str) -> Result<(), StateError> {
        let mut conn = self.conn().await?;
        conn.incr::<_, _, ()>(self.key("uver", user_id), 1)
            .await
            .map_err(unavailable)
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
                .await
                .map_err(unavailable)?;
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
            .await
            .map_err(unavailable)?;
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
            .await
            .map_err(unavailable)?;
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
            .await
            .map_err(unavailable)?;
        Ok(engaged == 1)
    }

    pub async fn unlock(&self, key: &str) -> Result<(), StateError> {
        let mut conn = self.conn().await?;
        conn.del::<_, ()>(&[self.key("lock", key), self.key("fail", key)])
            .await
            .map_err(unavailable)
    }

    pub async fn login_succeeded(&self, key: &str) -> Result<(), StateError> {
        let mut conn = self.conn().await?;
        conn.del::<_, ()>(self.key("fail", key))
            .await
            .map_err(unavailable)
    }
}
