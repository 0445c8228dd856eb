//! A route's upstreams: round robin, with passive health. An upstream that
//! fails to connect `eject_after` times in a row is skipped until
//! `probe_after` has passed; then one request probes it, and a success
//! brings it back.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use http::Uri;

use crate::config::GatewayConfig;

pub struct Upstream {
    pub base: Uri,
    /// What every request URI to this upstream starts with, without a
    /// trailing `/`: the base path alone for a plain one (origin form,
    /// through the per-thread pool), `https://authority/base-path` for the
    /// others (absolute, through hyper-util's client).
    pub prefix: String,
    /// `host:port` of a plain `http://` upstream, which the per-thread
    /// pool ([`crate::pool`]) serves; `None` for `https://`.
    pub plain: Option<Arc<str>>,
    /// The `Host` header its requests carry (the port only when not the
    /// scheme's default), made once rather than by the client per request.
    pub host: http::HeaderValue,
    failures: AtomicU32,
    ejected_until_ms: AtomicI64,
}

fn host_header(base: &Uri) -> http::HeaderValue {
    let host = base.host().unwrap_or_default();
    let default_port = match base.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let text = match base.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    // A parsed URI's host holds only characters a header value may.
    http::HeaderValue::try_from(text).unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

impl Upstream {
    pub fn healthy(&self, now_ms: i64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }
}

pub struct UpstreamPool {
    pub upstreams: Vec<Upstream>,
    next: AtomicUsize,
    eject_after: u32,
    probe_after_ms: i64,
}

impl UpstreamPool {
    /// A pool from configured upstream URLs, each `http://HOST:PORT` (with
    /// a base path where `form` says so); errors say which URL is wrong.
    pub fn from_config(
        urls: &[String],
        gateway: &GatewayConfig,
        form: &str,
    ) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("needs at least one upstream".into());
        }
        let mut bases = Vec::with_capacity(urls.len());
        for u in urls {
            let uri: Uri = u
                .parse()
                .map_err(|_| format!("upstream {u:?} is not a URL"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return Err(format!("upstream {u:?} must be {form}"));
            }
            bases.push(uri);
        }
        Ok(Self::new(
            bases,
            gateway.eject_after_failures,
            gateway.probe_after_ms,
        ))
    }

    pub fn new(bases: Vec<Uri>, eject_after: u32, probe_after_ms: u64) -> Self {
        Self {
            upstreams: bases
                .into_iter()
                .map(|base| {
                    let path = base.path().trim_end_matches('/');
                    let plain: Option<Arc<str>> = (base.scheme_str() == Some("http")).then(|| {
                        let host = base.host().unwrap_or_default();
                        format!("{host}:{}", base.port_u16().unwrap_or(80)).into()
                    });
                    let prefix = match (&plain, base.authority()) {
                        (None, Some(authority)) => {
                            format!(
                                "{}://{authority}{path}",
                                base.scheme_str().unwrap_or("https")
                            )
                        }
                        _ => path.to_string(),
                    };
                    Upstream {
                        prefix,
                        plain,
                        host: host_header(&base),
                        base,
                        failures: AtomicU32::new(0),
                        ejected_until_ms: AtomicI64::new(0),
                    }
                })
                .collect(),
            next: AtomicUsize::new(0),
            eject_after: eject_after.max(1),
            probe_after_ms: probe_after_ms as i64,
        }
    }

    /// The next usable upstream not in `tried`, or `None` when every one is
    /// ejected (or tried). An ejected upstream whose rest is over is handed
    /// out once as a probe (its rest restarts, so only one probe runs).
    pub fn pick(&self, now_ms: i64, tried: &[usize]) -> Option<usize> {
        let n = self.upstreams.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..n {
            let i = (start + offset) % n;
            if tried.contains(&i) {
                continue;
            }
            let Some(upstream) = self.upstreams.get(i) else {
                continue;
            };
            let until = upstream.ejected_until_ms.load(Ordering::Relaxed);
            if until == 0 {
                return Some(i);
            }
            if until <= now_ms
                && upstream
                    .ejected_until_ms
                    .compare_exchange(
                        until,
                        now_ms + self.probe_after_ms,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                return Some(i);
            }
        }
        None
    }

    pub fn succeeded(&self, i: usize) {
        let Some(upstream) = self.upstreams.get(i) else {
            return;
        };
        upstream.failures.store(0, Ordering::Relaxed);
        upstream.ejected_until_ms.store(0, Ordering::Relaxed);
    }

    pub fn failed(&self, i: usize, now_ms: i64) {
        let Some(upstream) = self.upstreams.get(i) else {
            return;
        };
        let failures = upstream.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.eject_after {
            upstream
                .ejected_until_ms
                .store(now_ms + self.probe_after_ms, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> UpstreamPool {
        let bases = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 9000 + i).parse().unwrap())
            .collect();
        UpstreamPool::new(bases, 2, 1_000)
    }

    #[test]
    fn round_robin_skips_tried_and_ejected() {
        let p = pool(3);
        let picks: Vec<usize> = (0..6).map(|_| p.pick(0, &[]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(p.pick(0, &[0, 1, 2]), None);
        p.failed(1, 0);
        assert!(p.upstreams[1].healthy(0), "one failure does not eject");
        p.failed(1, 0);
        assert!(!p.upstreams[1].healthy(0));
        let picks: Vec<usize> = (0..4).map(|_| p.pick(10, &[]).unwrap()).collect();
        assert!(!picks.contains(&1));
    }

    #[test]
    fn an_ejected_upstream_is_probed_once_then_restored() {
        let p = pool(1);
        p.failed(0, 0);
        p.failed(0, 0);
        assert_eq!(p.pick(500, &[]), None, "resting");
        assert_eq!(p.pick(1_000, &[]), Some(0), "one probe");
        assert_eq!(p.pick(1_001, &[]), None, "only one probe at a time");
        p.succeeded(0);
        assert_eq!(p.pick(1_002, &[]), Some(0));
    }
}
