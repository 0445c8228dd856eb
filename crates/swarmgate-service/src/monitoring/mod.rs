//! The JSON monitoring view (`/api/metrics/*`): the latest snapshot of
//! system and application figures, refreshed by a background collector
//! every `metrics_interval`. Readers only take the last snapshot, so a slow
//! `/proc` or disk never delays a request.
//!
//! State is process-wide on purpose: request counters are `static` atomics
//! the server's middleware bumps without any wiring, and the snapshot slot
//! is shared. Tests run several servers in one process; each runs its own
//! collector, all publish into the same slot, and the newest pass wins.

mod collect;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::clock::SharedClock;
use collect::Collector;

/// Four buckets per power of two of microseconds: at most 25% wide, and
/// 128 of them reach past two hours, so nothing real overflows.
const BUCKETS: usize = 128;

/// CPU usage is a difference of two readings; a second pass this soon after
/// the first gives real CPU figures without waiting a whole interval.
const CPU_WARMUP: Duration = Duration::from_secs(1);

struct Recorder {
    total: AtomicU64,
    errors: AtomicU64,
    server_errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

static RECORDER: Recorder = Recorder {
    total: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    server_errors: AtomicU64::new(0),
    buckets: [const { AtomicU64::new(0) }; BUCKETS],
};

static LATEST: RwLock<Option<Arc<Snapshot>>> = RwLock::new(None);
/// Unix ms when the first collector of this process started; 0 before.
static STARTED_MS: AtomicI64 = AtomicI64::new(0);

/// Called by the request middleware once per response: a few relaxed atomic
/// adds, no lock.
pub fn record_request(status: u16, elapsed: Duration) {
    RECORDER.total.fetch_add(1, Ordering::Relaxed);
    if status >= 400 {
        RECORDER.errors.fetch_add(1, Ordering::Relaxed);
    }
    if status >= 500 {
        RECORDER.server_errors.fetch_add(1, Ordering::Relaxed);
    }
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    if let Some(bucket) = RECORDER.buckets.get(bucket_of(micros)) {
        bucket.fetch_add(1, Ordering::Relaxed);
    }
}

fn bucket_of(micros: u64) -> usize {
    if micros < 4 {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros() as usize;
    let quarter = ((micros >> (octave - 2)) & 3) as usize;
    (4 * (octave - 1) + quarter).min(BUCKETS - 1)
}

/// The microsecond range `[low, high)` a bucket stands for.
fn bucket_bounds(index: usize) -> (f64, f64) {
    if index < 4 {
        return (index as f64, index as f64 + 1.0);
    }
    let octave = index / 4 + 1;
    let width = 2f64.powi(octave as i32 - 2);
    let low = 2f64.powi(octave as i32) + (index % 4) as f64 * width;
    (low, low + width)
}

/// Seconds since the first collector of this process started (or since
/// this first call, should it come earlier).
pub fn uptime_seconds(clock: &SharedClock) -> u64 {
    let now = clock.now_ms();
    let _ = STARTED_MS.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    let started = STARTED_MS.load(Ordering::Relaxed);
    (now - started).max(0).unsigned_abs() / 1000
}

/// The last published snapshot; `None` until a collector has finished once.
pub fn latest() -> Option<Arc<Snapshot>> {
    LATEST
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn publish(snapshot: Snapshot) {
    let mut slot = LATEST.write().unwrap_or_else(PoisonError::into_inner);
    // Two collectors (two servers in one test process) may finish out of
    // order; an older pass must not replace a newer one.
    if slot
        .as_ref()
        .is_none_or(|old| old.taken_ms <= snapshot.taken_ms)
    {
        *slot = Some(Arc::new(snapshot));
    }
}

/// Collects once (so a snapshot exists before the first request), then
/// spawns the collector loop; the caller aborts the handle at shutdown.
pub async fn start(every: Duration, clock: SharedClock) -> tokio::task::JoinHandle<()> {
    uptime_seconds(&clock);
    let collector = collect_and_publish(None, clock.clone()).await;
    tokio::spawn(run(collector, every, clock))
}

async fn run(mut collector: Option<Collector>, every: Duration, clock: SharedClock) {
    tokio::time::sleep(CPU_WARMUP.min(every)).await;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        collector = collect_and_publish(collector, clock.clone()).await;
    }
}

/// Reading `/proc` and `statvfs` blocks, so a pass runs on the blocking
/// pool. A pass that panicked loses its collector; the next starts afresh.
async fn collect_and_publish(
    collector: Option<Collector>,
    clock: SharedClock,
) -> Option<Collector> {
    let pass = tokio::task::spawn_blocking(move || {
        let mut collector = collector.unwrap_or_else(|| Collector::new(clock));
        let snapshot = collector.collect();
        (collector, snapshot)
    })
    .await;
    match pass {
        Ok((collector, snapshot)) => {
            publish(snapshot);
            Some(collector)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics collection failed");
            None
        }
    }
}

#[derive(Debug)]
pub struct Snapshot {
    pub system: SystemMetrics,
    pub application: ApplicationMetrics,
    /// Unix ms of the pass.
    pub taken_ms: i64,
}

#[derive(Debug)]
pub struct SystemMetrics {
    pub cpu: Cpu,
    pub memory: Memory,
    pub disk: Disk,
    pub network: Network,
    pub platform: Platform,
    pub uptime_seconds: u64,
    /// Unix seconds.
    pub collected_at: i64,
}

#[derive(Debug)]
pub struct Cpu {
    /// Mean over all cores since the previous pass; `null` on the first
    /// pass, which has nothing to compare with.
    pub percent: Option<f64>,
    pub count: usize,
}

#[derive(Debug)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    /// `total - available`, as `free(1)` and psutil count it.
    pub used: u64,
    pub percent: f64,
}

/// The file system mounted on `/`; where there is none (Windows), the sum
/// over every listed disk, and `mount_point` says `"*"`.
#[derive(Debug)]
pub struct Disk {
    pub mount_point: String,
    pub total: u64,
    /// Space an unprivileged process can still use.
    pub free: u64,
    /// `total - free`, so blocks reserved for root count as used.
    pub used: u64,
    pub percent: f64,
}

#[derive(Debug)]
pub struct Network {
    /// TCP sockets of this network namespace, IPv4 and IPv6, listening
    /// ones included; 0 where `/proc/net` does not exist.
    pub connections: u64,
    pub established: u64,
}

#[derive(Debug, Clone)]
pub struct Platform {
    pub system: &'static str,
    pub release: Option<String>,
    pub os: Option<String>,
    pub hostname: Option<String>,
    pub arch: &'static str,
}

#[derive(Debug)]
pub struct ApplicationMetrics {
    pub version: &'static str,
    pub process: ProcessMetrics,
    pub requests: Requests,
    pub response_time_ms: ResponseTimes,
    pub uptime_seconds: u64,
    /// Unix seconds.
    pub collected_at: i64,
}

#[derive(Debug)]
pub struct ProcessMetrics {
    pub pid: u32,
    /// Since the previous pass, relative to one core (so up to
    /// 100 × cores); `null` on the first pass.
    pub cpu_percent: Option<f64>,
    pub memory_rss_bytes: u64,
    pub memory_virtual_bytes: u64,
    /// From `/proc/self`; 0 where that does not exist.
    pub threads: u64,
    pub open_files: u64,
}

/// Counted since the process started, over every server in it.
#[derive(Debug)]
pub struct Requests {
    pub total: u64,
    /// Responses with a status of 400 or more.
    pub errors: u64,
    /// Responses with a status of 500 or more.
    pub server_errors: u64,
}

/// Percentiles of the requests answered since the previous pass (a recent
/// view, not a lifetime average); `null` when there were none. Estimated
/// from buckets at most 25% wide, interpolated inside a bucket.
#[derive(Debug)]
pub struct ResponseTimes {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub count: u64,
    pub window_seconds: f64,
}

/// `part` of `whole` in percent, to two decimals (0 of nothing is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round2(part as f64 * 100.0 / whole as f64)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
