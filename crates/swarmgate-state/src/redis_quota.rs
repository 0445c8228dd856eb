//! The quota meters of `quota.rs` as Redis scripts: one script checks every
//! meter of a request and charges all or none, so N instances enforce the
//! limits one would. Numbers stay below 2^53 (Lua's exact integers) and
//! are written with `%.0f`, since Lua's default formatting would round
//! microsecond timestamps.

use std::sync::LazyLock;

use redis::Script;

use crate::quota::{
    gcra_capacity_us, gcra_increment_us, gcra_refund_us, gcra_remaining, Adjust, Admission, Meter,
    Reading, SLOT_RETRY_MS,
};
use crate::redis_backend::{RedisState, Within};
use crate::StateError;

/// Per meter: kind, limit, p (capacity µs | until ms), cost (increment µs
/// for a rate), member, resets.
const ARGS_PER_METER: usize = 6;

static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"
local now = tonumber(ARGV[1])
local now_us = now * 1000
local rem = {{}}
local function arg(i, j) return ARGV[1 + (i - 1) * {ARGS_PER_METER} + j] end
for i = 1, #KEYS do
  local kind, limit, p, cost = arg(i, 1), tonumber(arg(i, 2)), tonumber(arg(i, 3)), tonumber(arg(i, 4))
  if kind == 'r' then
    if cost > p then return {{0, i - 1, -1}} end
    local tat = tonumber(redis.call('GET', KEYS[i]) or now_us)
    if tat < now_us then tat = now_us end
    local ahead = tat + cost - now_us
    -- At most the request's own increment, as in quota.rs.
    if ahead > p then return {{0, i - 1, math.ceil(math.min(ahead - p, cost) / 1000)}} end
    -- Turned into units in Rust, exactly (limit * µs exceeds 2^53).
    rem[i] = ahead
  elseif kind == 'b' then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used + cost > limit then
      if arg(i, 6) == '1' and cost <= limit then return {{0, i - 1, math.max(p - now, 1)}} end
      return {{0, i - 1, -1}}
    end
    rem[i] = limit - used - cost
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    local held = redis.call('ZCARD', KEYS[i])
    if redis.call('ZSCORE', KEYS[i], arg(i, 5)) then held = held - 1 end
    if held + 1 > limit then return {{0, i - 1, {SLOT_RETRY_MS}}} end
    rem[i] = limit - held - 1
  end
end
for i = 1, #KEYS do
  local kind, p, cost = arg(i, 1), tonumber(arg(i, 3)), tonumber(arg(i, 4))
  if kind == 'r' then
    local tat = tonumber(redis.call('GET', KEYS[i]) or now_us)
    if tat < now_us then tat = now_us end
    tat = tat + cost
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now_us) / 1000) + 1)
  elseif kind == 'b' then
    redis.call('INCRBY', KEYS[i], cost)
    redis.call('PEXPIREAT', KEYS[i], p)
  else
    redis.call('ZADD', KEYS[i], p, arg(i, 5))
    if redis.call('PTTL', KEYS[i]) < p - now then redis.call('PEXPIRE', KEYS[i], p - now) end
  end
end
local out = {{1}}
for i = 1, #KEYS do out[i + 1] = rem[i] end
return out
"#
    ))
});

static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local now_us = now * 1000
for i = 1, #KEYS do
  if ARGV[1 + (i - 1) * 4 + 1] == 'o' and redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
local function put_tat(key, tat)
  if tat <= now_us then redis.call('DEL', key) return end
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now_us) / 1000) + 1)
end
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 4
  local kind, p, refund = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  if kind == 'r' then
    -- p: microseconds to move back (negative: forward); from now at the
    -- earliest, as in-process.
    local tat = tonumber(redis.call('GET', KEYS[i]) or now_us)
    if tat < now_us then tat = now_us end
    tat = tat - p
    if tat < now_us then tat = now_us end
    put_tat(KEYS[i], tat)
  elseif kind == 'b' then
    local used = redis.call('GET', KEYS[i])
    if used then
      local v = tonumber(used) - refund
      if v < 0 then v = 0 end
      redis.call('SET', KEYS[i], string.format('%.0f', v), 'KEEPTTL')
    elseif refund < 0 and p > now then
      redis.call('SET', KEYS[i], string.format('%.0f', -refund), 'PXAT', p)
    end
  elseif kind == 'o' then
    if p > now then redis.call('SET', KEYS[i], '1', 'PXAT', p) end
  else
    redis.call('ZREM', KEYS[i], ARGV[b + 4])
  end
end
return 1
"#,
    )
});

static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local now_us = now * 1000
local out = {}
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 3
  local kind, limit, p = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  if kind == 'r' then
    local tat = tonumber(redis.call('GET', KEYS[i]) or now_us)
    if tat < now_us then tat = now_us end
    out[i] = tat - now_us
  elseif kind == 'b' then
    local left = limit - tonumber(redis.call('GET', KEYS[i]) or '0')
    if left < 0 then left = 0 end
    out[i] = left
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    local left = limit - redis.call('ZCARD', KEYS[i])
    if left < 0 then left = 0 end
    out[i] = left
  end
end
return out
"#,
    )
});

static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now, until_ms = tonumber(ARGV[1]), tonumber(ARGV[3])
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], until_ms, ARGV[2])
if redis.call('PTTL', KEYS[1]) < until_ms - now then redis.call('PEXPIRE', KEYS[1], until_ms - now) end
return 1
"#,
    )
});

