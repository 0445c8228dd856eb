//! One collection pass: system figures from sysinfo and `/proc`, and the
//! application's own from its process and the request recorder.

use std::sync::atomic::Ordering;

use sysinfo::{DiskRefreshKind, Disks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::{
    bucket_bounds, percent, round2, uptime_seconds, ApplicationMetrics, Cpu, Disk, Memory, Network,
    Platform, ProcessMetrics, Requests, ResponseTimes, Snapshot, SystemMetrics, BUCKETS, RECORDER,
};
use crate::clock::SharedClock;

/// What one pass needs from the previous one: sysinfo's CPU counters, the
/// bucket counts and when they were read.
pub(super) struct Collector {
    system: System,
    disks: Disks,
    pid: Option<Pid>,
    platform: Platform,
    buckets: [u64; BUCKETS],
    /// Unix ms the bucket counts were read at.
    buckets_at: i64,
    clock: SharedClock,
    /// Whether a pass ran before: CPU usage needs two readings.
    warmed: bool,
}

impl Collector {
    pub(super) fn new(clock: SharedClock) -> Self {
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
            buckets_at: clock.now_ms(),
            clock,
            warmed: false,
        }
    }

    pub(super) fn collect(&mut self) -> Snapshot {
        let warmed = std::mem::replace(&mut self.warmed, true);
        let collected_at = self.clock.now_secs();

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
            collected_at,
        };

        let process = self.process(warmed);
        let now = read_buckets();
        let window: Vec<u64> = now
            .iter()
            .zip(self.buckets.iter())
            .map(|(n, p)| n.saturating_sub(*p))
            .collect();
        // Read after the slow refreshes above, as the bucket counts are.
        let now_ms = self.clock.now_ms();
        let window_seconds = round2((now_ms - self.buckets_at).max(0) as f64 / 1000.0);
        self.buckets = now;
        self.buckets_at = now_ms;
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
            uptime_seconds: uptime_seconds(&self.clock),
            collected_at,
        };
        Snapshot {
            system,
            application,
            taken_ms: now_ms,
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
    RECORDER
        .buckets
        .each_ref()
        .map(|b| b.load(Ordering::Relaxed))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitoring::bucket_of;

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
