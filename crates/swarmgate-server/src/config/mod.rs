//! Configuration: a TOML file, then environment variables over it, then
//! validation into [`Settings`], the resolved values the server runs with.
//!
//! Sources, later ones winning:
//! 1. the file (`--config PATH` or `SWARMGATE_CONFIG`);
//! 2. the seed's variable names (`AUTH_PORT`, `DATABASE_URL`, `REDIS_URL`,
//!    `JWT_SECRET_KEY`, `JWT_ALGORITHM`, `JWT_EXPIRATION_HOURS`,
//!    `REFRESH_TOKEN_EXPIRATION_DAYS`);
//! 3. `SWARMGATE_LISTEN`, `SWARMGATE_ADMIN_PASSWORD`, `SWARMGATE_LOG_FORMAT`;
//! 4. `SWARMGATE_<SECTION>__<KEY>` for any setting of the file.
//!
//! A bad value is one line naming the setting and what is wrong.

mod load;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use swarmgate_core::password::{MIN_ITERATIONS, MIN_MEMORY_KIB};

pub use swarmgate_service::settings::{QuotaSettings, Secret};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub tokens: TokensConfig,
    pub security: SecurityConfig,
    pub bootstrap: BootstrapConfig,
    pub logging: LoggingConfig,
    pub api_keys: ApiKeysConfig,
    /// Roles added, or built-in roles redefined: `[roles.NAME] permissions`.
    pub roles: BTreeMap<String, RoleConfig>,
    /// `[[routes]]`: paths proxied to upstream services.
    pub routes: Vec<swarmgate_gateway::RouteConfig>,
    /// `[[models]]`: LLMs behind the OpenAI-compatible API at /v1.
    pub models: Vec<swarmgate_gateway::ModelConfig>,
    pub gateway: swarmgate_gateway::GatewayConfig,
    pub usage: UsageConfig,
    pub metrics: MetricsConfig,
    pub nodes: NodesConfig,
    pub limits: LimitsConfig,
    pub agents: AgentsConfig,
    pub anthropic: AnthropicConfig,
}

/// `[anthropic]`: Anthropic's API behind `/v1/messages`, with the key held
/// by the gateway (seed 003's credential profiles).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicConfig {
    /// `ANTHROPIC_API_KEY` or `CLAUDE_API_KEY`; unset: `/v1/messages` is
    /// not served.
    pub api_key: Option<Secret>,
    /// `ANTHROPIC_BASE_URL` or `CLAUDE_BASE_URL`.
    pub base_url: String,
    /// `api_key` or `subscription`: how the key is paid for (shown to
    /// operators; the limits below are what is enforced).
    pub mode: String,
    pub timeout_ms: u64,
    /// Limits on all traffic through the profile together: a daily token
    /// limit for a subscription, per-minute limits for an API key.
    pub limits: swarmgate_core::LimitSet,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            base_url: "https://api.anthropic.com".into(),
            mode: "api_key".into(),
            timeout_ms: 600_000,
            limits: Default::default(),
        }
    }
}
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Completion tokens reserved for an LLM call that names no
    /// `max_tokens` (settled to the real usage afterwards).
    pub default_max_tokens: u64,
    /// How long a request waits for capacity under `on_limit = "queue"`.
    pub queue_max_wait_ms: u64,
    /// A concurrency slot lapses after this even if its holder never
    /// released it (a crashed instance), in seconds.
    pub slot_lease_seconds: u64,
    /// When the quota state (Redis) is unreachable: `closed` answers 503,
    /// `open` lets requests through unmetered (and logs it).
    pub on_backend_error: String,
    /// `[limits.roles.NAME]`: the default limits of each user of a role.
    pub roles: BTreeMap<String, swarmgate_core::LimitSet>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            default_max_tokens: 1024,
            queue_max_wait_ms: 10_000,
            slot_lease_seconds: 900,
            on_backend_error: "closed".into(),
            roles: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// A session with no request or heartbeat for this long is released
    /// (fractions allowed).
    pub idle_minutes: f64,
    /// Lifetime of a session that asks for none, and the most it may ask.
    pub default_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            idle_minutes: 30.0,
            default_ttl_seconds: 3600,
            max_ttl_seconds: 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodesConfig {
    /// A node whose last report is older than this is shown as stale.
    pub stale_after_seconds: u64,
    /// Default lifetime of a node token (`MCP_TOKEN_EXPIRE`, minutes).
    pub token_ttl_minutes: u64,
    /// How often the system and application metrics are collected in the
    /// background (`MCP_METRICS_INTERVAL`, seconds).
    pub metrics_interval_seconds: u64,
}