fn kind(meter: &Meter) -> &'static str {
    match meter {
        Meter::Rate { .. } => "r",
        Meter::Budget { .. } => "b",
        Meter::Slots { .. } => "s",
    }
}

/// The script's `p`: the capacity of a rate, the end of a budget or a slot.
fn p_of(meter: &Meter) -> i64 {
    match meter {
        Meter::Rate { period_ms, .. } => gcra_capacity_us(*period_ms),
        Meter::Budget { until_ms, .. } | Meter::Slots { until_ms, .. } => *until_ms,
    }
}

/// What a script reports per meter as units left: a rate reports how far
/// ahead its arrival time is (µs), the rest their units left.
fn units_left(meter: &Meter, reported: i64) -> u64 {
    match meter {
        Meter::Rate {
            limit, period_ms, ..
        } => gcra_remaining(*limit, *period_ms, reported),
        _ => reported.max(0) as u64,
    }
}

impl RedisState {
    fn quota_key(&self, key: &str) -> String {
        self.key("q", key)
    }

    pub async fn quota_admit(
        &self,
        meters: &[Meter],
        now_ms: i64,
    ) -> Result<Admission, StateError> {
        if meters.is_empty() {
            return Ok(Admission::Admitted {
                remaining: Vec::new(),
            });
        }
        let mut invocation = ADMIT.prepare_invoke();
        invocation.arg(now_ms);
        for meter in meters {
            let (cost, member, resets) = match meter {
                Meter::Rate {
                    limit,
                    period_ms,
                    cost,
                    ..
                } => (
                    gcra_increment_us(*limit, *period_ms, *cost) as u64,
                    "",
                    false,
                ),
                Meter::Budget { cost, resets, .. } => (*cost, "", *resets),
                Meter::Slots { member, .. } => (1, member.as_str(), false),
            };
            invocation
                .key(self.quota_key(meter.key()))
                .arg(kind(meter))
                .arg(meter.limit())
                .arg(p_of(meter))
                .arg(cost)
                .arg(member)
                .arg(if resets { "1" } else { "0" });
        }
        let mut conn = self.conn().await?;
        let reply: Vec<i64> = invocation.invoke_async(&mut conn).within(self).await?;
        match reply.as_slice() {
            [1, rest @ ..] => Ok(Admission::Admitted {
                remaining: meters
                    .iter()
                    .zip(rest)
                    .map(|(m, r)| units_left(m, *r))
                    .collect(),
            }),
            [0, index, retry] => Ok(Admission::Denied {
                index: *index as usize,
                retry_after_ms: (*retry >= 0).then_some(*retry),
            }),
            other => Err(StateError::Unavailable(format!(
                "unexpected quota script reply {other:?}"
            ))),
        }
    }

    pub async fn quota_settle(
        &self,
        adjustments: &[Adjust],
        now_ms: i64,
    ) -> Result<bool, StateError> {
        if adjustments.is_empty() {
            return Ok(true);
        }
        let mut invocation = SETTLE.prepare_invoke();
        invocation.arg(now_ms);
        for adjust in adjustments {
            let (key, kind, p, refund, member) = match adjust {
                Adjust::Rate {
                    key,
                    limit,
                    period_ms,
                    refund,
                } => (key, "r", gcra_refund_us(*limit, *period_ms, *refund), 0, ""),
                Adjust::Budget {
                    key,
                    refund,
                    until_ms,
                } => (key, "b", *until_ms, *refund, ""),
                Adjust::Release { key, member } => (key, "s", 0, 0, member.as_str()),
                Adjust::Once { key, until_ms } => (key, "o", *until_ms, 0, ""),
            };
            invocation
                .key(self.quota_key(key))
                .arg(kind)
                .arg(p)
                .arg(refund)
                .arg(member);
        }
        let mut conn = self.conn().await?;
        invocation
            .invoke_async::<i64>(&mut conn)
            .within(self)
            .await
            .map(|applied| applied == 1)
    }

    pub async fn quota_read(
        &self,
        meters: &[Meter],
        now_ms: i64,
    ) -> Result<Vec<Reading>, StateError> {
        if meters.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = READ.prepare_invoke();
        invocation.arg(now_ms);
        for meter in meters {
            invocation
                .key(self.quota_key(meter.key()))
                .arg(kind(meter))
                .arg(meter.limit())
                .arg(p_of(meter));
        }
        let mut conn = self.conn().await?;
        let left: Vec<i64> = invocation.invoke_async(&mut conn).within(self).await?;
        Ok(meters
            .iter()
            .zip(left)
            .map(|(meter, left)| {
                let remaining = units_left(meter, left).min(meter.limit());
                Reading {
                    used: meter.limit() - remaining,
                    remaining,
                }
            })
            .collect())
    }

    pub async fn quota_touch(
        &self,
        key: &str,
        member: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        let mut conn = self.conn().await?;
        let alive: i64 = TOUCH
            .key(self.quota_key(key))
            .arg(now_ms)
            .arg(member)
            .arg(until_ms)
            .invoke_async(&mut conn)
            .within(self)
            .await?;
        Ok(alive == 1)
    }

    pub async fn quota_held(
        &self,
        key: &str,
        member: &str,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        let mut conn = self.conn().await?;
        let score: Option<i64> = redis::cmd("ZSCORE")
            .arg(self.quota_key(key))
            .arg(member)
            .query_async(&mut conn)
            .within(self)
            .await?;
        Ok(score.is_some_and(|until| until > now_ms))
    }
}
