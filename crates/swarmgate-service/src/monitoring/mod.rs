//! The JSON monitoring view (`/api/metrics/*`): the latest snapshot of
//! system and application figures, refreshed by a background collector
//! every `metrics_interval`. Handlers only read the last snapshot, so a slow
//! `/proc` or disk never delays a request.
//!
//! State is process-wide on purpose: request counters are `static` atomics
//! the middleware bumps without any wiring, and the snapshot slot is shared.
//! Tests run several servers in one process; each runs its own collector,
//! all publish into the same slot, and the newest pass wins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use sysinfo::{DiskRefreshKind, Disks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

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
static STARTED: OnceLock<Instant> = OnceLock::new();

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
    RECORDER.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
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

/// Seconds since the first server of this process started (or since the
/// first health check, should one come earlier).
pub fn uptime_seconds() -> u64 {
    STARTED.get_or_init(Instant::now).elapsed().as_secs()
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
    if slot.as_ref().is_none_or(|old| old.taken <= snapshot.taken) {
        *slot = Some(Arc::new(snapshot));
    }
}

/// Collects once (so a snapshot exists before the first request), then
/// spawns the collector loop; the caller aborts the handle at shutdown.
pub async fn start(every: Duration) -> tokio::task::JoinHandle<()> {
    STARTED.get_or_init(Instant::now);
    let collector = collect_and_publish(None).await;
    tokio::spawn(run(collector, every))
}

async fn run(mut collector: Option<Collector>, every: Duration) {
    tokio::time::sleep(CPU_WARMUP.min(every)).await;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        collector = collect_and_publish(collector).await;
    }
}