impl Default for NodesConfig {
    fn default() -> Self {
        Self {
            stale_after_seconds: 180,
            token_ttl_minutes: 30,
            metrics_interval_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A second address serving `GET /metrics` without authentication (for
    /// a scraper on a private network). Unset: only the authenticated
    /// `/metrics` on the main address.
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// How often recorded token usage is written to the database.
    pub flush_interval_ms: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysConfig {
    /// Put before every key so a leaked key is recognisable.
    pub prefix: String,
    pub default_expiry_days: u32,
    pub max_expiry_days: u32,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self {
            prefix: "sgk_".into(),
            default_expiry_days: 90,
            max_expiry_days: 365,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `HOST:PORT`; wins over `port`.
    pub listen: Option<String>,
    /// The seed's `AUTH_PORT`, used with 127.0.0.1 when `listen` is unset.
    pub port: Option<u16>,
    /// The URL clients reach this service at; tokens' `iss`.
    pub public_url: Option<String>,
    /// Threads answering HTTP requests, each with its own runtime and
    /// listening socket; unset: one per core.
    pub worker_threads: Option<usize>,
    /// The longest a client may take to send a request's headers, counted
    /// from when the connection is ready for them: a slowloris trickle is
    /// cut off after it, and so is a keep-alive connection idle that long
    /// (hyper times both with one timer; nginx's defaults are 60 s and
    /// 75 s).
    pub header_timeout_ms: u64,
    /// The longest a client may take to send a request's whole body,
    /// counted from the request's arrival; a slower one gets 408.
    pub body_timeout_ms: u64,
    /// On SIGTERM, how long requests and streams in flight may still run
    /// before their connections are cut and the process exits.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: None,
            port: None,
            public_url: None,
            worker_threads: None,
            header_timeout_ms: 60_000,
            body_timeout_ms: 60_000,
            shutdown_grace_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    /// The longest a request waits for a database connection. Once one
    /// cannot be had, requests fail closed at once until a probe finds the
    /// database answering.
    pub timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://swarmgate-data/swarmgate.db".into(),
            timeout_ms: swarmgate_store::DEFAULT_TIMEOUT.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub url: Option<String>,
    /// Prefix of every key; instances that share state share it.
    pub namespace: String,
    /// The longest one call to Redis may wait (connecting included). Once
    /// one fails, requests fail closed at once until a probe finds Redis
    /// back.
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            namespace: "swarmgate".into(),
            timeout_ms: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    pub algorithm: String,
    pub secret_key: Option<Secret>,
    pub access_ttl_hours: u64,
    pub refresh_ttl_days: u64,
    pub audience: String,
    /// How often each instance re-reads signing keys from the database
    /// (so a rotation by any instance reaches all of them).
    pub key_reload_seconds: u64,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            algorithm: "EdDSA".into(),
            secret_key: None,
            access_ttl_hours: 24,
            refresh_ttl_days: 30,
            audience: "swarmgate".into(),
            key_reload_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub lockout_threshold: u32,
    pub lockout_window_minutes: u64,
    pub lockout_minutes: u64,
    pub login_rate_per_minute: u32,
    pub register_rate_per_hour: u32,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            lockout_threshold: 5,
            lockout_window_minutes: 15,
            lockout_minutes: 15,
            login_rate_per_minute: 5,
            register_rate_per_hour: 3,
            argon2_memory_kib: MIN_MEMORY_KIB,
            argon2_iterations: MIN_ITERATIONS,
            argon2_parallelism: 1,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Password of the `admin` user created on an empty database; generated
    /// and printed once when unset.
    pub admin_password: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `pretty` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `swarmgate=debug,info`.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: "pretty".into(),
            level: "info".into(),
        }
    }
}

/// A configuration problem, one line, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Validated settings the server runs with: the services' own, and what
/// only the server and gateway need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: Arc<swarmgate_service::Settings>,
    pub anthropic: Option<Arc<swarmgate_gateway::ProviderProfile>>,
    pub routes: Arc<swarmgate_gateway::RouteTable>,
    pub models: Arc<swarmgate_gateway::ModelTable>,
    pub gateway: swarmgate_gateway::GatewayConfig,
    pub listen: SocketAddr,
    pub worker_threads: Option<usize>,
    pub connections: crate::serve::ConnectionLimits,
    pub metrics_listen: Option<SocketAddr>,
    pub log_json: bool,
    pub log_level: String,
}

/// The server's settings extend the services' own: `settings.public_url`
/// reads the services' value.
impl std::ops::Deref for Settings {
    type Target = swarmgate_service::Settings;

    fn deref(&self) -> &swarmgate_service::Settings {
        &self.service
    }
}
