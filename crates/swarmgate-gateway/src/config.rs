//! Route and gateway settings as written in the configuration file.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// `/tasks`, or with an owner segment: `/memory/{owner}`.
    pub path_prefix: String,
    pub upstreams: Vec<String>,
    /// Permission per HTTP method (`GET = "tasks.read"`).
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    /// One permission for every method not named in `permissions`.
    #[serde(default)]
    pub permission: Option<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// `[gateway]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Peers whose `X-Forwarded-*` headers are believed (IP addresses).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: u64,
    /// Consecutive connection failures after which an upstream is ejected.
    pub eject_after_failures: u32,
    /// How long an ejected upstream rests before one request probes it.
    pub probe_after_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            max_body_bytes: 10 * 1024 * 1024,
            eject_after_failures: 3,
            probe_after_ms: 5_000,
        }
    }
}