/// Reading `/proc` and `statvfs` blocks, so a pass runs on the blocking
/// pool. A pass that panicked loses its collector; the next starts afresh.
async fn collect_and_publish(collector: Option<Collector>) -> Option<Collector> {
    let pass = tokio::task::spawn_blocking(move || {
        let mut collector = collector.unwrap_or_else(Collector::new);
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

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub system: SystemMetrics,
    pub application: ApplicationMetrics,
    #[serde(skip)]
    taken: Instant,
}

#[derive(Debug, Serialize)]
pub struct SystemMetrics {
    pub cpu: Cpu,
    pub memory: Memory,
    pub disk: Disk,
    pub network: Network,
    pub platform: Platform,
    pub uptime_seconds: u64,
    pub collected_at: String,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    /// Mean over all cores since the previous pass; `null` on the first
    /// pass, which has nothing to compare with.
    pub percent: Option<f64>,
    pub count: usize,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    /// `total - available`, as `free(1)` and psutil count it.
    pub used: u64,
    pub percent: f64,
}

/// The file system mounted on `/`; where there is none (Windows), the sum
/// over every listed disk, and `mount_point` says `"*"`.
#[derive(Debug, Serialize)]
pub struct Disk {
    pub mount_point: String,
    pub total: u64,
    /// Space an unprivileged process can still use.
    pub free: u64,
    /// `total - free`, so blocks reserved for root count as used.
    pub used: u64,
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct Network {
    /// TCP sockets of this network namespace, IPv4 and IPv6, listening
    /// ones included; 0 where `/proc/net` does not exist.
    pub connections: u64,
    pub established: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Platform {
    pub system: &'static str,
    pub release: Option<String>,
    pub os: Option<String>,
    pub hostname: Option<String>,
    pub arch: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ApplicationMetrics {
    pub version: &'static str,
    pub process: ProcessMetrics,
    pub requests: Requests,
    pub response_time_ms: ResponseTimes,
    pub uptime_seconds: u64,
    pub collected_at: String,
}

#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
pub struct ResponseTimes {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub count: u64,
    pub window_seconds: f64,
}

/// What one pass needs from the previous one: sysinfo's CPU counters, the
/// bucket counts and when they were read.
struct Collector {
    system: System,
    disks: Disks,
    pid: Option<Pid>,
    platform: Platform,
    buckets: [u64; BUCKETS],
    buckets_at: Instant,
    /// Whether a pass ran before: CPU usage needs two readings.
    warmed: bool,
}

impl Collector {
    fn new() -> Self {
        Self {
            system: System::new(),
            disks: Disks::new(),
            pid: sysinfo::get_current_pid().ok(),
            platform: Platform {
                system: std::env::consts::OS,
                release: System::kernel_version(),
                os: System::long_os_version(),
                hostname: System::host_name(),
                arch: std::env::consts::ARCH,
            },
            buckets: read_buckets(),
            buckets_at: Instant::now(),
            warmed: false,
        }
    }

    fn collect(&mut self) -> Snapshot {
        let warmed = std::mem::replace(&mut self.warmed, true);
        let collected_at = crate::clock::rfc3339(crate::clock::now_secs());

        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let total = self.system.total_memory();
        let available = self.system.available_memory();
        let used = total.saturating_sub(available);
        let memory = Memory {
            total,
            available,
            used,
            percent: percent(used, total),
        };
        let cpu = Cpu {
            percent: warmed.then(|| round2(f64::from(self.system.global_cpu_usage()))),
            count: self.system.cpus().len(),
        };
        self.disks
            .refresh_specifics(true, DiskRefreshKind::nothing().with_storage());
        let (connections, established) = tcp_sockets();
        let system = SystemMetrics {
            cpu,
            memory,
            disk: root_disk(&self.disks),
            network: Network {
                connections,
                established,
            },
            platform: self.platform.clone(),
            uptime_seconds: System::uptime(),
            collected_at: collected_at.clone(),
        };

        let process = self.process(warmed);
        let now = read_buckets();
        let window: Vec<u64> = now
            .iter()
            .zip(self.buckets.iter())
            .map(|(n, p)| n.saturating_sub(*p))
            .collect();
        let window_seconds = round2(self.buckets_at.elapsed().as_secs_f64());
        self.buckets = now;
        self.buckets_at = Instant::now();
        let application = ApplicationMetrics {
            version: env!("CARGO_PKG_VERSION"),
            process,
            requests: Requests {
                total: RECORDER.total.load(Ordering::Relaxed),
                errors: RECORDER.errors.load(Ordering::Relaxed),
                server_errors: RECORDER.server_errors.load(Ordering::Relaxed),
            },
            response_time_ms: ResponseTimes {
                p50: quantile_ms(&window, 0.50),
                p90: quantile_ms(&window, 0.90),
                p99: quantile_ms(&window, 0.99),
                count: window.iter().sum(),
                window_seconds,
            },
            uptime_seconds: uptime_seconds(),
            collected_at,
        };
        Snapshot {
            system,
            application,
            taken: Instant::now(),
        }
    }

    fn process(&mut self, warmed: bool) -> ProcessMetrics {
        let (threads, open_files) = proc_self_counts();
        let mut metrics = ProcessMetrics {
            pid: self.pid.map(|p| p.as_u32()).unwrap_or(std::process::id()),
            cpu_percent: None,
            memory_rss_bytes: 0,
            memory_virtual_bytes: 0,
            threads,
            open_files,
        };
        let Some(pid) = self.pid else {
            return metrics;
        };
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        if let Some(p) = self.system.process(pid) {
            metrics.cpu_percent = warmed.then(|| round2(f64::from(p.cpu_usage())));
            metrics.memory_rss_bytes = p.memory();
            metrics.memory_virtual_bytes = p.virtual_memory();
        }
        metrics
    }
}

fn read_buckets() -> [u64; BUCKETS] {
    std::array::from_fn(|i| RECORDER.buckets[i].load(Ordering::Relaxed))
}

/// The value below which `q` of the counted requests fall, in milliseconds.
fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut below = 0u64;
    for (index, &count) in counts.iter().enumerate() {
        if count > 0 && below + count >= rank {
            let (low, high) = bucket_bounds(index);
            let within = (rank - below) as f64 / count as f64;
            let micros = low + (high - low) * within;
            // Whole microseconds: finer would be false precision.
            return Some(micros.round() / 1000.0);
        }
        below += count;
    }
    None
}

fn root_disk(disks: &Disks) -> Disk {
    let root = disks
        .list()
        .iter()
        .find(|d| d.mount_point() == std::path::Path::new("/"));
    let (mount_point, total, free) = match root {
        Some(d) => ("/".to_string(), d.total_space(), d.available_space()),
        None => {
            // One device mounted twice (bind mounts) must count once.
            let mut seen = std::collections::HashSet::new();
            let (total, free) = disks
                .list()
                .iter()
                .filter(|d| seen.insert(d.name().to_os_string()))
                .fold((0u64, 0u64), |(t, f), d| {
                    (
                        t.saturating_add(d.total_space()),
                        f.saturating_add(d.available_space()),
                    )
                });
            ("*".to_string(), total, free)
        }
    };
    let used = total.saturating_sub(free);
    Disk {
        mount_point,
        total,
        free,
        used,
        percent: percent(used, total),
    }
}

#[cfg(target_os = "linux")]
fn tcp_sockets() -> (u64, u64) {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| count_tcp(&table))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

#[cfg(not(target_os = "linux"))]
fn tcp_sockets() -> (u64, u64) {
    (0, 0)
}

/// Rows of a `/proc/net/tcp` table after its header, and how many of them
/// are in state 01 (ESTABLISHED).
fn count_tcp(table: &str) -> (u64, u64) {
    let mut total = 0;
    let mut established = 0;
    for row in table.lines().skip(1) {
        let mut fields = row.split_whitespace();
        let Some(state) = fields.nth(3) else {
            continue;
        };
        total += 1;
        if state == "01" {
            established += 1;
        }
    }
    (total, established)
}

#[cfg(target_os = "linux")]
fn proc_self_counts() -> (u64, u64) {
    let entries = |path: &str| {
        std::fs::read_dir(path)
            .map(|dir| dir.count() as u64)
            .unwrap_or(0)
    };
    // Listing /proc/self/fd holds one descriptor open for the listing itself.
    (
        entries("/proc/self/task"),
        entries("/proc/self/fd").saturating_sub(1),
    )
}

#[cfg(not(target_os = "linux"))]
fn proc_self_counts() -> (u64, u64) {
    (0, 0)
}

/// `part` of `whole` in percent, to two decimals (0 of nothing is 0).
pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round2(part as f64 * 100.0 / whole as f64)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_contain_their_values() {
        for micros in [
            0u64, 1, 3, 4, 5, 7, 8, 9, 15, 16, 999, 1000, 123_456, 99_000_000,
        ] {
            let (low, high) = bucket_bounds(bucket_of(micros));
            assert!(
                low <= micros as f64 && (micros as f64) < high,
                "{micros} in [{low}, {high})"
            );
        }
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket_bounds(i).1, bucket_bounds(i + 1).0, "bucket {i}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_come_from_the_right_buckets() {
        let mut counts = [0u64; BUCKETS];
        // 90 requests of ~1 ms, 10 of ~100 ms.
        counts[bucket_of(1_000)] = 90;
        counts[bucket_of(100_000)] = 10;
        let p50 = quantile_ms(&counts, 0.5).unwrap();
        let p99 = quantile_ms(&counts, 0.99).unwrap();
        assert!((0.8..=1.25).contains(&p50), "p50 {p50}");
        assert!((80.0..=125.0).contains(&p99), "p99 {p99}");
        assert_eq!(quantile_ms(&[0; BUCKETS], 0.5), None);
    }

    #[test]
    fn tcp_tables_are_counted_without_their_header() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
            0: 0100007F:1F45 00000000:0000 0A 00000000:00000000\n   \
            1: 0100007F:1F45 0100007F:A1B2 01 00000000:00000000\n";
        assert_eq!(count_tcp(table), (2, 1));
        assert_eq!(count_tcp(""), (0, 0));
    }
}
